"""The WebSocket endpoint the gateway trusts: RFC 6455 over a gevent socket, built on :mod:`.frames`.

gevent-websocket 0.10.1 performs the handshake (its handler, or ours in :mod:`.handler`), then
this class takes over the connection's buffered reader and socket, whichever worker accepted it.
That is how its faults are fixed once, here, for every way the gateway is run:

- close frames carry the status code and reason (``WebSocket.close`` there never wrote them);
- unmasked client frames, reserved bits and opcodes are refused with 1002, bad UTF-8 with 1007,
  oversized messages with 1009 before their payload is read (it answered with codeless closes);
- unmasking is one C-level operation per chunk, UTF-8 is checked incrementally as bytes arrive, so
  a text message fails on its first bad byte, not at the end of its frame or message;
- writes are serialised, so the two pumps of a session never interleave two frames;
- every connection gets a fair share of the event loop: after a bounded number of frames (or
  reads) it lets the loop serve the others, and every frame, control frames and fragments
  included, counts against its frame budget (1008 past it).
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
from .policy import TokenBucket
from .sockio import Receiver, send_all, yield_to_loop

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024
#: Frames of every kind (data, continuation, ping, pong) a client may send per second, in bursts
#: of one second's worth. Several times what one connection carries at the gateway's full speed
#: (the benchmark's ping-pong of small messages: 10 000 to 22 000 a second on 2 cores), and far
#: under what a client sending 1-byte frames as fast as it can reaches (~360 000 a second: it is
#: closed within half a second).
DEFAULT_MAX_FRAME_RATE = 100_000
#: Frames read per turn: then the event loop serves the other connections (see ``_end_turn``).
FRAMES_PER_TURN = 256
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
    :param max_frame_rate: frames per second (every kind), in bursts of one second's worth;
        past it the connection is closed with 1008 (0: no limit).
    """

    def __init__(self, sock, buffered: bytes = b"", *, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
                 max_frame_rate: float = DEFAULT_MAX_FRAME_RATE) -> None:
        self.sock = sock
        #: Bytes read but not parsed yet: those from ``_buffered[_offset]`` on.
        self._buffered = buffered
        self._offset = 0
        self._receiver = Receiver(sock)
        self._frame_budget = TokenBucket(max_frame_rate) if max_frame_rate else None
        #: Frames per turn (see :meth:`_end_turn`): a batch paid for at once may not exceed the
        #: budget's burst.
        self._turn = FRAMES_PER_TURN
        if self._frame_budget is not None:
            self._turn = min(FRAMES_PER_TURN, int(self._frame_budget.capacity))
        self._frames_left = self._turn
        #: A message sent with :meth:`send_piece` is open (its final piece has not gone out).
        self._sending_pieces = False
        self.max_message_size = max_message_size
        self._too_big = f"message over {max_message_size} bytes"
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

    def limit_message_size(self, size: int, reason: str) -> None:
        """Refuse (1009) messages over ``size`` bytes too, with ``reason`` in the close frame."""
        if size < self.max_message_size:
            self.max_message_size = size
            self._too_big = f"{reason} (over {size} bytes)"

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
            # A client over a limit set for the operator is worth a warning; a broken client is not.
            log.log(logging.WARNING if violation.code == CloseCode.POLICY_VIOLATION else logging.INFO,
                    "closing WebSocket: %s", violation.reason)
            self.close(violation.code, violation.reason)
        except (EOFError, OSError) as error:
            log.debug("WebSocket transport ended: %s", error)
            if self.close_received is None:
                self.close_received = CloseCode.ABNORMAL
        return False

    def _receive_some(self, limit: int) -> bytes:
        """The buffered bytes, or what one ``recv`` brings (at most ``limit``); EOFError at the end."""
        buffered, offset = self._buffered, self._offset
        available = len(buffered) - offset
        if available > limit:
            self._offset = offset + limit
            return buffered[offset:offset + limit]
        if available:
            self._buffered, self._offset = b"", 0
            return buffered[offset:] if offset else buffered
        data = self._receiver.recv(limit)
        if not data:
            raise EOFError("connection ended inside a frame")
        return data

    def _read_exactly(self, size: int) -> bytes:
        """``size`` bytes, a few (a header, a control frame's payload: 125 at most).

        The buffer is consumed by moving an offset, never by copying what is left of it: a read
        of 256 KiB may hold 37 000 tiny frames, and copying the rest of it once per frame cost
        seconds (quadratic)."""
        buffered, offset = self._buffered, self._offset
        end = offset + size
        if end <= len(buffered):
            self._offset = end
            return buffered[offset:end]
        data = self._receive_some(_READ_CHUNK)
        while len(data) < size:
            data += self._receive_some(_READ_CHUNK)
        if len(data) > size:
            self._buffered, self._offset = data, size  # what is left of it stays buffered
        return data[:size]

    def _read_header(self) -> FrameHeader:
        self._frames_left -= 1
        if not self._frames_left:
            self._end_turn()
        # One read usually brings the header with its payload (and maybe more frames): parse it
        # from there, and keep the rest for the payload.
        data = self._read_exactly(2)
        self.last_heard = time.monotonic()
        rest = header_size(data) - 2
        return parse_header(data + self._read_exactly(rest) if rest else data, require_mask=True)

    def _end_turn(self) -> None:
        """Every :attr:`_turn` frames: pay for them from the frame budget (1008 when it is
        spent), then let the event loop serve the other connections before reading on.

        Frames come out of the buffer without a system call, so without this a client sending
        tiny frames faster than they are parsed would keep the loop (every session of the
        process, the gunicorn worker's heartbeat) waiting for as long as it keeps sending.
        """
        self._frames_left = self._turn
        if self._frame_budget is not None and not self._frame_budget.take(self._turn):
            raise ProtocolViolation(CloseCode.POLICY_VIOLATION,
                                    f"over {self._frame_budget.rate:g} frames/s (max_frame_rate)")
        yield_to_loop()

    def _read_payload(self, header: FrameHeader, validator: Utf8Validator | None,
                      deliver: Callable[[bytes, bool, bool], None], is_text: bool) -> None:
        """Read and unmask a data frame's payload as its bytes arrive, validating text as it
        goes; hand each piece to ``deliver(piece, is_text, final)`` (``final``: the message's
        last piece, which may be empty; other pieces are never empty).

        Each piece is whatever the connection has (up to :data:`_READ_CHUNK`), never more: a
        frame whose rest has not come yet is still checked up to its last byte received, so bad
        UTF-8 fails the connection at once (Autobahn 6.4.3, 6.4.4).
        """
        received = 0
        length, fin = header.length, header.fin
        while True:
            piece = self._receive_some(min(length - received, _READ_CHUNK)) if received < length else b""
            piece = apply_mask(piece, header.mask, received)
            received += len(piece)
            final = received == length and fin
            if validator is not None:
                validator.feed(piece, final=final)
            if piece or final:
                self.bytes_received += len(piece)
                deliver(piece, is_text, final)
            if received == length:
                return

    def _read_message(self, deliver: Callable[[bytes, bool, bool], None]) -> bool:
        message_opcode = None
        validator = None
        size = 0
        while True:
            header = self._read_header()
            if header.opcode >= Opcode.CLOSE:  # a control frame: 125 bytes at most (parse_header)
                payload = apply_mask(self._read_exactly(header.length), header.mask)
                if self._handle_control(header.opcode, payload):
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
                raise ProtocolViolation(CloseCode.MESSAGE_TOO_BIG, self._too_big)
            self._read_payload(header, validator, deliver, message_opcode == Opcode.TEXT)
            if header.fin:
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
