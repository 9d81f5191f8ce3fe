"""One gateway session: the UNIX connection and the two pumps between it and the WebSocket.

Knows sockets and :class:`~ouistiti_gw.green.websocket.WebSocket`, not WSGI. The client -> server pump
runs in the caller's greenlet, the other in one of its own; whichever ends first decides how the
other one ends, and nothing outlives :meth:`run`: the pump greenlet is killed and the UNIX socket
is closed.

Data rules (as ouistiti's module, plus what it gets wrong):

- client -> server: the payload of every message, text or binary alike, is written to the socket.
  On a stream socket, a message over :data:`STREAM_HOLD_SIZE` is written as it arrives (never held
  whole; one cut short by bad UTF-8 or a lost client has had its valid beginning written), smaller
  ones whole or not at all -- except a compressed one that is still coming: what it inflated to
  so far goes out before the client is read again, as it would cost the gateway far more than the
  client sent (and an unfinished message is kept compressed until 16 KiB of it came: see
  :mod:`ouistiti_gw.core.deflate`). On a ``SOCK_SEQPACKET`` socket one message is one packet, so a
  message longer than the largest packet the socket can send (:func:`largest_packet`) is
  refused with 1009 as soon as a frame header announces it, before its payload is read; a
  compressed message is kept as it came until its last frame, and only then inflated.
- server -> client: each read becomes one message, text when it is valid UTF-8, binary otherwise.
  On a stream socket a character split across two reads is held back until its end arrives (or
  for :data:`UTF8_HOLD_SECONDS` at most, then sent as binary, so nothing waits forever).

A reload moves a session to another process (:mod:`ouistiti_gw.reload.migration`): :meth:`Session.pause`
stops both pumps before their next read, where no frame is half written and every byte read is
in the protocol core or the session's buffers; :meth:`Session.state` is then all of it
(:mod:`ouistiti_gw.reload.session_state`), and :meth:`Session.restore` puts it into a new session there.
"""
from __future__ import annotations

import errno
import logging
import socket as stdlib_socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import gevent
from gevent import socket
from gevent.event import AsyncResult

from ..core.deflate import COMPRESSOR_IDLE_SECONDS
from ..core.frames import CloseCode, ProtocolViolation
from ..core.protocol import Protocol
from ..core.ratelimit import TokenBucket
from ..core.utf8 import Utf8Splitter, is_utf8
from ..green.heap_trim import trim_soon
from ..green.light_greenlet import LightGreenlet
from ..green.sockio import ReadPaused, Receiver, interrupt_read, send_all, yield_to_loop
from ..green.unix import largest_packet, recv_packet
from ..green.websocket import WebSocket, WebSocketClosed
from ..reload.live_sessions import LiveSessions, process_sessions
from ..reload.session_state import Admission, SessionState

log = logging.getLogger(__name__)

#: Read size on stream sockets: one WebSocket message per read, at most this big.
STREAM_READ_SIZE = 64 * 1024
#: A client message up to this size reaches a stream socket whole or not at all; a bigger one is
#: written as it arrives, so the gateway never holds it whole and the server can start at once.
STREAM_HOLD_SIZE = 64 * 1024
#: How long an incomplete UTF-8 sequence at the end of a read may wait for its continuation.
UTF8_HOLD_SECONDS = 0.25
#: Packets relayed from a SOCK_SEQPACKET server before the event loop serves the other connections.
PACKETS_PER_TURN = 64
#: How long we wait for the client's close frame after sending ours (RFC 6455 section 7.1.1).
CLOSE_TIMEOUT_SECONDS = 5.0
#: How long :meth:`Session.pause` waits for a pump to reach a read (one writing to a peer that
#: does not read may wait long): past it the session stays where it is.
PAUSE_TIMEOUT_SECONDS = 2.0


class _Interrupted(BaseException):
    """Thrown into the session's own greenlet to stop it waiting for the client: the close
    handshake took too long, or the client went quiet. A BaseException, as ``gevent.Timeout``,
    so no ``except Exception`` on the way swallows it."""


class _BackendWriteFailed(Exception):
    """Writing to the UNIX server failed; carries the OSError out of the WebSocket's reader,
    which would take a plain OSError for the client's connection ending."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class _ServerFeed:
    """The client's messages on their way to the UNIX server, by the rules of the module's docstring.

    On a stream, the whole messages one read of the client brought are gathered and written
    once every frame of that read is delivered (:meth:`write_ready`, called before the next
    read): one system call for them all, instead of one per message. A big piece goes out as
    it came, never copied. On a ``SOCK_SEQPACKET`` socket a message is one packet.
    """

    __slots__ = ("backend", "seqpacket", "_protocol", "_held", "_ready")

    def __init__(self, backend: socket.socket, seqpacket: bool, protocol: Protocol) -> None:
        self.backend = backend
        self.seqpacket = seqpacket
        self._protocol = protocol
        # A message's beginning, until it is whole (or big, on a stream): one growing buffer,
        # so a message in a million 1-byte fragments costs a byte per byte, not an object each.
        self._held = bytearray()
        self._ready = bytearray()

    def handlers(self) -> tuple[Callable[[bytes, bool, bool], None], Callable[[], None]]:
        """``(forward, before_read)`` for :meth:`WebSocket.receive_streaming`: what it delivers
        each piece to, and what it calls before it reads the client again. Taken once a session,
        and not kept on the feed: an object holding its own bound methods is a reference cycle,
        which would keep the session's buffers and sockets after it ended, until the garbage
        collector's next full run (2 000 closed sessions kept ~14 MiB)."""
        if self.seqpacket:
            return self._forward_as_packet, self.write_ready
        return self._forward_to_stream, self._before_stream_read

    def _write(self, data: bytes | bytearray, *, packet: bool = False) -> None:
        try:
            if packet:
                self.backend.send(data)  # one message, one packet
            else:
                send_all(self.backend, data)
        except OSError as error:
            raise _BackendWriteFailed(error) from None

    def write_ready(self) -> None:
        """Write the whole messages gathered so far (stream)."""
        if self._ready:
            self._write(self._ready)
            self._ready.clear()

    def _before_stream_read(self) -> None:
        self.write_ready()
        if self._held and self._protocol.mid_compressed_message:
            self._write(self._held)  # the client sent a fraction of it: not held while it sends on
            self._held.clear()

    def _forward_to_stream(self, piece: bytes, is_text: bool, final: bool) -> None:
        held = self._held
        data: bytes | bytearray = piece
        if held or not (final or len(piece) >= STREAM_HOLD_SIZE):
            held.extend(piece)
            if not final and len(held) < STREAM_HOLD_SIZE:
                return
            data = held
        if len(data) >= STREAM_HOLD_SIZE:
            self.write_ready()
            self._write(data)
        else:
            self._ready.extend(data)
            if len(self._ready) >= STREAM_HOLD_SIZE:
                self.write_ready()
        held.clear()

    def _forward_as_packet(self, piece: bytes, is_text: bool, final: bool) -> None:
        held = self._held
        data: bytes | bytearray = piece
        if held or not final:
            held.extend(piece)
            if not final:
                return
            data = held
        if data:
            self._write(data, packet=True)
        else:
            log.debug("empty message not forwarded: a zero-length packet reads as EOF")
        held.clear()


@dataclass(eq=False)
class Session:
    """Pump messages between ``websocket`` and the UNIX socket ``backend`` until either side ends.

    ``name`` and ``client`` are for the log line; the counters and codes are read after :meth:`run`.
    """

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
    went_idle: bool = False
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
    #: What the session was admitted with: a reload's successor judges it again.
    admission: Admission = field(kw_only=True, repr=False)

    def __post_init__(self) -> None:
        self.bucket = TokenBucket(self.max_message_rate) if self.max_message_rate else None
        self.feed = _ServerFeed(self.backend, self.seqpacket, self.websocket.protocol)
        #: Set by :meth:`pause`: the pumps stop before their next read.
        self._pausing = False
        #: While paused: the state, once both pumps stopped; then whether it moved.
        self._state_ready: AsyncResult | None = None
        self._decision: AsyncResult | None = None

    @property
    def client_socket(self) -> socket.socket:
        return self.websocket.sock

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
        log.info("session %s name=%s client=%s type=%s", "resumed" if self.resumed else "open", self.name,
                 self.client, "seqpacket" if self.seqpacket else "stream")
        self._owner = gevent.getcurrent()
        self._timers: list | None = self._keepalive_timers()
        self._drop_timer: Any = None
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
        except _Interrupted:
            self._stop_timers()  # the wait is over: a second deadline must not cut the close below
            if self.went_idle:
                log.warning("closing %s from %s: nothing heard for %.1f s", self.name, self.client,
                            time.monotonic() - self.websocket.last_heard)
                with gevent.Timeout(1, False):  # a vanished client may not take even this
                    self.websocket.close(CloseCode.GOING_AWAY, "idle timeout")
        finally:
            self._stop_timers()  # first: nothing may be thrown at us past this point
            self.live.discard(self)
            if to_client is not None:
                to_client.kill()
            if self.reload_outcome == "moved":
                self.backend.close()  # our copy only: no shutdown, the successor carries on with it
            else:
                self._close_backend()
                self.websocket.linger()
            self._log_end()
            trim_soon()  # what the session held goes back to the system (see heap_trim.py), one trim for many

    # -- moving to another process ---------------------------------------------------------

    def pause(self) -> SessionState | None:
        """Stop both pumps before their next read and return the session's state; the session
        then waits for :meth:`moved`. None (the session runs on) when it cannot move: its closing
        handshake has started, it ended meanwhile, or a pump did not reach a read in
        :data:`PAUSE_TIMEOUT_SECONDS`.

        Called from another greenlet (the reload's), never from the session's own."""
        if self._timers is None or self._state_ready is not None or self.websocket.protocol.why_not_movable():
            return None
        self._state_ready, self._decision = AsyncResult(), AsyncResult()
        self._stop_timers()  # no ping may start while we move, no idle timeout may cut the wait
        self.websocket.pausing = self._pausing = True
        interrupt_read(self.websocket.sock)
        interrupt_read(self.backend)
        try:
            state = self._state_ready.get(timeout=PAUSE_TIMEOUT_SECONDS)
        except gevent.Timeout:
            log.info("reload: session %s from %s stays here: it did not stop for %g s (a peer that does not read)",
                     self.name, self.client, PAUSE_TIMEOUT_SECONDS)
            state = None
        if state is None:
            self._decision.set(False)  # when it does stop, it goes on here
        return state

    def moved(self, taken: bool) -> None:
        """After :meth:`pause` returned a state: True, the successor took the session (it ends
        here, without a close frame); False, it resumes here."""
        assert self._decision is not None
        if taken:
            self.reload_outcome = "moved"  # at once: nothing here may write to it any more
        self._decision.set(taken)

    def _paused(self, to_client: LightGreenlet) -> LightGreenlet | None:
        """The client pump stopped before a read: wait for the other one, hand the state to
        :meth:`pause`, and go on unless the session moved (then None). A server pump that ended
        the session instead (the server closed) leaves it ending here."""
        stopped = to_client.get()
        self.websocket.pausing = self._pausing = False
        migration, decision = self._state_ready, self._decision
        assert migration is not None and decision is not None
        protocol = self.websocket.protocol
        if stopped and protocol.why_not_movable() is None:  # (inside a compressed message, it is not)
            self.websocket.wait_for_writes()
            if protocol.deflate is not None:
                protocol.deflate.drop()  # between messages: the successor starts a fresh context
            migration.set(self.state())
            taken = decision.get()
        else:
            migration.set(None)
            taken = False
        self._state_ready = self._decision = None
        if taken:
            return None
        self._timers = self._keepalive_timers()
        if not stopped:
            self._interrupt_after(self.close_timeout)  # the server pump ended it: as it would have
            return to_client
        return LightGreenlet.spawn(self._server_to_client)

    def state(self) -> SessionState:
        """All the session is, for a successor (both pumps must be stopped before a read). The
        feed's gathered whole messages went out before that read: only a message's beginning
        is held."""
        ws, bucket = self.websocket, self.bucket
        return SessionState(
            docroot=self.docroot, name=self.name, client=self.client, started=self.started,
            last_heard=ws.last_heard, held=bytes(self.feed._held), server_pending=self.splitter.pending,
            proxy_header_sent=self.proxy_header_sent,
            message_tokens=bucket.tokens if bucket is not None else None,
            message_bucket_updated=bucket.updated if bucket is not None else None,
            protocol=ws.protocol.snapshot(), admission=self.admission)

    def restore(self, state: SessionState) -> None:
        """Take over ``state``, a session paused in another process, before :meth:`run`."""
        self.started, self.websocket.last_heard = state.started, state.last_heard
        self.feed._held[:] = state.held
        self.splitter.pending = state.server_pending
        self.proxy_header_sent, self.resumed = state.proxy_header_sent, True
        if self.bucket is not None and state.message_tokens is not None and state.message_bucket_updated is not None:
            self.bucket.resume(state.message_tokens, state.message_bucket_updated)
        self.websocket.protocol.restore(state.protocol)

    def _stop_timers(self) -> None:
        for timer in self._timers or ():
            timer.close()
        self._timers = None
        if self._drop_timer is not None:
            self._drop_timer.close()
            self._drop_timer = None

    def _interrupt_after(self, seconds: float) -> None:
        """Stop waiting for the client in ``seconds`` (0: at the next turn of the event loop)."""
        if self._timers is None:
            return  # the session is already ending
        timer = gevent.get_hub().loop.timer(seconds)
        timer.start(self._owner.throw, _Interrupted())
        self._timers.append(timer)

    def _keepalive_timers(self) -> list:
        """The timer that pings a quiet client every ``ping_interval`` and ends the session once
        nothing at all (not even a pong) came for ``idle_timeout``: the client is gone without a
        word (half-open). No timer when both are off.

        A timer of the event loop, not a greenlet: an idle session should cost little memory.
        """
        ticks = [t for t in (self.ping_interval, self.idle_timeout) if t]
        if ticks:
            timer = gevent.get_hub().loop.timer(min(ticks), min(ticks))
            timer.start(self._keepalive_tick)
            return [timer]
        return []

    def _keepalive_tick(self) -> None:
        # Runs in the event loop itself: nothing here may block.
        quiet = time.monotonic() - self.websocket.last_heard
        if self.idle_timeout and quiet >= self.idle_timeout:
            if not self.went_idle:
                self.went_idle = True
                self._interrupt_after(0)
        elif self.ping_interval and quiet >= self.ping_interval:
            gevent.spawn(self.websocket.ping, b"ouistiti-gw")

    def _sender(self) -> Callable[..., None]:
        """``websocket.send``; with permessage-deflate, one that also watches the compressor:
        a compressor kept after a message gets a timer that drops it once it has been idle for
        :data:`~ouistiti_gw.core.deflate.COMPRESSOR_IDLE_SECONDS`, so an idle session holds no zlib
        state. A timer only while a compressor lives, not a periodic one per session."""
        ws = self.websocket
        deflate = ws.protocol.deflate
        if deflate is None:
            return ws.send

        def send(data: bytes, *, text: bool) -> None:
            ws.send(data, text=text)
            if self._drop_timer is None and deflate.compressing and self._timers is not None:
                self._drop_idle_compressor_in(COMPRESSOR_IDLE_SECONDS)
        return send

    def _drop_idle_compressor_in(self, seconds: float) -> None:
        timer = self._drop_timer = gevent.get_hub().loop.timer(seconds)
        timer.start(self._drop_idle_compressor)

    def _drop_idle_compressor(self) -> None:
        # Runs in the event loop itself, between two of the pump's messages (a message is
        # compressed without yielding): the drop happens at a message boundary.
        self._drop_timer.close()
        self._drop_timer = None
        left = self.websocket.protocol.drop_idle_compressor()
        if left is None:
            trim_soon()  # else its memory stays resident, scattered in the heap (see heap_trim.py)
        elif self._timers is not None:
            self._drop_idle_compressor_in(left)

    def close(self, code: int, reason: str) -> None:
        """End the session from outside (a server stopping): close frame now, the client has
        :attr:`close_timeout` to answer. Not once it moved, nor while a move is being decided:
        it is another process's then, or may be."""
        if self.reload_outcome == "moved" or (self._decision is not None and not self._decision.ready()):
            return
        self.websocket.close(code, reason)
        self._interrupt_after(self.close_timeout)

    def _client_to_server(self) -> None:
        ws, backend = self.websocket, self.backend
        seqpacket = self.seqpacket  # gevent's socket.type is a property: not once per message
        if seqpacket:
            # A message is one packet: one that cannot be sent is refused (1009) as soon as its
            # length says so, not after the gateway has held all of it.
            ws.limit_message_size(largest_packet(backend), "message too big for the server's socket")
            if ws.protocol.deflate is not None:  # held whole anyway: then kept as the client sent it
                ws.protocol.deflate.gather_whole_messages()
        bucket, feed = self.bucket, self.feed
        forward, before_read = feed.handlers()
        try:
            while ws.receive_streaming(forward, before_read):
                if bucket is not None and not bucket.take():
                    feed.write_ready()
                    log.warning("closing %s from %s: over %g messages/s", self.name, self.client,
                                self.max_message_rate)
                    ws.close(CloseCode.POLICY_VIOLATION, "message rate limit exceeded")
                    return
            feed.write_ready()  # what came before the client's close, or before it broke the protocol
        except _BackendWriteFailed as failed:
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
                self._pump_packets()
            else:
                self._pump_stream()
        except ReadPaused:
            return True
        except WebSocketClosed:
            pass  # the client is gone; the other pump notices too
        except OSError as error:
            log.warning("read from %s failed: %s", self.name, error)
            ws.close(CloseCode.INTERNAL_ERROR, "server connection error")
        else:
            ws.close(CloseCode.NORMAL, "server closed the connection")
        self._interrupt_after(self.close_timeout)  # the client has that long to answer our close
        return False

    def _pump_stream(self) -> None:
        backend, splitter = self.backend, self.splitter
        receiver = Receiver(backend)
        send = self._sender()
        holding = False
        while True:
            if holding != bool(splitter.pending):  # only when it changes, not once per read
                holding = not holding
                backend.settimeout(UTF8_HOLD_SECONDS if holding else None)
            if self._pausing:
                raise ReadPaused()
            try:
                data = receiver.recv(STREAM_READ_SIZE)
            except stdlib_socket.timeout:
                send(splitter.flush(), text=False)
                continue
            if not data:
                if splitter.pending:
                    send(splitter.flush(), text=False)
                return
            payload, is_text = splitter.feed(data)
            if payload:
                send(payload, text=is_text)

    def _pump_packets(self) -> None:
        backend = self.backend
        send = self._sender()
        left = PACKETS_PER_TURN
        while True:
            if self._pausing:
                raise ReadPaused()
            data = recv_packet(backend)
            if not data:
                return
            send(data, text=is_utf8(data))
            left -= 1
            if not left:  # gevent reads a socket that has data without waiting: take turns
                left = PACKETS_PER_TURN
                yield_to_loop()

    def _close_backend(self) -> None:
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
