"""The toolkit's own exception and warning classes.

Every user mistake (bad table, bad spec, bad command-line value) raises a subclass of
:class:`BayesCMMAError` whose message names the offending trial, column, quantity or key and says
what to do. The command line prints that message alone, without a traceback.
"""

from __future__ import annotations


class BayesCMMAError(Exception):
    """Base class of every error bayes_cmma raises on purpose."""


class DataError(BayesCMMAError, ValueError):
    """A trial table or covariance table that cannot be used as it is."""


class SpecError(BayesCMMAError, ValueError):
    """A model specification (TOML) with an unknown key or a bad value."""


class SamplingError(BayesCMMAError, RuntimeError):
    """The sampler returned something that is not a complete posterior (stopped early, NaN draws)."""


class ConvergenceWarning(UserWarning):
    """The sampler's diagnostics (R-hat, divergences, ESS) say the posterior may be unreliable."""


class AssumptionWarning(UserWarning):
    """An input choice the user should know about (e.g. an assumed within-trial correlation)."""


class RelevanceWarning(AssumptionWarning):
    """Assumption A4 looks weak: trials barely move the metric within teams, so the DRF is prior-driven."""
