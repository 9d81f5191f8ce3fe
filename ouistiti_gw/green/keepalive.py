"""A WebSocket's timers: pings to a quiet client, its idle timeout, the deadlines of the greenlet
that reads it, and the drop of an idle compressor.

Timers of the event loop, not greenlets: an idle session keeps a timer or two, not a greenlet and
its stack (what an idle session costs: ``benchmarks/PROFILE.md``). The greenlet that reads the
client learns that its wait is over by :class:`Keepalive.Interrupted`, thrown into it.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable

import gevent

from ..core.deflate import COMPRESSOR_IDLE_SECONDS
from ..core.protocol import Protocol
from .heap_trim import trim_soon

if TYPE_CHECKING:
    from .websocket import WebSocket

#: What a ping from the gateway carries.
PING_PAYLOAD = b"ouistiti-gw"


class Keepalive:
    """The timers of one :class:`~ouistiti_gw.green.websocket.WebSocket` (its ``keepalive``),
    from :meth:`start` to :meth:`stop`; none starts outside that span.

    The WebSocket is handed to :meth:`start` and :meth:`sender`, not kept: the timers hold it
    while they run and let go of it at :meth:`stop`. A keepalive that kept the WebSocket which
    keeps it would be a reference cycle, freed only by the garbage collector's next full run.
    """

    __slots__ = ("went_idle", "_reader", "_tick_timer", "_timers", "_drop_timer")

    class Interrupted(BaseException):
        """Thrown into the greenlet that reads the client to stop its wait: a deadline passed
        (our close was not answered in time), or the client went quiet (:attr:`went_idle`). A
        BaseException, as ``gevent.Timeout``, so no ``except Exception`` on the way swallows it;
        outside the package's error tree, as no caller ever sees it."""

    def __init__(self) -> None:
        #: The client sent nothing for ``idle_timeout``: the reader was interrupted for that.
        self.went_idle = False
        #: The greenlet that reads the client, while running.
        self._reader: Any = None
        #: The periodic timer (pings, idle timeout), and the deadlines set (a list once there is one).
        self._tick_timer: Any = None
        self._timers: list | None = None
        self._drop_timer: Any = None

    @property
    def running(self) -> bool:
        """Between :meth:`start` and :meth:`stop`."""
        return self._reader is not None

    def start(self, websocket: "WebSocket", ping_interval: float, idle_timeout: float) -> None:
        """Watch ``websocket`` for the calling greenlet, the one that reads it: ping the client
        every ``ping_interval`` it is quiet, interrupt the caller once nothing at all (not even a
        pong) came for ``idle_timeout``: the client is gone without a word (half-open). 0: off;
        no timer when both are."""
        self._reader = gevent.getcurrent()
        ticks = [t for t in (ping_interval, idle_timeout) if t]
        if ticks:
            timer = self._tick_timer = gevent.get_hub().loop.timer(min(ticks), min(ticks))
            timer.start(self._tick, websocket, ping_interval, idle_timeout)

    def interrupt_after(self, seconds: float) -> None:
        """Throw :class:`Keepalive.Interrupted` into the reader in ``seconds`` (0: at the event loop's next
        turn); nothing once stopped (its wait is already over)."""
        if self._reader is None:
            return
        timer = gevent.get_hub().loop.timer(seconds)
        timer.start(self._reader.throw, Keepalive.Interrupted())
        if self._timers is None:
            self._timers = []
        self._timers.append(timer)

    def stop(self) -> None:
        """Close every timer: nothing is thrown at the reader past this point."""
        if self._tick_timer is not None:
            self._tick_timer.close()
        for timer in self._timers or ():
            timer.close()
        self._tick_timer = self._timers = self._reader = None
        if self._drop_timer is not None:
            self._drop_timer.close()
            self._drop_timer = None

    def _tick(self, websocket: "WebSocket", ping_interval: float, idle_timeout: float) -> None:
        # Runs in the event loop itself: nothing here may block.
        quiet = time.monotonic() - websocket.last_heard
        if idle_timeout and quiet >= idle_timeout:
            if not self.went_idle:
                self.went_idle = True
                self.interrupt_after(0)
        elif ping_interval and quiet >= ping_interval:
            gevent.spawn(websocket.ping, PING_PAYLOAD)

    def sender(self, websocket: "WebSocket") -> Callable[..., None]:
        """``websocket.send``; with permessage-deflate, one that also watches the compressor: a
        compressor kept after a message gets a timer that drops it once it has been idle for
        :data:`~ouistiti_gw.core.deflate.COMPRESSOR_IDLE_SECONDS`, so an idle session holds no
        zlib state. A timer only while a compressor lives, not a periodic one per session."""
        send_message, protocol = websocket.send, websocket.protocol
        deflate = protocol.deflate
        if deflate is None:
            return send_message

        def send(data: bytes, *, text: bool) -> None:
            send_message(data, text=text)
            if self._drop_timer is None and deflate.compressing and self._reader is not None:
                self._drop_idle_compressor_in(COMPRESSOR_IDLE_SECONDS, protocol)
        return send

    def _drop_idle_compressor_in(self, seconds: float, protocol: Protocol) -> None:
        timer = self._drop_timer = gevent.get_hub().loop.timer(seconds)
        timer.start(self._drop_idle_compressor, protocol)

    def _drop_idle_compressor(self, protocol: Protocol) -> None:
        # Runs in the event loop itself, between two of the pump's messages (a message is
        # compressed without yielding): the drop happens at a message boundary.
        self._drop_timer.close()
        self._drop_timer = None
        left = protocol.drop_idle_compressor()
        if left is None:
            trim_soon()  # else its memory stays resident, scattered in the heap (see heap_trim.py)
        elif self._reader is not None:
            self._drop_idle_compressor_in(left, protocol)
