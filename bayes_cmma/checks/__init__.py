"""Can the answer be trusted? Sampler diagnostics (``diagnostics``), posterior predictive checks and
LOO (``checking``), degree comparison (``compare``), the identifying assumptions (``assumptions``,
``sensitivity``), simulation-based calibration (``calibration``) and the calibration of P(best)
(``ranking_calibration``).
"""
