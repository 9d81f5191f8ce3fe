"""UTF-8, the one module that checks it: a client's text messages, and a server's reads.

- From the client, a text message must be valid UTF-8 (RFC 6455 section 8.1, 1007 if not): a
  message in one piece is checked at once (:func:`check_message`), one in pieces as they come by
  a :class:`Utf8Validator`, failing at its first bad byte (the protocol core calls both).
- From a UNIX server, bytes become messages typed text or binary: a read that is valid UTF-8
  goes out as text, anything else as binary (:func:`is_utf8`), and on a stream a character cut
  between two reads is put back together rather than turning both reads into binary
  (:class:`Utf8Splitter`).

The C codec does the work everywhere; ASCII, the common case, is recognised without building a str.
"""
from __future__ import annotations

import codecs
from codecs import utf_8_decode

from .frames import CloseCode, ProtocolViolation

#: The reason of a 1007 close for a text message that is not UTF-8.
NOT_UTF8 = "text message is not valid UTF-8"


def is_utf8(data: bytes) -> bool:
    """True when ``data`` is entirely valid UTF-8 (the C codec decides)."""
    if data.isascii():
        return True  # checked in C without building a str
    try:
        utf_8_decode(data, "strict", True)
    except UnicodeDecodeError:
        return False
    return True


def check_message(data: bytes) -> None:
    """Raise 1007 unless ``data``, a whole text message, is valid UTF-8 (no incremental decoder:
    nearly every message comes in one piece)."""
    if not is_utf8(data):
        raise ProtocolViolation(CloseCode.INVALID_DATA, NOT_UTF8)


class Utf8Validator:
    """Check a text message's UTF-8 as its bytes arrive (section 8.1), failing on the first bad byte.

    The C codec does the work; what it keeps pending at the end of a piece is checked too, as it
    keeps ``ED A0``-``ED BF`` (the start of a UTF-16 surrogate, never valid in UTF-8) pending
    where it refuses ``E0 80`` or ``F4 90`` at once: without that check, a message could not fail
    before the byte after such a prefix arrived (Autobahn 6.4.x, "fail fast").

    :param pending: the bytes of a character cut at the end of the pieces already checked (what
        :attr:`pending` was in the validator this one goes on from: a session moved by a reload).
    """

    __slots__ = ("_decoder",)

    def __init__(self, pending: bytes = b"") -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        if pending:
            self._decoder.setstate((pending, 0))

    @property
    def pending(self) -> bytes:
        """The start of a character the next piece must complete (``b""``: none)."""
        return self._decoder.getstate()[0]

    def feed(self, data: bytes, *, final: bool = False) -> None:
        """Validate the next piece; ``final`` for the end of the message (nothing may stay pending).

        Raises :class:`~ouistiti_gw.core.frames.ProtocolViolation` (1007) at the first piece that cannot be valid UTF-8.
        """
        try:
            self._decoder.decode(data, final)
        except UnicodeDecodeError:
            raise ProtocolViolation(CloseCode.INVALID_DATA, NOT_UTF8) from None
        pending = self._decoder.getstate()[0]
        if len(pending) >= 2 and pending[0] == 0xED and pending[1] >= 0xA0:
            raise ProtocolViolation(CloseCode.INVALID_DATA, "text message holds a UTF-16 surrogate")


class Utf8Splitter:
    """Decide, read by read, whether bytes from a stream socket go out as text or binary.

    Keeps the 1-3 bytes of a character cut at the end of a read for the next read, so a text
    stream is never sent as a broken text frame nor needlessly as binary.
    """

    def __init__(self) -> None:
        self.pending = b""

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """Return ``(payload, is_text)`` for this read; ``payload`` may be empty (all held back)."""
        if not self.pending and data.isascii():
            return data, True  # the common case, checked in C without building a str
        data = self.pending + data if self.pending else data
        try:
            _, consumed = utf_8_decode(data, "strict", False)
        except UnicodeDecodeError:
            self.pending = b""
            return data, False
        self.pending = data[consumed:]
        return (data[:consumed] if self.pending else data), True

    def flush(self) -> bytes:
        """What is held back, to be sent as binary: its continuation did not come."""
        pending, self.pending = self.pending, b""
        return pending
