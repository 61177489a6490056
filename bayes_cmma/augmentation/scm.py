"""Random structural causal models: the benchmark generator of the causal data augmentation evaluation.

Follows the evaluation of Poinot & Leite (2023) as described on ``docs/augmentation.md``:
an Erdos-Renyi DAG over ``d`` variables (each pair ``i < j`` of a random order is an edge with
probability ``degree / (d - 1)``, so ``degree`` is the expected number of neighbours), root causes
from Gaussian mixtures, each other variable a random mechanism of its parents (linear, polynomial,
sigmoid, Gaussian process, or a small tanh network: one hidden layer of 20 units, Glorot-uniform
weights) standardised to unit variance, plus Gaussian noise of standard deviation ``noise``.
Outliers replace one random variable of a ``outliers`` share of the rows by a value 5 to 10
standard deviations from its mean.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from bayes_cmma.augmentation.augment import Dag, make_dag
from bayes_cmma.errors import DataError

MECHANISMS = ("linear", "polynomial", "sigmoid", "gp", "nn")


@dataclass(frozen=True)
class SCMSettings:
    """One scenario of the random-SCM benchmark (defaults: the published defaults).

    Attributes
    ----------
    n : int
        Rows drawn (before the 70/30 train/test split of the evaluation).
    d : int
        Variables.
    degree : float
        Expected number of neighbours per variable in the Erdos-Renyi DAG.
    noise : float
        Standard deviation of the additive Gaussian noise (mechanism outputs have unit variance).
    outliers : float
        Share of rows given one outlying value.
    mechanism : str
        One of :data:`MECHANISMS`, or ``"mixed"`` (each variable's mechanism drawn at random).
    """

    n: int = 500
    d: int = 10
    degree: float = 3.0
    noise: float = 0.4
    outliers: float = 0.0
    mechanism: str = "mixed"

    def __post_init__(self) -> None:
        if self.d < 2 or self.n < 4:
            raise DataError(f"SCM needs d >= 2 and n >= 4, got d={self.d}, n={self.n}.")
        if not 0 <= self.degree <= self.d - 1:
            raise DataError(f"SCM expected degree must be in [0, d - 1] = [0, {self.d - 1}], got {self.degree}.")
        if self.noise < 0 or not 0 <= self.outliers < 1:
            raise DataError(f"SCM noise must be >= 0 and outliers in [0, 1), got {self.noise}, {self.outliers}.")
        if self.mechanism not in (*MECHANISMS, "mixed"):
            raise DataError(f"SCM mechanism {self.mechanism!r}: choose from {', '.join(MECHANISMS)} or mixed.")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SCMSample:
    """A DAG, the mechanism of each variable, and the data drawn from it."""

    dag: Dag
    mechanisms: dict[str, str]
    data: pd.DataFrame
    outlier_rows: np.ndarray


def _glorot(rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=(fan_in, fan_out))


def _mechanism(kind: str, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """f(parents) for the n rows of ``x`` (n, p), parents standardised."""
    p = x.shape[1]
    w = rng.uniform(0.5, 2.0, size=p) * rng.choice([-1.0, 1.0], size=p)
    u = x @ w / np.sqrt(p)
    if kind == "linear":
        return u
    if kind == "polynomial":
        a = rng.uniform(-1.0, 1.0, size=3)
        return a[0] * u + a[1] * u**2 + a[2] * u**3
    if kind == "sigmoid":
        b, c = rng.uniform(0.5, 2.0), rng.uniform(-1.0, 1.0)
        return 1.0 / (1.0 + np.exp(-b * (u + c)))
    if kind == "gp":
        sq = np.sum((x[:, None, :] - x[None, :, :]) ** 2, axis=-1)
        cov = np.exp(-0.5 * sq) + 1e-8 * np.eye(len(x))
        return np.linalg.cholesky(cov) @ rng.standard_normal(len(x))
    if kind == "nn":
        hidden = np.tanh(x @ _glorot(rng, p, 20) + rng.uniform(-0.1, 0.1, size=20))
        return (hidden @ _glorot(rng, 20, 1))[:, 0]
    raise AssertionError(kind)


def _standardise(v: np.ndarray) -> np.ndarray:
    sd = v.std()
    return (v - v.mean()) / sd if sd > 1e-12 else v - v.mean()


def random_scm(settings: SCMSettings, rng: np.random.Generator) -> SCMSample:
    """Draw a DAG, mechanisms and ``settings.n`` rows; variables ``x0 .. x{d-1}`` in topological order."""
    d, n = settings.d, settings.n
    names = [f"x{i}" for i in range(d)]
    prob = settings.degree / (d - 1)
    edges = [(names[i], names[j]) for j in range(d) for i in range(j) if rng.random() < prob]
    dag = make_dag(edges, names)
    data: dict[str, np.ndarray] = {}
    mechanisms: dict[str, str] = {}
    for v in names:
        parents = dag.parents[v]
        if not parents:
            k = int(rng.integers(1, 4))
            weights = rng.dirichlet(np.ones(k))
            comp = rng.choice(k, size=n, p=weights)
            means, sds = rng.normal(0.0, 2.0, size=k), rng.uniform(0.5, 1.5, size=k)
            data[v] = _standardise(rng.normal(means[comp], sds[comp]))
            mechanisms[v] = "root"
            continue
        kind = str(rng.choice(MECHANISMS)) if settings.mechanism == "mixed" else settings.mechanism
        x = np.column_stack([data[p] for p in parents])
        f = _standardise(_mechanism(kind, x, rng))
        data[v] = f + settings.noise * rng.standard_normal(n)
        mechanisms[v] = kind
    frame = pd.DataFrame(data)
    rows = np.sort(rng.choice(n, size=round(settings.outliers * n), replace=False))
    for r in rows:
        v = names[int(rng.integers(d))]
        col = frame[v]
        frame.loc[r, v] = col.mean() + rng.choice([-1.0, 1.0]) * rng.uniform(5.0, 10.0) * col.std()
    return SCMSample(dag, mechanisms, frame, rows)
