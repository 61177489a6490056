"""Evaluation of causal data augmentation on random SCMs (the published protocol, measured here).

One replication (:func:`evaluate_once`): draw a random SCM (:mod:`bayes_cmma.augmentation.scm`), split 70/30
into train and test, augment the training part along the true DAG (:func:`bayes_cmma.augmentation.augment.augment`),
then, for each variable as the target and all others as features, train gradient-boosted trees
(XGBoost; 3-fold cross-validation over ``n_estimators`` in {10, 50, 200} and ``reg_lambda`` in
{1, 10, 100}, weighted by the augmentation weights) on the original and on the augmented training
set, and score both on the test set (MAPE and R^2). Distribution measures compare the (weighted)
augmented and the original training set with the held-out test set: the mean over variables of the
1-D Wasserstein distance, the KL divergence of Gaussian fits ``KL(test || train)``, and diversity, the
average relative difference in variance ``mean_j (Var_aug_j - Var_train_j) / Var_train_j``. Beside the
published threshold augmentation, the sampled one (``augment(method="sample")``) is evaluated the same way.

XGBoost is an optional dependency: ``pip install 'bayes_cmma[augment]'``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from bayes_cmma.augmentation.augment import WEIGHT, AugmentationError, augment
from bayes_cmma.augmentation.scm import SCMSettings, random_scm
from bayes_cmma.errors import BayesCMMAError

N_ESTIMATORS = (10, 50, 200)
REG_LAMBDA = (1.0, 10.0, 100.0)
FOLDS = 3


@dataclass(frozen=True)
class EvalSettings:
    """The augmentation and learner settings of one scenario.

    ``theta`` and ``max_rows`` apply to the threshold augmentation (``thr``); the sampled augmentation
    (``smp``) draws ``sample_factor * n_train`` rows.
    """

    theta: float = 1e-2
    n_estimators: tuple[int, ...] = N_ESTIMATORS
    reg_lambda: tuple[float, ...] = REG_LAMBDA
    max_rows: int = 200_000
    sample_factor: int = 10


def _xgboost():
    try:
        import xgboost
    except ImportError as exc:
        raise BayesCMMAError(
            "the augmentation evaluation trains XGBoost; install it with pip install 'bayes_cmma[augment]'."
        ) from exc
    return xgboost


def _cv_fit_predict(x: np.ndarray, y: np.ndarray, w: np.ndarray, x_test: np.ndarray, ev: EvalSettings,
                    rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Choose (n_estimators, reg_lambda) by weighted 3-fold CV MSE; refit on all rows; predict the test rows.

    One booster per (lambda, fold) is trained to the largest ``n_estimators`` and scored at each smaller
    count through ``iteration_range`` (the same trees a shorter run would grow).
    """
    xgb = _xgboost()
    folds = rng.permutation(len(y)) % FOLDS
    top = max(ev.n_estimators)
    loss = np.zeros((len(ev.reg_lambda), len(ev.n_estimators)))

    def train(rows: np.ndarray, lam: float, rounds: int):
        params = {"objective": "reg:squarederror", "tree_method": "hist", "lambda": lam, "nthread": 1, "seed": 0,
                  "verbosity": 0}
        return xgb.train(params, xgb.DMatrix(x[rows], y[rows], weight=w[rows]), num_boost_round=rounds)

    for i, lam in enumerate(ev.reg_lambda):
        for k in range(FOLDS):
            tr, va = folds != k, folds == k
            model = train(tr, lam, top)
            dva = xgb.DMatrix(x[va])
            for j, m in enumerate(ev.n_estimators):
                pred = model.predict(dva, iteration_range=(0, m))
                loss[i, j] += np.sum(w[va] * (pred - y[va]) ** 2)
    i, j = np.unravel_index(np.argmin(loss), loss.shape)
    model = train(np.ones(len(y), bool), ev.reg_lambda[i], ev.n_estimators[j])
    return model.predict(xgb.DMatrix(x_test)), {"n_estimators": ev.n_estimators[j], "reg_lambda": ev.reg_lambda[i]}


def _weighted_var(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    m = np.average(x, axis=0, weights=w)
    return np.average((x - m) ** 2, axis=0, weights=w)


def _gauss_kl(test: np.ndarray, train: np.ndarray, w: np.ndarray) -> float:
    """KL(N_test || N_train) of Gaussian fits (train weighted by ``w``); inf when the train fit is singular."""
    d = test.shape[1]
    if len(w) <= d:
        return float("inf")
    m0, s0 = test.mean(axis=0), np.cov(test, rowvar=False)
    m1 = np.average(train, axis=0, weights=w)
    s1 = np.cov(train, rowvar=False, aweights=w)
    sign1, logdet1 = np.linalg.slogdet(s1)
    _, logdet0 = np.linalg.slogdet(s0)
    if sign1 <= 0 or np.linalg.cond(s1) > 1e12:
        return float("inf")
    s1_inv = np.linalg.inv(s1)
    diff = m1 - m0
    return float(0.5 * (np.trace(s1_inv @ s0) + diff @ s1_inv @ diff - d + logdet1 - logdet0))


def distribution_measures(train: pd.DataFrame, weights: np.ndarray, test: pd.DataFrame) -> dict[str, float]:
    """Wasserstein (mean over variables), Gaussian KL to the test set, and diversity against ``reference``."""
    cols = list(test.columns)
    a, t = train[cols].to_numpy(float), test[cols].to_numpy(float)
    wass = np.mean([stats.wasserstein_distance(a[:, j], t[:, j], u_weights=weights) for j in range(len(cols))])
    return {"wasserstein": float(wass), "kl": _gauss_kl(t, a, weights)}


def evaluate_once(scm: SCMSettings, ev: EvalSettings, seed: np.random.SeedSequence) -> list[dict]:
    """One replication: one row per target variable with test MAPE and R^2 of three fits.

    Suffixes: ``orig`` (the training set), ``thr`` (threshold augmentation, the published method),
    ``smp`` (sampled augmentation). Every row also carries the replication's distribution measures and
    augmentation sizes; when an augmentation fails (no row, or more than ``max_rows`` rows, survive)
    its columns are NaN and ``error_<suffix>`` says why.
    """
    data_seed, split_seed, cv_seed, aug_seed = seed.spawn(4)
    sample = random_scm(scm, np.random.default_rng(data_seed))
    data = sample.data
    rng = np.random.default_rng(split_seed)
    perm = rng.permutation(len(data))
    n_train = round(0.7 * len(data))
    train, test = data.iloc[perm[:n_train]].reset_index(drop=True), data.iloc[perm[n_train:]].reset_index(drop=True)
    cols = list(data.columns)
    ones = np.ones(len(train))
    base = distribution_measures(train, ones, test)
    var_train = train[cols].to_numpy(float).var(axis=0)
    common = {
        **scm.to_dict(), "theta": ev.theta, "n_train": n_train, "n_edges": len(sample.dag.edges),
        "wasserstein_orig": base["wasserstein"], "kl_orig": base["kl"],
    }
    augmented: dict[str, pd.DataFrame | None] = {}
    for name, kwargs in (("thr", {"theta": ev.theta}), ("smp", {"method": "sample", "size": ev.sample_factor * n_train,
                                                                 "seed": np.random.default_rng(aug_seed)})):
        t0 = time.perf_counter()
        try:
            aug = augment(train, sample.dag, max_rows=ev.max_rows, **kwargs)
            info = aug.attrs["augmentation"]
            w = aug[WEIGHT].to_numpy()
            measures = distribution_measures(aug, w, test)
            var_aug = _weighted_var(aug[cols].to_numpy(float), w)
            common |= {f"n_{name}": len(aug), f"retained_mass_{name}": info["retained_mass"], f"error_{name}": "",
                       f"wasserstein_{name}": measures["wasserstein"], f"kl_{name}": measures["kl"],
                       f"diversity_{name}": float(np.mean((var_aug - var_train) / var_train))}
        except AugmentationError as exc:
            aug = None
            common |= {f"n_{name}": 0, f"retained_mass_{name}": np.nan, f"error_{name}": str(exc).split(";")[0],
                       f"wasserstein_{name}": np.nan, f"kl_{name}": np.nan, f"diversity_{name}": np.nan}
        common[f"time_{name}_s"] = time.perf_counter() - t0
        augmented[name] = aug
    rows = []
    cv_rngs = [np.random.default_rng(s) for s in cv_seed.spawn(len(cols))]
    for target, cv_rng in zip(cols, cv_rngs, strict=True):
        feats = [c for c in cols if c != target]
        y_test = test[target].to_numpy()
        row = {**common, "target": target, "is_root": not sample.dag.parents[target],
               "mechanism_of_target": sample.mechanisms[target]}
        fits = {"orig": (train, ones)} | {
            name: (aug, aug[WEIGHT].to_numpy() * len(aug)) for name, aug in augmented.items() if aug is not None
        }
        for name in ("orig", *augmented):
            if name not in fits:
                row |= {f"mape_{name}": np.nan, f"r2_{name}": np.nan, f"n_estimators_{name}": np.nan}
                continue
            frame, w = fits[name]
            pred, chosen = _cv_fit_predict(frame[feats].to_numpy(float), frame[target].to_numpy(float), w,
                                           test[feats].to_numpy(float), ev, cv_rng)
            err = pred - y_test
            row[f"mape_{name}"] = float(np.mean(np.abs(err) / np.maximum(np.abs(y_test), 1e-12)))
            row[f"r2_{name}"] = float(1 - np.sum(err**2) / np.sum((y_test - y_test.mean()) ** 2))
            row[f"n_estimators_{name}"] = chosen["n_estimators"]
        rows.append(row)
    return rows
