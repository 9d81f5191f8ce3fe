"""Client-controlled text for log lines (ouistiti_gw.core.logsafe): escaped, capped; plain text as it is."""
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ouistiti_gw.core.logsafe import MAX_LOGGED_CHARS, loggable

#: Unicode categories a log line never holds as they are (controls, format characters, separators...).
NOT_WRITTEN = {"Cc", "Cf", "Cs", "Cn", "Zl", "Zp"}


@pytest.mark.parametrize(("value", "logged"), [
    ("127.0.0.1:51234", "127.0.0.1:51234"),
    ("[::1]:443", "[::1]:443"),
    ("café ☕", "café ☕"),
    ("a\xa0b", "a\xa0b"),          # a no-break space: not str.isprintable(), yet nothing to escape
    ("\ue000", "\ue000"),           # a private-use character: likewise
    ("a\\b", "a\\\\b"),             # the backslash itself, so that an escape always means the client sent it
    ("a\nb\x1b[31m", "a\\x0ab\\x1b[31m"),
    ("\x85\u2028\u202e", "\\x85\\u2028\\u202e"),
    ("x" * MAX_LOGGED_CHARS, "x" * MAX_LOGGED_CHARS),
    ("x" * (MAX_LOGGED_CHARS + 1), "x" * (MAX_LOGGED_CHARS - 1) + "…"),
    ("\x00" * 60, "\\x00" * 49 + "…"),
])
def test_loggable_escapes_what_is_not_printable_and_caps_the_rest(value, logged):
    assert loggable(value) == logged


@given(st.text(max_size=300))
def test_loggable_never_writes_a_control_and_keeps_plain_text(text):
    logged = loggable(text)
    assert len(logged) <= MAX_LOGGED_CHARS
    assert not {unicodedata.category(char) for char in logged} & NOT_WRITTEN
    if len(text) <= MAX_LOGGED_CHARS and "\\" not in text and logged != text:  # changed only for a reason
        assert {unicodedata.category(char) for char in text} & NOT_WRITTEN
