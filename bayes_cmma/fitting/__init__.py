"""The Bayesian model and its fitting.

``spec`` reads model specifications (TOML); ``measurement`` chooses each trial's error covariance;
``model`` builds the PyMC model (with ``linalg``, the closed-form likelihood) and caches one compiled
model per shape, whose C callbacks ``callbacks`` builds and caches on disk; ``bayes`` fits it
(``fit``, ``fit_metric``) and holds the results objects; ``many`` fits metric x model grids, in
worker processes (``parallel``); ``sampling`` runs nutpie; ``interrupts`` keeps Ctrl-C;
``provenance`` stamps every saved posterior.
"""
