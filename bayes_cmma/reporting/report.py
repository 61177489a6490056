"""One self-contained HTML report of a fit: the answer first, then the evidence.

``bayes-cmma report FIT_DIR --out report.html`` (and ``fit``/``demo`` by default) reads what a fit
wrote (``run.json``, one ``METRIC.nc`` posterior per metric, ``ols.csv``, ``assumptions.csv``)
and writes one HTML file: figures are embedded as base64 PNG, the style is inline, and nothing
refers to the network, so the file opens anywhere, offline, and can be mailed as is.

Sections: the answer (recommended north-star metric, its elasticity with interval, P(best));
warnings in plain language; dose-response and elasticity panels; the ranking; per-metric model
checks (posterior predictive, LOO Pareto k, shrinkage, team effects); diagnostics (trace/rank
plots, R-hat and ESS); the paper's OLS beside the Bayesian coefficients; model spec and versions.
"""

from __future__ import annotations

import base64
import html
import io
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.figure import Figure

from bayes_cmma import dims
from bayes_cmma.checks import checking
from bayes_cmma.checks.diagnostics import CI_PROB, divergences, problems, summary_table
from bayes_cmma.decisions import derived
from bayes_cmma.decisions.northstar import format_weights
from bayes_cmma.errors import AssumptionWarning, BayesCMMAError
from bayes_cmma.reporting import plots
from bayes_cmma.reporting.plots._common import as_trees

#: File of a fit folder that records how the fit was asked for (written by ``fit``/``demo``).
RUN_FILE = "run.json"


@dataclass
class ReportInputs:
    """Everything the report shows.

    Attributes
    ----------
    trees : dict
        metric -> posterior DataTree (as saved by ``fit``).
    kpi : str
    at : dict or None
        Current value of each metric; without it there is no elasticity or ranking.
    lift : float
    baseline : float or None
        KPI level dividing the gain (None: mu(m)).
    ols : DataFrame or None
        ``ols.csv`` of the fit (the paper's Algorithm 1).
    assumptions : DataFrame or None
        ``assumptions.csv`` (A4 check per metric).
    loo : dict or None
        metric -> :func:`bayes_cmma.checks.checking.loo` of that posterior, when the caller has computed it.
    ranking : Dataset or None
        A ranking to show instead of pairing the trees' draws (``fit --joint``: the joint model's).
    northstar : DataFrame or None
        :func:`bayes_cmma.northstar_frame` of the joint posterior (``northstar.csv``).
    more_trials : DataFrame or None
        :func:`bayes_cmma.value_frame` of the ranking's draws (``more_trials.csv``).
    decision_value : DataFrame or None
        :func:`bayes_cmma.decision_value`'s table with the candidate as a column (``decision_value.csv``).
    fusion : DataFrame or None
        :func:`bayes_cmma.decisions.fusion.fusion_frame` of the decision-focused fusion with the logs'
        partial slopes (``fusion.csv``; ``fit --observational-slope``).
    summaries : dict or None
        metric -> :func:`bayes_cmma.checks.diagnostics.summary_table` of that posterior, when the caller
        has it (``MetricFit.summary``; not recomputed).
    """

    trees: dict[str, xr.DataTree]
    kpi: str
    at: dict[str, float] | None = None
    lift: float = 0.1
    baseline: float | None = None
    ols: pd.DataFrame | None = None
    assumptions: pd.DataFrame | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    loo: dict[str, Any] | None = None  # metric -> pointwise PSIS-LOO when the caller has it (not recomputed)
    ranking: xr.Dataset | None = None
    northstar: pd.DataFrame | None = None
    more_trials: pd.DataFrame | None = None
    decision_value: pd.DataFrame | None = None
    fusion: pd.DataFrame | None = None
    summaries: dict[str, pd.DataFrame] | None = None


def run_record(kpi: str, metrics: list[str], at: dict[str, float], lift: float, baseline: float | None,
               model: str, seed: int | None, joint: str | None = None) -> dict[str, Any]:
    """The ``run.json`` content: what the fit was asked for (``joint``: the joint model's prior, if any)."""
    return {"kpi": kpi, "metrics": list(metrics), "at": dict(at) or None, "lift": lift,
            "kpi_baseline": baseline, "model": model, "seed": seed, "joint": joint}


#: File of the joint model's posterior in a fit folder (``fit --joint``).
JOINT_FILE = "joint.nc"
#: File of the composite north star table in a fit folder (``fit --joint``, ``northstar``).
NORTHSTAR_FILE = "northstar.csv"
#: File of the value-of-more-trials table in a fit folder (``fit`` with a ranking).
MORE_TRIALS_FILE = "more_trials.csv"
#: File of the model-free decision-value table in a fit folder (``fit`` with two or more metrics).
DECISION_VALUE_FILE = "decision_value.csv"
#: File of the decision-focused fusion with the logs in a fit folder (``fit --observational-slope``).
FUSION_FILE = "fusion.csv"


def joint_ranking(tree: xr.DataTree, at: dict[str, float], lift: float, baseline: float) -> xr.Dataset:
    """The ranking from a saved joint posterior (``joint.nc``), as :meth:`bayes_cmma.JointFit.ranking` gives it."""
    beta = tree["posterior"]["beta"]
    metrics = [str(m) for m in beta[dims.METRIC].values]
    parts = [derived.elasticity(beta.sel({dims.METRIC: m}, drop=True).expand_dims({dims.POWER: [1]}, axis=-1),
                                float(at[m]), lift=lift, baseline=baseline) for m in metrics]
    from bayes_cmma.fitting.joint import rank_tree

    return rank_tree(tree, derived.stack_metrics(parts, metrics), at, lift, baseline)


def read_joint(path: str | Path) -> xr.DataTree:
    """The joint posterior saved by ``fit --joint`` (``joint.nc``), or one error line saying to refit."""
    try:
        return xr.open_datatree(path, engine="h5netcdf").load()
    except (OSError, ValueError) as exc:
        raise BayesCMMAError(f"cannot read the joint posterior {path} ({exc}); rerun the fit.") from exc


def load_fit_dir(fit_dir: str | Path) -> ReportInputs:
    """Read a folder written by ``bayes-cmma fit``/``demo`` into :class:`ReportInputs`."""
    folder = Path(fit_dir)
    if not folder.is_dir():
        raise BayesCMMAError(f"{folder} is not a folder; give the --out folder of `bayes-cmma fit` or `demo`.")
    from bayes_cmma.reporting.outputs import recover

    recover(folder)  # a fit interrupted while moving its files in: finish it, never read a mix of two runs
    run_path = folder / RUN_FILE
    if not run_path.exists():
        raise BayesCMMAError(
            f"{folder} has no {RUN_FILE}; it was not written by `bayes-cmma fit`/`demo` of this version. "
            "Rerun the fit to produce it."
        )
    try:
        run = json.loads(run_path.read_text())
        kpi, metrics = str(run["kpi"]), [str(m) for m in run["metrics"]]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise BayesCMMAError(f"{run_path} is not a valid run record ({exc}); rerun the fit.") from exc
    trees = {}
    for m in metrics:
        path = folder / f"{m}.nc"
        if not path.exists():
            raise BayesCMMAError(f"{path} is missing: the fit of metric {m!r} is not in {folder}; rerun the fit.")
        try:
            trees[m] = xr.open_datatree(path, engine="h5netcdf").load()
        except (OSError, ValueError) as exc:
            raise BayesCMMAError(f"cannot read the posterior {path} ({exc}); rerun the fit.") from exc

    def table(name: str) -> pd.DataFrame | None:
        p = folder / name
        return pd.read_csv(p) if p.exists() else None

    ranking = None
    if run.get("joint") and run.get("at") and run.get("kpi_baseline") is not None:
        path = folder / JOINT_FILE
        if not path.exists():
            raise BayesCMMAError(f"{path} is missing: the run ranked from the joint model (fit --joint); rerun the "
                                 "fit.")
        ranking = joint_ranking(read_joint(path), run["at"], float(run.get("lift", 0.1)),
                                float(run["kpi_baseline"]))
    return ReportInputs(trees=trees, kpi=kpi, at=run.get("at") or None, lift=float(run.get("lift", 0.1)),
                        baseline=run.get("kpi_baseline"), ols=table("ols.csv"),
                        assumptions=table("assumptions.csv"), extra={"run": run}, ranking=ranking,
                        northstar=table(NORTHSTAR_FILE), more_trials=table(MORE_TRIALS_FILE),
                        decision_value=table(DECISION_VALUE_FILE), fusion=table(FUSION_FILE))


def _img(fig: Figure, alt: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>'


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, border=0, classes="t", float_format=_fmt, escape=True)


def _answer(inp: ReportInputs, ranked: tuple[xr.DataArray, xr.Dataset] | None = None) -> tuple[str, list[str]]:
    """The opening section and the warnings it implies (``ranked``: :func:`_ranked`, when computed)."""
    warn: list[str] = []
    ranked = _ranked(inp) if ranked is None else ranked
    if ranked is None:
        return ("<p>No current metric values were given (<code>--at METRIC=VALUE</code>), so there is no "
                "elasticity and no ranking; the dose-response functions below are still valid.</p>", warn)
    el, ranking = ranked
    pct = f"{100 * CI_PROB:g}"
    rows = []
    for m in inp.trees:
        d = el.sel({dims.METRIC: m}).values.ravel()
        lo, hi = np.quantile(d, [(1 - CI_PROB) / 2, (1 + CI_PROB) / 2])
        rows.append({"metric": m, "current value": float(inp.at[m]), "elasticity (mean)": d.mean(),
                     f"{pct}% lower": lo, f"{pct}% upper": hi,
                     "P(best)": float(ranking["p_best"].sel({dims.METRIC: m})),
                     "E[rank]": float(ranking["expected_rank"].sel({dims.METRIC: m})),
                     "expected regret": float(ranking["expected_regret"].sel({dims.METRIC: m}))})
    table = pd.DataFrame(rows).sort_values("E[rank]")
    best = table.iloc[0]
    base = "the KPI's own level mu(m)" if inp.baseline is None else f"a {inp.kpi} baseline of {inp.baseline:g}"
    strength = ("The data single it out clearly." if best["P(best)"] >= 0.9 else
                "It is the best bet, but the ranking is uncertain: weigh the other metrics too."
                if best["P(best)"] >= 0.5 else
                "No metric is a clear winner: the ranking is uncertain.")
    if best["P(best)"] < 0.5:
        warn.append(f"No metric has P(best) above 0.5 (the highest: {best['metric']}, {best['P(best)']:.2f}); "
                    "more trials or a stronger metric signal are needed to choose confidently.")
    name = html.escape(best["metric"])
    text = (f'<div class="answer"><p class="big">Recommended north-star metric: <b>{name}</b></p>'
            f"<p>Raising {html.escape(best['metric'])} by {100 * inp.lift:g}% from its current value "
            f"{_fmt(best['current value'])} raises {html.escape(inp.kpi)} by an elasticity of "
            f"<b>{_fmt(best['elasticity (mean)'])}</b> ({pct}% credible interval {_fmt(best[f'{pct}% lower'])} "
            f"to {_fmt(best[f'{pct}% upper'])}; gain relative to {html.escape(base)}). "
            f"P(best) = <b>{best['P(best)']:.2f}</b>. {strength}</p>"
            f"<p>{html.escape(_pairing_sentence(ranking))}</p></div>{_table(_two_decimals(table))}")
    return text, warn


def _elasticities(inp: ReportInputs) -> xr.DataArray:
    """The separate fits' elasticity draws (metric, chain, draw) at the current values."""
    parts = [derived.elasticity(t["posterior"]["beta"], float(inp.at[m]), lift=inp.lift, baseline=inp.baseline)
             for m, t in inp.trees.items()]
    return derived.stack_metrics(parts, list(inp.trees))


def _ranked(inp: ReportInputs) -> tuple[xr.DataArray, xr.Dataset] | None:
    """The separate fits' elasticity draws and the ranking the report shows, or None without levels."""
    if not inp.at or any(m not in inp.at for m in inp.trees):
        return None
    el = _elasticities(inp)
    return el, derived.rank_metrics(el) if inp.ranking is None else inp.ranking


def _p_best(inp: ReportInputs, ranked: tuple[xr.DataArray, xr.Dataset] | None) -> dict[str, float] | None:
    """Each metric's P(best) as the answer shows it, or None when there is no ranking."""
    if ranked is None or len(inp.trees) < 2:
        return None
    ranking = ranked[1]
    return {str(m): float(v) for m, v in zip(ranking[dims.METRIC].values, ranking["p_best"].values, strict=True)}


def _pairing_sentence(ranking: xr.Dataset) -> str:
    """What produced the ranking's draws (the joint model, or separate fits paired as if independent)."""
    if ranking.attrs.get("pairing") == "joint":
        prior = ranking.attrs.get("elasticity_prior", "pooled")
        latent = {"lkj": ", one LKJ prior over the KPI's and metrics' correlation",
                  "wishart": ", an inverse-Wishart prior over the KPI's and metrics' covariance"}.get(
            str(ranking.attrs.get("latent_prior")), "")
        text = (f"The ranking comes from one joint model of every metric ({prior} elasticity prior{latent}; "
                "docs: model.md, 'The joint model'); the elasticity columns are the separate fits'.")
        if "p_tie" in ranking.attrs:
            text += (f" Under the tie prior the probability that the metrics' elasticities are equal is "
                     f"{ranking.attrs['p_tie']:.2f} (prior {ranking.attrs['prior_p_tie']:.2f}); a tie shares "
                     "P(best) equally, so P(best) near 1/J means the trials cannot tell the metrics apart (docs: "
                     "model.md, 'Ties between metrics').")
        if ranking.attrs.get("observational_bias_sd"):
            text += (f" Its slopes borrow from the observational slopes of the logs "
                     f"({ranking.attrs['observational_slopes']}) as far as the trials agree; the learned bias sd "
                     f"(posterior median, per metric) is {ranking.attrs['observational_bias_sd']}: small against "
                     "the slope means the fit borrowed, large means the trials decided (docs: model.md, 'Borrowing "
                     "from observational data').")
        return text
    return ("The ranking pairs the separate per-metric fits' draws as if independent; their errors are "
            "correlated, and on near ties that overstates P(best) (docs: checks.md); fit --joint ranks from one "
            "joint model.")


def _two_decimals(table: pd.DataFrame) -> pd.DataFrame:
    """Probabilities and ranks as 0.00 (never a bare 0 beside 0.934)."""
    out = table.copy()
    for column in ("P(best)", "E[rank]"):
        out[column] = out[column].map(lambda x: f"{x:.2f}")
    return out


def _warnings(inp: ReportInputs, influential: dict[str, list[tuple[str, float]]],
              tables: dict[str, pd.DataFrame]) -> list[str]:
    out = []
    for m, tree in inp.trees.items():
        for p in problems(tree, tables[m]):
            out.append(f"{m} model: {p}")
        if influential.get(m):
            out.append(checking.pareto_k_message(m, influential[m]))
    if inp.assumptions is not None and "weak" in inp.assumptions:
        for _, r in inp.assumptions[inp.assumptions["weak"].astype(bool)].iterrows():
            out.append(f"{r['metric']}: assumption A4 looks weak (Cochran's Q p = {r['p_value']:.2g}, "
                       f"I^2 = {r['i2']:.2f}): trials barely move the metric differently within teams, so its "
                       "dose-response is driven by the prior. Do not rely on its elasticity.")
    degree = next(iter(inp.trees.values()))["posterior"].sizes[dims.POWER]
    if degree == 1 and inp.baseline is None:
        out.append("With a linear DRF and baseline mu(m), the elasticity equals the lift for every metric and "
                   "cannot rank them; give a KPI baseline or a higher degree.")
    return out


def _coefficients(inp: ReportInputs) -> str:
    """Bayesian DRF coefficients beside the paper's OLS, per metric."""
    pct = f"{100 * CI_PROB:g}"
    rows = []
    for m, tree in inp.trees.items():
        beta = tree["posterior"]["beta"]
        ols = inp.ols[inp.ols["metric"] == m] if inp.ols is not None else None
        for p in beta[dims.POWER].values:
            d = beta.sel({dims.POWER: p}).values.ravel()
            lo, hi = np.quantile(d, [(1 - CI_PROB) / 2, (1 + CI_PROB) / 2])
            row = {"metric": m, "coefficient": f"beta_{p}", "Bayes mean": d.mean(),
                   f"Bayes {pct}% interval": f"[{_fmt(lo)}, {_fmt(hi)}]"}
            if ols is not None and len(ols) >= len(beta[dims.POWER]):
                o = ols.iloc[len(ols) - len(beta[dims.POWER]) + int(p) - 1]
                row["OLS estimate"] = o["estimate"]
                row["OLS 95% CI"] = f"[{_fmt(o['ci95_lower'])}, {_fmt(o['ci95_upper'])}]"
            rows.append(row)
    return _table(pd.DataFrame(rows))


def _diagnostics_table(table: pd.DataFrame) -> str:
    t = table.reset_index()
    keep = t["parameter"].str.match(r"^(beta|metric_sd|residual_sd|pi_mean|pi_sd)")
    cols = {"parameter": "parameter", "mean": "posterior mean", "sd": "posterior sd", "ess_bulk": "ESS (bulk)",
            "ess_tail": "ESS (tail)", "r_hat": "R-hat"}
    return _table(t.loc[keep, list(cols)].rename(columns=cols))


def _assumptions_table(frame: pd.DataFrame) -> str:
    """assumptions.csv with the labels a reader expects (not the CSV's column names)."""
    pct = f"{100 * CI_PROB:g}"
    labels = {"metric": "metric", "cochran_q": "Cochran's Q", "df": "df", "p_value": "p-value", "f_stat": "F = Q/df",
              "i2": "I\u00b2", "weak": "weak?", "reliability_mean": "posterior reliability (mean)",
              f"reliability_eti{pct}_lower": f"reliability, {pct}% lower",
              f"reliability_eti{pct}_upper": f"reliability, {pct}% upper"}
    shown = frame[[c for c in labels if c in frame.columns]].rename(columns=labels)
    if "weak?" in shown:
        shown["weak?"] = shown["weak?"].map({True: "yes", False: "no"}).fillna(shown["weak?"])
    return _table(shown)


def _team_effects_note(trees: dict[str, xr.DataTree]) -> str:
    """Per metric: the team-effects parametrization asked for (spec) and the one used, with the reason."""
    parts = []
    for m, tree in trees.items():
        asked = json.loads(tree.attrs.get("model_spec", "{}")).get("team_effects", "auto")
        used = str(tree.attrs.get("team_effects", "not recorded"))
        parts.append(f"{m}: team_effects: {asked} -> {used}")
    return "; ".join(parts)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
.answer{background:#eef5ff;border-left:5px solid #2b6cb0;padding:.6em 1em;margin:1em 0}
.big{font-size:1.3em;margin:.2em 0}.warn{background:#fff6e5;border-left:5px solid #d69e2e;padding:.5em 1em}
.ok{background:#eefaf0;border-left:5px solid #38a169;padding:.5em 1em}
table.t{border-collapse:collapse;margin:.6em 0;font-size:.9em}table.t td,table.t th{padding:.25em .7em;
border-bottom:1px solid #eee;text-align:right}table.t th{background:#f6f6f6}
figure{margin:.8em 0}img{max-width:100%}nav.toc{background:#f8f8f8;padding:.5em 1em;margin:1em 0}
nav.toc ol{margin:.3em 0;columns:2}details{margin:.6em 0}summary{cursor:pointer;font-weight:600}
pre{background:#f6f6f6;padding:.8em;overflow-x:auto;font-size:.85em}
"""


def render_report(inp: ReportInputs) -> str:
    """The report as one HTML string (figures embedded; no network references).

    The linear-DRF elasticity warning (:class:`AssumptionWarning`) is not raised again for each
    figure: the report's own Warnings section states it.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AssumptionWarning)
        return _render(inp)


def _render(inp: ReportInputs) -> str:
    trees = as_trees(inp.trees)
    first = next(iter(trees.values()))
    ranked = _ranked(inp)  # once, for the answer and the decision-value section
    answer, warn = _answer(inp, ranked)
    # once per metric, for the warnings and the k plot (or the caller's, e.g. the CLI's)
    given = inp.loo or {}
    loos = {m: given[m] if given.get(m) is not None else checking.loo(t) for m, t in trees.items()}
    influential = {m: checking.influential_trials(r) for m, r in loos.items()}
    given_tables = inp.summaries or {}
    tables = {m: given_tables[m] if given_tables.get(m) is not None else summary_table(t) for m, t in trees.items()}
    warn = warn + _warnings(inp, influential, tables)
    esc = html.escape
    sections: list[tuple[str, str]] = []

    def h2(anchor: str, title: str) -> str:
        sections.append((anchor, title))
        return f'<h2 id="{anchor}">{esc(title)}</h2>'

    head = [f"<h1>Which metric moves {esc(inp.kpi)}? bayes_cmma report</h1>",
            f"<p>Bayesian causal meta-mediation analysis of {first['observed_data'].sizes[dims.TRIAL]} trials, "
            f"metrics {esc(', '.join(trees))}, degree-{first['posterior'].sizes[dims.POWER]} dose-response. "
            f"Intervals are equal-tailed {100 * CI_PROB:g}% posterior intervals.</p>"]
    body = [h2("answer", "The answer"), answer, h2("warnings", "Warnings")]
    if warn:
        body.append('<div class="warn"><ul>' + "".join(f"<li>{esc(w)}</li>" for w in warn) + "</ul></div>")
    else:
        body.append('<div class="ok">No warnings: chains converged (R-hat, ESS, no divergences), '
                    "PSIS-LOO is reliable for every trial, and assumption A4's check passed.</div>")
    body += [h2("drf", "Dose-response functions"),
             "<p>Each trial's ATEs (metric against KPI, bars: 1 standard error) with the posterior DRF plus "
             "the average team direct effect (bands: 50% and 94%), and the naive OLS line through the points "
             "that ignores measurement error and teams.</p>", _img(plots.drf_panel(trees), "DRF panels")]
    if inp.at and all(m in inp.at for m in trees):
        body += [h2("elasticity", "Elasticity"), _img(plots.elasticity_panel(trees, inp.at, inp.lift, inp.baseline),
                                              "elasticity panels"),
                 h2("ranking", "Ranking"),
                 _img(plots.ranking_plot(trees, inp.at, inp.lift, inp.baseline, ranking=inp.ranking), "ranking")]
    if inp.decision_value is not None:
        body += [h2("decision-value", "A model-free check: the decision value of each metric"),
                 _decision_value_section(inp.decision_value, inp.kpi, _p_best(inp, ranked))]
    if inp.fusion is not None:
        body += [h2("fusion", "Leaning on the logs: decision-focused fusion"), _fusion_section(inp.fusion, inp.kpi)]
    if inp.more_trials is not None:
        body += [h2("more-trials", "The value of more trials"), _more_trials_section(inp.more_trials)]
    if inp.northstar is not None:
        body += [h2("northstar", "The best composite north star"), _northstar_section(inp.northstar, inp.kpi)]
    body += [h2("ols", "The paper's OLS beside the Bayesian estimate"),
             "<p>OLS is the CMMA estimator of Wang et al. (KDD 2020, Algorithm 1). It ignores the "
             "measurement error of the trials' ATEs and its correlation with the KPI's, so with noisy trials it "
             "is biased and its intervals are too narrow (the paper's Table 1: 67% coverage at 200 units per "
             "trial).</p>", _coefficients(inp)]
    if inp.assumptions is not None:
        body += [h2("assumption-a4", "Assumption A4: do trials move the metric differently within teams?"),
                 _assumptions_table(inp.assumptions)]
    body.append(h2("checks", "Model checks"))
    for m, tree in trees.items():
        body += [f"<h3>{esc(m)}</h3>", _img(plots.ppc_plot(tree), f"{m} posterior predictive check"),
                 _img(plots.pareto_k_plot(tree, loo=loos[m]), f"{m} Pareto k"),
                 _img(plots.shrinkage_plot(tree), f"{m} shrinkage"),
                 _img(plots.team_forest(tree), f"{m} team effects")]
    body.append(h2("diagnostics", "Sampler diagnostics"))
    for m, tree in trees.items():  # long: collapsed until the reader opens it
        body += [f"<details><summary>{esc(m)}: {divergences(tree)} divergent transitions, R-hat, ESS, trace and "
                 "rank plots</summary>", _diagnostics_table(tables[m]),
                 _img(plots.trace_plot(tree), f"{m} trace and rank plots"), "</details>"]
    attrs = first.attrs
    spec = json.dumps(json.loads(attrs.get("model_spec", "{}")), indent=2)
    versions = json.dumps(json.loads(attrs.get("bayes_cmma_versions", "{}")), indent=2)
    body += [h2("spec", "Model specification and versions"),
             f"<p>Seed {esc(str(attrs.get('seed', '?')))}; input data SHA-256 "
             f"<code>{esc(str(attrs.get('data_sha256', '?')))}</code>; fitted {esc(str(attrs.get('created_at', '?')))}."
             f" Measurement covariance: {esc(str(attrs.get('measurement', 'as reported, per trial')))}."
             f" Team effects: {esc(_team_effects_note(trees))}."
             "</p>", f"<pre>{html.escape(spec, quote=False)}</pre>", f"<pre>{html.escape(versions, quote=False)}</pre>"]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>bayes_cmma report: {esc(inp.kpi)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join([*head, _toc(sections), *body]) + "\n</body></html>\n")


def _more_trials_section(frame: pd.DataFrame) -> str:
    """How K_new more trials like the past ones would change the choice."""
    from bayes_cmma.decisions.more_trials import TIE_NOTE, trials_needed_sentence, under_tie_prior

    target = float(frame["target"].iloc[0])
    needed = trials_needed_sentence(frame)
    table = pd.DataFrame({"new trials": frame["new_trials"], "trials in all": frame["total_trials"],
                          "P(choice truly best)": frame["p_correct"].map("{:.2f}".format),
                          "expected regret": frame["expected_regret"].map("{:.3g}".format),
                          "expected P(best) of the choice": frame["expected_p_best"].map("{:.2f}".format),
                          f"P(P(best) >= {target:g})": frame["p_confident"].map("{:.2f}".format)})
    return ("<p>A preposterior analysis: the true elasticities are drawn from today's posterior, the estimate "
            "from K_new more trials like the past ones is simulated with the posterior's covariance scaled by "
            "K / K_new, and the metric with the largest updated mean is chosen. It inherits the calibration of "
            "today's P(best): where that is overconfident (near ties, see the documentation's checks), so are "
            f"these numbers. {html.escape(TIE_NOTE) + ' ' if under_tie_prior(frame) else ''}{html.escape(needed)}</p>"
            + _img(plots.more_trials_plot(frame), "value of more trials") + _table(table))


def _decision_value_section(frame: pd.DataFrame, kpi: str, p_best: dict[str, float] | None) -> str:
    """The trials' own estimate of each north star's decision value, beside the model's P(best)."""
    rows = frame.sort_values("value", ascending=False)
    table = pd.DataFrame({
        "north star": rows["candidate"],
        f"{kpi} effect collected per trial (95% CI)": [
            f"{r.value:.3g} [{r.ci_lower:.3g}, {r.ci_upper:.3g}]" for r in rows.itertuples()],
        "trials launched": rows["launch_rate"].map("{:.0%}".format),
        "difference from the best (se)": [
            "best" if r.difference == 0 else f"{r.difference:+.2g} ({r.difference_se:.2g})" for r in rows.itertuples()],
    })
    agree = ""
    if p_best is not None:
        table["model's P(best)"] = [f"{p_best[c]:.2f}" if c in p_best else "" for c in rows["candidate"]]
        metrics = rows[rows["kind"] == "metric"]
        top_value = str(metrics["candidate"].iloc[0])
        top_model = max(p_best, key=p_best.get)
        agree = (f" Here both put {html.escape(top_model)} first." if top_value == top_model else
                 f" Here they differ: the model ranks {html.escape(top_model)} first, the trials' decision value "
                 f"{html.escape(top_value)}; look at the difference's standard error before reading much into it.")
    factor = frame["measurement_variance_factor"].iloc[0] if "measurement_variance_factor" in frame else 2.0
    return ("<p>How much true " + html.escape(kpi) + " effect per trial a team collects by launching a trial's "
            "treatment when the north star's ATE is positive, estimated from the trials alone, without the "
            "model: decisions on held-out trials (cross-fitted composite weights) are scored with those trials' "
            "KPI ATEs after data fission, which removes the bias of scoring a metric with KPI estimates whose "
            f"errors correlate with its own (the decisions see {factor:g} times today's measurement variance). "
            "The model's P(best) ranks the metrics by elasticity at their current levels; the decision value by "
            "how well their movements pick trials that raise the KPI. They answer related questions, so "
            "agreement is reassuring and disagreement worth a look." + agree
            + " docs: model.md, 'Decision value from the trials'.</p>" + _table(table))


def _strength(lam: float) -> str:
    return "inf (the logs alone)" if np.isinf(lam) else ("0 (the trials alone)" if lam == 0 else f"{lam:.3g}")


def _fusion_section(frame: pd.DataFrame, kpi: str) -> str:
    """How far the composite launch rule leans on the logs' partial slopes, and what each strength collects."""
    metrics = [c.removeprefix("weight_") for c in frame.columns if c.startswith("weight_")]
    slopes = ", ".join(f"{html.escape(m)} {frame[f'observational_slope_{m}'].iloc[0]:.3g}" for m in metrics)
    chosen = frame[frame["chosen"]].iloc[0]
    lam = float(chosen["fusion_strength"])
    share = 1.0 if np.isinf(lam) else lam / (1.0 + lam)
    d2, J = float(frame["disagreement"].iloc[0]), len(metrics)
    if J == 2:
        how = ("With 2 metrics Stein's rule keeps the trials alone (it shrinks only in 3 or more dimensions); the "
               "table shows what leaning on the logs would collect.")
    elif np.isfinite(d2):
        how = (f"The logs disagree with the trials by D<sup>2</sup> = {d2:.3g} in units of the trials' own noise "
               f"(about {J} if the logs were right). The chosen strength {_strength(lam)} borrows "
               f"{share:.0%} of the logs' cross-moment"
               + (" (Stein's share min(1, (J - 2)/D<sup>2</sup>) when chosen by Stein's rule)." if lam > 0 else "."))
    else:
        how = f"The chosen strength is {_strength(lam)}."
    rows = pd.DataFrame({
        "fusion strength": [_strength(v) + (" (chosen)" if c else "") for v, c in
                            zip(frame["fusion_strength"], frame["chosen"], strict=True)],
        f"{kpi} effect collected per trial (se)": [f"{v:.3g} ({s:.2g})" for v, s in
                                                  zip(frame["value"], frame["std_error"], strict=True)],
        "vs the trials alone (se)": [f"{d:+.2g} ({s:.2g})" for d, s in
                                     zip(frame["difference"], frame["difference_se"], strict=True)],
        "trials launched": frame["launch_rate"].map("{:.0%}".format),
        **{f"weight of {m}": frame[f"weight_{m}"].map("{:+.3f}".format) for m in metrics},
    })
    return ("<p>The unit-level logs' partial slopes of " + html.escape(kpi) + " on every metric at once ("
            + slopes + ") are plentiful but confounded; the trials are unbiased but few. The launch rule "
            "(launch when the composite w'ATE is positive) takes its weights from the trials' cross-moment, pulled "
            "towards the logs' by a fusion strength (0: the trials alone, inf: the logs alone). " + how
            + " The values are cross-fitted and fission-scored on these trials; the chosen row's value is "
            "optimistic when it was chosen for being high, which Stein's rule (the default) avoids by not choosing "
            "on the value. docs: model.md, 'Decision-focused fusion'.</p>" + _table(rows))


def _northstar_section(frame: pd.DataFrame, kpi: str) -> str:
    """Weights of the best composite per future trial size, and how it scores against each metric."""
    criterion = str(frame["criterion"].iloc[0]) if "criterion" in frame else "sign"
    what = (f"the probability that its observed ATE has the sign of the trial's true {kpi} effect"
            if criterion == "sign" else f"the correlation of its observed ATE with the trial's true {kpi} effect")
    rows = []
    for size, g in frame.groupby("future_size", sort=True):
        comp = g[g["candidate"] == "composite"].iloc[0]
        singles = g[g["candidate"] != "composite"]
        best = singles.loc[singles["score_mean"].idxmax()]
        n = g["n_per_arm"].iloc[0]
        rows.append({"future trial size": f"{size:.3g}" + (f" ({n:,.0f} per arm)" if np.isfinite(n) else ""),
                     **{f"weight of {r['candidate']}": format_weights(r.to_frame().T) for _, r in singles.iterrows()},
                     **({"relative to the leading metric": format_weights(singles, relative=True)
                         + f" (per {g['lead'].iloc[0]} = 1)"} if "lead" in g else {}),
                     "score of the composite": f"{comp['score_mean']:.3f} [{comp['score_lower']:.3f}, "
                                               f"{comp['score_upper']:.3f}]",
                     "best single metric": f"{best['candidate']}: {best['score_mean']:.3f}",
                     "P(composite scores higher)": f"{best['p_composite_better']:.2f}"})
    table = pd.DataFrame(rows)
    return (f"<p>Weights over the metrics' ATEs whose sum, for a future trial of the given size (1 = a median past "
            f"trial; its measurement noise scales as 1/size), maximises {html.escape(what)}, computed per draw of "
            "the joint posterior (so the weights have intervals). The weights apply to each metric's ATE in units of "
            "its sd across the past trials and have unit length (sum of squares 1); divide by the "
            "<code>scale</code> column of <code>northstar.csv</code> for the ATEs as reported. Their intervals are "
            "highest-density intervals: a unit-length weight near 1 has a posterior piled up against 1, which an "
            "equal-tailed interval never reaches. The same direction "
            "relative to the leading metric (its weight set to 1; median and equal-tailed interval) is free of the "
            "unit-length constraint, which pulls a weight near 1 downwards. "
            "Noisier future trials favour metrics measured with less noise. The figure and "
            "<code>northstar.csv</code> also give each metric's own score.</p>"
            + _img(plots.northstar_plot(frame, criterion, kpi), "composite north star")
            + _table(table))


def _toc(sections: list[tuple[str, str]]) -> str:
    items = "".join(f'<li><a href="#{anchor}">{html.escape(title)}</a></li>' for anchor, title in sections)
    return f'<nav class="toc"><b>Contents</b><ol>{items}</ol></nav>'



def write_report(fit_dir: str | Path, out: str | Path | None = None) -> Path:
    """Render the report of a fit folder and write it atomically (default ``FIT_DIR/report.html``)."""
    from bayes_cmma.reporting.outputs import write_files_atomically

    target = Path(out) if out is not None else Path(fit_dir) / "report.html"
    text = render_report(load_fit_dir(fit_dir))
    write_files_atomically({target: lambda p: Path(p).write_text(text, encoding="utf-8")})
    return target
