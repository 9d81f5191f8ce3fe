"""Admission policies as pure functions: origins, hosts, the session counter."""
import pytest

from ouistiti_gw.gateway.admission import HostPolicy, OriginPolicy, SessionCounter, normalize_origin


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
