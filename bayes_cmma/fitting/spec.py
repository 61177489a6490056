"""Declarative model specifications (TOML).

A spec fixes everything about the Bayesian model that is not data: the degree P of the polynomial
dose-response function, the priors (on the internally standardised scale, see
:mod:`bayes_cmma.fitting.model`), how unknown within-trial covariances are filled in, and the sampler
settings. The bundled specs ``linear``, ``quadratic`` and ``cubic`` live in the repository's
top-level ``models/`` folder and ship inside the wheel; a user's own file may give any subset of the
keys, the rest taking the defaults below.

Example (``models/cubic.toml``)::

    name = "cubic"
    degree = 3

    [priors]
    beta = { dist = "normal", mu = 0.0, sigma = 5.0 }
    residual_sd = { dist = "halfnormal", sigma = 1.0 }

    [measurement]
    within_trial_correlation = 0.0
    error_covariance = "pooled"     # or "per_trial"; see bayes_cmma.fitting.measurement
    pool_by = "all"                 # or "team"
    size_proxy = "metric_se"        # c_k without arm sizes: "metric_se", "kpi_se" or "equal"
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from bayes_cmma.errors import SpecError

#: Distributions allowed for location parameters and their parameters.
LOCATION_DISTS = {"normal": ("mu", "sigma"), "studentt": ("nu", "mu", "sigma")}
#: Distributions allowed for scale (positive) parameters and their parameters.
SCALE_DISTS = {"halfnormal": ("sigma",), "halfstudentt": ("nu", "sigma"), "exponential": ("lam",)}

#: Which priors are on location parameters and which on scales.
PRIOR_KINDS = {
    "beta_std": "location",
    "alpha": "location",
    "pi_mean": "location",
    "pi_sd": "scale",
    "metric_sd": "scale",
    "residual_sd": "scale",
}

DEFAULT_PRIORS: dict[str, dict[str, Any]] = {
    "beta_std": {"dist": "normal", "mu": 0.0, "sigma": 2.0},
    "alpha": {"dist": "normal", "mu": 0.0, "sigma": 5.0},
    "pi_mean": {"dist": "normal", "mu": 0.0, "sigma": 5.0},
    "pi_sd": {"dist": "halfnormal", "sigma": 1.0},
    "metric_sd": {"dist": "halfnormal", "sigma": 1.0},
    "residual_sd": {"dist": "halfnormal", "sigma": 1.0},
}
DEFAULT_METRIC_CORR_ETA = 2.0
DEFAULT_SAMPLER = {"draws": 1000, "tune": 1000, "chains": 4, "target_accept": 0.9, "adaptation": "low_rank"}
#: nutpie mass-matrix adaptations. ``low_rank`` learns the strong linear posterior correlations of
#: this model (team KPI means vs latent metric means, along the measurement-error correction).
ADAPTATIONS = ("low_rank", "diag")
#: Team KPI effects: "centred" samples eta_g = beta' alpha_g + pi_g (best when each team has many
#: informative trials); "non_centred" samples z_g with pi_g = pi_mean + pi_sd z_g (best when pi_sd may
#: be near 0 or teams have few trials): two parameterisations of the pooled effects. "independent"
#: does not pool them (pi_g ~ the ``pi_mean`` prior, like OLS team dummies), so that the teams' KPI
#: means say nothing about the slopes (docs: model.md, "Team effects").
TEAM_EFFECTS = ("auto", "centred", "non_centred", "independent")

#: ``[measurement]`` keys besides ``within_trial_correlation``, their allowed values (the first is the
#: default); see :mod:`bayes_cmma.fitting.measurement`.
MEASUREMENT_CHOICES = {
    "error_covariance": ("pooled", "per_trial"),
    "pool_by": ("all", "team"),
    "size_proxy": ("metric_se", "kpi_se", "equal"),
}

BUNDLED = ("linear", "quadratic", "cubic")
_DEGREE_NAMES = {1: "linear", 2: "quadratic", 3: "cubic"}


@dataclass(frozen=True)
class Prior:
    """One prior: a distribution name and its parameters (standardised scale)."""

    dist: str
    params: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return {"dist": self.dist, **self.params}


@dataclass(frozen=True)
class ModelSpec:
    """A validated model specification.

    Attributes
    ----------
    name : str
        Short name, e.g. ``"cubic"``.
    degree : int
        Degree P of the polynomial DRF, 1 to 5.
    priors : dict of str to Prior
        Priors of ``beta_std``, ``alpha``, ``pi_mean``, ``pi_sd``, ``metric_sd``, ``residual_sd``.
    metric_corr_eta : float
        LKJ concentration of the between-trial correlation of the latent metric powers.
    within_trial_correlation : float
        Correlation used for every within-trial covariance pair the user did not supply.
    error_covariance, pool_by, size_proxy : str
        The measurement model (``[measurement]``; :mod:`bayes_cmma.fitting.measurement`): each trial's
        error covariance ``"pooled"`` (default: S_k = c_k U, U pooled over ``pool_by`` = ``"all"``
        trials or per ``"team"``, c_k from the arm sizes or, without them, from ``size_proxy``) or
        ``"per_trial"`` (as reported).
    sampler : dict
        ``draws``, ``tune``, ``chains``, ``target_accept``, ``adaptation``.
    source : str
        Where the spec came from (bundled name or file path).
    team_effects : str
        ``"auto"`` (default), ``"centred"`` or ``"non_centred"``: how the partially pooled team
        effects are sampled (the same model either way). ``"auto"`` fits centred and, if that fit
        has divergent transitions, refits non-centred and keeps the fit with fewer
        (:func:`bayes_cmma.fitting.bayes.fit_design`). ``"independent"``: team effects not pooled
        (pi_g ~ the ``pi_mean`` prior), as with fewer than 4 teams.
    direct_effect_corr : float
        Assumed within-team correlation between a trial's KPI residual (its direct effect beyond
        the team's) and its effect on the metric; assumption A3 says 0. Set it for a sensitivity
        analysis (``[assumptions] direct_effect_corr``); data, not structure: no recompiling.
    direct_effect_corr_prior : tuple of float, optional
        ``(lower, upper)``: instead of a fixed value, the correlation is a parameter with a uniform
        prior on that interval (``direct_effect_corr = { dist = "uniform", lower = -0.3, upper = 0.3 }``),
        so the posterior averages over the A3 doubt. The data barely inform it: what the
        posterior of beta gains is honest width, not an estimate of the correlation.
    """

    name: str
    degree: int
    priors: dict[str, Prior]
    metric_corr_eta: float = DEFAULT_METRIC_CORR_ETA
    within_trial_correlation: float = 0.0
    within_trial_correlation_given: bool = False
    error_covariance: str = "pooled"
    pool_by: str = "all"
    size_proxy: str = "metric_se"
    sampler: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_SAMPLER))
    description: str = ""
    source: str = ""
    team_effects: str = "auto"
    direct_effect_corr: float = 0.0
    direct_effect_corr_prior: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict (TOML-like) form, for provenance attributes."""
        return {
            "name": self.name,
            "degree": self.degree,
            "description": self.description,
            "priors": {k: v.as_dict() for k, v in self.priors.items()}
            | {"metric_corr_eta": self.metric_corr_eta},
            "measurement": (
                {"within_trial_correlation": self.within_trial_correlation}
                if self.within_trial_correlation_given
                else {}
            ) | {"error_covariance": self.error_covariance, "pool_by": self.pool_by, "size_proxy": self.size_proxy},
            "sampler": dict(self.sampler),
            "team_effects": self.team_effects,
            "assumptions": self._assumptions(),
        }

    def _assumptions(self) -> dict[str, Any]:
        if self.direct_effect_corr_prior is not None:
            lower, upper = self.direct_effect_corr_prior
            return {"direct_effect_corr": {"dist": "uniform", "lower": lower, "upper": upper}}
        return {"direct_effect_corr": self.direct_effect_corr} if self.direct_effect_corr else {}

    def structure_key(self) -> str:
        """Hash of what changes the compiled model (degree and priors, not the sampler)."""
        d = self.to_dict()
        structure = {"degree": d["degree"], "priors": d["priors"], "team_effects": d["team_effects"]}
        if self.direct_effect_corr_prior is not None:  # a sampled correlation; a fixed one is data
            structure["direct_effect_corr_prior"] = list(self.direct_effect_corr_prior)
        payload = json.dumps(structure, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _unknown_key(key: str, allowed: list[str] | tuple[str, ...], where: str) -> SpecError:
    hint = difflib.get_close_matches(key, list(allowed), n=1)
    did_you_mean = f" Did you mean {hint[0]!r}?" if hint else ""
    return SpecError(
        f"unknown key {key!r} in {where}.{did_you_mean} Allowed keys: {', '.join(sorted(allowed))}."
    )


def _check_keys(table: dict[str, Any], allowed: list[str] | tuple[str, ...], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise _unknown_key(key, allowed, where)


def _number(value: Any, where: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SpecError(f"{where} must be a finite number, got {value!r}.")
    if positive and value <= 0:
        raise SpecError(f"{where} must be > 0, got {value!r}.")
    return float(value)


def _parse_prior(name: str, value: Any, where: str) -> Prior:
    kind = PRIOR_KINDS[name]
    dists = LOCATION_DISTS if kind == "location" else SCALE_DISTS
    if not isinstance(value, dict):
        raise SpecError(
            f"{where}.{name} must be a table like {{ dist = \"{next(iter(dists))}\", ... }}, "
            f"got {value!r}."
        )
    dist = value.get("dist")
    if dist not in dists:
        hint = difflib.get_close_matches(str(dist), list(dists), n=1)
        did_you_mean = f" Did you mean {hint[0]!r}?" if hint else ""
        raise SpecError(
            f"{where}.{name}: dist {dist!r} is not allowed for a {kind} parameter.{did_you_mean} "
            f"Use one of: {', '.join(dists)}."
        )
    param_names = dists[dist]
    _check_keys(value, ("dist", *param_names), f"{where}.{name}")
    params = {}
    for p in param_names:
        if p not in value:
            if p == "mu":
                params[p] = 0.0
                continue
            raise SpecError(f"{where}.{name}: dist {dist!r} needs parameter {p!r}.")
        params[p] = _number(value[p], f"{where}.{name}.{p}", positive=p != "mu")
    return Prior(dist=dist, params=params)


def parse_spec(raw: dict[str, Any], source: str = "<dict>") -> ModelSpec:
    """Validate a spec given as a dict (the parsed TOML).

    Parameters
    ----------
    raw : dict
        Parsed TOML. Keys: ``name``, ``description``, ``degree`` (required), ``[priors]``,
        ``[measurement]``, ``[sampler]``.
    source : str
        Where it came from, used in error messages.

    Raises
    ------
    SpecError
        On an unknown key (with a "did you mean" hint), a missing degree or a bad prior.
    """
    where = f"model spec {source}"
    _check_keys(raw, ("name", "description", "degree", "priors", "measurement", "sampler", "team_effects",
                      "assumptions"), where)
    assumptions = raw.get("assumptions", {})
    if not isinstance(assumptions, dict):
        raise SpecError(f"{where}: [assumptions] must be a table.")
    _check_keys(assumptions, ("direct_effect_corr",), f"{where} [assumptions]")
    a3, a3_prior = _parse_a3(assumptions.get("direct_effect_corr", 0.0), f"{where} [assumptions].direct_effect_corr")
    team_effects = raw.get("team_effects", "auto")
    if team_effects not in TEAM_EFFECTS:
        hint = difflib.get_close_matches(str(team_effects), TEAM_EFFECTS, n=1)
        raise SpecError(f"{where}: team_effects must be one of {', '.join(TEAM_EFFECTS)}, got {team_effects!r}."
                        + (f" Did you mean {hint[0]!r}?" if hint else ""))
    if "degree" not in raw:
        raise SpecError(f"{where}: key 'degree' is required (1, 2 or 3 for a polynomial DRF).")
    degree = raw["degree"]
    if isinstance(degree, bool) or not isinstance(degree, int) or not 1 <= degree <= 5:
        raise SpecError(f"{where}: 'degree' must be an integer from 1 to 5, got {degree!r}.")

    priors_raw = raw.get("priors", {})
    if not isinstance(priors_raw, dict):
        raise SpecError(f"{where}: [priors] must be a table.")
    _check_keys(priors_raw, (*PRIOR_KINDS, "metric_corr_eta"), f"{where} [priors]")
    priors = {
        name: _parse_prior(name, priors_raw.get(name, default), f"{where} [priors]")
        for name, default in DEFAULT_PRIORS.items()
    }
    eta = _number(
        priors_raw.get("metric_corr_eta", DEFAULT_METRIC_CORR_ETA),
        f"{where} [priors].metric_corr_eta",
        positive=True,
    )

    meas = raw.get("measurement", {})
    if not isinstance(meas, dict):
        raise SpecError(f"{where}: [measurement] must be a table.")
    _check_keys(meas, ("within_trial_correlation", *MEASUREMENT_CHOICES), f"{where} [measurement]")
    choices = {}
    for key, allowed in MEASUREMENT_CHOICES.items():
        value = meas.get(key, allowed[0])
        if value not in allowed:
            hint = difflib.get_close_matches(str(value), allowed, n=1)
            raise SpecError(f"{where} [measurement].{key} must be one of {', '.join(map(repr, allowed))}, got "
                            f"{value!r}." + (f" Did you mean {hint[0]!r}?" if hint else ""))
        choices[key] = value
    given = "within_trial_correlation" in meas
    rho = _number(
        meas.get("within_trial_correlation", 0.0),
        f"{where} [measurement].within_trial_correlation",
    )
    if not -1.0 < rho < 1.0:
        raise SpecError(
            f"{where} [measurement].within_trial_correlation must be strictly between -1 and 1, "
            f"got {rho}."
        )

    sampler_raw = raw.get("sampler", {})
    if not isinstance(sampler_raw, dict):
        raise SpecError(f"{where}: [sampler] must be a table.")
    _check_keys(sampler_raw, tuple(DEFAULT_SAMPLER), f"{where} [sampler]")
    sampler = dict(DEFAULT_SAMPLER)
    for key, value in sampler_raw.items():
        if key == "adaptation":
            if value not in ADAPTATIONS:
                raise SpecError(
                    f"{where} [sampler].adaptation must be one of {', '.join(ADAPTATIONS)}, got {value!r}."
                )
            sampler[key] = value
        elif key == "target_accept":
            v = _number(value, f"{where} [sampler].target_accept", positive=True)
            if v >= 1:
                raise SpecError(f"{where} [sampler].target_accept must be below 1, got {v}.")
            sampler[key] = v
        else:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SpecError(f"{where} [sampler].{key} must be a positive integer, got {value!r}.")
            sampler[key] = value

    name = raw.get("name", _DEGREE_NAMES.get(degree, f"degree{degree}"))
    if not isinstance(name, str):
        raise SpecError(f"{where}: 'name' must be a string.")
    return ModelSpec(
        name=name,
        degree=degree,
        priors=priors,
        metric_corr_eta=eta,
        within_trial_correlation=rho,
        within_trial_correlation_given=given,
        **choices,
        sampler=sampler,
        description=str(raw.get("description", "")),
        source=source,
        team_effects=team_effects,
        direct_effect_corr=a3,
        direct_effect_corr_prior=a3_prior,
    )


def _parse_a3(value: Any, where: str) -> tuple[float, tuple[float, float] | None]:
    """A fixed correlation in (-1, 1), or a table ``{ dist = "uniform", lower, upper }`` inside it."""
    if isinstance(value, dict):
        if value.get("dist") != "uniform":
            raise SpecError(f"{where}: a prior on the correlation must be {{ dist = \"uniform\", lower = ..., "
                            f"upper = ... }}, got dist {value.get('dist')!r}.")
        _check_keys(value, ("dist", "lower", "upper"), where)
        for key in ("lower", "upper"):
            if key not in value:
                raise SpecError(f"{where}: the uniform prior needs {key!r}.")
        lower, upper = _number(value["lower"], f"{where}.lower"), _number(value["upper"], f"{where}.upper")
        if not -1.0 < lower < upper < 1.0:
            raise SpecError(f"{where}: need -1 < lower < upper < 1, got lower = {lower}, upper = {upper}.")
        return 0.0, (lower, upper)
    a3 = _number(value, where)
    if not -1.0 < a3 < 1.0:
        raise SpecError(f"{where} must be strictly between -1 and 1, got {a3}.")
    return a3, None


def _bundled_dir() -> Path:
    """Folder of the bundled specs: inside the installed package, else the repo's ``models/``."""
    packaged = Path(str(resources.files("bayes_cmma"))) / "models"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "models"


def load_spec(name_or_path: str | Path) -> ModelSpec:
    """Load a bundled spec by name (``"linear"``, ``"quadratic"``, ``"cubic"``) or a TOML file.

    Raises
    ------
    SpecError
        If the name is neither bundled nor an existing file, or the file is invalid.
    """
    text_name = str(name_or_path)
    if text_name in BUNDLED:
        path = _bundled_dir() / f"{text_name}.toml"
        source = text_name
    else:
        path = Path(name_or_path)
        source = str(path)
        if not path.is_file():
            hint = difflib.get_close_matches(text_name, BUNDLED, n=1)
            did_you_mean = f" Did you mean {hint[0]!r}?" if hint else ""
            raise SpecError(
                f"model {text_name!r} is neither a bundled model ({', '.join(BUNDLED)}) nor an "
                f"existing TOML file.{did_you_mean}"
            )
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"model spec {source} is not valid TOML: {exc}") from exc
    return parse_spec(raw, source=source)


def spec_for_degree(degree: int) -> ModelSpec:
    """The bundled spec of a degree (1, 2, 3), or defaults for degree 4-5."""
    if degree in _DEGREE_NAMES:
        return load_spec(_DEGREE_NAMES[degree])
    return parse_spec({"degree": degree}, source=f"defaults(degree={degree})")


def replace_spec(spec: ModelSpec, **changes: Any) -> ModelSpec:
    """A copy of ``spec`` with fields changed (validated again through :func:`parse_spec`)."""
    raw = spec.to_dict()
    if "within_trial_correlation" in changes:
        raw["measurement"]["within_trial_correlation"] = changes.pop("within_trial_correlation")
    for key in MEASUREMENT_CHOICES:
        if key in changes:
            raw["measurement"][key] = changes.pop(key)
    if "sampler" in changes:
        raw["sampler"] = {**raw["sampler"], **changes.pop("sampler")}
    if "degree" in changes:
        raw["degree"] = changes.pop("degree")
    if "team_effects" in changes:
        raw["team_effects"] = changes.pop("team_effects")
    if "direct_effect_corr" in changes:
        raw["assumptions"] = {"direct_effect_corr": changes.pop("direct_effect_corr")}
    if "name" in changes:
        raw["name"] = changes.pop("name")
    if "metric_corr_eta" in changes:
        raw["priors"]["metric_corr_eta"] = changes.pop("metric_corr_eta")
    if changes:
        raise TypeError(f"replace_spec got unsupported fields: {sorted(changes)}")
    return parse_spec(raw, source=spec.source)


__all__ = ["ModelSpec", "Prior", "load_spec", "parse_spec", "replace_spec", "spec_for_degree"]
