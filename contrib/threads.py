"""Run a blocking or CPU-heavy call in a real thread, off the gevent loop.

The sample servers serve every client from one gevent loop: a call that
computes (scrypt) or blocks in a library that knows nothing of gevent
(redis-py) would hold every client while it runs.  :func:`call_in_thread`
runs it in a thread of a gevent :class:`~gevent.threadpool.ThreadPool`
instead; the calling greenlet waits cooperatively, the loop goes on serving
the others.  This only helps where the work releases the GIL while it runs
(``hashlib.scrypt``, socket I/O, most C extensions): pure Python code holds
the GIL, and so the loop, either way.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Tuple, TypeVar

import gevent
import gevent.threadpool

T = TypeVar("T")


def call_in_thread(function: Callable[..., T], *args: Any,
                   pool: Optional[gevent.threadpool.ThreadPool] = None) -> T:
    """``function(*args)`` in a thread of *pool* (default: the hub's pool of
    10 threads), its result or exception returned or raised here.

    The exception is caught in the thread and raised in the caller's
    greenlet: one escaping a pool task would also be printed, with its
    traceback, by gevent's hub.
    """
    def shielded() -> Tuple[bool, Any]:
        try:
            return True, function(*args)
        except Exception as exc:  # noqa: BLE001 -- re-raised in the caller's greenlet
            return False, exc

    ok, outcome = (pool or gevent.get_hub().threadpool).apply(shielded)
    if not ok:
        raise outcome
    return outcome
