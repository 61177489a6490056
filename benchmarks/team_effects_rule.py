"""Where centred and non-centred team effects diverge, against the data's team-effect reliability R.

Regenerates the simulated data sets of two committed SBC runs of the cubic model (same template,
prior draws and seed as ``bayes-cmma calibrate``; no fitting): centred
(``benchmarks/results/sbc_cubic``) and non-centred (``benchmarks/results/sbc_cubic_non_centred``).
For each data set it computes R (:func:`bayes_cmma.parametrization.team_effect_reliability`) and
joins the divergence count of its fit. Prints, per R bin, the share of fits with divergences and
the mean count for each parametrization, and R of the demo data for each metric. The result
(committed in ``benchmarks/results/team_effects_rule``) is negative: the centred form diverges in
nearly every SBC fit whatever R, while the demo's R lies inside the same range, so no threshold
on R separates the two situations. That is why ``team_effects = "auto"`` decides from the
sampler's own diagnosis instead (:func:`bayes_cmma.fitting.fit_design`).

Usage: ``python benchmarks/team_effects_rule.py [--out benchmarks/results/team_effects_rule/summary.md]``
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from bayes_cmma.calibration import simulations
from bayes_cmma.data import MetricDesign
from bayes_cmma.fitting import resolve_spec

RUNS = {
    "centred": ("benchmarks/specs/cubic_centred.toml", "benchmarks/results/sbc_cubic/ranks.csv"),
    "non_centred": ("benchmarks/specs/cubic_non_centred.toml", "benchmarks/results/sbc_cubic_non_centred/ranks.csv"),
}
BINS = [0.0, 0.25, 0.5, 0.75, 0.9, 1.0001]


def team_effect_reliability(design: MetricDesign) -> tuple[float, float, float]:
    """(R, tau^2, mean v_g): how well the data identify the team effects.

    Regress the trials' KPI ATEs on their metric-power ATEs and team dummies (OLS), take the team
    intercepts' sampling variances v_g, estimate their between-team variance tau^2 by moments
    (variance of the intercepts minus the mean v_g, floored at 0): R = tau^2 / (tau^2 + mean v_g).
    The textbook advice (Betancourt and Girolami 2015) is centred when R is high.
    """
    K = design.n_trials
    T = len(design.teams)
    y = design.z[:, 0]
    dummies = np.zeros((K, T))
    dummies[np.arange(K), design.team_idx] = 1.0
    X = np.column_stack([design.z[:, 1:], dummies])
    present = dummies.sum(axis=0) > 0
    X = X[:, np.concatenate([np.ones(design.z.shape[1] - 1, dtype=bool), present])]
    dof = K - X.shape[1]
    if dof < 1 or present.sum() < 2:
        return float("nan"), float("nan"), float("nan")
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ coef
    s2 = float(resid @ resid) / dof
    cov = s2 * np.linalg.pinv(X.T @ X)
    n_team = int(present.sum())
    intercepts = coef[-n_team:]
    v = np.diag(cov)[-n_team:]
    mean_v = float(v.mean())
    tau2 = max(0.0, float(np.var(intercepts, ddof=1)) - mean_v)
    return tau2 / (tau2 + mean_v) if tau2 + mean_v > 0 else 0.0, tau2, mean_v


def reliabilities(model: str, n_sims: int, trials: int = 60, teams: int = 4, seed: int = 2018) -> np.ndarray:
    """R of each data set of ``calibrate --model MODEL`` (its defaults), in simulation order."""
    spec = resolve_spec(model)
    with warnings.catch_warnings():  # the prior draws (as before: PyMC's note on the Potential)
        warnings.simplefilter("ignore")
        designs = [d for _, _, d in simulations(spec, n_sims, n_trials=trials, n_teams=teams, seed=seed)]
    return np.array([team_effect_reliability(d)[0] for d in designs])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/team_effects_rule/summary.md")
    args = ap.parse_args()
    frames = []
    for label, (model, ranks) in RUNS.items():
        div = pd.read_csv(ranks).drop_duplicates("sim").set_index("sim")["divergences"].sort_index()
        r = reliabilities(model, len(div))
        frames.append(pd.DataFrame({"parametrization": label, "R": r, "divergences": div.to_numpy()}))
    df = pd.concat(frames, ignore_index=True)
    df["R bin"] = pd.cut(df["R"], BINS, right=False)
    table = df.groupby(["R bin", "parametrization"], observed=True)["divergences"].agg(
        fits="size", share_diverging=lambda d: float((d > 0).mean()), mean_divergences="mean").unstack()
    lines = ["# Team-effect reliability R and divergences in the SBC fits of the cubic model", "",
             "Command: `python benchmarks/team_effects_rule.py` (reads the committed SBC ranks; 200 data sets "
             "per parametrization, each drawn from the prior, 60 trials in 4 teams).", "",
             "| R bin | fits (centred / non-centred) | share with divergences, centred | non-centred | "
             "mean divergent transitions, centred | non-centred |", "|---|---|---|---|---|---|"]
    for b, row in table.iterrows():
        lines.append(f"| {b} | {int(row[('fits', 'centred')])} / {int(row[('fits', 'non_centred')])} | "
                     f"{row[('share_diverging', 'centred')]:.2f} | {row[('share_diverging', 'non_centred')]:.2f} | "
                     f"{row[('mean_divergences', 'centred')]:.1f} | {row[('mean_divergences', 'non_centred')]:.1f} |")
    from bayes_cmma.data import metric_design
    from bayes_cmma.datasets import load_example

    ex = load_example()
    demo = {m: team_effect_reliability(metric_design(ex.trials, ex.kpi, m, 2, warn_filled=False))[0]
            for m in ex.metrics}
    lines += ["", "Demo data (190 trials, 8 teams, degree 2), where centred gave 0 divergences in 16 of 18 fits "
              "and 1 in two, non-centred up to 4 (`benchmarks/results/team_effects`): R = "
              + ", ".join(f"{m} {r:.3f}" for m, r in demo.items()) + ".",
              "No threshold on R separates the two: centred diverges on the SBC data at every R, including the "
              "demo's range. `team_effects = \"auto\"` therefore decides by the sampler's divergences instead."]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    df.drop(columns="R bin").to_csv(out.with_name("reliability.csv"), index=False)


if __name__ == "__main__":
    main()
