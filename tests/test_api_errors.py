"""Error paths of the Python API and the CLI's numeric options (no sampling)."""

import numpy as np
import pytest
import xarray as xr

import bayes_cmma as bc
from bayes_cmma.baselines.ols import cmma_ols_design
from bayes_cmma.cli import main
from bayes_cmma.errors import BayesCMMAError, DataError
from bayes_cmma.fitting.bayes import CMMAResult, MetricFit


def test_fit_needs_distinct_metrics(synthetic):
    data, _ = synthetic
    with pytest.raises(BayesCMMAError, match="no metric given"):
        bc.fit(data, "y", [])
    with pytest.raises(BayesCMMAError, match="metric names repeat"):
        bc.fit(data, "y", ["m", "m"])


def _fake_result():
    rng = np.random.default_rng(0)
    fits = {}
    for name in ("a", "b"):
        beta = xr.DataArray(rng.normal(size=(2, 10, 2)), dims=("chain", "draw", "power"),
                            coords={"power": [1, 2]})
        tree = xr.DataTree.from_dict({"posterior": xr.Dataset({"beta": beta})})
        fits[name] = MetricFit(posterior=tree, spec=bc.load_spec("quadratic"), design=None)
    return CMMAResult(fits=fits, kpi="y")


def test_result_elasticity_needs_every_fitted_metric_and_no_other():
    result = _fake_result()
    with pytest.raises(BayesCMMAError, match="no current value for metric\\(s\\) b"):
        result.elasticity({"a": 1.0})
    with pytest.raises(BayesCMMAError, match="names metric 'c', which was not fitted"):
        result.ranking({"a": 1.0, "b": 1.0, "c": 1.0})
    with pytest.raises(BayesCMMAError, match="metric 'c' was not fitted"):
        result["c"]
    ranking = result.ranking({"a": 1.0, "b": 2.0}, baseline=1.0)
    assert ranking["p_best"].sum() == pytest.approx(1.0)


def test_ols_rank_deficient_design(synthetic):
    data, _ = synthetic
    design = bc.metric_design(data, "y", "m", 2)
    collinear = design.z.copy()
    collinear[:, 2] = 2 * collinear[:, 1]
    bad = type(design)(**{**design.__dict__, "z": collinear})
    with pytest.raises(DataError, match="rank-deficient"):
        cmma_ols_design(bad)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--lift", "0"], "--lift must be a positive number"),
        (["--kpi-baseline", "0"], "--kpi-baseline must be a non-zero number"),
        (["--draws", "0"], "--draws must be a positive integer"),
        (["--at", "ndcg=abc"], "'abc' is not a number"),
        (["--at", "ndcg=1", "--at", "ndcg=2"], "gives metric 'ndcg' twice"),
    ],
)
def test_cli_bad_numeric_options(extra, message, tmp_path, capsys):
    from importlib import resources

    root = resources.files("bayes_cmma.datasets")
    out = tmp_path / "out"
    code = main(["fit", str(root / "example_trials.csv"), "--cov", str(root / "example_cov.csv"), "--kpi", "gmv",
                 "--metric", "ndcg", *extra, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not out.exists()
