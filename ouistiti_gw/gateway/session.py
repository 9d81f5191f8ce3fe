"""One gateway session: the UNIX connection and the two pumps between it and the WebSocket.

Knows sockets and :class:`~ouistiti_gw.green.websocket.WebSocket`, not WSGI. The client -> server pump
runs in the caller's greenlet, the other in one of its own; whichever ends first decides how the
other one ends, and nothing outlives :meth:`Session.run`: the pump greenlet is killed and the
UNIX socket is closed.

The data rules, both ways (as ouistiti's module, plus what it gets wrong), are the relay's:
:mod:`ouistiti_gw.gateway.relay`.

Around the pumps: the WebSocket's :attr:`~ouistiti_gw.green.websocket.WebSocket.keepalive` pings a
quiet client and interrupts the session once it went idle, or when our close was not answered in
time; a reload pauses the session and may move it to another process (:mod:`ouistiti_gw.reload.pause`).
"""
from __future__ import annotations

import errno
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import gevent
from gevent import socket

from ..core.frames import CloseCode, ProtocolViolation
from ..core.ratelimit import TokenBucket
from ..core.utf8 import Utf8Splitter
from ..green.heap_trim import trim_soon
from ..green.keepalive import Keepalive
from ..green.light_greenlet import LightGreenlet
from ..green.sockio import ReadPaused
from ..green.websocket import WebSocket, WebSocketClosed
from ..reload.live_sessions import LiveSessions, process_sessions
from ..reload.pause import Pause, restore
from ..reload.session_state import Admission, Login, SessionState
from .authorization import Authorized, login_of
from .relay import BackendWriteFailed, packets_to_client, server_feed, stream_to_client

log = logging.getLogger(__name__)

#: How long we wait for the client's close frame after sending ours (RFC 6455 section 7.1.1).
CLOSE_TIMEOUT_SECONDS = 5.0
#: The next session's :attr:`Session.id`.
_ids = itertools.count(1)


@dataclass(eq=False)
class Session:
    """Pump messages between ``websocket`` and the UNIX socket ``backend`` until either side ends.
    ``name`` and ``client`` are for the log line; the counters and codes are read after :meth:`run`."""

    websocket: WebSocket
    backend: socket.socket
    name: str
    client: str
    max_message_rate: float = 0
    ping_interval: float = 0
    idle_timeout: float = 0
    close_timeout: float = CLOSE_TIMEOUT_SECONDS
    #: Called once the session is over (metrics); it reads :attr:`close_code` and the counters.
    on_end: Callable[["Session"], None] | None = None
    #: Where the session is listed while it runs, for a stopping server to close it.
    live: LiveSessions = process_sessions
    started: float = field(default_factory=time.monotonic)
    #: The gateway's docroot: which gateway of a successor process takes the session on a reload.
    docroot: str = ""
    #: A PROXY header went out first on the UNIX connection (carried on a move: never sent twice).
    proxy_header_sent: bool = False
    #: How the session left this process on a reload: ``"moved"`` (it goes on in the successor)
    #: or ``"drained"`` (it could not move, and ended here); None otherwise.
    reload_outcome: str | None = None
    #: True when it came from another process (its log line says "resumed", not "open").
    resumed: bool = False
    #: The server's reads as text or binary, with a character cut by a read held back.
    splitter: Utf8Splitter = field(default_factory=Utf8Splitter, repr=False)
    #: Who the app's authorization let in, and the environ it asked with (None: no authorization,
    #: or a session moved by a reload from a process that did not carry it).
    authorized: Authorized | None = None
    #: What the session was admitted with: a reload's successor judges it again.
    admission: Admission = field(kw_only=True, repr=False)
    #: Its number in this process, from 1 (the admin endpoint's id; a moved session gets a new one).
    id: int = field(default_factory=lambda: next(_ids), kw_only=True)

    def __post_init__(self) -> None:
        self.bucket = TokenBucket(self.max_message_rate) if self.max_message_rate else None
        self.feed = server_feed(self.backend, self.seqpacket, self.websocket.protocol)
        #: From :meth:`pause` until the session goes on here or ends.
        self._pause: Pause | None = None
        #: A reload offered the session to another process: its sockets may have gone there too.
        self._offered = False

    @property
    def client_socket(self) -> socket.socket:
        return self.websocket.sock

    @property
    def login(self) -> Login | None:
        """What of :attr:`authorized` a reload carries (:func:`~ouistiti_gw.gateway.authorization.login_of`)."""
        return login_of(self.authorized)

    @property
    def seqpacket(self) -> bool:
        return self.backend.type == socket.SOCK_SEQPACKET

    def run(self, refusal: ProtocolViolation | None = None) -> None:
        """Run both pumps; return when the session is over and everything is released.

        The client -> server pump runs right here, in the greenlet that called us (the HTTP
        handler's, which would otherwise only wait); only the other one gets a greenlet. That
        is one greenlet and one stack fewer per idle session.

        With a ``refusal`` (a session a reload moved here that this configuration would not
        let in), the session starts with its close: its code and reason, and the client has
        :attr:`close_timeout` to answer, as for any close of ours.
        """
        _log_start(self)
        ws, keepalive = self.websocket, self.websocket.keepalive
        keepalive.start(ws, self.ping_interval, self.idle_timeout)
        to_client: LightGreenlet | None = LightGreenlet.spawn(self._server_to_client)
        self.live.add(self)
        if refusal is not None:
            log.warning("closing %s from %s: %s", self.name, self.client, refusal.reason)
            self.close(refusal.code, refusal.reason)
        try:
            while to_client is not None:
                try:
                    self._client_to_server()
                    break
                except ReadPaused:
                    to_client = self._paused(to_client)
        except Keepalive.Interrupted:
            keepalive.stop()  # the wait is over: a second deadline must not cut the close below
            if keepalive.went_idle:
                log.warning("closing %s from %s: nothing heard for %.1f s", self.name, self.client,
                            time.monotonic() - ws.last_heard)
                with gevent.Timeout(1, False):  # a vanished client may not take even this
                    ws.close(CloseCode.GOING_AWAY, "idle timeout")
        finally:
            keepalive.stop()  # first: nothing may be thrown at us past this point
            self.live.discard(self)
            if to_client is not None:
                to_client.kill()
            if self.reload_outcome == "moved":
                self.backend.close()  # our copy only: no shutdown, the successor carries on with it
            else:
                self._close_backend()
                ws.linger()
            self._log_end()
            trim_soon()  # what the session held goes back to the system (see heap_trim.py), one trim for many

    def pause(self) -> SessionState | None:
        """Stop both pumps before their next read and return the session's state, then wait for
        :meth:`moved`; None (it runs on here) when it cannot move
        (:class:`~ouistiti_gw.reload.pause.Pause`). From the reload's greenlet."""
        if self._pause is not None or not Pause.possible(self.websocket):
            return None
        self._pause = Pause()
        state = self._pause.wait_for_state(self)
        self._offered = self._offered or state is not None
        return state

    def moved(self, taken: bool) -> None:
        """After :meth:`pause` returned a state: True, the successor took the session (it ends
        here, without a close frame); False, it resumes here."""
        assert self._pause is not None
        if taken:
            self.reload_outcome = "moved"  # at once: nothing here may write to it any more
        self._pause.decide(taken)

    def _paused(self, to_client: LightGreenlet) -> LightGreenlet | None:
        """The client pump stopped before a read: wait for the other one, settle the move, and
        go on unless the session moved (then None). A server pump that ended the session
        instead (the server closed) leaves it ending here."""
        stopped, ws = to_client.get(), self.websocket
        assert self._pause is not None
        taken = self._pause.settle(self, stopped)
        self._pause = None
        if taken:
            return None
        ws.keepalive.start(ws, self.ping_interval, self.idle_timeout)
        if not stopped:
            ws.keepalive.interrupt_after(self.close_timeout)  # the server pump ended it: as it would have
            return to_client
        return LightGreenlet.spawn(self._server_to_client)

    def restore(self, state: SessionState) -> None:
        """Take over ``state``, a session paused in another process, before :meth:`run`."""
        restore(self, state)

    def close(self, code: int, reason: str) -> None:
        """End the session from outside (a server stopping): close frame now, the client has
        :attr:`close_timeout` to answer. Not once it moved, nor while a move is being decided:
        it is another process's then, or may be."""
        if self.reload_outcome == "moved" or (self._pause is not None and self._pause.deciding):
            return
        self.websocket.close(code, reason)
        self.websocket.keepalive.interrupt_after(self.close_timeout)

    def _client_to_server(self) -> None:
        ws, bucket, feed = self.websocket, self.bucket, self.feed
        feed.start()
        forward, before_read = feed.forward, feed.before_read  # taken once: see ServerFeed
        try:
            while ws.receive_streaming(forward, before_read):
                if bucket is not None and not bucket.take():
                    feed.flush()
                    log.warning("closing %s from %s: over %g messages/s", self.name, self.client,
                                self.max_message_rate)
                    ws.close(CloseCode.POLICY_VIOLATION, "message rate limit exceeded")
                    return
            feed.flush()  # what came before the client's close, or before it broke the protocol
        except BackendWriteFailed as failed:
            if failed.error.errno in (errno.EMSGSIZE, errno.ENOBUFS):
                ws.close(CloseCode.MESSAGE_TOO_BIG, "message too big for the server's socket")
            else:
                ws.close(CloseCode.INTERNAL_ERROR, "server connection lost")
            log.warning("write to %s failed: %s", self.name, failed.error)

    def _server_to_client(self) -> bool:
        """The server -> client pump; True when it stopped before a read (:meth:`pause`)."""
        ws = self.websocket
        try:
            if self.seqpacket:
                packets_to_client(ws, self.backend)
            else:
                stream_to_client(ws, self.backend, self.splitter)
        except ReadPaused:
            return True
        except WebSocketClosed:
            pass  # the client is gone; the other pump notices too
        except OSError as error:
            log.warning("read from %s failed: %s", self.name, error)
            ws.close(CloseCode.INTERNAL_ERROR, "server connection error")
        else:
            ws.close(CloseCode.NORMAL, "server closed the connection")
        ws.keepalive.interrupt_after(self.close_timeout)  # the client has that long to answer our close
        return False

    def _close_backend(self) -> None:
        """Only a descriptor a reload passed between processes (which may hold it a moment yet) needs
        a shutdown to end the server's reads now; our close of one that never left ends them."""
        if self.resumed or self._offered:
            try:
                self.backend.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already disconnected
        self.backend.close()

    @property
    def close_code(self) -> int:
        """The code that ended the session: ours if we closed first, else the client's (1006: none)."""
        ws = self.websocket
        code = ws.close_sent if ws.close_sent is not None else ws.close_received
        return int(code) if code is not None else int(CloseCode.ABNORMAL)

    def _log_end(self) -> None:
        ws = self.websocket
        if self.reload_outcome == "moved":
            log.info("session moved name=%s client=%s bytes_in=%d bytes_out=%d", self.name, self.client,
                     ws.bytes_received, ws.bytes_sent)
        else:
            log.info("session closed name=%s client=%s bytes_in=%d bytes_out=%d close=%s duration=%.3fs",
                     self.name, self.client, ws.bytes_received, ws.bytes_sent, self.close_code,
                     time.monotonic() - self.started)
        if self.on_end is not None:
            self.on_end(self)


def _log_start(session: Session) -> None:
    """DEBUG, formatted only if on: a session's INFO line is its end's, which says it all. A session
    resumed after a reload says so at INFO, the pair of the old process's "session moved"."""
    level = logging.INFO if session.resumed else logging.DEBUG
    if log.isEnabledFor(level):
        log.log(level, "session %s name=%s client=%s type=%s", "resumed" if session.resumed else "open",
                session.name, session.client, "seqpacket" if session.seqpacket else "stream")
