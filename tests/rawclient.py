"""A raw-socket RFC 6455 client that sends exact bytes, for the conformance suite.

It shares no code with :mod:`ouistiti_gw.core.frames` on purpose: a suite that encoded its frames
with the codec under test would agree with that codec's mistakes. Everything here is written
from RFC 6455 itself:

- :func:`build_frame` makes any frame, well-formed or not: reserved bits, reserved opcodes,
  unmasked, a length field that lies or uses a non-minimal form;
- :meth:`RawClient.send` writes bytes at once, frame by frame or in chops with small pauses
  (so a server that fails fast can be told from one that waits for the rest);
- :meth:`RawClient.recv_frame` parses the server's frames and checks what RFC 6455 requires of a
  server (section 5.1: never masked; 5.2: no reserved bits, shortest length form);
- :meth:`RawClient.expect_close` and :meth:`RawClient.expect_eof` check how the server ends
  a connection: its close frame and code, then the TCP connection closed by the server;
- with permessage-deflate in the server's answer (RFC 7692), RSV1 is allowed on the first frame
  of a data message only, and such a payload is inflated with zlib (a window of the agreed
  ``server_max_window_bits``, kept between messages unless ``server_no_context_takeover``)
  before it is checked: :attr:`Frame.rsv` still says it came compressed.

Timeouts here only guard against hanging: no assertion depends on how fast the server is.
"""
from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
import threading
import time
import zlib
from dataclasses import dataclass, replace
from enum import Enum
from typing import Iterable

from support.clients import handshake_request, new_key

#: RFC 6455 section 1.3: the GUID appended to Sec-WebSocket-Key for Sec-WebSocket-Accept.
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

#: The echo servers behind the suite's gateway (see conftest.py): a stream and a SEQPACKET one.
STREAM_ECHO = "/echo"
SEQPACKET_ECHO = "/echo-seq"

#: How long a test waits for something it expects before it fails (a guard, not a measure).
GUARD_SECONDS = 5.0
#: Pause between the writes of a chopped send, so they reach the server as separate reads.
CHOP_PAUSE = 0.002


def mask_bytes(payload: bytes, key: bytes) -> bytes:
    """XOR ``payload`` with the repeated 4-byte ``key`` (section 5.3)."""
    if not payload:
        return b""
    repeated = (key * (len(payload) // 4 + 1))[:len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(len(payload), "big")


def first_difference(a: bytes | bytearray, b: bytes | bytearray) -> int:
    """Index of the first byte where ``a`` and ``b`` differ (the shorter length if one is a prefix)."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


class LengthForm(Enum):
    """How the payload length is written (section 5.2): in 7 bits, or after 126 or 127."""

    SHORTEST = "shortest"
    BITS_7 = 7
    BITS_16 = 16
    BITS_64 = 64


def _length_field(length: int, form: LengthForm) -> tuple[int, bytes]:
    if form is LengthForm.SHORTEST:
        form = LengthForm.BITS_7 if length < 126 else LengthForm.BITS_16 if length <= 0xFFFF else LengthForm.BITS_64
    if form is LengthForm.BITS_7:
        return length, b""
    if form is LengthForm.BITS_16:
        return 126, struct.pack("!H", length)
    return 127, struct.pack("!Q", length)


def build_frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0, masked: bool = True,
                key: bytes | None = None, length: int | None = None,
                form: LengthForm = LengthForm.SHORTEST) -> bytes:
    """One client frame, exactly as asked, valid or not.

    ``rsv`` is the 3-bit RSV1-RSV3 field; ``length`` overrides the length field (a frame that
    announces more or less than its payload); ``form`` forces a length encoding.
    """
    announced = len(payload) if length is None else length
    short, extended = _length_field(announced, form)
    first = (0x80 if fin else 0) | (rsv & 0x7) << 4 | opcode & 0xF
    if not masked:
        return struct.pack("!BB", first, short) + extended + payload
    key = os.urandom(4) if key is None else key
    return struct.pack("!BB", first, 0x80 | short) + extended + key + mask_bytes(payload, key)


#: The masking key of :func:`client_frame`: a fixed one, so a test's bytes are the same each run.
FIXED_KEY = b"\x37\xfa\x21\x3d"


def client_frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv1: bool = False,
                 form: LengthForm = LengthForm.SHORTEST) -> bytes:
    """A well-formed client frame masked with :data:`FIXED_KEY`; ``rsv1`` marks a compressed
    message's first frame (RFC 7692)."""
    return build_frame(opcode, payload, fin=fin, rsv=4 if rsv1 else 0, key=FIXED_KEY, form=form)


def close_payload(code: int | None, reason: bytes = b"") -> bytes:
    """A close frame's payload: 2-byte code then the reason's bytes (sent as given, even invalid)."""
    return b"" if code is None else struct.pack("!H", code) + reason


def fragments(opcode: int, data: bytes, size: int, **kwargs) -> list[bytes]:
    """``data`` as one message in frames of ``size`` payload bytes (at least one frame)."""
    pieces = [data[i:i + size] for i in range(0, len(data), size)] or [b""]
    return [build_frame(opcode if i == 0 else CONTINUATION, piece, fin=i == len(pieces) - 1, **kwargs)
            for i, piece in enumerate(pieces)]


@dataclass(frozen=True)
class Frame:
    """A frame the server sent."""

    fin: bool
    rsv: int
    opcode: int
    payload: bytes
    masked: bool
    minimal_length: bool

    @property
    def close_code(self) -> int | None:
        """The status code of a close frame, None when it has no payload."""
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    def __repr__(self) -> str:
        shown = self.payload if len(self.payload) <= 40 else self.payload[:40] + b"..."
        return f"Frame(opcode={self.opcode:#x}, fin={self.fin}, len={len(self.payload)}, {shown!r})"


class ConnectionEnded(AssertionError):
    """The server closed the TCP connection where a frame was expected."""


class RawClient:
    """A WebSocket client over a plain TCP socket; the handshake is done by the constructor."""

    def __init__(self, port: int, path: str, *, extra_headers: str = "", timeout: float = GUARD_SECONDS) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        # Each write goes out at once: chopped sends must reach the server as separate segments.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self._buffer = bytearray()
        #: The server's Sec-WebSocket-Extensions (None: no extension), and its inflater.
        self.extensions: str | None = None
        self._inflater: zlib._Decompress | None = None
        self.eof = False
        #: True when the server ended the connection with a TCP reset rather than a FIN (seen by
        #: a read or a write, whichever the kernel reports it to first).
        self.reset = False
        self._handshake(port, path, extra_headers)

    def _handshake(self, port: int, path: str, extra_headers: str) -> None:
        key = new_key()
        self.sock.sendall(handshake_request(path, port=port, extra=extra_headers, key=key))
        while b"\r\n\r\n" not in self._buffer:
            self._fill()
        end = self._buffer.index(b"\r\n\r\n")
        head = bytes(self._buffer[:end]).decode("latin-1")
        del self._buffer[:end + 4]  # frames the server sent at once stay in the buffer
        status_line, *lines = head.split("\r\n")
        headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
        assert status_line.split()[1] == "101", head
        expected = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        assert headers.get("sec-websocket-accept") == expected, head
        self.extensions = headers.get("sec-websocket-extensions")

    @property
    def server_window_bits(self) -> int:
        """RFC 7692 section 7.1.2.1: the window the server agreed to compress with."""
        for param in (self.extensions or "").split(";"):
            name, _, value = param.strip().partition("=")
            if name == "server_max_window_bits":
                return int(value.strip('"'))
        return 15

    def _inflate(self, payload: bytes) -> bytes:
        """A compressed message's payload (section 7.2.2): the tail the sender removed is put back."""
        if self._inflater is None:
            self._inflater = zlib.decompressobj(-self.server_window_bits)
        data = self._inflater.decompress(payload + b"\x00\x00\xff\xff")
        if "server_no_context_takeover" in (self.extensions or ""):
            self._inflater = None
        return data

    # -- sending -----------------------------------------------------------------------

    def send(self, *frames: bytes, chop: int | None = None, per_frame: bool = False,
             pause: float = CHOP_PAUSE) -> None:
        """Write ``frames``: all in one write, one write per frame, or in chops of ``chop`` bytes.

        Between separate writes the client pauses for ``pause`` seconds, so the server reads them
        apart. A server that already failed the connection may reset it under a later write: that
        is not an error here, the frames it sent before are still read by :meth:`recv_frame`.
        """
        if chop is None and not per_frame:
            writes: Iterable[bytes] = [b"".join(frames)]
        elif chop is None:
            writes = frames
        else:
            data = b"".join(frames)
            writes = [data[i:i + chop] for i in range(0, len(data), chop)]
        for index, data in enumerate(writes):
            if index and pause:
                time.sleep(pause)
            try:
                self.sock.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                self.reset = True  # the server's TCP refused our data: it reset the connection
                return

    def send_in_background(self, *frames: bytes, chop: int | None = None) -> threading.Thread:
        """Write large frames from a thread (without pauses), so the echo is read while they are written."""
        thread = threading.Thread(target=self.send, args=frames, kwargs={"chop": chop, "pause": 0}, daemon=True)
        thread.start()
        return thread

    # -- receiving ---------------------------------------------------------------------

    def _fill(self) -> None:
        try:
            chunk = self.sock.recv(1 << 20)
        except ConnectionResetError:
            self.reset = True
            chunk = b""
        except socket.timeout:
            raise AssertionError(f"nothing from the server within {self.timeout}s") from None
        if not chunk:
            self.eof = True
            raise ConnectionEnded("the server closed the TCP connection")
        self._buffer += chunk

    def _take(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._fill()
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def recv_frame(self) -> Frame:
        """The next frame from the server, checked against what section 5 requires of servers."""
        first, second = self._take(2)
        length = second & 0x7F
        minimal = True
        if length == 126:
            (length,) = struct.unpack("!H", self._take(2))
            minimal = length >= 126
        elif length == 127:
            (length,) = struct.unpack("!Q", self._take(8))
            minimal = length > 0xFFFF
        masked = bool(second & 0x80)
        if masked:
            self._take(4)  # the masking key: a server frame must have none (checked below)
        payload = self._take(length)
        frame = Frame(bool(first & 0x80), first >> 4 & 0x7, first & 0xF, payload, masked, minimal)
        # Section 5.1: "A server MUST NOT mask any frames"; 5.2: RSV bits MUST be 0 and "the
        # minimal number of bytes MUST be used to encode the length".
        assert not frame.masked, f"server sent a masked frame: {frame}"
        compressed = (frame.rsv == 4 and frame.opcode in (TEXT, BINARY)
                      and (self.extensions or "").startswith("permessage-deflate"))
        assert frame.rsv == 0 or compressed, f"server set reserved bits: {frame}"
        if compressed:
            assert frame.fin, f"a compressed message must be whole here (the gateway does not fragment): {frame}"
            frame = replace(frame, payload=self._inflate(payload))
        assert frame.minimal_length, f"server used a non-minimal length form: {frame}"
        if frame.opcode >= 0x8:
            assert frame.fin and len(payload) <= 125, f"malformed control frame from the server: {frame}"
        return frame

    def expect_frame(self, opcode: int, payload: bytes | None = None) -> Frame:
        frame = self.recv_frame()
        assert frame.opcode == opcode, f"expected opcode {opcode:#x}, got {frame}"
        if payload is not None:
            assert frame.payload == payload, f"expected payload {payload[:60]!r}..., got {frame}"
        return frame

    def expect_pong(self, payload: bytes) -> None:
        """Section 5.5.3: the pong carries the ping's "Application data" unchanged."""
        self.expect_frame(PONG, payload)

    def expect_message(self, data: bytes, *, text: bool) -> None:
        """One message equal to ``data``, as one unfragmented frame (a SEQPACKET echo's answer)."""
        frame = self.expect_frame(TEXT if text else BINARY, data)
        assert frame.fin, f"the gateway fragments nothing: {frame}"

    def expect_stream(self, data: bytes, *, text: bool) -> int:
        """Messages until ``data`` came back whole (a stream echo answers in any number of reads).

        Every message must be text when ``text`` is set, each one valid UTF-8 on its own. Binary
        data may come back partly as text: the gateway sends a read that happens to be valid
        UTF-8 as text (README, "How messages flow"). Returns how many messages it took.
        """
        received = bytearray()
        count = 0
        while len(received) < len(data):
            frame = self.recv_frame()
            assert frame.opcode == TEXT or (frame.opcode == BINARY and not text), \
                f"after {len(received)} bytes: {frame}"
            assert frame.fin, frame
            if text:
                frame.payload.decode("utf-8")  # a text message that is not UTF-8 raises here
            received += frame.payload
            count += 1
        assert received == data, f"the echo differs from byte {first_difference(received, data)}"
        return count

    def expect_close(self, code: int | None, *, reason: bytes | None = None) -> Frame:
        """The next frame is a close with ``code`` (None: no payload); then nothing but EOF.

        Section 7.1.7: an endpoint that fails the connection sends its close frame and then
        closes; 7.1.1: the server closes the TCP connection first. Both are checked here.
        """
        frame = self.recv_frame()
        assert frame.opcode == CLOSE, f"expected a close frame with {code}, got {frame}"
        assert frame.close_code == code, f"expected close code {code}, got {frame.close_code} ({frame.payload!r})"
        if frame.payload[2:]:
            frame.payload[2:].decode("utf-8")  # section 5.5.1: the reason is UTF-8
        if reason is not None:
            assert frame.payload[2:] == reason, frame
        self.expect_eof()
        return frame

    def expect_eof(self) -> None:
        """The server closes the TCP connection and sends nothing more (detected within the guard)."""
        try:
            extra = self.recv_frame()
        except ConnectionEnded:
            return
        raise AssertionError(f"expected the server to close the connection, got {extra}")

    def close_cleanly(self, code: int = 1000) -> None:
        """Start the closing handshake; the server echoes the code and closes the TCP connection."""
        self.send(build_frame(CLOSE, close_payload(code)))
        self.expect_close(code)

    def close(self) -> None:
        self.sock.close()


# -- scripted cases ---------------------------------------------------------------------------

class SendMode(Enum):
    """How a case's frames are written: Autobahn runs most cases in all three ways."""

    WHOLE = "whole"  # all frames of a step in one write
    PER_FRAME = "per-frame"  # one write per frame, with pauses
    OCTETS = "octets"  # one write per byte, with pauses


@dataclass(frozen=True)
class Pong:
    payload: bytes


@dataclass(frozen=True)
class Message:
    """A message echoed by the SEQPACKET echo: exactly one frame, opcode and payload as sent."""

    data: bytes
    text: bool = True


@dataclass(frozen=True)
class Close:
    """The server fails (or closes) the connection with ``code``, then closes TCP."""

    code: int


Event = Pong | Message | Close
#: One step of a case: frames the client writes, then the events it must see, in that order.
Step = tuple[list[bytes], list[Event]]


def play(client: RawClient, steps: list[Step], mode: SendMode = SendMode.WHOLE) -> None:
    """Run the steps; a case that does not end in a close ends with a clean closing handshake.

    Steps make racy cases deterministic: a message that must be echoed before a protocol error
    is awaited before the faulty frame is written (else the error may close the session first).
    """
    for frames, events in steps:
        client.send(*frames, per_frame=mode is SendMode.PER_FRAME, chop=1 if mode is SendMode.OCTETS else None)
        for event in events:
            if isinstance(event, Pong):
                client.expect_pong(event.payload)
            elif isinstance(event, Message):
                client.expect_message(event.data, text=event.text)
            else:
                client.expect_close(event.code)
                return
    client.close_cleanly()


def binary_data(size: int) -> bytes:
    """Random bytes that are not UTF-8 (a 0xFF every 8 bytes), so the gateway sends them back as binary.

    The gateway picks text or binary by content, as ouistiti does: random bytes that happen to
    be valid UTF-8 (one byte below 0x80, say) would come back as text.
    """
    data = bytearray(os.urandom(size))
    data[::8] = b"\xff" * len(range(0, size, 8))
    return bytes(data)


def utf8_text(size: int) -> bytes:
    """Valid UTF-8 of exactly ``size`` bytes with 1- to 4-byte characters, so cuts split them."""
    unit = "héllo wörld € 😀 ".encode()
    encoded = (unit * (size // len(unit) + 1))[:size].decode("utf-8", "ignore").encode()
    return encoded + b"x" * (size - len(encoded))
