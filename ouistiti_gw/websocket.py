"""The WebSocket endpoint the gateway trusts: RFC 6455 over a gevent socket, built on :mod:`.frames`.

gevent-websocket 0.10.1 performs the handshake (its handler, or ours in :mod:`.handler`), then
this class takes over the connection's buffered reader and socket, whichever worker accepted it.
That is how its faults are fixed once, here, for every way the gateway is run:

- close frames carry the status code and reason (``WebSocket.close`` there never wrote them);
- unmasked client frames, reserved bits and opcodes are refused with 1002, bad UTF-8 with 1007,
  oversized messages with 1009 before their payload is read (it answered with codeless closes);
- unmasking is one C-level operation per chunk, UTF-8 is checked incrementally as bytes arrive, so
  a text message fails on its first bad byte, not at the end of its frame or message;
- writes are serialised, so the two pumps of a session never interleave two frames.
"""
from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass
from typing import Callable

import gevent
from gevent.lock import Semaphore

from .frames import (
    CloseCode, FrameHeader, Opcode, ProtocolViolation, Utf8Validator, apply_mask, encode_close_payload,
    encode_header, header_size, parse_close_payload, parse_header,
)
from .sockio import Receiver, send_all

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024
#: Payloads are read in pieces of at most this size (less when less has arrived).
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


class ConnectionClosed(Exception):
    """Raised by :meth:`WebSocket.send` once the connection can no longer carry data."""


class WebSocket:
    """One server-side WebSocket connection after a successful handshake.

    :param sock: the client's (gevent) socket, read and written directly: no buffered reader,
        whose buffer an idle connection would keep (8 KiB each, a third of an idle session).
    :param buffered: bytes the client sent right after its handshake, already read by the HTTP
        server (see :meth:`~ouistiti_gw.handler.ClientConnection.take_buffered`); they come first.
    :param max_message_size: a message whose payload would exceed it is refused with 1009.
    """

    def __init__(self, sock, buffered: bytes = b"", *, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self.sock = sock
        self._buffered = buffered
        self._receiver = Receiver(sock)
        #: A message sent with :meth:`send_piece` is open (its final piece has not gone out).
        self._sending_pieces = False
        self.max_message_size = max_message_size
        self._write_lock = Semaphore()
        #: The code we sent in our close frame, and the one the client sent in its own.
        self.close_sent: int | None = None
        self.close_received: int | None = None
        self.close_reason = ""
        self.bytes_received = 0
        self.bytes_sent = 0
        #: When the last frame (data, ping, pong or close) started to arrive: liveness for pings.
        self.last_heard = time.monotonic()

    @property
    def closing(self) -> bool:
        """True once either side has started the closing handshake: no data may follow."""
        return self.close_sent is not None or self.close_received is not None

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

    def receive_streaming(self, deliver: Callable[[bytes, bool, bool], None]) -> bool:
        """Read the next data message and hand it to ``deliver(piece, is_text, final)`` as its
        bytes arrive, unmasked and (text) validated up to the piece's last byte; False instead
        when the connection is over (see :meth:`receive`).

        A 16 MiB message is never held whole: a stream can forward it while it is still coming.
        The price is that a message failing part-way (bad UTF-8, connection lost) has had its
        valid beginning delivered. ``final`` is True exactly once, on the message's last piece
        (which may be empty). Exceptions from ``deliver`` propagate; OSError from it would be
        taken for the client's transport ending, so wrap those.
        """
        try:
            return self._read_message(deliver)
        except ProtocolViolation as violation:
            log.info("closing WebSocket: %s", violation.reason)
            self.close(violation.code, violation.reason)
        except (EOFError, OSError) as error:
            log.debug("WebSocket transport ended: %s", error)
            if self.close_received is None:
                self.close_received = CloseCode.ABNORMAL
        return False

    def _receive_some(self, limit: int) -> bytes:
        """The buffered bytes, or what one ``recv`` brings (at most ``limit``); EOFError at the end."""
        data = self._buffered
        if data:
            if len(data) > limit:
                self._buffered = data[limit:]
                return data[:limit]
            self._buffered = b""
            return data
        data = self._receiver.recv(limit)
        if not data:
            raise EOFError("connection ended inside a frame")
        return data

    def _read_exactly(self, size: int) -> bytes:
        data = self._receive_some(_READ_CHUNK)
        while len(data) < size:
            data += self._receive_some(_READ_CHUNK)
        self._buffered = data[size:] + self._buffered
        return data[:size]

    def _read_header(self) -> FrameHeader:
        # One read usually brings the header with its payload (and maybe more frames): parse it
        # from there, and keep the rest for the payload.
        data = self._read_exactly(2)
        self.last_heard = time.monotonic()
        rest = header_size(data) - 2
        return parse_header(data + self._read_exactly(rest) if rest else data, require_mask=True)

    def _read_payload(self, header: FrameHeader, validator: Utf8Validator | None,
                      deliver: Callable[[bytes, bool], None]) -> None:
        """Read and unmask a payload as its bytes arrive, validating text as it goes; hand each
        piece to ``deliver(piece, last)``.

        Each piece is whatever the connection has (up to :data:`_READ_CHUNK`), never more: a
        frame whose rest has not come yet is still checked up to its last byte received, so bad
        UTF-8 fails the connection at once (Autobahn 6.4.3, 6.4.4).
        """
        received = 0
        length = header.length
        while True:
            piece = self._receive_some(min(length - received, _READ_CHUNK)) if received < length else b""
            piece = apply_mask(piece, header.mask, received)
            received += len(piece)
            last = received == length
            if validator is not None:
                validator.feed(piece, final=last and header.fin)
            deliver(piece, last)
            if last:
                return

    def _read_message(self, deliver: Callable[[bytes, bool, bool], None]) -> bool:
        message_opcode = None
        validator = None
        size = 0
        while True:
            header = self._read_header()
            if header.opcode >= Opcode.CLOSE:  # a control frame
                control: list[bytes] = []
                self._read_payload(header, None, lambda piece, last: control.append(piece))
                if self._handle_control(header.opcode, b"".join(control)):
                    return False
                continue
            if header.opcode == Opcode.CONTINUATION:
                if message_opcode is None:
                    raise ProtocolViolation(CloseCode.PROTOCOL_ERROR, "continuation frame without a message")
            elif message_opcode is not None:
                raise ProtocolViolation(CloseCode.PROTOCOL_ERROR, "new message inside a fragmented message")
            else:
                message_opcode = header.opcode
                if message_opcode == Opcode.TEXT:
                    validator = Utf8Validator()
            size += header.length
            if size > self.max_message_size:
                raise ProtocolViolation(CloseCode.MESSAGE_TOO_BIG,
                                        f"message over {self.max_message_size} bytes")
            is_text, fin = message_opcode == Opcode.TEXT, header.fin

            def forward(piece: bytes, last: bool) -> None:
                if piece or (last and fin):
                    self.bytes_received += len(piece)
                    deliver(piece, is_text, last and fin)

            self._read_payload(header, validator, forward)
            if fin:
                return True

    def _handle_control(self, opcode: Opcode, payload: bytes) -> bool:
        """Answer a control frame; True when it was a close (the message loop ends)."""
        if opcode == Opcode.PING:
            self._send_frame(Opcode.PONG, payload, quiet=True)
        elif opcode == Opcode.CLOSE:
            code, reason = parse_close_payload(payload)
            self.close_received, self.close_reason = code, reason
            # Section 5.5.1: reply with a close frame, typically echoing the status code.
            self.close(CloseCode.NORMAL if code == CloseCode.NO_STATUS else code)
            return True
        return False

    # -- sending ---------------------------------------------------------------------------

    def _send_frame(self, opcode: int, payload: bytes | memoryview, *, fin: bool = True, quiet: bool = False,
                    wait: bool = True) -> bool:
        """Write one frame; with ``wait=False`` give up (False) if another frame is being written."""
        header = encode_header(opcode, len(payload), fin=fin)
        if not self._write_lock.acquire(blocking=wait):
            return False
        try:
            try:
                if len(payload) <= _COALESCE_LIMIT:
                    send_all(self.sock, header + payload)
                else:
                    send_all(self.sock, header)
                    send_all(self.sock, payload)
            except OSError as error:
                if quiet:
                    log.debug("could not write %s frame: %s", Opcode(opcode).name, error)
                    return False
                raise ConnectionClosed(str(error)) from error
        finally:
            self._write_lock.release()
        return True

    def send(self, data: bytes | memoryview, *, text: bool) -> None:
        """Send one data message; ``data`` must already be valid UTF-8 when ``text`` is True."""
        self.send_piece(data, text=text, final=True)

    def send_piece(self, data: bytes | memoryview, *, text: bool, final: bool) -> None:
        """Send a message piece by piece, as its bytes come (fragments, section 5.4): the first
        piece opens it as text or binary, the ``final`` one ends it. A relay need not hold a
        whole message; the pieces of a text message may split a character, only the whole must
        be valid UTF-8. No other data message may be sent until the final piece.
        """
        if self.closing:
            raise ConnectionClosed("the closing handshake has started")
        if self._sending_pieces:
            opcode = Opcode.CONTINUATION
        else:
            opcode = Opcode.TEXT if text else Opcode.BINARY
        self._send_frame(opcode, data, fin=final)
        self._sending_pieces = not final
        self.bytes_sent += len(data)

    def ping(self, payload: bytes = b"") -> bool:
        """Send a ping unless a frame is being written (a client not reading must not block us)."""
        return self._send_frame(Opcode.PING, payload, quiet=True, wait=False)

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Send our close frame once (with its status code, unlike gevent-websocket's)."""
        if self.close_sent is not None:
            return
        self.close_sent = code
        self._send_frame(Opcode.CLOSE, encode_close_payload(code, reason), quiet=True)

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
