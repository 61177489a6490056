# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Choosing a north-star metric with bayes_cmma
#
# **Question.** We ran many A/B tests on search ranking. Each reports its effect (ATE) on the
# business KPI, gross merchandise value per user (`gmv`), and on three online metrics: NDCG, MRR and
# MAP. Which metric should guide algorithm work, because raising it raises `gmv` most?
#
# **Method.** Causal meta-mediation analysis (Wang, Yin, Li and Hong, KDD 2020) treats each trial
# as an instrument: trials move the metric by different amounts, and how the KPI moves with them
# traces out the dose-response function (DRF) mu(m) of the KPI in the metric. bayes_cmma fits it
# as a hierarchical Bayesian model that takes each trial's ATEs as noisy measurements (with their
# standard errors and covariances), pools the teams' direct effects, and reports the elasticity of
# the KPI to each metric with honest uncertainty and the posterior probability that each metric
# is the best one.
#
# This notebook runs end to end on the example data shipped with the package (simulated so that
# the truth is known: only NDCG acts on `gmv`; MRR and MAP are correlated proxies).
#
# Set `BAYES_CMMA_NOTEBOOK_FAST=1` for a quick run with short chains (how CI executes it).

# %%
import os

# %matplotlib inline
import numpy as np
import pandas as pd

import bayes_cmma as bc
from bayes_cmma.checks.compare import compare_degrees
from bayes_cmma.reporting import plots
from bayes_cmma.reporting.report import ReportInputs, render_report

FAST = os.environ.get("BAYES_CMMA_NOTEBOOK_FAST") == "1"
SAMPLER = {"draws": 300, "tune": 300, "chains": 2} if FAST else {}
pd.set_option("display.precision", 4)

# %% [markdown]
# ## 1. The data: one row per trial and quantity
#
# The trial table has the ATE and standard error of every quantity in every trial: the KPI, and
# each metric with its powers (`ndcg^2`, `ndcg^3`) needed for a polynomial DRF. A covariance table
# adds the within-trial covariances of the estimates (the summarizer computes both from unit
# logs: `bayes-cmma summarize`).

# %%
ex = bc.load_example()
trials = ex.trials
print(f"{len(trials.trials)} trials in {len(trials.teams)} teams; KPI {ex.kpi!r}; metrics {ex.metrics}")
print("current metric levels (control-arm means):", ex.at, "| KPI baseline:", ex.kpi_baseline)
trials.dataset[["estimate", "std_error"]].to_dataframe().dropna().head(8)

# %% [markdown]
# ## 2. Is the design informative? Assumption A4
#
# The analysis needs trials that move each metric by different amounts *within* a team (A4, like
# instrument relevance). Cochran's Q tests whether the metric ATEs vary beyond their sampling
# error; I^2 is the share of their spread that is real. When the check is weak, bayes_cmma warns:
# the DRF would then be driven by the prior.

# %%
pd.DataFrame([bc.relevance_check(bc.metric_design(trials, ex.kpi, m, 2)).to_dict() for m in ex.metrics])

# %% [markdown]
# ## 3. The paper's estimator, for reference
#
# CMMA's OLS (Algorithm 1) regresses the trials' KPI ATEs on their metric ATEs with team
# effects. It ignores the measurement error of the metric ATEs (and its correlation with the
# KPI's), so with noisy trials its slope is biased and its intervals are too narrow.

# %%
pd.concat({m: bc.cmma_ols(trials, ex.kpi, m, 2).coefficient_table() for m in ex.metrics}, names=["metric"])

# %% [markdown]
# ## 4. The Bayesian fit
#
# One model per metric (quadratic DRF, the example's true shape). The three models share one
# compiled PyMC model, so only the first fit pays the compilation.

# %%
result = bc.fit(trials, ex.kpi, ex.metrics, model="quadratic", seed=1, **SAMPLER)
bc.summary_table(result["ndcg"].posterior).loc[lambda t: t.index.str.match(r"beta|residual_sd|pi_")]

# %% [markdown]
# Convergence first: R-hat near 1, large effective sample sizes, and chains that overlap in the
# trace and have flat rank histograms.

# %%
plots.trace_plot(result["ndcg"])

# %% [markdown]
# ## 5. Dose-response against the trials
#
# Each point is a trial (bars: one standard error). The blue curve is the posterior DRF (plus the
# average team direct effect, since the DRF has no intercept), with 50% and 94% bands. The red
# dashed line is the naive fit through the points, which the paper warns against: it ignores that
# both coordinates are noisy and that teams differ.

# %%
plots.drf_panel(result)

# %% [markdown]
# ## 6. The answer: elasticity and ranking
#
# Elasticity: the relative gain in `gmv` from a 10% lift of the metric from its current level,
# here relative to the KPI baseline. The ranking compares the metrics draw by draw.

# %%
plots.elasticity_panel(result, ex.at, lift=0.1, baseline=ex.kpi_baseline)

# %%
ranking = result.ranking(ex.at, lift=0.1, baseline=ex.kpi_baseline)
ranking[["p_best", "expected_rank", "expected_regret", "elasticity_mean"]].to_dataframe()

# %%
plots.ranking_plot(result, ex.at, lift=0.1, baseline=ex.kpi_baseline)

# %%
best = str(ranking["metric"].values[int(np.argmax(ranking["p_best"].values))])
print(f"Recommended north-star metric: {best} (P(best) = {float(ranking['p_best'].max()):.2f})")

# %% [markdown]
# ## 7. Model checks
#
# Does the model reproduce the data? The posterior predictive check overlays each trial's
# observed ATE pair on its 94% predictive ellipse (about 94% should fall inside) and shows PIT
# values (roughly uniform if the model fits). Pareto k flags trials the model finds surprising or
# that dominate the fit. The shrinkage plot shows how measurement error pulls noisy trials toward
# their team, and the forest plot shows the teams' direct effects.

# %%
plots.ppc_plot(result["ndcg"])

# %%
plots.pareto_k_plot(result["ndcg"])

# %%
plots.shrinkage_plot(result["ndcg"])

# %%
plots.team_forest(result["ndcg"])

# %% [markdown]
# ## 8. Which degree?
#
# The example's true DRF is quadratic. `compare_degrees` fits each degree to the same numbers
# and compares them by leave-one-trial-out predictive accuracy (PSIS-LOO, with exact refits for
# trials where the approximation is unreliable). It recommends the simplest degree that predicts
# held-out trials as well as the best one, and reports each model's top coefficient.

# %%
cmp = compare_degrees(trials, ex.kpi, "ndcg", [1, 2] if FAST else [1, 2, 3], seed=1,
                      max_refits=3 if FAST else 20, **SAMPLER)
print(cmp)
cmp.top_coefficient

# %% [markdown]
# ## 9. A report to hand on
#
# `bayes-cmma fit ... --out DIR` writes `DIR/report.html`; from a notebook, render it from the
# result. The file is self-contained (figures embedded, no network access needed).

# %%
page = render_report(ReportInputs(trees={m: f.posterior for m, f in result.fits.items()}, kpi=ex.kpi,
                                  at=ex.at, lift=0.1, baseline=ex.kpi_baseline))
with open("north_star_report.html", "w", encoding="utf-8") as fh:
    fh.write(page)
print(f"report: north_star_report.html ({len(page) / 1e6:.1f} MB)")
