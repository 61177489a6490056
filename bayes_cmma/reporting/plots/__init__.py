"""Figures (matplotlib, no pyplot): each function takes results, never samples, returns a Figure.

Save with ``fig.savefig(path)``; in a notebook, a returned Figure displays itself.

============================  ===============================================================
function                      shows
============================  ===============================================================
:func:`drf_panel`             trials' ATEs, posterior DRF with 50%/94% bands, naive OLS fit
:func:`elasticity_panel`      posterior elasticity against the metric value, current value
:func:`ranking_plot`          elasticity posteriors at the current values, P(rank) heat map
:func:`team_forest`           team direct effects pi with the pooled mean
:func:`ppc_plot`              posterior predictive ellipses and PIT histograms
:func:`pareto_k_plot`         PSIS-LOO Pareto k per trial, worst trials labelled
:func:`shrinkage_plot`        observed ATE vs posterior mean of the true effect
:func:`trace_plot`            trace and rank plots of the global parameters
:func:`sbc_rank_histograms`   simulation-based calibration ranks
:func:`sensitivity_plot`      the A3 sensitivity sweep
:func:`northstar_plot`        the best composite's weights and scores against the future trial size
:func:`more_trials_plot`      P(correct choice) and expected regret against the number of new trials
============================  ===============================================================
"""

from bayes_cmma.reporting.plots.checks import pareto_k_plot, ppc_plot, shrinkage_plot, trace_plot
from bayes_cmma.reporting.plots.northstar import more_trials_plot, northstar_plot
from bayes_cmma.reporting.plots.results import drf_panel, elasticity_panel, ranking_plot, team_forest
from bayes_cmma.reporting.plots.trust import sbc_rank_histograms, sensitivity_plot

__all__ = [
    "drf_panel",
    "elasticity_panel",
    "more_trials_plot",
    "northstar_plot",
    "pareto_k_plot",
    "ppc_plot",
    "ranking_plot",
    "sbc_rank_histograms",
    "sensitivity_plot",
    "shrinkage_plot",
    "team_forest",
    "trace_plot",
]
