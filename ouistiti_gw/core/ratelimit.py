"""Rate limits, pure: the token bucket that paces one connection.

The protocol core pays its frame and byte budgets from it (:mod:`ouistiti_gw.core.protocol`), the session its
message rate (:mod:`ouistiti_gw.gateway.session`): limits on what one client may send (OWASP's WebSocket cheat
sheet), not admission decisions (those are :mod:`ouistiti_gw.gateway.admission`'s). No I/O: the clock is given.
"""
from __future__ import annotations

import time
from typing import Callable


class TokenBucket:
    """Allow ``rate`` events per second on average, in bursts of up to ``capacity`` (by default
    ``rate``: one second's worth)."""

    __slots__ = ("rate", "capacity", "tokens", "clock", "updated")  # one or two per session

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic,
                 capacity: float | None = None) -> None:
        self.rate = rate
        self.capacity = max(rate, 1.0) if capacity is None else capacity
        self.tokens = self.capacity
        self.clock = clock
        self.updated = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def take(self, count: int = 1) -> bool:
        """Spend ``count`` tokens if there are that many; False (nothing spent) if not.

        Events may be paid for in batches (one clock reading per batch, not per event) as long
        as a batch is no bigger than :attr:`capacity`.
        """
        self._refill()
        if self.tokens < count:
            return False
        self.tokens -= count
        return True

    def charge(self, count: float) -> float:
        """Spend ``count`` tokens, whatever there is: what was already used must be paid for,
        into debt if need be. Returns the seconds until the debt is paid back (0.0: none), for
        a caller that waits that long before it uses more."""
        self._refill()
        self.tokens -= count
        return -self.tokens / self.rate if self.tokens < 0 else 0.0

    def resume(self, tokens: float, updated: float) -> None:
        """Go on from another bucket's ``tokens`` at ``updated`` (a session moved by a reload:
        the same monotonic clock), never above this bucket's capacity (its rate may be new)."""
        self.tokens, self.updated = min(tokens, self.capacity), updated
