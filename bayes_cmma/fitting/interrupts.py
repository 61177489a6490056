"""Ctrl-C that is never lost.

Python turns SIGINT into a ``KeyboardInterrupt`` raised in whatever code runs at that moment. When
that code is a finaliser or a weakref callback (garbage collection runs them at arbitrary points),
Python reports the exception as "Exception ignored in ..." and carries on: a run interrupted while
writing its outputs then finished and replaced the previous outputs. While :func:`catching` is
active, every SIGINT is also recorded, the "ignored" report of such an interrupt is silenced, and
:func:`check` raises it again at the points that must not be passed after Ctrl-C: before a sampler
starts, before a set of output files is committed, between replications of a study.

Outside :func:`catching` (library use, or another thread) :func:`check` does nothing and Python's
own handling applies.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_pending = threading.Event()


def _on_sigint(signum: int, frame: Any) -> None:
    _pending.set()
    raise KeyboardInterrupt


@contextmanager
def catching() -> Iterator[None]:
    """Record Ctrl-C for :func:`check` while the block runs (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous_handler = signal.signal(signal.SIGINT, _on_sigint)
    previous_hook = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        # the interrupt is recorded and check() raises it; the "Exception ignored" report is noise
        if isinstance(unraisable.exc_value, KeyboardInterrupt) and _pending.is_set():
            return
        previous_hook(unraisable)

    _pending.clear()
    sys.unraisablehook = hook
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous_handler)
        sys.unraisablehook = previous_hook
        _pending.clear()


def check() -> None:
    """Raise ``KeyboardInterrupt`` if Ctrl-C was pressed inside :func:`catching`, even if it was swallowed."""
    if _pending.is_set():
        raise KeyboardInterrupt


__all__ = ["catching", "check"]
