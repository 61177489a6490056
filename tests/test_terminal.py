"""What ``fit`` prints and decides before and after sampling, without sampling.

The default degree, ``--target-accept``, the point elasticity, the no-ranking and baseline-crossing
cases, the Pareto k warning naming trials, wrapping at 100 columns, and the OLS's p-values.
"""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from cli_output import unwrap
from fakes import fake_result

import bayes_cmma as bc
from bayes_cmma.checks import checking
from bayes_cmma.cli import WIDTH, _print_report, baseline_crossing, format_estimate, main, wrap
from bayes_cmma.decisions import derived
from bayes_cmma.errors import AssumptionWarning
from bayes_cmma.inputs.data import default_degree, read_trials
from bayes_cmma.studies.synthetic import simulate_summaries


def _table(data: bc.TrialData, quantities: dict[str, str] | None = None, drop: dict[str, list[str]] | None = None):
    """Long trial table of ``data`` with quantities renamed and some (quantity -> trials) rows dropped."""
    ds = data.dataset
    rows = []
    for t, team in zip(ds["trial"].values, ds["team"].values, strict=True):
        for q in ds["quantity"].values:
            if drop and str(t) in drop.get(str(q), []):
                continue
            rows.append({"trial": t, "team": team, "quantity": (quantities or {}).get(str(q), str(q)),
                         "estimate": float(ds["estimate"].sel(trial=t, quantity=q)),
                         "std_error": float(ds["std_error"].sel(trial=t, quantity=q))})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def cubic_data():
    data, _ = simulate_summaries(np.random.default_rng(3), n_trials=30, n_teams=4, beta=(1.0, 0.5, -0.2))
    return data


def test_default_degree_is_the_highest_power_every_metric_has_at_most_3(cubic_data, example):
    assert default_degree(example.trials, ["ndcg", "mrr", "map"]) == 3
    frame = _table(cubic_data)  # y, m, m^2, m^3
    assert default_degree(read_trials(frame), ["m"]) == 3
    only_ate = read_trials(frame[~frame["quantity"].isin(["m^2", "m^3"])])
    assert default_degree(only_ate, ["m"]) == 1
    # a second metric with powers 1-2: the smaller wins
    second = frame[frame["quantity"].isin(["m", "m^2"])].assign(quantity=lambda f: f["quantity"].str.replace("m", "n"))
    both = read_trials(pd.concat([frame, second]))
    assert default_degree(both, ["m", "n"]) == 2 and default_degree(both, ["m"]) == 3
    # a power some trials lack does not count
    some_lack = read_trials(_table(cubic_data, drop={"m^3": cubic_data.trials[:2]}))
    assert default_degree(some_lack, ["m"]) == 2
    # more than 3 powers: capped at 3; none at all: 1 (metric_design then names what is missing)
    extra = frame[frame["quantity"] == "m^3"].assign(quantity="m^4")
    assert default_degree(read_trials(pd.concat([frame, extra])), ["m"]) == 3
    assert default_degree(only_ate, ["absent"]) == 1


class _Reached(Exception):
    pass


@pytest.fixture
def captured_fit(monkeypatch):
    """Patch the fit: record its spec and stop where sampling would start."""
    seen = {}

    def fake(data, kpi, metrics, spec, **kwargs):
        seen["spec"] = spec
        raise _Reached

    monkeypatch.setattr("bayes_cmma.fitting.bayes.fit", fake)
    return seen


def test_fit_without_degree_takes_the_table_s_degree_and_says_so(cubic_data, tmp_path, capsys, captured_fit):
    frame = _table(cubic_data)
    frame[~frame["quantity"].isin(["m^2", "m^3"])].to_csv(tmp_path / "t.csv", index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AssumptionWarning)  # unknown within-trial covariances
        with pytest.raises(_Reached):
            main(["fit", str(tmp_path / "t.csv"), "--kpi", "y", "--metric", "m", "--out", str(tmp_path / "o")])
    err = unwrap(capsys.readouterr().err)
    assert "model 'linear' (degree 1) (the highest power every metric has in the table, at most 3" in err
    assert captured_fit["spec"].degree == 1
    # the same with the powers present: the cubic; an explicit --degree is not annotated
    frame.to_csv(tmp_path / "t3.csv", index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AssumptionWarning)
        with pytest.raises(_Reached):
            main(["fit", str(tmp_path / "t3.csv"), "--kpi", "y", "--metric", "m", "--out", str(tmp_path / "o")])
        assert captured_fit["spec"].degree == 3
        capsys.readouterr()
        with pytest.raises(_Reached):
            main(["fit", str(tmp_path / "t3.csv"), "--kpi", "y", "--metric", "m", "--degree", "2",
                  "--out", str(tmp_path / "o")])
    assert captured_fit["spec"].degree == 2
    assert "highest power" not in unwrap(capsys.readouterr().err)


def test_target_accept_reaches_the_sampler_settings_and_is_checked(cubic_data, tmp_path, capsys, captured_fit):
    _table(cubic_data).to_csv(tmp_path / "t.csv", index=False)
    argv = ["fit", str(tmp_path / "t.csv"), "--kpi", "y", "--metric", "m", "--degree", "1",
            "--out", str(tmp_path / "o")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AssumptionWarning)
        with pytest.raises(_Reached):
            main([*argv, "--target-accept", "0.97"])
    assert captured_fit["spec"].sampler["target_accept"] == 0.97 and captured_fit["spec"].degree == 1
    for bad in ("1", "0", "1.5", "-0.2"):
        assert main([*argv, "--target-accept", bad]) == 2
        lines = [ln for ln in unwrap(capsys.readouterr().err).splitlines() if ln.startswith("error:")]
        assert lines == [f"error: --target-accept must be between 0 and 1, got {float(bad)}."]
    assert not (tmp_path / "o").exists()


def test_point_elasticity_closed_form():
    beta, m = [4.0, 0.0, 5.0], 0.7
    mu, slope = 4 * m + 5 * m**3, 4 + 15 * m**2
    assert float(derived.point_elasticity(beta, m)) == pytest.approx(m * slope / mu, rel=1e-12)
    assert float(derived.point_elasticity(beta, m, baseline=60.0)) == pytest.approx(m * slope / 60.0, rel=1e-12)
    # the limit of the arc elasticity / lift as the lift goes to 0
    arc = float(derived.elasticity(beta, m, lift=1e-7)) / 1e-7
    assert arc == pytest.approx(m * slope / mu, rel=1e-5)
    # linear with baseline mu(m): 1 whatever beta
    assert float(derived.point_elasticity([123.0], 0.3)) == pytest.approx(1.0)
    grid = derived.point_elasticity(beta, [0.5, 1.0])
    assert grid.dims == ("grid",) and grid.sizes["grid"] == 2


def test_elasticity_table_has_the_point_elasticity_and_medians(example):
    from bayes_cmma.reporting.outputs import elasticity_frame

    result = fake_result(example.trials, "gmv", ["ndcg", "mrr"], 2)
    at = {m: example.at[m] for m in ("ndcg", "mrr")}
    table = elasticity_frame(result, at, 0.1, 59.13).set_index("metric")
    point = result.point_elasticity(at, baseline=59.13)
    for m in ("ndcg", "mrr"):
        draws = point.sel(metric=m).values
        assert table.loc[m, "point_elasticity_mean"] == pytest.approx(draws.mean(), rel=1e-12)
        assert table.loc[m, "point_elasticity_median"] == pytest.approx(np.median(draws), rel=1e-12)
        arc = result.elasticity(at, 0.1, 59.13).sel(metric=m).values
        assert table.loc[m, "median"] == pytest.approx(np.median(arc), rel=1e-12)


def test_linear_drf_warns_once_for_all_metrics(example):
    result = fake_result(example.trials, "gmv", ["ndcg", "mrr", "map"], 1)
    with pytest.warns(AssumptionWarning) as record:
        result.elasticity({m: example.at[m] for m in ("ndcg", "mrr", "map")})
    assert len([w for w in record if "linear DRF" in str(w.message)]) == 1


def _printed(capsys, data, result, spec_degree, at, baseline, crossing=None, ranking=True):
    from bayes_cmma.fitting.spec import spec_for_degree
    from bayes_cmma.reporting import outputs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AssumptionWarning)
        draws = result.elasticity(at, 0.1, baseline)
        elast = outputs.elasticity_frame(result, at, 0.1, baseline, draws=draws)
    rank = outputs.ranking_frame(derived.rank_metrics(draws)) if ranking else None
    summary = outputs.summary_frame(result)
    ols = {m: bc.cmma_ols(data, "gmv", m, spec_degree) for m in result.fits}
    _print_report(result, spec_for_degree(spec_degree), summary, elast, rank, ols, at, 0.1, baseline, crossing)
    return capsys.readouterr().out, elast


def test_no_ranking_is_printed_for_a_linear_drf_without_baseline(example, capsys):
    result = fake_result(example.trials, "gmv", ["ndcg", "mrr"], 1)
    at = {m: example.at[m] for m in ("ndcg", "mrr")}
    out, _ = _printed(capsys, example.trials, result, 1, at, None, ranking=False)
    assert "No ranking: with a linear DRF" in out and "Recommended" not in out and "P(best)" not in out
    assert all(len(line) <= WIDTH for line in out.splitlines())
    out, _ = _printed(capsys, example.trials, result, 1, at, 59.13)
    assert "Recommended north-star metric" in out and "P(best)" in out


def test_a_baseline_that_crosses_zero_is_warned_about_and_medians_are_printed(example, capsys):
    beta = xr.DataArray(np.array([[[1.0], [-1.0], [2.0], [3.0]]]), dims=("chain", "draw", "power"))
    fake = SimpleNamespace(fits={"m": SimpleNamespace(beta=beta)})
    with pytest.warns(AssumptionWarning, match=r"m: the DRF at the current value, mu\(0.5\), is <= 0 in 25.0% of"):
        assert baseline_crossing(fake, {"m": 0.5}) == {"m": 0.25}
    positive = SimpleNamespace(fits={"m": SimpleNamespace(beta=abs(beta))})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert baseline_crossing(positive, {"m": 0.5}) == {}
    result = fake_result(example.trials, "gmv", ["ndcg", "mrr"], 2)
    at = {m: example.at[m] for m in ("ndcg", "mrr")}
    out, elast = _printed(capsys, example.trials, result, 2, at, None, crossing={"ndcg": 0.02})
    assert "* median, not mean" in out
    row = elast.set_index("metric").loc["ndcg"]
    shown = format_estimate(100 * row["median"], 100 * row["eti94_lower"], 100 * row["eti94_upper"], digits=3)
    assert f"{shown} *" in out  # the median, marked; mrr (not crossing) keeps its mean
    mrr = elast.set_index("metric").loc["mrr"]
    assert format_estimate(100 * mrr["mean"], 100 * mrr["eti94_lower"], 100 * mrr["eti94_upper"], digits=3) in out


def test_pareto_k_warning_names_the_trials():
    k = xr.DataArray([0.2, 0.95, 0.71, 0.5, np.inf], coords={"trial": ["A", "B", "C", "D", "E"]}, dims="trial")
    bad = checking.influential_trials(SimpleNamespace(pareto_k=k))
    assert bad == [("E", np.inf), ("B", 0.95), ("C", 0.71)]
    message = checking.pareto_k_message("map", bad)
    assert message.startswith("map model: 3 trial(s) have LOO Pareto k > 0.7: E (k = inf), B (k = 0.95), C (k = 0.71).")
    many = [(f"T{i}", 1.0) for i in range(12)]
    long = checking.pareto_k_message("m", many)
    assert long.count("(k = 1.00)") == 8 and " ..." in long


def test_wrap_keeps_words_and_unwrap_restores_the_message():
    message = "error: " + " ".join(f"word{i}" for i in range(60)) + " /a/very/long/path/" + "x" * 120
    wrapped = wrap(message)
    lines = wrapped.splitlines()
    assert len(lines) > 1 and all(line.startswith("  ") for line in lines[1:])
    assert all(len(line) <= WIDTH for line in lines if "/a/very" not in line)  # a long word is not broken
    assert unwrap(wrapped) == message


def test_ols_prints_p_values_below_precision_as_such(example, tmp_path, capsys):
    from bayes_cmma.cli import run_ols

    trials = tmp_path / "t.csv"
    _table(example.trials).to_csv(trials, index=False)
    assert run_ols(str(trials), None, "gmv", ["ndcg"], 2) == 0
    out = capsys.readouterr().out
    tests = out[out.index("Nested Wald tests"):]
    assert "< 1e-16" in tests
    assert not [line for line in tests.splitlines() if line.rstrip().endswith(" 0")]
    assert "coefficient" not in out.splitlines()[2]  # no stray index-name row under the header
