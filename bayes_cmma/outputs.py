"""Tables of a fit and their atomic writing to an output folder.

Everything is first written into a temporary folder next to the target; only when every file is
complete are they moved into place (``os.replace``, atomic per file). A crash or Ctrl-C before that
leaves the previous outputs untouched and no partial file behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from bayes_cmma import dims
from bayes_cmma.derived import interval_table
from bayes_cmma.diagnostics import CI_PROB, summary_table
from bayes_cmma.fitting import CMMAResult

Writer = Callable[[Path], None]


#: Tables a fit may write; one a new run does not write is removed, so no stale table from an
#: earlier run sits next to the new ones (e.g. a rerun without --at).
TABLE_NAMES = ("summary.csv", "elasticity.csv", "ranking.csv", "drf.csv", "ols.csv", "assumptions.csv",
               "report.html")


def write_atomically(
    out_dir: str | Path, files: Mapping[str, Writer], stale: Sequence[str] = TABLE_NAMES
) -> list[Path]:
    """Write each ``name -> writer(path)`` into ``out_dir`` atomically; return the final paths.

    Files named in ``stale`` (default: a fit's :data:`TABLE_NAMES`) that this call does not write
    are removed from ``out_dir`` once the new files are in place.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for name, writer in files.items():
            writer(tmp / name)
        out.mkdir(exist_ok=True)
        final = []
        for name in files:
            os.replace(tmp / name, out / name)
            final.append(out / name)
        for name in stale:
            if name not in files:
                (out / name).unlink(missing_ok=True)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_files_atomically(files: Mapping[str | Path, Writer]) -> list[Path]:
    """Write each ``path -> writer(path)`` to a temporary file beside it, then move all into place.

    Nothing is moved until every writer has finished, so a failure leaves no partial file and no
    new file at all.
    """
    temps: dict[Path, Path] = {}
    try:
        for target, writer in files.items():
            target = Path(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
            os.close(fd)
            temps[target] = Path(name)
            writer(temps[target])
        for target, tmp in temps.items():
            os.replace(tmp, target)
        return list(temps)
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)


def summary_frame(result: CMMAResult, prob: float = CI_PROB) -> pd.DataFrame:
    """Parameters of every metric's model (original scale), one row each, with diagnostics."""
    parts = []
    for metric, fit in result.fits.items():
        table = summary_table(fit.posterior, prob=prob).reset_index()
        table.insert(0, "metric", metric)
        parts.append(table)
    return pd.concat(parts, ignore_index=True)


def elasticity_frame(
    result: CMMAResult, at: Mapping[str, float], lift: float, baseline: float | None, prob: float = CI_PROB
) -> pd.DataFrame:
    """Elasticity of each metric at its current value: mean, sd and interval."""
    el = result.elasticity(at, lift=lift, baseline=baseline)
    table = interval_table(el, prob=prob)
    table.insert(1, "at", [float(at[m]) for m in table[dims.METRIC]])
    table.insert(2, "lift", lift)
    table.insert(3, "baseline", "mu(m)" if baseline is None else baseline)
    return table


def ranking_frame(ranking: xr.Dataset) -> pd.DataFrame:
    """One row per metric: P(best), expected rank, expected regret, P(rank = r) columns."""
    table = ranking[["p_best", "expected_rank", "expected_regret", "elasticity_mean"]].to_dataframe()
    for r in ranking[dims.RANK].values:
        table[f"p_rank_{r}"] = ranking["p_rank"].sel({dims.RANK: r}).values
    return table.reset_index().sort_values("expected_rank", kind="stable")


def drf_frame(result: CMMAResult, grids: Mapping[str, np.ndarray], prob: float = CI_PROB) -> pd.DataFrame:
    """Posterior DRF of each metric on its grid (mean and interval), long format."""
    parts = []
    for metric, grid in grids.items():
        table = interval_table(result[metric].drf(grid), prob=prob).rename(columns={dims.GRID: "metric_value"})
        table.insert(0, dims.METRIC, metric)
        parts.append(table)
    return pd.concat(parts, ignore_index=True)
