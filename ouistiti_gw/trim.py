"""Freed memory back to the system: glibc's ``malloc_trim``, coalesced to one call per moment.

Why it is needed: a dropped compressor frees zlib's state (tens of KiB touched per session, up
to ~150 KiB) in pieces under glibc's mmap threshold. Those go to the heap's free lists and stay
resident, scattered between the live sessions' own allocations: the process's RSS would not fall
when idle sessions drop their compressors, and "idle costs nothing" would be true of the heap
only. ``malloc_trim(0)`` returns every free page inside the heap (not just its top) with
``madvise``. Measured: 1000 compressors of 200-byte messages, dropped, keep ~36 KiB each
resident; trimmed, nothing of them stays. The same holds for what an ended session frees (its
buffers, zlib states, greenlet): each session's end asks for a trim too. 500 sessions with live
16 000-byte compressors, closed at once, left 45 KiB each resident before (no trim then, and a
reference cycle kept each session's objects until a full garbage collection), ~11 KiB now
(what stays is partial pages of the heap and of Python's own allocator, which no trim reaches).

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
