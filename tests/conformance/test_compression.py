"""permessage-deflate through a running gateway (RFC 7692; Autobahn groups 12 and 13 in spirit).

Autobahn 12.x sends compressed messages of sizes from 16 bytes to 128 KiB and expects them
echoed (compressed or not: RSV1 is per message); 13.x does the same for each parameter
combination (context takeover, window bits). Here the SEQPACKET echo answers one message per
message, so every echo is checked whole: its payload inflated by the raw client with the window
the gateway agreed to (a wider window than agreed would fail to inflate), and compressed when
it is worth it (at least ``compression_threshold``, 128 bytes, and compressible). The client
compresses with zlib itself, with each window size, in one frame or in fragments.

The failures are RFC 7692's: RSV1 on a continuation or a control frame is 1002 (section 6.1);
data that does not inflate, or inflates to invalid UTF-8, is 1007 (RFC 6455 section 7.4.1:
"data within a message that was not consistent with the type of the message"); an offer the
gateway declines leaves RSV1 reserved, 1002.
"""
from __future__ import annotations

import os
import random
import zlib
from typing import Callable

import pytest

from rawclient import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    TEXT,
    Close,
    Message,
    RawClient,
    SendMode,
    build_frame,
    close_payload,
    play,
    utf8_text,
)
from support.compression import deflate

Connect = Callable[..., RawClient]
KiB = 1024
RSV1 = 4
PROTOCOL_ERROR, INVALID_DATA = 1002, 1007
#: The gateway's default compression_threshold (README, "Options").
THRESHOLD = 128
#: Autobahn 12.x's message sizes (the SEQPACKET echo holds 128 KiB in one packet).
SIZES = [16, 64, 127, 128, 256, 1 * KiB, 4 * KiB, 8 * KiB, 16 * KiB, 32 * KiB, 64 * KiB, 128 * KiB]


def chat_like(size: int, *, text: bool) -> bytes:
    """Compressible data of ``size`` bytes: text (UTF-8, multi-byte characters) or binary that
    is not UTF-8 (the echo must come back binary)."""
    if text:
        return utf8_text(size)
    unit = b'\xff{"from": "alice", "seq": 12345, "text": "hello"}\n'
    return (unit * (size // len(unit) + 1))[:size]


def compressed_frames(opcode: int, data: bytes, *, fragment: int | None = None, wbits: int = 15) -> list[bytes]:
    """One message compressed by the client (a fresh context: the gateway asked for
    client_no_context_takeover), in frames of ``fragment`` compressed bytes; RSV1 on the first."""
    payload = deflate(data, wbits)
    size = fragment or len(payload) or 1
    pieces = [payload[i:i + size] for i in range(0, len(payload), size)] or [b""]
    return [build_frame(opcode if i == 0 else CONTINUATION, piece, fin=i == len(pieces) - 1,
                        rsv=RSV1 if i == 0 else 0) for i, piece in enumerate(pieces)]


def expect_echo(client: RawClient, data: bytes, *, text: bool) -> None:
    """The echo is ``data`` in one frame, compressed exactly when that pays."""
    frame = client.expect_frame(TEXT if text else BINARY, data)
    worth_it = len(data) >= THRESHOLD
    assert frame.rsv == (RSV1 if worth_it else 0), f"{len(data)} bytes came back with rsv={frame.rsv}"


def test_the_offer_is_answered_by_the_gateways_handler_not_by_the_stock_one(connect: Connect,
                                                                           request: pytest.FixtureRequest) -> None:
    """The stock handler sent its 101 (without extensions) before the gateway ran: no compression
    there, and RSV1 stays reserved; the gateway's handler accepts with client_no_context_takeover."""
    client = connect(extra_headers="Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n")
    if request.node.callspec.params["conformance_gateway"] == "stock-handler":
        assert client.extensions is None
        play(client, [(compressed_frames(TEXT, b"x" * 200), [Close(PROTOCOL_ERROR)])])
    else:
        assert client.extensions == "permessage-deflate; client_no_context_takeover"
        play(client, [(compressed_frames(TEXT, b"x" * 200), [Message(b"x" * 200)])])


@pytest.mark.parametrize("opcode", [TEXT, BINARY], ids=["text", "binary"])
@pytest.mark.parametrize("fragment", [None, 64, 1000], ids=["one-frame", "64B-fragments", "1000B-fragments"])
@pytest.mark.parametrize("size", SIZES)
def test_compressed_messages_of_every_size_echo_whole(connect_deflate: Connect, opcode: int,
                                                      fragment: int | None, size: int) -> None:
    """Autobahn 12.x: both ways compressed, three messages per case so that the gateway's
    compressor keeps its context between them (the client keeps one inflater)."""
    client = connect_deflate()
    data = chat_like(size, text=opcode == TEXT)
    for _ in range(3):
        client.send(*compressed_frames(opcode, data, fragment=fragment))
        expect_echo(client, data, text=opcode == TEXT)
    client.close_cleanly()


@pytest.mark.parametrize("wbits", range(9, 16))
def test_every_client_window_size_is_inflated(connect_deflate: Connect, wbits: int) -> None:
    """Section 7.1.2.2: a client compresses with any window up to 15 bits (we constrain none)."""
    client = connect_deflate(offer=f"permessage-deflate; client_max_window_bits={wbits}")
    assert client.extensions == "permessage-deflate; client_no_context_takeover"
    block = chat_like((1 << wbits) + 100, text=False)
    client.send(*compressed_frames(BINARY, block * 2, wbits=wbits))
    expect_echo(client, block * 2, text=False)
    client.close_cleanly()


@pytest.mark.parametrize("takeover", [True, False], ids=["server-context", "server_no_context_takeover"])
@pytest.mark.parametrize("wbits", range(9, 16))
def test_the_gateway_compresses_within_the_window_it_agreed_to(connect_deflate: Connect, wbits: int,
                                                              takeover: bool) -> None:
    """Autobahn 13.x: server_max_window_bits=9..15, with and without server context takeover.
    The echo repeats a block just over 2**wbits long: a compressor with a wider window would
    refer back past the client's window, and the client's inflater would fail."""
    offer = f"permessage-deflate; server_max_window_bits={wbits}"
    if not takeover:
        offer += "; server_no_context_takeover"
    client = connect_deflate(offer=offer)
    answer = "permessage-deflate" + ("" if takeover else "; server_no_context_takeover")
    assert client.extensions == f"{answer}; client_no_context_takeover; server_max_window_bits={wbits}"
    block = bytes(97 + byte % 16 for byte in os.urandom((1 << wbits) + 100))
    for _ in range(2):
        client.send(*compressed_frames(TEXT, block * 2))
        expect_echo(client, block * 2, text=True)
    client.close_cleanly()


@pytest.mark.parametrize("mode", [SendMode.PER_FRAME, SendMode.OCTETS], ids=["per-frame", "octets"])
def test_a_compressed_message_arriving_byte_by_byte_is_inflated_whole(connect_deflate: Connect,
                                                                    mode: SendMode) -> None:
    data = chat_like(600, text=True)
    play(connect_deflate(), [(compressed_frames(TEXT, data, fragment=50), [Message(data)])], mode)


def test_plain_and_compressed_messages_mix_with_pings_between_fragments(connect_deflate: Connect) -> None:
    client = connect_deflate()
    data = chat_like(3000, text=True)
    first, *rest = compressed_frames(TEXT, data, fragment=100)
    client.send(first, build_frame(PING, b"between"), *rest, build_frame(TEXT, b"plain"))
    client.expect_pong(b"between")
    expect_echo(client, data, text=True)
    expect_echo(client, b"plain", text=True)
    client.close_cleanly()


def test_an_empty_compressed_message(connect_deflate: Connect) -> None:
    """Section 7.2.3.6: an empty message compresses to a single 0x00 byte (an empty final stored
    block also works); the SEQPACKET echo cannot send an empty packet, so a ping checks the
    session is still in step after it."""
    client = connect_deflate()
    client.send(build_frame(TEXT, b"\x00", rsv=RSV1), build_frame(PING, b"still here"))
    client.expect_pong(b"still here")
    client.close_cleanly()


@pytest.mark.parametrize(("frames", "code"), [
    ([build_frame(TEXT, deflate(b"a" * 300)[:4], fin=False, rsv=RSV1),
      build_frame(CONTINUATION, deflate(b"a" * 300)[4:], rsv=RSV1)], PROTOCOL_ERROR),
    ([build_frame(PING, b"", rsv=RSV1)], PROTOCOL_ERROR),
    ([build_frame(PONG, b"", rsv=RSV1)], PROTOCOL_ERROR),
    ([build_frame(CLOSE, close_payload(1000), rsv=RSV1)], PROTOCOL_ERROR),
    ([build_frame(TEXT, b"x", rsv=2)], PROTOCOL_ERROR),  # RSV2: still no extension uses it
    ([build_frame(BINARY, b"\xff\xff\xff\xff", rsv=RSV1)], INVALID_DATA),  # reserved block type
    # fixed bytes, not fresh ones each run: random bytes are a valid deflate start now and then
    ([build_frame(BINARY, random.Random(2).randbytes(64), rsv=RSV1)], INVALID_DATA),
    ([build_frame(TEXT, deflate("é".encode() * 100 + b"\xc3"), rsv=RSV1)], INVALID_DATA),  # cut character
    ([build_frame(TEXT, deflate(b"ok" * 100 + b"\xed\xa0\x80"), rsv=RSV1)], INVALID_DATA),  # surrogate
], ids=["rsv1-on-continuation", "rsv1-on-ping", "rsv1-on-pong", "rsv1-on-close", "rsv2",
        "reserved-block-type", "garbage", "text-ends-in-a-character", "text-surrogate"])
def test_broken_compressed_input_fails_the_connection(connect_deflate: Connect, frames: list[bytes],
                                                      code: int) -> None:
    """After a valid compressed exchange, so the failure is the frame's, not the session's."""
    valid = chat_like(500, text=True)
    play(connect_deflate(), [(compressed_frames(TEXT, valid), [Message(valid)]), (frames, [Close(code)])])


@pytest.mark.parametrize("offer", [
    "permessage-deflate; server_max_window_bits=16",
    "permessage-deflate; server_max_window_bits=8",
    "permessage-deflate; client_max_window_bits=7",
    "permessage-deflate; no_such_parameter",
    "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
    "permessage-deflate; =broken",
])
def test_a_declined_offer_leaves_rsv1_reserved(connect_deflate: Connect, offer: str) -> None:
    """Section 5: the server declines a malformed or unsupported offer and goes on without it."""
    client = connect_deflate(offer=offer)
    assert client.extensions is None
    play(client, [([build_frame(TEXT, b"plain")], [Message(b"plain")]),
                  (compressed_frames(TEXT, b"z" * 300), [Close(PROTOCOL_ERROR)])])


def test_a_message_that_does_not_shrink_comes_back_uncompressed(connect_deflate: Connect) -> None:
    client = connect_deflate()
    noise = b"\xff" + os.urandom(4000)
    client.send(*compressed_frames(BINARY, noise))
    frame = client.expect_frame(BINARY, noise)
    assert frame.rsv == 0
    data = chat_like(4000, text=False)  # the compressor's context was reset: this still inflates
    client.send(*compressed_frames(BINARY, data))
    expect_echo(client, data, text=False)
    client.close_cleanly()


def test_the_raw_clients_deflate_is_rfc_7692s() -> None:
    """The suite's own compressor: section 7.2.3.1's example, "Hello" in one block."""
    assert deflate(b"Hello") == bytes.fromhex("f248cdc9c90700")
    assert zlib.decompressobj(-15).decompress(bytes.fromhex("f248cdc9c90700") + b"\x00\x00\xff\xff") == b"Hello"
