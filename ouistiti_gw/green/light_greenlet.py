"""A gevent ``Greenlet`` that does not record the stack it was spawned from.

gevent keeps, for debugging, the last 10 frames of the spawning stack on every greenlet it
spawns: a chain of small objects, about a kilobyte per greenlet. A gateway holding thousands of
idle sessions spawns two greenlets per session (the server's handler and one pump), so that
record is a few percent of its memory; the greenlet tree itself is still tracked.
"""
from __future__ import annotations

from gevent import Greenlet


class LightGreenlet(Greenlet):
    """``Greenlet`` with ``spawning_stack_limit = 0``; spawn with :meth:`LightGreenlet.spawn`."""

    spawning_stack_limit = 0
