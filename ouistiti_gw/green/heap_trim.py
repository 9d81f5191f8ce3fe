"""Freed memory back to the system: glibc's ``malloc_trim``, coalesced to one call per moment.

Why it is needed: a dropped compressor frees zlib's state (tens of KiB touched per session, up
to ~150 KiB) in pieces under glibc's mmap threshold. Those go to the heap's free lists and stay
resident, scattered between the live sessions' own allocations: the process's RSS would not fall
when idle sessions drop their compressors, and "idle costs nothing" would be true of the heap
only. ``malloc_trim(0)`` returns every free page inside the heap (not just its top) with
``madvise``. The same holds for what an ended session frees (its buffers, zlib states,
greenlet): each session's end asks for a trim too. What stays resident with and without it:
``benchmarks/PROFILE.md``.

One trim per :data:`TRIM_DELAY` at most, process-wide, however many sessions drop at once; a
no-op where the C library has no ``malloc_trim`` (musl, macOS).
"""
from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any, Callable

import gevent

#: Seconds between a request and the trim it leads to: the drops of that moment share it.
TRIM_DELAY = 1.0


def _find_malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None


_malloc_trim = _find_malloc_trim()
_pending: Any = None


def trim_soon() -> None:
    """Give freed heap pages back to the system within :data:`TRIM_DELAY` seconds."""
    global _pending
    if _malloc_trim is None or _pending is not None:
        return
    _pending = gevent.get_hub().loop.timer(TRIM_DELAY)
    _pending.start(_trim)


def _trim() -> None:
    global _pending
    _pending.close()
    _pending = None
    if _malloc_trim is not None:
        _malloc_trim(0)
