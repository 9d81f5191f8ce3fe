"""RFC 6455 section 5.4: fragmentation (Autobahn|Testsuite case group 5).

Every case runs three ways, as Autobahn's do: all frames in one write, one write per frame,
and one write per byte. Control frames may come between the fragments of a message and are
answered at once (the pong comes before the echo of the message it interrupted); a control
frame may not itself be fragmented; a continuation needs a message to continue, and a new
message may not start inside another one. Each broken case fails the connection with 1002.
"""
from __future__ import annotations

from typing import Callable

import pytest

from rawclient import (
    BINARY,
    CONTINUATION,
    PING,
    PONG,
    TEXT,
    Close,
    Message,
    Pong,
    RawClient,
    SendMode,
    Step,
    play,
)
from rawclient import build_frame as frame

Connect = Callable[..., RawClient]
PROTOCOL_ERROR = 1002


#: Autobahn-style cases: id -> steps (frames written, then events expected).
CASES: dict[str, list[Step]] = {
    # 5.1, 5.2: section 5.5, "Control frames themselves MUST NOT be fragmented."
    "5.1-fragmented-ping": [([frame(PING, b"frag", fin=False), frame(CONTINUATION, b"ment")],
                             [Close(PROTOCOL_ERROR)])],
    "5.2-fragmented-pong": [([frame(PONG, b"frag", fin=False), frame(CONTINUATION, b"ment")],
                             [Close(PROTOCOL_ERROR)])],
    # 5.3-5.5: a text message in two fragments is one message
    "5.3-text-in-2-fragments": [([frame(TEXT, b"frag", fin=False), frame(CONTINUATION, b"ment")],
                                 [Message(b"fragment")])],
    "binary-in-3-fragments": [([frame(BINARY, b"\xff\x00", fin=False), frame(CONTINUATION, b"\x01", fin=False),
                                frame(CONTINUATION, b"\xfe")], [Message(b"\xff\x00\x01\xfe", text=False)])],
    "empty-fragments": [([frame(TEXT, b"", fin=False), frame(CONTINUATION, b"", fin=False),
                          frame(CONTINUATION, b"end")], [Message(b"end")])],
    # 5.6-5.8: section 5.4, control frames "MAY be injected in the middle of a fragmented message"
    "5.6-ping-between-fragments": [([frame(TEXT, b"frag", fin=False), frame(PING, b"ping")], [Pong(b"ping")]),
                                   ([frame(CONTINUATION, b"ment")], [Message(b"fragment")])],
    "pong-between-fragments": [([frame(TEXT, b"frag", fin=False), frame(PONG, b"pong"),
                                 frame(CONTINUATION, b"ment")], [Message(b"fragment")])],
    # 5.9-5.14: a continuation frame with no message to continue
    "5.9-continuation-fin-without-message": [([frame(CONTINUATION, b"orphan"), frame(TEXT, b"after")],
                                              [Close(PROTOCOL_ERROR)])],
    "5.12-continuation-nofin-without-message": [([frame(CONTINUATION, b"orphan", fin=False),
                                                  frame(TEXT, b"after")], [Close(PROTOCOL_ERROR)])],
    # 5.15: a complete fragmented message, then a continuation out of nowhere
    "5.15-continuation-after-complete-message": [
        ([frame(TEXT, b"frag", fin=False), frame(CONTINUATION, b"ment")], [Message(b"fragment")]),
        ([frame(CONTINUATION, b"orphan", fin=False), frame(TEXT, b"after")], [Close(PROTOCOL_ERROR)])],
    # 5.16, 5.17: the orphan continuation comes first, before otherwise valid fragments
    "5.16-orphan-nofin-then-fragments": [([frame(CONTINUATION, b"orphan", fin=False), frame(TEXT, b"frag", fin=False),
                                           frame(CONTINUATION, b"ment")], [Close(PROTOCOL_ERROR)])],
    "5.17-orphan-fin-then-fragments": [([frame(CONTINUATION, b"orphan"), frame(TEXT, b"frag", fin=False),
                                         frame(CONTINUATION, b"ment")], [Close(PROTOCOL_ERROR)])],
    # 5.18: section 5.4, fragments of one message are not interleaved with another message
    "5.18-text-inside-text": [([frame(TEXT, b"frag", fin=False), frame(TEXT, b"ment")], [Close(PROTOCOL_ERROR)])],
    "binary-inside-text": [([frame(TEXT, b"frag", fin=False), frame(BINARY, b"\xff")], [Close(PROTOCOL_ERROR)])],
    # 5.19, 5.20: five fragments with two pings between them, each answered as it comes
    "5.19-five-fragments-two-pings": [
        ([frame(TEXT, b"fragment1", fin=False), frame(CONTINUATION, b"fragment2", fin=False),
          frame(PING, b"pongme 1!")], [Pong(b"pongme 1!")]),
        ([frame(CONTINUATION, b"fragment3", fin=False), frame(PING, b"pongme 2!")], [Pong(b"pongme 2!")]),
        ([frame(CONTINUATION, b"fragment4", fin=False), frame(CONTINUATION, b"fragment5")],
         [Message(b"fragment1fragment2fragment3fragment4fragment5")])],
    # a fragmented ping is refused even where control frames may appear, inside a fragmented message
    "fragmented-ping-inside-message": [([frame(TEXT, b"frag", fin=False), frame(PING, b"pi", fin=False),
                                         frame(CONTINUATION, b"ng")], [Close(PROTOCOL_ERROR)])],
}


@pytest.mark.parametrize("mode", list(SendMode), ids=lambda mode: mode.value)
@pytest.mark.parametrize("steps", CASES.values(), ids=CASES.keys())
def test_fragmentation(connect: Connect, steps: list[Step], mode: SendMode) -> None:
    """Section 5.4 rules, each case written whole, frame by frame and byte by byte (Autobahn 5.x)."""
    play(connect(), steps, mode)
