"""The schedule of ``gateway/recheck.py``, run for real under gevent: the decision is
:class:`~ouistiti_gw.gateway.authorization.Authorization` asking WSGI apps of the test itself
(in-process, as the gateway does), and what the schedule closes records its closes (the
:class:`~ouistiti_gw.gateway.recheck.Closable` a session is)."""
import gc
import time
import weakref
from http.cookies import SimpleCookie

import gevent
import pytest
from gevent.event import Event

from ouistiti_gw.config import GatewayConfig
from ouistiti_gw.gateway.authorization import Authorization, Authorized, User, login_of
from ouistiti_gw.gateway.metrics import Metrics
from ouistiti_gw.gateway.names import NameRules
from ouistiti_gw.gateway.recheck import CONCURRENCY, Rechecks


class Closed:
    """What a recheck closes: it records the close."""

    def __init__(self, name: str = "echo") -> None:
        self.name, self.client, self.closes = name, "192.0.2.7:5000", []
        self.authorized: Authorized | None = None

    def close(self, code: int, reason: str) -> None:
        self.closes.append((code, reason))


class Logins:
    """A WSGI app answering ``/auth/check`` for the cookie ``user=NAME``; while ``held`` is clear,
    each check waits (the gevent way), and it records how many run at once."""

    def __init__(self) -> None:
        self.running = self.most = 0
        self.checked: list[str] = []
        self.refused: set[str] = set()
        self.held = Event()
        self.held.set()

    def __call__(self, environ, start_response):
        user = SimpleCookie(environ["HTTP_COOKIE"])["user"].value
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            self.held.wait()
        finally:
            self.running -= 1
        self.checked.append(user)
        if user in self.refused:
            start_response("403 Forbidden", [])
        else:
            start_response("204 No Content", [("X-Auth-User", user)])
        return []


def authorization(app) -> Authorization:
    return Authorization(GatewayConfig(docroot="/tmp", auth_request="/auth/check"), app, NameRules())


def let_in(authorization: Authorization, user: str) -> Authorized:
    decided = authorization.decide({"REQUEST_METHOD": "GET", "PATH_INFO": "/echo", "HTTP_COOKIE": f"user={user}",
                                    "wsgi.url_scheme": "http"}, "echo")
    assert isinstance(decided, Authorized)
    return decided


def wait_for(condition, seconds: float = 5) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not within the time"
        gevent.sleep(0.01)


def test_each_session_gets_its_own_phase_evenly_spread_over_the_period():
    rechecks = Rechecks(authorization(Logins()), period=60)
    phases = [rechecks.phase() for _ in range(100)]
    assert len(set(phases)) == 100 and all(0 < phase <= 60 for phase in phases)
    edges = sorted(phases) + [60 + min(phases)]
    assert max(b - a for a, b in zip(edges, edges[1:])) < 60 * 3 / 100  # no gap over three even shares


def test_rechecks_run_at_most_concurrency_at_once_and_every_session_gets_its_turn():
    logins = Logins()
    auth = authorization(logins)
    rechecks = Rechecks(auth, period=0.05)
    sessions = {f"u{i}": Closed() for i in range(3 * CONCURRENCY)}
    let_in_as = {user: let_in(auth, user) for user in sessions}
    logins.checked.clear()
    logins.held.clear()
    watches = [rechecks.watch(session, let_in_as[user]) for user, session in sessions.items()]
    wait_for(lambda: logins.running == CONCURRENCY)
    gevent.sleep(0.2)  # every session is due by now: the others wait their turn
    assert logins.running == CONCURRENCY
    logins.held.set()
    wait_for(lambda: set(logins.checked) == set(sessions))
    for watch in watches:
        rechecks.unwatch(watch)
    assert logins.most == CONCURRENCY
    assert all(session.closes == [] for session in sessions.values())


def test_a_refusal_closes_that_session_with_1008_and_no_other():
    logins = Logins()
    auth = authorization(logins)
    rechecks = Rechecks(auth, period=0.05)
    alice, bob = Closed(), Closed()
    watches = [rechecks.watch(alice, let_in(auth, "alice")), rechecks.watch(bob, let_in(auth, "bob"))]
    logins.refused.add("bob")
    wait_for(lambda: bob.closes)
    wait_for(lambda: logins.checked.count("alice") >= 4)
    assert (alice.closes, bob.closes) == ([], [(1008, "authorization revoked")])
    for watch in watches:
        rechecks.unwatch(watch)


def test_another_user_in_the_answer_is_a_refusal():
    logins = Logins()
    auth = authorization(logins)
    session = Closed()
    let_in_as_bob = let_in(auth, "bob")
    rechecks = Rechecks(auth, period=0.05)
    watch = rechecks.watch(session, Authorized(let_in(auth, "alice").user, let_in_as_bob.rules,
                                               let_in_as_bob.credentials))
    wait_for(lambda: session.closes)
    rechecks.unwatch(watch)
    assert session.closes == [(1008, "authorization revoked")]


def test_the_session_keeps_the_latest_answers_user_for_a_reload_to_carry():
    """An expiry a recheck moved is the one the session's login carries, not the upgrade's."""
    logins = Logins()
    auth = authorization(logins)
    session = Closed()
    allowed = let_in(auth, "alice")
    rechecks = Rechecks(auth, period=0.05)
    watch = rechecks.watch(session, Authorized(User("alice", ("old",), int(time.time()) + 3600), allowed.rules,
                                               allowed.credentials))
    wait_for(lambda: session.authorized is not None)
    rechecks.unwatch(watch)
    assert session.authorized.user == User("alice") and session.authorized.credentials is allowed.credentials
    assert login_of(session.authorized).expires is None and session.closes == []


def failed(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("ouistiti_gw_auth_rechecks_total", {"result": "failed"}) or 0


@pytest.mark.parametrize("close_on_failure, closes", [(False, []), (True, [(1011, "authorization check failed")])])
def test_a_check_past_the_timeout_failed_and_the_policy_says_what_follows(close_on_failure, closes):
    logins = Logins()
    auth = authorization(logins)
    session = Closed()
    allowed = let_in(auth, "alice")
    logins.held.clear()  # no answer from now on
    metrics = Metrics()
    rechecks = Rechecks(auth, period=0.05, close_on_failure=close_on_failure, metrics=metrics, timeout=0.05)
    watch = rechecks.watch(session, allowed)
    wait_for(lambda: failed(metrics) >= (1 if close_on_failure else 3))
    rechecks.unwatch(watch)
    assert session.closes == closes
    assert failed(metrics) == 1 or not close_on_failure  # a closed session is not asked again


def test_an_expiry_closes_the_session_at_that_time_without_rechecks():
    logins = Logins()
    auth = authorization(logins)
    session = Closed()
    allowed = let_in(auth, "alice")
    expires = int(time.time()) + 1
    rechecks = Rechecks(auth, period=0)
    watch = rechecks.watch(session, Authorized(User("alice", (), expires), allowed.rules,
                                               allowed.credentials))
    wait_for(lambda: session.closes, seconds=3)
    assert time.time() >= expires - 0.05
    assert session.closes == [(1008, "authorization expired")]
    assert logins.checked == ["alice"]  # the upgrade's only
    rechecks.unwatch(watch)


def test_an_ended_session_is_not_held_until_its_far_expiry():
    auth = authorization(Logins())
    rechecks = Rechecks(auth, period=3600)
    allowed = let_in(auth, "alice")
    sessions = [Closed() for _ in range(10)]
    left = [weakref.ref(session) for session in sessions]
    watches = [rechecks.watch(session, Authorized(User("alice", (), 4102444800), allowed.rules, allowed.credentials))
               for session in sessions]
    for watch in watches:
        rechecks.unwatch(watch)
    del sessions, watches, watch
    gc.collect()
    assert [ref() for ref in left] == [None] * 10
