"""The admin endpoint (``admin_path``): the live sessions listed, closed by id or by user.

Real parts: the gateway process in front of ``tests/wrapped_app.py`` (its ``authorize`` function
names the user of ``Authorization: Bearer NAME``), a UNIX echo server, websockets' clients.
"""
import json
import time
from contextlib import ExitStack, contextmanager
from urllib.parse import quote

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from support import wait_until
from support.addresses import free_port
from support.clients import http_get
from support.processes import TESTS, gateway_test_app, gunicorn

ADMIN = ("--set", "authorize=wrapped_app:authorize", "--set", "admin_path=/admin/sessions")


@contextmanager
def user_session(gateway, user: str, **options):
    """An echo session of ``user`` that has sent and received one message."""
    with connect(f"{gateway.url}/echo", additional_headers={"Authorization": f"Bearer {user}"}, **options) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
        yield ws


def admin(gateway, path: str = "", method: str = "GET", **headers) -> tuple[int, dict]:
    status, body = http_get(gateway.port, f"/admin/sessions{path}", method, headers=headers)
    return status, json.loads(body)


def listed(gateway) -> dict[int, dict]:
    status, answer = admin(gateway)
    assert status == 200
    return {session["id"]: session for session in answer["sessions"]}


def closed_by_the_gateway(ws) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=10)
    return closed.value.rcvd.code, closed.value.rcvd.reason


def still_echoes(ws) -> bool:
    ws.send("still")
    return ws.recv(timeout=10) == "still"


def test_the_list_and_a_close_by_id(docroot, unix_servers):
    unix_servers(f"{docroot}/echo")
    with gateway_test_app(docroot, *ADMIN) as gateway:
        before = time.time()
        with user_session(gateway, "alice") as alice, user_session(gateway, "carol", compression=None) as carol:
            sessions = wait_until(lambda: len(found := listed(gateway)) == 2 and found, what="two sessions")
            by_user = {session["user"]: session for session in sessions.values()}
            pid = admin(gateway)[1]["pid"]
            assert sorted(sessions) == sorted(f"{pid}-{number}" for number in (1, 2))  # PID-N, from 1
            for user, ws, compressed in (("alice", alice, True), ("carol", carol, False)):
                session = by_user[user]
                assert session["name"] == "echo"
                assert session["client"] == "127.0.0.1:%d" % ws.socket.getsockname()[1]
                assert before - 1 <= session["since"] <= time.time()
                assert (session["bytes_in"], session["bytes_out"]) == (5, 5)
                assert (session["compressed"], session["moved"]) == (compressed, False)
            status, answer = admin(gateway, f"/{by_user['alice']['id']}?code=4001&reason={quote('bye, alice')}",
                                   "DELETE")
            assert (status, answer) == (200, {"closed": 1, "code": 4001, "reason": "bye, alice"})
            assert closed_by_the_gateway(alice) == (4001, "bye, alice")
            assert still_echoes(carol)
            wait_until(lambda: list(listed(gateway)) == [by_user["carol"]["id"]], what="carol's session alone")
            assert "admin request for id" in gateway.log()


def test_a_close_by_user_and_by_post(docroot, unix_servers):
    unix_servers(f"{docroot}/echo")
    long_reason = "é" * 100  # 200 bytes: a close frame holds 123
    with gateway_test_app(docroot, *ADMIN) as gateway:
        with user_session(gateway, "alice") as first, user_session(gateway, "alice") as second, \
                user_session(gateway, "carol") as carol:
            wait_until(lambda: len(listed(gateway)) == 3, what="three sessions")
            status, answer = admin(gateway, f"?user=alice&reason={quote(long_reason)}", "DELETE")
            assert (status, answer) == (200, {"closed": 2, "code": 1008, "reason": "é" * 61})
            assert closed_by_the_gateway(first) == closed_by_the_gateway(second) == (1008, "é" * 61)
            assert still_echoes(carol)
            assert admin(gateway, "?user=nobody", "DELETE") == (200, {"closed": 0, "code": 1008,
                                                                     "reason": "closed by an administrator"})
            carol_id = wait_until(lambda: len(found := listed(gateway)) == 1 and next(iter(found)), what="carol's")
            assert admin(gateway, f"/{carol_id}/close?code=1001", "POST")[0] == 200
            assert closed_by_the_gateway(carol) == (1001, "closed by an administrator")


def test_bad_requests_are_answered_with_what_is_wrong(docroot, unix_servers):
    unix_servers(f"{docroot}/echo")
    with gateway_test_app(docroot, "--set", "admin_path=/admin/sessions") as gateway:  # no authorization
        with user_session(gateway, "alice") as alice:
            sessions = wait_until(lambda: listed(gateway) or None, what="the session")
            (alice_id,) = sessions
            assert sessions[alice_id]["user"] is None
            for code in ("1005", "1015", "3000", "999", "5000", "abc", ""):
                status, answer = admin(gateway, f"/{alice_id}?code={code}", "DELETE")
                assert status == 400 and "is not 1000-1003, 1007-1014 or 4000-4999" in answer["error"], code
            for path in ("/999999", "/alice", "/999999/close"):
                method = "POST" if path.endswith("/close") else "DELETE"
                status, answer = admin(gateway, path, method)
                assert status == 404 and "no live session with id" in answer["error"], path
            assert admin(gateway, f"/{alice_id}/x", "DELETE")[0] == 404
            assert admin(gateway, "", "DELETE")[0] == 400  # never "close everything" by omission
            assert admin(gateway, "", "POST")[0] == 405
            assert admin(gateway, f"/{alice_id}", "GET")[0] == 405
            assert admin(gateway, f"/{alice_id}?reason=%ff", "DELETE")[0] == 400  # not UTF-8
            assert still_echoes(alice)  # none of them closed it
        # the rest is the wrapped app's, as ever
        assert http_get(gateway.port, "/hello") == (200, b"app: /hello")
        assert http_get(gateway.port, "/admin/sessionsX") == (200, b"app: /admin/sessionsX")


def test_only_admin_allow_under_this_gateways_names(docroot, unix_servers):
    unix_servers(f"{docroot}/echo")
    with gateway_test_app(docroot, *ADMIN, "--set", "admin_allow=127.0.0.2/32") as gateway:
        with user_session(gateway, "alice") as alice:
            status, body = http_get(gateway.port, "/admin/sessions", source="127.0.0.1")
            assert status == 403 and b"alice" not in body
            assert http_get(gateway.port, "/admin/sessions?user=alice", "DELETE", source="127.0.0.1")[0] == 403
            assert "refused admin request from 127.0.0.1: not in admin_allow" in gateway.log()
            assert still_echoes(alice)
            status, body = http_get(gateway.port, "/admin/sessions", source="127.0.0.2")
            assert status == 200 and json.loads(body)["sessions"][0]["user"] == "alice"
            # an allowed address, under a name that is not this gateway's (DNS rebinding)
            status, body = http_get(gateway.port, "/admin/sessions", headers={"Host": "evil.example"},
                                    source="127.0.0.2")
            assert status == 403 and b"alice" not in body
            wait_until(lambda: "refused admin request from 127.0.0.2: Host" in gateway.log(), what="the line")


@pytest.mark.gunicorn
def test_under_gunicorn_every_workers_sessions(docroot, unix_servers):
    """``-w 2``: whichever worker a request reaches lists and closes the sessions of both."""
    unix_servers(f"{docroot}/echo")
    port = free_port()
    env = {"OUISTITI_GW_DOCROOT": docroot, "OUISTITI_GW_ADMIN_PATH": "/admin/sessions",
           "OUISTITI_GW_AUTHORIZE": "wrapped_app:authorize", "PYTHONPATH": str(TESTS)}
    with gunicorn("ouistiti_gw.worker.GatewayWorker", port, env, "-w", "2") as gateway:
        clients = []
        with ExitStack() as stack:
            while len({ws_id.split("-")[0] for ws_id in listed(gateway)}) < 2:  # until both workers have some
                assert len(clients) < 40, "every session went to one worker"
                clients.append(stack.enter_context(user_session(gateway, "alice" if len(clients) % 2 else "carol")))
            for _ in range(6):  # whichever worker answers lists them all
                status, answer = admin(gateway)
                assert status == 200 and len(answer["sessions"]) == len(clients)
                assert len(answer["workers"]) == 2 and answer["pid"] in answer["workers"]
            sessions = listed(gateway)
            by_worker = {}
            for ws_id, session in sessions.items():
                by_worker.setdefault(ws_id.split("-")[0], (ws_id, session))
            clients_by_port = {ws.socket.getsockname()[1]: ws for ws in clients}
            for ws_id, session in by_worker.values():  # one of each worker, whichever worker is asked
                assert admin(gateway, f"/{ws_id}?code=4002&reason=bye", "DELETE") == (
                    200, {"closed": 1, "code": 4002, "reason": "bye"})
                ws = clients_by_port[int(session["client"].rsplit(":", 1)[1])]
                assert closed_by_the_gateway(ws) == (4002, "bye")
                clients.remove(ws)
            carols = [ws for ws in clients if sessions_of(gateway, ws)["user"] == "carol"]
            status, answer = admin(gateway, "?user=carol", "DELETE")
            assert (status, answer["closed"]) == (200, len(carols))
            for ws in carols:
                assert closed_by_the_gateway(ws)[0] == 1008
                clients.remove(ws)
            assert all(still_echoes(ws) for ws in clients)
            assert admin(gateway, "/1-1", "DELETE")[0] == 404  # no such worker


def sessions_of(gateway, ws) -> dict:
    """The listed session of the client ``ws``."""
    port = ws.socket.getsockname()[1]
    return next(session for session in listed(gateway).values() if session["client"].endswith(f":{port}"))
