"""benchmarks/fusion_frontier.py: the canonical risks against closed forms, and its lower bound against a
rule that attains a point of the frontier (a valid lower bound never exceeds an achieved worst case)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats

_spec = importlib.util.spec_from_file_location(
    "fusion_frontier", Path(__file__).resolve().parents[1] / "benchmarks" / "fusion_frontier.py")
F = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(F)


@pytest.mark.parametrize("p", [1, 2, 3])
def test_the_trials_alone_have_risk_p_everywhere(p):
    problem = F.Canonical(p, radii=np.array([0.5, 2.0, 6.0]))
    at0, at_t = problem.risks(F.R.copy())  # h(r) = r: delta = X
    np.testing.assert_allclose([at0, *at_t], p, rtol=1e-4)


def test_james_stein_risk_at_zero_and_far_away():
    """delta = (1 - 1/|X|^2) X in p = 3 has risk 2 at 0 (Stein) and tends to 3."""
    problem = F.Canonical(3, radii=np.array([9.5]))
    at0, at_t = problem.risks(F.R - 1 / F.R)
    assert at0 == pytest.approx(2.0, rel=2e-3)
    assert 2.95 < at_t[0] < 3.0


def test_bayes_rule_of_a_two_point_prior_in_one_dimension():
    """p = 1, prior omega at 0 and (1 - omega) at +-t: the posterior mean and its Bayes risk by quadrature."""
    omega, t = 0.6, 2.0
    problem = F.Canonical(1, radii=np.array([t]))
    h = problem.bayes_rule(omega, np.array([1.0]))
    at0, at_t = problem.risks(h)

    def rule(x):
        a, b = omega * stats.norm.pdf(x), 0.5 * (1 - omega) * (stats.norm.pdf(x - t) + stats.norm.pdf(x + t))
        c = 0.5 * (1 - omega) * t * (stats.norm.pdf(x - t) - stats.norm.pdf(x + t))
        return c / (a + b)

    risk0 = integrate.quad(lambda x: rule(x) ** 2 * stats.norm.pdf(x), -12, 12)[0]
    risk_t = integrate.quad(lambda x: (rule(x) - t) ** 2 * stats.norm.pdf(x - t), -10, 14)[0]
    assert at0 == pytest.approx(risk0, rel=1e-4)
    assert at_t[0] == pytest.approx(risk_t, rel=1e-4)


def test_the_bound_never_exceeds_what_positive_part_james_stein_attains():
    """Positive-part James-Stein in p = 3 has worst-case risk 3 (= 1 relative); at its risk at 0 the lower
    bound must be <= 1, and at a much smaller risk at 0 it must exceed 1."""
    problem = F.Canonical(3)
    js_at0, _ = problem.risks(np.maximum(F.R - 1 / F.R, 0.0))
    rows = []
    for omega in (0.3, 0.5, 0.7, 0.9):
        mu, h = problem.least_favourable(omega, steps=150)
        at0, at_t = problem.risks(h)
        rows.append({"p": 3, "omega": omega, "bayes_risk": (omega * at0 + (1 - omega) * mu @ at_t) / 3})
    b = F.bounds(pd.DataFrame(rows), risks_at_0=(js_at0 / 3, 0.05))
    assert b["worst_risk_lower_bound"].iloc[0] == pytest.approx(1.0)
    assert b["worst_risk_lower_bound"].iloc[1] > 1.1
