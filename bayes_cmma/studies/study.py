"""The paper's simulation study as data: study definitions and one replication.

A :class:`Study` is a list of settings (each a :class:`~bayes_cmma.studies.simulate.SimulationSettings`
with a label), the estimators to run and the degrees to fit. :func:`replicate` simulates one data
set for one setting and replication number, summarizes it per trial, runs every estimator and
returns one row per (estimator, fitted degree, power). The runner (:mod:`bayes_cmma.studies.runner`)
executes replications in parallel and resumably; :func:`summary_table` and :func:`paper_tables`
turn the rows into the paper's Tables 1-3.

Estimators: ``liml``, ``2sls``, ``sobel_iv``, ``lsem`` on the unit-level data (linear DRF only,
:mod:`bayes_cmma.baselines.iv`); on the trial summaries ``cmma_ols`` (Algorithm 1), the summary-level
errors-in-variables peers ``summary_tc`` (total covariance = Fuller's method of moments) and
``summary_liml`` (:mod:`bayes_cmma.baselines.eiv`), ``admgda`` (Algorithm 1 by weighted least squares on the
causally augmented trial table, percentile bootstrap intervals; :mod:`bayes_cmma.augmentation.admgda`), and ``bayes``
(the marginalised model). With several
degrees, the degree is also *selected*: for the frequentist estimators by backward Wald tests (fit the
highest degree; keep it if its top coefficient is significant at 5%, else drop one degree and
repeat), for ``bayes`` by the same rule on the 95% credible interval of the top coefficient (keep the
degree if the interval excludes 0).

Seeds: replication ``r`` of a setting draws from ``SeedSequence([study.seed, key, r])`` where
``key`` is a hash of the setting's simulation parameters, so results do not depend on the number
of workers or on the order in which replications run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bayes_cmma.errors import BayesCMMAError, DataError, SpecError
from bayes_cmma.fitting.spec import _check_keys
from bayes_cmma.studies.simulate import SimulationSettings, simulate_units

UNIT_ESTIMATORS = ("liml", "2sls", "sobel_iv", "lsem")
#: Frequentist estimators on the trial summaries: the study's name -> :mod:`bayes_cmma.baselines.eiv` method.
EIV_ESTIMATORS = {"summary_tc": "tc", "summary_liml": "liml"}
SUMMARY_ESTIMATORS = ("cmma_ols", *EIV_ESTIMATORS, "admgda", "bayes")
ALL_ESTIMATORS = (*UNIT_ESTIMATORS, *SUMMARY_ESTIMATORS)
#: What a study runs unless it names its estimators: all but ``admgda`` (a baseline of the
#: few-trials study, ``small_k``, where it is on by default).
DEFAULT_ESTIMATORS = tuple(e for e in ALL_ESTIMATORS if e != "admgda")
CI_PROB = 0.95
DEFAULT_BAYES: dict[str, Any] = {"draws": 1000, "tune": 1000, "chains": 4}
#: Sampler settings a study may set; ``target_accept`` defaults to the bundled spec's (0.9).
BAYES_KEYS = ("draws", "tune", "chains", "target_accept")
#: Measurement-model settings of the Bayesian fits a study may set (the spec's ``[measurement]``
#: choices), and ``arm_sizes = false`` to withhold the summaries' arm sizes from the model.
BAYES_MEASUREMENT_KEYS = ("error_covariance", "pool_by", "size_proxy", "arm_sizes")
#: The model's team effects a study may set (a model spec's ``team_effects``).
BAYES_MODEL_KEYS = ("team_effects",)

#: Columns of a results row, in order.
RESULT_COLUMNS = (
    "study", "setting", "rep", "seed", "estimator", "degree", "power", "true", "estimate", "std_error",
    "lower", "upper", "covered", "width", "selected_degree", "time_s", "rhat_max", "ess_bulk_min",
    "divergences",
)


@dataclass(frozen=True)
class Setting:
    """One column of a study table: a label and the data-generating process."""

    label: str
    sim: SimulationSettings

    def key(self) -> int:
        """A stable integer hash of the simulation parameters (seeds depend on it, not on order)."""
        payload = json.dumps(self.sim.to_dict(), sort_keys=True)
        return int(hashlib.sha256(payload.encode()).hexdigest()[:12], 16)


@dataclass(frozen=True)
class Study:
    """A simulation study: settings x replications x estimators.

    Attributes
    ----------
    name : str
    settings : tuple of Setting
    estimators : tuple of str
        Subset of :data:`ALL_ESTIMATORS`.
    degrees : tuple of int
        Degrees fitted by the summary-based estimators; more than one means degree selection.
    sims : int
        Replications per setting.
    seed : int
        Base seed of every replication's :class:`numpy.random.SeedSequence`.
    bayes : dict
        Sampler settings of the Bayesian fits (``draws``, ``tune``, ``chains``, optionally
        ``target_accept``) and optionally their measurement model (``error_covariance``,
        ``pool_by``, ``size_proxy``; ``arm_sizes = False`` fits without the arm sizes).
    """

    name: str
    settings: tuple[Setting, ...]
    estimators: tuple[str, ...] = DEFAULT_ESTIMATORS
    degrees: tuple[int, ...] = (1,)
    sims: int = 100
    seed: int = 2020
    bayes: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_BAYES))

    def __post_init__(self) -> None:
        bad = [e for e in self.estimators if e not in ALL_ESTIMATORS]
        if bad:
            raise BayesCMMAError(
                f"study {self.name!r}: unknown estimator {bad[0]!r}; choose from {', '.join(ALL_ESTIMATORS)}."
            )
        if not self.estimators:
            raise BayesCMMAError(f"study {self.name!r}: no estimator given.")
        if not self.settings:
            raise BayesCMMAError(f"study {self.name!r}: no setting given.")
        labels = [s.label for s in self.settings]
        if len(set(labels)) != len(labels):
            raise BayesCMMAError(f"study {self.name!r}: setting labels repeat ({labels}); give each a unique label.")
        if not self.degrees or any(not 1 <= d <= 3 for d in self.degrees):
            raise BayesCMMAError(f"study {self.name!r}: degrees must be among 1, 2, 3, got {list(self.degrees)}.")
        if self.sims < 1:
            raise BayesCMMAError(f"study {self.name!r}: sims must be at least 1, got {self.sims}.")
        from bayes_cmma.fitting.spec import MEASUREMENT_CHOICES, TEAM_EFFECTS

        for k, v in self.bayes.items():
            if k in MEASUREMENT_CHOICES:
                ok = v in MEASUREMENT_CHOICES[k]
            elif k == "team_effects":
                ok = v in TEAM_EFFECTS
            elif k == "arm_sizes":
                ok = isinstance(v, bool)
            else:
                ok = (not isinstance(v, bool) and isinstance(v, int | float)
                      and ((0 < v < 1) if k == "target_accept" else (isinstance(v, int) and v >= 1)))
            if k not in (*BAYES_KEYS, *BAYES_MEASUREMENT_KEYS, *BAYES_MODEL_KEYS) or not ok:
                raise BayesCMMAError(
                    f"study {self.name!r}: bayes setting {k}={v!r}; allowed keys "
                    f"{', '.join((*BAYES_KEYS, *BAYES_MEASUREMENT_KEYS, *BAYES_MODEL_KEYS))}: draws, tune, chains "
                    "positive integers, target_accept between 0 and 1, error_covariance / pool_by / size_proxy as "
                    f"in a model spec's [measurement], arm_sizes true or false, team_effects one of "
                    f"{', '.join(TEAM_EFFECTS)}."
                )
        if any(e in UNIT_ESTIMATORS for e in self.estimators):
            for s in self.settings:
                if s.sim.degree != 1 or self.degrees != (1,):
                    raise BayesCMMAError(
                        f"study {self.name!r}, setting {s.label!r}: the unit-level estimators "
                        f"({', '.join(UNIT_ESTIMATORS)}) estimate a linear DRF only; use degrees = [1] and a "
                        "one-coefficient beta, or run only cmma_ols and bayes."
                    )

    def identity(self) -> dict[str, Any]:
        """Everything that defines the results except the number of replications."""
        return {
            "name": self.name,
            "settings": [{"label": s.label, **s.sim.to_dict()} for s in self.settings],
            "estimators": list(self.estimators),
            "degrees": list(self.degrees),
            "seed": self.seed,
            "bayes": dict(sorted(self.bayes.items())),
        }

    # What the runner (:func:`bayes_cmma.studies.runner.run_study`) asks of a study; the fusion
    # study (:class:`bayes_cmma.studies.fusion_study.FusionStudy`) answers the same.
    @property
    def columns(self) -> tuple[str, ...]:
        """Columns of a results row."""
        return RESULT_COLUMNS

    def rows_per_replication(self) -> int:
        """Rows one finished replication writes (a replication with fewer is incomplete)."""
        return sum(1 if e in UNIT_ESTIMATORS else sum(self.degrees) for e in self.estimators)

    def replicate(self, setting_index: int, rep: int) -> list[dict[str, Any]]:
        """The rows of replication ``rep`` of setting ``setting_index`` (:func:`replicate`)."""
        return replicate(self, setting_index, rep)

    def describe(self) -> str:
        """One line for ``summary.md``: estimators, degrees and sampler."""
        return (f"Estimators: {', '.join(self.estimators)}; degrees fitted: {', '.join(map(str, self.degrees))}; "
                f"Bayesian sampler: {', '.join(f'{k}={v}' for k, v in self.bayes.items())} (nutpie, low-rank mass "
                "matrix).")

    def summarise(self, results: pd.DataFrame) -> tuple[pd.DataFrame, str]:
        """``summary.csv``'s table and ``summary.md``'s tables (:func:`summary_table`, :func:`paper_tables`)."""
        return summary_table(results), paper_tables(results)


def builtin_study(name: str, n_per: list[int] | None = None, n_trials: list[int] | None = None) -> Study:
    """The paper's studies ``table1``, ``table2``, ``table3`` and our ``small_k``.

    ``table1``: K = 50, N_per in (200, 500, 1000), beta = 4, every estimator. ``table2``: K = 50,
    N_per = 200 with assumption A2, A3 or A4 violated. ``table3``: K = 100, N_per = 1000,
    mu(m) = 4m, 4m + 2m^2, 4m + 0m^2 + 5m^3 (no eps_beta M term), degrees 1-3 selected by Wald
    tests / credible intervals. ``small_k``: K in (10, 20), N_per = 200, beta = 4, every estimator and
    ``admgda`` (the others leave ``admgda`` out unless asked).
    ``n_per`` and ``n_trials`` override the defaults of the settings they apply to.
    """
    if name == "table1":
        sizes = n_per or [200, 500, 1000]
        ks = n_trials or [50]
        settings = tuple(
            Setting(f"K={k},N_per={n}" if len(ks) > 1 else f"N_per={n}", SimulationSettings(n_trials=k, n_per=n))
            for k in ks
            for n in sizes
        )
        return Study("table1", settings)
    if name in ("table2", "table3"):
        for flag, values in (("--n-per", n_per), ("--n-trials", n_trials)):
            if values and len(values) != 1:
                raise BayesCMMAError(f"study {name!r} takes one value of {flag}, got {len(values)}: {values}.")
    if name == "table2":
        (n,) = n_per or [200]
        (k,) = n_trials or [50]
        settings = tuple(
            Setting(f"{v} violated", SimulationSettings(n_trials=k, n_per=n, violation=v)) for v in ("A2", "A3", "A4")
        )
        return Study("table2", settings)
    if name == "table3":
        (n,) = n_per or [1000]
        (k,) = n_trials or [100]
        shapes = {
            "4m": dict(beta=(4.0,)),
            "4m+2m^2": dict(beta=(4.0, 2.0)),
            "4m+0m^2+5m^3": dict(beta=(4.0, 0.0, 5.0), random_slope=False),
        }
        settings = tuple(Setting(lab, SimulationSettings(n_trials=k, n_per=n, **kw)) for lab, kw in shapes.items())
        estimators = tuple(e for e in SUMMARY_ESTIMATORS if e != "admgda")
        return Study("table3", settings, estimators=estimators, degrees=(1, 2, 3))
    if name == "small_k":
        sizes = n_per or [200]
        ks = n_trials or [10, 20]
        settings = tuple(
            Setting(f"K={k},N_per={n}", SimulationSettings(n_trials=k, n_per=n)) for k in ks for n in sizes
        )
        return Study("small_k", settings, estimators=ALL_ESTIMATORS)
    raise BayesCMMAError(
        f"unknown study {name!r}; choose table1, table2, table3, small_k, fusion, or give a TOML file (docs: "
        "simulation.md)."
    )


_STUDY_KEYS = ("name", "sims", "seed", "estimators", "degrees", "base", "settings", "bayes")


def load_study(path: str | Path) -> Study:
    """A custom study from a TOML file.

    Example::

        name = "few_trials"
        sims = 50
        estimators = ["cmma_ols", "bayes"]   # default: all but admgda
        degrees = [1]
        [base]                               # SimulationSettings fields shared by every setting
        n_per = 200
        [[settings]]
        label = "K=10"
        n_trials = 10
        [[settings]]
        label = "K=10, A2 violated"
        n_trials = 10
        violation = "A2"
        [bayes]
        draws = 500
    """
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"study file {str(path)!r} does not exist.")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"study file {str(path)!r} is not valid TOML: {exc}") from exc
    where = f"study file {str(path)!r}"
    _check_keys(raw, _STUDY_KEYS, where)
    base = raw.get("base", {})
    sim_fields = [f.name for f in dataclasses.fields(SimulationSettings)]
    _check_keys(base, sim_fields, f"[base] of {where}")
    entries = raw.get("settings") or [{}]
    settings = []
    for i, entry in enumerate(entries):
        _check_keys(entry, ["label", *sim_fields], f"[[settings]] #{i + 1} of {where}")
        params = {**base, **{k: v for k, v in entry.items() if k != "label"}}
        for k in ("beta", "tau_team", "gamma_team"):
            if k in params:
                params[k] = tuple(params[k])
        if params.get("violation") in ("none", ""):
            params["violation"] = None
        try:
            sim = SimulationSettings(**params)
        except TypeError as exc:
            raise SpecError(f"[[settings]] #{i + 1} of {where}: {exc}") from exc
        settings.append(Setting(str(entry.get("label", f"setting{i + 1}")), sim))
    bayes = {**DEFAULT_BAYES, **raw.get("bayes", {})}
    return Study(
        name=str(raw.get("name", path.stem)),
        settings=tuple(settings),
        estimators=tuple(raw.get("estimators", DEFAULT_ESTIMATORS)),
        degrees=tuple(raw.get("degrees", (1,))),
        sims=int(raw.get("sims", 100)),
        seed=int(raw.get("seed", 2020)),
        bayes=bayes,
    )


def replication_seed(study: Study, setting: Setting, rep: int) -> np.random.SeedSequence:
    """The seed sequence of replication ``rep`` of ``setting`` (independent of workers and order)."""
    return np.random.SeedSequence([study.seed, setting.key(), rep])


def _row(study: Study, setting: Setting, rep: int, seed: int, estimator: str, degree: int, power: int,
         estimate: float, std_error: float, lower: float, upper: float, time_s: float, **extra: Any) -> dict:
    beta = setting.sim.beta
    true = beta[power - 1] if power <= len(beta) else 0.0
    row = {
        "study": study.name, "setting": setting.label, "rep": rep, "seed": seed, "estimator": estimator,
        "degree": degree, "power": power, "true": true, "estimate": estimate, "std_error": std_error,
        "lower": lower, "upper": upper, "covered": bool(lower <= true <= upper), "width": upper - lower,
        "selected_degree": np.nan, "time_s": time_s, "rhat_max": np.nan, "ess_bulk_min": np.nan,
        "divergences": np.nan,
    }
    row.update(extra)
    return row


def _bayes_fit(design: Any, degree: int, bayes: dict[str, Any], seed: int) -> tuple[np.ndarray, dict[str, float]]:
    """Posterior draws of beta (n_draws, P) and diagnostics; reuses the process's compiled model."""
    import arviz_stats as azs

    from bayes_cmma.checks.diagnostics import divergences
    from bayes_cmma.fitting.bayes import fit_design
    from bayes_cmma.fitting.spec import MEASUREMENT_CHOICES, replace_spec, spec_for_degree

    spec = spec_for_degree(degree)
    sampler = {k: v for k, v in bayes.items() if k in BAYES_KEYS}
    meas = {k: v for k, v in bayes.items() if k in MEASUREMENT_CHOICES}
    spec = replace_spec(spec, sampler={**spec.sampler, **sampler}, **meas,
                        team_effects=bayes.get("team_effects", spec.team_effects))
    if not bayes.get("arm_sizes", True):
        design = dataclasses.replace(design, arm_sizes=None)
    # convergence is recorded in the results (rhat_max, divergences) instead of warned about
    fit = fit_design(design, spec, seed=seed, cores=1, check_convergence=False)
    beta = fit.beta
    diag = {
        "rhat_max": float(np.max(azs.rhat(beta).values)),
        "ess_bulk_min": float(np.min(azs.ess(beta).values)),
        "divergences": float(divergences(fit.posterior)),
    }
    draws = beta.stack(sample=("chain", "draw")).transpose("sample", "power").values
    return draws, diag


def replicate(study: Study, setting_index: int, rep: int) -> list[dict[str, Any]]:
    """Simulate, summarize and estimate one replication; one row per (estimator, degree, power)."""
    from bayes_cmma.baselines.eiv import eiv_estimate
    from bayes_cmma.baselines.iv import unit_estimate
    from bayes_cmma.baselines.ols import cmma_ols_design
    from bayes_cmma.inputs.data import metric_design, read_trials
    from bayes_cmma.inputs.summarizer import summarize_units

    setting = study.settings[setting_index]
    ss = replication_seed(study, setting, rep)
    data_seed, sampler_seed, boot_seed = ss.spawn(3)  # spawn(3) keeps the first two children of spawn(2)
    seed_int = int(ss.generate_state(1)[0])
    sim = simulate_units(setting.sim, np.random.default_rng(data_seed))
    rows: list[dict[str, Any]] = []
    for est in (e for e in study.estimators if e in UNIT_ESTIMATORS):
        t0 = time.perf_counter()
        u = unit_estimate(sim.units, est)
        lo, hi = u.interval(CI_PROB)
        rows.append(_row(study, setting, rep, seed_int, est, 1, 1, u.estimate, u.std_error, lo, hi,
                         time.perf_counter() - t0))
    if not any(e in SUMMARY_ESTIMATORS for e in study.estimators):
        return rows
    t0 = time.perf_counter()
    trials, cov = summarize_units(sim.units, kpi="y", metrics=["m"], degree=max(study.degrees))
    data = read_trials(trials, cov)
    t_summary = time.perf_counter() - t0
    designs = {d: metric_design(data, "y", "m", d, warn_filled=False) for d in study.degrees}
    top_down = sorted(study.degrees, reverse=True)
    pct = f"{100 * CI_PROB:g}"

    frequentist = {"cmma_ols": cmma_ols_design} | {
        name: (lambda design, method=method: eiv_estimate(design, method)) for name, method in EIV_ESTIMATORS.items()
    }
    for est, estimator in frequentist.items():
        if est not in study.estimators:
            continue
        fits, times = {}, {}
        for d in study.degrees:
            t0 = time.perf_counter()
            try:
                fits[d] = estimator(designs[d])
            except DataError:  # e.g. the errors-in-variables correction undefined under weak A4
                fits[d] = None
            times[d] = time.perf_counter() - t0 + t_summary
        selected = top_down[-1]
        for d in top_down:
            if fits[d] is not None and (
                    d == top_down[-1] or float(fits[d].wald_tests()["p_value"].iloc[0]) < 1 - CI_PROB):
                selected = d
                break
        for d, r in fits.items():
            if r is None:
                for p in range(1, d + 1):
                    rows.append(_row(study, setting, rep, seed_int, est, d, p, np.nan, np.nan, np.nan, np.nan,
                                     times[d], selected_degree=selected))
                continue
            table = r.coefficient_table(CI_PROB).iloc[-d:]
            for p, (_, c) in enumerate(table.iterrows(), start=1):
                rows.append(_row(study, setting, rep, seed_int, est, d, p, c["estimate"], c["std_error"],
                                 c[f"ci{pct}_lower"], c[f"ci{pct}_upper"], times[d], selected_degree=selected))

    if "admgda" in study.estimators:
        _admgda_rows(study, setting, rep, seed_int, designs, boot_seed, t_summary, rows)

    if "bayes" in study.estimators:
        seeds = sampler_seed.generate_state(len(study.degrees))
        post, diags, times = {}, {}, {}
        for i, d in enumerate(study.degrees):
            t0 = time.perf_counter()
            post[d], diags[d] = _bayes_fit(designs[d], d, study.bayes, int(seeds[i]))
            times[d] = time.perf_counter() - t0 + t_summary
        lo_q, hi_q = (1 - CI_PROB) / 2, 1 - (1 - CI_PROB) / 2
        bounds = {d: np.quantile(post[d], [lo_q, hi_q], axis=0) for d in study.degrees}
        selected = top_down[-1]
        for d in top_down:
            lo, hi = bounds[d][:, d - 1]
            if d == top_down[-1] or lo > 0 or hi < 0:
                selected = d
                break
        for d in study.degrees:
            for p in range(1, d + 1):
                draws = post[d][:, p - 1]
                rows.append(_row(study, setting, rep, seed_int, "bayes", d, p, float(draws.mean()),
                                 float(draws.std(ddof=1)), float(bounds[d][0, p - 1]), float(bounds[d][1, p - 1]),
                                 times[d], selected_degree=selected, **diags[d]))
    return rows


def _admgda_rows(study: Study, setting: Setting, rep: int, seed_int: int, designs: dict, boot_seed: Any,
                 t_summary: float, rows: list[dict[str, Any]]) -> None:
    """Rows of the ``admgda`` estimator; degree selected by its bootstrap interval of the top coefficient."""
    from bayes_cmma.augmentation.admgda import admgda_estimate

    fits, times = {}, {}
    for d, child in zip(study.degrees, boot_seed.spawn(len(study.degrees)), strict=True):
        t0 = time.perf_counter()
        try:
            fits[d] = admgda_estimate(designs[d], np.random.default_rng(child), prob=CI_PROB)
        except DataError:  # the augmentation of the full table failed
            fits[d] = None
        times[d] = time.perf_counter() - t0 + t_summary
    top_down = sorted(study.degrees, reverse=True)
    selected = top_down[-1]
    for d in top_down:
        r = fits[d]
        if r is not None and (d == top_down[-1] or r.lower[d - 1] > 0 or r.upper[d - 1] < 0):
            selected = d
            break
    for d, r in fits.items():
        for p in range(1, d + 1):
            values = (np.nan,) * 4 if r is None else (r.beta[p - 1], r.std_error[p - 1], r.lower[p - 1],
                                                       r.upper[p - 1])
            rows.append(_row(study, setting, rep, seed_int, "admgda", d, p, *map(float, values), times[d],
                             selected_degree=selected))


def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    """Bias, RMSE, coverage, mean interval width and time per (setting, estimator, degree, power).

    Monte Carlo standard errors are given for the bias (sd / sqrt(n)) and the coverage
    (sqrt(c (1 - c) / n)).
    """
    keys = ["setting", "estimator", "degree", "power"]
    order = {s: i for i, s in enumerate(pd.unique(results["setting"]))}
    est_order = {e: i for i, e in enumerate(ALL_ESTIMATORS)}
    rows = []
    for (setting, est, degree, power), g in results.groupby(keys, sort=False):
        err = g["estimate"] - g["true"]
        n = len(g)
        cov = float(g["covered"].mean())
        rows.append({
            "setting": setting, "estimator": est, "degree": int(degree), "power": int(power), "n": n,
            "true": float(g["true"].iloc[0]), "mean_estimate": float(g["estimate"].mean()),
            "bias": float(err.mean()), "bias_mcse": float(err.std(ddof=1) / np.sqrt(n)) if n > 1 else np.nan,
            "rmse": float(np.sqrt((err**2).mean())), "mean_std_error": float(g["std_error"].mean()),
            "sd_estimate": float(g["estimate"].std(ddof=1)) if n > 1 else np.nan,
            "coverage": cov, "coverage_mcse": float(np.sqrt(cov * (1 - cov) / n)),
            "mean_width": float(g["width"].mean()), "mean_time_s": float(g["time_s"].mean()),
            "failed": int(g["estimate"].isna().sum()),
            "max_rhat": float(g["rhat_max"].max()) if g["rhat_max"].notna().any() else np.nan,
            "divergent_reps": int((g["divergences"] > 0).sum()) if g["divergences"].notna().any() else 0,
        })
    out = pd.DataFrame(rows)
    out["_s"] = out["setting"].map(order)
    out["_e"] = out["estimator"].map(est_order)
    return out.sort_values(["_s", "_e", "degree", "power"]).drop(columns=["_s", "_e"]).reset_index(drop=True)


def selection_table(results: pd.DataFrame) -> pd.DataFrame:
    """Share of replications in which each degree was selected, per (setting, estimator)."""
    sel = results.dropna(subset=["selected_degree"]).drop_duplicates(["setting", "rep", "estimator"])
    if sel.empty:
        return pd.DataFrame(columns=["setting", "estimator", "n"])
    table = (
        sel.groupby(["setting", "estimator"], sort=False)["selected_degree"]
        .value_counts(normalize=True)
        .unstack(fill_value=0.0)
        .sort_index(axis=1)
    )
    table.columns = [f"P(degree={int(c)})" for c in table.columns]
    table.insert(0, "n", sel.groupby(["setting", "estimator"], sort=False).size())
    return table.reset_index()


def _by_setting(
    summary: pd.DataFrame, settings: list[str], title: str, cell: Any
) -> list[str]:
    """Markdown table: one row per estimator, one column per setting, ``cell(summary row)`` in each."""
    lines = [f"{title}\n", "| estimator | " + " | ".join(settings) + " |", "|---|" + "---|" * len(settings)]
    for est in pd.unique(summary["estimator"]):
        cells = []
        for s in settings:
            r = summary[(summary["estimator"] == est) & (summary["setting"] == s)]
            cells.append("" if r.empty else cell(r.iloc[0]))
        lines.append(f"| {est} | " + " | ".join(cells) + " |")
    return lines


def paper_tables(results: pd.DataFrame) -> str:
    """Markdown in the layout of the paper's tables: 'bias / coverage' per estimator and setting.

    With degree selection (Table 3) it adds the selection shares and the mean estimates at the
    true degree.
    """
    summary = summary_table(results)
    settings = list(pd.unique(results["setting"]))
    lines = []
    linear = summary[(summary["degree"] == 1) & (summary["power"] == 1)]
    if not linear.empty and results["degree"].max() == 1:
        lines += _by_setting(
            linear, settings, "Bias / 95% interval coverage of beta (MC standard error of the bias in brackets):",
            lambda r: f"{r['bias']:.3f} ({r['bias_mcse']:.3f}) / {100 * r['coverage']:.0f}%",
        )
        lines.append("")
        lines += _by_setting(linear, settings, "RMSE / mean interval width:",
                             lambda r: f"{r['rmse']:.3f} / {r['mean_width']:.3f}")
    sel = selection_table(results)
    if results["degree"].nunique() > 1:
        lines.append("")
        lines.append("Degree selected (share of replications): cmma_ols by backward Wald tests at 5%, bayes by "
                     "whether the 95% credible interval of the top coefficient excludes 0:\n")
        cols = [c for c in sel.columns if c.startswith("P(")]
        lines.append("| setting | estimator | n | " + " | ".join(cols) + " |")
        lines.append("|---|---|---|" + "---|" * len(cols))
        for _, r in sel.iterrows():
            lines.append(f"| {r['setting']} | {r['estimator']} | {r['n']} | "
                         + " | ".join(f"{r[c]:.2f}" for c in cols) + " |")
        lines.append("")
        lines.append("Mean estimates at the true degree (bias / coverage per coefficient):\n")
        lines.append("| setting | estimator | mean beta | bias / coverage |")
        lines.append("|---|---|---|---|")
        truth = results.groupby("setting", sort=False)["true"].size()  # settings in order
        for s in truth.index:
            true_degree = int(results.loc[(results["setting"] == s) & (results["true"] != 0), "power"].max())
            for est in pd.unique(summary["estimator"]):
                r = summary[(summary["setting"] == s) & (summary["estimator"] == est)
                            & (summary["degree"] == true_degree)]
                if r.empty:
                    continue
                means = ", ".join(f"{v:.3f}" for v in r["mean_estimate"])
                bc = ", ".join(f"{b:.3f} / {100 * c:.0f}%" for b, c in zip(r["bias"], r["coverage"], strict=True))
                lines.append(f"| {s} | {est} | ({means}) | {bc} |")
    return "\n".join(lines) + "\n"
