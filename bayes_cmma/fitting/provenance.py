"""Provenance attributes attached to every saved posterior."""

from __future__ import annotations

import json
import platform
from datetime import UTC, datetime
from importlib import metadata

from bayes_cmma.fitting.spec import ModelSpec

_PACKAGES = ("bayes_cmma", "pymc", "pytensor", "numba", "nutpie", "numpy", "xarray", "arviz-base", "arviz-stats")


def versions() -> dict[str, str]:
    """Installed versions of bayes_cmma and the packages that shape its results."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def provenance(spec: ModelSpec, seed: int | None, data_hash: str | None) -> dict[str, str | int]:
    """Flat string attributes (netCDF-safe): versions, spec, seed, data hash, time."""
    return {
        "bayes_cmma_versions": json.dumps(versions(), sort_keys=True),
        "model_spec": json.dumps(spec.to_dict(), sort_keys=True),
        "model_spec_source": spec.source,
        "seed": "none" if seed is None else str(seed),
        "data_sha256": data_hash or "unknown",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
