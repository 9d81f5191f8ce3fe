"""A WSGI app for the tests, served behind the gateway in its own process.

    python tests/wrapped_app.py --docroot DIR --port N [--set KEY=VALUE ...] [--stock]

Routes: ``/stream`` answers in chunks from a generator, ``/echo-body`` returns the request body,
``/closed`` tells how many results had ``close()`` called, ``/greenlets`` how many greenlets are
alive in this process (a leak check from outside); anything else answers ``app: PATH``.

A cookie login for ``auth_request = /auth/check``: ``POST /login`` with the form
``user=NAME[&groups=A,B][&expires=T]`` sets a ``sid`` cookie for NAME, any NAME at all (the
hostile ones of the tests too), and ``/auth/check`` answers 204 with ``X-Auth-User: NAME``
(and its groups, expiry) for that cookie, 401 with ``WWW-Authenticate`` without one; for the
users ``raise``, ``fail`` and ``slow`` it raises, answers 500, or waits a minute first
(``gevent.sleep``, the way a gevent-aware database driver waits). ``POST /logout`` forgets the
cookie's login; ``POST /auth/break`` makes every later ``/auth/check`` answer 500 (the auth
service down). It records what it was called
with (``/auth/seen``: the last environ's method, path, query, body, headers and dotted keys).
:func:`authorize` is the same decision for ``authorize = wrapped_app:authorize``, from
``Authorization: Bearer NAME``.

``--set`` passes any gateway setting (``allow=ws_*``, ``origins=*``...); ``--stock`` serves with
gevent-websocket's own ``WebSocketServer`` instead of the gateway's handler.
"""
import argparse
import gc
import json
import logging
import secrets
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

import gevent
import greenlet

from ouistiti_gw import WebSocketGateway
from ouistiti_gw.config import INI, GatewayConfig, ServerConfig
from ouistiti_gw.gateway.authorization import AuthorizationRefused, User
from ouistiti_gw.servers.wsgi_server import make_server, serve_until_stopped

closed_results = 0
#: sid cookie -> the form of its /login (user, groups, expires).
logins: dict[str, dict[str, str]] = {}
#: What the last /auth/check was called with.
seen: dict[str, object] = {}
#: POST /auth/break was called: every /auth/check answers 500.
broken = False


class Streamed:
    """A result iterable with a ``close()`` the server must call (PEP 3333)."""

    def __init__(self, chunks):
        self.chunks = chunks

    def __iter__(self):
        return iter(self.chunks)

    def close(self):
        global closed_results
        closed_results += 1


def live_greenlets() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, greenlet.greenlet) and not o.dead)


def login(environ, start_response):
    form = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)).decode()
    query = {key: values[0] for key, values in parse_qs(form).items()}
    sid = secrets.token_hex(8)
    logins[sid] = query
    start_response("200 OK", [("Set-Cookie", f"sid={sid}; Path=/; HttpOnly"), ("Content-Length", "0")])
    return []


def sid_of(environ) -> str | None:
    cookie = SimpleCookie(environ.get("HTTP_COOKIE", ""))
    return cookie["sid"].value if "sid" in cookie else None


def logout(environ, start_response):
    logins.pop(sid_of(environ) or "", None)
    start_response("204 No Content", [])
    return []


def break_auth(environ, start_response):
    global broken
    broken = True
    start_response("204 No Content", [])
    return []


def auth_check(environ, start_response):
    seen.update(method=environ["REQUEST_METHOD"], path=environ["PATH_INFO"], query=environ["QUERY_STRING"],
                body=environ["wsgi.input"].read().decode("latin-1"),
                headers={key: value for key, value in environ.items() if key.startswith("HTTP_")},
                keys=sorted(key for key in environ if "." in key and not key.startswith("wsgi.")))
    query = logins.get(sid_of(environ) or "")
    if query is None:
        start_response("401 Unauthorized", [("WWW-Authenticate", 'Cookie realm="tests"'),
                                            ("Content-Type", "text/plain")])
        return [b"log in first\n"]
    user = query["user"]
    if broken:
        user = "fail"
    if user == "raise":
        raise RuntimeError("the database is down")
    if user == "fail":
        start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
        return [b"oops"]
    if user == "slow":
        gevent.sleep(60)
    headers = [("X-Auth-User", user)] + [(f"X-Auth-{key.title()}", query[key])
                                         for key in ("groups", "expires") if key in query]
    start_response("204 No Content", headers)
    return []


def authorize(environ):
    """``authorize = wrapped_app:authorize``: the user of ``Authorization: Bearer NAME``."""
    scheme, _, user = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme != "Bearer" or not user:
        raise AuthorizationRefused(401, "a bearer token is needed", [("WWW-Authenticate", "Bearer")])
    if user == "raise":
        raise RuntimeError("the token service is down")
    if user == "mallory":
        raise AuthorizationRefused(403, "mallory is banned")
    return User(user, ("staff",)) if user == "alice" else user


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/login":
        return login(environ, start_response)
    if path == "/auth/check":
        return auth_check(environ, start_response)
    if path == "/logout":
        return logout(environ, start_response)
    if path == "/auth/break":
        return break_auth(environ, start_response)
    if path == "/auth/seen":
        body = json.dumps(seen).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Streamed([b"chunk-%d\n" % i for i in range(5)])
    if path == "/echo-body":
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    if path == "/closed":
        body = str(closed_results).encode()
    elif path == "/greenlets":
        body = str(live_greenlets()).encode()
    else:
        body = ("app: " + path).encode("latin-1")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--docroot", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--stock", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    settings = dict(option.split("=", 1) for option in args.set)
    gateway = WebSocketGateway(app, config=GatewayConfig.load({"docroot": args.docroot, **settings}, INI))
    if args.stock:
        from geventwebsocket import WebSocketServer
        server = WebSocketServer(("127.0.0.1", args.port), gateway)
    else:
        server = make_server(gateway, ServerConfig(port=args.port))
    serve_until_stopped(server)


if __name__ == "__main__":
    main()
