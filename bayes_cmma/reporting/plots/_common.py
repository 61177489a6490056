"""What every plot function shares: accepted inputs, credible bands, labels."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from bayes_cmma import dims
from bayes_cmma.errors import BayesCMMAError

#: Credible-band probabilities of every band plot (inner, outer), equal-tailed.
BANDS = (0.5, 0.94)


def legend_below(fig: Figure, axes: Sequence[Axes], ncol: int | None = None, fontsize: float = 8) -> None:
    """One legend for the figure, outside and below every axes, so it never covers data.

    It gathers the labelled artists of ``axes`` in order (the first of each label); the figure's
    constrained layout makes room for it.
    """
    entries: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(list(entries.values()), list(entries), loc="outside lower center",
                   ncol=ncol or min(len(entries), 4), fontsize=fontsize, frameon=False)


def as_tree(fit: Any) -> xr.DataTree:
    """The posterior DataTree of a MetricFit, or the tree itself."""
    if isinstance(fit, xr.DataTree):
        return fit
    tree = getattr(fit, "posterior", None)
    if isinstance(tree, xr.DataTree):
        return tree
    raise BayesCMMAError(f"expected a MetricFit or a posterior DataTree, got {type(fit).__name__}.")


def as_trees(results: Any) -> dict[str, xr.DataTree]:
    """metric -> posterior tree, from a CMMAResult, a mapping of fits/trees, or one fit/tree."""
    fits = getattr(results, "fits", results)
    if isinstance(fits, Mapping):
        trees = {str(m): as_tree(f) for m, f in fits.items()}
    else:
        tree = as_tree(fits)
        trees = {metric_of(tree): tree}
    if not trees:
        raise BayesCMMAError("no fitted metric to plot.")
    return trees


def metric_of(tree: xr.DataTree) -> str:
    return str(tree.attrs.get("metric", tree["observed_data"][dims.QUANTITY].values[1]))


def kpi_of(tree: xr.DataTree) -> str:
    return str(tree.attrs.get("kpi", tree["observed_data"][dims.QUANTITY].values[0]))


def flat_draws(da: xr.DataArray) -> np.ndarray:
    """(chain, draw, ...) -> (n, ...)."""
    da = da.transpose(*dims.SAMPLE_DIMS, ...)
    return da.values.reshape(-1, *da.shape[2:])


def band_quantiles(draws: np.ndarray, prob: float) -> tuple[np.ndarray, np.ndarray]:
    """Equal-tailed ``prob`` interval over the first axis."""
    lo, hi = np.quantile(draws, [(1 - prob) / 2, (1 + prob) / 2], axis=0)
    return lo, hi


def draw_bands(
    ax: Axes, x: np.ndarray, draws: np.ndarray, color: str, label: str, probs: Sequence[float] = BANDS
) -> None:
    """Posterior mean line and nested equal-tailed bands (``draws``: (n, len(x)))."""
    for prob, alpha in zip(sorted(probs, reverse=True), (0.18, 0.35), strict=False):
        lo, hi = band_quantiles(draws, prob)
        ax.fill_between(x, lo, hi, color=color, alpha=alpha, lw=0, label=f"{100 * prob:g}% credible band")
    ax.plot(x, draws.mean(axis=0), color=color, lw=2, label=label)
