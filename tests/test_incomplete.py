"""Trials that report only some quantities: the likelihood of what each reports, exactly.

The marginal likelihood of a trial is a normal over (KPI, metric powers); for a trial that reports
a subset, it is that normal's marginal on the subset (drop the missing rows and columns). Checked
against scipy per missingness pattern (the PyMC model and the numpy form), against metafor's
``rma.mv`` on the SAT-coaching data (dat.kalaian1996: 47 studies, 20 report both outcomes), and
through the parts that need whole trials (OLS, A4) or report per trial (PIT, shrinkage).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytensor.tensor as pt
import pytest
from fakes import fake_fit, point_tree
from scipy import stats

import bayes_cmma as bc
from bayes_cmma.checks import checking
from bayes_cmma.errors import AssumptionWarning, DataError
from bayes_cmma.fitting.measurement import apply_measurement
from bayes_cmma.fitting.model import build_model, marginal_moments, standardise, trial_loglik_numpy, unpack_chol
from bayes_cmma.fitting.spec import replace_spec, spec_for_degree
from bayes_cmma.inputs.data import metric_design, read_trials

DATA = Path(__file__).parent / "data"

#: metafor 3.8.1, rma.mv(yi, V, mods = ~ outcome - 1, random = ~ outcome | study, struct = "UN",
#: method = "ML") with V = vcalc(vi, cluster = study, type = outcome, rho = 0.66) on dat.kalaian1996
METAFOR_FIXED = dict(tau2_math=0.01, tau2_verbal=0.004, rho=0.3, mu_math=0.1391419290, mu_verbal=0.1193000582,
                     loglik=4.9936022956)  # tau2 and rho fixed, the means estimated (GLS)
METAFOR_ML = dict(tau2_math=0.01098094, tau2_verbal=0.00242314, rho=-1.0, mu_math=0.13772925, mu_verbal=0.11670703,
                  loglik=7.05552132)

#: trial -> quantities it does not report (degree 2: y, m, m^2); the other trials report all
PATTERNS = {0: ["m", "m^2"], 1: ["y"], 2: ["m^2"], 3: ["m"], 4: ["y", "m^2"], 5: ["y", "m"], 6: ["m^2"]}


def _tables(data: bc.TrialData) -> tuple[pd.DataFrame, pd.DataFrame]:
    ds = data.dataset
    quantities = [str(q) for q in ds["quantity"].values]
    rows, cov = [], []
    for k, (t, team) in enumerate(zip(ds["trial"].values, ds["team"].values, strict=True)):
        drop = PATTERNS.get(k, [])
        kept = [q for q in quantities if q not in drop]
        for q in kept:
            rows.append({"trial": t, "team": team, "quantity": q,
                         "estimate": float(ds["estimate"].sel(trial=t, quantity=q)),
                         "std_error": float(ds["std_error"].sel(trial=t, quantity=q))})
        for i, a in enumerate(kept):
            for b in kept[i + 1:]:
                cov.append({"trial": t, "quantity_1": a, "quantity_2": b,
                            "covariance": float(ds["covariance"].sel(trial=t, quantity=a, quantity_other=b))})
    return pd.DataFrame(rows), pd.DataFrame(cov)


@pytest.fixture(scope="module")
def incomplete(synthetic):
    data, truth = synthetic
    rows, cov = _tables(data)
    return read_trials(rows, cov), truth


def test_design_keeps_every_trial_with_its_pattern(incomplete, synthetic):
    data, _ = incomplete
    design = metric_design(data, "y", "m", 2)
    assert design.n_trials == synthetic[0].dataset.sizes["trial"] and not design.complete
    names = ["y", "m", "m^2"]
    for k, drop in PATTERNS.items():
        assert [q for q, seen in zip(names, design.observed[k], strict=True) if not seen] == drop
    assert design.observed[len(PATTERNS):].all()
    np.testing.assert_array_equal(np.isnan(design.with_nan()), ~design.observed)
    # the estimators that need whole trials get the complete ones
    complete = design.complete_cases()
    assert complete.complete and complete.n_trials == design.n_trials - len(PATTERNS)
    ols = bc.cmma_ols(data, "y", "m", 2)
    assert ols.nobs == complete.n_trials
    # the A4 check uses every trial that reports the metric
    check = bc.relevance_check(design)
    reported = design.observed[:, 1].sum()
    assert check.df == reported - len(design.teams)


def test_numpy_loglik_is_scipy_on_the_reported_block(incomplete):
    data, _ = incomplete
    design = metric_design(data, "y", "m", 2)
    rng = np.random.default_rng(3)
    beta, alpha, pi = np.array([1.3, -0.4]), rng.normal(size=(4, 2)), rng.normal(size=4)
    chol = np.linalg.cholesky(np.array([[1.0, 0.4], [0.4, 0.8]]))
    ll = trial_loglik_numpy(design.z, design.S, design.team_idx, beta, alpha, pi, chol, np.array(0.7),
                            observed=design.observed)
    mu, G = marginal_moments(design.team_idx, beta, alpha, pi, chol, np.array(0.7))
    for k in range(design.n_trials):
        o = design.observed[k]
        want = stats.multivariate_normal(mu[k][o], (G + design.S[k])[np.ix_(o, o)]).logpdf(design.z[k][o])
        assert ll[k] == pytest.approx(want, rel=1e-10, abs=1e-10)


def test_model_logp_per_pattern_equals_priors_plus_scipy(incomplete):
    data, _ = incomplete
    design = apply_measurement(metric_design(data, "y", "m", 2), "per_trial")
    std = standardise(design)
    # a trial lacks a metric power: the internal scale is diagonal, one coordinate per quantity
    assert np.count_nonzero(std.L - np.diag(np.diag(std.L))) == 0
    spec = spec_for_degree(2)
    model = build_model(spec, len(design.teams), std, design.team_idx, design.observed)
    rng = np.random.default_rng(5)
    point = {k: v + rng.normal(0, 0.3, size=np.shape(v)) for k, v in model.initial_point().items()}
    logp = model.compile_logp()(point)
    # the same point in the complete model's terms: priors are unchanged, the likelihood is per pattern
    beta, alpha = point["beta_std"], point["alpha"]
    kpi_mean = point["kpi_offset"] + alpha @ model["team_slope"].get_value()
    resid_sd = np.exp(point["residual_sd_log__"])
    packed = model.rvs_to_transforms[model["metric_chol"]].backward(
        pt.as_tensor(point["metric_chol_cholesky-cov-packed__"])).eval()
    chol = unpack_chol(packed, 2)
    lik = 0.0
    for k in range(design.n_trials):
        g, o = design.team_idx[k], design.observed[k]
        mean = np.concatenate([[kpi_mean[g]], alpha[g]])
        A = np.vstack([beta, np.eye(2)])
        cov = A @ chol @ chol.T @ A.T + std.S[k]
        cov[0, 0] += resid_sd**2
        lik += stats.multivariate_normal(mean[o], cov[np.ix_(o, o)]).logpdf(std.z[k][o])
    priors = model.compile_logp(vars=list(model.free_RVs), sum=True)(point)  # the priors (and Jacobians) alone
    np.testing.assert_allclose(logp - priors, lik, rtol=1e-9)


def test_kalaian1996_loglik_equals_metafor():
    data = read_trials(DATA / "kalaian1996_trials.csv", DATA / "kalaian1996_cov.csv")
    design = metric_design(data, "verbal", "math", 1)
    assert design.n_trials == 47 and (design.observed.all(axis=1)).sum() == 20
    assert design.observed[:, 0].sum() == 38 and design.observed[:, 1].sum() == 29
    for ref in (METAFOR_FIXED, METAFOR_ML):
        # metafor's unrestricted 2x2 between-study covariance in the model's terms: beta, omega, sigma_u
        omega = np.sqrt(ref["tau2_math"])
        beta = ref["rho"] * np.sqrt(ref["tau2_verbal"] / ref["tau2_math"])
        sigma_u = np.sqrt(max(ref["tau2_verbal"] - beta**2 * ref["tau2_math"], 0.0))
        ll = trial_loglik_numpy(design.z, design.S, design.team_idx, np.array([beta]), np.array([[ref["mu_math"]]]),
                                np.array([ref["mu_verbal"] - beta * ref["mu_math"]]), np.array([[omega]]),
                                np.array(sigma_u), observed=design.observed)
        assert ll.sum() == pytest.approx(ref["loglik"], abs=2e-8)


def test_pooled_measurement_averages_each_entry_over_the_trials_reporting_it(incomplete):
    data, _ = incomplete
    design = metric_design(data, "y", "m", 2)
    pooled = apply_measurement(design, "pooled", size_proxy="equal")
    both = design.observed[:, :, None] & design.observed[:, None, :]
    for i in range(3):
        for j in range(3):
            reported = both[:, i, j]
            k = int(np.flatnonzero(reported)[0])
            assert pooled.S[k, i, j] == pytest.approx(design.S[reported, i, j].mean(), rel=1e-12)
    # unreported rows and columns stay placeholders (identity); the likelihood never reads them
    k = 0  # reports only y
    np.testing.assert_array_equal(pooled.S[k, 1:, 1:], np.eye(2))
    # a size proxy the trial does not report is an error naming the trial
    with pytest.raises(DataError, match=r"does not report 'm', whose variance scales"):
        apply_measurement(design, "pooled", size_proxy="metric_se")


def test_checks_condition_on_what_each_trial_reports(incomplete):
    data, truth = incomplete
    tree = point_tree(data, "y", "m", truth, residual_sd=0.3, draws=2)  # simulate_summaries' default
    design = metric_design(data, "y", "m", 2, warn_filled=False)
    pit = checking.pit(tree).values
    np.testing.assert_array_equal(np.isnan(pit), ~design.observed)
    latent = checking.latent_effects(tree)
    par = checking.params_of(tree)
    mu, G = marginal_moments(par.team_idx, *par.block(slice(0, 1)))
    for k in range(design.n_trials):
        o = design.observed[k]
        gain = G[0][:, o] @ np.linalg.inv((G[0] + par.S[k])[np.ix_(o, o)])
        want = mu[0, k] + gain @ (par.z[k][o] - mu[0, k][o])
        var = np.diag(G[0] - gain @ G[0][o, :])
        np.testing.assert_allclose(latent["mean"].values[k], want, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(latent["sd"].values[k], np.sqrt(var), rtol=1e-7, atol=1e-12)
    # the stored-log-likelihood path (LOO) gives each trial's reported-block density
    ll = checking.pointwise_loglik(tree).values[0, 0]
    for k in range(design.n_trials):
        o = design.observed[k]
        want = stats.multivariate_normal(mu[0, k][o], (G[0] + par.S[k])[np.ix_(o, o)]).logpdf(par.z[k][o])
        assert ll[k] == pytest.approx(want, rel=1e-10)


def test_figures_and_report_take_incomplete_trials(incomplete):
    from bayes_cmma.reporting import plots

    data, _ = incomplete
    spec = replace_spec(spec_for_degree(2), size_proxy="equal")  # no arm sizes, and some trials lack 'm'
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AssumptionWarning)
        fit = fake_fit(data, "y", "m", spec)
    for figure in (plots.drf_panel({"m": fit}), plots.ppc_plot(fit), plots.shrinkage_plot(fit)):
        assert figure.axes


def test_trials_without_any_of_the_quantities_are_left_out_and_errors_name_the_cause():
    frame = pd.read_csv(DATA / "kalaian1996_trials.csv")
    cov = DATA / "kalaian1996_cov.csv"
    # a trial that reports only another quantity is not part of this design
    extra = pd.DataFrame([{"trial": "only-other", "quantity": "other", "estimate": 0.1, "std_error": 0.2,
                           "n_treated": 10, "n_control": 10}])
    assert metric_design(read_trials(pd.concat([frame, extra]), cov), "verbal", "math", 1).n_trials == 47
    # no trial reports both: nothing links the metric to the KPI
    both = frame.groupby("trial")["quantity"].transform("nunique") == 2
    one_each = read_trials(frame[~both])
    with pytest.raises(DataError, match=r"0 trial\(s\) report both the KPI 'verbal' and the metric 'math'"):
        metric_design(one_each, "verbal", "math", 1)
    # the metric is not in the table at all: named, with what the table has
    with pytest.raises(DataError, match="'math' is not a quantity of the trial table; it has 'verbal'"):
        metric_design(read_trials(frame[frame["quantity"] == "verbal"]), "verbal", "math", 1)


@pytest.mark.mcmc
def test_kalaian1996_fit_sits_where_metafor_does():
    """A short real fit on all 47 studies: the posterior of the two means covers metafor's REML estimates."""
    data = read_trials(DATA / "kalaian1996_trials.csv", DATA / "kalaian1996_cov.csv")
    spec = replace_spec(spec_for_degree(1), error_covariance="per_trial")  # each study's own V, as metafor
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bc.RelevanceWarning)  # A4 is weak for math here (Q p = 0.48)
        fit = bc.fit_metric(data, "verbal", "math", spec, seed=3, draws=1000, tune=500, chains=2)
    post = fit.posterior["posterior"]
    assert fit.posterior["log_likelihood"].sizes["trial"] == 47  # every study, the incomplete ones too
    for draws, reml in ((post["kpi_mean"].values[..., 0], 0.11671541), (post["alpha"].values[..., 0, 0], 0.13757614)):
        assert abs(np.median(draws) - reml) < 0.3 * draws.std()
        assert 0.02 < draws.std() < 0.06  # REML standard errors 0.034 and 0.043
