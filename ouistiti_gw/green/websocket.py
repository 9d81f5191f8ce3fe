"""The WebSocket endpoint the gateway trusts: the I/O shell over :mod:`ouistiti_gw.core.protocol` for a gevent socket.

gevent-websocket 0.10.1 performs the handshake (its handler, or ours in :mod:`ouistiti_gw.servers.handler`), then
this class takes over the connection's socket, whichever worker accepted it. Every protocol rule
(framing, fragments, UTF-8, limits, the closing handshake's state) is in the sans-I/O
:class:`~ouistiti_gw.core.protocol.Protocol`; this shell reads (``recv`` -> ``receive_data`` ->
events -> act), writes the bytes the core returns, serialised so that the two pumps of a session
never interleave two frames, yields to the event loop when the core says a turn is over, and
ends the connection with a lingering close. Its timers (pings to a quiet client, the idle
timeout, the idle compressor's drop) are its :class:`~ouistiti_gw.green.keepalive.Keepalive`.

The contract, like a socket's: :meth:`WebSocket.receive` returns ``None`` (and
:meth:`WebSocket.receive_streaming` False) at the end of the connection, an ordinary event;
:meth:`WebSocket.send` raises :class:`~ouistiti_gw.core.protocol.WebSocketClosed` once the closing
handshake has started or the transport is gone, an error the sender must handle.
"""
from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass
from typing import Callable

import gevent
from gevent.lock import Semaphore

from ..core.deflate import PerMessageDeflate
from ..core.frames import CloseCode, Opcode, ProtocolViolation
from ..core.protocol import (
    DEFAULT_MAX_BYTE_RATE,
    DEFAULT_MAX_FRAME_RATE,
    DEFAULT_MAX_MESSAGE_SIZE,
    TURN_ENDED,
    CloseReceived,
    DataPiece,
    Ping,
    Protocol,
    Throttled,
    WebSocketClosed,
)
from .keepalive import Keepalive
from .sockio import ReadPaused, Receiver, interrupt_read, send_all, yield_to_loop

__all__ = ["Message", "WebSocket", "WebSocketClosed"]

log = logging.getLogger(__name__)

#: Reads are of at most this size (less when less has arrived).
_READ_CHUNK = 256 * 1024
#: Below this size header and payload go out in one ``sendall`` (one segment); above, in two.
_COALESCE_LIMIT = 64 * 1024
#: How long a lingering close waits for the client to hang up (see :meth:`WebSocket.linger`).
LINGER_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Message:
    """A complete data message; text messages are kept as their (validated) UTF-8 bytes."""

    data: bytes
    is_text: bool


def _nothing() -> None:
    """``before_read`` when the caller has nothing to do there."""


class WebSocket:
    """One server-side WebSocket connection after a successful handshake.

    :param sock: the client's (gevent) socket, read and written directly: no buffered reader,
        whose buffer an idle connection would keep (8 KiB each, a third of an idle session).
    :param buffered: bytes the client sent right after its handshake, already read by the HTTP
        server (see :meth:`~ouistiti_gw.servers.handler.ClientConnection.take_buffered`); they come first.
    :param max_message_size: a message whose payload would exceed it is refused with 1009.
    :param max_frame_rate: frames per second (every kind), in bursts of one second's worth;
        past it the connection is closed with 1008 (0: no limit).
    :param max_byte_rate: payload bytes per second, counted after inflation; past it the
        client is not read until the budget refills (0: no limit; see :class:`Protocol`).
    :param deflate: permessage-deflate's state when the handshake negotiated it (the core
        compresses and inflates; see :mod:`~ouistiti_gw.core.deflate`).
    """

    # One per session: slots, not a dict (what an idle session costs: ``benchmarks/PROFILE.md``).
    __slots__ = ("sock", "protocol", "_receiver", "_write_lock", "last_heard", "pausing", "keepalive")

    def __init__(self, sock, buffered: bytes = b"", *, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
                 max_frame_rate: float = DEFAULT_MAX_FRAME_RATE, max_byte_rate: float = DEFAULT_MAX_BYTE_RATE,
                 deflate: PerMessageDeflate | None = None) -> None:
        self.sock = sock
        self.protocol = Protocol(max_message_size=max_message_size, max_frame_rate=max_frame_rate,
                                 max_byte_rate=max_byte_rate, deflate=deflate)
        if buffered:
            self.protocol.receive_data(buffered)
        self._receiver = Receiver(sock)
        self._write_lock = Semaphore()
        #: When bytes last came from the client (data, ping, pong or close): liveness for pings.
        self.last_heard = time.monotonic()
        #: Set to stop reading at the next read (:class:`~ouistiti_gw.green.sockio.ReadPaused`), the
        #: session's server pump too: it is about to move to another process, with what the core holds.
        self.pausing = False
        #: Its timers, started by the greenlet that reads it.
        self.keepalive = Keepalive()

    # The session's counters and codes, read after it (see :class:`~ouistiti_gw.core.protocol.Protocol`).
    close_sent = property(lambda self: self.protocol.close_sent)
    close_received = property(lambda self: self.protocol.close_received)
    close_reason = property(lambda self: self.protocol.close_reason)
    bytes_received = property(lambda self: self.protocol.bytes_received)
    bytes_sent = property(lambda self: self.protocol.bytes_sent)
    wire_bytes_received = property(lambda self: self.protocol.wire_bytes_received)
    wire_bytes_sent = property(lambda self: self.protocol.wire_bytes_sent)

    # -- receiving -------------------------------------------------------------------------

    def receive(self) -> Message | None:
        """Return the next data message, answering pings and closes on the way.

        Returns ``None`` when the connection is over: the client closed (our reply is sent), the
        client broke the protocol (our close with the matching code is sent), or the transport
        ended without a close frame (1006 is recorded, nothing is sent).
        """
        pieces: list[bytes] = []
        kind: list[bool] = []

        def collect(piece: bytes, is_text: bool, final: bool) -> None:
            pieces.append(piece)
            if final:
                kind.append(is_text)

        if not self.receive_streaming(collect):
            return None
        return Message(pieces[0] if len(pieces) == 1 else b"".join(pieces), kind[0])

    def receive_streaming(self, deliver: Callable[[bytes, bool, bool], None],
                          before_read: Callable[[], None] | None = None) -> bool:
        """Read the next data message and hand it to ``deliver(piece, is_text, final)`` as its
        bytes arrive, unmasked and (text) validated up to the piece's last byte; False instead
        when the connection is over (see :meth:`receive`). ``before_read()``, if given, is
        called whenever every frame already read has been delivered, before the socket is read
        again (or the loop given its turn): a relay that gathers what ``deliver`` got writes it
        there, one write for all the messages one read brought.

        A 16 MiB message is never held whole: a stream can forward it while it is still coming.
        The price is that a message failing part-way (bad UTF-8, connection lost) has had its
        valid beginning delivered. ``final`` is True exactly once, on the message's last piece
        (which may be empty). Exceptions from ``deliver`` propagate; OSError from it would be
        taken for the client's transport ending, so wrap those.
        """
        before_read = before_read or _nothing
        protocol = self.protocol
        next_event, receive_data, recv = protocol.next_event, protocol.receive_data, self._receiver.recv
        try:  # (the loop is here, not in a method of its own: one call less a message)
            event = None if protocol.needs_data else next_event()  # (the last message ended the last read)
            while True:
                if type(event) is DataPiece:
                    deliver(*event)
                    if event.final:
                        return True
                elif event is None:
                    if not protocol.receiving:
                        return False
                    before_read()
                    if self.pausing:  # after before_read: what it gathered is written, nothing is held
                        raise ReadPaused()
                    data = recv(_READ_CHUNK)
                    if not data:
                        raise EOFError("connection ended inside a frame")
                    self.last_heard = time.monotonic()
                    receive_data(data)
                elif event is TURN_ENDED:
                    # Frames come out of the buffer without a system call: without this, a client
                    # sending tiny frames faster than they are parsed would keep the loop (every
                    # session of the process, the gunicorn worker's heartbeat) to itself.
                    before_read()
                    yield_to_loop()
                elif type(event) is Throttled:
                    # The client sent more than max_byte_rate allows: it is not read for a while, and
                    # its TCP window does the rest (it cannot send more than the buffers hold).
                    before_read()
                    gevent.sleep(event.seconds)
                elif type(event) is Ping:
                    self._write(protocol.send_pong(event.payload), quiet=True)
                elif type(event) is CloseReceived:
                    self._write(protocol.send_close_reply(), quiet=True)
                    return False
                event = next_event()
        except ProtocolViolation as violation:
            # A client over a limit set for the operator is worth a warning; a broken client is not.
            log.log(logging.WARNING if violation.code == CloseCode.POLICY_VIOLATION else logging.INFO,
                    "closing WebSocket: %s", violation.reason)
            self.close(violation.code, violation.reason)
        except (EOFError, OSError) as error:
            log.debug("WebSocket transport ended: %s", error)
            self.protocol.connection_lost()
        return False

    def pause_reading(self) -> None:
        """Stop reading before the next read, a read under way included (:attr:`pausing`)."""
        self.pausing = True
        interrupt_read(self.sock)

    # -- sending ---------------------------------------------------------------------------

    def _write(self, data: bytes, payload: bytes | memoryview = b"", *, quiet: bool = False,
               wait: bool = True) -> bool:
        """Write what the core returned (``payload`` after ``data``); with ``wait=False`` give up
        (False) if another frame is being written. OSError: WebSocketClosed, or False if ``quiet``."""
        if not data or not self._write_lock.acquire(wait):
            return False
        try:
            if len(payload) <= _COALESCE_LIMIT:
                send_all(self.sock, data + payload)
            else:
                send_all(self.sock, data)
                send_all(self.sock, payload)
        except OSError as error:
            if quiet:
                log.debug("could not write %s frame: %s", Opcode(data[0] & 0x0F).name, error)
                return False
            raise WebSocketClosed(str(error)) from error
        finally:
            self._write_lock.release()
        return True

    def wait_for_writes(self) -> None:
        """Return once no frame is being written (a frame is never cut by a move)."""
        with self._write_lock:
            pass

    def send(self, data: bytes | memoryview, *, text: bool) -> None:
        """Send one data message; ``data`` must already be valid UTF-8 when ``text`` is True.
        Raises :class:`WebSocketClosed` when it cannot."""
        header, payload = self.protocol.send_data(data, text=text)
        self._write(header, payload)

    def send_piece(self, data: bytes | memoryview, *, text: bool, final: bool) -> None:
        """Send a message piece by piece, as its bytes come (fragments, section 5.4): the first
        piece opens it as text or binary, the ``final`` one ends it. A relay need not hold a
        whole message; the pieces of a text message may split a character, only the whole must
        be valid UTF-8. No other data message may be sent until the final piece.
        """
        self._write(*self.protocol.send_data(data, text=text, final=final))

    def ping(self, payload: bytes = b"") -> bool:
        """Send a ping unless a frame is being written (a client not reading must not block us)."""
        return self._write(self.protocol.send_ping(payload), quiet=True, wait=False)

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Send our close frame once (with its status code, unlike gevent-websocket's)."""
        self._write(self.protocol.send_close(code, reason), quiet=True)

    def linger(self, timeout: float = LINGER_SECONDS) -> None:
        """End the connection with a FIN, not a reset: a lingering close, as HTTP servers do.

        Closing a socket whose input is unread makes the kernel reset the connection, and the
        client's TCP may then drop our close frame before its application reads it. So: shut
        down our writing side, read and discard until the client hangs up (or ``timeout``);
        the socket itself is closed by its owner afterwards.
        """
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            return
        with gevent.Timeout(timeout, False):
            try:
                while self.sock.recv(_READ_CHUNK):
                    pass
            except OSError:
                pass  # reset by the client, or the socket is already closed
