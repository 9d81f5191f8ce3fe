"""RFC 6455 section 8.1: text messages must be UTF-8, and the connection fails with 1007 when not.

Autobahn|Testsuite case group 6: the sequences of Markus Kuhn's "UTF-8 decoder capability and
stress test" (Autobahn 6.5-6.23), valid and invalid, each sent as one frame and as one-byte
fragments; and failing fast (6.4.x): the connection fails on the first byte that can no longer
begin valid UTF-8, inside a fragmented message or inside a frame whose rest has not arrived.

What is valid is decided here by :func:`utf8_error_index`, written from the table of
well-formed byte sequences in RFC 3629 section 4, not by Python's codec (which the gateway uses).

gevent-websocket 0.10.1 validated text only once a whole frame had been read, so neither of the
single-frame fail-fast cases (6.4.3, 6.4.4) failed before the rest of the frame came.
"""
from __future__ import annotations

from typing import Callable

import pytest

from rawclient import CONTINUATION, PING, TEXT, Close, Message, Pong, RawClient, SendMode, Step, build_frame, play

Connect = Callable[..., RawClient]
INVALID_DATA = 1007

#: RFC 3629 section 4: lead byte range -> allowed ranges of the continuation bytes after it.
_WELL_FORMED: list[tuple[int, int, list[tuple[int, int]]]] = [
    (0xC2, 0xDF, [(0x80, 0xBF)]),
    (0xE0, 0xE0, [(0xA0, 0xBF), (0x80, 0xBF)]),
    (0xE1, 0xEC, [(0x80, 0xBF)] * 2),
    (0xED, 0xED, [(0x80, 0x9F), (0x80, 0xBF)]),  # no UTF-16 surrogates
    (0xEE, 0xEF, [(0x80, 0xBF)] * 2),
    (0xF0, 0xF0, [(0x90, 0xBF), (0x80, 0xBF), (0x80, 0xBF)]),
    (0xF1, 0xF3, [(0x80, 0xBF)] * 3),
    (0xF4, 0xF4, [(0x80, 0x8F), (0x80, 0xBF), (0x80, 0xBF)]),  # nothing above U+10FFFF
]


def utf8_error_index(data: bytes) -> int | None:
    """Where ``data`` stops being UTF-8: the index of the first byte no valid text could have there,
    ``len(data)`` when it ends inside a character, None when it is valid.

    That index is where a fail-fast endpoint must fail: all bytes before it are the beginning of
    some valid text, and it cannot know better before it has seen that byte.
    """
    i = 0
    while i < len(data):
        lead = data[i]
        if lead < 0x80:
            i += 1
            continue
        ranges = next((ranges for low, high, ranges in _WELL_FORMED if low <= lead <= high), None)
        if ranges is None:
            return i
        for offset, (low, high) in enumerate(ranges, start=1):
            if i + offset == len(data):
                return len(data)
            if not low <= data[i + offset] <= high:
                return i + offset
        i += 1 + len(ranges)
    return None


#: Kuhn's first example, "κόσμε" with U+1F79 (not U+03CC): 11 bytes of 2- and 3-byte characters.
KOSME = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"

#: Kuhn's test file as Autobahn cases 6.5-6.23 use it: (Autobahn case group, sequence, valid).
_TABLE: list[tuple[str, bytes, bool]] = [
    *[("6.5-valid", s, True) for s in (b"hello$world", "hello¢world".encode(), "hello€world".encode(),
                                       "hello\U00024B62world".encode(), KOSME)],
    *[("6.6-kosme-prefix", KOSME[:n], utf8_error_index(KOSME[:n]) is None) for n in range(1, len(KOSME) + 1)],
    *[("6.7-first-of-length", s, True) for s in (b"\x00", b"\xc2\x80", b"\xe0\xa0\x80", b"\xf0\x90\x80\x80")],
    *[("6.8-first-5-6-bytes", s, False) for s in (b"\xf8\x88\x80\x80\x80", b"\xfc\x84\x80\x80\x80\x80")],
    *[("6.9-last-of-length", s, True) for s in (b"\x7f", b"\xdf\xbf", b"\xef\xbf\xbf", b"\xf4\x8f\xbf\xbf")],
    *[("6.10-last-4-5-6-bytes", s, False) for s in (b"\xf7\xbf\xbf\xbf", b"\xfb\xbf\xbf\xbf\xbf",
                                                     b"\xfd\xbf\xbf\xbf\xbf\xbf")],
    *[("6.11-boundary", s, True) for s in (b"\xed\x9f\xbf", b"\xee\x80\x80", b"\xef\xbf\xbd", b"\xf4\x8f\xbf\xbf")],
    ("6.11-above-10ffff", b"\xf4\x90\x80\x80", False),
    *[("6.12-continuation", s, False) for s in (b"\x80", b"\xbf", b"\x80\xbf", b"\x80\xbf\x80", b"\x80\xbf\x80\xbf",
                                                 b"\x80\xbf\x80\xbf\x80", b"\x80\xbf\x80\xbf\x80\xbf",
                                                 bytes(range(0x80, 0xC0)))],
    *[("6.13-lonely-start", b"".join(bytes([b, 0x20]) for b in range(low, high + 1)), False)
      for low, high in ((0xC0, 0xDF), (0xE0, 0xEF), (0xF0, 0xF7), (0xF8, 0xFB), (0xFC, 0xFD))],
    *[("6.14-last-byte-missing", s, False) for s in (b"\xc0", b"\xe0\x80", b"\xf0\x80\x80", b"\xf8\x80\x80\x80",
                                                      b"\xfc\x80\x80\x80\x80", b"\xdf", b"\xef\xbf", b"\xf7\xbf\xbf",
                                                      b"\xfb\xbf\xbf\xbf", b"\xfd\xbf\xbf\xbf\xbf")],
    ("6.15-incomplete-concatenated", b"\xc0\xe0\x80\xf0\x80\x80\xf8\x80\x80\x80\xfc\x80\x80\x80\x80\xdf\xef\xbf"
                                     b"\xf7\xbf\xbf\xfb\xbf\xbf\xbf\xfd\xbf\xbf\xbf\xbf", False),
    *[("6.16-impossible", s, False) for s in (b"\xfe", b"\xff", b"\xfe\xfe\xff\xff")],
    *[("6.17-overlong-slash", s, False) for s in (b"\xc0\xaf", b"\xe0\x80\xaf", b"\xf0\x80\x80\xaf",
                                                   b"\xf8\x80\x80\x80\xaf", b"\xfc\x80\x80\x80\x80\xaf")],
    *[("6.18-maximum-overlong", s, False) for s in (b"\xc1\xbf", b"\xe0\x9f\xbf", b"\xf0\x8f\xbf\xbf",
                                                     b"\xf8\x87\xbf\xbf\xbf", b"\xfc\x83\xbf\xbf\xbf\xbf")],
    *[("6.19-overlong-nul", s, False) for s in (b"\xc0\x80", b"\xe0\x80\x80", b"\xf0\x80\x80\x80",
                                                 b"\xf8\x80\x80\x80\x80", b"\xfc\x80\x80\x80\x80\x80")],
    *[("6.20-surrogate", s, False) for s in (b"\xed\xa0\x80", b"\xed\xad\xbf", b"\xed\xae\x80", b"\xed\xaf\xbf",
                                              b"\xed\xb0\x80", b"\xed\xbe\x80", b"\xed\xbf\xbf")],
    *[("6.21-surrogate-pair", high + low, False)
      for high in (b"\xed\xa0\x80", b"\xed\xad\xbf", b"\xed\xae\x80", b"\xed\xaf\xbf")
      for low in (b"\xed\xb0\x80", b"\xed\xbf\xbf")],
    # Noncharacters and specials are valid UTF-8 (RFC 3629 does not exclude them): delivered.
    *[("6.22-noncharacter", chr(plane << 16 | last).encode(), True)
      for plane in range(17) for last in (0xFFFE, 0xFFFF)],
    *[("6.22-noncharacter", chr(cp).encode(), True) for cp in (0xFDD0, 0xFDEF)],
    *[("6.23-special", chr(cp).encode(), True) for cp in (0xFEFF, 0xFFF9, 0xFFFA, 0xFFFB, 0xFFFC, 0xFFFD)],
    # Autobahn 6.2, 6.3: a longer valid text, and the same with a surrogate in it
    ("6.2-valid-text", "Hello-µ@ßöäüàá-UTF-8!!".encode(), True),
    ("6.3-invalid-text", KOSME + b"\xed\xa0\x80edited", False),
]
CASES = {f"{group}-{data[:24].hex() or 'empty'}{'-' if len(data) > 24 else ''}": (data, valid)
         for group, data, valid in _TABLE}


def one_byte_frames(data: bytes) -> list[bytes]:
    """``data`` as a text message of one-byte fragments, without the final frame."""
    return [build_frame(TEXT if i == 0 else CONTINUATION, data[i:i + 1], fin=False) for i in range(len(data))]


@pytest.mark.parametrize(("data", "valid"), CASES.values(), ids=CASES.keys())
def test_oracle_agrees_with_the_table(data: bytes, valid: bool) -> None:
    """The RFC 3629 oracle must say what Kuhn's file says, or the cases below prove nothing."""
    assert (utf8_error_index(data) is None) == valid


@pytest.mark.parametrize(("data", "valid"), CASES.values(), ids=CASES.keys())
def test_text_in_one_frame(connect: Connect, data: bytes, valid: bool) -> None:
    """Autobahn 6.2.1, 6.3.1, 6.5-6.23: valid text comes back unchanged, invalid text fails with 1007."""
    expected = Message(data) if valid else Close(INVALID_DATA)
    play(connect(), [([build_frame(TEXT, data)], [expected])])


@pytest.mark.parametrize(("data", "valid"), CASES.values(), ids=CASES.keys())
def test_text_in_one_byte_fragments_fails_fast(connect: Connect, data: bytes, valid: bool) -> None:
    """Autobahn 6.2.4, 6.3.2 and 6.4.x applied to every sequence: one byte per frame.

    Valid text split inside its characters is one valid message. For invalid text only the
    frames up to the first bad byte are sent (:func:`utf8_error_index`), never the rest, and
    the connection must fail with 1007 on that byte; when the text merely ends inside a
    character, the final (empty) frame is what makes it invalid.

    Failed at first for the surrogates (6.20, 6.21, 6.3): Python's decoder keeps ``ED A0`` pending
    instead of refusing it, so the connection waited for a byte that never came (fixed with
    ``utf8.Utf8Validator``, used by ``protocol.Protocol``).
    """
    error = utf8_error_index(data)
    if error is None:
        steps: list[Step] = [([*one_byte_frames(data), build_frame(CONTINUATION, b"")], [Message(data)])]
    elif error == len(data):
        steps = [([*one_byte_frames(data), build_frame(CONTINUATION, b"")], [Close(INVALID_DATA)])]
    else:
        steps = [(one_byte_frames(data)[:error + 1], [Close(INVALID_DATA)])]
    play(connect(), steps)


# -- 6.4.x: failing fast ------------------------------------------------------------------------

#: Autobahn 6.4: KOSME, then a sequence invalid on its second byte, then more text.
FAIL_FAST_PAYLOADS = {
    "above-10ffff": KOSME + b"\xf4\x90\x80\x80" + b"edited",
    "surrogate": KOSME + b"\xed\xa0\x80" + b"edited",
}


def fragments_fail_fast(payload: bytes, cut: int) -> list[Step]:
    """6.4.1/6.4.2: a first fragment, a ping (answered: the fragment was accepted), then a
    fragment holding the bad byte; the last fragment is never sent."""
    bad = utf8_error_index(payload)
    return [([build_frame(TEXT, payload[:cut], fin=False), build_frame(PING, b"still open")], [Pong(b"still open")]),
            ([build_frame(CONTINUATION, payload[cut:bad + 1], fin=False)], [Close(INVALID_DATA)])]


def frame_fails_fast(payload: bytes, cut: int) -> list[Step]:
    """6.4.3/6.4.4: one frame written in two chops, up to ``cut`` and up to the bad byte; its
    rest never comes, so only validating what has arrived can fail the connection."""
    frame = build_frame(TEXT, payload)
    header = len(frame) - len(payload)
    bad = utf8_error_index(payload)
    return [([frame[:header + cut], frame[header + cut:header + bad + 1]], [Close(INVALID_DATA)])]


@pytest.mark.parametrize("payload", FAIL_FAST_PAYLOADS.values(), ids=FAIL_FAST_PAYLOADS.keys())
@pytest.mark.parametrize(("make_steps", "cut"), [
    (fragments_fail_fast, len(KOSME)), (fragments_fail_fast, len(KOSME) + 1),
    (frame_fails_fast, len(KOSME)), (frame_fails_fast, len(KOSME) + 1),
], ids=["6.4.1-fragments", "6.4.2-fragments-cut-in-sequence", "6.4.3-one-frame", "6.4.4-one-frame-cut-in-sequence"])
def test_invalid_text_fails_fast(connect: Connect, payload: bytes, make_steps, cut: int) -> None:
    """Section 8.1 / Autobahn 6.4: fail as soon as the text can no longer be valid, before the rest.

    Failed at first: a frame's payload was read in 4-byte-aligned chunks so the mask needed no
    rotation, and a chunk of 11 or 13 bytes waited for the bytes that completed its alignment;
    the rest never came, so 6.4.3 and 6.4.4 hung (fixed: ``protocol.Protocol`` unmasks
    whatever has arrived, ``frames.apply_mask`` takes the offset in the payload). Python's
    incremental decoder also keeps ``ED A0`` (the start of a surrogate) pending instead of
    failing, so the surrogate variants hung too (fixed in ``utf8.Utf8Validator``).
    """
    play(connect(), make_steps(payload, cut), SendMode.PER_FRAME)
