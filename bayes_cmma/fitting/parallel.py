"""Worker processes for CPU-bound fits: spawned, one BLAS/numba thread each, Ctrl-C left to the parent.

Shared by the simulation-study runner and :func:`bayes_cmma.fit_many`. Each worker keeps its own
compiled-model cache (:mod:`bayes_cmma.fitting.model`), so work of one model shape should go to one worker.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

#: Each worker computes on one core; multithreaded BLAS in several workers would oversubscribe the
#: cores (seen: 4 s instead of 1.2 s per study replication with 2 workers on 2 cores).
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def _worker_init() -> None:  # pragma: no cover - runs in worker processes
    import signal
    import warnings

    # Ctrl-C is handled by the parent, which stops the pool; workers just end
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    warnings.filterwarnings("ignore", message="PyTensor could not link to a BLAS", category=UserWarning)


@contextlib.contextmanager
def worker_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """A spawn-context process pool whose workers use one thread for BLAS and numba."""
    ctx = multiprocessing.get_context("spawn")
    saved = {k: os.environ.get(k) for k in THREAD_VARS}
    for k in THREAD_VARS:  # workers are spawned on demand and inherit the environment then
        os.environ.setdefault(k, "1")
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init) as pool:
            yield pool
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
