"""The core's rate limiter (ouistiti_gw.core.ratelimit): message, frame and byte budgets of one connection."""
from ouistiti_gw.core.ratelimit import TokenBucket


def test_token_bucket_allows_rate_with_one_second_of_burst():
    now = [0.0]
    bucket = TokenBucket(10, clock=lambda: now[0])
    assert [bucket.take() for _ in range(11)] == [True] * 10 + [False]
    now[0] += 0.5  # half a second refills five tokens
    assert [bucket.take() for _ in range(6)] == [True] * 5 + [False]


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


def test_token_bucket_resumes_another_ones_state_within_its_own_capacity():
    """A session moved by a reload keeps its budget's debt and time; a new, smaller rate caps it."""
    now = [10.0]
    bucket = TokenBucket(100, clock=lambda: now[0])
    bucket.resume(-50, 9.0)
    assert (bucket.tokens, bucket.updated) == (-50, 9.0)
    assert bucket.take(1) and bucket.tokens == 49  # a second since 9.0 refilled 100: -50 + 100, one taken
    bucket.resume(5000, 10.0)
    assert bucket.tokens == 100
