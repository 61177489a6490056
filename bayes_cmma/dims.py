"""The contract of dimension names used across every module boundary.

=================  ==============================================================================
dim                meaning
=================  ==============================================================================
``trial``          one A/B test (its label is the ``trial`` column of the trial table)
``team``           the group that ran the trial (``team`` column); one level ``"all"`` if absent
``quantity``       a row of the trial table for one trial: the KPI or a metric power (``ndcg^2``)
``quantity_other`` the second index of a within-trial covariance matrix (same labels as ``quantity``)
``power``          the power p = 1..P of the polynomial dose-response function
``power_other``    the second index of the between-trial correlation of latent metric effects
``metric``         a candidate north-star metric (``ndcg``, ``mrr``, ...)
``metric_other``   the second index of the joint model's between-trial correlation of the metrics
``grid``           a point of the metric-value grid on which the DRF/elasticity are evaluated
``rank``           a rank 1..n_metrics (1 = largest elasticity)
``future_size``    a future trial's size relative to a median past trial (the composite north star)
``new_trials``     a number of new trials in the value-of-more-trials analysis (0 = today)
``candidate``      a candidate north star in the decision-value estimate (a metric, a composite, a reference)
``chain``/``draw`` posterior sample dims, as in ArviZ
=================  ==============================================================================
"""

TRIAL = "trial"
TEAM = "team"
QUANTITY = "quantity"
QUANTITY_OTHER = "quantity_other"
POWER = "power"
POWER_OTHER = "power_other"
METRIC = "metric"
METRIC_OTHER = "metric_other"
GRID = "grid"
RANK = "rank"
FUTURE_SIZE = "future_size"
NEW_TRIALS = "new_trials"
CANDIDATE = "candidate"
CHAIN = "chain"
DRAW = "draw"
SAMPLE_DIMS = (CHAIN, DRAW)
