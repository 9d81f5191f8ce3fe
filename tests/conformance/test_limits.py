"""Large messages, many fragments, many round trips and the size limit (Autobahn groups 9 and 10).

Autobahn 9.x measures performance; here its cases are kept for what they prove (large
messages, text and binary, arrive whole and unchanged however they are cut: in one frame, in
many fragments, in many small TCP writes) and none asserts a duration. Sizes are a subset of
Autobahn's (64 KiB to 16 MiB) chosen to keep the suite quick.

Large messages go through the stream echo (a SEQPACKET packet cannot hold them): it answers in
reads of up to 64 KiB, each relayed as one message, so the echo is compared reassembled, and
for text every message must be text. The client writes from a thread while it reads the echo:
the gateway, the echo server and the client would otherwise all wait on full buffers.

Group 10 (10.1.1, "auto-fragmentation") is a message arriving in many small frames: 1300-byte
frames as Autobahn, and one-byte frames that split every multi-byte character.
"""
from __future__ import annotations

import socket
from typing import Callable

import pytest

from rawclient import (
    BINARY,
    CONTINUATION,
    STREAM_ECHO,
    TEXT,
    Close,
    Message,
    RawClient,
    binary_data,
    build_frame,
    fragments,
    play,
    utf8_text,
)

Connect = Callable[..., RawClient]
KiB, MiB = 1024, 1024 * 1024
#: The gateway's default ``max_message_size`` (README, "Options").
MAX_MESSAGE_SIZE = 16 * MiB
MESSAGE_TOO_BIG = 1009


def echo_large(client: RawClient, data: bytes, frames: list[bytes], *, text: bool, chop: int | None = None) -> None:
    writer = client.send_in_background(*frames, chop=chop)
    client.expect_stream(data, text=text)
    writer.join(10)
    assert not writer.is_alive()
    client.close_cleanly()


#: (opcode, message size, fragment size or None for a single frame): Autobahn 9.1-9.4.
LARGE = [
    (TEXT, 64 * KiB, None), (TEXT, 1 * MiB, None), (TEXT, 16 * MiB, None),
    (BINARY, 64 * KiB, None), (BINARY, 1 * MiB, None), (BINARY, 16 * MiB, None),
    (TEXT, 4 * MiB, 64), (TEXT, 4 * MiB, 4 * KiB), (TEXT, 4 * MiB, 1 * MiB),
    (BINARY, 4 * MiB, 256), (BINARY, 4 * MiB, 64 * KiB),
]


@pytest.mark.parametrize(("opcode", "size", "fragment"), LARGE,
                         ids=[f"{'text' if op == TEXT else 'binary'}-{size // KiB}KiB-"
                              f"{'one-frame' if frag is None else f'in-{frag}B-fragments'}"
                              for op, size, frag in LARGE])
def test_large_message(connect: Connect, opcode: int, size: int, fragment: int | None) -> None:
    """Autobahn 9.1.x, 9.2.x (one frame, up to the 16 MiB limit, 64-bit length form) and 9.3.x,
    9.4.x (4 MiB in fragments from 64 bytes, 65536 frames, to 1 MiB): the echo is the message."""
    data = utf8_text(size) if opcode == TEXT else binary_data(size)
    frames = [build_frame(opcode, data)] if fragment is None else fragments(opcode, data, fragment)
    echo_large(connect(STREAM_ECHO), data, frames, text=opcode == TEXT)


@pytest.mark.parametrize("opcode", [TEXT, BINARY], ids=["text", "binary"])
@pytest.mark.parametrize("chop", [64, 2047])
def test_large_message_in_small_writes(connect: Connect, opcode: int, chop: int) -> None:
    """Autobahn 9.5.x, 9.6.x: a 1 MiB frame written in TCP chops of 64 or 2047 bytes (so the
    unmasking restarts at every offset modulo 4) is reassembled whole."""
    data = utf8_text(MiB) if opcode == TEXT else binary_data(MiB)
    echo_large(connect(STREAM_ECHO), data, [build_frame(opcode, data)], text=opcode == TEXT, chop=chop)


@pytest.mark.parametrize("opcode", [TEXT, BINARY], ids=["text", "binary"])
@pytest.mark.parametrize("size", [16, 4 * KiB])
def test_many_round_trips(connect: Connect, opcode: int, size: int) -> None:
    """Autobahn 9.7.x, 9.8.x: 1000 messages, each echoed before the next is sent; none lost,
    none merged, none reordered (SEQPACKET echo: one message back per message)."""
    client = connect()
    body = utf8_text(size - 4) if opcode == TEXT else binary_data(size - 4)
    for i in range(1000):
        data = b"%04d" % i + body
        client.send(build_frame(opcode, data))
        client.expect_message(data, text=opcode == TEXT)
    client.close_cleanly()


@pytest.mark.parametrize("frames", [
    [build_frame(BINARY, b"", length=MAX_MESSAGE_SIZE + 1)],
    [build_frame(TEXT, b"", length=MAX_MESSAGE_SIZE + 1)],
    [build_frame(BINARY, b"0123456789", fin=False), build_frame(CONTINUATION, b"", length=MAX_MESSAGE_SIZE - 9)],
], ids=["binary-frame", "text-frame", "fragments"])
def test_message_over_the_limit_refused_before_its_payload(connect: Connect, frames: list[bytes]) -> None:
    """Section 7.4.1: 1009, "a message that is too big for it to process". The limit (16 MiB,
    README) is checked against the length fields, so only headers are sent here: a server that
    read the payload first would wait for bytes that never come and fail this test."""
    play(connect(), [(frames, [Close(MESSAGE_TOO_BIG)])])


def largest_packet() -> int:
    """The largest packet a SOCK_SEQPACKET socket of this machine sends: Linux refuses one over
    SO_SNDBUF - 32 bytes (EMSGSIZE). The gateway's UNIX sockets have the default send buffer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as probe:
        return probe.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) - 32


def test_message_that_fills_the_servers_packet_is_echoed(connect: Connect) -> None:
    """The SEQPACKET limit is the packet's, not a byte less: in one frame or in two."""
    data = binary_data(largest_packet())
    half = len(data) // 2
    play(connect(), [([build_frame(BINARY, data)], [Message(data, text=False)]),
                     (fragments(BINARY, data, half + 1), [Message(data, text=False)])])


def over_the_packet_in_one_frame(limit: int) -> list[bytes]:
    return [build_frame(BINARY, b"", length=limit + 1)]


def over_the_packet_at_the_third_fragment(limit: int) -> list[bytes]:
    half = limit // 2
    return [build_frame(BINARY, binary_data(half), fin=False),
            build_frame(CONTINUATION, binary_data(limit - half), fin=False),  # exactly the limit so far
            build_frame(CONTINUATION, b"", length=1)]


@pytest.mark.parametrize("frames", [over_the_packet_in_one_frame, over_the_packet_at_the_third_fragment],
                         ids=["one-frame", "third-fragment"])
def test_message_over_the_servers_packet_refused_before_its_payload(connect: Connect, frames) -> None:
    """A SOCK_SEQPACKET server takes a message as one packet: one that cannot fit is refused with
    1009 as soon as a length field says so, not held whole first. Only the header that passes
    the limit is sent: a gateway that waited for its payload would fail this test."""
    play(connect(), [(frames(largest_packet()), [Close(MESSAGE_TOO_BIG)])])


#: Autobahn 10.1.1 and smaller frames: (opcode, message size, frame payload size).
AUTO_FRAGMENTED = [(TEXT, 64 * KiB, 1300), (BINARY, 64 * KiB, 1300), (TEXT, 4 * KiB, 1), (BINARY, 4 * KiB, 1)]


@pytest.mark.parametrize(("opcode", "size", "fragment"), AUTO_FRAGMENTED,
                         ids=[f"{'text' if op == TEXT else 'binary'}-{size // KiB}KiB-in-{frag}B-frames"
                              for op, size, frag in AUTO_FRAGMENTED])
def test_auto_fragmented_message(connect: Connect, opcode: int, size: int, fragment: int) -> None:
    """Autobahn 10.1.1: a message in many small frames is one message (SEQPACKET echo: exactly one
    message back); one-byte text frames cut every multi-byte character, which stays valid."""
    data = utf8_text(size) if opcode == TEXT else binary_data(size)
    play(connect(), [(fragments(opcode, data, fragment), [Message(data, text=opcode == TEXT)])])
