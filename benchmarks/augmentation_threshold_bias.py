"""Why the threshold augmentation misses the factorisation it samples from: a closed-form check.

On a 4-variable chain x -> y -> z -> u (n = 200, Gaussian kernels with Silverman's bandwidth), the
law the augmentation targets, prod_j P_obs(X_j | parent), has closed-form moments (products of the
row-normalised kernel matrices). For each theta, compares the threshold augmentation's weighted
standard deviation of each variable with that law's, and reports the rows kept and the share of
probability mass they carry; the sampled variant (``method="sample"``, 20n rows) for reference.

Run: ``python benchmarks/augmentation_threshold_bias.py`` (a few seconds).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bayes_cmma.augmentation.augment import WEIGHT, AugmentationError, Gaussian, augment


def data(n: int = 200, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = 2 * x + rng.normal(size=n)
    z = np.sin(y) + 0.3 * rng.normal(size=n)
    u = z**2 + 0.5 * rng.normal(size=n)
    return pd.DataFrame({"x": x, "y": y, "z": z, "u": u})


def factorisation_sd(df: pd.DataFrame) -> dict[str, float]:
    """sd of each variable under prod_j P_obs(X_j | parent), from the kernel matrices."""
    cols = list(df.columns)
    n = len(df)
    dist = np.full(n, 1.0 / n)  # law of the row index whose value the current variable takes
    out = {}
    for j, c in enumerate(cols):
        if j:
            parent = df[cols[j - 1]].to_numpy()
            h = Gaussian().bandwidth_for(parent)
            k = np.exp(-0.5 * ((parent[:, None] - parent[None, :]) / h) ** 2)
            dist = dist @ (k / k.sum(axis=1, keepdims=True))
        v = df[c].to_numpy()
        mean = dist @ v
        out[c] = float(np.sqrt(dist @ (v - mean) ** 2))
    return out


def weighted_sd(aug: pd.DataFrame, c: str) -> float:
    w = aug[WEIGHT].to_numpy()
    m = np.average(aug[c], weights=w)
    return float(np.sqrt(np.average((aug[c] - m) ** 2, weights=w)))


def main() -> None:
    df = data()
    truth = factorisation_sd(df)
    cols = list(df.columns)
    print("| augmentation | rows | mass kept | " + " | ".join(f"sd {c}" for c in cols) + " |")
    print("|---|---:|---:|" + "---:|" * len(cols))
    print("| target law (closed form) | | 1 | " + " | ".join(f"{truth[c]:.3f}" for c in cols) + " |")
    print("| observed rows | 200 | | " + " | ".join(f"{df[c].std(ddof=0):.3f}" for c in cols) + " |")
    for theta in (1e-1, 1e-2, 1e-3, 1e-4, 1e-5):
        try:
            aug = augment(df, "x -> y -> z -> u", theta=theta, max_rows=5_000_000)
        except AugmentationError as exc:
            print(f"| threshold, theta = {theta:g} | {str(exc).split(';')[0]} | | " + " | " * (len(cols) - 1) + " |")
            continue
        info = aug.attrs["augmentation"]
        print(f"| threshold, theta = {theta:g} | {len(aug)} | {info['retained_mass']:.3g} | "
              + " | ".join(f"{weighted_sd(aug, c):.3f}" for c in cols) + " |")
    aug = augment(df, "x -> y -> z -> u", method="sample", size=20 * len(df), seed=1)
    print(f"| sampled, 20n rows | {len(aug)} | | " + " | ".join(f"{weighted_sd(aug, c):.3f}" for c in cols) + " |")


if __name__ == "__main__":
    main()
