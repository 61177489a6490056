"""A3 sensitivity: the spec key, the tipping point, a short rho sweep on the example, CLI bad input."""

import warnings

import numpy as np
import pandas as pd
import pytest

import bayes_cmma as bc
from bayes_cmma.checks.sensitivity import a3_sensitivity, tipping_point
from bayes_cmma.cli import main
from bayes_cmma.errors import ConvergenceWarning, SpecError
from bayes_cmma.fitting.spec import parse_spec, replace_spec, spec_for_degree


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


def test_spec_prior_on_the_a3_correlation():
    prior = {"dist": "uniform", "lower": -0.3, "upper": 0.3}
    spec = parse_spec({"degree": 2, "assumptions": {"direct_effect_corr": prior}}, source="t.toml")
    assert spec.direct_effect_corr_prior == (-0.3, 0.3) and spec.direct_effect_corr == 0.0
    assert spec.to_dict()["assumptions"] == {"direct_effect_corr": prior}
    assert parse_spec(spec.to_dict()).direct_effect_corr_prior == (-0.3, 0.3)  # provenance round trip
    assert replace_spec(spec, name="x").direct_effect_corr_prior == (-0.3, 0.3)
    assert replace_spec(spec, direct_effect_corr=0.2).direct_effect_corr_prior is None  # a grid value: fixed
    cases = [
        ({"dist": "normal", "mu": 0, "sigma": 0.2}, "must be \\{ dist = \"uniform\".*got dist 'normal'"),
        ({"dist": "uniform", "lower": -0.3}, "needs 'upper'"),
        ({"dist": "uniform", "lower": 0.3, "upper": -0.3}, "need -1 < lower < upper < 1"),
        ({"dist": "uniform", "lower": -1.0, "upper": 0.3}, "need -1 < lower < upper < 1"),
        ({"dist": "uniform", "lower": -0.3, "uper": 0.3}, "unknown key 'uper'.*Did you mean 'upper'"),
        ({"dist": "uniform", "lower": "a", "upper": 0.3}, "direct_effect_corr.lower must be a finite number"),
    ]
    for value, message in cases:
        with pytest.raises(SpecError, match=message):
            parse_spec({"degree": 2, "assumptions": {"direct_effect_corr": value}}, source="t.toml")


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
def test_prior_on_the_a3_correlation_widens_beta_by_what_it_leaves_unidentified():
    """rho ~ U(-0.5, 0.5) instead of rho = 0. Cov(y, m) = omega^2 (beta + rho sigma_u / omega), so the
    data fix beta + rho sigma_u / omega and not beta: the posterior sd of beta should grow to about
    sqrt(sd_0^2 + (sigma_u / omega)^2 Var(rho)), and rho's posterior stay close to its prior."""
    from bayes_cmma.checks import checking
    from bayes_cmma.studies.synthetic import simulate_summaries

    data, _ = simulate_summaries(np.random.default_rng(11), n_trials=120, n_teams=4, beta=(2.0,))
    fixed = spec_for_degree(1)
    prior = replace_spec(fixed, direct_effect_corr={"dist": "uniform", "lower": -0.5, "upper": 0.5})
    with warnings.catch_warnings():  # 500 draws: this test checks the widths, not convergence
        warnings.simplefilter("ignore", ConvergenceWarning)
        fit0 = bc.fit_metric(data, "y", "m", fixed, seed=3, draws=500, tune=500, chains=2)
        fit1 = bc.fit_metric(data, "y", "m", prior, seed=3, draws=500, tune=500, chains=2)
    post = fit1.posterior["posterior"]
    rho = post["direct_effect_corr"]
    assert rho.dims == ("chain", "draw") and float(rho.min()) > -0.5 and float(rho.max()) < 0.5
    assert float(rho.std()) > 0.7 * (1.0 / np.sqrt(12))  # the data barely inform rho
    # the stored log-likelihood used each draw's rho: the model checks recompute it exactly
    np.testing.assert_allclose(checking.pointwise_loglik(fit1.posterior).values,
                               fit1.posterior["log_likelihood"]["trial_ate"].values, rtol=1e-9)
    k = float((post["residual_sd"] / post["metric_sd"].sel(power=1)).mean())
    sd0, sd1 = float(fit0.beta.std()), float(fit1.beta.std())
    want = np.sqrt(sd0**2 + k**2 / 12.0)
    assert sd1 > 1.2 * sd0 and abs(sd1 / want - 1) < 0.25, (sd0, sd1, want)
    assert "direct_effect_corr" in bc.diagnostics_table(fit1.posterior).index


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
