"""Per-metric decision-focused fusion: the inner solution and its implicit derivative against finite
differences and PyTensor's automatic gradient, the smoothed outer value against its step limit, and
the whole bi-level choice against the one-strength fusion on the same folds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_decision_value import _table, _truths

import bayes_cmma as bc
from bayes_cmma.decisions.bilevel import (
    bilevel_fusion,
    inner_jacobian,
    inner_weights,
    logs_target,
    smoothed_value,
)
from bayes_cmma.decisions.decision_value import cross_moments, fission, value_per_trial
from bayes_cmma.decisions.fusion import decision_focused_fusion
from bayes_cmma.errors import DataError

METRICS = ["m1", "m2", "m3"]
SLOPES = {"m1": 1.0, "m2": 0.6, "m3": 0.2}


@pytest.fixture(scope="module")
def three():
    z, S = _truths(K=30, J=3, seed=11)
    return z, S, bc.read_trials(*_table(z, S, METRICS))


def test_inner_solution_runs_from_the_trials_to_the_logs(three):
    z, S, _ = three
    gram, cross = cross_moments(z, S)
    target = logs_target(z, S, np.array(list(SLOPES.values())))
    np.testing.assert_allclose(inner_weights(gram, cross, target, np.zeros(3)), np.linalg.solve(gram, cross),
                               rtol=1e-12)
    np.testing.assert_allclose(inner_weights(gram, cross, target, np.full(3, 1e9)), target, rtol=1e-6)
    pinned = inner_weights(gram, cross, target, np.array([1e9, 0.0, 0.0]))
    assert pinned[0] == pytest.approx(target[0], rel=1e-6)  # one metric pinned, the others refitted
    # the first-order condition of the ridge towards the logs holds
    lam = np.array([0.3, 2.0, 0.0])
    w = inner_weights(gram, cross, target, lam)
    np.testing.assert_allclose(gram @ w - cross + lam * np.diag(gram) * (w - target), 0.0, atol=1e-10)


def test_implicit_derivative_matches_finite_differences_and_pytensor(three):
    import pytensor
    import pytensor.tensor as pt

    z, S, _ = three
    gram, cross = cross_moments(z, S)
    target = logs_target(z, S, np.array(list(SLOPES.values())))
    lam = np.array([0.4, 1.5, 0.05])
    w = inner_weights(gram, cross, target, lam)
    jac = inner_jacobian(gram, w, target, lam)
    eps = 1e-6
    numeric = np.column_stack([(inner_weights(gram, cross, target, lam + eps * e)
                                - inner_weights(gram, cross, target, lam - eps * e)) / (2 * eps) for e in np.eye(3)])
    np.testing.assert_allclose(jac, numeric, rtol=1e-6, atol=1e-9)
    # PyTensor differentiates through the solve by itself
    lam_t = pt.dvector("lam")
    p = lam_t * np.diag(gram)
    w_t = pt.linalg.solve(gram + pt.diag(p), cross + p * target)
    v = np.array([0.3, -1.2, 0.7])  # one reverse-mode gradient of v'w instead of the whole Jacobian
    auto = pytensor.function([lam_t], pytensor.grad(pt.dot(v, w_t), lam_t), mode="FAST_COMPILE")(lam)
    np.testing.assert_allclose(jac.T @ v, auto, rtol=1e-9, atol=1e-12)


def test_smoothed_value_gradient_scale_and_step_limit(three):
    z, S, _ = three
    rng = np.random.default_rng(4)
    f, g = fission(z, S, 1.0, rng, repeats=30)
    cov = 2.0 * S[:, 1:, 1:]
    w = np.array([0.8, -0.3, 0.4])
    value, grad = smoothed_value(w, f[..., 1:], g[..., 0], cov, 0.5)
    eps = 1e-6
    numeric = [(smoothed_value(w + eps * e, f[..., 1:], g[..., 0], cov, 0.5)[0]
                - smoothed_value(w - eps * e, f[..., 1:], g[..., 0], cov, 0.5)[0]) / (2 * eps) for e in np.eye(3)]
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)
    assert smoothed_value(3.0 * w, f[..., 1:], g[..., 0], cov, 0.5)[0] == pytest.approx(value, rel=1e-12)
    step = value_per_trial(f[..., 1:] @ w, g[..., 0])[0].sum()
    assert smoothed_value(w, f[..., 1:], g[..., 0], cov, 1e-6)[0] == pytest.approx(step, rel=1e-6)


def test_bilevel_fusion_scores_the_trials_alone_as_the_one_strength_fusion(three):
    """Same seed, same folds and fission draws: its 'trials' row is the one-strength fusion's lambda = 0
    row; the optimised pulls do at least as well as lambda = 0 on the smoothed objective they maximise."""
    _, _, data = three
    out = bilevel_fusion(data, "y", METRICS, SLOPES, seed=3, keep="always")
    one = decision_focused_fusion(data, "y", METRICS, SLOPES, strengths=[0.0], seed=3, select="best")
    assert out.table.loc["trials", "value"] == pytest.approx(one.curve["value"].iloc[0], rel=1e-12)
    assert out.table.loc["trials", "difference"] == 0.0
    assert out.kept and (out.pulls >= 0).all() and (out.pulls <= 100).all()
    assert np.linalg.norm(out.weights) == pytest.approx(1.0)
    strict = bilevel_fusion(data, "y", METRICS, SLOPES, seed=3)
    row = out.table.loc["fused"]
    assert strict.kept == bool(row["difference"] > row["difference_se"])
    if not strict.kept:
        assert (strict.pulls == 0).all()
        design = bc.joint_design(data, "y", METRICS)
        w = np.linalg.solve(*cross_moments(design.z, design.S))
        np.testing.assert_allclose(strict.weights.values, w / np.linalg.norm(w), rtol=1e-12)
    again = bilevel_fusion(data, "y", METRICS, SLOPES, seed=3, keep="always")
    pd.testing.assert_series_equal(out.pulls, again.pulls)
    pd.testing.assert_series_equal(out.optimised, strict.optimised)


@pytest.mark.parametrize(("kw", "message"), [
    ({"smoothing": 0.0}, "smoothing must be a positive number, got 0.0"),
    ({"max_pull": -1.0}, "max_pull must be a positive number, got -1.0"),
    ({"keep": "best"}, "keep must be 'significant' or 'always', got 'best'"),
    ({"tau": 0.0}, "tau \\(the fission strength\\) must be positive here"),
])
def test_bilevel_fusion_bad_input(three, kw, message):
    _, _, data = three
    with pytest.raises(DataError, match=message):
        bilevel_fusion(data, "y", METRICS, SLOPES, **kw)
    with pytest.raises(DataError, match="no observational slope for metric\\(s\\) 'm3'"):
        bilevel_fusion(data, "y", METRICS, {"m1": 1.0, "m2": 0.5})


def test_command_with_per_metric_pulls(three, tmp_path, capsys):
    from cli_output import unwrap

    from bayes_cmma.cli import main

    z, S, _ = three
    trials, cov = _table(z, S, METRICS)
    trials.to_csv(tmp_path / "t.csv", index=False)
    cov.to_csv(tmp_path / "c.csv", index=False)
    argv = ["decision-value", str(tmp_path / "t.csv"), "--cov", str(tmp_path / "c.csv"), "--kpi", "y",
            *[a for m in METRICS for a in ("--metric", m)], "--seed", "3", "--out", str(tmp_path / "dv.csv"),
            "--fusion-out", str(tmp_path / "fu.csv"), "--fusion-select", "per-metric",
            *[a for m, v in SLOPES.items() for a in ("--observational-slope", f"{m}={v}")]]
    assert main(argv) == 0
    text = unwrap(capsys.readouterr().out)
    assert "optimised pulls: m1" in text
    table = pd.read_csv(tmp_path / "fu.csv")
    expected = bilevel_fusion(bc.read_trials(trials, cov), "y", METRICS, SLOPES, seed=3)
    assert list(table["rule"]) == ["trials", "fused"] and table["chosen"].sum() == 1
    np.testing.assert_allclose(table.loc[1, [f"pull_{m}" for m in METRICS]].to_numpy(dtype=float),
                               expected.optimised.to_numpy(), rtol=1e-12)
    assert table.loc[1, "chosen"] == expected.kept
