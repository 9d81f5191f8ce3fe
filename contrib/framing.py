"""Split a byte stream into top-level JSON texts.

A SOCK_SEQPACKET packet usually holds one JSON-RPC request, but nothing forces
a client to: a packet may hold several JSON values, or part of one.
``json.JSONDecoder.raw_decode`` cannot tell "not finished yet" from "wrong"
(an unterminated string is reported where the string starts, ``tr`` is
"Expecting value"), so :class:`JsonFramer` finds where each value ends by
following only strings and brackets, and leaves the real parsing to the JSON
decoder.  It works on bytes: the structural characters are ASCII and never
occur inside a multi-byte UTF-8 sequence, so a character split between two
packets is never cut, and each complete value is handed over whole.

Rules:

* whitespace and NUL bytes between values are skipped (clients written for
  ouistiti's jsonrpc.c end each request with a NUL);
* objects, arrays and strings end at their closing character, however many
  packets they span;
* a bare top-level token (number, ``true``, ``false``, ``null`` or garbage)
  ends at whitespace, at a structural character or at the end of the packet
  (no request is a bare token anyway: the dispatcher answers it with an
  error either way);
* a clearly invalid prefix (a closing bracket that does not match, or
  pending input beyond :data:`MAX_PENDING_INPUT` bytes) yields ``None`` and
  the whole buffer is dropped, since where the next value starts is unknown.
"""
from __future__ import annotations

import re
from typing import List, Optional

#: The most input kept for one unfinished value.
MAX_PENDING_INPUT = 8 << 20

_WHITESPACE = re.compile(rb"[ \t\n\r\0]*")
_STRUCTURE = re.compile(rb'["{}\[\]]')
_STRING_SPECIAL = re.compile(rb'["\\]')
_TOKEN_END = re.compile(rb'[ \t\n\r\0"{}\[\],:]')
_QUOTE = ord('"')
_CLOSER = {ord("{"): ord("}"), ord("["): ord("]")}
_INCOMPLETE, _COMPLETE, _INVALID = range(3)


class JsonFramer:
    """Accumulates packets and returns the complete JSON texts they hold."""

    def __init__(self, limit: int = MAX_PENDING_INPUT) -> None:
        self.limit = limit
        self._buffer = bytearray()
        self._start: Optional[int] = None
        self._pos = 0
        self._closers: List[int] = []
        self._in_string = False

    def feed(self, packet: bytes) -> List[Optional[bytes]]:
        """Add *packet*; return each JSON text now complete, in order, with
        None where the input was unusable (and dropped)."""
        self._buffer += packet
        texts: List[Optional[bytes]] = []
        while True:
            if self._start is None and not self._begin_value(texts):
                break
            if self._start is None:
                continue
            state = self._scan()
            if state == _INVALID:
                texts.append(None)
                self._reset()
                break
            if state == _INCOMPLETE:
                break
            texts.append(bytes(self._buffer[self._start:self._pos]))
            self._start = None
        self._compact()
        if len(self._buffer) > self.limit:
            texts.append(None)
            self._reset()
        return texts

    def _begin_value(self, texts: List[Optional[bytes]]) -> bool:
        """Start the next value; a bare token is complete at once.  Returns
        False when the buffer holds nothing more to scan."""
        buffer = self._buffer
        self._pos = _WHITESPACE.match(buffer, self._pos).end()
        if self._pos == len(buffer):
            return False
        first = buffer[self._pos]
        if first in _CLOSER:
            self._start = self._pos
            self._closers.append(_CLOSER[first])
            self._pos += 1
        elif first == _QUOTE:
            self._start = self._pos
            self._in_string = True
            self._pos += 1
        elif first in _CLOSER.values():
            texts.append(None)
            self._reset()
            return False
        else:
            end = _TOKEN_END.search(buffer, self._pos + 1)
            stop = end.start() if end else len(buffer)
            texts.append(bytes(buffer[self._pos:stop]))
            self._pos = stop
        return True

    def _scan(self) -> int:
        """Follow strings and brackets from where the last packet ended."""
        buffer = self._buffer
        while True:
            if self._in_string:
                match = _STRING_SPECIAL.search(buffer, self._pos)
                if match is None:
                    self._pos = len(buffer)
                    return _INCOMPLETE
                if match.group() == b"\\":
                    if match.end() >= len(buffer):
                        self._pos = match.start()
                        return _INCOMPLETE
                    self._pos = match.end() + 1
                    continue
                self._in_string = False
                self._pos = match.end()
                if not self._closers:
                    return _COMPLETE
                continue
            match = _STRUCTURE.search(buffer, self._pos)
            if match is None:
                self._pos = len(buffer)
                return _INCOMPLETE
            self._pos = match.end()
            char = buffer[match.start()]
            if char == _QUOTE:
                self._in_string = True
            elif char in _CLOSER:
                self._closers.append(_CLOSER[char])
            elif self._closers and self._closers[-1] == char:
                self._closers.pop()
                if not self._closers:
                    return _COMPLETE
            else:
                return _INVALID

    def _compact(self) -> None:
        """Forget the bytes already handed over."""
        cut = self._pos if self._start is None else self._start
        if cut:
            del self._buffer[:cut]
            self._pos -= cut
            if self._start is not None:
                self._start -= cut

    def _reset(self) -> None:
        self._buffer.clear()
        self._start = None
        self._pos = 0
        self._closers.clear()
        self._in_string = False
