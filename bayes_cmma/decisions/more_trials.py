"""The value of more trials: how K_new more trials like the past ones would change the choice (docs: model.md).

A preposterior analysis on the elasticity draws the ranking uses (from the joint model or from
the separate fits). With K past trials the posterior of the metrics' elasticities e (metric,) is
approximated as N(m, V) (its mean and covariance over the draws). K_new more trials like the past
ones add about K_new / K times the information the K trials gave, so, by the usual normal
updating (the posterior covariance standing in for the sampling covariance of an estimate from K
trials):

- an estimate from the new trials alone is e_hat ~ N(e, V K / K_new) given the true e;
- the updated posterior is N(m', V'), m' = (K m + K_new e_hat) / (K + K_new), V' = V K / (K + K_new).

The true e is drawn from the current posterior (its draws, not the normal approximation), the new
estimate from the line above, and the decision after the new trials is the metric with the largest
m' (the Bayes choice for expected regret). Averaged over draws this gives, per K_new:

``p_correct``
    P(the metric chosen after K_new more trials is truly best);
``expected_regret``
    E[max_j e_j - e_chosen], in elasticity units;
``expected_p_best``
    the expected P(best) of the chosen metric after K_new more trials (from N(m', V'));
``p_confident``
    P(that P(best) >= ``target``, 0.9 by default).

K_new = 0 is today: ``p_correct`` is then the current P(best) of the metric with the largest mean.
``trials_needed`` (an attribute) is the smallest K_new of the grid whose ``expected_p_best``
reaches the target. The approximation is checked against refits on simulated data in
``benchmarks/more_trials_check.py`` (docs: checks.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import xarray as xr

from bayes_cmma import dims
from bayes_cmma.errors import BayesCMMAError

#: Default numbers of new trials.
DEFAULT_NEW_TRIALS = (0, 10, 20, 50, 100, 200, 500)
#: Draws of the current posterior used as the truth (thinned evenly when there are more).
MAX_DRAWS = 4000


def _p_best_of(mean: np.ndarray, chol: np.ndarray, choice: np.ndarray, mc: int, rng: np.random.Generator
               ) -> np.ndarray:
    """P(choice is the largest) under N(mean, L L') per row, by Monte Carlo with ``mc`` normals per row.

    Fresh normals for every row: normals shared by all rows would give every row the same Monte
    Carlo error, which the average over rows would not shrink (seen: the expected P(best) going
    0.95, 0.96, 0.95 with more trials on the example data).
    """
    J = mean.shape[-1]
    out = np.empty(len(mean))
    step = max(1, 2_000_000 // (mc * J))
    for s in range(0, len(mean), step):
        rows = len(mean[s:s + step])
        sims = mean[s:s + step, None, :] + rng.standard_normal((rows, mc, J)) @ chol.T  # (rows, mc, J)
        out[s:s + step] = (np.argmax(sims, axis=-1) == choice[s:s + step, None]).mean(axis=-1)
    return out


def preposterior(
    draws: np.ndarray,
    n_trials: int,
    new_trials: Sequence[int],
    *,
    replicates: int = 2,
    mc: int = 400,
    target: float = 0.9,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """The module's quantities from elasticity draws (draw, metric); arrays over ``new_trials``."""
    E = np.asarray(draws, dtype=float)
    D, J = E.shape
    m = E.mean(axis=0)
    V = np.atleast_2d(np.cov(E, rowvar=False))
    V = V + 1e-12 * max(float(np.trace(V)) / J, 1e-300) * np.eye(J)  # a jitter against exactly collinear draws
    L = np.linalg.cholesky(V)
    truth = np.repeat(E, replicates, axis=0)
    best_true = truth.max(axis=-1)
    out = {k: np.empty(len(new_trials)) for k in ("p_correct", "expected_regret", "expected_p_best", "p_confident",
                                                  "p_correct_mcse")}
    for i, k in enumerate(new_trials):
        if k == 0:
            post_mean = np.broadcast_to(m, truth.shape)
            chol = L
        else:
            estimate = truth + rng.standard_normal(truth.shape) @ (L * np.sqrt(n_trials / k)).T
            post_mean = (n_trials * m + k * estimate) / (n_trials + k)
            chol = L * np.sqrt(n_trials / (n_trials + k))
        choice = np.argmax(post_mean, axis=-1)
        chosen = np.take_along_axis(truth, choice[:, None], axis=-1)[:, 0]
        correct = chosen == best_true
        p_best = _p_best_of(post_mean, chol, choice, mc, rng)
        _record(out, i, correct, best_true - chosen, p_best, target, D)
    return out


def _record(out: dict[str, np.ndarray], i: int, correct: np.ndarray, regret: np.ndarray, p_best: np.ndarray,
            target: float, n_draws: int) -> None:
    """Row ``i`` of the module's quantities from per-row outcomes (the draws, not their replicates, are the
    independent units of the Monte Carlo standard error)."""
    out["p_correct"][i] = correct.mean()
    out["p_correct_mcse"][i] = correct.std() / np.sqrt(n_draws)
    out["expected_regret"][i] = regret.mean()
    out["expected_p_best"][i] = p_best.mean()
    out["p_confident"][i] = (p_best >= target).mean()


def value_of_trials(
    elasticity: xr.DataArray,
    n_trials: int,
    new_trials: Sequence[int] = DEFAULT_NEW_TRIALS,
    *,
    target: float = 0.9,
    replicates: int = 2,
    seed: int = 0,
) -> xr.Dataset:
    """How K_new more trials like the past ones would change the choice of north star.

    Parameters
    ----------
    elasticity : DataArray (metric, chain, draw)
        The elasticity draws the ranking uses (``JointFit.elasticity`` or ``CMMAResult.elasticity``).
    n_trials : int
        K, the number of trials the posterior is based on.
    new_trials : sequence of int
        Numbers of new trials (0 = today); default 0, 10, 20, 50, 100, 200, 500.
    target : float
        The P(best) a decision-maker wants (default 0.9).
    replicates : int
        Simulated new-trial estimates per posterior draw.
    seed : int
        Seed of the simulation (same seed, same numbers).

    Returns
    -------
    xarray.Dataset over ``new_trials``: ``p_correct``, ``p_correct_mcse``, ``expected_regret``,
    ``expected_p_best``, ``p_confident``; attrs ``n_trials``, ``target``, ``trials_needed`` (-1 when
    the grid does not reach the target), ``method``.
    """
    grid = _check_value_args(elasticity, n_trials, new_trials, target, replicates)
    flat = elasticity.transpose(*dims.SAMPLE_DIMS, dims.METRIC).values.reshape(-1, elasticity.sizes[dims.METRIC])
    if np.any(np.ptp(flat, axis=1) == 0):
        raise BayesCMMAError("some elasticity draws tie exactly (the tie prior's draws): the normal preposterior "
                             "cannot carry a tie. Use value_of_trials_tie with the tie prior's draws "
                             "(JointFit.tie_posterior), or pass the joint fit's own draws (JointFit.elasticity).")
    if len(flat) > MAX_DRAWS:
        flat = flat[np.linspace(0, len(flat) - 1, MAX_DRAWS).round().astype(int)]
    res = preposterior(flat, int(n_trials), grid.tolist(), replicates=int(replicates), target=float(target),
                       rng=np.random.default_rng(seed))
    return _value_dataset(res, grid, n_trials, target,
                          "normal preposterior approximation (docs: model.md, 'The value of more trials')")


def _check_value_args(elasticity: xr.DataArray, n_trials: int, new_trials: Sequence[int], target: float,
                      replicates: int) -> np.ndarray:
    """One error naming the bad argument; the grid of new trials as integers."""
    if dims.METRIC not in elasticity.dims or elasticity.sizes[dims.METRIC] < 2:
        raise BayesCMMAError("the value of more trials needs elasticity draws of 2 or more metrics (dim 'metric').")
    if not (isinstance(n_trials, int | np.integer) and n_trials >= 1):
        raise BayesCMMAError(f"n_trials must be a positive integer (the trials the fit used), got {n_trials!r}.")
    grid = np.asarray(list(new_trials))
    if grid.ndim != 1 or grid.size == 0 or not np.all(np.isfinite(grid.astype(float))) \
            or np.any(grid < 0) or np.any(grid != np.round(grid)):
        raise BayesCMMAError(f"new_trials must be whole numbers >= 0, got {list(new_trials)!r}.")
    if not 0 < target < 1:
        raise BayesCMMAError(f"target must be a probability between 0 and 1, got {target!r}.")
    if not (isinstance(replicates, int | np.integer) and replicates >= 1):
        raise BayesCMMAError(f"replicates must be a positive integer, got {replicates!r}.")
    if not np.all(np.isfinite(elasticity.values)):
        raise BayesCMMAError("the elasticity draws have non-finite values; check the KPI baseline and the levels.")
    return grid.astype(int)


def _value_dataset(res: dict[str, np.ndarray], grid: np.ndarray, n_trials: int, target: float,
                   method: str) -> xr.Dataset:
    reached = grid[res["expected_p_best"] >= target]
    out = xr.Dataset({k: (dims.NEW_TRIALS, v) for k, v in res.items()}, coords={dims.NEW_TRIALS: grid})
    out.attrs.update({"n_trials": int(n_trials), "target": float(target),
                      "trials_needed": int(reached.min()) if reached.size else -1, "method": method})
    return out


def _share_if_best(truth: np.ndarray, choice: np.ndarray) -> np.ndarray:
    """Per row: 1 / (number of metrics tied at the maximum) if ``choice`` is among them, else 0 (as
    :func:`bayes_cmma.rank_metrics` splits P(best) among exactly tied metrics)."""
    top = truth == truth.max(axis=-1, keepdims=True)
    return np.take_along_axis(top, choice[:, None], axis=-1)[:, 0] / top.sum(axis=-1)


def _inverse_cdf(post: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Per row r, the grid points k with P(K <= k - 1) < u <= P(K <= k) under ``post[r]``: (rows, n).

    One sorted search over the rows' cumulative sums shifted by the row number (monotone overall)."""
    rows, G = post.shape
    cum = np.cumsum(post, axis=1)
    cum[:, -1] = 1.0
    offset = np.arange(rows)[:, None]
    k = np.searchsorted((cum + offset).ravel(), (u + offset).ravel(), side="left").reshape(u.shape)
    return np.minimum(k - offset * G, G - 1)


def tie_preposterior(
    tied: xr.Dataset,
    n_trials: int,
    new_trials: Sequence[int],
    *,
    replicates: int = 2,
    mc: int = 200,
    target: float = 0.9,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """The module's quantities under the tie prior, from :func:`bayes_cmma.decisions.ties.tie_posterior`'s
    output (its draws as the truth, its normal likelihood N(e_hat, V) as what the K trials said).

    K_new more trials give a likelihood N(e_hat', V K / (K + K_new)) with e_hat' = (K e_hat + K_new
    e_new) / (K + K_new), e_new ~ N(e, V K / K_new) given the true e; the tie prior's posterior is then
    recomputed exactly on its grid (the level L held at today's), the choice is the metric with the
    largest posterior mean, and its P(best) is estimated from ``mc`` draws of that posterior. A truly
    tied truth makes every metric best (regret 0); ``p_correct`` and P(best) split such ties as the
    ranking does, so ``p_correct`` at K_new = 0 is the ranking's P(best) of the choice.
    """
    from bayes_cmma.decisions.ties import TieGrid

    E = tied["elasticity"].transpose(*dims.SAMPLE_DIMS, dims.METRIC).values.reshape(-1, tied.sizes[dims.METRIC])
    if len(E) > MAX_DRAWS:
        E = E[np.linspace(0, len(E) - 1, MAX_DRAWS).round().astype(int)]
    e_hat = tied["likelihood_mean"].values
    V = tied["likelihood_cov"].values
    level, p_tie, scale = (float(tied.attrs[k]) for k in ("level", "prior_p_tie", "spread_scale"))
    D, J = E.shape
    truth = np.repeat(E, replicates, axis=0)
    L = np.linalg.cholesky(V)
    out = {k: np.empty(len(new_trials)) for k in ("p_correct", "expected_regret", "expected_p_best", "p_confident",
                                                  "p_correct_mcse")}
    for i, k in enumerate(new_trials):
        grid = TieGrid(V * n_trials / (n_trials + k), level, p_tie, scale)
        if k == 0:
            updated = np.broadcast_to(e_hat, truth.shape)
        else:
            estimate = truth + rng.standard_normal(truth.shape) @ (L * np.sqrt(n_trials / k)).T
            updated = (n_trials * e_hat + k * estimate) / (n_trials + k)
        p_best = np.empty(len(truth))
        choice = np.empty(len(truth), dtype=int)
        for s in range(0, len(truth), 500):  # rows in chunks: the Monte Carlo draws are (rows, mc, J, J)
            e = np.ascontiguousarray(updated[s:s + 500])
            post = grid.posterior(e)
            mean = ((post @ grid.M.reshape(len(grid.M), -1)).reshape(len(e), J, J) * e[:, None, :]).sum(axis=-1)
            c = np.argmax(mean, axis=-1)
            choice[s:s + 500] = c
            ks = _inverse_cdf(post, rng.random((len(e), mc)))
            centres = (grid.M.reshape(-1, J) @ e.T).T.reshape(len(e), -1, J)  # (row, grid, J): M_k e_r
            centre = np.take_along_axis(centres, ks[..., None], axis=1)
            draws = centre + (grid.chol[ks] * rng.standard_normal((len(e), mc, 1, J))).sum(axis=-1)
            top = draws == draws.max(axis=-1, keepdims=True)  # tied draws (grid point 0) share the best
            p_best[s:s + 500] = (np.take_along_axis(top, np.broadcast_to(c[:, None, None], (len(e), mc, 1)),
                                                    axis=-1)[..., 0] / top.sum(axis=-1)).mean(axis=-1)
        share = _share_if_best(truth, choice)
        chosen = np.take_along_axis(truth, choice[:, None], axis=-1)[:, 0]
        _record(out, i, share, truth.max(axis=-1) - chosen, p_best, target, D)
    return out


def value_of_trials_tie(
    tied: xr.Dataset,
    n_trials: int,
    new_trials: Sequence[int] = DEFAULT_NEW_TRIALS,
    *,
    target: float = 0.9,
    replicates: int = 2,
    seed: int = 0,
) -> xr.Dataset:
    """:func:`value_of_trials` under the tie prior (``fit --joint tie``), from
    :func:`bayes_cmma.decisions.ties.tie_posterior`'s output (``JointFit.tie_posterior``).

    The tie's probability is updated with the simulated new trials (:func:`tie_preposterior`): if
    the metrics truly tie, no number of trials separates them and the expected P(best) of the choice
    stays near 1/J, while the expected regret is then 0. Same arguments and output as
    :func:`value_of_trials`.
    """
    needed = {"elasticity", "likelihood_mean", "likelihood_cov"}
    if not isinstance(tied, xr.Dataset) or not needed <= set(tied.data_vars) \
            or not {"level", "prior_p_tie", "spread_scale"} <= set(tied.attrs):
        raise BayesCMMAError("value_of_trials_tie needs the output of tie_posterior (JointFit.tie_posterior): a "
                             f"Dataset with {sorted(needed)} and the tie prior's attrs.")
    grid = _check_value_args(tied["elasticity"], n_trials, new_trials, target, replicates)
    res = tie_preposterior(tied, int(n_trials), grid.tolist(), replicates=int(replicates), target=float(target),
                           rng=np.random.default_rng(seed))
    return _value_dataset(res, grid, n_trials, target, "tie-prior preposterior, normal likelihood "
                          "(docs: model.md, 'Ties between metrics')")


def value_frame(value: xr.Dataset) -> pd.DataFrame:
    """One row per number of new trials (``more_trials.csv``)."""
    frame = value.to_dataframe().reset_index()
    frame.insert(1, "total_trials", frame[dims.NEW_TRIALS] + int(value.attrs["n_trials"]))
    frame["target"] = float(value.attrs["target"])
    frame["method"] = str(value.attrs.get("method", ""))
    return frame


def under_tie_prior(table: pd.DataFrame) -> bool:
    """Whether ``more_trials.csv`` was made under the tie prior (:func:`value_of_trials_tie`)."""
    return "method" in table and str(table["method"].iloc[0]).startswith("tie-prior")


#: What the tie prior's numbers mean, for the terminal and the report.
TIE_NOTE = ("Under the tie prior the probability of the tie is updated too: if the metrics truly tie no number of "
            "trials separates them, so the expected P(best) of the choice can stay near 1 / (number of metrics) "
            "while the expected regret falls to 0; P(choice truly best) splits a true tie among the tied metrics.")


def trials_needed_sentence(table: pd.DataFrame) -> str:
    """How many new trials bring the expected P(best) of the choice to the target (``more_trials.csv``)."""
    target = float(table["target"].iloc[0])
    reached = table.loc[table["expected_p_best"] >= target, "new_trials"]
    if not len(reached):
        return (f"Even {int(table['new_trials'].max())} more trials do not bring the expected P(best) of the choice "
                f"to {target:g}.")
    if int(reached.min()) == 0:
        return f"The expected P(best) of the choice is already {target:g} or more today."
    return f"About {int(reached.min())} more trials bring the expected P(best) of the choice to {target:g}."


__all__ = [
    "DEFAULT_NEW_TRIALS",
    "TIE_NOTE",
    "preposterior",
    "tie_preposterior",
    "trials_needed_sentence",
    "under_tie_prior",
    "value_frame",
    "value_of_trials",
    "value_of_trials_tie",
]
