"""Asking the app again about the sessions it let in, and ending them when their login ends.

``auth_recheck = SECONDS`` repeats the decision of
:class:`~ouistiti_gw.gateway.authorization.Authorization` for each open session, with the
credentials of its upgrade request (:attr:`~ouistiti_gw.gateway.authorization.Authorized.credentials`),
once per period. An ``X-Auth-Expires`` ends the session at that time, rechecks or not.

One greenlet per gateway walks a schedule (a heap of due times), and only while there is
something on it: an idle session costs a heap entry, not a greenlet. The sessions are spread
over the period: each one gets its own phase, the next of a golden-ratio sequence, so that the
phases of any number of sessions stay evenly apart and a gateway full of sessions opened at
once (after a restart) is not asked about all of them in the same second. At most
:data:`CONCURRENCY` rechecks run at once, each under :data:`TIMEOUT_SECONDS`; the walk waits for
a free place, so the others wait their turn.

A refusal (401, 403, :class:`~ouistiti_gw.gateway.authorization.AuthorizationRefused`, another
user in the answer, a name the answer's user may no longer reach) closes the session with 1008
"authorization revoked". An app that cannot answer (5xx, an exception, the timeout) proves
nothing about the user: with ``auth_recheck_failure = keep`` (the default) the session goes on
and is asked again next period; with ``close`` it ends with 1011 "authorization check failed".
"""
from __future__ import annotations

import dataclasses
import heapq
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import gevent
from gevent.event import Event
from gevent.pool import Pool

from ..core.frames import CloseCode
from ..core.logsafe import loggable
from .authorization import Authorization, AuthorizationFailed, AuthorizationRefused, Authorized

if TYPE_CHECKING:
    from .metrics import Metrics

log = logging.getLogger(__name__)

#: Rechecks running at once, per gateway.
CONCURRENCY = 8
#: The longest one recheck may take before it counts as failed.
TIMEOUT_SECONDS = 10.0
#: The golden ratio's fractional part: successive multiples of it, modulo 1, stay evenly spread.
_GOLDEN = 0.6180339887498949
_RECHECK, _EXPIRE = "recheck", "expire"


class Closable(Protocol):
    """What a recheck ends: a :class:`~ouistiti_gw.gateway.session.Session`, whose
    ``authorized`` follows the latest allowed answer (a reload carries that one)."""

    name: str
    client: str
    authorized: Authorized | None

    def close(self, code: int, reason: str) -> None: ...


@dataclass(eq=False)
class Watch:
    """One session on the schedule, from :meth:`Rechecks.watch` until :meth:`Rechecks.unwatch`."""

    session: Closable
    authorized: Authorized
    #: Unix time the login ends (the latest answer's ``X-Auth-Expires``), or None.
    expires: int | None = None
    ended: bool = False
    #: Bumped when the expiry moves: an older expiry entry on the heap is then ignored.
    expiry_version: int = 0
    checking: bool = field(default=False, repr=False)

    @property
    def who(self) -> str:
        user = self.authorized.user
        return (f"{self.session.name} from {self.session.client} "
                f"(user {loggable(user.name) if user else 'anonymous'})")


class Rechecks:
    """The schedule of one gateway's rechecks (``period`` seconds, 0: expiries only)."""

    def __init__(self, authorization: Authorization, period: float, close_on_failure: bool = False,
                 metrics: Metrics | None = None, *, concurrency: int = CONCURRENCY,
                 timeout: float = TIMEOUT_SECONDS) -> None:
        self.authorization = authorization
        self.period = period
        self.close_on_failure = close_on_failure
        self.metrics = metrics
        self.timeout = timeout
        self.pool = Pool(concurrency)
        self._due: list[tuple[float, int, str, int, Watch]] = []
        self._order = itertools.count()
        self._phases = itertools.count(1)
        self._walker: gevent.Greenlet | None = None
        self._woken = Event()
        #: Entries of ended sessions still on the heap (an expiry may be days away).
        self._stale = 0

    def phase(self) -> float:
        """Seconds from now to the next session's first recheck, in (0, period): each call's differs."""
        return (next(self._phases) * _GOLDEN) % 1.0 * self.period or self.period

    def watch(self, session: Closable, authorized: Authorized) -> Watch:
        """Put ``session``, let in as ``authorized`` said, on the schedule until :meth:`unwatch`."""
        watch = Watch(session, authorized)
        if self.period > 0:
            self._push(time.monotonic() + self.phase(), _RECHECK, watch)
        self._expire_at(watch, authorized.user.expires if authorized.user else None)
        return watch

    def unwatch(self, watch: Watch) -> None:
        """The session is over. Its entries leave the heap when they come due, or all at once
        when the ended ones are half of it: an ended session is not held for long."""
        watch.ended = True
        self._stale += (self.period > 0) + (watch.expires is not None)  # an estimate: a compaction corrects it
        if self._stale > len(self._due) // 2:
            self._due = [entry for entry in self._due if not entry[4].ended]
            heapq.heapify(self._due)
            self._stale = 0

    def _expire_at(self, watch: Watch, expires: int | None) -> None:
        if expires == watch.expires:
            return
        watch.expires, watch.expiry_version = expires, watch.expiry_version + 1
        if expires is not None:
            self._push(time.monotonic() + (expires - time.time()), _EXPIRE, watch, watch.expiry_version)

    def _push(self, when: float, kind: str, watch: Watch, version: int = 0) -> None:
        heapq.heappush(self._due, (when, next(self._order), kind, version, watch))
        if self._walker is None:
            self._walker = gevent.spawn(self._walk)
        elif self._due[0][4] is watch:
            self._woken.set()  # it comes before what the walker waits for

    def _walk(self) -> None:
        """Wait for the next due entry, do it, and so on; gone once the schedule is empty."""
        try:
            while self._due:
                when, _, kind, version, watch = self._due[0]
                wait = when - time.monotonic()
                if wait > 0:
                    self._woken.clear()
                    self._woken.wait(wait)
                    continue
                heapq.heappop(self._due)
                if watch.ended:
                    self._stale = max(0, self._stale - 1)
                    continue
                if kind == _EXPIRE:
                    if version == watch.expiry_version:
                        gevent.spawn(self._end, watch, "expired", CloseCode.POLICY_VIOLATION,
                                     "authorization expired", f"its login expired at {watch.expires}")
                    continue
                self._push(max(when + self.period, time.monotonic()), _RECHECK, watch)
                if not watch.checking:  # the last one still runs (a slow app): this one is skipped
                    watch.checking = True
                    self.pool.spawn(self._recheck, watch)  # waits for a free place
        finally:
            self._walker = None

    def _recheck(self, watch: Watch) -> None:
        """Ask again; end the session if the answer is no (or, as configured, no answer)."""
        where = self.authorization.where
        try:
            with gevent.Timeout(self.timeout, AuthorizationFailed(f"no answer within {self.timeout:g} s")):
                user = self.authorization.again(watch.authorized, watch.session.name)
        except AuthorizationRefused as refused:
            self._end(watch, "revoked", CloseCode.POLICY_VIOLATION, "authorization revoked",
                      f"{where}: {loggable(refused.reason)}")
        except AuthorizationFailed as failed:
            if self.close_on_failure:
                self._end(watch, "failed", CloseCode.INTERNAL_ERROR, "authorization check failed",
                          f"{where} {loggable(failed)}")
            else:
                self._count("failed")
                log.warning("recheck of %s failed, the session goes on: %s %s", watch.who, where, loggable(failed))
        else:
            if not watch.ended:
                self._count("allowed")
                if user != watch.authorized.user:  # groups or expiry moved
                    watch.authorized = watch.session.authorized = dataclasses.replace(watch.authorized, user=user)
                self._expire_at(watch, user.expires if user else None)
        finally:
            watch.checking = False

    def _end(self, watch: Watch, result: str, code: int, reason: str, why: str) -> None:
        if watch.ended:
            return
        watch.ended = True
        self._count(result)
        log.warning("closing %s: %s: %s", watch.who, reason, why)
        watch.session.close(code, reason)

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.rechecked(result)
