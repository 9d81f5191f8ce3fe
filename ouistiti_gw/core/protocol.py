"""RFC 6455, sans-I/O: the server side of one WebSocket connection, as bytes in and events out.

:class:`Protocol` knows bytes, not sockets, so every rule is testable without a connection (as
wsproto and websockets' ``Protocol`` do): :meth:`Protocol.receive_data` takes what the transport
read, :meth:`Protocol.next_event` hands out what it means, the ``send_*`` methods return the bytes
to write. Its I/O shells (:class:`ouistiti_gw.green.websocket.WebSocket`, and through it
:class:`ouistiti_gw.backend.direct.DirectClient`) read, write, wait and time; every protocol rule is here:

- frames are parsed in place from the buffer (:mod:`ouistiti_gw.core.frames`), client frames must be masked and
  use no reserved bit or opcode (1002), fragments must follow each other (1002);
- a data frame's payload is handed out in pieces as its bytes arrive, unmasked and (text)
  checked up to the piece's last byte, so a 16 MiB frame is never held whole and bad UTF-8 fails
  the connection at its first bad byte (1007);
- a message over :attr:`Protocol.max_message_size` (or the size a SEQPACKET session sets with
  :meth:`Protocol.limit_message_size`) is refused as soon as a header announces it (1009);
- every frame, control frames and fragments included, is paid for from the frame budget
  (``max_frame_rate``, 1008 past it), in batches of :data:`FRAMES_PER_TURN`: after each batch
  :meth:`Protocol.next_event` returns :data:`TURN_ENDED` so that the shell lets its event loop
  serve the other connections (the yielding itself is the shell's: there is no loop here);
- every payload byte received, counted after inflation, is paid for from the byte budget
  (``max_byte_rate``): once it is spent, :meth:`Protocol.next_event` returns :class:`Throttled`
  instead of asking for more bytes, and the shell reads nothing from the peer for that long
  (backpressure: the peer's TCP window fills up; nothing is closed). Paid in arrears, without
  a clock reading until what came exceeds what the budget held: no work per frame;
- the closing handshake is the explicit :class:`State`; data after our close frame is discarded
  (section 7.1.1); a peer's close code is echoed;
- with permessage-deflate negotiated (RFC 7692, :mod:`ouistiti_gw.core.deflate`), RSV1 marks a compressed
  message on its first frame only (on a control frame or a continuation: 1002); its payload is
  inflated in bounded steps, each handed out as a piece and counted against the size limit
  (1009), data that does not inflate is 1007; what is sent is compressed when it pays.

The core saves itself: :meth:`Protocol.snapshot` returns its state between two reads as a
:class:`ProtocolState` (plain values, for :mod:`ouistiti_gw.reload.session_state` to serialize on a reload), and
:meth:`Protocol.restore` puts one into a fresh core built with another process's limits;
:meth:`Protocol.why_not_movable` says when it cannot be carried. Compression adds one object to
the state, :class:`~ouistiti_gw.core.deflate.PerMessageDeflate`, whose zlib streams cannot be exported: a
compressed core moves only at a message boundary in each direction, then no inflater is alive
(without client context takeover) and the compressor may be dropped.

A violation is raised from :meth:`Protocol.next_event` as :class:`~ouistiti_gw.core.frames.ProtocolViolation`
(its ``code`` and ``reason`` are what the shell's close frame should carry); nothing is parsed
after it.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from enum import Enum
from typing import Callable, NamedTuple, Union

from ..errors import GatewayError
from .deflate import DeflateParameters, PerMessageDeflate
from .frames import (
    RSV1,
    CloseCode,
    FrameHeader,
    Opcode,
    ProtocolViolation,
    apply_mask,
    encode_close_payload,
    encode_header,
    header_size,
    pack_medium_header,
    pack_short_header,
    parse_close_payload,
    parse_header,
    unmask,
)
from .ratelimit import TokenBucket
from .utf8 import Utf8Validator, check_message

DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024
#: Frames of every kind (data, continuation, ping, pong) a client may send per second, in bursts
#: of one second's worth. Several times what one connection carries at the gateway's full speed
#: (the benchmark's ping-pong of small messages: 10 000 to 22 000 a second on 2 cores), and far
#: under what a client sending 1-byte frames as fast as it can reaches (~360 000 a second: it is
#: closed within half a second).
DEFAULT_MAX_FRAME_RATE = 100_000
#: Payload bytes a client may send per second (after inflation), in bursts of one second's worth
#: or :attr:`Protocol.max_message_size`, whichever is more. Far above what a browser sends, and a
#: bound on what one client's deflate bombs cost the UNIX server (without one, as fast as a core
#: inflates: ~200 MB/s); a bulk transfer faster than that sets its own figure (README, Security).
DEFAULT_MAX_BYTE_RATE = 64 * 1024 * 1024
#: ``bytes_received`` never reaches it: no byte budget to pay.
_NEVER = 1 << 62
#: Frames parsed per turn: then :meth:`Protocol.next_event` returns :data:`TURN_ENDED`.
FRAMES_PER_TURN = 256
#: What a piece inflated from a compressed message (up to :data:`~ouistiti_gw.core.deflate.INFLATE_STEP`, 64 KiB)
#: costs, in frames: a turn inflates at most 4 MiB (a few milliseconds), however little the client
#: sent (16 KiB of deflate can inflate to 16 MiB), and the frame budget pays for inflating too.
FRAMES_PER_INFLATED_PIECE = 4
#: The first byte of a whole (FIN) uncompressed text or binary frame: :meth:`Protocol.next_event`'s fast path.
_FIN_TEXT = 0x80 | int(Opcode.TEXT)
_FIN_BINARY = 0x80 | int(Opcode.BINARY)
#: A DataPiece built without the Python-level ``__new__`` a NamedTuple has.
_new_tuple = tuple.__new__


class WebSocketClosed(GatewayError):
    """Data cannot be sent: the closing handshake has started, or the connection is lost.

    (Not ``ConnectionClosed``: that name is the ``websockets`` library's, which users know.)
    """


class State(Enum):
    """Where the closing handshake stands (RFC 6455 section 7, "Closing the Connection").

    Data may be sent only while OPEN; frames from the peer are read while OPEN or CLOSING_LOCAL
    (waiting for its close frame, section 7.1.2; its data is discarded, section 7.1.1).
    """

    OPEN = "open"
    #: We sent a close frame; the peer's has not come.
    CLOSING_LOCAL = "closing (ours sent)"
    #: The peer sent a close frame; ours (the reply, section 5.5.1) has not gone.
    CLOSING_REMOTE = "closing (theirs received)"
    #: Both close frames went, or the transport ended.
    CLOSED = "closed"


class DataPiece(NamedTuple):
    """A piece of a data message: ``final`` exactly once, on its last piece (which may be empty;
    other pieces never are). A text message's pieces may split a character; each piece is
    checked up to its last byte. (A tuple: one per message, cheaper than a dataclass.)"""

    data: bytes
    is_text: bool
    final: bool


class Ping(NamedTuple):
    """The peer pinged: answer with :meth:`Protocol.send_pong` (section 5.5.2)."""

    payload: bytes


class Pong(NamedTuple):
    """The peer sent a pong (an answer to our ping, or unsolicited: section 5.5.3)."""

    payload: bytes


class CloseReceived(NamedTuple):
    """The peer's close frame (1005: it had no status code); answer with
    :meth:`Protocol.send_close_reply`. Nothing is parsed after it."""

    code: int
    reason: str


class TurnEnded:
    """:data:`FRAMES_PER_TURN` frames were parsed (and paid for): let the other connections run."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "TURN_ENDED"


TURN_ENDED = TurnEnded()


class Throttled(NamedTuple):
    """The byte budget is spent: read nothing from the peer for ``seconds`` (what was already
    read is handed out after that; nothing is lost or closed)."""

    seconds: float


Event = Union[DataPiece, Ping, Pong, CloseReceived, TurnEnded, Throttled]


class NotMovable(GatewayError):
    """:meth:`Protocol.snapshot` was asked for a state that cannot be carried over (the reason:
    :meth:`Protocol.why_not_movable`)."""


class _Limits(NamedTuple):
    """What a core's limits imply, computed once for every core that has the same ones."""

    frame_rate: float
    #: Frames per turn: a batch paid for at once may not exceed the frame budget's burst.
    turn: int
    byte_rate: float
    #: The byte budget's burst: one second's worth, or a whole message.
    byte_burst: float
    #: The reason of a 1009.
    too_big: str


@functools.lru_cache(maxsize=64)
def _limits_of(max_message_size: int, max_frame_rate: float, max_byte_rate: float) -> _Limits:
    turn = min(FRAMES_PER_TURN, int(max(max_frame_rate, 1.0))) if max_frame_rate else FRAMES_PER_TURN
    return _Limits(max_frame_rate, turn, max_byte_rate, max(max_byte_rate, max_message_size),
                   f"message over {max_message_size} bytes")


@dataclass(frozen=True)
class ProtocolState:
    """What a :class:`Protocol` holds between two reads, as plain values (:meth:`Protocol.snapshot`).

    Limits are not part of it: the core restored from it keeps its own (:meth:`Protocol.restore`).
    """

    unparsed: bytes
    #: The frame whose payload is being read: ``(fin, opcode, length, mask)``, and how much has come.
    frame: tuple[bool, int, int, bytes] | None
    frame_received: int
    #: The data message being received (None between messages), its size so far, and the
    #: bytes of a character its validator holds (None: no validator yet).
    message_opcode: int | None
    message_size: int
    utf8_pending: bytes | None
    frames_left: int
    frame_tokens: float | None
    frame_budget_updated: float | None
    bytes_received: int
    bytes_sent: int
    wire_bytes_received: int
    wire_bytes_sent: int
    #: permessage-deflate's negotiated parameters, as ``(server_no_context_takeover,
    #: client_no_context_takeover, server_max_window_bits or 0)``; None: not negotiated.
    deflate: tuple[bool, bool, int] | None

    def deflate_parameters(self) -> DeflateParameters | None:
        """The permessage-deflate parameters the session negotiated (the successor builds its core
        with them, whatever its own configuration says: the client relies on them)."""
        if self.deflate is None:
            return None
        server_no_context, client_no_context, window = self.deflate
        return DeflateParameters(server_no_context, client_no_context, window or None)


class Protocol:
    """The server side of one WebSocket connection after its handshake (client frames must be masked).

    :param max_message_size: a message whose payload would exceed it is refused with 1009.
    :param max_frame_rate: frames per second (every kind), in bursts of one second's worth;
        past it the connection is failed with 1008 (0: no limit).
    :param max_byte_rate: payload bytes per second, counted after inflation, in bursts of one
        second's worth or ``max_message_size``, whichever is more; past it :class:`Throttled`
        (0: no limit).
    :param deflate: the connection's permessage-deflate state, when it was negotiated.
    :param clock: the budgets' and the compressor's clock (seconds, monotonic), for tests.
    """

    # One per session: without slots its ~30 attributes take a dict of 1.5 KiB (past CPython's
    # 30 shared keys), 5 % of an idle session.
    __slots__ = ("state", "close_sent", "close_received", "close_reason", "bytes_received", "bytes_sent",
                 "wire_bytes_received", "wire_bytes_sent", "deflate", "_clock", "_limits", "max_message_size",
                 "_too_big", "_frame_budget", "_frames_left", "_byte_budget", "_bytes_paid", "_bytes_due",
                 "_buffer", "_offset", "_receiving", "_frame", "_frame_received", "_message_opcode",
                 "_message_size", "_validator", "_compressed", "_inflating", "_inflated_text", "_sending_pieces",
                 "needs_data")

    def __init__(self, *, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
                 max_frame_rate: float = DEFAULT_MAX_FRAME_RATE,
                 max_byte_rate: float = DEFAULT_MAX_BYTE_RATE,
                 deflate: PerMessageDeflate | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.state = State.OPEN
        #: The code of our close frame, and of the peer's (1006: the transport ended without one).
        self.close_sent: int | None = None
        self.close_received: int | None = None
        self.close_reason = ""
        #: Data payload bytes received (discarded ones included) and sent, inflated; and as
        #: they were on the wire (compressed: the data frames' payloads).
        self.bytes_received = 0
        self.bytes_sent = 0
        self.wire_bytes_received = 0
        self.wire_bytes_sent = 0
        self.deflate = deflate
        self._clock = clock
        #: What follows from the limits, shared by every core built with the same ones.
        self._limits = limits = _limits_of(max_message_size, max_frame_rate, max_byte_rate)
        self.max_message_size = max_message_size
        #: The reason of a 1009 once :meth:`limit_message_size` lowered the limit (None: the limits').
        self._too_big: str | None = None
        #: The budgets are made when first charged: a full bucket then is the full bucket it would
        #: have been since the start (a bucket never holds more than its burst), and an idle
        #: session keeps none.
        self._frame_budget: TokenBucket | None = None
        self._frames_left = limits.turn
        self._byte_budget: TokenBucket | None = None
        #: The bytes received the byte budget was charged for, and the count at which it must be
        #: charged again: what it held then (until that, it cannot be in debt).
        self._bytes_paid = 0
        self._bytes_due = int(limits.byte_burst) if max_byte_rate else _NEVER
        #: Bytes received but not parsed yet: those from ``_buffer[_offset]`` on. Consumed by
        #: moving the offset, never by copying the rest (a 256 KiB read may hold 37 000 frames).
        self._buffer = b""
        self._offset = 0
        #: False once nothing more is parsed: after a violation or the peer's close frame.
        self._receiving = True
        #: The frame whose payload is being read, and how much of it has been.
        self._frame: FrameHeader | None = None
        self._frame_received = 0
        #: The data message being received: its opcode (None between messages), size, validator.
        self._message_opcode: Opcode | None = None
        self._message_size = 0
        self._validator: Utf8Validator | None = None
        #: The message being received is compressed (RSV1); its inflated bytes are pending,
        #: and its kind (the frames may all be parsed while inflated pieces are still to come).
        self._compressed = False
        self._inflating = False
        self._inflated_text = False
        #: A message sent with :meth:`send_data` is open (its final piece has not gone out).
        self._sending_pieces = False
        #: True: :meth:`next_event` has nothing until :meth:`receive_data` brings more bytes, so a
        #: shell may read at once. Set only where that is known for free; False says nothing.
        self.needs_data = False

    @property
    def receiving(self) -> bool:
        """True while frames from the peer are still expected (and parsed)."""
        return self._receiving

    @property
    def mid_compressed_message(self) -> bool:
        """True when a compressed message is unfinished and all that came of it is inflated:
        the rest must be read from the peer. What it inflated to so far may be worth far more
        than the peer sent (a shell had better not hold it while it waits)."""
        return self._compressed and not self._inflating

    def limit_message_size(self, size: int, reason: str) -> None:
        """Refuse (1009) messages over ``size`` bytes too, with ``reason`` in the close frame."""
        if size < self.max_message_size:
            self.max_message_size = size
            self._too_big = f"{reason} (over {size} bytes)"

    @property
    def _too_big_reason(self) -> str:
        return self._too_big or self._limits.too_big

    # -- receiving -------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Add bytes read from the transport (``b""`` is not the end: see :meth:`connection_lost`)."""
        if not self._receiving:
            return
        self.needs_data = False
        if self._offset >= len(self._buffer):
            self._buffer, self._offset = data, 0
        else:  # what is left is a piece of a header or of a control frame: a few bytes
            self._buffer, self._offset = self._buffer[self._offset:] + data, 0

    def connection_lost(self) -> None:
        """The transport ended: the connection is CLOSED; without the peer's close frame, 1006
        (section 7.1.5, "The WebSocket Connection Close Code is considered to be 1006")."""
        self._receiving = False
        self.state = State.CLOSED
        if self.close_received is None:
            self.close_received = CloseCode.ABNORMAL

    def next_event(self) -> Event | None:
        """The next event the received bytes hold; None until more bytes come (or once
        :attr:`receiving` is False), :class:`Throttled` instead while the byte budget is in
        debt. Raises :class:`~ouistiti_gw.core.frames.ProtocolViolation` when the peer
        broke the protocol: answer with ``send_close(violation.code, violation.reason)``."""
        buffer, offset = self._buffer, self._offset
        if len(buffer) - offset >= 6:
            # Nearly every frame: a whole text or binary message in one masked frame of under
            # 64 KiB, read in one pass. Anything else, or anything under way (a fragmented
            # message, inflating, our close sent, the turn's frames spent), takes the general
            # path below, which checks every rule; this one checks the same, in the same order.
            first, second = buffer[offset], buffer[offset + 1]
            if (first == _FIN_TEXT or first == _FIN_BINARY) and 0x80 <= second < 0xFF:
                length, start = second & 0x7F, offset + 6
                if length == 126:
                    length, start = buffer[offset + 2] << 8 | buffer[offset + 3], offset + 8
                end = start + length
                # (while receiving, close_sent is None exactly while the state is OPEN)
                if end <= len(buffer) and length <= self.max_message_size and self._frame is None \
                        and self._message_opcode is None and self._frames_left > 0 and self._receiving \
                        and self.close_sent is None and not self._inflating:
                    piece = unmask(buffer[start:end], buffer[start - 4:start])
                    self._offset = end
                    self._frames_left -= 1
                    self._message_size = length
                    self.wire_bytes_received += length
                    if first == _FIN_TEXT and not piece.isascii():
                        self._check_whole_text(piece)
                    self.bytes_received += length
                    self.needs_data = end == len(buffer) and self.bytes_received < self._bytes_due
                    return _new_tuple(DataPiece, (piece, first == _FIN_TEXT, True))
        if not self._receiving:
            return None
        try:
            if self._inflating:
                inflated = self._inflated_piece()
                if inflated is not None:
                    return inflated
            while True:
                frame = self._frame
                if frame is None:
                    buffer, offset = self._buffer, self._offset
                    available = len(buffer) - offset
                    if available < 2:
                        break
                    if self._frames_left <= 0:
                        self._end_turn()
                        return TURN_ENDED
                    size = header_size(buffer, offset)
                    if available < size:
                        break
                    frame = parse_header(buffer, offset=offset, require_mask=True, rsv1=self.deflate is not None)
                    self._offset = offset + size
                    self._frames_left -= 1
                    self._start_frame(frame)
                if frame.opcode >= Opcode.CLOSE:  # a control frame: 125 bytes at most (parse_header)
                    return self._control_frame(frame)
                event = self._data_piece(frame)
                if event is not None:
                    return event
                if self._frame is not None:
                    break  # the rest of its payload has not come yet
                # an empty non-final frame, or data discarded after our close: read on
        except ProtocolViolation:
            self._receiving = False
            raise
        # Everything that came is handed out: more bytes are needed, if the budget allows.
        return None if self.bytes_received < self._bytes_due else self._pay_bytes()

    def _pay_bytes(self) -> Throttled | None:
        """Charge the byte budget for what came since it was last charged; :class:`Throttled`
        when that put it in debt (the peer must not be read until it is paid back)."""
        budget = self._byte_budget
        if budget is None:
            limits = self._limits
            budget = self._byte_budget = TokenBucket(limits.byte_rate, clock=self._clock, capacity=limits.byte_burst)
        received = self.bytes_received
        wait = budget.charge(received - self._bytes_paid)
        self._bytes_paid = received
        self._bytes_due = received + max(int(budget.tokens), 0)
        return Throttled(wait) if wait else None

    def _end_turn(self) -> None:
        """Pay for a turn's frames from the frame budget (1008 when it is spent)."""
        limits = self._limits
        self._frames_left = limits.turn
        if not limits.frame_rate:
            return
        budget = self._frame_budget or self._new_frame_budget()
        if not budget.take(limits.turn):
            raise ProtocolViolation(CloseCode.POLICY_VIOLATION, f"over {limits.frame_rate:g} frames/s (max_frame_rate)")

    def _new_frame_budget(self) -> TokenBucket:
        budget = self._frame_budget = TokenBucket(self._limits.frame_rate, clock=self._clock)
        return budget

    def _start_frame(self, frame: FrameHeader) -> None:
        """Check a data frame against the message it starts or continues (section 5.4)."""
        self._frame, self._frame_received = frame, 0
        opcode = frame.opcode
        if frame.rsv1 and opcode in (Opcode.CONTINUATION, Opcode.PING, Opcode.PONG, Opcode.CLOSE):
            # RFC 7692 section 6.1: RSV1 on "the first frame of a message" only; control frames
            # are never compressed (section 6: "applies only to data messages").
            what = "a continuation" if opcode == Opcode.CONTINUATION else "a control frame"
            raise ProtocolViolation(CloseCode.PROTOCOL_ERROR, f"RSV1 (compressed) on {what}")
        if opcode >= Opcode.CLOSE:
            return
        if opcode == Opcode.CONTINUATION:
            if self._message_opcode is None:
                raise ProtocolViolation(CloseCode.PROTOCOL_ERROR, "continuation frame without a message")
        elif self._message_opcode is not None:
            raise ProtocolViolation(CloseCode.PROTOCOL_ERROR, "new message inside a fragmented message")
        else:
            self._message_opcode = opcode
            self._message_size = 0
            self._compressed = frame.rsv1
            if frame.rsv1:
                assert self.deflate is not None  # the parser lets RSV1 through only then
                self.deflate.start_message()
                self._inflated_text = opcode == Opcode.TEXT
        self._message_size += frame.length
        if self._message_size > self.max_message_size:
            raise ProtocolViolation(CloseCode.MESSAGE_TOO_BIG, self._too_big_reason)

    def _data_piece(self, frame: FrameHeader) -> DataPiece | TurnEnded | Throttled | None:
        """What has arrived of ``frame``'s payload, unmasked and checked; None if nothing to
        hand out (no byte yet, an empty non-final frame, or data after our close)."""
        buffer, offset, received = self._buffer, self._offset, self._frame_received
        count = min(len(buffer) - offset, frame.length - received)
        if count <= 0 and frame.length:
            return None
        piece = buffer if offset == 0 and count == len(buffer) else buffer[offset:offset + count]
        self._offset = offset + count
        if frame.mask:
            piece = apply_mask(piece, frame.mask, received)
        received += count
        self._frame_received = received
        done = received == frame.length
        final = done and frame.fin
        self.wire_bytes_received += count
        if self._compressed:
            return self._compressed_piece(piece, done, final)
        is_text = self._message_opcode == Opcode.TEXT
        if is_text:
            self._check_text(piece, final, whole=final and count == self._message_size)
        if done:
            self._frame = None
            if final:
                self._message_opcode, self._validator = None, None
        self.bytes_received += count
        if self.state is State.CLOSING_LOCAL:
            return None  # section 7.1.1: after our close frame, the peer's data is discarded
        return DataPiece(piece, is_text, final) if piece or final else None

    def _compressed_piece(self, piece: bytes, done: bool, final: bool) -> DataPiece | TurnEnded | Throttled | None:
        """Feed a compressed message's payload to the inflater; its first inflated piece, if any."""
        if done:
            self._frame = None
            if final:
                self._message_opcode, self._compressed = None, False
        if self.state is State.CLOSING_LOCAL:
            return None  # discarded (section 7.1.1), not inflated
        assert self.deflate is not None
        self.deflate.feed(piece, end=final)
        self._inflating = True
        return self._inflated_piece()

    def _inflated_piece(self) -> DataPiece | TurnEnded | Throttled | None:
        """The next inflated piece of a compressed message; None once what came is inflated;
        :data:`TURN_ENDED` when the turn's budget is spent (each piece pays
        :data:`FRAMES_PER_INFLATED_PIECE` from it)."""
        assert self.deflate is not None
        if self.state is State.CLOSING_LOCAL:
            self._inflating = False
            return None
        if self._frames_left <= 0:
            self._end_turn()
            return TURN_ENDED
        if self.bytes_received >= self._bytes_due:  # a step may inflate 64 KiB: paid before it
            throttled = self._pay_bytes()
            if throttled is not None:
                return throttled
        self._frames_left -= FRAMES_PER_INFLATED_PIECE
        result = self.deflate.read(self.max_message_size, self._too_big_reason)
        if result is None:
            self._inflating = False
            return None
        data, final = result
        if self._inflated_text:
            self._check_text(data, final, whole=final and self.deflate.produced == len(data))
        if final:
            self._inflating, self._validator = False, None
        self.bytes_received += len(data)
        return DataPiece(data, self._inflated_text, final)

    def _check_whole_text(self, piece: bytes) -> None:
        """:meth:`next_event`'s fast path: a whole text message that is not ASCII."""
        try:
            check_message(piece)
        except ProtocolViolation:
            self._receiving = False
            raise

    def _check_text(self, piece: bytes, final: bool, *, whole: bool) -> None:
        """Raise 1007 at the first piece that cannot be valid UTF-8 (section 8.1)."""
        if whole:  # a message in one piece (nearly all): checked at once, no incremental decoder
            if not piece.isascii():  # (ASCII, the common case, without a call)
                check_message(piece)
            return
        if self._validator is None:
            self._validator = Utf8Validator()
        self._validator.feed(piece, final=final)

    def _control_frame(self, frame: FrameHeader) -> Ping | Pong | CloseReceived | None:
        buffer, offset, length = self._buffer, self._offset, frame.length
        if len(buffer) - offset < length:
            return None  # control frames are read whole (125 bytes at most)
        self._offset = offset + length
        self._frame = None
        payload = apply_mask(buffer[offset:offset + length], frame.mask)
        if frame.opcode == Opcode.PING:
            return Ping(payload)
        if frame.opcode == Opcode.PONG:
            return Pong(payload)
        code, reason = parse_close_payload(payload)
        self.close_received, self.close_reason = code, reason
        self._receiving = False
        self.state = State.CLOSED if self.state is State.CLOSING_LOCAL else State.CLOSING_REMOTE
        return CloseReceived(code, reason)

    # -- moving to another process ---------------------------------------------------------

    def why_not_movable(self) -> str | None:
        """None when :meth:`snapshot` can carry this core's state over now; else why not: its
        closing handshake has started, or zlib holds state no snapshot can take (a message
        being received compressed, the client's context takeover), or a message it sends in
        pieces is open."""
        if self.state is not State.OPEN or not self._receiving:
            return "closing"
        if self._sending_pieces:
            return "inside a message sent in pieces"
        deflate = self.deflate
        if deflate is not None:
            if not deflate.parameters.client_no_context_takeover:
                return "compressed with the client's context takeover (zlib cannot export the inflater's window)"
            if self._message_opcode is not None or self._inflating:
                return "inside a compressed message"
        return None

    def snapshot(self) -> ProtocolState:
        """This core's state between two reads (the shell must not be reading), for
        :meth:`restore` in another process. Raises :class:`NotMovable` when
        :meth:`why_not_movable` says it cannot be carried; the compressor is not part of it
        (drop it first: legal between messages, the client's inflater keeps working)."""
        why = self.why_not_movable()
        if why is not None:
            raise NotMovable(why)
        frame, validator, budget, deflate = self._frame, self._validator, self._frame_budget, self.deflate
        return ProtocolState(
            unparsed=bytes(self._buffer[self._offset:]),
            frame=(frame.fin, int(frame.opcode), frame.length, frame.mask) if frame is not None else None,
            frame_received=self._frame_received,
            message_opcode=int(self._message_opcode) if self._message_opcode is not None else None,
            message_size=self._message_size,
            utf8_pending=validator.pending if validator is not None else None,
            frames_left=self._frames_left,
            frame_tokens=budget.tokens if budget is not None else None,
            frame_budget_updated=budget.updated if budget is not None else None,
            bytes_received=self.bytes_received,
            bytes_sent=self.bytes_sent,
            wire_bytes_received=self.wire_bytes_received,
            wire_bytes_sent=self.wire_bytes_sent,
            deflate=(deflate.parameters.server_no_context_takeover, deflate.parameters.client_no_context_takeover,
                     deflate.parameters.server_max_window_bits or 0) if deflate is not None else None,
        )

    def restore(self, state: ProtocolState) -> None:
        """Go on from ``state``, another core's :meth:`snapshot`, in this fresh core (nothing
        received yet), built with this process's limits: they stay (:meth:`over_limit` tells
        whether the message in progress already exceeds them). Its ``deflate`` must be built
        with ``state.deflate_parameters()``."""
        self._buffer, self._offset = state.unparsed, 0
        if state.frame is not None:
            fin, opcode, length, mask = state.frame
            self._frame = FrameHeader(fin, Opcode(opcode), length, mask)
        self._frame_received = state.frame_received
        self._message_opcode = Opcode(state.message_opcode) if state.message_opcode is not None else None
        self._message_size = state.message_size
        if state.utf8_pending is not None:
            self._validator = Utf8Validator(state.utf8_pending)
        self._frames_left = min(state.frames_left, self._limits.turn)
        if self._limits.frame_rate and state.frame_tokens is not None and state.frame_budget_updated is not None:
            self._new_frame_budget().resume(state.frame_tokens, state.frame_budget_updated)
        self.bytes_received, self.bytes_sent = state.bytes_received, state.bytes_sent
        # The byte budget starts afresh here: what came before the move was paid for there.
        self._bytes_paid = state.bytes_received
        self._bytes_due += state.bytes_received
        self.wire_bytes_received, self.wire_bytes_sent = state.wire_bytes_received, state.wire_bytes_sent

    def over_limit(self) -> ProtocolViolation | None:
        """1009 when the message a restored core is receiving is already over its
        ``max_message_size`` (its frames were announced under the old process's larger limit)."""
        if self._message_size > self.max_message_size:
            return ProtocolViolation(CloseCode.MESSAGE_TOO_BIG, self._too_big_reason)
        return None

    # -- sending ---------------------------------------------------------------------------

    def send_data(self, data: bytes | memoryview, *, text: bool,
                  final: bool = True) -> tuple[bytes, bytes | memoryview]:
        """A data message, or one piece of it (section 5.4): the first piece opens it as text or
        binary, the ``final`` one ends it, and no other message may start in between. The
        pieces of a text message may split a character; the whole must be valid UTF-8.

        Returns the frame as two buffers to write in order, header then payload (which is never
        copied). Raises :class:`WebSocketClosed` once the closing handshake has started.
        """
        if self.state is not State.OPEN:
            raise WebSocketClosed("the closing handshake has started")
        payload: bytes | memoryview = data
        compressed = False
        if self._sending_pieces:
            opcode = Opcode.CONTINUATION
        else:
            opcode = Opcode.TEXT if text else Opcode.BINARY
            if final and self.deflate is not None:  # a message in pieces goes uncompressed
                deflated = self.deflate.compress(data, self._clock())
                if deflated is not None:
                    payload, compressed = deflated, True
        self._sending_pieces = not final
        length = len(payload)
        self.bytes_sent += len(data)
        self.wire_bytes_sent += length
        first = (0x80 if final else 0) | (RSV1 if compressed else 0) | opcode
        if length < 126:  # encode_header's work, without its call
            return pack_short_header(first, length), payload
        if length <= 0xFFFF:
            return pack_medium_header(first, 126, length), payload
        return encode_header(opcode, length, fin=final, rsv1=compressed), payload

    def drop_idle_compressor(self) -> float | None:
        """Drop the compressor once it has been idle long enough (see :mod:`ouistiti_gw.core.deflate`); the
        seconds until it would be, or None when there is none to drop."""
        return self.deflate.drop_idle(self._clock()) if self.deflate is not None else None

    def send_ping(self, payload: bytes = b"") -> bytes:
        return encode_header(Opcode.PING, len(payload)) + payload

    def send_pong(self, payload: bytes) -> bytes:
        """The answer to a :class:`Ping` (sent in any state: a pong is no data)."""
        return encode_header(Opcode.PONG, len(payload)) + payload

    def send_close(self, code: int = CloseCode.NORMAL, reason: str = "") -> bytes:
        """Our close frame, with its status code and reason; ``b""`` if ours already went."""
        if self.close_sent is not None:
            return b""
        self.close_sent = code
        self.state = State.CLOSING_LOCAL if self.state is State.OPEN else State.CLOSED
        payload = encode_close_payload(code, reason)
        return encode_header(Opcode.CLOSE, len(payload)) + payload

    def send_close_reply(self) -> bytes:
        """Our answer to the peer's close frame: "typically echoing the status code it received"
        (section 5.5.1); 1000 for a close without one."""
        code = self.close_received
        return self.send_close(CloseCode.NORMAL if code in (None, CloseCode.NO_STATUS) else code)
