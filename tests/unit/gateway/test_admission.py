"""Admission policies as pure functions: origins, hosts, the session counter; and the policy that
asks them all, at a handshake and after a reload."""
import socket

import pytest

from ouistiti_gw.config import GatewayConfig
from ouistiti_gw.gateway.admission import (
    AdmissionPolicy,
    HostPolicy,
    OriginPolicy,
    SessionCounter,
    is_loopback,
    normalize_origin,
)
from ouistiti_gw.gateway.refusals import Refusal
from ouistiti_gw.reload.session_state import Admission


@pytest.mark.parametrize("origin, normalized", [
    ("http://Example.COM", "http://example.com"),
    ("https://example.com:443", "https://example.com"),
    ("http://example.com:8080", "http://example.com:8080"),
    ("http://[::1]:80", "http://[::1]"),
    ("null", None), ("", None), ("http://", None), ("http://x:99999", None),
])
def test_normalize_origin(origin, normalized):
    assert normalize_origin(origin) == normalized


@pytest.mark.parametrize("origin, host, permitted", [
    ("http://example.com", "example.com", True),
    ("http://example.com", "example.com:80", True),
    ("https://example.com", "example.com", True),  # TLS terminated in front: Host has no port
    ("http://example.com:8080", "example.com:8080", True),
    ("http://example.com:8080", "example.com", False),
    ("http://example.com.evil.org", "example.com", False),
    ("http://example.com", None, False),
])
def test_same_host_is_the_default(origin, host, permitted):
    assert OriginPolicy("").permits(origin, host) is permitted


def test_session_counter():
    counter = SessionCounter(2)
    assert counter.try_acquire() and counter.try_acquire() and not counter.try_acquire()
    counter.release()
    assert counter.try_acquire()
    unlimited = SessionCounter(0)
    assert all(unlimited.try_acquire() for _ in range(1000))


@pytest.mark.parametrize("allowed_hosts, host, local_address, permitted", [
    ("", "localhost:8080", "127.0.0.1", True),
    ("", "127.0.0.1", "127.0.0.1", True),
    ("", "[::1]:80", "::1", True),
    ("", "127.0.0.2:80", "127.0.0.1", True),  # any loopback IP: an IP is not rebound by DNS
    ("", "rebind.attacker.example:8080", "127.0.0.1", False),
    ("", "rebind.attacker.example", "::1", False),
    ("", "localhost.attacker.example", "127.0.0.1", False),
    ("", "gw.example.com", "192.0.2.10", True),  # not reached on a loopback address: any name
    ("", None, "127.0.0.1", False),
    ("", "localhost:x", "127.0.0.1", False),
    ("", "evil@localhost", "127.0.0.1", False),
    ("gw.example.com, *.example.org", "A.Example.ORG:443", "192.0.2.10", True),
    ("gw.example.com, *.example.org", "gw.example.com.evil", "192.0.2.10", False),
    ("gw.example.com", "localhost", "127.0.0.1", False),  # the list replaces the default
    ("*", "rebind.attacker.example", "127.0.0.1", True),
])
def test_host_policy(allowed_hosts, host, local_address, permitted):
    assert HostPolicy(allowed_hosts).permits(host, local_address) is permitted


def test_is_loopback_remembers_a_bounded_number_of_names():
    """A flood of handshakes with made-up Host names cannot grow what is remembered."""
    for i in range(1000):
        assert is_loopback(f"n{i}.example") is False
    assert is_loopback.cache_info().currsize <= 256
    assert is_loopback("127.0.0.1") and is_loopback("[::1]") and is_loopback("localhost")


def admission_policy(sessions: SessionCounter | None = None, **options) -> AdmissionPolicy:
    return AdmissionPolicy(GatewayConfig(docroot="/run/ws", **options), sessions or SessionCounter(0))


def test_a_handshake_is_judged_by_host_then_origin_then_the_limit():
    sessions = SessionCounter(1)
    policy = admission_policy(sessions)
    handshake = {"HTTP_HOST": "localhost:8080", "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http"}
    rebound = {**handshake, "HTTP_HOST": "rebind.attacker.example", "HTTP_ORIGIN": "http://evil.example"}
    assert policy.admit(rebound) == Refusal(
        403, "Host rebind.attacker.example is not one of this gateway's names (allowed_hosts)", "host")
    assert policy.admit({**handshake, "HTTP_ORIGIN": "http://evil.example"}) == Refusal(
        403, "origin http://evil.example not allowed", "origin")
    assert sessions.active == 0  # a refused handshake takes no place
    assert policy.admit({**handshake, "HTTP_ORIGIN": "http://localhost:8080"}) is None and sessions.active == 1
    assert policy.admit(handshake) == Refusal(503, "1 sessions already open", "limit")
    assert sessions.active == 1


@pytest.mark.parametrize("options, why", [
    ({}, None),
    ({"deny": "chat"}, "name not served (allow/deny)"),
    ({"deny": "internal/*"}, "name not served (allow/deny)"),  # the name its link led to
    ({"allow": "room"}, "name not served (allow/deny)"),  # the name the subprotocol fallback found
    ({"origins": "https://app.example"}, "origin http://localhost:8080 not allowed"),
    ({"allowed_hosts": "gw.example"}, "Host localhost:8080 is not one of this gateway's names (allowed_hosts)"),
])
def test_a_moved_session_is_judged_again_by_the_new_configuration(options, why):
    admitted = Admission("room", "chat", "internal/chat", "http://localhost:8080", "localhost:8080", "http")
    sessions = SessionCounter(1)
    assert sessions.try_acquire()  # full: a moved session is running already, never refused for the limit
    with socket.socket() as client_socket:
        client_socket.bind(("127.0.0.1", 0))
        assert admission_policy(sessions, **options).judge_again(admitted, client_socket) == why
