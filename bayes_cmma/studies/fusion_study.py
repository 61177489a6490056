"""The fusion study: how much a composite launch rule gains, or loses, by leaning on observational logs.

``bayes-cmma simulate --study fusion`` (:class:`FusionStudy`) simulates trial summaries of a KPI and
three metrics and measures the regret of launch rules built from them with and without the logs,
over a range of observational bias. The law (the one of
:mod:`bayes_cmma.checks.ranking_calibration`):

* teams: 4; the metrics' team means ~ N(0, 1) each; the trials' true metric effects vary around
  them with correlation 0.8 between the metrics (unit variances);
* the KPI is driven by the first metric alone: y = m_1 + pi_team + e, e ~ N(0, 0.3^2), with team
  direct effects pi ~ N(0, ``direct_sd``^2) that no unit-level regression sees (``direct_sd`` 0: the
  logs can see everything that drives the KPI);
* measured with standard errors uniform in [0.2, 0.5] and within-trial error correlation 0.3;
* the logs' partial slopes are o = (1, 0, 0) + b (-1, +1, 0): the unit-level confounding moves weight
  from the metric that drives the KPI to a correlated proxy; b = 0 (clean logs), 0.05, 0.24 (the
  KDD 2020 paper's relative bias of the unit-level regression), 0.5, 1 (the logs point at the proxy
  alone).

The decision: launch a new trial when its composite w' m_hat > 0, with m_hat the new trial's own
measured ATEs. Its value on a new trial is Phi(w'm / sd(w'm_hat)) y in expectation over the noise;
the oracle launches when y > 0. Regret = (oracle value - the rule's value) / oracle value, averaged
over ``new_trials`` new trials of the same teams per replication (the same new trials for every rule).

Rules (``estimators``; the names of ``--fusion-select`` where they are one):

* ``trials``: the trials' composite alone, w = G^-1 g (:mod:`bayes_cmma.decisions.fusion`);
* ``observational``: the logs' slopes alone, adjusted to the trials' noise;
* ``stein``: :func:`~bayes_cmma.decisions.fusion.decision_focused_fusion`'s default, the James-Stein
  share of the logs from their disagreement D^2 with the trials;
* ``significant``, ``best``: the fusion strength chosen by the cross-fitted decision value
  (``select="significant"``, ``"best"``);
* ``per_metric``: :func:`~bayes_cmma.decisions.bilevel.bilevel_fusion` (a pull per metric by implicit
  differentiation, kept when significant: ``--fusion-select per-metric``);
* ``driver``: the first metric alone, the rule an analyst who knew the truth would use (a reference
  for how much there is to gain, not a rule the data give).

One replication draws one trial table per setting and scores every rule at every bias, so rules and
biases are compared on the same trials (paired). Replication ``r`` of a setting with K trials draws
from ``numpy.random.default_rng([seed, K, r])`` (the trials) and ``[seed, K, r, 1]`` (the new trials),
whatever the number of workers; ``benchmarks/fusion_launch_check.py`` uses the same law and seeds, so
the built-in study at seed 2026 reproduces its committed rows.

The targets of the fusion (docs: checks.md, "Does decision-focused fusion help a launch rule?"):
never more than 5% more regret than the trials alone at any bias, and at least 20% less at K = 10
with a small bias (0 or 0.05). :func:`fusion_tables` reports both per rule.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from bayes_cmma.errors import BayesCMMAError

#: Launch rules of the fusion study, in report order.
FUSION_RULES = ("trials", "observational", "stein", "significant", "best", "per_metric", "driver")
#: Observational biases b of the logs' slopes (1, 0, 0) + b (-1, 1, 0).
FUSION_BIASES = (0.0, 0.05, 0.24, 0.5, 1.0)
#: The direction in which the logs' confounding moves their slopes.
BIAS_SHIFT = np.array([-1.0, 1.0, 0.0])
#: Columns of a fusion results row, in order.
FUSION_COLUMNS = ("study", "setting", "rep", "trials", "direct_sd", "bias", "rule", "regret", "strength",
                  "time_s")
#: Rules that are fusions (the targets apply to them).
FUSION_ONLY = ("stein", "significant", "best", "per_metric")
METRICS = ("m1", "m2", "m3")
_J, _TEAMS, _CORR, _RESIDUAL_SD, _SE_RANGE, _ERROR_CORR = 3, 4, 0.8, 0.3, (0.2, 0.5), 0.3


@dataclass(frozen=True)
class FusionSetting:
    """One cell of the fusion study: the number of trials and the sd of the teams' direct effects."""

    n_trials: int
    direct_sd: float

    @property
    def label(self) -> str:
        return f"K={self.n_trials},direct_sd={self.direct_sd:g}"


@dataclass(frozen=True)
class FusionStudy:
    """The fusion study (module docstring): settings x replications, every rule at every bias.

    Attributes
    ----------
    n_trials : tuple of int
        Trials per simulated table (each >= 6: the rules cross-fit over 5 folds and need more trials
        than metrics).
    direct_sd : tuple of float
        Sd of the teams' direct effects on the KPI (>= 0).
    biases : tuple of float
        Observational biases b.
    estimators : tuple of str
        Rules, a subset of :data:`FUSION_RULES` including ``"trials"`` (the reference of every change).
    sims : int
        Replications per setting.
    seed : int
    new_trials : int
        New trials per replication on which the rules are scored.
    repeats : int
        Data-fission repeats of the cross-fitted decision value (``significant``, ``best``,
        ``per_metric``).
    name : str
    """

    n_trials: tuple[int, ...] = (10, 20, 50)
    direct_sd: tuple[float, ...] = (0.0, 0.5)
    biases: tuple[float, ...] = FUSION_BIASES
    estimators: tuple[str, ...] = FUSION_RULES
    sims: int = 200
    seed: int = 2026
    new_trials: int = 20_000
    repeats: int = 20
    name: str = "fusion"

    def __post_init__(self) -> None:
        bad = [e for e in self.estimators if e not in FUSION_RULES]
        if bad:
            raise BayesCMMAError(f"study 'fusion': unknown rule {bad[0]!r}; choose from {', '.join(FUSION_RULES)}.")
        if len(set(self.estimators)) != len(self.estimators):
            raise BayesCMMAError(f"study 'fusion': rules repeat ({', '.join(self.estimators)}); name each once.")
        if "trials" not in self.estimators:
            raise BayesCMMAError("study 'fusion': the rules must include 'trials', the reference every change is "
                                 f"measured against; got {', '.join(self.estimators)}.")
        small = [k for k in self.n_trials if k < 6]
        if not self.n_trials or small:
            raise BayesCMMAError(f"study 'fusion': --n-trials values must be at least 6 (5 folds, more trials than "
                                 f"the 3 metrics), got {list(self.n_trials)}.")
        if not self.direct_sd or any(not (np.isfinite(s) and s >= 0) for s in self.direct_sd):
            raise BayesCMMAError(f"study 'fusion': direct-effect sds must be 0 or more, got {list(self.direct_sd)}.")
        if not self.biases or any(not np.isfinite(b) for b in self.biases):
            raise BayesCMMAError(f"study 'fusion': biases must be finite numbers, got {list(self.biases)}.")
        for name, value in (("sims", self.sims), ("new_trials", self.new_trials), ("repeats", self.repeats)):
            if value < 1:
                raise BayesCMMAError(f"study 'fusion': {name} must be at least 1, got {value}.")

    @property
    def settings(self) -> tuple[FusionSetting, ...]:
        return tuple(FusionSetting(k, float(d)) for d in self.direct_sd for k in self.n_trials)

    @property
    def columns(self) -> tuple[str, ...]:
        return FUSION_COLUMNS

    def identity(self) -> dict[str, Any]:
        """Everything that defines the results except the number of replications."""
        ident = dataclasses.asdict(self)
        ident.pop("sims")
        return {k: list(v) if isinstance(v, tuple) else v for k, v in ident.items()}

    def rows_per_replication(self) -> int:
        return len(self.biases) * len(self.estimators)

    def replicate(self, setting_index: int, rep: int) -> list[dict[str, Any]]:
        """Every rule's regret at every bias for replication ``rep`` of one setting."""
        return fusion_replicate(self, self.settings[setting_index], rep)

    def describe(self) -> str:
        return (f"Rules: {', '.join(self.estimators)}; biases {', '.join(f'{b:g}' for b in self.biases)}; "
                f"{self.new_trials} new trials per replication; {self.repeats} fission repeats.")

    def summarise(self, results: pd.DataFrame) -> tuple[pd.DataFrame, str]:
        return fusion_summary(results), fusion_tables(results)


def draw_trials(rng: np.random.Generator, team: np.ndarray, alpha: np.ndarray,
               pi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True (y, m) (trial, 4) and measurement covariances (trial, 4, 4) of trials of the given teams."""
    omega = (1 - _CORR) * np.eye(_J) + _CORR * np.ones((_J, _J))
    n = len(team)
    m = alpha[team] + rng.standard_normal((n, _J)) @ np.linalg.cholesky(omega).T
    y = m[:, 0] + pi[team] + rng.normal(0, _RESIDUAL_SD, n)
    se = rng.uniform(*_SE_RANGE, (n, _J + 1))
    corr = _ERROR_CORR * np.ones((_J + 1, _J + 1)) + (1 - _ERROR_CORR) * np.eye(_J + 1)
    return np.column_stack([y, m]), se[:, :, None] * se[:, None, :] * corr


def launch_regret(w: np.ndarray, y: np.ndarray, m: np.ndarray, S_mm: np.ndarray) -> float:
    """Regret of launching when w' m_hat > 0 on new trials (true y, m; metric error covariances S_mm).

    The expected value over the measurement noise is mean(Phi(w'm / sd(w'm_hat)) y); the oracle's
    is mean(max(y, 0)). Returns (oracle - value) / oracle.
    """
    sd = np.sqrt(np.einsum("i,kij,j->k", w, S_mm, w))
    value = np.mean(stats.norm.cdf(m @ w / sd) * y)
    oracle = np.mean(np.maximum(y, 0.0))
    return float((oracle - value) / oracle)


def simulate_fusion_trials(n_trials: int, direct_sd: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One table of the fusion study's law: measured ATEs ``z`` (trial, 4: KPI first), their
    covariances ``S``, the teams, and the law's team parameters ``alpha`` (team means) and ``pi``."""
    alpha = rng.normal(0, 1, (_TEAMS, _J))
    pi = rng.normal(0, direct_sd, _TEAMS) if direct_sd else np.zeros(_TEAMS)
    team = np.arange(n_trials) % _TEAMS
    theta, S = draw_trials(rng, team, alpha, pi)
    z = theta + np.einsum("kij,kj->ki", np.linalg.cholesky(S), rng.standard_normal((n_trials, _J + 1)))
    return {"z": z, "S": S, "team": team, "alpha": alpha, "pi": pi}


def fusion_replicate(study: FusionStudy, setting: FusionSetting, rep: int) -> list[dict[str, Any]]:
    """The rows of one replication (module docstring): a row per (bias, rule)."""
    from bayes_cmma.decisions.bilevel import bilevel_fusion
    from bayes_cmma.decisions.fusion import chosen_strength, decision_focused_fusion, fused_weights, stein_strength
    from bayes_cmma.inputs.data import joint_design, read_trials, trial_frames

    K = setting.n_trials
    table = simulate_fusion_trials(K, setting.direct_sd, np.random.default_rng([study.seed, K, rep]))
    z, S, team = table["z"], table["S"], table["team"]
    data = read_trials(*trial_frames([f"k{k:03d}" for k in range(K)], ["y", *METRICS], z, S,
                                     teams=[f"g{t}" for t in team]))
    new_rng = np.random.default_rng([study.seed, K, rep, 1])
    new, S_new = draw_trials(new_rng, new_rng.integers(0, _TEAMS, study.new_trials), table["alpha"], table["pi"])
    y, m, S_mm = new[:, 0], new[:, 1:], S_new[:, 1:, 1:]
    design = joint_design(data, "y", list(METRICS))
    rows: list[dict[str, Any]] = []
    base = {"study": study.name, "setting": setting.label, "rep": rep, "trials": K, "direct_sd": setting.direct_sd}
    for b in study.biases:
        o = np.array([1.0, 0.0, 0.0]) + b * BIAS_SHIFT
        slopes = dict(zip(METRICS, o, strict=True))
        cross_fitted = None  # the cross-fitted curve "best" and "significant" both choose from, computed once
        for rule in study.estimators:
            t0 = time.perf_counter()
            strength = np.nan
            if rule == "trials":
                w = fused_weights(design.z, design.S, o, 0.0)
            elif rule == "observational":
                w = fused_weights(design.z, design.S, o, np.inf)
            elif rule == "stein":
                strength = stein_strength(design.z, design.S, o)
                w = fused_weights(design.z, design.S, o, strength)
            elif rule in ("significant", "best"):
                if cross_fitted is None:
                    cross_fitted = decision_focused_fusion(data, "y", list(METRICS), slopes, seed=rep,
                                                           repeats=study.repeats, select="best")
                strength = chosen_strength(cross_fitted.curve, rule)
                w = cross_fitted.rule_weights.iloc[cross_fitted.curve["fusion_strength"].tolist().index(strength)]
                w = w.to_numpy()
            elif rule == "per_metric":
                fit = bilevel_fusion(data, "y", list(METRICS), slopes, seed=rep, repeats=study.repeats)
                w, strength = fit.weights.to_numpy(), float(fit.pulls.mean())
            else:  # driver
                w = np.array([1.0, 0.0, 0.0])
            rows.append(base | {"bias": float(b), "rule": rule, "regret": launch_regret(w, y, m, S_mm),
                                "strength": float(strength), "time_s": time.perf_counter() - t0})
    return rows


def fusion_summary(results: pd.DataFrame) -> pd.DataFrame:
    """Per (direct_sd, trials, bias, rule): mean regret and its Monte Carlo se, the change against the
    trials alone (relative) with its paired se, and the median chosen strength (mean pull for
    ``per_metric``)."""
    rows = []
    keys = ["direct_sd", "trials", "bias"]
    for (direct, K, b), g in results.groupby(keys, sort=True):
        ref = g[g["rule"] == "trials"].set_index("rep")["regret"]
        for rule in [r for r in FUSION_RULES if r in set(g["rule"])]:
            h = g[g["rule"] == rule].set_index("rep")["regret"]
            paired = (h - ref.reindex(h.index)).dropna()
            n = len(h)
            base = ref.mean()
            strength = g.loc[g["rule"] == rule, "strength"]
            rows.append({"direct_sd": direct, "trials": K, "bias": b, "rule": rule, "reps": n,
                         "regret": h.mean(), "regret_se": h.std(ddof=1) / np.sqrt(n) if n > 1 else np.nan,
                         "change": paired.mean() / base,
                         "change_se": paired.std(ddof=1) / np.sqrt(len(paired)) / base if len(paired) > 1 else np.nan,
                         "median_strength": strength.median() if strength.notna().any() else np.nan})
    return pd.DataFrame(rows)


def target_table(summary: pd.DataFrame, *, max_loss: float = 0.05, min_gain: float = 0.20,
                 gain_trials: int = 10, small_bias: float = 0.05) -> pd.DataFrame:
    """Per fusion rule: its largest change against the trials alone over every setting (target: at
    most ``max_loss``), and its smallest gain at ``gain_trials`` trials with bias <= ``small_bias``
    and no direct effects (target: at least ``min_gain``); with the setting and se of each."""
    rows = []
    for rule in [r for r in FUSION_RULES if r in set(summary["rule"]) and r != "trials"]:
        s = summary[summary["rule"] == rule]
        worst = s.loc[s["change"].idxmax()]
        small = s[(s["trials"] == gain_trials) & (s["bias"] <= small_bias) & (s["direct_sd"] == 0)]
        row = {"rule": rule, "worst_change": worst["change"], "worst_change_se": worst["change_se"],
               "worst_setting": f"K={worst['trials']:g}, direct sd {worst['direct_sd']:g}, bias {worst['bias']:g}",
               "meets_safety": bool(worst["change"] <= max_loss)}
        if len(small):
            least = small.loc[small["change"].idxmax()]  # the smallest gain (the largest change)
            row |= {"gain_small_bias": -least["change"], "gain_small_bias_se": least["change_se"],
                    "meets_gain": bool(-least["change"] >= min_gain)}
        else:
            row |= {"gain_small_bias": np.nan, "gain_small_bias_se": np.nan, "meets_gain": False}
        rows.append(row)
    return pd.DataFrame(rows)


def _pct(x: float) -> str:
    return "—" if not np.isfinite(x) else f"{100 * x:+.1f}%"


def fusion_tables(results: pd.DataFrame) -> str:
    """Markdown: the targets per rule, then the change against the trials alone per setting and bias."""
    summary = fusion_summary(results)
    lines = ["## Targets", "",
             "Each fusion: never more than 5% more regret than the trials alone in any setting, and at least 20% "
             "less at K = 10 with bias 0 or 0.05 and no direct effects. Changes are relative to the trials' "
             "composite alone, with their paired Monte Carlo standard error.", ""]
    targets = target_table(summary)
    if not (summary["trials"] == 10).any():
        lines += ["(No setting with K = 10: the gain target cannot be judged.)", ""]
    lines += ["| rule | worst change (se) | where | meets <= +5% | least gain at K = 10, bias <= 0.05 (se) | "
              "meets >= 20% |",
              "|---|---|---|---|---|---|"]
    for _, t in targets.iterrows():
        fusion = t["rule"] in FUSION_ONLY
        safe, gain = (("yes" if t[k] else "no") if fusion else "(not a fusion)" for k in ("meets_safety", "meets_gain"))
        lines.append(f"| {t['rule']} | {_pct(t['worst_change'])} ({100 * t['worst_change_se']:.1f}) | "
                     f"{t['worst_setting']} | {safe} | {_pct(-t['gain_small_bias'])} "
                     f"({100 * t['gain_small_bias_se']:.1f}) | {gain} |")
    biases = sorted(summary["bias"].unique())
    rules = [r for r in FUSION_RULES if r in set(summary["rule"])]
    lines += ["", "## Regret of the trials alone, and every rule's change against it", "",
              "Regret: the share of the oracle's KPI gain lost on new trials (mean over replications, its se). "
              "Change: negative is better.", "",
              "| direct-effect sd | K | rule | " + " | ".join(f"bias {b:g}" for b in biases) + " |",
              "|---|---|---|" + "---|" * len(biases)]
    for (direct, K), g in summary.groupby(["direct_sd", "trials"], sort=True):
        for rule in rules:
            cells = []
            for b in biases:
                row = g[(g["bias"] == b) & (g["rule"] == rule)]
                if row.empty:
                    cells.append("")
                elif rule == "trials":
                    cells.append(f"{row['regret'].iloc[0]:.4f} ({row['regret_se'].iloc[0]:.4f})")
                else:
                    cells.append(_pct(row["change"].iloc[0]))
            lines.append(f"| {direct:g} | {K} | {rule} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


__all__ = ["BIAS_SHIFT", "FUSION_BIASES", "FUSION_COLUMNS", "FUSION_RULES", "FusionSetting", "FusionStudy",
           "draw_trials", "fusion_replicate", "fusion_summary", "fusion_tables", "launch_regret",
           "simulate_fusion_trials", "target_table"]
