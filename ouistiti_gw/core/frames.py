"""RFC 6455 framing, sans-IO: opcodes, close codes, header parsing, masking, frame encoding.

This module knows bytes, not sockets (as ``wsproto`` does), so every rule here can be tested
against the RFC without a connection. :mod:`ouistiti_gw.core.protocol` (the sans-I/O core) drives it.

It replaces the parts of gevent-websocket 0.10.1 we do not trust: that library unmasks with a
Python loop over every byte, never writes the status code in its close frames, and accepts
unmasked client frames. Unmasking here is websockets' C helper where it is installed, else one
big-integer XOR over the whole payload (their costs: ``benchmarks/PROFILE.md``).
"""
from __future__ import annotations

import struct
from enum import IntEnum
from typing import NamedTuple

from ..errors import GatewayError

try:  # websockets' C helper (SIMD XOR): many times faster than the big-integer XOR below
    from websockets.speedups import apply_mask as _c_apply_mask
except ImportError:  # pragma: no cover - a platform without websockets' compiled speedups
    _c_apply_mask = None  # type: ignore[assignment]  # (then the pure-Python XOR below)


class Opcode(IntEnum):
    """RFC 6455 section 5.2 opcodes."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


class CloseCode(IntEnum):
    """RFC 6455 section 7.4.1 status codes that the gateway sends or checks."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS = 1005
    ABNORMAL = 1006
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011


class ProtocolViolation(GatewayError):
    """The peer broke RFC 6455; the connection must be failed with ``code`` (section 7.1.7)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


#: Largest payload of a control frame (section 5.5).
MAX_CONTROL_PAYLOAD = 125
_FIN = 0x80
_RSV = 0x70
#: RSV1: "Per-Message Compressed" once permessage-deflate is negotiated (RFC 7692 section 6).
RSV1 = 0x40
_MASK = 0x80


class FrameHeader(NamedTuple):
    """A parsed frame header; ``mask`` is the 4-byte key or ``b""``. (A tuple: one per frame, so
    cheaper to build than a frozen dataclass.)"""

    fin: bool
    opcode: Opcode
    length: int
    mask: bytes
    #: RSV1, only ever True when the parser was told an extension uses it.
    rsv1: bool = False


#: Opcode by value, without constructing the enum per frame.
_OPCODES = {int(opcode): opcode for opcode in Opcode}


def header_size(data: bytes, offset: int = 0) -> int:
    """Total header length implied by the first two bytes (from ``offset``): 2 to 14, so a reader
    knows how much to read."""
    second = data[offset + 1]
    size = 2 + (4 if second & _MASK else 0)
    length = second & 0x7F
    if length == 126:
        size += 2
    elif length == 127:
        size += 8
    return size


def parse_header(data: bytes, *, require_mask: bool, offset: int = 0, rsv1: bool = False) -> FrameHeader:
    """Parse a complete header (``header_size(data, offset)`` bytes from ``offset``: a buffer of
    many frames is read in place, not sliced) and check what the header alone can tell.

    ``require_mask`` is True on the server side: section 5.1, "The server MUST close the
    connection upon receiving a frame that is not masked ... with a status code of 1002".
    ``rsv1`` is True when an extension gives RSV1 a meaning (permessage-deflate): the bit is then
    returned in the header, for the extension to check where it may appear.
    """
    first, second = data[offset], data[offset + 1]
    if first & (_RSV ^ RSV1 if rsv1 else _RSV):
        raise ProtocolViolation(CloseCode.PROTOCOL_ERROR, "reserved bits set without an extension")
    opcode = _OPCODES.get(first & 0x0F)
    if opcode is None:
        raise ProtocolViolation(CloseCode.PROTOCOL_ERROR, f"reserved opcode {first & 0x0F:#x}")
    fin = bool(first & _FIN)
    masked = bool(second & _MASK)
    if require_mask and not masked:
        raise ProtocolViolation(CloseCode.PROTOCOL_ERROR, "client frame is not masked")
    length = second & 0x7F
    offset += 2
    if length == 126:
        (length,) = struct.unpack_from("!H", data, offset)
        offset += 2
    elif length == 127:
        (length,) = struct.unpack_from("!Q", data, offset)
        offset += 8
        if length >> 63:
            raise ProtocolViolation(CloseCode.PROTOCOL_ERROR, "64-bit length with the top bit set")
    if opcode >= Opcode.CLOSE:  # a control frame
        if not fin:
            raise ProtocolViolation(CloseCode.PROTOCOL_ERROR, "fragmented control frame")
        if length > MAX_CONTROL_PAYLOAD:
            raise ProtocolViolation(CloseCode.PROTOCOL_ERROR, "control frame payload over 125 bytes")
    mask = bytes(data[offset:offset + 4]) if masked else b""
    return FrameHeader(fin, opcode, length, mask, bool(first & RSV1))


def apply_mask(payload: bytes | bytearray | memoryview, mask: bytes, offset: int = 0) -> bytes:
    """XOR ``payload`` with the repeated 4-byte ``mask`` (section 5.3).

    Masking and unmasking are the same operation: websockets' C helper does it where it is
    installed; else one big-integer operation (``int.from_bytes`` and ``^`` run in C over the
    whole buffer, never a per-byte Python loop). ``offset`` is where ``payload`` starts in its
    frame's payload, so a payload can be unmasked in pieces of any size, as its bytes arrive.
    """
    length = len(payload)
    if not length or not mask:
        return bytes(payload)
    shift = offset % 4
    if shift:
        mask = mask[shift:] + mask[:shift]
    if _c_apply_mask is not None:
        return _c_apply_mask(payload, mask)
    key = mask * (length // 4 + 1)
    value = int.from_bytes(payload, "big") ^ int.from_bytes(key[:length], "big")
    return value.to_bytes(length, "big")


#: A whole payload unmasked (from its first byte): websockets' C helper itself where it is
#: installed, without :func:`apply_mask`'s call around it (the protocol core's fast path).
unmask = apply_mask if _c_apply_mask is None else _c_apply_mask


#: A header's two bytes (a length under 126), and its four (a 16-bit length), with their
#: formats parsed once: the protocol core packs its data frames' headers with them directly.
pack_short_header = struct.Struct("!BB").pack
pack_medium_header = struct.Struct("!BBH").pack


def encode_header(opcode: int, length: int, *, fin: bool = True, mask: bytes = b"", rsv1: bool = False) -> bytes:
    """Encode a frame header with the shortest length form (section 5.2); ``rsv1`` marks a
    compressed message's first frame (RFC 7692 section 6)."""
    first = (_FIN if fin else 0) | (RSV1 if rsv1 else 0) | opcode
    mask_bit = _MASK if mask else 0
    if length < 126:
        header = pack_short_header(first, mask_bit | length)
    elif length <= 0xFFFF:
        header = pack_medium_header(first, mask_bit | 126, length)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, length)
    return header + mask


def encode_frame(opcode: int, payload: bytes = b"", *, fin: bool = True, mask: bytes = b"") -> bytes:
    """A whole frame; ``mask`` (4 bytes) is for clients, servers send unmasked frames."""
    body = apply_mask(payload, mask) if mask else payload
    return encode_header(opcode, len(payload), fin=fin, mask=mask) + body


def is_valid_close_code(code: int) -> bool:
    """Codes a peer may put on the wire (section 7.4): 1000-1003, 1007-1011, 3000-4999.

    1004-1006 and 1015 are reserved and MUST NOT be sent; 1012-1014 are registered with IANA
    since the RFC and are accepted as browsers do.
    """
    return code in (1000, 1001, 1002, 1003) or 1007 <= code <= 1014 or 3000 <= code <= 4999


def encode_close_payload(code: int | None, reason: str = "") -> bytes:
    """The payload of a close frame: 2-byte status code then UTF-8 reason, cut to fit 125 bytes."""
    if code is None:
        return b""
    return struct.pack("!H", code) + fit_close_reason(reason).encode("utf-8")


def fit_close_reason(reason: str) -> str:
    """``reason`` cut to what a close frame holds (123 bytes of UTF-8), never inside a character."""
    return reason.encode("utf-8")[:MAX_CONTROL_PAYLOAD - 2].decode("utf-8", "ignore")


def parse_close_payload(payload: bytes) -> tuple[int, str]:
    """Read a peer's close frame (section 5.5.1); no payload means 1005, "no status received"."""
    if not payload:
        return CloseCode.NO_STATUS, ""
    if len(payload) == 1:
        raise ProtocolViolation(CloseCode.PROTOCOL_ERROR, "close frame with a 1-byte payload")
    (code,) = struct.unpack_from("!H", payload)
    if not is_valid_close_code(code):
        raise ProtocolViolation(CloseCode.PROTOCOL_ERROR, f"invalid close code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolViolation(CloseCode.INVALID_DATA, "close reason is not valid UTF-8") from None
    return code, reason
