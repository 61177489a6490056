"""Causal data augmentation along a DAG (ADMGDA; Teshima & Sugiyama 2021, Poinot & Leite 2023).

Given a table of ``n`` rows, a DAG over its columns and a weight threshold ``theta``,
:func:`augment` returns a *weighted* table drawn from the DAG's Markov factorisation
``prod_j P_obs(X_j | Pa(X_j))``, each conditional estimated by a kernel mixture over the observed
rows. Augmented rows are built one variable at a time in topological order: a partial row ``Z``
(weight ``w``) is extended by the value ``X_j`` of every observed row ``r`` with weight

    w * K(Z[Pa(j)] - X_r[Pa(j)]) / sum_s K(Z[Pa(j)] - X_s[Pa(j)]),

``K`` the product of the parents' kernels (Gaussian with Silverman's bandwidth for numbers, the
Aitchison-Aitken kernel for categories). A downstream model is fitted by weighted loss on the
result. The method is documented with its measured behaviour on the documentation page
``docs/augmentation.md``.

Conventions (where the published descriptions leave a choice):

* **The threshold is relative.** The weights returned sum to 1, so an observed row has weight
  ``1/n``; an extension is dropped when its weight relative to an observed row, ``n * w``, is
  ``<= theta`` (for untied data and one root: the conditional probability of the path given its
  root value). This is the reference implementation's threshold "normalised by the data size";
  compared with the absolute weight, any ``theta >= 1/n`` would drop every row at the first step.
* **Parentless variables.** ``roots="joint"`` (default) takes all parentless variables together
  from the observed rows (``n`` root rows of weight ``1/n``): the size stays below ``n / theta``
  rows but the roots keep their observed joint law. ``roots="independent"`` follows the
  factorisation exactly: each further parentless variable multiplies the rows by ``n`` (its own
  factor ``1/n`` is exempt from the threshold, otherwise every row would die at ``n > 1/theta``),
  which grows as ``n^roots`` and usually needs a larger ``max_rows``.
* **Duplicates merge.** Partial rows with equal values (same categories, say) are merged after each
  step, their weights summed, as the reference implementation does.
* A partial row whose parent values have zero kernel weight against every observed row (a category
  combination never observed, with ``smoothing=0``) has no continuation; its mass is dropped and
  counted in ``retained_mass``.

Work is vectorised in blocks of partial rows so that at most ``block_cells`` kernel values are held at
once; :class:`AugmentationError` is raised when more than ``max_rows`` rows would survive a step.
"""

from __future__ import annotations

import difflib
import itertools
import re
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from scipy import sparse

from bayes_cmma.errors import DataError

#: Name of the weight column of :func:`augment`'s output.
WEIGHT = "weight"


class AugmentationError(DataError):
    """Augmentation cannot proceed as asked (too many rows survive, or none)."""


# ---------------------------------------------------------------------------------------------- DAG


@dataclass(frozen=True)
class Dag:
    """A directed acyclic graph over named variables.

    Attributes
    ----------
    order : tuple of str
        The variables in a topological order (stable: among ready variables, the one named first).
    parents : dict of str to tuple of str
        Each variable's parents, in the order they were named.
    """

    order: tuple[str, ...]
    parents: dict[str, tuple[str, ...]] = field(hash=False)

    @property
    def edges(self) -> list[tuple[str, str]]:
        return [(p, v) for v in self.order for p in self.parents[v]]

    @property
    def roots(self) -> list[str]:
        return [v for v in self.order if not self.parents[v]]

    def __str__(self) -> str:
        isolated = [v for v in self.order if not self.parents[v] and not any(v in ps for ps in self.parents.values())]
        return "; ".join([f"{p}->{v}" for p, v in self.edges] + isolated)


def make_dag(edges: list[tuple[str, str]], nodes: list[str] | None = None) -> Dag:
    """A :class:`Dag` from edges ``(parent, child)`` and optionally isolated nodes.

    Raises
    ------
    DataError
        For a self-loop or a cycle (the error names the cycle).
    """
    names: list[str] = []
    for v in [*(nodes or []), *(x for e in edges for x in e)]:
        if v not in names:
            names.append(v)
    parents: dict[str, list[str]] = {v: [] for v in names}
    for p, c in edges:
        if p == c:
            raise DataError(f"DAG: edge {p}->{c} is a self-loop; a variable cannot cause itself.")
        if p not in parents[c]:
            parents[c].append(p)
    rank = {v: i for i, v in enumerate(names)}
    indegree = {v: len(ps) for v, ps in parents.items()}
    children: dict[str, list[str]] = {v: [] for v in names}
    for c, ps in parents.items():
        for p in ps:
            children[p].append(c)
    ready = sorted((v for v in names if indegree[v] == 0), key=rank.get)
    order: list[str] = []
    while ready:
        v = ready.pop(0)
        order.append(v)
        for c in children[v]:
            indegree[c] -= 1
            if indegree[c] == 0:
                ready.append(c)
                ready.sort(key=rank.get)
    if len(order) < len(names):
        raise DataError(f"DAG has a cycle: {' -> '.join(_find_cycle(parents, set(names) - set(order)))}; "
                        "remove one of its edges.")
    return Dag(tuple(order), {v: tuple(parents[v]) for v in order})


def _find_cycle(parents: dict[str, list[str]], left: set[str]) -> list[str]:
    """One cycle among the variables a topological sort could not place (walk parents until a repeat)."""
    v = min(left)
    path: list[str] = []
    while v not in path:
        path.append(v)
        v = next(p for p in parents[v] if p in left)
    cycle = [*path[path.index(v):], v]
    return cycle[::-1]


def parse_dag(text: str) -> Dag:
    """Parse ``"team->ndcg; ndcg->gmv; team->gmv"``.

    Statements are separated by ``;`` or new lines; a statement is a chain ``a -> b -> c`` or a
    single variable (an isolated node). Names are trimmed; they may contain any character but
    ``;`` and ``->``.
    """
    edges: list[tuple[str, str]] = []
    nodes: list[str] = []
    for statement in re.split(r"[;\n]", text):
        if not statement.strip():
            continue
        names = [s.strip() for s in statement.split("->")]
        if any(not s for s in names):
            raise DataError(f"DAG: {statement.strip()!r} has an empty variable name; write edges as 'a -> b'.")
        nodes.extend(names)
        edges.extend(itertools.pairwise(names))
    if not nodes:
        raise DataError("DAG is empty; give edges like 'team -> ndcg; ndcg -> gmv'.")
    return make_dag(edges, nodes)


# ------------------------------------------------------------------------------------------ kernels


@dataclass(frozen=True)
class Gaussian:
    """Gaussian kernel for a numeric variable; ``bandwidth=None`` uses Silverman's rule of thumb.

    Silverman's rule: ``h = 0.9 * min(sd, IQR / 1.349) * n ** (-1/5)`` (the standard deviation alone
    when the IQR is 0; ``h = 1`` for a constant column, whose kernel is then flat).
    """

    bandwidth: float | None = None

    def bandwidth_for(self, x: np.ndarray) -> float:
        if self.bandwidth is not None:
            return float(self.bandwidth)
        sd = float(np.std(x, ddof=1)) if x.size > 1 else 0.0
        iqr = float(np.subtract(*np.percentile(x, [75, 25])))
        spread = min(sd, iqr / 1.349) if iqr > 0 else sd
        return 0.9 * spread * x.size ** (-0.2) if spread > 0 else 1.0

    def log_matrix(self, x: np.ndarray) -> np.ndarray:
        h = self.bandwidth_for(x)
        d = (x[:, None] - x[None, :]) / h
        return -0.5 * d * d


@dataclass(frozen=True)
class Categorical:
    """Aitchison-Aitken kernel: ``1 - smoothing`` for the same category, ``smoothing / (c - 1)`` otherwise.

    ``smoothing = 0`` (default) conditions exactly on the category.
    """

    smoothing: float = 0.0

    def log_matrix(self, x: np.ndarray) -> np.ndarray:
        codes, uniques = pd.factorize(x)
        c = len(uniques)
        same = codes[:, None] == codes[None, :]
        other = self.smoothing / (c - 1) if c > 1 else 0.0
        with np.errstate(divide="ignore"):
            return np.where(same, np.log(1.0 - self.smoothing), np.log(other))


Kernel = Gaussian | Categorical
_KERNEL_NAMES = {"gaussian": Gaussian, "categorical": Categorical}


def _kernel_for(name: str, spec: Kernel | str | None, column: pd.Series) -> Kernel:
    if spec is None:
        numeric = pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
        return Gaussian() if numeric else Categorical()
    if isinstance(spec, str):
        if spec not in _KERNEL_NAMES:
            raise DataError(f"kernel for {name!r}: unknown kernel {spec!r}; choose {' or '.join(_KERNEL_NAMES)}.")
        spec = _KERNEL_NAMES[spec]()
    if isinstance(spec, Categorical):
        if not 0.0 <= spec.smoothing < 1.0:
            raise DataError(f"kernel for {name!r}: smoothing must be in [0, 1), got {spec.smoothing}.")
        return spec
    if isinstance(spec, Gaussian):
        if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
            raise DataError(f"kernel for {name!r}: the Gaussian kernel needs a numeric column, got dtype "
                            f"{column.dtype}; use 'categorical'.")
        if spec.bandwidth is not None and not (np.isfinite(spec.bandwidth) and spec.bandwidth > 0):
            raise DataError(f"kernel for {name!r}: bandwidth must be a positive number, got {spec.bandwidth}.")
        return spec
    raise DataError(f"kernel for {name!r}: expected Gaussian(), Categorical() or a name, got {spec!r}.")


# ------------------------------------------------------------------------------------- augmentation


def augment(
    frame: pd.DataFrame,
    dag: Dag | str,
    *,
    theta: float = 1e-2,
    kernels: dict[str, Kernel | str] | None = None,
    roots: Literal["joint", "independent"] = "joint",
    max_rows: int = 2_000_000,
    block_cells: int = 4_000_000,
    method: Literal["threshold", "sample"] = "threshold",
    size: int | None = None,
    seed: int | np.random.Generator | None = None,
) -> pd.DataFrame:
    """Augment ``frame`` along ``dag``; a weighted table drawn from the DAG's Markov factorisation.

    Parameters
    ----------
    frame : DataFrame
        One row per observation; must hold every DAG variable, without missing values. Columns not in
        the DAG are not carried over (augmented rows are new combinations).
    dag : Dag or str
        The causal graph, e.g. ``"team -> ndcg; ndcg -> gmv; team -> gmv"`` (see :func:`parse_dag`).
    theta : float
        Extensions whose weight relative to an observed row (``n * w``; with ``roots="independent"``
        relative to ``1 / n`` per parentless variable) is ``<= theta`` are dropped (module
        docstring). Smaller keeps more rows.
    kernels : dict, optional
        Per variable, :class:`Gaussian`, :class:`Categorical` or their names; default Gaussian with
        Silverman's bandwidth for numeric columns, exact categories for the others.
    roots : {"joint", "independent"}
        How parentless variables are drawn (module docstring).
    max_rows : int
        Stop with :class:`AugmentationError` when more rows than this survive a step.
    block_cells : int
        Kernel values held at once (memory bound: 8 bytes each, a few arrays of this size).
    method : {"threshold", "sample"}
        ``"threshold"`` (the published method): every extension above ``theta``, weighted.
        ``"sample"``: ``size`` rows drawn at random from the same factorisation (ancestral sampling,
        one observed row per step with the kernel probabilities; a smoothed bootstrap along the DAG),
        each of weight ``1 / size``; ``theta`` is not used. Unbiased for the factorisation, where the
        threshold keeps the paths whose conditionals are concentrated (sparse regions) and so
        over-represents the tails (measured on ``docs/augmentation.md``).
    size : int, optional
        Rows drawn by ``method="sample"`` (default ``10 * n``).
    seed : int or Generator, optional
        Random state of ``method="sample"``.

    Returns
    -------
    DataFrame
        The DAG's variables (in ``frame``'s column order) and a ``weight`` column summing to 1;
        ``attrs["augmentation"]`` is a JSON-ready dict of what was done: ``dag``, ``method``,
        ``theta``, ``roots``, ``rows_per_step`` (surviving, merged rows after each step),
        ``retained_mass`` (share of the factorisation's probability mass the rows carry before the
        weights are renormalised) and ``bandwidths`` (of the Gaussian kernels). It is kept in a
        Parquet file's metadata.
    """
    dag = parse_dag(dag) if isinstance(dag, str) else dag
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"augment needs a pandas DataFrame, got {type(frame).__name__}.")
    if not (isinstance(theta, int | float) and 0 < theta < 1):
        raise DataError(f"theta must be a number in (0, 1), got {theta!r}.")
    if roots not in ("joint", "independent"):
        raise DataError(f"roots must be 'joint' or 'independent', got {roots!r}.")
    if int(max_rows) < 1 or int(block_cells) < 1:
        raise DataError("max_rows and block_cells must be positive.")
    if method not in ("threshold", "sample"):
        raise DataError(f"method must be 'threshold' or 'sample', got {method!r}.")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1):
        raise DataError(f"size must be a positive integer, got {size!r}.")
    columns = [str(c) for c in frame.columns]
    for v in dag.order:
        if v not in columns:
            hint = difflib.get_close_matches(v, columns, n=1)
            did_you_mean = f" Did you mean {hint[0]!r}?" if hint else ""
            raise DataError(
                f"DAG variable {v!r} is not a column of the data (columns: {', '.join(columns)}).{did_you_mean}"
            )
    if WEIGHT in dag.order:
        raise DataError(f"a DAG variable is named {WEIGHT!r}, the output's weight column; rename that column.")
    kernels = dict(kernels or {})
    unknown = [k for k in kernels if k not in dag.order]
    if unknown:
        raise DataError(f"kernels given for {unknown[0]!r}, which is not a DAG variable ({', '.join(dag.order)}).")
    data = frame.rename(columns=str)
    n = len(data)
    if n < 2:
        raise DataError(f"augmentation needs at least 2 rows, got {n}.")
    for v in dag.order:
        missing = int(data[v].isna().sum())
        if missing:
            raise DataError(f"column {v!r} has {missing} missing value(s); augmentation needs complete rows: "
                            "drop or impute them first.")
    kern = {v: _kernel_for(v, kernels.get(v), data[v]) for v in dag.order}
    is_parent = {p for ps in dag.parents.values() for p in ps}
    log_k = {v: kern[v].log_matrix(data[v].to_numpy()) for v in dag.order if v in is_parent}
    # canonical row index per variable: equal values share the smallest row index, so duplicates merge
    canon = {v: pd.factorize(data[v])[0] for v in dag.order}
    first_of_code = {v: np.unique(canon[v], return_index=True)[1] for v in dag.order}
    canon = {v: first_of_code[v][canon[v]].astype(np.int64) for v in dag.order}

    if method == "sample":
        rng = np.random.default_rng(seed)
        m = int(size or 10 * n)
        _check_size(m, max_rows, dag.order[0], theta)
        idx, done, rows_per_step = _sample_paths(dag, roots, log_k, canon, n, m, block_cells, rng)
        weight = np.full(len(idx), 1.0 / m)
    else:
        idx, weight, done, rows_per_step = _threshold_paths(dag, roots, log_k, canon, n, theta, max_rows,
                                                            block_cells)
    if not len(weight):
        dead = next(v for v, rows in rows_per_step.items() if rows == 0)
        hint = "lower theta (e.g. theta / 10)" if method == "threshold" else "give the categories some smoothing"
        raise AugmentationError(f"no augmented row survived variable {dead!r} (method {method!r}); {hint}.")
    retained = float(weight.sum())
    out_cols = [c for c in columns if c in dag.order]
    out = pd.DataFrame({c: data[c].to_numpy()[idx[:, done.index(c)]] for c in out_cols})
    for c in out_cols:
        if isinstance(data[c].dtype, pd.CategoricalDtype):
            out[c] = pd.Categorical(out[c], dtype=data[c].dtype)
    out[WEIGHT] = weight / retained
    out.attrs["augmentation"] = {
        "dag": str(dag), "method": method, "theta": float(theta) if method == "threshold" else None, "roots": roots,
        "rows_per_step": rows_per_step, "retained_mass": retained,
        "bandwidths": {v: kern[v].bandwidth_for(data[v].to_numpy()) for v in log_k if isinstance(kern[v], Gaussian)},
    }
    return out


def _kernel_weights(log_ks: list[np.ndarray], rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Product-kernel weights (block, n) of partial rows against every observed row, scaled so each row's
    largest is 1, and which partial rows have any non-zero weight (the others have no continuation)."""
    logit = sum(lk[r] for lk, r in zip(log_ks, rows, strict=True))
    top = logit.max(axis=1, keepdims=True)
    alive = np.isfinite(top[:, 0])
    weights = np.zeros_like(logit)
    weights[alive] = np.exp(logit[alive] - top[alive])
    return weights, alive


def _sample_paths(dag: Dag, roots: str, log_k: dict, canon: dict, n: int, m: int, block_cells: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, list[str], dict[str, int]]:
    """Ancestral sampling of ``m`` paths; a path whose parents have zero kernel weight everywhere is dropped."""
    first_block = dag.roots if roots == "joint" else dag.roots[:1]
    start = rng.integers(n, size=m)
    cols = [canon[v][start] for v in first_block]
    done = list(first_block)
    steps = {"+".join(first_block): m}
    alive = np.ones(m, bool)
    block = max(1, block_cells // n)
    for v in dag.order:
        if v in done:
            continue
        parents = dag.parents[v]
        pick = np.zeros(m, dtype=np.int64)
        if not parents:
            pick = rng.integers(n, size=m)
        else:
            u = rng.random(m)
            for b in range(0, m, block):
                sl = slice(b, b + block)
                prob, ok = _kernel_weights([log_k[p] for p in parents], [cols[done.index(p)][sl] for p in parents])
                cdf = np.cumsum(prob, axis=1)
                total = cdf[:, -1].copy()
                total[~ok] = 1.0
                pick[sl] = np.minimum((cdf < (u[sl] * total)[:, None]).sum(axis=1), n - 1)
                alive[sl] &= ok
        cols.append(canon[v][pick])
        done.append(v)
        steps[v] = int(alive.sum())
    return np.stack(cols, axis=1)[alive], done, steps


def _threshold_paths(dag: Dag, roots: str, log_k: dict, canon: dict, n: int, theta: float, max_rows: int,
                     block_cells: int) -> tuple[np.ndarray, np.ndarray, list[str], dict[str, int]]:
    """Every extension whose relative weight exceeds ``theta``, merged; see the module docstring."""
    roots_list = dag.roots
    first_block = roots_list if roots == "joint" else roots_list[:1]
    done: list[str] = list(first_block)
    idx = np.stack([canon[v] for v in first_block], axis=1)
    idx, weight = _merge(idx, np.full(n, 1.0 / n))
    scale = float(n)  # 1 / (weight of a root path): relative weight = weight * scale
    rows_per_step = {"+".join(first_block): len(weight)}
    for v in dag.order:
        if v in done:
            continue
        parents = dag.parents[v]
        if not parents:  # roots="independent": every observed value, factor 1/n, not pruned
            _check_size(len(weight) * n, max_rows, v, theta)
            idx = np.concatenate([np.repeat(idx, n, axis=0), np.tile(canon[v], len(weight))[:, None]], axis=1)
            weight = np.repeat(weight, n) / n
            scale *= n
        else:
            cols = [done.index(p) for p in parents]
            idx, weight = _extend(idx, weight, [log_k[p] for p in parents], cols, canon[v], scale, theta,
                                  max_rows, block_cells, v)
        done.append(v)
        idx, weight = _merge(idx, weight)
        rows_per_step[v] = len(weight)
        if not len(weight):
            break
    return idx, weight, done, rows_per_step


def _check_size(rows: int, max_rows: int, variable: str, theta: float) -> None:
    if rows > max_rows:
        raise AugmentationError(
            f"augmentation would keep {rows:,} rows after variable {variable!r}, more than max_rows = {max_rows:,}; "
            f"raise theta (now {theta:g}), or max_rows if the memory allows (about 8 bytes per row and variable)."
        )


def _extend(idx: np.ndarray, weight: np.ndarray, log_ks: list[np.ndarray], cols: list[int], values: np.ndarray,
            scale: float, theta: float, max_rows: int, block_cells: int, variable: str,
            ) -> tuple[np.ndarray, np.ndarray]:
    """One conditional step, in blocks of partial rows: keep (row, observed r) with relative weight > theta."""
    n = log_ks[0].shape[0]
    block = max(1, block_cells // n)
    codes, first = np.unique(values, return_inverse=True)[1], np.unique(values)
    child_codes = None
    if len(first) < n:
        child_codes = sparse.csr_array((np.ones(n), (np.arange(n), codes)), shape=(n, len(first)))
        values = first
    keep_rows, keep_r, keep_w = [], [], []
    kept = 0
    for start in range(0, len(weight), block):
        sl = slice(start, start + block)
        prob, alive = _kernel_weights(log_ks, [idx[sl, c] for c in cols])
        prob[alive] /= prob[alive].sum(axis=1, keepdims=True)
        if child_codes is not None:  # equal child values are one continuation: sum before pruning
            prob = np.asarray(prob @ child_codes)
        w = weight[sl, None] * prob
        i, r = np.nonzero(w * scale > theta)
        kept += len(i)
        _check_size(kept, max_rows, variable, theta)
        keep_rows.append(i + start)
        keep_r.append(r)
        keep_w.append(w[i, r])
    rows = np.concatenate(keep_rows)
    new = np.concatenate([idx[rows], values[np.concatenate(keep_r)][:, None]], axis=1)
    return new, np.concatenate(keep_w)


def _merge(idx: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge equal partial rows (same canonical indices), summing their weights; sorted rows."""
    if not len(weight):
        return idx, weight
    uniq, inverse = np.unique(idx, axis=0, return_inverse=True)
    return uniq, np.bincount(inverse.ravel(), weights=weight, minlength=len(uniq))
