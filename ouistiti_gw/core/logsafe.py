"""Client-controlled text made safe for a log line: no line breaks, no terminal escapes, bounded.

A request path, an ``Origin``, a subprotocol or a forwarded address is chosen by the client. Logged
as it came, ``/x%0a2099-01-01 00:00:00,000 CRITICAL ...`` (decoded to a real newline) writes a
second, forged log line, and an ESC sequence repaints the terminal of whoever reads the log.
:func:`loggable` escapes every character that is not printable text (C0 and C1 controls, DEL,
line and paragraph separators, format characters such as bidi overrides, lone surrogates) and
the backslash itself, so an escape in the log always means the client sent that character, and
caps the result at :data:`MAX_LOGGED_CHARS` characters.
"""
from __future__ import annotations

import unicodedata

#: Longest client-controlled value in a log line, in characters, the ellipsis included.
MAX_LOGGED_CHARS = 200
_ELLIPSIS = "…"
#: Unicode categories never written as they are: controls, format characters (bidi overrides,
#: zero-width ones), line and paragraph separators, surrogates, unassigned code points.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Cn", "Zl", "Zp"})


def _escape(char: str) -> str:
    if char == "\\":
        return "\\\\"
    if unicodedata.category(char) not in _ESCAPED_CATEGORIES:
        return char
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def loggable(value: object, limit: int = MAX_LOGGED_CHARS) -> str:
    """``value`` as text for a log line: escaped (``\\x0a``, ``\\u2028``...), at most ``limit`` characters."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit and text.isprintable() and "\\" not in text:
        return text  # the common case (an address, a name): nothing to escape, checked in C
    escaped = [_escape(char) for char in text[:limit + 1]]  # every character gives one or more
    if sum(map(len, escaped)) <= limit:
        return "".join(escaped)
    kept, length = [], len(_ELLIPSIS)
    for piece in escaped:
        if length + len(piece) > limit:
            break
        kept.append(piece)
        length += len(piece)
    return "".join(kept) + _ELLIPSIS


def wsgi_text(value: str, limit: int = MAX_LOGGED_CHARS) -> str:
    """:func:`loggable` for a WSGI environ string (latin-1 decoded bytes, PEP 3333): shown as the
    UTF-8 text the client meant (``/café``, not ``/cafÃ©``), bytes that are not UTF-8 as U+FFFD."""
    try:
        value = value.encode("latin-1").decode("utf-8", "replace")
    except UnicodeEncodeError:
        pass  # not a WSGI string after all: escape it as it is
    return loggable(value, limit)
