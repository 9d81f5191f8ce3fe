"""PROXY protocol codec (ouistiti_gw.core.proxy_protocol) and client identity
(ouistiti_gw.gateway.identity), without a network.

The encoder is checked against a parser no one here wrote (the ``proxy-protocol`` package), the
parser against the spec's own examples and malformed headers, and ``read_header`` against the one
rule that matters on a socket: it never takes a byte of the payload behind the header.
"""
import ipaddress
import socket
import struct
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from proxyprotocol.v1 import ProxyProtocolV1
from proxyprotocol.v2 import ProxyProtocolV2

from ouistiti_gw.backend import read_proxy_header as read_header
from ouistiti_gw.config import ConfigurationError
from ouistiti_gw.core import proxy_protocol as proxy
from ouistiti_gw.core.proxy_protocol import ProxyHeader, ProxyProtocolError, encode_v1, encode_v2, parse
from ouistiti_gw.gateway.identity import TrustedProxies, proxy_header

ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).filter(lambda ip: ip.ipv4_mapped is None).map(str)
ports = st.integers(0, 65535)
tlvs = st.lists(st.tuples(st.integers(0xE0, 0xEF), st.binary(max_size=300)), max_size=5, unique_by=lambda t: t[0])


@settings(max_examples=300, deadline=None)
@given(hosts=st.one_of(st.tuples(ipv4, ipv4), st.tuples(ipv6, ipv6)), src_port=ports, dst_port=ports, tlvs=tlvs,
       payload=st.binary(max_size=50))
def test_round_trip_and_a_foreign_parser_agrees(hosts, src_port, dst_port, tlvs, payload):
    source, destination = (hosts[0], src_port), (hosts[1], dst_port)
    for raw, version in ((encode_v1(source, destination), 1), (encode_v2(source, destination, tlvs), 2)):
        header, used = parse(raw + payload)
        assert used == len(raw)
        assert header == ProxyHeader(version, source, destination, dict(tlvs) if version == 2 else {})
        foreign = (ProxyProtocolV1() if version == 1 else ProxyProtocolV2()).unpack(raw)
        assert (str(foreign.source[0]), foreign.source[1]) == source
        assert (str(foreign.dest[0]), foreign.dest[1]) == destination
        if version == 2:
            assert dict(foreign.tlv) == dict(tlvs)


def test_spec_examples_parse():
    assert parse(b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n")[0].source == ("255.255.255.255", 65535)
    header, used = parse(b"PROXY TCP6 ffff:f::ffff ::1 65535 1\r\nGET /")
    assert header.source == ("ffff:f::ffff", 65535) and header.destination == ("::1", 1) and used == 37
    assert parse(b"PROXY UNKNOWN\r\n") == (ProxyHeader(1, None, None), 15)
    local = proxy.SIGNATURE_V2 + bytes([0x20, 0x00]) + struct.pack("!H", 0)
    assert parse(local) == (ProxyHeader(2, None, None), 16)


def test_mixed_families_map_ipv4_into_ipv6():
    assert encode_v1(("10.0.0.1", 1), ("::1", 2)) == b"PROXY TCP6 ::ffff:10.0.0.1 ::1 1 2\r\n"
    header, _ = parse(encode_v2(("10.0.0.1", 1), ("::1", 2)))
    assert header.source == ("10.0.0.1", 1)  # mapped addresses read back as IPv4


@pytest.mark.parametrize("raw", [
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",                          # LF without CR
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",                          # a field missing
    b"PROXY TCP4 ::1 ::1 1 2\r\n",                                 # wrong family
    b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",                     # port out of range
    b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",                        # leading zero
    b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",                        # double space
    b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 " + b"1" * 120 + b"\r\n",                         # longer than 107 bytes
    proxy.SIGNATURE_V2 + bytes([0x31, 0x11]) + struct.pack("!H", 12) + bytes(12),  # version 3
    proxy.SIGNATURE_V2 + bytes([0x22, 0x11]) + struct.pack("!H", 12) + bytes(12),  # command 2
    proxy.SIGNATURE_V2 + bytes([0x21, 0x41]) + struct.pack("!H", 0),              # family 4
    proxy.SIGNATURE_V2 + bytes([0x21, 0x11]) + struct.pack("!H", 8) + bytes(8),    # block too short
    proxy.SIGNATURE_V2 + bytes([0x21, 0x11]) + struct.pack("!H", 15) + bytes(12) + b"\xe0\x00\x09",  # TLV overrun
    b"GET / HTTP/1.1\r\n",
])
def test_malformed_headers_raise(raw):
    with pytest.raises(ProxyProtocolError) as raised:
        parse(raw)
    assert not isinstance(raised.value, proxy.IncompleteHeader)


@pytest.mark.parametrize("raw", [b"PROXY TCP4 1.2.", b"\r\n\r\n\x00", encode_v2(("1.2.3.4", 1), ("1.2.3.4", 2))[:-1]])
def test_incomplete_headers_say_so(raw):
    with pytest.raises(proxy.IncompleteHeader):
        parse(raw)


def test_ssl_tlv_layout():
    header, _ = parse(encode_v2(("1.2.3.4", 1), ("5.6.7.8", 2), [(proxy.PP2_TYPE_SSL, proxy.encode_ssl("TLSv1.3"))]))
    assert header.tlvs[proxy.PP2_TYPE_SSL][:5] == b"\x01\x00\x00\x00\x01"
    assert header.ssl.client == proxy.PP2_CLIENT_SSL and header.ssl.verify == 1 and header.ssl.version == "TLSv1.3"
    foreign = ProxyProtocolV2().unpack(encode_v2(("1.2.3.4", 1), ("5.6.7.8", 2),
                                                 [(proxy.PP2_TYPE_SSL, proxy.encode_ssl("TLSv1.3"))]))
    assert foreign.tlv.ssl.has_ssl and foreign.tlv.ssl.version == "TLSv1.3"


# -- read_header on sockets -----------------------------------------------------------------------

def test_stream_header_then_payload_untouched():
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right:
        left.sendall(encode_v1(("192.0.2.7", 5000), ("127.0.0.1", 80)) + b"payload")
        assert read_header(right).source == ("192.0.2.7", 5000)
        assert right.recv(100) == b"payload"


def test_stream_header_in_pieces_is_read_exactly():
    raw = encode_v2(("192.0.2.7", 5000), ("127.0.0.1", 80), [(proxy.PP2_TYPE_GW_PATH, b"/x" * 3000)])
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)

    def dribble():
        for offset in range(0, len(raw), 700):
            left.sendall(raw[offset:offset + 700])
            threading.Event().wait(0.01)
        left.sendall(b"after")

    with left, right:
        writer = threading.Thread(target=dribble)
        writer.start()
        assert read_header(right).path == "/x" * 3000
        writer.join()
        assert right.recv(100) == b"after"


def test_seqpacket_header_is_its_own_packet():
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with left, right:
        left.send(encode_v1(("192.0.2.7", 5000), ("127.0.0.1", 80)))
        left.send(b"first message")
        assert read_header(right).source == ("192.0.2.7", 5000)
        assert right.recv(100) == b"first message"
        left.send(encode_v1(("192.0.2.7", 5000), ("127.0.0.1", 80)) + b"glued")
        with pytest.raises(ProxyProtocolError, match="other data"):
            read_header(right)


@pytest.mark.parametrize("sock_type", [socket.SOCK_STREAM, socket.SOCK_SEQPACKET])
def test_no_header_consumes_nothing(sock_type):
    left, right = socket.socketpair(socket.AF_UNIX, sock_type)
    with left, right:
        left.send(b"hello")
        with pytest.raises(ProxyProtocolError, match="does not start"):
            read_header(right)
        assert right.recv(100) == b"hello"


def test_header_cut_short_by_the_peer():
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with right:
        left.sendall(b"PROXY TCP4 1.2.3.4")
        left.close()
        with pytest.raises(ProxyProtocolError):
            read_header(right, timeout=2)


# -- identity ---------------------------------------------------------------------------------------

def environ(peer="127.0.0.1", **headers):
    return {"REMOTE_ADDR": peer, "REMOTE_PORT": "40000", "wsgi.url_scheme": "http",
            **{"HTTP_" + key.upper(): value for key, value in headers.items()}}


@pytest.mark.parametrize("trusted, env, expected", [
    ("", environ(x_forwarded_for="203.0.113.9"), ("127.0.0.1", 40000)),                  # trust nobody
    ("10.0.0.0/8", environ(x_forwarded_for="203.0.113.9"), ("127.0.0.1", 40000)),        # peer not trusted
    ("127.0.0.1", environ(x_forwarded_for="203.0.113.9"), ("203.0.113.9", 0)),
    ("127.0.0.1", environ(x_forwarded_for="6.6.6.6, 203.0.113.9"), ("203.0.113.9", 0)),  # spoofed one on the left
    ("127.0.0.1, 10.0.0.0/8", environ(x_forwarded_for="6.6.6.6, 203.0.113.9, 10.1.1.1"), ("203.0.113.9", 0)),
    ("127.0.0.1, 10.0.0.0/8", environ(x_forwarded_for="10.2.2.2, 10.1.1.1"), ("10.2.2.2", 0)),  # all trusted
    ("127.0.0.1", environ(forwarded='for="[2001:db8::17]:4711";proto=https', x_forwarded_for="1.1.1.1"),
     ("2001:db8::17", 4711)),                                                              # Forwarded wins
    ("127.0.0.1", environ(forwarded='for=192.0.2.60;proto=http, for="198.51.100.17:80"'), ("198.51.100.17", 80)),
    ("127.0.0.1", environ(forwarded="for=unknown"), ("127.0.0.1", 40000)),                 # not an address
    ("127.0.0.1", environ(), ("127.0.0.1", 40000)),                                        # no header at all
    ("::1", environ(peer="::1", x_forwarded_for="[2001:db8::1]:80"), ("2001:db8::1", 80)),
])
def test_client_behind_trusted_proxies(trusted, env, expected):
    assert TrustedProxies(trusted).client(env).address == expected


def test_scheme_from_a_trusted_proxy_only():
    env = environ(forwarded='for=192.0.2.1;proto=https')
    assert TrustedProxies("127.0.0.1").client(env).secure
    assert not TrustedProxies("").client(env).secure
    assert TrustedProxies("127.0.0.1").client(environ(x_forwarded_for="192.0.2.1", x_forwarded_proto="https")).secure


def test_bad_trusted_proxies_setting():
    with pytest.raises(ConfigurationError, match="^trusted_proxies = .not-an-ip. is not an IP address"):
        TrustedProxies("127.0.0.1, not-an-ip")


def test_header_from_a_request_carries_every_tlv():
    env = dict(environ(host="gw.example:8443"), SERVER_NAME="127.0.0.1", SERVER_PORT="8080",
               PATH_INFO="/chat/caf\xc3\xa9", QUERY_STRING="room=1&x=%20", REMOTE_USER="alice",
               **{"wsgi.url_scheme": "https"})
    client = TrustedProxies("").client(env)
    header, _ = parse(proxy_header("v2", env, client, "chat"))
    assert header.source == ("127.0.0.1", 40000) and header.destination == ("127.0.0.1", 8080)
    assert (header.authority, header.path, header.query, header.user, header.protocol) == (
        "gw.example:8443", "/chat/café", "room=1&x=%20", "alice", "chat")
    assert header.ssl.client & proxy.PP2_CLIENT_SSL
    assert parse(proxy_header("v1", env, client, None))[0] == ProxyHeader(1, ("127.0.0.1", 40000), ("127.0.0.1", 8080))
    assert ipaddress.ip_address(header.destination[0])


def test_settings_reach_the_middleware():
    from ouistiti_gw.servers.paste import make_app

    app = make_app({}, docroot="/tmp", proxy_protocol="v2", trusted_proxies="10.0.0.0/8")
    assert app.config.proxy_protocol == "v2" and app.identity.trusted_proxies.trusts("10.1.2.3")
    with pytest.raises(ConfigurationError, match="proxy_protocol"):
        make_app({}, docroot="/tmp", proxy_protocol="v3")
