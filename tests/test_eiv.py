"""Summary-level errors-in-variables estimators (total covariance = Fuller's moments, LIML) by hand."""

import numpy as np
import pytest
from scipy import linalg

import bayes_cmma as bc
from bayes_cmma.baselines.eiv import eiv_estimate, liml_kappa, summary_estimate
from bayes_cmma.baselines.ols import cmma_ols_design
from bayes_cmma.errors import DataError
from bayes_cmma.inputs.data import metric_design
from bayes_cmma.studies.synthetic import simulate_summaries


@pytest.fixture(scope="module")
def design():
    data, _ = simulate_summaries(np.random.default_rng(11), n_trials=90, n_teams=3, beta=(2.0, -1.0),
                                 residual_sd=0.3, se_range=(0.3, 0.6))
    return metric_design(data, "y", "m", 2)


def _team_pieces(design):
    """Within-team scatter of (y, x) and accumulated noise, from explicit team dummies (Frisch-Waugh)."""
    D = np.eye(len(design.teams))[design.team_idx]
    M = np.eye(design.n_trials) - D @ np.linalg.solve(D.T @ D, D.T)
    W = design.z.T @ M @ design.z
    n_g = D.sum(0)[design.team_idx]
    N = sum((1 - 1 / n_g[k]) * design.S[k] for k in range(design.n_trials))
    return W, N


def test_tc_is_the_total_covariance_estimator(design):
    W, N = _team_pieces(design)
    K, G = design.n_trials, len(design.teams)
    # Bibaut et al.: covariance of true effects = total covariance - average noise covariance
    Lam = W / (K - G) - N / (K - G)
    hand = np.linalg.solve(Lam[1:, 1:], Lam[1:, 0])
    r = eiv_estimate(design, "tc")
    np.testing.assert_allclose(r.beta.to_numpy(), hand, rtol=1e-10)
    assert r.method == "tc" and r.sigma2 == 1.0 and list(r.params.index) == ["m", "m^2"]


def test_liml_is_total_least_squares_on_the_whitened_scatter(design):
    W, N = _team_pieces(design)
    vals, vecs = linalg.eigh(W, N)
    v = vecs[:, 0]
    hand = -v[1:] / v[0]
    r = eiv_estimate(design, "liml")
    np.testing.assert_allclose(r.beta.to_numpy(), hand, rtol=1e-8)
    assert liml_kappa(design) == pytest.approx(vals[0], rel=1e-12)
    # the whitened form: smallest eigenvalue of N^-1/2 W N^-1/2
    Ni = linalg.inv(linalg.sqrtm(N)).real
    assert np.linalg.eigvalsh(Ni @ W @ Ni)[0] == pytest.approx(vals[0], rel=1e-8)


def test_without_measurement_error_tc_is_the_ols(design):
    import dataclasses

    exact = dataclasses.replace(design, S=np.zeros_like(design.S))
    np.testing.assert_allclose(eiv_estimate(exact, "tc").beta.to_numpy(), cmma_ols_design(exact).beta.to_numpy(),
                               rtol=1e-9)


def test_sandwich_matches_a_numerical_jacobian_and_a_loop(design):
    r = eiv_estimate(design, "tc")
    b = r.beta.to_numpy()
    D = np.eye(len(design.teams))[design.team_idx]
    H = D @ np.linalg.solve(D.T @ D, D.T)
    zt = design.z - H @ design.z
    n_g = D.sum(0)[design.team_idx]

    def psi(beta):
        out = []
        for k in range(design.n_trials):
            x, y, S = zt[k, 1:], zt[k, 0], design.S[k]
            out.append(x * (y - x @ beta) - (1 - 1 / n_g[k]) * (S[1:, 0] - S[1:, 1:] @ beta))
        return np.array(out)

    assert np.abs(psi(b).sum(0)).max() < 1e-9  # the estimate solves the estimating equation
    eps = 1e-6
    J = np.column_stack([(psi(b + eps * e).sum(0) - psi(b - eps * e).sum(0)) / (2 * eps) for e in np.eye(2)])
    meat = psi(b).T @ psi(b)
    K, G, P = design.n_trials, len(design.teams), 2
    Jinv = np.linalg.inv(J)
    hand = Jinv @ meat @ Jinv.T * K / (K - G - P)
    np.testing.assert_allclose(r.cov.to_numpy(), hand, rtol=1e-5)
    assert r.df_resid == K - G - P
    table = r.coefficient_table()
    assert list(table.columns[:2]) == ["estimate", "std_error"]
    assert len(r.wald_tests()) == 2


def test_tc_and_liml_recover_beta_where_ols_is_attenuated():
    """400 data sets with known S and no trial-level KPI residual: both unbiased, intervals cover."""
    from bayes_cmma.inputs.data import MetricDesign

    rng = np.random.default_rng(5)
    est = {"ols": [], "tc": [], "liml": []}
    covered = {"tc": 0, "liml": 0}
    reps, K = 400, 120
    team = np.arange(K) % 3
    for _ in range(reps):
        m = rng.normal(0, 1, 3)[team] + rng.standard_normal(K)  # latent metric effects
        y = 1.5 * m + np.array([0.0, 0.5, -0.5])[team]  # no trial-level residual
        se = rng.uniform(0.4, 0.8, (K, 2))
        S = se[:, :, None] * se[:, None, :] * np.array([[1.0, 0.6], [0.6, 1.0]])
        z = np.column_stack([y, m]) + np.einsum("kij,kj->ki", np.linalg.cholesky(S), rng.standard_normal((K, 2)))
        d = MetricDesign(z=z, S=S, team_idx=team, trials=[str(k) for k in range(K)], teams=["a", "b", "c"],
                         quantities=["y", "m"], kpi="y", metric="m", degree=1, n_filled=0)
        est["ols"].append(cmma_ols_design(d).beta.iloc[0])
        for m in ("tc", "liml"):
            r = eiv_estimate(d, m)
            est[m].append(r.beta.iloc[0])
            t = r.coefficient_table(0.95).iloc[0]
            covered[m] += t["ci95_lower"] <= 1.5 <= t["ci95_upper"]
    mean = {k: np.mean(v) for k, v in est.items()}
    mcse = {k: np.std(v) / np.sqrt(reps) for k, v in est.items()}
    assert mean["ols"] < 1.5 - 20 * mcse["ols"]  # attenuated by the measurement error
    for m in ("tc", "liml"):
        assert abs(mean[m] - 1.5) < 3 * mcse[m], (m, mean[m], mcse[m])
        assert 0.92 <= covered[m] / reps <= 0.98, (m, covered[m] / reps)


def test_summary_estimate_on_a_table_and_errors():
    ex = bc.load_example()
    r = summary_estimate(ex.trials, "gmv", "ndcg", 2, "tc")
    assert r.degree == 2 and r.metric == "ndcg"
    with pytest.raises(DataError, match="unknown summary-level method 'iv'"):
        summary_estimate(ex.trials, "gmv", "ndcg", 1, "iv")
    d = metric_design(ex.trials, "gmv", "ndcg", 1)
    import dataclasses

    tiny = dataclasses.replace(d, z=d.z[:9], S=d.S[:9], team_idx=d.team_idx[:9], trials=d.trials[:9])
    with pytest.raises(DataError, match="needs at least 10"):
        eiv_estimate(tiny, "tc")
    # measurement error larger than the spread of the metric: the correction is undefined (A4)
    noisy = dataclasses.replace(d, S=d.S * 1e4)
    with pytest.raises(DataError, match="not positive definite.*assumption A4"):
        eiv_estimate(noisy, "tc")
