"""Admission policies as pure functions: origins, the session counter, the token bucket."""
import pytest

from ouistiti_gw.policy import HostPolicy, OriginPolicy, SessionCounter, TokenBucket, normalize_origin


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


def test_token_bucket_allows_rate_with_one_second_of_burst():
    now = [0.0]
    bucket = TokenBucket(10, clock=lambda: now[0])
    assert [bucket.take() for _ in range(11)] == [True] * 10 + [False]
    now[0] += 0.5  # half a second refills five tokens
    assert [bucket.take() for _ in range(6)] == [True] * 5 + [False]


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


def test_token_bucket_takes_events_in_batches():
    """The frame budget pays for frames in batches: one clock reading per batch, same rate."""
    now = [0.0]
    bucket = TokenBucket(1000, clock=lambda: now[0])
    assert [bucket.take(256) for _ in range(4)] == [True] * 3 + [False]  # 768 of 1000, then 232 < 256
    assert bucket.tokens == 232  # a refused batch spends nothing
    now[0] += 0.024  # 24 more tokens
    assert bucket.take(256)
    assert not bucket.take(1)


def test_token_bucket_charges_what_was_used_into_debt_and_says_how_long_to_wait():
    """The byte budget pays in arrears: bytes already received are charged whatever is left."""
    now = [0.0]
    bucket = TokenBucket(1000, clock=lambda: now[0], capacity=2000)
    assert bucket.charge(1500) == 0.0
    assert bucket.charge(1000) == 0.5  # 500 bytes of debt at 1000 a second
    now[0] += 0.5
    assert bucket.charge(0) == 0.0
    now[0] += 10
    assert bucket.tokens == 0 and bucket.charge(0) == 0.0 and bucket.tokens == 2000  # refills up to the burst
