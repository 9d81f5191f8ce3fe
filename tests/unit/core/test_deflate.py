"""permessage-deflate (RFC 7692) with raw bytes: the offer, the bounded inflater, the compressor.

No socket: :func:`ouistiti_gw.core.deflate.negotiate` reads header values, and
:class:`ouistiti_gw.core.protocol.Protocol` with a :class:`~ouistiti_gw.core.deflate.PerMessageDeflate`
is fed masked frames; what it sends is inflated here with zlib as a client would. The
conformance suite (tests/conformance/test_compression.py) checks the same through a gateway.
"""
from __future__ import annotations

import os
import zlib

import pytest

from ouistiti_gw.core.deflate import (
    COMPRESSOR_IDLE_SECONDS,
    INFLATE_INPUT_STEP,
    INFLATE_STEP,
    DeflateParameters,
    PerMessageDeflate,
    negotiate,
)
from ouistiti_gw.core.frames import CloseCode, Opcode, ProtocolViolation, encode_header, parse_header
from ouistiti_gw.core.protocol import (
    FRAMES_PER_INFLATED_PIECE,
    FRAMES_PER_TURN,
    TURN_ENDED,
    DataPiece,
    Ping,
    Protocol,
    Throttled,
)
from rawclient import client_frame as frame
from support.compression import deflate, deflate_bomb, inflate, inflated_size_of_bomb
from support.protocol import violation_of

TEXT, BINARY, CONTINUATION, PING = Opcode.TEXT, Opcode.BINARY, Opcode.CONTINUATION, Opcode.PING
TAIL = b"\x00\x00\xff\xff"


def compressed(opcode: int, data: bytes, *, fragment: int | None = None, wbits: int = 15) -> bytes:
    """One compressed message, in frames of ``fragment`` compressed bytes (RSV1 on the first only)."""
    payload = deflate(data, wbits)
    size = fragment or len(payload) or 1
    pieces = [payload[i:i + size] for i in range(0, len(payload), size)] or [b""]
    return b"".join(frame(opcode if i == 0 else CONTINUATION, piece, fin=i == len(pieces) - 1, rsv1=i == 0)
                    for i, piece in enumerate(pieces))


def compressing(parameters: DeflateParameters = DeflateParameters(), *, threshold: int = 128,
                clock=lambda: 0.0, **kwargs) -> Protocol:
    """A core with permessage-deflate; no frame budget (its clock is the test's)."""
    return Protocol(deflate=PerMessageDeflate(parameters, threshold=threshold), clock=clock,
                    max_frame_rate=0, **kwargs)


def messages(protocol: Protocol, data: bytes) -> list[tuple[bytes, bool]]:
    """Feed ``data``; every complete message's payload and kind (pieces joined, at most one step each)."""
    protocol.receive_data(data)
    found, pieces = [], []
    while (event := protocol.next_event()) is not None:
        if isinstance(event, DataPiece):
            assert len(event.data) <= INFLATE_STEP
            pieces.append(event.data)
            if event.final:
                found.append((b"".join(pieces), event.is_text))
                pieces = []
    return found


def sent(protocol: Protocol, data: bytes, *, text: bool = False) -> tuple[int, bytes]:
    """What ``send_data`` puts on the wire: (first byte, payload)."""
    header, payload = protocol.send_data(data, text=text)
    return header[0], bytes(payload)


# -- negotiation (RFC 7692 section 7.1) -----------------------------------------------------

@pytest.mark.parametrize(("offer", "answer"), [
    ("permessage-deflate", "permessage-deflate; client_no_context_takeover"),
    # Chrome's and Firefox's offer
    ("permessage-deflate; client_max_window_bits", "permessage-deflate; client_no_context_takeover"),
    ("permessage-deflate; client_max_window_bits=10", "permessage-deflate; client_no_context_takeover"),
    ("permessage-deflate; client_no_context_takeover", "permessage-deflate; client_no_context_takeover"),
    ("permessage-deflate; server_no_context_takeover",
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
    ("permessage-deflate; server_max_window_bits=15",
     "permessage-deflate; client_no_context_takeover; server_max_window_bits=15"),
    ('permessage-deflate; server_max_window_bits="9"',
     "permessage-deflate; client_no_context_takeover; server_max_window_bits=9"),
    # the first offer declined, the second accepted: exactly one in the answer
    ("permessage-deflate; server_max_window_bits=8, permessage-deflate; server_no_context_takeover",
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
    ("x-webkit-deflate-frame, permessage-deflate; client_max_window_bits, permessage-deflate",
     "permessage-deflate; client_no_context_takeover"),
])
def test_an_acceptable_offer_is_answered_with_client_no_context_takeover(offer, answer):
    parameters = negotiate(offer)
    assert parameters is not None
    assert parameters.header() == answer


def test_with_client_context_takeover_allowed_the_client_is_not_asked_to_drop_it():
    assert negotiate("permessage-deflate", client_context_takeover=True).header() == "permessage-deflate"
    # a client that offers to drop its context still does
    assert negotiate("permessage-deflate; client_no_context_takeover",
                     client_context_takeover=True).header() == "permessage-deflate; client_no_context_takeover"


@pytest.mark.parametrize("offer", [
    None, "", "x-webkit-deflate-frame",
    "permessage-deflate; unknown_parameter",
    "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
    "permessage-deflate; server_no_context_takeover=1",
    "permessage-deflate; client_no_context_takeover=yes",
    "permessage-deflate; server_max_window_bits",
    "permessage-deflate; server_max_window_bits=16",
    "permessage-deflate; server_max_window_bits=7",
    "permessage-deflate; server_max_window_bits=010",
    "permessage-deflate; server_max_window_bits=abc",
    "permessage-deflate; server_max_window_bits=8",  # zlib cannot deflate with 8 bits
    "permessage-deflate; client_max_window_bits=16",
    "permessage-deflate; client_max_window_bits=0x0f",
    "permessage-deflate; =",  # not even parseable
    "permessage-deflate;; ,",
], ids=repr)
def test_a_malformed_or_unsupported_offer_is_declined(offer):
    """Section 5: the server declines; the session goes on without compression."""
    assert negotiate(offer) is None


# -- receiving --------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [0, 1, 125, 126, 4096, 65535, 65536, 300_000])
@pytest.mark.parametrize("fragment", [None, 1, 100, 16 * 1024])
def test_compressed_messages_of_any_size_and_fragmentation_inflate_whole(size, fragment):
    protocol = compressing()
    data = (os.urandom(size // 3) + b"chat " * size)[:size]
    assert messages(protocol, compressed(BINARY, data, fragment=fragment)) == [(data, False)]


@pytest.mark.parametrize("wbits", range(9, 16))
def test_every_client_window_size_inflates(wbits):
    data = os.urandom(1 << wbits) * 3
    assert messages(compressing(), compressed(BINARY, data, wbits=wbits)) == [(data, False)]


def test_compressed_and_plain_messages_mix_and_a_ping_may_come_between_fragments():
    protocol = compressing()
    payload = deflate(b"hello " * 50)
    data = (frame(TEXT, payload[:5], fin=False, rsv1=True) + frame(PING, b"p")
            + frame(CONTINUATION, payload[5:]) + frame(TEXT, b"plain") + compressed(TEXT, "héllo".encode() * 40))
    protocol.receive_data(data)
    got = []
    while (event := protocol.next_event()) is not None:
        got.append(event)
    assert Ping(b"p") in got
    assert messages(protocol, b"") == []
    texts = b"".join(e.data for e in got if isinstance(e, DataPiece))
    assert texts == b"hello " * 50 + b"plain" + "héllo".encode() * 40


def test_without_client_context_takeover_no_inflater_is_kept_between_messages():
    deflate_state = PerMessageDeflate(DeflateParameters())
    protocol = Protocol(deflate=deflate_state)
    assert messages(protocol, compressed(TEXT, b"a chat message " * 20)) == [(b"a chat message " * 20, True)]
    assert deflate_state._inflater is None


def test_with_client_context_takeover_a_message_may_refer_to_the_previous_one():
    protocol = compressing(DeflateParameters(client_no_context_takeover=False))
    client = zlib.compressobj(wbits=-15)
    first, second = os.urandom(1000), None
    data = b""
    for message in (first, first):
        payload = client.compress(message) + client.flush(zlib.Z_SYNC_FLUSH)
        data += frame(BINARY, payload[:-4], rsv1=True)
        second = payload
    assert len(second) < 100  # the second refers to the first
    assert messages(protocol, data) == [(first, False), (first, False)]


@pytest.mark.parametrize("opcode", [Opcode.PING, Opcode.PONG, Opcode.CLOSE])
def test_rsv1_on_a_control_frame_is_1002(opcode):
    assert violation_of(compressing(), frame(opcode, b"", rsv1=True)).code == CloseCode.PROTOCOL_ERROR


def test_rsv1_on_a_continuation_is_1002():
    payload = deflate(b"x" * 200)
    data = frame(TEXT, payload[:3], fin=False, rsv1=True) + frame(CONTINUATION, payload[3:], rsv1=True)
    assert violation_of(compressing(), data).code == CloseCode.PROTOCOL_ERROR


def test_rsv1_without_negotiation_is_still_1002():
    assert violation_of(Protocol(), compressed(TEXT, b"x" * 200)).code == CloseCode.PROTOCOL_ERROR


def test_rsv2_and_rsv3_stay_1002_with_deflate():
    data = bytearray(frame(TEXT, b"x"))
    data[0] |= 0x20
    assert violation_of(compressing(), bytes(data)).code == CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize("payload", [b"\xff\xff\xff\xff", b"\x07" + os.urandom(50),
                                     deflate(b"x" * 500)[:-2] + b"\x0f\xff"],
                         ids=["reserved-block-type", "garbage", "bad-end"])
def test_data_that_does_not_inflate_is_1007(payload):
    assert violation_of(compressing(), frame(BINARY, payload, rsv1=True)).code == CloseCode.INVALID_DATA


def test_inflated_text_that_is_not_utf8_is_1007():
    assert violation_of(compressing(), compressed(TEXT, b"ok " * 100 + b"\xff")).code == CloseCode.INVALID_DATA


def test_a_bomb_is_1009_after_at_most_the_limit_plus_a_step_was_inflated():
    """1 MiB inflating to 1 GiB, against a 4 MiB limit: refused after 4 MiB of output, in pieces
    (the frame's own 1 MiB passes the header's check)."""
    limit = 4 << 20
    protocol = compressing(max_message_size=limit)
    protocol.receive_data(frame(BINARY, deflate_bomb(1 << 20), rsv1=True))
    produced = 0
    with pytest.raises(ProtocolViolation) as raised:
        while (event := protocol.next_event()) is not None:
            if isinstance(event, DataPiece):
                assert len(event.data) <= INFLATE_STEP
                produced += len(event.data)
    assert raised.value.code == CloseCode.MESSAGE_TOO_BIG
    assert limit - INFLATE_STEP <= produced <= limit


def test_inflating_pays_from_the_turn_so_a_small_frame_cannot_keep_the_loop():
    """16 KiB of deflate inflates to 16 MiB: the core hands it out in turns of at most
    FRAMES_PER_TURN / FRAMES_PER_INFLATED_PIECE pieces, then TURN_ENDED (the shell yields)."""
    protocol = compressing()
    protocol.receive_data(compressed(BINARY, bytes(16 << 20)))
    pieces_per_turn, pieces, inflated = [], 0, 0
    while (event := protocol.next_event()) is not None:
        if event is TURN_ENDED:
            pieces_per_turn.append(pieces)
            pieces = 0
        else:
            pieces += 1
            inflated += len(event.data)
    assert len(pieces_per_turn) >= 3
    assert max(pieces_per_turn) <= FRAMES_PER_TURN // FRAMES_PER_INFLATED_PIECE
    assert inflated == 16 << 20


def test_an_unfinished_message_is_kept_as_it_came_until_16_kib_of_it_came():
    """200 000 zeros are 211 bytes of deflate: their first frame holds those bytes, no inflater
    (~40 KiB with its window) and nothing inflated (200 KB). From 16 KiB of compressed bytes on,
    inflating starts (a big message streams on); the last frame inflates the rest."""
    state = PerMessageDeflate(DeflateParameters())
    protocol = Protocol(deflate=state, max_frame_rate=0)
    payload = deflate(bytes(200_000))
    assert messages(protocol, frame(BINARY, payload[:-1], fin=False, rsv1=True)) == []
    assert state._inflater is None and bytes(state._gathered) == payload[:-1]
    assert messages(protocol, frame(CONTINUATION, payload[-1:])) == [(bytes(200_000), False)]
    assert state._inflater is None and not state._gathered
    big = deflate(os.urandom(INFLATE_INPUT_STEP))
    protocol.receive_data(frame(BINARY, big, fin=False, rsv1=True))
    assert isinstance(protocol.next_event(), DataPiece)


def test_for_a_consumer_of_whole_messages_a_message_is_inflated_only_at_its_end():
    """SOCK_SEQPACKET: the message is held whole anyway, so it is held as the client sent it."""
    state = PerMessageDeflate(DeflateParameters())
    state.gather_whole_messages()
    protocol = Protocol(deflate=state, max_frame_rate=0)
    data = os.urandom(100_000)
    payload = deflate(data)
    assert messages(protocol, frame(BINARY, payload[:60_000], fin=False, rsv1=True)) == []
    assert state._inflater is None and len(state._gathered) == 60_000
    assert messages(protocol, frame(CONTINUATION, payload[60_000:])) == [(data, False)]


def test_inflated_bytes_pay_from_the_byte_budget_before_each_step():
    """A small frame may inflate to megabytes: each 64 KiB step is paid for before it is made,
    so what comes out past the burst is one step at most, then Throttled until paid back."""
    now = [0.0]
    limit, rate = 256 * 1024, 64 * 1024
    protocol = compressing(max_message_size=limit, max_byte_rate=rate, clock=lambda: now[0])
    protocol.receive_data(compressed(BINARY, bytes(200 * 1024)) * 3)
    out = 0
    while not isinstance(event := protocol.next_event(), Throttled):
        out += len(event.data)
    assert limit < out <= limit + INFLATE_STEP
    assert event.seconds == (out - limit) / rate
    now[0] += event.seconds
    while (event := protocol.next_event()) is not None and not isinstance(event, Throttled):
        out += len(event.data)
    assert limit < out <= limit + rate * now[0] + INFLATE_STEP


def test_the_test_bomb_is_what_it_says():
    """The helper's bomb inflates to 1032 times its size (checked small: the ratio is exact)."""
    assert len(inflate(deflate_bomb(1000))) == inflated_size_of_bomb(1000)


def test_the_size_limit_counts_inflated_bytes_across_fragments():
    protocol = compressing(max_message_size=10_000)
    assert violation_of(protocol, compressed(BINARY, bytes(20_000), fragment=3)).code == CloseCode.MESSAGE_TOO_BIG


# -- sending ----------------------------------------------------------------------------------

def test_a_message_over_the_threshold_is_sent_compressed_with_rsv1_on_its_only_frame():
    protocol = compressing()
    data = b'{"user": "alice", "text": "hello there"}' * 5
    first, payload = sent(protocol, data, text=True)
    assert first == 0x80 | 0x40 | TEXT
    assert inflate(payload) == data
    assert protocol.bytes_sent == len(data) and protocol.wire_bytes_sent == len(payload) < len(data)
    assert parse_header(encode_header(TEXT, 3, rsv1=True), require_mask=False, rsv1=True).rsv1


def test_a_short_message_and_one_that_does_not_shrink_go_uncompressed():
    protocol = compressing(threshold=128)
    assert sent(protocol, b"x" * 127) == (0x80 | BINARY, b"x" * 127)
    noise = os.urandom(1000)
    assert sent(protocol, noise) == (0x80 | BINARY, noise)


def test_messages_sent_in_pieces_go_uncompressed():
    protocol = compressing()
    header, _ = protocol.send_data(b"a" * 1000, text=True, final=False)
    assert header[0] == TEXT
    header, _ = protocol.send_data(b"a" * 1000, text=True, final=True)
    assert header[0] == 0x80 | CONTINUATION


def test_the_client_window_stays_valid_through_skipped_messages_and_the_idle_drop():
    """A client keeps one inflater for everything we send (we do not announce
    server_no_context_takeover): a message sent uncompressed, and a fresh compressor after
    the idle drop or a large message compressed alone, must all leave what follows inflatable by it."""
    now = [0.0]
    protocol = compressing(clock=lambda: now[0])
    client = zlib.decompressobj(-15)
    chat = [b'{"from": "alice", "text": "message number %d, and some more words"}' % i * 4 for i in range(3)]

    def received(data: bytes) -> bytes:
        first, payload = sent(protocol, data)
        return client.decompress(payload + TAIL) if first & 0x40 else payload

    assert received(chat[0]) == chat[0]
    second = sent(protocol, chat[0])[1]
    assert len(second) < len(deflate(chat[0])) // 2  # busy: it refers to the previous message
    client.decompress(second + TAIL)
    noise = os.urandom(300)
    assert received(noise) == noise  # incompressible: uncompressed, and the context is dropped
    assert received(chat[1]) == chat[1]
    large = b"".join(chat) * 100  # over LARGE_MESSAGE: compressed alone, at the fastest level
    first, payload = sent(protocol, large)
    assert first & 0x40 and inflate(payload) == large and not protocol.deflate.compressing
    assert client.decompress(payload + TAIL) == large
    assert received(chat[1]) == chat[1]
    assert protocol.drop_idle_compressor() == pytest.approx(COMPRESSOR_IDLE_SECONDS)
    now[0] += COMPRESSOR_IDLE_SECONDS
    assert protocol.drop_idle_compressor() is None
    assert not protocol.deflate.compressing
    assert received(chat[2]) == chat[2]


def test_server_no_context_takeover_makes_every_message_inflatable_alone():
    protocol = compressing(DeflateParameters(server_no_context_takeover=True))
    data = b"the same message again and again " * 10
    for _ in range(3):
        first, payload = sent(protocol, data)
        assert first & 0x40 and inflate(payload) == data
    assert not protocol.deflate.compressing


@pytest.mark.parametrize("wbits", range(9, 16))
def test_the_compressor_keeps_within_server_max_window_bits(wbits):
    """Data that repeats at a distance just over 2**wbits: a larger window than agreed would
    refer back that far, and a client's window of ``wbits`` could not inflate it."""
    protocol = compressing(DeflateParameters(server_max_window_bits=wbits))
    block = bytes(97 + byte % 16 for byte in os.urandom((1 << wbits) + 100))  # shrinks, matches or not
    first, payload = sent(protocol, block * 2)
    assert first & 0x40
    assert inflate(payload, wbits) == block * 2
