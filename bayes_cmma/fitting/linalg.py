"""Closed-form small-matrix algebra vectorised over the trial axis.

The marginal likelihood of each trial is a (P+1)-variate normal with its own covariance. Rather
than a batched general ``MvNormal`` (about 30x slower to sample), the Cholesky factor, the
triangular solve and the log-determinant are unrolled entry by entry for the fixed small dimension
d = P + 1 <= 6; every entry is a vector over trials. The same code runs on numpy arrays (per-draw
log-likelihood for LOO) and on PyTensor tensors (the model graph), chosen by the ``sqrt``/``log``
functions passed in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Entry = Any  # a numpy array or a PyTensor tensor, broadcastable over trials
LOG_2PI = math.log(2.0 * math.pi)


def cholesky_entries(cov: Sequence[Sequence[Entry]], sqrt: Callable[[Entry], Entry]) -> list[list[Entry]]:
    """Lower Cholesky factor of a symmetric matrix given entry by entry.

    Parameters
    ----------
    cov : d x d nested sequence
        ``cov[i][j]`` is an array (or tensor) over the batch; only ``j <= i`` is read.
    sqrt : callable
        ``numpy.sqrt`` or ``pytensor.tensor.sqrt``.

    Returns
    -------
    list of lists
        ``L[i][j]`` for ``j <= i`` (``None`` above the diagonal).
    """
    d = len(cov)
    L: list[list[Entry]] = [[None] * d for _ in range(d)]
    for j in range(d):
        s = cov[j][j]
        for k in range(j):
            s = s - L[j][k] * L[j][k]
        L[j][j] = sqrt(s)
        for i in range(j + 1, d):
            s = cov[i][j]
            for k in range(j):
                s = s - L[i][k] * L[j][k]
            L[i][j] = s / L[j][j]
    return L


def forward_solve_entries(L: Sequence[Sequence[Entry]], b: Sequence[Entry]) -> list[Entry]:
    """x = L^-1 b for a lower-triangular L (from :func:`cholesky_entries`) and b, entry by entry."""
    x: list[Entry] = []
    for i in range(len(b)):
        s = b[i]
        for k in range(i):
            s = s - L[i][k] * x[k]
        x.append(s / L[i][i])
    return x


def mvnormal_logpdf_entries(
    resid: Sequence[Entry],
    cov: Sequence[Sequence[Entry]],
    sqrt: Callable[[Entry], Entry],
    log: Callable[[Entry], Entry],
) -> Entry:
    """Log-density of a batch of d-variate normals, ``log N(resid | 0, cov)``, entry by entry.

    Parameters
    ----------
    resid : length-d sequence
        ``resid[i]`` is the batch of residuals of coordinate i.
    cov : d x d nested sequence
        Covariance entries (batch).
    sqrt, log : callables
        Elementwise functions of the backend.

    Returns
    -------
    Entry
        The log-density per batch element.
    """
    d = len(resid)
    L = cholesky_entries(cov, sqrt)
    w = forward_solve_entries(L, resid)
    quad = 0.0
    half_logdet = 0.0
    for i in range(d):
        quad = quad + w[i] * w[i]
        half_logdet = half_logdet + log(L[i][i])
    return -0.5 * quad - half_logdet - 0.5 * d * LOG_2PI


def mvnormal_logpdf(resid: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Numpy front end: ``resid`` (..., d), ``cov`` (..., d, d) -> log-density (...)."""
    d = resid.shape[-1]
    entries = [[cov[..., i, j] for j in range(d)] for i in range(d)]
    return mvnormal_logpdf_entries([resid[..., i] for i in range(d)], entries, np.sqrt, np.log)
