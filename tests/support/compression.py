"""permessage-deflate payloads built with zlib alone (RFC 7692), to feed the gateway and its core:
deflated messages, their inflation, and a deflate bomb."""
from __future__ import annotations

import zlib


def deflate(data: bytes, wbits: int = 15) -> bytes:
    """``data`` as a permessage-deflate payload (RFC 7692 section 7.2.1): raw deflate, sync flush,
    without the final ``00 00 ff ff``."""
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -wbits)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def inflate(payload: bytes, wbits: int = 15) -> bytes:
    """A permessage-deflate payload inflated with a fresh window of ``wbits``."""
    return zlib.decompressobj(-wbits).decompress(payload + b"\x00\x00\xff\xff")


#: Deflate's best ratio: a match of 258 bytes costs 2 bits, so each zero byte inside a block of
#: such matches is 1032 bytes inflated.
BOMB_RATIO = 1032


def deflate_bomb(size: int) -> bytes:
    """A permessage-deflate payload of about ``size`` bytes that inflates to about
    ``size * 1032`` zero bytes (1 MiB -> 1 GiB), built without deflating that much: the zero
    bytes in the middle of deflated zeros are matches of 258 zeros at distance 1, so more of
    them inflate to more zeros (:func:`inflated_size_of_bomb` says exactly how many)."""
    head = deflate(bytes(1 << 20))
    start = head.index(bytes(16))  # where the run of 2-bit matches begins
    return head[:start] + bytes(size) + head[start:]


def inflated_size_of_bomb(size: int) -> int:
    return (1 << 20) + BOMB_RATIO * size
