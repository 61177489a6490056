"""How much can any fusion rule gain when the logs are right, if it may lose only a little when they are not?

The fusion targets ask for two things at once: at least 20% less regret than the trials alone when the
logs are clean, and never more than 5% more whatever their bias. This script computes what is
possible in the idealised version of the problem, where a fusion rule estimates the trials' weights
theta from X ~ N_p(theta, I) (the trials' estimate, whitened by its noise covariance, known here)
and the logs propose theta = 0 (logs right <=> theta = 0). Under squared-error loss the trials
alone (delta = X) have risk p everywhere. For a required risk at 0 of ``a p`` (``a`` < 1: the gain
when the logs are right), the smallest possible worst-case risk ``b p`` over all theta is

    b(a) = min over rules delta of max_theta R(delta, theta) / p   subject to   R(delta, 0) <= a p,

and by Lagrange duality (the problem is convex; a least-favourable prior puts mass omega at 0 and
the rest on spheres of radius t_i)

    b(a) p >= (r(pi) - omega a p) / (1 - omega)   for every such prior pi,

where r(pi) is pi's Bayes risk. Every prior gives a valid lower bound; the script maximises it over
the prior (exponentiated-gradient steps on the sphere weights, a grid over omega). The bound is also
at least 1, the minimax risk. The Bayes rule and all risks are one-dimensional integrals in r = |X|
(noncentral chi densities, von Mises-Fisher means), so no simulation is involved; the results file
also gives each prior's Bayes rule's risk at 0 and its largest risk on the radii grid (|theta| <=
10: a rule fitted to a prior on that range, not a rule to use beyond it).

p is the number of directions the loss sees. A launch rule w'm_hat > 0 depends on w's direction
only, so with J metrics p = J - 1 (2 for the three-metric studies); p = J for a loss on the whole
vector. The bound is for the most favourable case: known noise covariance, quadratic loss,
isotropic after whitening.

Usage: ``python benchmarks/fusion_frontier.py [--out benchmarks/results/fusion_frontier]``
(about 5 minutes).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import special

ROOT = Path(__file__).resolve().parents[1]
R = np.linspace(1e-6, 18.0, 7200)  # |X|
RADII = np.linspace(0.1, 10.0, 100)  # spheres the least-favourable prior may use
OMEGAS = np.round(np.linspace(0.2, 0.98, 40), 3)
RISKS_AT_0 = (0.1, 1 / 6, 0.25, 1 / 3, 0.5, 2 / 3)


def log_density(p: int, t: float, r: np.ndarray = R) -> np.ndarray:
    """log density of r = |X| (on the grid ``r``) for X ~ N_p(theta, I), |theta| = t (noncentral chi; chi at
    t = 0)."""
    nu = p / 2 - 1
    if t == 0:
        return (p - 1) * np.log(r) - r**2 / 2 - nu * np.log(2.0) - special.gammaln(p / 2)
    return (p / 2) * np.log(r) - nu * np.log(t) - (r - t) ** 2 / 2 + np.log(special.ive(nu, r * t))


def mean_cosine(p: int, kappa: np.ndarray) -> np.ndarray:
    """E[cos(X, theta) | |X| = r] = I_{p/2}(kappa) / I_{p/2-1}(kappa), kappa = r |theta| (von Mises-Fisher)."""
    return special.ive(p / 2, kappa) / special.ive(p / 2 - 1, kappa)


class Canonical:
    """Bayes rules and risks for X ~ N_p(theta, I), prior omega delta_0 + (1 - omega) sum_i mu_i U(|theta| = t_i)."""

    def __init__(self, p: int, radii: np.ndarray = RADII, r: np.ndarray = R):
        self.p, self.t, self.r = p, np.asarray(radii, dtype=float), np.asarray(r, dtype=float)
        self.dr = self.r[1] - self.r[0]  # an evenly spaced grid of |X|
        self.f = np.exp(np.array([log_density(p, t, self.r) for t in self.t]))  # (radius, r)
        self.f0 = np.exp(log_density(p, 0.0, self.r))
        self.pull = self.t[:, None] * mean_cosine(p, self.r[None, :] * self.t[:, None])  # E[X.theta / |X| | r]

    def bayes_rule(self, omega: float, mu: np.ndarray) -> np.ndarray:
        """h(r): the Bayes rule is h(|X|) X / |X| (posterior mean of theta)."""
        num = (1 - omega) * (mu[:, None] * self.f * self.pull).sum(axis=0)
        den = omega * self.f0 + (1 - omega) * (mu[:, None] * self.f).sum(axis=0)
        return num / den

    def risks(self, h: np.ndarray) -> tuple[float, np.ndarray]:
        """Risk of the rule h at theta = 0 and at every radius: E|h(r) X/|X| - theta|^2."""
        at0 = float((h**2 * self.f0).sum() * self.dr)
        return at0, ((h**2 - 2 * h * self.pull) * self.f).sum(axis=1) * self.dr + self.t**2

    def least_favourable(self, omega: float, steps: int = 300, rate: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
        """Sphere weights mu maximising the Bayes risk at this omega (its gradient in mu_i is the Bayes
        rule's risk at t_i), by exponentiated-gradient steps; returns (mu, h)."""
        mu = np.full(len(self.t), 1 / len(self.t))
        for _ in range(steps):
            _, at_t = self.risks(self.bayes_rule(omega, mu))
            mu = mu * np.exp(rate * (at_t - at_t.max()))
            mu /= mu.sum()
        return mu, self.bayes_rule(omega, mu)


def frontier(p: int) -> pd.DataFrame:
    """Per omega: the least-favourable prior's Bayes risk and its Bayes rule's risks (all / p)."""
    problem = Canonical(p)
    rows = []
    for omega in OMEGAS:
        mu, h = problem.least_favourable(float(omega))
        at0, at_t = problem.risks(h)
        bayes = omega * at0 + (1 - omega) * float(mu @ at_t)
        rows.append({"p": p, "omega": omega, "bayes_risk": bayes / p, "rule_risk_at_0": at0 / p,
                     "rule_worst_risk": float(at_t.max()) / p,
                     "worst_radius": float(problem.t[np.argmax(at_t)])})
    return pd.DataFrame(rows)


def bounds(table: pd.DataFrame, risks_at_0=RISKS_AT_0) -> pd.DataFrame:
    """For each p and required risk at 0 (``a``, relative to the trials alone): the lower bound on any
    rule's worst-case risk, max(1, max over the computed priors of (r(pi) - omega a) / (1 - omega)).

    1 is the minimax risk (no rule has a smaller worst case than the trials alone, in any dimension).
    """
    rows = []
    for p, g in table.groupby("p"):
        for a in risks_at_0:
            duality = ((g["bayes_risk"] - g["omega"] * a) / (1 - g["omega"])).max()
            rows.append({"p": p, "risk_at_0": a, "worst_risk_lower_bound": max(1.0, duality)})
    return pd.DataFrame(rows)


def summarise(table: pd.DataFrame) -> str:
    b = bounds(table).pivot(index="risk_at_0", columns="p", values="worst_risk_lower_bound")
    lines = ["# What any fusion rule can gain when the logs are right, against what it must risk when they are not",
             "", "Generated by `benchmarks/fusion_frontier.py` (the canonical problem X ~ N_p(theta, I), squared "
             "error, the logs' proposal theta = 0; see its docstring). Risks are relative to the trials alone "
             "(delta = X, risk p everywhere). Each cell: no rule whose risk at theta = 0 is at most the row's "
             "has a worst-case risk below the cell (Lagrange duality with a least-favourable prior; at least 1, "
             "the minimax risk).", "",
             "| risk at theta = 0 | " + " | ".join(f"worst-case risk, p = {p}" for p in b.columns) + " |",
             "|---|" + "---|" * len(b.columns)]
    for a, row in b.iterrows():
        lines.append(f"| {a:.3f} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--p", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/fusion_frontier"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    table = pd.concat([frontier(p) for p in args.p], ignore_index=True)
    table.to_csv(out / "results.csv", index=False)
    (out / "summary.md").write_text(summarise(table))
    print(summarise(table))
    print(f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
