"""permessage-deflate (RFC 7692), sans-I/O: the offer, the inflater that cannot be bombed, the compressor.

Pure, as :mod:`ouistiti_gw.core.protocol` whose frame layer it extends: :func:`negotiate` reads a client's
``Sec-WebSocket-Extensions`` and returns the parameters accepted with the header that says so;
:class:`PerMessageDeflate` is what a :class:`~ouistiti_gw.core.protocol.Protocol` is given to
compress what it sends and inflate what it receives. Bytes only: the I/O shells just pass the
negotiated :class:`DeflateParameters` and, for the idle drop, call :meth:`PerMessageDeflate.drop_idle`.

What it costs, and what bounds it:

- client -> server: we ask for ``client_no_context_takeover`` (unless told not to), so an
  inflater lives only while a compressed message is being inflated: nothing between messages.
  A message's compressed bytes are kept as they came until :data:`INFLATE_INPUT_STEP` of them
  are in, or its last frame (``gather``): an unfinished message then holds what the client sent,
  not the ~40 KiB of an inflater and what 100 bytes inflate to (200 KB of zeros). A consumer that
  assembles whole messages anyway (a ``SOCK_SEQPACKET`` server) gathers up to the last frame:
  only then is the message inflated. Inflation goes in steps of at most :data:`INFLATE_STEP` output bytes from at most
  :data:`INFLATE_INPUT_STEP` input bytes (``decompress(data, max_length)``), every step counted
  against the message size limit: a message that would inflate past it is refused (1009) after
  at most the limit plus a step was produced, and never held (the pieces go on as they come);
- server -> client: the compressor keeps its context while the session is busy (a chat message
  compresses against the previous ones), and is dropped after :data:`COMPRESSOR_IDLE_SECONDS`
  of quiet. Starting a fresh deflate context at a message boundary needs no announcement
  (``server_no_context_takeover`` forbids keeping one; nothing forbids dropping it): the client's
  inflater still works, its window just holds bytes we no longer refer to. An idle session
  then holds no zlib state at all.

Websockets' header parser (``websockets.headers``) reads the offers: the library is already a
dependency (its C unmasking) and its parser follows RFC 6455 section 9.1's grammar.

A session may be moved (serialized) only at a message boundary in each direction: there, the
inflater is gone (without client context takeover) and the compressor can be dropped
(:meth:`PerMessageDeflate.drop`) without the client noticing; inside a message the zlib state
cannot be carried. With client context takeover allowed (``compression_client_context = on``)
the inflater's window is state the client relies on, and zlib cannot export it: such a session
cannot be moved at all.
"""
from __future__ import annotations

import logging
import re
import zlib
from dataclasses import dataclass
from typing import Sequence

from websockets.exceptions import InvalidHeader
from websockets.headers import build_extension, parse_extension

from ..errors import GatewayError
from .frames import CloseCode, ProtocolViolation

log = logging.getLogger(__name__)

EXTENSION_NAME = "permessage-deflate"
#: Messages shorter than this are sent uncompressed (a deflate block's overhead eats the gain).
DEFAULT_THRESHOLD = 128
#: Seconds without a compressed message after which the compressor is dropped.
COMPRESSOR_IDLE_SECONDS = 5.0
#: Largest piece one inflate step produces, and compressed bytes fed to one step.
INFLATE_STEP = 64 * 1024
INFLATE_INPUT_STEP = 16 * 1024
#: RFC 7692 section 7.2.1: the empty stored block that ends every message, removed by the sender.
_TAIL = b"\x00\x00\xff\xff"
#: Section 7.1.2: "a decimal integer value without leading zeros between 8 to 15, inclusive".
_WINDOW_BITS = re.compile(r"(?:8|9|1[0-5])\Z")
_PARAMETERS = ("server_no_context_takeover", "client_no_context_takeover",
               "server_max_window_bits", "client_max_window_bits")
#: zlib's memory level for the compressor (websockets' choice too): ~64 KiB less per busy
#: session than the default 8, for a ratio within a few per cent on chat-sized messages.
_MEM_LEVEL = 5
#: Messages from this size on are compressed alone, at zlib's fastest level: 64 KiB of JSON
#: deflates at ~120 MB/s instead of ~30 MB/s (level 6), to 23 % of its size instead of 18 %;
#: a message that big gains little from the previous ones. Smaller ones share the session's
#: compressor at the default level (chat JSON of ~150 B: 24 % instead of 31 %, 2 us more).
LARGE_MESSAGE = 16 * 1024


@dataclass(frozen=True)
class DeflateParameters:
    """The accepted parameters (RFC 7692 section 7.1) as the server answers them."""

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = True
    #: The window our compressor uses (9-15: zlib cannot deflate with 8); None: not offered,
    #: 15 bits and not answered (an offered value is answered as it came, section 7.1.2.1).
    #: The client's window is never constrained (``client_max_window_bits`` is not answered,
    #: section 7.1.2.2 lets the server leave it out): we inflate with 15 bits, which reads any.
    server_max_window_bits: int | None = None

    def header(self) -> str:
        """The ``Sec-WebSocket-Extensions`` value of the 101."""
        params: list[tuple[str, str | None]] = []
        if self.server_no_context_takeover:
            params.append(("server_no_context_takeover", None))
        if self.client_no_context_takeover:
            params.append(("client_no_context_takeover", None))
        if self.server_max_window_bits is not None:
            params.append(("server_max_window_bits", str(self.server_max_window_bits)))
        return build_extension([(EXTENSION_NAME, params)])  # type: ignore[list-item]


class OfferDeclined(GatewayError):
    """One permessage-deflate offer the server cannot accept (RFC 7692 section 5: it declines it)."""


def negotiate(header: str | None, *, client_context_takeover: bool = False) -> DeflateParameters | None:
    """The first acceptable permessage-deflate offer of ``header`` (a client's
    ``Sec-WebSocket-Extensions``, every field joined), or None: go on without compression.

    A header that cannot be parsed, or offers that are all malformed or unsupported, are declined
    (section 5: "the server MUST decline" such an offer; nothing asks for a 400), with one log
    line. ``client_context_takeover`` False asks the client for ``client_no_context_takeover``.
    """
    if not header:
        return None
    try:
        offers = [params for name, params in parse_extension(header) if name == EXTENSION_NAME]
    except InvalidHeader as error:
        log.info("no compression: unreadable Sec-WebSocket-Extensions (%s)", error)
        return None
    why = ""
    for params in offers:
        try:
            return accept_offer(params, client_context_takeover=client_context_takeover)
        except OfferDeclined as declined:
            why = str(declined)
    if why:
        log.info("no compression: permessage-deflate offer declined (%s)", why)
    return None


def accept_offer(params: Sequence[tuple[str, str | None]], *,
                 client_context_takeover: bool = False) -> DeflateParameters:
    """The answer to one offer's parameters (section 7.1), or :class:`OfferDeclined`."""
    seen: dict[str, str | None] = {}
    for name, value in params:
        if name not in _PARAMETERS:
            raise OfferDeclined(f"unknown parameter {name!r}")
        if name in seen:
            raise OfferDeclined(f"{name} given twice")
        if name.endswith("context_takeover") and value is not None:
            raise OfferDeclined(f"{name} takes no value")
        if name == "server_max_window_bits" and (value is None or not _WINDOW_BITS.match(value)):
            raise OfferDeclined(f"server_max_window_bits={value!r} is not 8 to 15")
        if name == "client_max_window_bits" and value is not None and not _WINDOW_BITS.match(value):
            raise OfferDeclined(f"client_max_window_bits={value!r} is not 8 to 15")
        seen[name] = value
    server_bits = seen.get("server_max_window_bits")
    if server_bits == "8":
        raise OfferDeclined("server_max_window_bits=8: zlib does not deflate with a 256-byte window")
    return DeflateParameters(
        server_no_context_takeover="server_no_context_takeover" in seen,
        client_no_context_takeover="client_no_context_takeover" in seen or not client_context_takeover,
        server_max_window_bits=int(server_bits) if server_bits else None,
    )


class PerMessageDeflate:
    """One connection's compression state (server side), driven by the protocol core.

    Receiving: :meth:`start_message` when a compressed message begins (RSV1 on its first frame),
    :meth:`feed` for each piece of its payload (``end`` on the last), then :meth:`read` until it
    returns None (more input needed) or the message's last piece. Sending: :meth:`compress`,
    None when a message goes out as it is.

    :param threshold: messages shorter than this are sent uncompressed.
    """

    def __init__(self, parameters: DeflateParameters, *, threshold: int = DEFAULT_THRESHOLD) -> None:
        self.parameters = parameters
        self.threshold = threshold
        self._inflater: zlib._Decompress | None = None
        #: Compressed bytes of an unfinished message kept before inflating (see the module):
        #: :data:`INFLATE_INPUT_STEP`, or None, the whole message (:meth:`gather_whole_messages`).
        self._gather: int | None = INFLATE_INPUT_STEP
        self._gathered = bytearray()
        #: The compressed piece being inflated, from ``_offset`` on; ``_ended``: it is the
        #: message's last (the tail is still to inflate); ``_ending``: the tail was inflated.
        self._input: bytes = b""
        self._offset = 0
        self._ended = self._ending = False
        #: The last step filled its output: zlib may hold more even with no input left.
        self._full = False
        self._produced = 0
        self._compressor: zlib._Compress | None = None
        #: When the compressor was last used (the protocol's clock).
        self.last_compressed = 0.0

    # -- receiving -------------------------------------------------------------------------

    def gather_whole_messages(self) -> None:
        """Inflate each message only once its last frame is in: for a consumer that holds whole
        messages (then an unfinished one is held as the client sent it, not inflated)."""
        self._gather = None

    def start_message(self) -> None:
        self._produced = 0

    def feed(self, data: bytes, *, end: bool) -> None:
        """The next piece of the message's compressed payload (``end``: its last), kept until
        :meth:`read` has inflated all of it; a piece of an unfinished message is gathered first
        (see the module)."""
        gathered = self._gathered
        if not end and (self._gather is None or len(gathered) + len(data) < self._gather):
            gathered.extend(data)
            return
        if gathered:
            gathered.extend(data)
            data, self._gathered = bytes(gathered), bytearray()
        self._input, self._offset = data, 0
        self._ended = end

    def read(self, limit: int, too_big: str) -> tuple[bytes, bool] | None:
        """The next inflated piece (at most :data:`INFLATE_STEP` bytes) and whether it is the
        message's last (then possibly empty), or None when what was fed is used up. Raises
        1009 once the message passes ``limit`` bytes, 1007 on data that does not inflate."""
        inflater = self._inflater
        if inflater is None:  # made once there is something to inflate, not at the message's start
            if not (self._input or self._ended):
                return None
            inflater = self._inflater = zlib.decompressobj(-15)
        while True:
            data, offset = self._input, self._offset
            if offset < len(data):
                chunk = data[offset:offset + INFLATE_INPUT_STEP]
            elif self._full:
                chunk = b""  # no input left, but zlib may hold output the last step had no room for
            elif self._ended:
                chunk, self._ended, self._ending = _TAIL, False, True
            elif self._ending:
                return self._end_message(b"")
            else:
                self._input = b""  # used up: the read buffer it is a slice of may go
                return None
            try:
                out = inflater.decompress(chunk, INFLATE_STEP)
            except zlib.error as error:
                raise ProtocolViolation(CloseCode.INVALID_DATA,
                                        f"compressed data does not inflate ({error})") from None
            if chunk is not _TAIL:
                self._offset = offset + len(chunk) - len(inflater.unconsumed_tail)
            self._full = len(out) == INFLATE_STEP
            if out:
                self._produced += len(out)
                if self._produced > limit:
                    raise ProtocolViolation(CloseCode.MESSAGE_TOO_BIG, too_big)
                if self._ending and not self._full:
                    return self._end_message(out)
                return out, False

    def _end_message(self, last: bytes) -> tuple[bytes, bool]:
        """The message's last piece. Without client context takeover, or after a final block
        (BFINAL, section 7.2.3.3), the next message starts a fresh window: the inflater goes,
        and nothing is kept between messages."""
        self._ending = False
        self._input, self._offset = b"", 0
        if self.parameters.client_no_context_takeover or (self._inflater is not None and self._inflater.eof):
            self._inflater = None
        return last, True

    # -- sending ---------------------------------------------------------------------------

    def compress(self, data: bytes | memoryview, now: float) -> bytes | None:
        """``data`` compressed as one message (RFC 7692 section 7.2.1), or None to send it as it
        is: under the threshold, or when deflate does not shrink it."""
        if len(data) < self.threshold:
            return None
        large = len(data) >= LARGE_MESSAGE
        compressor = self._compressor
        if compressor is None or large:  # a fresh context at a message boundary needs no notice
            compressor = zlib.compressobj(zlib.Z_BEST_SPEED if large else zlib.Z_DEFAULT_COMPRESSION,
                                          zlib.DEFLATED, -(self.parameters.server_max_window_bits or 15),
                                          _MEM_LEVEL)
        out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
        if out.endswith(_TAIL):
            out = out[:-4]
        if len(out) >= len(data):
            # Sent uncompressed, it is not in the client's window: our context must forget it.
            self._compressor = None
            return None
        keep = not (large or self.parameters.server_no_context_takeover)
        self._compressor = compressor if keep else None
        self.last_compressed = now
        return out

    @property
    def produced(self) -> int:
        """Inflated bytes of the message being received, so far."""
        return self._produced

    @property
    def compressing(self) -> bool:
        """True while a compressor (and its memory) is kept for the next message."""
        return self._compressor is not None

    def drop_idle(self, now: float, idle: float = COMPRESSOR_IDLE_SECONDS) -> float | None:
        """Drop the compressor if unused for ``idle`` seconds; else the seconds left until it
        would be (None: no compressor)."""
        if self._compressor is None:
            return None
        left = self.last_compressed + idle - now
        if left <= 0:
            self.drop()
            return None
        return left

    def drop(self) -> None:
        """Forget the compressor's context (legal at any message boundary: see the module)."""
        self._compressor = None
