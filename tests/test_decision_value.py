"""The decision value of a north star from the trials alone: fission against closed forms, the composite
against numpy least squares, cross-fitting, reproducibility, bad input, the command."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from cli_output import unwrap
from scipy import stats

import bayes_cmma as bc
from bayes_cmma.cli import main
from bayes_cmma.decisions.decision_value import (
    COMPOSITE,
    LAUNCH_ALL,
    composite_weights,
    fission,
    fold_labels,
    mean_interval,
    value_per_trial,
)
from bayes_cmma.errors import DataError


def _covariances(se: np.ndarray, corr: float) -> np.ndarray:
    d = se.shape[1]
    R = corr * np.ones((d, d)) + (1 - corr) * np.eye(d)
    return se[:, :, None] * se[:, None, :] * R


def _truths(K=30, J=2, seed=0, corr=0.8):
    """True (y, m) per trial, and strongly correlated measurement errors of about their spread."""
    rng = np.random.default_rng(seed)
    m = rng.normal(0.1, 0.4, (K, J))
    y = m @ np.linspace(1.0, 0.2, J) + rng.normal(0, 0.2, K)
    S = _covariances(rng.uniform(0.2, 0.5, (K, J + 1)), corr)
    return np.column_stack([y, m]), S


def _table(z, S, metrics=("m1", "m2"), kpi="y"):
    names = [kpi, *metrics]
    K = len(z)
    trials = [f"t{k:03d}" for k in range(K)]
    rows = [{"trial": trials[k], "team": f"g{k % 2}", "quantity": q, "estimate": z[k, i],
             "std_error": np.sqrt(S[k, i, i])} for k in range(K) for i, q in enumerate(names)]
    cov = [{"trial": trials[k], "quantity_1": names[i], "quantity_2": names[j], "covariance": S[k, i, j]}
           for k in range(K) for i in range(len(names)) for j in range(i)]
    return pd.DataFrame(rows), pd.DataFrame(cov)


def test_fission_halves_are_independent_with_the_stated_covariances():
    """Over z ~ N(theta, S): f ~ N(theta, (1 + tau^2) S), g ~ N(theta, (1 + 1/tau^2) S), Cov(f, g) = 0."""
    theta, S = _truths(K=1, seed=1)
    rng = np.random.default_rng(2)
    n, tau = 200_000, 0.7
    z = theta + rng.multivariate_normal(np.zeros(3), S[0], size=n)
    f, g = fission(z, np.broadcast_to(S[0], (n, 3, 3)), tau, rng, repeats=1)
    f, g = f[0], g[0]
    sd = np.sqrt(np.diag(S[0]))
    for x, factor in ((f, 1 + tau**2), (g, 1 + 1 / tau**2)):
        np.testing.assert_allclose(x.mean(axis=0), theta[0], atol=float(5 * sd.max() * np.sqrt(factor / n)))
        # a covariance estimate's sd is at most sqrt(2 / n) s_i s_j; 5 of those
        bound = 5 * factor * np.outer(sd, sd) * np.sqrt(2 / n)
        np.testing.assert_array_less(np.abs(np.cov(x.T) - factor * S[0]), bound)
    cross = (f - f.mean(0)).T @ (g - g.mean(0)) / (n - 1)
    scale = np.sqrt((1 + tau**2) * (1 + 1 / tau**2)) * np.outer(sd, sd)
    np.testing.assert_array_less(np.abs(cross), 5 * scale * np.sqrt(2 / n))


def _replicate(z, S, tau, n_rep, seed):
    """n_rep data sets z_r ~ N(theta, S) and the single-metric estimate (metric 1) of each (one fission draw)."""
    rng = np.random.default_rng(seed)
    K, d = z.shape
    L = np.linalg.cholesky(S)
    data = z[None] + np.einsum("kij,rkj->rki", L, rng.standard_normal((n_rep, K, d)))
    f, g = fission(data.reshape(-1, d), np.tile(S, (n_rep, 1, 1)), tau, rng, repeats=1)
    contrib, _ = value_per_trial(f[..., 1], g[..., 0])
    return contrib.reshape(n_rep, K).mean(axis=1)


def test_the_fission_estimate_is_unbiased_for_the_closed_form_decision_value():
    """E[1{f_m > 0} g_y] = Phi(m / sqrt((1 + tau^2) S_mm)) y, whatever the KPI-metric error correlation."""
    theta, S = _truths(seed=3)
    tau = 1.0
    est = _replicate(theta, S, tau, 20_000, seed=4)
    truth = np.mean(stats.norm.cdf(theta[:, 1] / np.sqrt((1 + tau**2) * S[:, 1, 1])) * theta[:, 0])
    mcse = est.std(ddof=1) / np.sqrt(est.size)
    assert abs(est.mean() - truth) < 4 * mcse, (est.mean(), truth, mcse)


def test_scoring_on_the_same_ates_is_biased_by_the_stein_term():
    """Without fission E[1{m_hat > 0} y_hat] = Phi(m/s) y + (S_my / s) phi(m/s): the metric's chance luck
    shows up in the KPI too. The estimate matches that closed form, and the bias is large."""
    theta, S = _truths(seed=5)
    est = _replicate(theta, S, 0.0, 20_000, seed=6)
    s = np.sqrt(S[:, 1, 1])
    value = np.mean(stats.norm.cdf(theta[:, 1] / s) * theta[:, 0])
    bias = np.mean(S[:, 0, 1] / s * stats.norm.pdf(theta[:, 1] / s))
    mcse = est.std(ddof=1) / np.sqrt(est.size)
    assert abs(est.mean() - (value + bias)) < 4 * mcse
    assert bias > 20 * mcse


def test_composite_weights_match_least_squares_of_the_true_kpi_effect_on_the_observed_metrics():
    """With many trials the noise-corrected estimator is the regression (through 0) of the *true* KPI
    effect on the *observed* metric ATEs, which numpy can compute when the truth is known."""
    rng = np.random.default_rng(7)
    K = 100_000
    m = rng.multivariate_normal([0.2, 0.1, 0.0], [[1, 0.6, 0.3], [0.6, 1, 0.5], [0.3, 0.5, 1]], size=K)
    y = m @ np.array([1.0, 0.5, -0.3]) + rng.normal(0, 0.3, K)
    S = np.broadcast_to(_covariances(np.full((1, 4), 0.6), 0.7)[0], (K, 4, 4))
    z = np.column_stack([y, m]) + rng.multivariate_normal(np.zeros(4), S[0], size=K)
    w = composite_weights(z, S)
    ls = np.linalg.lstsq(z[:, 1:], y, rcond=None)[0]
    np.testing.assert_allclose(w, ls / np.linalg.norm(ls), atol=0.01)
    # naive least squares on the observed KPI ATE is pulled by the correlated noise
    naive = np.linalg.lstsq(z[:, 1:], z[:, 0], rcond=None)[0]
    assert np.linalg.norm(naive / np.linalg.norm(naive) - w) > 0.05


@pytest.fixture(scope="module")
def small():
    z, S = _truths(K=40, J=2, seed=8, corr=0.6)
    trials, cov = _table(z, S)
    return bc.read_trials(trials, cov), trials, cov


def test_the_skew_corrected_interval_is_students_for_symmetric_values():
    x = np.array([[-2.0, -1.0, 0.0, 1.0, 2.0], [1.0, 3.0, 4.0, 5.0, 7.0]])  # sample skewness exactly 0
    for got, want in zip(mean_interval(x), mean_interval(x, method="t"), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12)
    half = stats.t.ppf(0.975, 4) * x.std(axis=1, ddof=1) / np.sqrt(5)
    np.testing.assert_allclose(mean_interval(x, method="t")[1], x.mean(axis=1) + half, rtol=1e-12)


def test_the_skew_corrected_interval_solves_halls_equation():
    """At each end of the interval Hall's transformed statistic, written out as its cubic, is -+ the quantile."""
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.exponential(1.0, (50, 12)), -rng.exponential(1.0, (50, 12))])  # both skews
    n = x.shape[1]
    mean, se = x.mean(axis=1), x.std(axis=1, ddof=1) / np.sqrt(n)
    gamma = stats.skew(x, axis=1)  # moments with divisor n, as Hall's
    lower, upper = mean_interval(x, 0.9)
    q = stats.t.ppf(0.95, n - 1)
    for end, sign in ((lower, 1), (upper, -1)):
        T = (mean - end) / se
        g = T + gamma / (6 * np.sqrt(n)) + gamma * T**2 / (3 * np.sqrt(n)) + gamma**2 * T**3 / (27 * n)
        np.testing.assert_allclose(g, sign * q, rtol=1e-10)
    # right-skewed values: the interval reaches further above the mean than below it; left-skewed, the reverse
    right = gamma > 0
    assert ((upper - mean > mean - lower) == right).all()


def test_the_skew_corrected_interval_covers_a_skewed_mean_better_than_students():
    """Means of 10 exponential values: Student's t covers about 90% (textbook), the corrected interval nearer 95%."""
    x = np.random.default_rng(0).exponential(1.0, (20_000, 10))
    cover = {m: np.mean((mean_interval(x, method=m)[0] <= 1) & (1 <= mean_interval(x, method=m)[1]))
             for m in ("t", "skew-corrected")}
    assert 0.89 < cover["t"] < 0.91  # Monte Carlo se 0.002
    assert 0.93 < cover["skew-corrected"] < 0.96


def test_mean_interval_of_constant_values_is_the_value():
    lower, upper = mean_interval(np.ones((3, 5)))
    np.testing.assert_array_equal(lower, 1.0)
    np.testing.assert_array_equal(upper, 1.0)


@pytest.mark.parametrize(
    ("args", "message"),
    [((np.ones(4), 0.95, "normal"), "interval must be one of skew-corrected, t; got 'normal'"),
     ((np.ones(4), 1.0), "coverage must be between 0 and 1, got 1.0"),
     ((np.ones((3, 1)),), "needs at least 2 values, got 1"),
     ((np.float64(2.0),), "needs at least 2 values, got 0")],
)
def test_mean_interval_bad_input(args, message):
    with pytest.raises(DataError, match=message):
        mean_interval(*args)


def test_table_rows_and_the_difference_from_the_best(small):
    data, _, _ = small
    out = bc.decision_value(data, "y", ["m1", "m2"], seed=1, repeats=20)
    t = out.table
    assert list(t.index) == ["m1", "m2", COMPOSITE, LAUNCH_ALL]
    assert list(t["kind"]) == ["metric", "metric", "composite", "reference"]
    np.testing.assert_allclose(t["value"], out.per_trial.mean("trial").values)
    np.testing.assert_allclose(t.loc[LAUNCH_ALL, "launch_rate"], 1.0)
    assert t.loc[out.best, "difference"] == 0.0
    assert (t["difference"][t["kind"] != "reference"] <= 0).all()
    lower, upper = mean_interval(out.per_trial.values)
    np.testing.assert_allclose(t["ci_lower"], lower, rtol=1e-12)
    np.testing.assert_allclose(t["ci_upper"], upper, rtol=1e-12)
    assert t.attrs["interval"] == "skew-corrected"
    plain_t = bc.decision_value(data, "y", ["m1", "m2"], seed=1, repeats=20, interval="t").table
    np.testing.assert_allclose(plain_t["value"], t["value"])
    np.testing.assert_allclose(plain_t["ci_upper"] - plain_t["value"], stats.t.ppf(0.975, 39) * t["std_error"],
                               rtol=1e-12)
    # launching every trial is scored by the KPI ATE alone: without fission, the plain mean of the KPI ATEs
    plain = bc.decision_value(data, "y", ["m1", "m2"], tau=0)
    np.testing.assert_allclose(plain.table.loc[LAUNCH_ALL, "value"], data.dataset["estimate"].sel(quantity="y").mean())
    assert out.table.attrs["measurement_variance_factor"] == 2.0
    assert out.weights.shape == (5, 2)
    np.testing.assert_allclose(np.linalg.norm(out.weights.values, axis=1), 1.0)


def test_same_seed_same_numbers_and_a_held_out_trial_does_not_move_its_folds_weights(small):
    data, trials, cov = small
    a = bc.decision_value(data, "y", ["m1", "m2"], seed=4, repeats=10)
    b = bc.decision_value(data, "y", ["m1", "m2"], seed=4, repeats=10)
    pd.testing.assert_frame_equal(a.table, b.table)
    folds = fold_labels(40, 5, np.random.default_rng(4))
    k = 7
    moved = trials.copy()
    moved.loc[(moved["trial"] == f"t{k:03d}") & (moved["quantity"] == "m1"), "estimate"] += 3.0
    c = bc.decision_value(bc.read_trials(moved, cov), "y", ["m1", "m2"], seed=4, repeats=10)
    # the composite's decisions on the other trials of trial k's fold use weights learned without trial k
    ca, cc = a.per_trial.sel(candidate=COMPOSITE).values, c.per_trial.sel(candidate=COMPOSITE).values
    same = (folds == folds[k]) & (np.arange(40) != k)
    np.testing.assert_array_equal(ca[same], cc[same])
    assert not np.array_equal(ca[folds != folds[k]], cc[folds != folds[k]])  # trial k trains the other folds


def test_unknown_covariances_are_filled_with_a_warning(small):
    """Fission needs the KPI-metric error covariance: filling it is an assumption the user hears about."""
    _, trials, _ = small
    message = r"120 within-trial covariance pair\(s\) .* filled with correlation 0.3"
    with pytest.warns(bc.AssumptionWarning, match=message):
        bc.decision_value(bc.read_trials(trials), "y", ["m1", "m2"], within_trial_correlation=0.3)


def test_one_metric_has_no_composite(small):
    data, _, _ = small
    out = bc.decision_value(data, "y", ["m1"])
    assert list(out.table.index) == ["m1", LAUNCH_ALL]
    assert out.weights.empty


def test_a_threshold_launches_fewer_trials(small):
    data, _, _ = small
    low = bc.decision_value(data, "y", ["m1", "m2"], seed=2)
    high = bc.decision_value(data, "y", ["m1", "m2"], seed=2, threshold=1.96)
    assert (high.table["launch_rate"].iloc[:3] < low.table["launch_rate"].iloc[:3]).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tau": -1}, "tau .* must be 0 or more, got -1"),
        ({"repeats": 0}, "repeats must be at least 1, got 0"),
        ({"folds": 1}, r"folds must be between 2 and the number of complete trials \(40\), got 1"),
        ({"folds": 41}, r"folds must be between 2 and .*\(40\), got 41"),
        ({"threshold": float("nan")}, "threshold must be a finite number"),
        ({"metrics": []}, "no metric given"),
        ({"metrics": ["m1", "ndcg"]}, "metric 'ndcg' is not a quantity of the trial table"),
        ({"interval": "bca"}, "interval must be one of skew-corrected, t; got 'bca'"),
    ],
)
def test_bad_input_names_the_value(small, kwargs, message):
    data, _, _ = small
    kwargs = {"metrics": ["m1", "m2"]} | kwargs
    with pytest.raises(DataError, match=message):
        bc.decision_value(data, "y", **kwargs)


def test_too_few_complete_trials_is_an_error(small):
    _, trials, cov = small
    few = trials[trials["trial"].isin(["t000", "t001", "t002"])]
    with pytest.raises(DataError, match=r"3 trial\(s\) for 'y'/'m1 \+ m2' but .* needs at least 5"):
        bc.decision_value(bc.read_trials(few, cov[cov["trial"].isin(few["trial"])]), "y", ["m1", "m2"])


def test_command_writes_the_table_and_prints_it(small, tmp_path, capsys):
    _, trials, cov = small
    trials.to_csv(tmp_path / "t.csv", index=False)
    cov.to_csv(tmp_path / "c.csv", index=False)
    out = tmp_path / "dv.csv"
    code = main(["decision-value", str(tmp_path / "t.csv"), "--cov", str(tmp_path / "c.csv"), "--kpi", "y",
                 "--metric", "m1", "--metric", "m2", "--seed", "3", "--out", str(out)])
    text = unwrap(capsys.readouterr().out)
    assert code == 0
    table = pd.read_csv(out)
    assert list(table["candidate"]) == ["m1", "m2", COMPOSITE, LAUNCH_ALL]
    expected = bc.decision_value(bc.read_trials(trials, cov), "y", ["m1", "m2"], seed=3).table
    np.testing.assert_allclose(table["value"], expected["value"])
    assert "decision value" in text and "composite" in text


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--folds", "1"], "folds must be between 2"), (["--tau", "-0.5"], "tau .* must be 0 or more"),
     (["--repeats", "0"], "repeats must be at least 1"),
     (["--within-trial-correlation", "1.5"], "--within-trial-correlation must be strictly between -1 and 1, got 1.5"),
     (["--observational-slope", "m1=1", "--observational-slope", "m2=0", "--observational-slope", "ctr=2"],
      "--observational-slope names 'ctr', not a fitted metric")],
)
def test_command_bad_input_writes_nothing(small, tmp_path, capsys, extra, message):
    _, trials, _ = small
    trials.to_csv(tmp_path / "t.csv", index=False)
    out = tmp_path / "dv.csv"
    code = main(["decision-value", str(tmp_path / "t.csv"), "--kpi", "y", "--metric", "m1", "--metric", "m2",
                 "--out", str(out), *extra])
    err = unwrap(capsys.readouterr().err)
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and re.search(message, lines[0]), err
    assert "Traceback" not in err
    assert not out.exists()


def test_command_an_unknown_interval_is_refused_by_the_parser(small, tmp_path, capsys):
    _, trials, _ = small
    trials.to_csv(tmp_path / "t.csv", index=False)
    out = tmp_path / "dv.csv"
    with pytest.raises(SystemExit) as exit_:
        main(["decision-value", str(tmp_path / "t.csv"), "--kpi", "y", "--metric", "m1", "--out", str(out),
              "--interval", "bca"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert "argument --interval: invalid choice: 'bca'" in err and "Traceback" not in err
    assert not out.exists()


def test_command_plain_t_intervals(small, tmp_path):
    _, trials, cov = small
    trials.to_csv(tmp_path / "t.csv", index=False)
    cov.to_csv(tmp_path / "c.csv", index=False)
    out = tmp_path / "dv.csv"
    assert main(["decision-value", str(tmp_path / "t.csv"), "--cov", str(tmp_path / "c.csv"), "--kpi", "y",
                 "--metric", "m1", "--metric", "m2", "--interval", "t", "--out", str(out)]) == 0
    table = pd.read_csv(out)
    np.testing.assert_allclose(table["ci_upper"] - table["value"], stats.t.ppf(0.975, 39) * table["std_error"],
                               rtol=1e-9)


def test_fused_weights_run_from_the_trials_to_the_logs(small):
    """lambda = 0 is the trials' composite; inf the logs' slopes adjusted to the noise; between, the average
    of the two cross-moments."""
    from bayes_cmma.decisions.fusion import fused_weights

    data, _, _ = small
    design = bc.joint_design(data, "y", ["m1", "m2"])
    z, S = design.z, design.S
    o = np.array([1.0, -0.5])
    np.testing.assert_allclose(fused_weights(z, S, o, 0.0), composite_weights(z, S), rtol=1e-12)
    gram = z[:, 1:].T @ z[:, 1:]
    logs = np.linalg.solve(gram, (gram - S[:, 1:, 1:].sum(axis=0)) @ o)
    np.testing.assert_allclose(fused_weights(z, S, o, np.inf), logs / np.linalg.norm(logs), rtol=1e-12)
    g = z[:, 1:].T @ z[:, 0] - S[:, 1:, 0].sum(axis=0)
    mid = np.linalg.solve(gram, (g + 2.0 * (gram - S[:, 1:, 1:].sum(axis=0)) @ o) / 3.0)
    np.testing.assert_allclose(fused_weights(z, S, o, 2.0), mid / np.linalg.norm(mid), rtol=1e-12)
    np.testing.assert_allclose(fused_weights(z, S, o, 1e9), fused_weights(z, S, o, np.inf), atol=1e-6)


def test_decision_focused_fusion_picks_the_strength_with_the_best_cross_fitted_value(small):
    from bayes_cmma.decisions.fusion import decision_focused_fusion, fused_weights

    data, _, _ = small
    out = decision_focused_fusion(data, "y", ["m1", "m2"], {"m1": 1.0, "m2": 0.2}, strengths=[0, 1, np.inf], seed=3,
                                  select="best")
    assert list(out.curve["fusion_strength"]) == [0, 1, np.inf]
    assert out.strength == out.curve.loc[out.curve["value"].idxmax(), "fusion_strength"]
    design = bc.joint_design(data, "y", ["m1", "m2"])
    np.testing.assert_allclose(out.weights.values, fused_weights(design.z, design.S, np.array([1.0, 0.2]),
                                                                 out.strength))
    # lambda = 0 scores as the composite of bc.decision_value with the same seed (same folds, same fission)
    plain = bc.decision_value(data, "y", ["m1", "m2"], seed=3).table.loc[COMPOSITE, "value"]
    assert out.curve["value"].iloc[0] == pytest.approx(plain, rel=1e-12)


@pytest.mark.parametrize(
    ("args", "message"),
    [((["m1"], {"m1": 1.0}), "a composite needs 2 or more metrics"),
     ((["m1", "m2"], {"m1": 1.0}), r"no observational slope for metric\(s\) 'm2'"),
     ((["m1", "m2"], {"m1": 0.0, "m2": 0.0}), "must be finite and not all 0"),
     ((["m1", "m2"], {"m1": 1.0, "m2": 1.0}, [-1.0]), "fusion strengths must be 0 or more")],
)
def test_decision_focused_fusion_bad_input(small, args, message):
    from bayes_cmma.decisions.fusion import decision_focused_fusion

    data, _, _ = small
    metrics, slopes, *strengths = args
    kw = {"strengths": strengths[0]} if strengths else {}
    with pytest.raises(DataError, match=message):
        decision_focused_fusion(data, "y", metrics, slopes, **kw)


def test_command_chooses_a_fusion_strength_with_observational_slopes(small, tmp_path, capsys):
    _, trials, cov = small
    trials.to_csv(tmp_path / "t.csv", index=False)
    cov.to_csv(tmp_path / "c.csv", index=False)
    argv = ["decision-value", str(tmp_path / "t.csv"), "--cov", str(tmp_path / "c.csv"), "--kpi", "y", "--metric",
            "m1", "--metric", "m2", "--seed", "3", "--out", str(tmp_path / "dv.csv")]
    code = main([*argv, "--observational-slope", "m1=1", "--observational-slope", "m2=0.2",
                 "--fusion-out", str(tmp_path / "fu.csv")])
    text = unwrap(capsys.readouterr().out)
    assert code == 0 and "<- chosen" in text and "chosen by Stein's rule" in text
    curve = pd.read_csv(tmp_path / "fu.csv")
    assert curve["difference"].iloc[0] == 0 and np.isinf(curve["fusion_strength"].iloc[-1])
    # a slope that is not a number, or one file twice: one error line, nothing written
    for extra, message in ((["--observational-slope", "m1=x"], "--observational-slope 'm1=x': 'x' is not a number"),
                           (["--observational-slope", "m1=1", "--tau", "0"], "needs --tau above 0"),
                           (["--observational-slope", "m1=1", "--fusion-out", str(tmp_path / "dv2.csv")],
                            "--out and --fusion-out name the same file")):
        bad = [*argv[:-1], str(tmp_path / "dv2.csv"), *extra]
        assert main(bad) == 2
        err = unwrap(capsys.readouterr().err)
        assert message in err and "Traceback" not in err
        assert not (tmp_path / "dv2.csv").exists()


def test_significant_selection_keeps_the_trials_unless_the_logs_earn_their_place(small):
    from bayes_cmma.decisions.fusion import decision_focused_fusion

    data, _, _ = small
    kw = dict(strengths=[0, 1, np.inf], seed=3)
    best = decision_focused_fusion(data, "y", ["m1", "m2"], {"m1": 1.0, "m2": 0.2}, select="best", **kw)
    strict = decision_focused_fusion(data, "y", ["m1", "m2"], {"m1": 1.0, "m2": 0.2}, select="significant", **kw)
    row = best.curve.set_index("fusion_strength").loc[best.strength]
    expected = best.strength if row["difference"] > row["difference_se"] else 0.0
    assert strict.strength == expected
    with pytest.raises(DataError, match="select must be one of 'stein', 'significant', 'best', got 'max'"):
        decision_focused_fusion(data, "y", ["m1", "m2"], {"m1": 1.0, "m2": 0.2}, select="max")


@pytest.mark.parametrize("sandwich", ["hc3", "hc1"])
def test_disagreement_is_the_wald_statistic_of_the_logs_slopes(sandwich):
    """Without measurement noise the trials' composite is least squares through 0, the logs' is o, and
    D^2 is the Wald statistic of "the coefficients are o" with the HC3 (default) or HC1 covariance
    (statsmodels)."""
    import statsmodels.api as sm

    from bayes_cmma.decisions.fusion import disagreement

    z, _ = _truths(K=25, J=3, seed=4)
    S = np.zeros((25, 4, 4))
    o = np.array([0.9, 0.3, -0.1])
    ols = sm.OLS(z[:, 0], z[:, 1:]).fit(cov_type=sandwich.upper())
    wald = ols.wald_test((np.eye(3), o), use_f=False, scalar=True).statistic
    kw = {} if sandwich == "hc3" else {"sandwich": sandwich}
    assert disagreement(z, S, o, **kw) == pytest.approx(float(wald), rel=1e-10)


def test_disagreement_refuses_a_trial_of_leverage_one_and_an_unknown_sandwich():
    from bayes_cmma.decisions.fusion import decision_focused_fusion, disagreement

    z, S = _truths(K=12, J=3, seed=7)
    z[:, 3] = 0.0
    z[5, 3] = 0.4  # trial 5 alone moves the third metric
    with pytest.raises(DataError, match=r"trial 5 \(0-based, of the 12 complete trials\) alone determines a "
                                        r"direction .* \(leverage 1\)"):
        disagreement(z, S, np.array([1.0, 0.5, 0.0]))
    assert np.isfinite(disagreement(z, S, np.array([1.0, 0.5, 0.0]), sandwich="hc1"))
    with pytest.raises(DataError, match=r"sandwich must be one of 'hc3', 'hc1', got 'hc0'"):
        disagreement(z, S, np.array([1.0, 0.5, 0.0]), sandwich="hc0")
    # in a fusion the fold holding that trial out is collinear, which fusion_setup refuses first
    data = bc.read_trials(*_table(z, S, ("m1", "m2", "m3")))
    with pytest.raises(DataError, match="outside cross-fitting fold"):
        decision_focused_fusion(data, "y", ["m1", "m2", "m3"], {"m1": 1.0, "m2": 0.5, "m3": 0.0})


def test_stein_strength_borrows_by_the_disagreement():
    """lambda / (1 + lambda) = min(1, (J - 2) / D^2); with 2 metrics the trials alone; logs that agree
    exactly are borrowed whole, logs far off barely."""
    from bayes_cmma.decisions.decision_value import cross_moments
    from bayes_cmma.decisions.fusion import disagreement, stein_strength

    z, S = _truths(K=30, J=3, seed=5)
    gram, cross = cross_moments(z, S)
    own = np.linalg.solve(gram - S[:, 1:, 1:].sum(axis=0), cross)  # logs equal to the trials' own estimate
    assert disagreement(z, S, own) == pytest.approx(0.0, abs=1e-18)
    assert np.isinf(stein_strength(z, S, own))
    for o in (own + 0.01, own + np.array([0.3, -0.3, 0.1]), own + np.array([2.0, -2.0, 1.0])):
        lam, d2 = stein_strength(z, S, o), disagreement(z, S, o)
        share = 1.0 if np.isinf(lam) else lam / (1 + lam)
        assert share == pytest.approx(min(1.0, 1.0 / d2), rel=1e-12)
    assert stein_strength(z, S, own + np.array([2.0, -2.0, 1.0])) < 0.05
    z2, S2 = _truths(K=30, J=2, seed=5)
    assert stein_strength(z2, S2, np.array([1.0, 0.2])) == 0.0


def test_stein_selection_is_the_default_and_its_row_joins_the_curve():
    from bayes_cmma.decisions.fusion import decision_focused_fusion, fused_weights, stein_strength

    z, S = _truths(K=30, J=3, seed=6)
    metrics = ("m1", "m2", "m3")
    data = bc.read_trials(*_table(z, S, metrics))
    slopes = {"m1": 1.0, "m2": 0.6, "m3": 0.2}
    out = decision_focused_fusion(data, "y", list(metrics), slopes, strengths=[0, 1, np.inf], seed=3)
    design = bc.joint_design(data, "y", list(metrics))
    o = np.array(list(slopes.values()))
    lam = stein_strength(design.z, design.S, o)
    assert 0 < lam < 1 and out.strength == lam
    assert list(out.curve["fusion_strength"]) == [0, lam, 1, np.inf]
    np.testing.assert_allclose(out.weights.values, fused_weights(design.z, design.S, o, lam), rtol=1e-12)
    fixed = decision_focused_fusion(data, "y", list(metrics), slopes, strengths=[0, lam, 1, np.inf], seed=3,
                                    select="best")
    pd.testing.assert_frame_equal(out.curve, fixed.curve)  # the added row is scored like any other strength
    trials, cov = _table(z[:6], S[:6], metrics)
    gaps = trials[(trials["quantity"] != "m3") | (trials["trial"] < "t003")]  # 3 complete trials of 6
    with pytest.raises(DataError, match=r"needs more complete trials \(3\) than metrics \(3\)"):
        decision_focused_fusion(bc.read_trials(gaps, cov[(cov["trial"] < "t003") | (cov["quantity_1"] != "m3")
                                                         & (cov["quantity_2"] != "m3")]), "y", list(metrics),
                                slopes, folds=2)


def _collinear(K=12, seed=0):
    """Trials whose metric 'b' repeats metric 'a' exactly, with a third metric 'c'."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=K)
    z = np.column_stack([a + rng.normal(0, 0.3, K), a, a, rng.normal(size=K)])
    return z, np.broadcast_to(np.eye(4) * 0.01, (K, 4, 4)).copy()


@pytest.mark.parametrize("call", ["decision_value", "stein", "best", "bilevel"])
def test_a_metric_repeated_is_refused_by_name(call):
    """G is singular when a metric's ATEs repeat another's: one DataError naming it, not numpy's LinAlgError."""
    from bayes_cmma.decisions.fusion import decision_focused_fusion

    z, S = _collinear()
    data = bc.read_trials(*_table(z, S, ("a", "b", "c")))
    slopes = {"a": 1.0, "b": 0.0, "c": 0.0}
    run = {"decision_value": lambda: bc.decision_value(data, "y", ["a", "b", "c"]),
           "stein": lambda: decision_focused_fusion(data, "y", ["a", "b", "c"], slopes),
           "best": lambda: decision_focused_fusion(data, "y", ["a", "b", "c"], slopes, select="best"),
           "bilevel": lambda: bc.bilevel_fusion(data, "y", ["a", "b", "c"], slopes)}[call]
    with pytest.raises(DataError, match=r"the ATEs of metric 'b' are a linear combination of those of 'a' "
                                        r"\(the same metric twice\?\).* drop one of them"):
        run()


def test_metric_rank_names_a_metric_that_never_moves_and_a_collinear_fold():
    from bayes_cmma.decisions.decision_value import check_composite_rank

    rng = np.random.default_rng(1)
    m = rng.normal(size=(8, 3))
    check_composite_rank(m, ["a", "b", "c"], np.arange(8) % 2)  # generic ATEs pass
    check_composite_rank(m * np.array([1e-9, 1.0, 1e9]), ["a", "b", "c"])  # on any scales
    still = m.copy()
    still[:, 1] = 0.0
    with pytest.raises(DataError, match=r"the ATEs of metric 'b' are 0 in all 8 trials .* drop it"):
        check_composite_rank(still, ["a", "b", "c"])
    with pytest.raises(DataError, match=r"the 2 trials outside cross-fitting fold 0 of 2 do not determine a "
                                        r"composite of 3 metrics .* use more folds"):
        check_composite_rank(m[:4], ["a", "b", "c"], np.array([0, 1, 0, 1]))


def test_decision_value_with_too_few_trials_per_fold_for_the_composite_is_refused():
    z, S = _truths(K=7, J=4, seed=2)
    metrics = ["m1", "m2", "m3", "m4"]
    data = bc.read_trials(*_table(z, S, metrics))
    with pytest.raises(DataError, match=r"the 3 trials outside cross-fitting fold \d of 2 do not determine a "
                                        r"composite of 4"):
        bc.decision_value(data, "y", metrics, folds=2)
    assert len(bc.decision_value(data, "y", metrics, folds=2, composite=False).table) == 5  # 4 metrics, launch all


def test_disagreement_without_noise_in_the_scores_is_refused():
    """A KPI the metrics fit exactly, with no KPI-metric error covariance: every score psi_k is 0, so
    the sandwich V is 0 and D^2 is undefined."""
    from bayes_cmma.decisions.fusion import disagreement

    m = np.tile(np.eye(3), (4, 1))  # ATEs and slopes exact in binary: the residuals are exactly 0
    z = np.column_stack([m @ np.array([1.0, 0.5, 0.25]), m])
    with pytest.raises(DataError, match="cannot be estimated.*--fusion-select"):
        disagreement(z, np.zeros((12, 4, 4)), np.array([1.0, 0.0, 0.0]))
    # in a fusion (errors uncorrelated between the KPI and the metrics): Stein refuses, the others report nan
    from bayes_cmma.decisions.fusion import decision_focused_fusion

    data = bc.read_trials(*_table(z, np.broadcast_to(np.eye(4) * 0.01, (12, 4, 4)), ("m1", "m2", "m3")))
    slopes = {"m1": 1.0, "m2": 0.0, "m3": 0.0}
    with pytest.raises(DataError, match="cannot be estimated"):
        decision_focused_fusion(data, "y", ["m1", "m2", "m3"], slopes)
    assert np.isnan(decision_focused_fusion(data, "y", ["m1", "m2", "m3"], slopes, select="best").disagreement)


def test_command_with_a_repeated_metric_writes_nothing(tmp_path, capsys):
    z, S = _collinear()
    trials, cov = _table(z, S, ("a", "b", "c"))
    trials.to_csv(tmp_path / "t.csv", index=False)
    cov.to_csv(tmp_path / "c.csv", index=False)
    out, fusion = tmp_path / "dv.csv", tmp_path / "fusion.csv"
    code = main(["decision-value", str(tmp_path / "t.csv"), "--cov", str(tmp_path / "c.csv"), "--kpi", "y",
                 *[a for m in "abc" for a in ("--metric", m)], "--observational-slope", "a=1",
                 "--observational-slope", "b=0", "--observational-slope", "c=0", "--out", str(out),
                 "--fusion-out", str(fusion)])
    err = unwrap(capsys.readouterr().err)
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "metric 'b' are a linear combination" in lines[0], err
    assert "Traceback" not in err
    assert not out.exists() and not fusion.exists()
