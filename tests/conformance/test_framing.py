"""RFC 6455 section 5: framing, payload lengths, pings and pongs, reserved bits and opcodes, masking.

Autobahn|Testsuite case groups 1 (framing), 2 (pings/pongs), 3 (reserved bits) and 4 (opcodes),
written again from the RFC and run through the gateway with raw frames (see ``rawclient``).
Messages go to a SEQPACKET echo behind the gateway, so each one comes back as one message.

gevent-websocket 0.10.1, whose framing :mod:`ouistiti_gw.green.websocket` replaced, fails several of
these: it accepts unmasked client frames, and every protocol error there is answered by
``close(1002)``, whose frame carries no status code at all (its ``close()`` writes only the reason).
"""
from __future__ import annotations

import socket
from typing import Callable

import pytest

from rawclient import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    STREAM_ECHO,
    TEXT,
    Close,
    LengthForm,
    Message,
    Pong,
    RawClient,
    SendMode,
    Step,
    binary_data,
    build_frame,
    close_payload,
    play,
    utf8_text,
)
from support.unix_servers import read_until_eof

Connect = Callable[..., RawClient]
PROTOCOL_ERROR = 1002


def payload_for(opcode: int, size: int) -> bytes:
    return utf8_text(size) if opcode == TEXT else binary_data(size)


# -- group 1: framing and payload lengths ----------------------------------------------------

@pytest.mark.parametrize("opcode", [TEXT, BINARY], ids=["text", "binary"])
@pytest.mark.parametrize("length", [1, 125, 126, 127, 128, 65535, 65536])
@pytest.mark.parametrize("chop", [None, 997], ids=["one-write", "chops-997"])
def test_payload_lengths(connect: Connect, opcode: int, length: int, chop: int | None) -> None:
    """Autobahn 1.1.x/1.2.x: lengths around the 7-bit (<=125), 16-bit (126..65535) and 64-bit forms.

    Each comes back whole and unchanged, as one message of the same type; 1.1.8 and 1.2.8 write
    the frame in 997-byte chops, so the server reassembles a payload from many reads.
    """
    data = payload_for(opcode, length)
    client = connect()
    client.send(build_frame(opcode, data), chop=chop)
    client.expect_message(data, text=opcode == TEXT)
    client.close_cleanly()


@pytest.mark.parametrize("opcode", [TEXT, BINARY], ids=["text", "binary"])
def test_empty_message(connect: Connect, opcode: int) -> None:
    """Autobahn 1.1.1/1.2.1: a zero-length message is valid and the connection goes on.

    The gateway forwards nothing for it (a zero-length write is not data on a stream, and reads
    as end of stream on a SEQPACKET socket): the next frame we see must be the pong to our ping.
    """
    client = connect(STREAM_ECHO)
    play(client, [([build_frame(opcode, b""), build_frame(PING, b"after")], [Pong(b"after")])])


@pytest.mark.parametrize(("length", "form"), [
    (5, LengthForm.BITS_16), (5, LengthForm.BITS_64), (300, LengthForm.BITS_64),
], ids=["5-in-16-bit", "5-in-64-bit", "300-in-64-bit"])
def test_non_minimal_length_form_accepted(connect: Connect, length: int, form: LengthForm) -> None:
    """Section 5.2 makes the *sender* use the shortest length form; we are lenient as a receiver.

    The RFC gives no failure rule for the receiver and Autobahn does not test it; the payload
    is still unambiguous, so the message is delivered. (The server's own frames always use the
    shortest form: ``RawClient.recv_frame`` checks it on every frame of this suite.)
    """
    data = utf8_text(length)
    client = connect()
    play(client, [([build_frame(TEXT, data, form=form)], [Message(data)])])


def test_64_bit_length_with_top_bit_set(connect: Connect) -> None:
    """Section 5.2: "the most significant bit MUST be 0" in the 64-bit length: 1002, payload unread."""
    client = connect()
    client.send(build_frame(BINARY, b"", length=1 << 63, form=LengthForm.BITS_64))
    client.expect_close(PROTOCOL_ERROR)


def test_client_vanishing_inside_a_frame_ends_the_session(connect: Connect, conformance_docroot: str,
                                                          unix_servers) -> None:
    """A frame cut short by the client's TCP close: no close frame can be sent (section 7.1.5, 1006).

    The session must still end: the gateway closes its side and the UNIX server sees the end.
    """
    server = unix_servers(f"{conformance_docroot}/cut-frame", read_until_eof)
    client = connect("/cut-frame")
    client.send(build_frame(BINARY, b"x" * 10, length=100))
    client.sock.shutdown(socket.SHUT_WR)
    client.expect_eof()
    assert server.closed_by_peer.wait(5), "the gateway kept the UNIX connection open"
    assert server.received == []


# -- group 2: pings and pongs ------------------------------------------------------------------

@pytest.mark.parametrize("payload", [b"", b"Hello, world!", bytes([0, 255, 254, 253, 252, 251, 0, 255]),
                                     bytes(range(125))], ids=["empty", "text", "binary", "125-bytes"])
@pytest.mark.parametrize("mode", [SendMode.WHOLE, SendMode.OCTETS], ids=lambda mode: mode.value)
def test_ping_answered_with_its_payload(connect: Connect, payload: bytes, mode: SendMode) -> None:
    """Autobahn 2.1-2.4, 2.6: section 5.5.3, the pong carries the ping's application data unchanged."""
    play(connect(), [([build_frame(PING, payload)], [Pong(payload)])], mode)


@pytest.mark.parametrize("opcode", [PING, PONG, CLOSE], ids=["ping", "pong", "close"])
@pytest.mark.parametrize("length", [126, 65536], ids=["16-bit-length", "64-bit-length"])
def test_control_frame_over_125_bytes_refused(connect: Connect, opcode: int, length: int) -> None:
    """Autobahn 2.5 and 7.3.6: section 5.5, "All control frames MUST have a payload length of 125
    bytes or less": the connection fails with 1002, and no pong answers the oversized ping."""
    payload = close_payload(1000, b"x" * (length - 2)) if opcode == CLOSE else b"p" * length
    play(connect(), [([build_frame(opcode, payload), build_frame(PING, b"after")], [Close(PROTOCOL_ERROR)])])


@pytest.mark.parametrize("payload", [b"", b"unsolicited"], ids=["empty", "with-payload"])
def test_unsolicited_pong_ignored(connect: Connect, payload: bytes) -> None:
    """Autobahn 2.7-2.9: section 5.5.3, "A response to an unsolicited Pong frame is not expected"."""
    play(connect(), [([build_frame(PONG, payload), build_frame(PING, b"ping")], [Pong(b"ping")])])


@pytest.mark.parametrize("mode", [SendMode.WHOLE, SendMode.PER_FRAME], ids=lambda mode: mode.value)
def test_ten_pings_answered_in_order(connect: Connect, mode: SendMode) -> None:
    """Autobahn 2.10/2.11: every ping gets its pong, in order (none coalesced, none dropped)."""
    payloads = [f"ping {i}".encode() for i in range(10)]
    play(connect(), [([build_frame(PING, p) for p in payloads], [Pong(p) for p in payloads])], mode)


# -- groups 3 and 4: reserved bits and opcodes -------------------------------------------------

def failing_after_a_valid_exchange(bad_frames: list[bytes]) -> list[Step]:
    """Echo a message first (the connection works), then the faulty frames and a ping: 1002, no pong."""
    return [([build_frame(TEXT, b"Hello")], [Message(b"Hello")]),
            ([*bad_frames, build_frame(PING, b"after")], [Close(PROTOCOL_ERROR)])]


def rsv_frame(opcode: int, rsv: int) -> list[bytes]:
    if opcode == CONTINUATION:  # inside a fragmented message
        return [build_frame(TEXT, b"frag", fin=False), build_frame(CONTINUATION, b"ment", rsv=rsv)]
    payload = close_payload(1000) if opcode == CLOSE else b"Hello"
    return [build_frame(opcode, payload, rsv=rsv)]


@pytest.mark.parametrize("opcode", [TEXT, BINARY, CONTINUATION, PING, PONG, CLOSE],
                         ids=["text", "binary", "continuation", "ping", "pong", "close"])
@pytest.mark.parametrize("rsv", range(1, 8))
def test_reserved_bits_refused(connect: Connect, opcode: int, rsv: int) -> None:
    """Autobahn 3.1-3.7: section 5.2, RSV1-3 "MUST be 0 unless an extension is negotiated"
    (none is): the endpoint MUST fail the connection, 1002. Nothing after the bad frame is
    answered: not the ping, not a close frame (3.7) as if it were valid."""
    play(connect(), failing_after_a_valid_exchange(rsv_frame(opcode, rsv)))


def test_reserved_bits_refused_when_chopped(connect: Connect) -> None:
    """Autobahn 3.4: the same with every byte written separately (the header arrives in pieces)."""
    play(connect(), failing_after_a_valid_exchange(rsv_frame(TEXT, 4)), SendMode.OCTETS)


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF], ids=lambda op: f"{op:#x}")
@pytest.mark.parametrize("payload", [b"", b"reserved"], ids=["empty", "with-payload"])
def test_reserved_opcodes_refused(connect: Connect, opcode: int, payload: bytes) -> None:
    """Autobahn 4.1.x (3-7, data) and 4.2.x (0xB-0xF, control): section 5.2, "If an unknown opcode
    is received, the receiving endpoint MUST _Fail the WebSocket Connection_": 1002."""
    play(connect(), failing_after_a_valid_exchange([build_frame(opcode, payload)]))


# -- masking -----------------------------------------------------------------------------------

@pytest.mark.parametrize("frames", [
    [build_frame(TEXT, b"Hello", masked=False)],
    [build_frame(BINARY, b"\x00\xff", masked=False)],
    [build_frame(TEXT, b"frag", fin=False), build_frame(CONTINUATION, b"ment", masked=False)],
    [build_frame(PING, b"ping", masked=False)],
    [build_frame(PONG, b"pong", masked=False)],
    [build_frame(CLOSE, close_payload(1000), masked=False)],
], ids=["text", "binary", "continuation", "ping", "pong", "close"])
def test_unmasked_client_frame_refused(connect: Connect, frames: list[bytes]) -> None:
    """Section 5.1: "The server MUST close the connection upon receiving a frame that is not
    masked ... with a status code of 1002".

    gevent-websocket 0.10.1 unmasks only when the bit is set and otherwise takes the frame as it
    is: unmasked text was echoed, an unmasked ping answered. This is one reason we replaced it.
    """
    play(connect(), failing_after_a_valid_exchange(frames))
