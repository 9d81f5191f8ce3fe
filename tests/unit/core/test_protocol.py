"""The sans-I/O protocol core, with raw bytes: every RFC 6455 rule the gateway enforces, once.

No socket, no process: each test feeds client bytes to :class:`ouistiti_gw.core.protocol.Protocol`
and checks the events and the bytes it answers with. The socket-level suite
(tests/conformance) checks the same rules through a running gateway, independently.
"""
from __future__ import annotations

import struct

import pytest

from ouistiti_gw.core.frames import CloseCode, Opcode, ProtocolViolation, encode_close_payload, encode_frame
from ouistiti_gw.core.protocol import (
    FRAMES_PER_TURN,
    TURN_ENDED,
    CloseReceived,
    DataPiece,
    NotMovable,
    Ping,
    Pong,
    Protocol,
    State,
    Throttled,
    WebSocketClosed,
)
from rawclient import FIXED_KEY
from rawclient import client_frame as frame
from support.protocol import violation_of

TEXT, BINARY, CONTINUATION = Opcode.TEXT, Opcode.BINARY, Opcode.CONTINUATION
CLOSE, PING, PONG = Opcode.CLOSE, Opcode.PING, Opcode.PONG


def close_frame(code: int | None, reason: str = "") -> bytes:
    return frame(CLOSE, encode_close_payload(code, reason))


def events(protocol: Protocol, data: bytes = b"") -> list:
    """Feed ``data``, then take every event it completes."""
    protocol.receive_data(data)
    found = []
    while (event := protocol.next_event()) is not None:
        found.append(event)
    return found


def violation(protocol: Protocol, data: bytes) -> ProtocolViolation:
    """The violation ``data`` raises; after it nothing more is parsed."""
    raised = violation_of(protocol, data)
    assert events(protocol, frame(TEXT, b"after")) == []
    return raised


def test_a_text_and_a_binary_message_each_in_one_piece():
    protocol = Protocol()
    assert events(protocol, frame(TEXT, "héllo".encode()) + frame(BINARY, b"\x00\xff")) == [
        DataPiece("héllo".encode(), True, True), DataPiece(b"\x00\xff", False, True)]
    assert protocol.bytes_received == 8


def test_an_empty_message_is_one_empty_final_piece():
    assert events(Protocol(), frame(BINARY)) == [DataPiece(b"", False, True)]


def test_a_fragmented_message_comes_in_pieces_with_a_ping_between_them():
    """Section 5.4: control frames may be injected in the middle of a fragmented message; empty
    non-final fragments give no event."""
    protocol = Protocol()
    data = (frame(TEXT, b"ab", fin=False) + frame(CONTINUATION, b"", fin=False) + frame(PING, b"p")
            + frame(CONTINUATION, b"cd"))
    assert events(protocol, data) == [DataPiece(b"ab", True, False), Ping(b"p"), DataPiece(b"cd", True, True)]


def test_a_frame_cut_at_every_byte_gives_the_same_message():
    protocol = Protocol()
    data = frame(TEXT, "€ and more".encode()) + frame(PONG, b"x")
    found = []
    for byte in data:
        found += events(protocol, bytes([byte]))
    pieces = [event for event in found if type(event) is DataPiece]
    assert b"".join(piece.data for piece in pieces) == "€ and more".encode()
    assert [piece.final for piece in pieces] == [False] * (len(pieces) - 1) + [True]
    assert found[-1] == Pong(b"x")


@pytest.mark.parametrize("opcode, payload", [
    (TEXT, b"ascii"), (TEXT, "héllo €".encode()), (BINARY, b"\xff" * 125), (BINARY, bytes(126)),
    (TEXT, b"x" * 1024), (BINARY, b""), (TEXT, b"a" * 65535)])
def test_a_whole_frame_gives_what_the_same_frame_gives_a_byte_at_a_time(opcode, payload):
    """A whole text or binary frame is read in one pass; the same frame cut anywhere goes the
    general way: the same message and the same counts either way."""
    whole, cut = Protocol(), Protocol()
    data = frame(opcode, payload) * 2
    found = events(whole, data)
    pieces = [event for byte in data for event in events(cut, bytes([byte]))]
    assert found == [DataPiece(payload, opcode == TEXT, True)] * 2
    assert b"".join(piece.data for piece in pieces) == payload * 2
    for counter in ("bytes_received", "wire_bytes_received", "_message_size", "_frames_left"):
        assert getattr(whole, counter) == getattr(cut, counter)


def test_needs_data_only_once_every_byte_that_came_was_handed_out_and_nothing_is_due():
    protocol = Protocol()
    protocol.receive_data(frame(BINARY, b"a") + frame(BINARY, b"b"))
    assert protocol.next_event() == DataPiece(b"a", False, True) and not protocol.needs_data
    assert protocol.next_event() == DataPiece(b"b", False, True) and protocol.needs_data
    assert protocol.next_event() is None
    protocol.receive_data(frame(BINARY, b"c")[:3])
    assert not protocol.needs_data and protocol.next_event() is None
    budgeted = Protocol(max_byte_rate=10, max_message_size=10)  # the byte budget is due: it must be asked
    budgeted.receive_data(frame(BINARY, bytes(10)))
    assert budgeted.next_event() == DataPiece(bytes(10), False, True) and not budgeted.needs_data


def test_a_16_mib_frame_is_handed_out_as_its_bytes_arrive_never_held_whole():
    size, chunk = 16 * 1024 * 1024, 256 * 1024
    protocol = Protocol()
    data = frame(BINARY, bytes(size))
    header, payload = data[:14], data[14:]
    assert events(protocol, header) == []
    for start in range(0, size, chunk):
        (piece,) = events(protocol, payload[start:start + chunk])
        assert piece == DataPiece(bytes(chunk), False, start + chunk == size)
        assert len(protocol._buffer) <= chunk  # only the read being parsed, never the frame


def test_an_unmasked_client_frame_is_1002():
    assert violation(Protocol(), encode_frame(TEXT, b"hi")).code == CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize("first", [0x80 | 0x40 | TEXT, 0x80 | 0x03, 0x80 | 0x0B], ids=["rsv1", "opcode-3", "opcode-b"])
def test_reserved_bits_and_opcodes_are_1002(first):
    assert violation(Protocol(), bytes([first, 0x80]) + FIXED_KEY).code == CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize("data", [frame(PING, b"p", fin=False), frame(PING, bytes(126))],
                         ids=["fragmented-control", "control-over-125"])
def test_control_frames_must_be_whole_and_small(data):
    assert violation(Protocol(), data).code == CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize("data", [frame(CONTINUATION, b"x"), frame(TEXT, b"a", fin=False) + frame(BINARY, b"b")],
                         ids=["continuation-first", "new-message-inside-one"])
def test_fragments_must_follow_each_other(data):
    assert violation(Protocol(), data).code == CloseCode.PROTOCOL_ERROR


def test_bad_utf8_fails_at_its_first_byte_before_the_frame_ends():
    """Section 8.1; Autobahn 6.4.x "fail fast": the frame announces 100 bytes, 3 have come."""
    protocol = Protocol()
    data = frame(TEXT, b"ab\xff" + bytes(97))
    assert violation(protocol, data[:6 + 3]).code == CloseCode.INVALID_DATA


def test_a_utf16_surrogate_prefix_fails_before_its_last_byte():
    assert violation(Protocol(), frame(TEXT, b"a\xed\xa0\x80")[:6 + 3]).code == CloseCode.INVALID_DATA


def test_invalid_utf8_in_a_whole_text_frame_is_1007_and_nothing_of_it_is_handed_out():
    protocol = Protocol()
    protocol.receive_data(frame(TEXT, b"caf\xc3"))
    with pytest.raises(ProtocolViolation) as raised:
        protocol.next_event()
    assert raised.value.code == CloseCode.INVALID_DATA


def test_a_character_split_between_fragments_is_valid():
    data = frame(TEXT, b"\xe2\x82", fin=False) + frame(CONTINUATION, b"\xac")
    assert events(Protocol(), data) == [DataPiece(b"\xe2\x82", True, False), DataPiece(b"\xac", True, True)]


def test_a_text_message_ending_inside_a_character_is_1007():
    data = frame(TEXT, b"\xe2\x82", fin=False) + frame(CONTINUATION, b"")
    assert violation(Protocol(), data).code == CloseCode.INVALID_DATA


def test_an_oversized_message_is_1009_from_its_header_alone():
    protocol = Protocol(max_message_size=1000)
    assert events(protocol, frame(BINARY, bytes(1000))) == [DataPiece(bytes(1000), False, True)]
    refused = violation(protocol, frame(BINARY, bytes(1001))[:8])  # header only: no payload yet
    assert (refused.code, refused.reason) == (CloseCode.MESSAGE_TOO_BIG, "message over 1000 bytes")


def test_fragments_adding_up_past_the_limit_are_1009():
    protocol = Protocol(max_message_size=10)
    refused = violation(protocol, frame(BINARY, bytes(6), fin=False) + frame(CONTINUATION, bytes(5)))
    assert refused.code == CloseCode.MESSAGE_TOO_BIG


def test_limit_message_size_only_lowers_the_limit_and_says_why():
    protocol = Protocol(max_message_size=100)
    protocol.limit_message_size(1000, "ignored")
    protocol.limit_message_size(10, "message too big for the server's socket")
    refused = violation(protocol, frame(BINARY, bytes(11)))
    assert refused.reason == "message too big for the server's socket (over 10 bytes)"


def test_the_turn_ends_every_frames_per_turn_frames_without_a_budget():
    protocol = Protocol(max_frame_rate=0)
    found = events(protocol, frame(PONG) * (2 * FRAMES_PER_TURN + 1))
    assert [index for index, event in enumerate(found) if event is TURN_ENDED] == [
        FRAMES_PER_TURN, 2 * FRAMES_PER_TURN + 1]


def test_past_the_frame_budget_every_kind_of_frame_is_1008():
    """A burst of one second's worth (10 frames), paid for per turn of 10 frames."""
    now = [0.0]
    protocol = Protocol(max_frame_rate=10, clock=lambda: now[0])
    assert events(protocol, frame(PONG) * 10 + frame(PING) * 10) == [Pong(b"")] * 10 + [TURN_ENDED] + [Ping(b"")] * 10
    now[0] = 1.0  # a second later, ten more
    fragments = frame(BINARY, b"x", fin=False) + frame(CONTINUATION, b"x", fin=False) * 9
    assert events(protocol, fragments)[0] is TURN_ENDED
    now[0] = 1.5  # half a second later, five tokens: not enough for the next turn
    refused = violation(protocol, frame(CONTINUATION, b"x", fin=False))
    assert (refused.code, refused.reason) == (CloseCode.POLICY_VIOLATION, "over 10 frames/s (max_frame_rate)")


def test_an_idle_core_holds_no_budget_and_shares_what_its_limits_imply():
    """The budgets are made when first charged (a bucket made then is as full as one made at the
    start); cores with the same limits share one object of what follows from them."""
    first, second = Protocol(max_byte_rate=100, max_message_size=100), Protocol(max_byte_rate=100, max_message_size=100)
    assert first._limits is second._limits
    assert events(first, frame(BINARY, bytes(10))) == [DataPiece(bytes(10), False, True)]
    assert first._frame_budget is None and first._byte_budget is None
    events(first, frame(BINARY, bytes(90)))  # the byte budget's burst reached: charged
    assert first._byte_budget is not None and first._frame_budget is None
    events(first, frame(PING) * FRAMES_PER_TURN)  # a turn's frames: paid for
    assert first._frame_budget is not None


def test_past_the_byte_budget_the_peer_is_not_read_until_the_debt_is_paid_back():
    """max_byte_rate 1000 B/s, max_message_size 2000: a burst of 2000 bytes. What came is charged
    when more must be read (no clock reading per frame); a debt is Throttled for as long as it
    takes to pay it back, then reading goes on. Nothing is closed."""
    now = [0.0]
    protocol = Protocol(max_byte_rate=1000, max_message_size=2000, max_frame_rate=0, clock=lambda: now[0])
    protocol.receive_data(frame(BINARY, b"x" * 1500) * 2)
    assert protocol.next_event() == DataPiece(b"x" * 1500, False, True)
    assert protocol.next_event() == DataPiece(b"x" * 1500, False, True)
    assert protocol.next_event() == Throttled(1.0)  # 1000 bytes over the burst
    assert protocol.next_event() == Throttled(1.0)  # until the shell has waited
    now[0] = 1.0
    assert protocol.next_event() is None  # paid back: read on
    protocol.receive_data(frame(BINARY, b"y" * 500))
    assert protocol.next_event() == DataPiece(b"y" * 500, False, True)
    assert protocol.next_event() == Throttled(0.5)
    assert protocol.state is State.OPEN


@pytest.mark.parametrize("rate, throttled", [(0, False), (1, True)])
def test_max_byte_rate_0_is_no_budget(rate, throttled):
    """What one read brought is handed out; the budget is checked before the next read."""
    protocol = Protocol(max_byte_rate=rate, max_message_size=1000, max_frame_rate=0, clock=lambda: 0.0)
    for _ in range(2):
        protocol.receive_data(frame(BINARY, b"x" * 1000))
        assert protocol.next_event() == DataPiece(b"x" * 1000, False, True)
    assert isinstance(protocol.next_event(), Throttled) is throttled


def test_a_ping_and_a_pong_are_events_and_the_answer_is_a_pong_with_the_same_payload():
    protocol = Protocol()
    assert events(protocol, frame(PING, b"hello") + frame(PONG, b"back")) == [Ping(b"hello"), Pong(b"back")]
    assert protocol.send_pong(b"hello") == b"\x8a\x05hello"


def test_their_close_is_echoed_and_ends_parsing():
    """Section 5.5.1: reply with a close frame, typically echoing the status code received."""
    protocol = Protocol()
    assert events(protocol, close_frame(1001, "bye") + frame(TEXT, b"ignored")) == [CloseReceived(1001, "bye")]
    assert protocol.state is State.CLOSING_REMOTE and not protocol.receiving
    with pytest.raises(WebSocketClosed):
        protocol.send_data(b"late", text=False)
    assert protocol.send_close_reply() == b"\x88\x02" + struct.pack("!H", 1001)
    assert protocol.state is State.CLOSED and protocol.send_close() == b""


def test_a_close_without_status_is_1005_and_answered_with_1000():
    protocol = Protocol()
    assert events(protocol, frame(CLOSE)) == [CloseReceived(CloseCode.NO_STATUS, "")]
    assert protocol.send_close_reply() == b"\x88\x02\x03\xe8"


@pytest.mark.parametrize("payload, code", [
    (b"\x03", CloseCode.PROTOCOL_ERROR),                     # a 1-byte payload
    (struct.pack("!H", 1005), CloseCode.PROTOCOL_ERROR),     # reserved, never on the wire
    (struct.pack("!H", 999), CloseCode.PROTOCOL_ERROR),
    (struct.pack("!H", 1000) + b"\xff", CloseCode.INVALID_DATA),  # reason not UTF-8
], ids=["one-byte", "1005", "999", "bad-reason"])
def test_a_malformed_close_frame_is_a_violation(payload, code):
    assert violation(Protocol(), frame(CLOSE, payload)).code == code


def test_after_our_close_their_data_is_discarded_until_their_close():
    """Section 7.1.1: after sending a close frame, data from the peer is discarded; the peer's
    close frame ends the handshake."""
    protocol = Protocol()
    assert protocol.send_close(CloseCode.GOING_AWAY, "bye") == b"\x88\x05\x03\xe9bye"
    assert protocol.state is State.CLOSING_LOCAL and protocol.close_sent == CloseCode.GOING_AWAY
    with pytest.raises(WebSocketClosed):
        protocol.send_data(b"x", text=False)
    assert events(protocol, frame(TEXT, b"late") + frame(PING, b"p") + close_frame(1001)) == [
        Ping(b"p"), CloseReceived(1001, "")]
    assert protocol.state is State.CLOSED and protocol.send_close_reply() == b""


def test_a_lost_transport_is_1006():
    """Section 7.1.5: closed without a close frame, the close code is considered to be 1006."""
    protocol = Protocol()
    protocol.connection_lost()
    assert (protocol.state, protocol.close_received) == (State.CLOSED, CloseCode.ABNORMAL)
    with pytest.raises(WebSocketClosed):
        protocol.send_data(b"x", text=False)


def test_a_message_sent_in_pieces_is_one_opening_frame_then_continuations():
    protocol = Protocol()
    sent = [protocol.send_data(piece, text=True, final=final)
            for piece, final in ((b"ab", False), (b"c", False), (b"", True))]
    assert sent == [(b"\x01\x02", b"ab"), (b"\x00\x01", b"c"), (b"\x80\x00", b"")]
    assert protocol.send_data(bytes(70000), text=False)[0] == b"\x82\x7f" + struct.pack("!Q", 70000)
    assert protocol.bytes_sent == 70003


# -- moving to another process: the core's own snapshot and restore ---------------------------

#: Every state a session can move in: between messages, inside a header, inside a frame's
#: payload, inside a fragmented text message (a character cut between fragments), a control
#: frame half read between two fragments.
MOVING = (frame(TEXT, "first, é".encode()) + frame(TEXT, "cut: €".encode()[:-1], fin=False)
          + frame(PING, b"between") + frame(CONTINUATION, "€".encode()[-1:] + b" 300" + b"x" * 300)
          + frame(BINARY, b"\x00\xff"))


def fixed_clock() -> float:
    return 5.0


@pytest.mark.parametrize("cut", range(len(MOVING) + 1))
def test_a_snapshot_restored_into_a_fresh_core_is_the_same_state_and_goes_on_alike(cut):
    """Taken anywhere between two reads, a snapshot restored into a core with the same limits
    snapshots to itself, and that core hands out the rest as the first would have."""
    first, whole = Protocol(max_frame_rate=1000, clock=fixed_clock), Protocol(max_frame_rate=1000, clock=fixed_clock)
    expected = events(whole, MOVING)
    before = events(first, MOVING[:cut])
    assert first.why_not_movable() is None
    second = Protocol(max_frame_rate=1000, clock=fixed_clock)
    second.restore(first.snapshot())
    assert second.snapshot() == first.snapshot()
    after = events(second, MOVING[cut:])
    assert b"".join(e.data for e in before + after if isinstance(e, DataPiece)) == b"".join(
        e.data for e in expected if isinstance(e, DataPiece))
    assert [e for e in before + after if not isinstance(e, DataPiece)] == [Ping(b"between")]
    assert (second.bytes_received, second.wire_bytes_received) == (whole.bytes_received, whole.wire_bytes_received)


def test_a_restored_core_keeps_its_own_limits_and_caps_the_carried_frame_budget():
    first = Protocol(max_frame_rate=1000, clock=fixed_clock)
    events(first, frame(BINARY, b"x") * (FRAMES_PER_TURN + 1))  # one turn paid: 1000 - 256 tokens
    state = first.snapshot()
    assert state.frame_tokens == 1000 - FRAMES_PER_TURN and state.frames_left == FRAMES_PER_TURN - 1
    second = Protocol(max_frame_rate=100, max_message_size=10, clock=fixed_clock)
    second.restore(state)
    assert second.max_message_size == 10
    restored = second.snapshot()
    assert restored.frame_tokens == 100 and restored.frames_left == 100  # the new burst bounds both


def test_a_restored_core_is_not_charged_for_what_came_before_the_move():
    """The byte budget: what the old process received was paid for there."""
    first = Protocol(max_byte_rate=1000, max_message_size=1000, clock=fixed_clock)
    assert events(first, frame(BINARY, b"x" * 900)) == [DataPiece(b"x" * 900, False, True)]
    second = Protocol(max_byte_rate=1000, max_message_size=1000, clock=fixed_clock)
    second.restore(first.snapshot())
    assert events(second, frame(BINARY, b"y" * 900)) == [DataPiece(b"y" * 900, False, True)]  # 900, not 1800
    assert second.bytes_received == 1800


def test_a_message_announced_under_the_old_limit_is_over_the_restored_cores():
    first = Protocol()
    events(first, frame(TEXT, b"x" * 50, fin=False))
    second = Protocol(max_message_size=20)
    second.restore(first.snapshot())
    violation = second.over_limit()
    assert violation is not None and violation.code == CloseCode.MESSAGE_TOO_BIG
    assert Protocol(max_message_size=50).over_limit() is None


@pytest.mark.parametrize("how, why", [
    (lambda protocol: protocol.send_close(), "closing"),
    (lambda protocol: events(protocol, close_frame(1000)), "closing"),
    (lambda protocol: protocol.connection_lost(), "closing"),
    (lambda protocol: violation_of(protocol, frame(TEXT, b"\xff")), "closing"),  # its close has not gone yet
    (lambda protocol: protocol.send_data(b"open", text=True, final=False), "inside a message sent in pieces"),
])
def test_a_core_says_why_it_cannot_move_and_refuses_a_snapshot(how, why):
    protocol = Protocol()
    how(protocol)
    assert protocol.why_not_movable() == why
    with pytest.raises(NotMovable, match=why):
        protocol.snapshot()


def test_a_message_sent_in_pieces_moves_once_its_last_piece_went():
    protocol = Protocol()
    protocol.send_data(b"open", text=True, final=False)
    protocol.send_data(b"closed", text=True, final=True)
    assert protocol.why_not_movable() is None and protocol.snapshot().bytes_sent == 10

