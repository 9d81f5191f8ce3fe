"""The sans-IO RFC 6455 codec: headers, masking, close payloads."""
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ouistiti_gw.core.frames import (
    CloseCode,
    Opcode,
    ProtocolViolation,
    apply_mask,
    encode_close_payload,
    encode_frame,
    header_size,
    parse_close_payload,
    parse_header,
)


def decode(frame: bytes):
    """Parse a whole frame the way the endpoint does: header, then unmasked payload."""
    size = header_size(frame[:2])
    header = parse_header(frame[:size], require_mask=bool(frame[1] & 0x80))
    return header, apply_mask(frame[size:size + header.length], header.mask)


@given(payload=st.binary(max_size=70000), mask=st.binary(min_size=4, max_size=4),
       opcode=st.sampled_from([Opcode.TEXT, Opcode.BINARY, Opcode.CONTINUATION]), fin=st.booleans())
def test_frame_round_trip(payload, mask, opcode, fin):
    header, body = decode(encode_frame(opcode, payload, fin=fin, mask=mask))
    assert (header.opcode, header.fin, header.length, header.mask, body) == (opcode, fin, len(payload), mask, payload)


@given(payload=st.binary(max_size=300), mask=st.binary(min_size=4, max_size=4),
       cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=6))
def test_unmasking_in_pieces_of_any_size(payload, mask, cuts):
    """The endpoint unmasks bytes as they arrive: pieces at any offset give the whole unmasked."""
    bounds = sorted({0, len(payload), *(c for c in cuts if c <= len(payload))})
    pieces = [apply_mask(payload[a:b], mask, a) for a, b in zip(bounds, bounds[1:])]
    assert b"".join(pieces) == apply_mask(payload, mask)


@pytest.mark.parametrize("length, header_bytes", [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)])
def test_shortest_length_form(length, header_bytes):
    frame = encode_frame(Opcode.BINARY, b"x" * length)
    assert len(frame) == header_bytes + length


def test_mask_matches_rfc_example():
    # RFC 6455 section 5.7: a masked "Hello"
    frame = bytes([0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58])
    header, body = decode(frame)
    assert header.opcode == Opcode.TEXT and body == b"Hello"


@pytest.mark.parametrize("first, second, why", [
    (0x81, 0x05, "not masked"),
    (0xC1, 0x85, "reserved bits"),
    (0x83, 0x85, "reserved opcode"),
    (0x8B, 0x80, "reserved opcode"),
    (0x09, 0x80, "fragmented control"),
    (0x89, 0xFE, "over 125"),
])
def test_header_violations_are_1002(first, second, why):
    data = bytes([first, second]) + b"\x00\xc8" + b"\x00" * 10  # 16-bit length 200 where one is read
    with pytest.raises(ProtocolViolation, match=why) as raised:
        parse_header(data[:header_size(data[:2])], require_mask=True)
    assert raised.value.code == CloseCode.PROTOCOL_ERROR


def test_close_payloads():
    assert parse_close_payload(b"") == (CloseCode.NO_STATUS, "")
    assert parse_close_payload(encode_close_payload(1000, "bye")) == (1000, "bye")
    assert parse_close_payload(struct.pack("!H", 4000) + "é".encode()) == (4000, "é")
    for code in (0, 999, 1004, 1005, 1006, 1015, 1100, 2000, 2999, 5000):
        with pytest.raises(ProtocolViolation):
            parse_close_payload(struct.pack("!H", code))
    with pytest.raises(ProtocolViolation) as raised:
        parse_close_payload(struct.pack("!H", 1000) + b"\xff")
    assert raised.value.code == CloseCode.INVALID_DATA
    with pytest.raises(ProtocolViolation):
        parse_close_payload(b"\x03")


def test_long_close_reason_is_cut_on_a_character_boundary():
    payload = encode_close_payload(1011, "é" * 100)
    assert len(payload) <= 125
    assert parse_close_payload(payload)[1] == "é" * ((125 - 2) // 2)
