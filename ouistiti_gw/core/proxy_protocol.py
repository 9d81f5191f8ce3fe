"""HAProxy's PROXY protocol, versions 1 and 2: the encoder the gateway uses, the parser servers use.

Why: a piped UNIX connection comes from the gateway, so a server cannot see who the browser is.
With ``proxy_protocol = v1`` or ``v2`` the gateway writes a PROXY header as the very first bytes of
each new UNIX connection (its own packet on a ``SOCK_SEQPACKET`` socket), saying the client's
address and port and the gateway's, before any payload. Spec: haproxy.org ``proxy-protocol.txt``.

Version 2 also carries TLVs: ``PP2_TYPE_AUTHORITY`` (0x02, the ``Host`` header),
``PP2_TYPE_SSL`` (0x20, when the client came over wss://: ``client`` = ``PP2_CLIENT_SSL``,
``verify`` = 1, "no client certificate verified", with a ``PP2_SUBTYPE_SSL_VERSION`` sub-TLV when
the TLS version is known), and these custom types from the range the spec leaves to applications
(0xE0-0xEF), all UTF-8 text unless said otherwise:

======  ==========================  ==========================================================
type    name                        value
======  ==========================  ==========================================================
0xE0    :data:`PP2_TYPE_GW_PATH`    the request path (``SCRIPT_NAME + PATH_INFO``, decoded)
0xE1    :data:`PP2_TYPE_GW_QUERY`   the query string, as sent (still percent-encoded); absent if empty
0xE2    :data:`PP2_TYPE_GW_USER`    the user ``auth_request``/``authorize`` authenticated, else
                                    ``REMOTE_USER`` (an auth middleware in front); absent if none
0xE3    :data:`PP2_TYPE_GW_PROTOCOL` the WebSocket subprotocol chosen; absent if none
0xE4    :data:`PP2_TYPE_GW_GROUPS`  the authenticated user's groups, comma-separated; absent if none
0xE5    :data:`PP2_TYPE_GW_EXPIRES` when the user's authorization ends, Unix time in decimal ASCII
                                    digits; absent if the app said nothing
======  ==========================  ==========================================================

Pure: encoding and :func:`parse` are sans-IO (bytes in, header and length out). Reading a header
from a socket without consuming a byte past it is :func:`ouistiti_gw.green.unix.read_proxy_header`. A
malformed header raises :class:`ProxyProtocolError`.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from socket import AF_INET, AF_INET6
from typing import Iterable

from ..errors import GatewayError
from .addresses import Address, as_ipv6, pack_ip, unmap, unpack_ip

SIGNATURE_V1 = b"PROXY "
SIGNATURE_V2 = b"\r\n\r\n\x00\r\nQUIT\n"
#: Longest v1 line, CRLF included (spec section 2.1).
MAX_V1_LENGTH = 107
#: Shortest v1 line: ``PROXY UNKNOWN\r\n``. Nothing shorter may be read before knowing the version.
MIN_V1_LENGTH = 15
V2_FIXED_LENGTH = 16

# Registered v2 TLV types (spec section 2.2.x).
PP2_TYPE_ALPN = 0x01
PP2_TYPE_AUTHORITY = 0x02
PP2_TYPE_CRC32C = 0x03
PP2_TYPE_NOOP = 0x04
PP2_TYPE_UNIQUE_ID = 0x05
PP2_TYPE_SSL = 0x20
PP2_SUBTYPE_SSL_VERSION = 0x21
PP2_SUBTYPE_SSL_CN = 0x22
PP2_TYPE_NETNS = 0x30
PP2_CLIENT_SSL = 0x01
PP2_CLIENT_CERT_CONN = 0x02
PP2_CLIENT_CERT_SESS = 0x04

# ouistiti-gw's own TLVs, in the range reserved for custom use.
PP2_TYPE_GW_PATH = 0xE0
PP2_TYPE_GW_QUERY = 0xE1
PP2_TYPE_GW_USER = 0xE2
PP2_TYPE_GW_PROTOCOL = 0xE3
PP2_TYPE_GW_GROUPS = 0xE4
PP2_TYPE_GW_EXPIRES = 0xE5

_V2_VERSION = 0x20
_CMD_LOCAL, _CMD_PROXY = 0x0, 0x1
_AF_UNSPEC, _AF_INET, _AF_INET6, _AF_UNIX = 0x0, 0x1, 0x2, 0x3
_PROTO_STREAM = 0x1
_V2_FAMILIES: dict[int, int] = {AF_INET: _AF_INET, AF_INET6: _AF_INET6}
_ADDRESS_BLOCK = {_AF_UNSPEC: 0, _AF_INET: 12, _AF_INET6: 36, _AF_UNIX: 216}
_TLV_HEADER = struct.Struct("!BH")


class HeaderTooLong(GatewayError):
    """The v2 header would not fit its 16-bit length field (65 535 bytes after the fixed part),
    or one TLV its own. Only a hostile request gets near: the gateway refuses it (431) rather
    than send a header with a TLV cut short or left out, which would tell the server something
    the client did not say."""


class ProxyProtocolError(GatewayError):
    """Not a valid PROXY header (or not one at all where one was required)."""


class IncompleteHeader(ProxyProtocolError):
    """The bytes so far are the start of a header, not all of it."""


@dataclass(frozen=True)
class SSLInfo:
    """The value of a ``PP2_TYPE_SSL`` TLV."""

    client: int
    verify: int
    tlvs: dict[int, bytes] = field(default_factory=dict)

    @property
    def version(self) -> str | None:
        value = self.tlvs.get(PP2_SUBTYPE_SSL_VERSION)
        return value.decode("ascii", "replace") if value is not None else None


@dataclass(frozen=True)
class ProxyHeader:
    """One parsed header. ``source``/``destination`` are None when the sender gave no IP address
    (v1 ``UNKNOWN``, v2 ``LOCAL`` or a family other than IPv4/IPv6)."""

    version: int
    source: Address | None
    destination: Address | None
    tlvs: dict[int, bytes] = field(default_factory=dict)

    def text(self, kind: int) -> str | None:
        value = self.tlvs.get(kind)
        return value.decode("utf-8", "replace") if value is not None else None

    @property
    def authority(self) -> str | None:
        return self.text(PP2_TYPE_AUTHORITY)

    @property
    def path(self) -> str | None:
        return self.text(PP2_TYPE_GW_PATH)

    @property
    def query(self) -> str | None:
        return self.text(PP2_TYPE_GW_QUERY)

    @property
    def user(self) -> str | None:
        return self.text(PP2_TYPE_GW_USER)

    @property
    def protocol(self) -> str | None:
        return self.text(PP2_TYPE_GW_PROTOCOL)

    @property
    def groups(self) -> tuple[str, ...]:
        """The authenticated user's groups (empty: none, or no user)."""
        text = self.text(PP2_TYPE_GW_GROUPS)
        return tuple(group for group in text.split(",") if group) if text else ()

    @property
    def expires(self) -> int | None:
        """When the user's authorization ends (Unix time), if the gateway said."""
        text = self.text(PP2_TYPE_GW_EXPIRES)
        if text is None:
            return None
        if not (text.isascii() and text.isdigit()):
            raise ProxyProtocolError(f"PP2_TYPE_GW_EXPIRES is not a Unix time: {text[:20]!r}")
        return int(text)

    @property
    def ssl(self) -> SSLInfo | None:
        value = self.tlvs.get(PP2_TYPE_SSL)
        if value is None:
            return None
        if len(value) < 5:
            raise ProxyProtocolError("PP2_TYPE_SSL shorter than its 5 fixed bytes")
        client, verify = struct.unpack_from("!BI", value)
        return SSLInfo(client, verify, _parse_tlvs(value[5:]))


# -- encoding -----------------------------------------------------------------------------------

def _one_family(source: Address, destination: Address) -> tuple[int, Address, Address]:
    """Both addresses in one family (the spec has no mixed pairs): IPv4 maps into IPv6 if need be."""
    (src_host, src_port), (dst_host, dst_port) = source, destination
    src_host, dst_host = unmap(src_host), unmap(dst_host)
    src_family, _ = pack_ip(src_host)
    dst_family, _ = pack_ip(dst_host)
    if src_family != dst_family:
        src_host, dst_host, src_family = as_ipv6(src_host), as_ipv6(dst_host), AF_INET6
    for port in (src_port, dst_port):
        if not 0 <= port <= 0xFFFF:
            raise ValueError(f"port {port} out of range")
    return src_family, (src_host, src_port), (dst_host, dst_port)


def encode_v1(source: Address, destination: Address) -> bytes:
    """``PROXY TCP4|TCP6 SRC DST SPORT DPORT\\r\\n``."""
    family, (src_host, src_port), (dst_host, dst_port) = _one_family(source, destination)
    protocol = "TCP4" if family == AF_INET else "TCP6"
    return f"PROXY {protocol} {src_host} {dst_host} {src_port} {dst_port}\r\n".encode("ascii")


def encode_tlv(kind: int, value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise HeaderTooLong(f"TLV 0x{kind:02x} too long ({len(value)} bytes)")
    return _TLV_HEADER.pack(kind, len(value)) + value


def encode_ssl(version: str | None = None, client: int = PP2_CLIENT_SSL, verify: int = 1) -> bytes:
    """The value of a ``PP2_TYPE_SSL`` TLV; ``verify`` non-zero: no client certificate was verified."""
    value = struct.pack("!BI", client, verify)
    if version:
        value += encode_tlv(PP2_SUBTYPE_SSL_VERSION, version.encode("ascii"))
    return value


def encode_v2(source: Address, destination: Address, tlvs: Iterable[tuple[int, bytes]] = ()) -> bytes:
    """A v2 ``PROXY`` header over TCP (``STREAM``) with ``tlvs`` as ``(type, value)`` pairs."""
    family, (src_host, src_port), (dst_host, dst_port) = _one_family(source, destination)
    addresses = (pack_ip(src_host)[1] + pack_ip(dst_host)[1] + struct.pack("!HH", src_port, dst_port))
    body = addresses + b"".join(encode_tlv(kind, value) for kind, value in tlvs)
    if len(body) > 0xFFFF:
        raise HeaderTooLong(f"PROXY v2 header too long ({len(body)} bytes after the fixed part)")
    return (SIGNATURE_V2 + bytes([_V2_VERSION | _CMD_PROXY, _V2_FAMILIES[family] << 4 | _PROTO_STREAM])
            + struct.pack("!H", len(body)) + body)


# -- parsing ------------------------------------------------------------------------------------

def could_be_header(prefix: bytes) -> bool:
    """True if ``prefix`` (the first bytes of a connection, maybe only a few) may start a header."""
    return any(prefix[:len(signature)] == signature[:len(prefix)] for signature in (SIGNATURE_V1, SIGNATURE_V2))


def parse(data: bytes) -> tuple[ProxyHeader, int]:
    """The header at the start of ``data`` and its length; the rest of ``data`` is payload.

    Raises :class:`IncompleteHeader` when ``data`` is a header's beginning only, and
    :class:`ProxyProtocolError` when it is not a header or a malformed one.
    """
    data = bytes(data)
    if not could_be_header(data):
        raise ProxyProtocolError("no PROXY protocol signature")
    if data.startswith(SIGNATURE_V1):
        return _parse_v1(data)
    if len(data) < V2_FIXED_LENGTH:
        raise IncompleteHeader("PROXY v2 header: fixed part incomplete")
    return _parse_v2(data)


def _parse_v1(data: bytes) -> tuple[ProxyHeader, int]:
    end = data.find(b"\r\n", 0, MAX_V1_LENGTH)
    if end < 0:
        if len(data) >= MAX_V1_LENGTH or b"\n" in data[:MAX_V1_LENGTH]:
            raise ProxyProtocolError("PROXY v1 line without CRLF within 107 bytes")
        raise IncompleteHeader("PROXY v1 line incomplete")
    try:
        line = data[:end].decode("ascii")
    except UnicodeDecodeError:
        raise ProxyProtocolError("PROXY v1 line is not ASCII") from None
    fields = line.split(" ")
    if fields[1:2] == ["UNKNOWN"]:
        return ProxyHeader(1, None, None), end + 2
    if len(fields) != 6 or fields[1] not in ("TCP4", "TCP6"):
        raise ProxyProtocolError(f"malformed PROXY v1 line {line!r}")
    family = AF_INET if fields[1] == "TCP4" else AF_INET6
    source = _v1_address(family, fields[2], fields[4])
    destination = _v1_address(family, fields[3], fields[5])
    return ProxyHeader(1, source, destination), end + 2


def _v1_address(family: int, host: str, port: str) -> Address:
    try:
        parsed_family, packed = pack_ip(host)
    except ValueError:
        raise ProxyProtocolError(f"PROXY v1: {host!r} is not an IP address") from None
    if parsed_family != family or "%" in host:
        raise ProxyProtocolError(f"PROXY v1: {host!r} does not match the protocol")
    if not port.isdigit() or not port.isascii() or int(port) > 0xFFFF or (port != "0" and port[0] == "0"):
        raise ProxyProtocolError(f"PROXY v1: bad port {port!r}")
    return unmap(unpack_ip(family, packed)), int(port)


def _parse_v2(data: bytes) -> tuple[ProxyHeader, int]:
    if data[:12] != SIGNATURE_V2:
        raise ProxyProtocolError("no PROXY protocol signature")
    version_command, family_protocol, length = struct.unpack_from("!BBH", data, 12)
    if version_command & 0xF0 != _V2_VERSION:
        raise ProxyProtocolError(f"PROXY v2: unsupported version {version_command >> 4}")
    command, family = version_command & 0x0F, family_protocol >> 4
    if command not in (_CMD_LOCAL, _CMD_PROXY):
        raise ProxyProtocolError(f"PROXY v2: unknown command {command}")
    if family not in _ADDRESS_BLOCK:
        raise ProxyProtocolError(f"PROXY v2: unknown address family {family}")
    total = V2_FIXED_LENGTH + length
    if len(data) < total:
        raise IncompleteHeader("PROXY v2 header incomplete")
    body = data[V2_FIXED_LENGTH:total]
    if command == _CMD_LOCAL:  # a health check from the proxy itself: the addresses mean nothing
        return ProxyHeader(2, None, None, _parse_tlvs(body[_ADDRESS_BLOCK[family]:])), total
    block = _ADDRESS_BLOCK[family]
    if len(body) < block:
        raise ProxyProtocolError(f"PROXY v2: {len(body)} bytes cannot hold the addresses ({block})")
    if family == _AF_UNSPEC:
        return ProxyHeader(2, None, None), total  # the spec: ignore the rest entirely
    source = destination = None
    if family in (_AF_INET, _AF_INET6):
        size = 4 if family == _AF_INET else 16
        stdlib_family = AF_INET if family == _AF_INET else AF_INET6
        src_port, dst_port = struct.unpack_from("!HH", body, 2 * size)
        source = (unmap(unpack_ip(stdlib_family, body[:size])), src_port)
        destination = (unmap(unpack_ip(stdlib_family, body[size:2 * size])), dst_port)
    return ProxyHeader(2, source, destination, _parse_tlvs(body[block:])), total


def _parse_tlvs(data: bytes) -> dict[int, bytes]:
    tlvs: dict[int, bytes] = {}
    offset = 0
    while offset < len(data):
        if len(data) - offset < _TLV_HEADER.size:
            raise ProxyProtocolError("PROXY v2: truncated TLV header")
        kind, length = _TLV_HEADER.unpack_from(data, offset)
        offset += _TLV_HEADER.size
        if offset + length > len(data):
            raise ProxyProtocolError(f"PROXY v2: TLV 0x{kind:02x} runs past the header")
        tlvs[kind] = data[offset:offset + length]
        offset += length
    return tlvs
