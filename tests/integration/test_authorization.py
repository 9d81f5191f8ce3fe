"""Who may connect: the wrapped app authorizes each WebSocket, and the UNIX server learns the user.

Real parts: the gateway process in front of ``tests/wrapped_app.py`` (its cookie login and
``/auth/check``, its ``authorize`` function) or of the how-to's ``auth_app.py`` through
``auth.ini``, or ``ouistiti-gw serve`` reloaded by SIGHUP in front of an app whose logins are
files (every worker reads them), UNIX servers that read the PROXY header, websockets' clients
and handshakes sent byte for byte.
"""
import json
import os
import shutil
import signal
import socket
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from support import BIN, ROOT, wait_until
from support.addresses import free_port
from support.clients import close_of, handshake_request, handshake_status, http_get, log_in, raw_request, scrape
from support.processes import ServerProcess, gateway_test_app, only_child
from support.unix_servers import proxied_echo_handler

AUTH = ("--set", "auth_request=/auth/check", "--set", "proxy_protocol=v2")
EXAMPLES = ROOT / "docs" / "examples" / "howto"


def accepted(server) -> int:
    """How many connections a UNIX server with :func:`proxied_echo_handler` took."""
    return len(vars(server).get("headers", []))


def closed_by_the_gateway(ws, seconds: float = 15) -> tuple[int, str, float]:
    """The close code and reason the gateway ended ``ws`` with, and when (Unix time) it came."""
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=seconds)
    return closed.value.rcvd.code, closed.value.rcvd.reason, time.time()


def rechecks(port: int, result: str) -> float:
    """How many rechecks had ``result`` (the metrics' count)."""
    return scrape(port).get(("ouistiti_gw_auth_rechecks_total", (("result", result),)), 0)


def test_the_upgrade_requests_headers_reach_auth_check_and_the_user_reaches_the_server(docroot, unix_servers):
    server = unix_servers(f"{docroot}/echo", proxied_echo_handler)
    with gateway_test_app(docroot, *AUTH) as gateway:
        cookie = log_in(gateway.port, "user=alice&groups=staff,admins&expires=4102444800")
        headers = {"Cookie": cookie, "X-Original-URI": "/admin", "Authorization": "Bearer t"}
        with connect(f"{gateway.url}/echo?room=1", additional_headers=headers) as ws:
            ws.send("hi")
            assert ws.recv() == "hi"
        header = server.headers[0]
        assert (header.user, header.groups, header.expires) == ("alice", ("staff", "admins"), 4102444800)
        status, body = http_get(gateway.port, "/auth/seen")
        seen = json.loads(body)
    assert (seen["method"], seen["path"], seen["query"], seen["body"]) == ("GET", "/auth/check", "", "")
    sent = seen["headers"]
    assert sent["HTTP_COOKIE"] == cookie and sent["HTTP_AUTHORIZATION"] == "Bearer t"
    assert (sent["HTTP_X_ORIGINAL_URI"], sent["HTTP_X_ORIGINAL_METHOD"]) == ("/echo?room=1", "GET")
    assert not {"HTTP_UPGRADE", "HTTP_CONNECTION", "HTTP_SEC_WEBSOCKET_KEY"} & set(sent)
    assert seen["keys"] == []  # no key of the server's: the app cannot reach the connection


def test_without_a_login_the_apps_401_is_the_answer_and_no_unix_connection_is_made(docroot, unix_servers):
    server = unix_servers(f"{docroot}/echo", proxied_echo_handler)
    with gateway_test_app(docroot, *AUTH) as gateway:
        status, headers, body = handshake_status(gateway.port, "/echo")
        assert (status, headers["www-authenticate"], body) == (401, 'Cookie realm="tests"', b"log in first\n")
        wait_until(lambda: "auth_request /auth/check answered 401" in gateway.log(), what="the refusal's line")
    assert accepted(server) == 0


HOSTILE_USERS = {"slash": "a/b", "dot-dot": "..", "nul": "al\x00ice", "escape": "\x1b[31mroot",
                 "newline": "alice\nCRITICAL forged", "10 KB": "a" * 10240, "glob": "*", "space": "al ice"}


@pytest.mark.parametrize("user", HOSTILE_USERS.values(), ids=HOSTILE_USERS.keys())
def test_a_hostile_user_name_is_refused_never_interpolated(docroot, unix_servers, user):
    echo = unix_servers(f"{docroot}/echo", proxied_echo_handler)
    (Path(docroot) / "users" / "bob").mkdir(parents=True)
    bobs = unix_servers(f"{docroot}/users/bob/echo", proxied_echo_handler)
    with gateway_test_app(docroot, *AUTH, "--set", "allow=echo, users/{user}/*") as gateway:
        cookie = log_in(gateway.port, "user=" + quote(user))
        for path in ("/echo", "/users/bob/echo", "/users/" + quote(user[:100], safe="") + "/echo"):
            status, _, body = handshake_status(gateway.port, path, extra=f"Cookie: {cookie}\r\n")
            assert status == 403, (path, body)
        wait_until(lambda: gateway.log().count("refused WebSocket") == 3, what="three refusal lines")
        log = gateway.log()
    assert accepted(echo) == accepted(bobs) == 0
    assert "\x00" not in log and "\x1b" not in log and "\nCRITICAL" not in log and "a" * 300 not in log


@pytest.mark.parametrize("user, line", [("raise", "raised RuntimeError: the database is down"),
                                        ("fail", "answered 500 Internal Server Error")])
def test_an_app_that_raises_or_fails_is_a_503_and_one_log_line(docroot, unix_servers, user, line):
    server = unix_servers(f"{docroot}/echo", proxied_echo_handler)
    with gateway_test_app(docroot, *AUTH) as gateway:
        cookie = log_in(gateway.port, f"user={user}")
        status, _, body = handshake_status(gateway.port, "/echo", extra=f"Cookie: {cookie}\r\n")
        assert status == 503 and b"Traceback" not in body and b"database" not in body
        wait_until(lambda: line in gateway.log(), what="the failure's line")
        assert "Traceback" not in gateway.log()
        assert http_get(gateway.port, "/anything") == (200, b"app: /anything")
    assert accepted(server) == 0


def test_an_app_that_waits_stalls_only_its_own_handshake(docroot, unix_servers):
    unix_servers(f"{docroot}/echo", proxied_echo_handler)
    with gateway_test_app(docroot, *AUTH) as gateway:
        alice, slow = log_in(gateway.port, "user=alice"), log_in(gateway.port, "user=slow")
        with connect(f"{gateway.url}/echo", additional_headers={"Cookie": alice}) as open_before:
            waiting = socket.create_connection(("127.0.0.1", gateway.port))
            waiting.sendall(handshake_request("/echo", port=gateway.port, extra=f"Cookie: {slow}\r\n"))
            with waiting:
                wait_until(lambda: slow in http_get(gateway.port, "/auth/seen")[1].decode(), what="the slow check")
                open_before.send("still flowing")
                assert open_before.recv(timeout=10) == "still flowing"
                with connect(f"{gateway.url}/echo", additional_headers={"Cookie": alice}) as opened_after:
                    opened_after.send("new")
                    assert opened_after.recv(timeout=10) == "new"
                waiting.settimeout(0.2)
                with pytest.raises(socket.timeout):
                    waiting.recv(1)  # no answer yet: the app is still deciding


def test_authorize_a_function_of_the_environ(docroot, unix_servers):
    server = unix_servers(f"{docroot}/echo", proxied_echo_handler)
    with gateway_test_app(docroot, "--set", "authorize=wrapped_app:authorize", "--set", "proxy_protocol=v2") as gateway:
        with connect(f"{gateway.url}/echo", additional_headers={"Authorization": "Bearer alice"}) as ws:
            ws.send("x")
            assert ws.recv() == "x"
        with connect(f"{gateway.url}/echo", additional_headers={"Authorization": "Bearer carol"}) as ws:
            ws.send("y")
            assert ws.recv() == "y"
        assert [(h.user, h.groups) for h in server.headers] == [("alice", ("staff",)), ("carol", ())]
        status, headers, body = handshake_status(gateway.port, "/echo")
        assert (status, headers["www-authenticate"]) == (401, "Bearer")
        assert b"a bearer token is needed" in body
        assert handshake_status(gateway.port, "/echo", extra="Authorization: Bearer mallory\r\n")[:1] == (403,)
        assert handshake_status(gateway.port, "/echo", extra="Authorization: Bearer raise\r\n")[:1] == (503,)
        wait_until(lambda: "raised RuntimeError: the token service is down" in gateway.log(), what="the line")
    assert accepted(server) == 2


def test_under_the_stock_handler_a_refusal_is_a_close(docroot, unix_servers):
    unix_servers(f"{docroot}/echo", proxied_echo_handler)
    with gateway_test_app(docroot, *AUTH, "--stock") as gateway:
        assert close_of(f"{gateway.url}/echo")[0] == 1008
        cookie = log_in(gateway.port, "user=raise")
        with connect(f"{gateway.url}/echo", additional_headers={"Cookie": cookie}) as ws:
            with pytest.raises(Exception):
                ws.recv(timeout=10)
        assert ws.close_code == 1011


def test_the_issues_scenario_in_a_pastedeploy_ini(tmp_path, docroot, unix_servers):
    """auth_request = /auth/check, auth_recheck = 1, proxy_protocol = v2, allow = echo, users/{user}/*
    in an ini file whose app is a plain WSGI app with a cookie login (the how-to's)."""
    for user in ("alice", "bob"):
        (Path(docroot) / "users" / user).mkdir(parents=True)
    echo = unix_servers(f"{docroot}/echo", proxied_echo_handler)
    homes = {user: unix_servers(f"{docroot}/users/{user}/echo", proxied_echo_handler) for user in ("alice", "bob")}
    shutil.copy(EXAMPLES / "auth_app.py", tmp_path)
    port = free_port()
    ini = (EXAMPLES / "auth.ini").read_text().replace("/tmp/ws", docroot).replace("8080", str(port))
    ini = ini.replace("auth_recheck = 30", "auth_recheck = 1")
    (tmp_path / "auth.ini").write_text(ini)
    argv = [str(BIN / "ouistiti-gw"), "serve", str(tmp_path / "auth.ini")]
    with ServerProcess(argv, port, env={"PYTHONPATH": str(tmp_path)}) as gateway:
        with pytest.raises(InvalidStatus) as refused:
            connect(f"{gateway.url}/echo")
        assert refused.value.response.status_code == 401
        alice = log_in(port, "user=alice&password=wonderland")
        with connect(f"{gateway.url}/echo", additional_headers={"Cookie": alice}) as ws:
            ws.send("hello")
            assert ws.recv() == "hello"
        assert echo.headers[0].user == "alice"
        with connect(f"{gateway.url}/users/alice/echo", additional_headers={"Cookie": alice}) as ws:
            ws.send("mine")
            assert ws.recv() == "mine"
        assert handshake_status(port, "/users/bob/echo", extra=f"Cookie: {alice}\r\n")[0] == 403
        assert http_get(port, "/") == (200, b"hello, stranger\n")  # plain HTTP still reaches the app
        bob = log_in(port, "user=bob&password=builder")
        with connect(f"{gateway.url}/users/bob/echo", additional_headers={"Cookie": bob}) as bobs, \
                connect(f"{gateway.url}/echo", additional_headers={"Cookie": alice}) as alices:
            bobs.send("bob's")
            assert bobs.recv(timeout=10) == "bob's"
            assert http_get(port, "/logout", "POST", headers={"Cookie": bob})[0] == 303
            assert closed_by_the_gateway(bobs)[:2] == (1008, "authorization revoked")
            alices.send("alice's")
            assert alices.recv(timeout=10) == "alice's"
    assert [h.user for h in homes["alice"].headers] == ["alice"]
    assert [h.user for h in homes["bob"].headers] == ["bob"]


def test_the_handshake_is_refused_before_the_app_is_asked_when_admission_refuses(docroot, unix_servers):
    unix_servers(f"{docroot}/echo", proxied_echo_handler)
    with gateway_test_app(docroot, *AUTH) as gateway:
        cookie = log_in(gateway.port, "user=alice")
        request = handshake_request("/echo", port=gateway.port, extra=f"Cookie: {cookie}\r\nOrigin: http://evil\r\n")
        status, _, sock, _ = raw_request(gateway.port, request)
        sock.close()
        assert status == 403
        assert json.loads(http_get(gateway.port, "/auth/seen")[1]) == {}


def test_a_revoked_login_closes_its_session_and_no_other(docroot, unix_servers):
    unix_servers(f"{docroot}/echo", proxied_echo_handler)
    with gateway_test_app(docroot, *AUTH, "--set", "auth_recheck=1", "--set", "metrics_path=/metrics") as gateway:
        alice, bob = log_in(gateway.port, "user=alice"), log_in(gateway.port, "user=bob")
        with connect(f"{gateway.url}/echo", additional_headers={"Cookie": alice}) as alices, \
                connect(f"{gateway.url}/echo", additional_headers={"Cookie": bob}) as bobs:
            bobs.send("before")
            assert bobs.recv(timeout=10) == "before"
            assert http_get(gateway.port, "/logout", "POST", headers={"Cookie": bob})[0] == 204
            assert closed_by_the_gateway(bobs)[:2] == (1008, "authorization revoked")
            wait_until(lambda: "authorization revoked" in gateway.log(), what="the close's line")
            line = next(line for line in gateway.log().splitlines() if "authorization revoked" in line)
            assert "closing echo from 127.0.0.1" in line and "user bob" in line and "answered 401" in line
            allowed = rechecks(gateway.port, "allowed")
            wait_until(lambda: rechecks(gateway.port, "allowed") >= allowed + 2, what="two more of alice's rechecks")
            for message in ("still", "here"):
                alices.send(message)
                assert alices.recv(timeout=10) == message
            assert rechecks(gateway.port, "revoked") == 1
        assert "user alice" not in gateway.log()


def test_x_auth_expires_closes_the_session_at_that_time(docroot, unix_servers):
    unix_servers(f"{docroot}/echo", proxied_echo_handler)
    with gateway_test_app(docroot, *AUTH, "--set", "metrics_path=/metrics") as gateway:  # no auth_recheck
        expires = int(time.time()) + 2
        cookie = log_in(gateway.port, f"user=alice&expires={expires}")
        with connect(f"{gateway.url}/echo", additional_headers={"Cookie": cookie}) as ws:
            ws.send("while it lasts")
            assert ws.recv(timeout=10) == "while it lasts"
            code, reason, when = closed_by_the_gateway(ws)
        assert (code, reason) == (1008, "authorization expired")
        assert when >= expires - 0.05  # not before (the clocks are the same machine's)
        wait_until(lambda: f"its login expired at {expires}" in gateway.log(), what="the expiry's line")
        assert (rechecks(gateway.port, "expired"), rechecks(gateway.port, "allowed")) == (1, 0)


@pytest.mark.parametrize("policy", ["keep", "close"])
def test_an_auth_endpoint_that_starts_failing_closes_sessions_only_if_told(docroot, unix_servers, policy):
    unix_servers(f"{docroot}/echo", proxied_echo_handler)
    settings = ("--set", "auth_recheck=0.5", "--set", "metrics_path=/metrics",
                "--set", f"auth_recheck_failure={policy}")
    with gateway_test_app(docroot, *AUTH, *settings) as gateway:
        cookie = log_in(gateway.port, "user=alice")
        with connect(f"{gateway.url}/echo", additional_headers={"Cookie": cookie}) as ws:
            ws.send("up")
            assert ws.recv(timeout=10) == "up"
            assert http_get(gateway.port, "/auth/break", "POST")[0] == 204
            if policy == "close":
                assert closed_by_the_gateway(ws)[:2] == (1011, "authorization check failed")
            else:
                wait_until(lambda: gateway.log().count("failed, the session goes on") >= 2, what="two failed rechecks")
                assert rechecks(gateway.port, "failed") >= 2
                ws.send("still up")
                assert ws.recv(timeout=10) == "still up"
        assert "answered 500 Internal Server Error" in gateway.log()


FILE_LOGINS_APP = '''
import os
from http.cookies import SimpleCookie


def app(environ, start_response):
    """/auth/check: 204 naming the user whose file the sid cookie names, 401 without one."""
    cookie = SimpleCookie(environ.get("HTTP_COOKIE", ""))
    login = os.path.join({logins!r}, cookie["sid"].value) if "sid" in cookie else None
    if environ["PATH_INFO"] == "/auth/check" and login is not None and os.path.isfile(login):
        with open(login) as file:
            start_response("204 No Content", [("X-Auth-User", file.read())])
    else:
        start_response("401 Unauthorized", [("WWW-Authenticate", 'Cookie realm="tests"')])
    return []


def make(global_conf, **settings):
    return app
'''

RELOADED_INI = """
[pipeline:main]
pipeline = websocket app

[filter:websocket]
use = egg:ouistiti_gw#websocket
docroot = {docroot}
auth_request = /auth/check
auth_recheck = 1
proxy_protocol = v2
allow = {allow}

[app:app]
use = call:file_logins:make

[server:main]
use = egg:ouistiti_gw#gevent
host = 127.0.0.1
port = {port}
drain_timeout = 2
"""


def test_a_session_moved_by_a_reload_keeps_its_user_its_rechecks_and_its_rules(tmp_path, docroot, unix_servers):
    """Sessions of alice and bob move to a new worker (SIGHUP) whose ``allow`` names
    ``{user}``: alice's on bob's name is closed there (judged by alice's rules, not ``*``),
    bob's is rechecked there and closed once his login is gone, alice's on echo goes on."""
    (Path(docroot) / "users" / "bob").mkdir(parents=True)
    unix_servers(f"{docroot}/echo", proxied_echo_handler)
    unix_servers(f"{docroot}/users/bob/echo", proxied_echo_handler)
    logins = tmp_path / "logins"
    logins.mkdir()
    for user in ("alice", "bob"):
        (logins / f"sid-{user}").write_text(user)
    (tmp_path / "file_logins.py").write_text(FILE_LOGINS_APP.format(logins=str(logins)))
    port, ini = free_port(), tmp_path / "gateway.ini"
    ini.write_text(RELOADED_INI.format(docroot=docroot, port=port, allow="echo, users/*"))
    argv = [str(BIN / "ouistiti-gw"), "serve", str(ini)]
    env = {"PYTHONPATH": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"}
    with ServerProcess(argv, port, env=env) as gateway, \
            connect(f"ws://127.0.0.1:{port}/echo", additional_headers={"Cookie": "sid=sid-alice"}) as alices, \
            connect(f"ws://127.0.0.1:{port}/echo", additional_headers={"Cookie": "sid=sid-bob"}) as bobs, \
            connect(f"ws://127.0.0.1:{port}/users/bob/echo", additional_headers={"Cookie": "sid=sid-alice"}) as astray:
        for ws in (alices, bobs, astray):
            ws.send("before")
            assert ws.recv(timeout=10) == "before"
        old = only_child(gateway.pid)
        ini.write_text(RELOADED_INI.format(docroot=docroot, port=port, allow="echo, users/{user}/*"))
        gateway.process.send_signal(signal.SIGHUP)
        wait_until(lambda: not os.path.exists(f"/proc/{old}"), what=f"old worker {old} to exit")
        assert "reload: 3 session(s) moved to the new worker" in gateway.log()
        assert closed_by_the_gateway(astray)[:2] == (1008, "after a reload: name not served (allow/deny)")
        for ws in (alices, bobs):
            ws.send("moved")
            assert ws.recv(timeout=10) == "moved"
        (logins / "sid-bob").unlink()  # bob logs out
        assert closed_by_the_gateway(bobs)[:2] == (1008, "authorization revoked")
        wait_until(lambda: "authorization revoked" in gateway.log(), what="the close's line")
        line = next(line for line in gateway.log().splitlines() if "authorization revoked" in line)
        assert f"[{only_child(gateway.pid)}]" in line and "user bob" in line and "answered 401" in line
        alices.send("still here")
        assert alices.recv(timeout=10) == "still here"
