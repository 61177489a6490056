"""A3 sensitivity: the spec key, the tipping point, a short rho sweep on the example, CLI bad input."""

import warnings

import numpy as np
import pandas as pd
import pytest

import bayes_cmma as bc
from bayes_cmma.cli import main
from bayes_cmma.errors import ConvergenceWarning, SpecError
from bayes_cmma.sensitivity import a3_sensitivity, tipping_point
from bayes_cmma.spec import parse_spec, replace_spec, spec_for_degree


def test_spec_key_is_data_not_structure():
    spec = parse_spec({"degree": 2, "assumptions": {"direct_effect_corr": 0.3}}, source="t.toml")
    assert spec.direct_effect_corr == 0.3
    assert spec.structure_key() == spec_for_degree(2).structure_key()  # same compiled model
    assert replace_spec(spec, direct_effect_corr=-0.5).direct_effect_corr == -0.5
    assert spec.to_dict()["assumptions"] == {"direct_effect_corr": 0.3}
    with pytest.raises(SpecError, match="strictly between -1 and 1"):
        parse_spec({"degree": 2, "assumptions": {"direct_effect_corr": 1.0}}, source="t.toml")
    with pytest.raises(SpecError, match="unknown key 'direct_efect_corr'.*'direct_effect_corr'"):
        parse_spec({"degree": 2, "assumptions": {"direct_efect_corr": 0.1}}, source="t.toml")


@pytest.mark.parametrize(("recommended", "want"), [
    ({-0.4: "a", -0.2: "a", 0.0: "a", 0.2: "a", 0.4: "a"}, None),
    ({-0.4: "b", -0.2: "a", 0.0: "a", 0.2: "a", 0.4: "b"}, -0.4),
    ({-0.4: "b", -0.2: "a", 0.0: "a", 0.2: "b", 0.4: "b"}, 0.2),
    ({-0.4: "a", -0.2: "b", 0.0: "a", 0.2: "b", 0.4: "a"}, -0.2),
])
def test_tipping_point(recommended, want):
    table = pd.DataFrame([{"rho": r, "metric": m, "recommended": rec}
                          for r, rec in recommended.items() for m in ("a", "b")])
    assert tipping_point(table) == want


@pytest.mark.mcmc
def test_short_sweep_on_the_example():
    ex = bc.load_example()
    with warnings.catch_warnings():  # 100 draws: this test checks the sweep's bookkeeping, not convergence
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = a3_sensitivity(ex.trials, "gmv", ["ndcg", "mrr"], {m: ex.at[m] for m in ("ndcg", "mrr")},
                             rhos=[0.3], model=1, baseline=ex.kpi_baseline, seed=3, draws=100, tune=100, chains=2)
    assert sorted(res.table["rho"].unique()) == [0.0, 0.3]  # rho = 0 always added
    assert len(res.table) == 4 and np.allclose(res.table.groupby("rho")["p_best"].sum(), 1.0)
    t = res.grid.timings()
    assert (t["compile_s"] > 0).sum() <= 1  # one compiled model for the whole sweep
    summary = res.summary()
    if res.tipping_point is None:
        assert "stays the same for every assumed correlation" in summary
    else:
        assert f"{res.tipping_point:+.2f}" in summary and "tipping point" in summary


def test_cli_bad_input(tmp_path, capsys):
    from importlib import resources

    trials = resources.files("bayes_cmma.datasets") / "example_trials.csv"
    base = ["sensitivity", str(trials), "--kpi", "gmv", "--metric", "ndcg", "--out", str(tmp_path / "s")]
    for extra, message in [([], "--at ndcg=VALUE"),
                           (["--at", "ndcg=0.002", "--rho", "1.5"], "strictly between -1 and 1"),
                           (["--at", "ndcg=0.002", "--draws", "0"], "--draws must be a positive integer")]:
        assert main(base + extra) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert not (tmp_path / "s").exists()
