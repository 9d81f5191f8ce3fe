"""Text or binary: how bytes from a UNIX server become WebSocket messages.

A server writes bytes; the browser gets messages typed text or binary. A read that is valid UTF-8
goes out as text, anything else as binary, and on a stream a character cut between two reads is
put back together rather than turning both reads into binary.
"""
from __future__ import annotations

from codecs import utf_8_decode


def is_utf8(data: bytes) -> bool:
    """True when ``data`` is entirely valid UTF-8 (the C codec decides)."""
    if data.isascii():
        return True  # checked in C without building a str
    try:
        utf_8_decode(data, "strict", True)
    except UnicodeDecodeError:
        return False
    return True


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
