"""Arm sizes in the trial table and the measurement model (pooled or per-trial error covariance)."""

import numpy as np
import pandas as pd
import pytest

import bayes_cmma as bc
from bayes_cmma.errors import DataError, SpecError
from bayes_cmma.fitting.measurement import apply_measurement, for_spec, pooled_covariance, size_factors
from bayes_cmma.fitting.spec import parse_spec, replace_spec, spec_for_degree
from bayes_cmma.inputs.data import metric_design


def _table(K=12, sizes=True):
    rng = np.random.default_rng(3)
    rows = []
    for k in range(K):
        nt, nc = 100 + 10 * k, 120 + 5 * k
        c = 1 / nt + 1 / nc
        for p, q in enumerate(("gmv", "ndcg", "ndcg^2")):
            row = {"trial": f"t{k}", "team": "ab"[k % 2], "quantity": q, "estimate": rng.normal(k * (p + 1), 1),
                   "std_error": np.sqrt(c) * (1 + p + 0.1 * (k % 3) + 0.2 * (k % 2))}
            if sizes:
                row.update(n_treated=nt, n_control=nc)
            rows.append(row)
    return pd.DataFrame(rows)


def test_arm_sizes_are_read_per_trial_and_kept_out_of_extra():
    data = bc.read_trials(_table())
    assert data.has_arm_sizes
    sizes = data.arm_sizes()
    assert sizes.shape == (12, 2) and sizes.dtype == np.int64
    np.testing.assert_array_equal(sizes[:, 0], 100 + 10 * np.arange(12))
    np.testing.assert_array_equal(sizes[:, 1], 120 + 5 * np.arange(12))
    assert "n_treated" not in data.extra.columns
    design = metric_design(data, "gmv", "ndcg", 2, warn_filled=False)
    np.testing.assert_array_equal(design.arm_sizes, sizes)
    assert not bc.read_trials(_table(sizes=False)).has_arm_sizes
    assert metric_design(bc.read_trials(_table(sizes=False)), "gmv", "ndcg", 2, warn_filled=False).arm_sizes is None


def test_arm_sizes_change_the_data_hash_but_not_a_table_without_them():
    with_sizes, without = bc.read_trials(_table()), bc.read_trials(_table(sizes=False))
    assert with_sizes.data_hash() != without.data_hash()
    df = _table()
    df.loc[0, "n_treated"] = 101
    df.loc[df["trial"] == "t0", "n_treated"] = 101
    assert bc.read_trials(df).data_hash() != with_sizes.data_hash()


def test_an_arm_size_given_on_some_rows_of_a_trial_only_is_enough():
    df = _table()
    df.loc[df["quantity"] != "gmv", ["n_treated", "n_control"]] = np.nan
    np.testing.assert_array_equal(bc.read_trials(df).arm_sizes(), bc.read_trials(_table()).arm_sizes())


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.drop(columns="n_control"), "has column 'n_treated' but not 'n_control'"),
        (lambda d: d.assign(n_treated=d["n_treated"].where(d["trial"] != "t3", 0)),
         r"'n_treated' must hold a positive whole number of units, got '0' for trial 't3'"),
        (lambda d: d.assign(n_control=d["n_control"].astype(float).where(d["trial"] != "t2", 10.5)),
         r"'n_control' must hold a positive whole number.*'10.5' for trial 't2'"),
        (lambda d: d.assign(n_control=d["n_control"].astype(object).where(d["trial"] != "t1", "many")),
         r"'n_control' must hold a positive whole number.*'many' for trial 't1'"),
        (lambda d: d.assign(n_treated=np.where((d["trial"] == "t4") & (d["quantity"] == "gmv"), 7, d["n_treated"])),
         r"trial 't4' has different 'n_treated' values on its rows \(7 and 140\)"),
        (lambda d: d.assign(n_treated=d["n_treated"].astype(float).where(d["trial"] != "t5", np.nan)),
         r"'n_treated' is blank on every row of 1 trial\(s\): 't5'"),
    ],
)
def test_bad_arm_sizes_name_the_trial_and_column(change, message):
    with pytest.raises(DataError, match=message):
        bc.read_trials(change(_table()))


def test_pooled_covariance_is_the_mean_of_S_over_c_overall_and_per_team():
    rng = np.random.default_rng(0)
    K, d = 9, 3
    B = rng.normal(size=(K, d, d))
    S = B @ np.swapaxes(B, 1, 2) + np.eye(d)
    c = rng.uniform(0.5, 2, K)
    U = pooled_covariance(S, c)
    hand = sum(S[k] / c[k] for k in range(K)) / K
    for k in range(K):
        np.testing.assert_allclose(U[k], hand, rtol=1e-12)
    groups = np.arange(K) % 2
    Ug = pooled_covariance(S, c, groups)
    for g in (0, 1):
        idx = np.flatnonzero(groups == g)
        hand = sum(S[k] / c[k] for k in idx) / len(idx)
        for k in idx:
            np.testing.assert_allclose(Ug[k], hand, rtol=1e-12)


def test_apply_measurement_scales_the_pooled_covariance_by_the_arm_sizes():
    data = bc.read_trials(_table())
    design = metric_design(data, "gmv", "ndcg", 2, warn_filled=False)
    pooled = apply_measurement(design)
    n = data.arm_sizes().astype(float)
    c = 1 / n[:, 0] + 1 / n[:, 1]
    U = np.mean(design.S / c[:, None, None], axis=0)
    np.testing.assert_allclose(pooled.S, c[:, None, None] * U, rtol=1e-12)
    assert "arm sizes" in pooled.measurement and "all trials" in pooled.measurement
    # the total error covariance weighted by c is preserved: sum S_k / c_k
    np.testing.assert_allclose((pooled.S / c[:, None, None]).sum(0), (design.S / c[:, None, None]).sum(0))
    # idempotent, and per-trial leaves S alone
    assert apply_measurement(pooled) is pooled
    assert apply_measurement(design, "per_trial") is design
    per_team = apply_measurement(design, pool_by="team")
    assert "teams" in per_team.measurement
    assert not np.allclose(per_team.S, pooled.S)


def test_without_arm_sizes_the_scale_comes_from_the_size_proxy():
    design = metric_design(bc.read_trials(_table(sizes=False)), "gmv", "ndcg", 2, warn_filled=False)
    c, source = size_factors(design, "metric_se")
    np.testing.assert_allclose(c, design.S[:, 1, 1])
    assert "'ndcg'" in source
    c, _ = size_factors(design, "kpi_se")
    np.testing.assert_allclose(c, design.S[:, 0, 0])
    c, _ = size_factors(design, "equal")
    np.testing.assert_array_equal(c, 1.0)
    pooled = apply_measurement(design, size_proxy="metric_se")
    # the metric's own variance is reproduced exactly (its ratio to c is pooled to a constant of 1)
    np.testing.assert_allclose(pooled.S[:, 1, 1], design.S[:, 1, 1])
    equal = apply_measurement(design, size_proxy="equal")
    np.testing.assert_allclose(equal.S, np.broadcast_to(design.S.mean(0), design.S.shape))


def test_a_pooled_covariance_that_is_not_positive_definite_names_the_team():
    design = metric_design(bc.read_trials(_table()), "gmv", "ndcg", 2, warn_filled=False)
    S = design.S.copy()
    team_b = design.team_idx == 1
    S[team_b] = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # singular in team b only
    import dataclasses

    bad = dataclasses.replace(design, S=S)
    with pytest.raises(DataError, match="pooled over team 'b' is not positive definite"):
        apply_measurement(bad, pool_by="team")


def test_spec_measurement_keys_are_validated_with_a_hint():
    spec = parse_spec({"degree": 2})
    assert (spec.error_covariance, spec.pool_by, spec.size_proxy) == ("pooled", "all", "metric_se")
    spec = parse_spec({"degree": 2, "measurement": {"error_covariance": "per_trial", "pool_by": "team"}})
    assert spec.error_covariance == "per_trial" and spec.pool_by == "team"
    assert spec.to_dict()["measurement"]["error_covariance"] == "per_trial"
    assert replace_spec(spec, error_covariance="pooled").error_covariance == "pooled"
    with pytest.raises(SpecError, match="error_covariance must be one of.*Did you mean 'pooled'"):
        parse_spec({"degree": 1, "measurement": {"error_covariance": "pooledd"}})
    with pytest.raises(SpecError, match="size_proxy must be one of"):
        parse_spec({"degree": 1, "measurement": {"size_proxy": 3}})
    with pytest.raises(SpecError, match="unknown key 'pool' .*Did you mean 'pool_by'"):
        parse_spec({"degree": 1, "measurement": {"pool": "team"}})


def test_for_spec_follows_the_spec():
    design = metric_design(bc.read_trials(_table()), "gmv", "ndcg", 2, warn_filled=False)
    assert for_spec(design, replace_spec(spec_for_degree(2), error_covariance="per_trial")) is design
    assert for_spec(design, spec_for_degree(2)).measurement.startswith("pooled over all trials")


def test_synthetic_summaries_with_arm_sizes_and_informative_precision():
    from bayes_cmma.studies.synthetic import simulate_summaries

    rng = np.random.default_rng(8)
    data, truth = simulate_summaries(rng, n_trials=300, n_teams=3, beta=(1.0,), arm_sizes=(200, 2000),
                                     informative_precision=0.8)
    assert data.has_arm_sizes
    n = truth["n"].astype(float)
    c = 1 / n[:, 0] + 1 / n[:, 1]
    np.testing.assert_array_equal(data.arm_sizes(), truth["n"])
    # log(S_kk / c_k) is linear in the trial's within-team standardised latent metric level, slope 2 kappa
    level = (truth["m"][:, 0] - truth["alpha"][np.arange(300) % 3, 0]) / truth["omega_chol"][0, 0]
    ratio = np.log(truth["S"][:, 0, 0] / c)
    slope = np.polyfit(level, ratio, 1)[0]
    assert slope == pytest.approx(1.6, rel=1e-9)
    np.testing.assert_allclose(data.dataset["std_error"].values ** 2, np.diagonal(truth["S"], axis1=1, axis2=2))
    # without the options the stream and the table are as before (no arm sizes)
    plain, _ = simulate_summaries(np.random.default_rng(8), n_trials=30, n_teams=3, beta=(1.0,))
    assert not plain.has_arm_sizes


def test_sbc_informative_simulator_draws_the_latent_law_and_scales_S():
    from dataclasses import replace

    from bayes_cmma.checks.calibration import _simulate, _simulate_informative, _template
    from bayes_cmma.fitting.model import unpack_chol

    spec = spec_for_degree(2)
    design, S = _template(60, 4, spec, seed=1)
    K = 40_000
    big = replace(design, z=np.zeros((K, 3)), team_idx=np.zeros(K, dtype=int))
    S_big = np.broadcast_to(S[0], (K, 3, 3))
    truth = {"beta_std": np.array([0.7, -0.4]), "alpha": np.array([[0.3, -1.0]]), "kpi_mean": np.array([2.0]),
             "metric_chol": np.array([1.2, 0.3, 0.8]), "residual_sd": np.array(0.5)}
    # kappa = 0: the explicit latent draw has the marginal law of _simulate
    z0, S0 = _simulate_informative(truth, big, S_big, 2, np.random.default_rng(0), 0.0)
    z1 = _simulate(truth, big, S_big, 2, np.random.default_rng(1))
    np.testing.assert_allclose(S0, S_big)
    np.testing.assert_allclose(z0.mean(0), z1.mean(0), atol=0.03)
    np.testing.assert_allclose(np.cov(z0, rowvar=False), np.cov(z1, rowvar=False), rtol=0.05, atol=0.02)
    # kappa > 0: each S_k is the template's times exp(2 kappa s_k), s_k standardised latent level
    z, S_true = _simulate_informative(truth, big, S_big, 2, np.random.default_rng(2), 0.5)
    factor = S_true[:, 0, 0] / S_big[:, 0, 0]
    np.testing.assert_allclose(S_true, S_big * factor[:, None, None])
    chol = unpack_chol(truth["metric_chol"], 2)
    s = np.log(factor) / (2 * 0.5)
    assert np.std(s) == pytest.approx(1.0, rel=0.03)  # the standardised latent level
    # the observed metric ATE's residual spread grows with the level
    m1 = 0.3 + chol[0, 0] * s
    resid = z[:, 1] - m1
    hi, lo = s > 1, s < -1
    assert np.std(resid[hi]) > 2 * np.std(resid[lo])


def test_a_fit_stores_the_pooled_likelihood_scipy_computes_from_the_arm_sizes(example):
    """The stored per-trial log-likelihood of a (fake) fit with the default spec is scipy's normal density
    of the original-scale ATEs with S_k = c_k U, U and c_k computed here from the table and its arm sizes."""
    from scipy import stats

    from tests.fakes import fake_fit

    fit = fake_fit(example.trials, "gmv", "ndcg", 2, draws=3)
    ds = example.trials.dataset
    names = ["gmv", "ndcg", "ndcg^2"]
    S = ds["covariance"].sel(quantity=names, quantity_other=names).values
    n = example.trials.arm_sizes().astype(float)
    c = 1 / n[:, 0] + 1 / n[:, 1]
    U = np.mean(S / c[:, None, None], axis=0)
    z = ds["estimate"].sel(quantity=names).values
    post = fit.posterior["posterior"]
    team_of = {t: i for i, t in enumerate(map(str, post["team"].values))}
    g = np.array([team_of[str(t)] for t in ds["team"].values])
    stored = fit.posterior["log_likelihood"]["trial_ate"].values
    for chain, draw in ((0, 0), (1, 2)):
        p = post.isel(chain=chain, draw=draw)
        beta, alpha, pi = p["beta"].values, p["alpha"].values, p["pi"].values
        sd = p["metric_sd"].values
        omega = p["metric_corr"].values * np.outer(sd, sd)
        A = np.vstack([beta, np.eye(2)])
        G = A @ omega @ A.T
        G[0, 0] += float(p["residual_sd"]) ** 2
        for k in (0, 57, 189):
            mean = np.concatenate([[alpha[g[k]] @ beta + pi[g[k]]], alpha[g[k]]])
            cov = G + c[k] * U
            d = np.sqrt(np.diag(cov))  # scipy's singularity check is not scale-free: standardise first
            want = stats.multivariate_normal(np.zeros(3), cov / np.outer(d, d)).logpdf((z[k] - mean) / d)
            want -= np.log(d).sum()
            assert stored[chain, draw, k] == pytest.approx(want, rel=1e-8)
    assert fit.posterior.attrs["measurement"] == "pooled over all trials, scaled by arm sizes"
