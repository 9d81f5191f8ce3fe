"""A paused session as data (ouistiti_gw.reload.session_state): what a reload carries over.

The core is fed a client's bytes cut at every position, its snapshot taken, sent through JSON,
restored into a new core, and fed the rest: the events must be those of one core fed it all.
(The core's own snapshot and restore, without JSON: test_protocol_snapshot.py.)
"""
from __future__ import annotations

import json

import pytest

from ouistiti_gw.core.deflate import DeflateParameters, PerMessageDeflate
from ouistiti_gw.core.frames import CloseCode, Opcode, ProtocolViolation
from ouistiti_gw.core.protocol import DataPiece, NotMovable, Protocol
from ouistiti_gw.reload.session_state import (
    MAX_ADMISSION_HEADER,
    VERSION,
    Admission,
    Login,
    SessionState,
    StateError,
    as_fields,
    bounded,
    from_fields,
)
from rawclient import client_frame
from support.compression import deflate

STREAM = (client_frame(Opcode.TEXT, "fragment one, ".encode(), fin=False)
          + client_frame(Opcode.CONTINUATION, "a cut character: é€𝄞, ".encode(), fin=False)
          + client_frame(Opcode.PING, b"ping")
          + client_frame(Opcode.CONTINUATION, b"the end")
          + client_frame(Opcode.BINARY, b"\xff\x00 binary"))


def events(protocol: Protocol, data: bytes) -> list:
    protocol.receive_data(data)
    found = []
    while (event := protocol.next_event()) is not None:
        found.append(event)
    return found


def joined(found: list) -> list:
    """Data pieces joined per message (a cut splits a piece in two; the message is the same)."""
    messages, current = [], b""
    for event in found:
        if isinstance(event, DataPiece):
            current += event.data
            if event.final:
                messages.append((current, event.is_text))
                current = b""
        else:
            messages.append(event)
    return messages


ADMISSION = Admission(requested="any", target="echo", resolved="echo", origin="http://localhost:8080",
                      host="localhost:8080", scheme="http")


def moved(protocol: Protocol, successor: Protocol | None = None) -> Protocol:
    """``protocol``'s state, through JSON, restored into ``successor`` (one with the same limits)."""
    state = SessionState(docroot="/run/ws", name="echo", client="127.0.0.1:5000", started=1.0, last_heard=2.0,
                         held=b"fragment one, ", server_pending=b"\xc3", proxy_header_sent=True,
                         message_tokens=3.5, message_bucket_updated=4.0, protocol=protocol.snapshot(),
                         admission=ADMISSION)
    carried = from_fields(json.loads(json.dumps(as_fields(state))))
    assert carried == state
    successor = successor or Protocol(max_message_size=protocol.max_message_size)
    successor.restore(carried.protocol)
    return successor


def bare_state(protocol: Protocol) -> SessionState:
    return SessionState("/d", "n", "c", 0.0, 0.0, b"", b"", False, None, None, protocol.snapshot(), ADMISSION)


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_a_core_paused_anywhere_goes_on_in_another(cut):
    whole = joined(events(Protocol(), STREAM))
    first = Protocol()
    before = events(first, STREAM[:cut])
    second = moved(first)
    assert joined(before + events(second, STREAM[cut:])) == whole
    text, binary = "fragment one, a cut character: é€𝄞, the end".encode(), b"\xff\x00 binary"
    assert second.bytes_received == len(text) + len(binary)


def test_a_character_that_cannot_end_well_still_fails_after_the_move():
    first = Protocol()
    events(first, client_frame(Opcode.TEXT, b"\xed", fin=False))
    second = moved(first)
    with pytest.raises(ProtocolViolation) as failed:
        events(second, client_frame(Opcode.CONTINUATION, b"\xa0\x80"))
    assert failed.value.code == CloseCode.INVALID_DATA


def test_the_successors_limits_apply():
    """A reload applies the new max_message_size to the message in progress too (a SEQPACKET
    session's own limit is set again by the session, from its socket)."""
    first = Protocol(max_message_size=100)
    first.limit_message_size(50, "too big for the server's socket")
    events(first, client_frame(Opcode.TEXT, b"12345", fin=False))
    second = moved(first, Protocol(max_message_size=8))
    assert second.max_message_size == 8 and second.over_limit() is None
    with pytest.raises(ProtocolViolation) as failed:
        events(second, client_frame(Opcode.CONTINUATION, b"678901"))
    assert failed.value.code == CloseCode.MESSAGE_TOO_BIG and failed.value.reason == "message over 8 bytes"


def test_a_frame_announced_under_the_old_limit_is_over_the_new_one():
    first = Protocol(max_message_size=100)
    events(first, client_frame(Opcode.BINARY, b"x" * 50)[:20])  # its header said 50 bytes
    second = moved(first, Protocol(max_message_size=20))
    violation = second.over_limit()
    assert violation is not None and violation.code == CloseCode.MESSAGE_TOO_BIG


def test_a_moved_core_does_not_pay_again_for_what_came_before_the_move():
    """The byte budget starts afresh in the successor: a session that received more than the
    burst in its life is not throttled for its history after a reload."""
    first = Protocol(max_byte_rate=0)
    events(first, client_frame(Opcode.BINARY, b"x" * 5000))
    state = first.snapshot()
    successor = Protocol(max_byte_rate=1000, max_message_size=1000, clock=lambda: 0.0)
    successor.restore(state)
    successor.receive_data(client_frame(Opcode.BINARY, b"y" * 10))
    assert successor.next_event() == DataPiece(b"y" * 10, False, True)
    assert successor.next_event() is None


def test_a_closing_core_does_not_move():
    protocol = Protocol()
    assert protocol.why_not_movable() is None
    protocol.send_close(CloseCode.GOING_AWAY)
    assert protocol.why_not_movable() == "closing"


def test_another_version_is_refused_by_name():
    fields = as_fields(bare_state(Protocol()))
    with pytest.raises(StateError, match=f"version 1 .this code reads version {VERSION}"):
        from_fields({**fields, "version": 1})


@pytest.mark.parametrize("fields", [None, [], {"version": VERSION}, {"version": VERSION, "protocol": {}},
                                    {"version": VERSION, "protocol": 1}])
def test_malformed_states_are_refused(fields):
    with pytest.raises(StateError):
        from_fields(fields)


@pytest.mark.parametrize("path, value", [(("name",), 5), (("held",), "not base64 bytes"),
                                         (("held",), {"b64": "%%%"}), (("protocol", "unparsed"), 7),
                                         (("protocol", "frame"), [True, 1, 2]),
                                         (("protocol", "frame"), [True, 1, "2", {"b64": ""}]),
                                         (("protocol", "frames_left"), None),
                                         (("protocol", "frame"), [True, 99, 5, {"b64": "ESIzRA=="}]),
                                         (("protocol", "frame"), [True, 1, 5, {"b64": "ESI="}]),
                                         (("protocol", "message_opcode"), 9),
                                         (("protocol", "message_opcode"), 8),
                                         (("admission", "origin"), 5), (("admission", "resolved"), None)])
def test_values_of_another_type_are_refused(path, value):
    """Checked whole before a session is built from it: nothing fails half-way through."""
    first = Protocol()
    events(first, client_frame(Opcode.TEXT, b"12345", fin=False) + b"\x80")
    fields = as_fields(bare_state(first))
    assert fields["protocol"]["frame"] is None and fields["protocol"]["unparsed"] == {"b64": "gA=="}
    fields["protocol"]["frame"] = [True, 1, 5, {"b64": "ESIzRA=="}]
    assert from_fields(fields).protocol.frame == (True, 1, 5, b"\x11\x22\x33\x44")
    *parents, last = path
    target = fields
    for parent in parents:
        target = target[parent]
    target[last] = value
    with pytest.raises(StateError, match="malformed"):
        from_fields(fields)


LOGIN = Login("alice", ("staff", "admins"), 1700000000, {"HTTP_COOKIE": "sid=1", "wsgi.url_scheme": "https"})


def test_a_login_goes_through_json_and_an_older_state_without_one_still_restores():
    state = bare_state(Protocol())
    with_login = SessionState(**{**vars(state), "login": LOGIN})
    assert from_fields(json.loads(json.dumps(as_fields(with_login)))) == with_login
    older = as_fields(state)
    assert "login" not in older  # as a process that did not know it sends it (and as one takes it)
    assert from_fields(older) == state and state.login is None


@pytest.mark.parametrize("field, value", [("user", 5), ("groups", ["a", 5]), ("groups", "a"), ("expires", 1.5),
                                          ("expires", "1"), ("credentials", {"HTTP_COOKIE": 1}),
                                          ("credentials", {"HTTP_COOKIE": ["a"]}), ("credentials", ["a"]),
                                          ("credentials", {"b64": "YQ=="}), ("surprise", 1)])
def test_a_login_of_another_shape_is_refused(field, value):
    fields = as_fields(SessionState(**{**vars(bare_state(Protocol())), "login": LOGIN}))
    fields["login"][field] = value
    with pytest.raises(StateError, match="malformed|unknown"):
        from_fields(fields)
    del fields["login"][field if field != "surprise" else "user"]
    with pytest.raises(StateError, match="malformed"):
        from_fields(fields)


def test_the_reason_a_login_is_refused_shows_no_credential():
    """It is logged (the old process's "refused session" line)."""
    fields = as_fields(SessionState(**{**vars(bare_state(Protocol())), "login": LOGIN}))
    fields["login"]["credentials"]["HTTP_AUTHORIZATION"] = ["Bearer secret"]
    with pytest.raises(StateError, match="credentials") as refused:
        from_fields(fields)
    assert "secret" not in str(refused.value) and "sid=1" not in str(refused.value)


def test_unknown_fields_are_refused():
    fields = as_fields(bare_state(Protocol()))
    with pytest.raises(StateError, match="unknown fields"):
        from_fields({**fields, "surprise": 1})


def test_an_admission_keeps_no_long_header():
    """Origin and Host are the client's: a session keeps at most MAX_ADMISSION_HEADER characters
    of each (no DNS name is longer); a longer one is kept as malformed."""
    assert bounded(None) is None and bounded("x" * MAX_ADMISSION_HEADER) == "x" * MAX_ADMISSION_HEADER
    assert bounded("x" * (MAX_ADMISSION_HEADER + 1)) == ""


def compressed_frame(data: bytes, *, fin: bool = True) -> bytes:
    """A masked client TEXT frame whose payload is ``data`` deflated (RSV1 set)."""
    return client_frame(Opcode.TEXT, deflate(data), fin=fin, rsv1=True)


def compressed_core(*, client_context: bool = False) -> Protocol:
    return Protocol(deflate=PerMessageDeflate(DeflateParameters(client_no_context_takeover=not client_context)))


def test_a_compressed_core_moves_between_messages_with_its_parameters():
    first = compressed_core()
    assert joined(events(first, compressed_frame("é".encode() * 100))) == [("é".encode() * 100, True)]
    assert first.why_not_movable() is None
    state = first.snapshot()
    assert state.deflate_parameters() == DeflateParameters(client_no_context_takeover=True)
    second = Protocol(deflate=PerMessageDeflate(state.deflate_parameters()))
    second.restore(state)
    assert joined(events(second, compressed_frame(b"after the move" * 20))) == [(b"after the move" * 20, True)]
    assert second.wire_bytes_received == first.wire_bytes_received + len(deflate(b"after the move" * 20))


def test_a_compressed_core_does_not_move_inside_a_message_nor_with_the_clients_context():
    inside = compressed_core()
    events(inside, compressed_frame(b"first half", fin=False))
    assert inside.why_not_movable() == "inside a compressed message"
    with pytest.raises(NotMovable):  # zlib's state cannot be carried: no snapshot without it
        inside.snapshot()
    kept = compressed_core(client_context=True)
    events(kept, compressed_frame(b"a message"))
    assert "client's context takeover" in kept.why_not_movable()
