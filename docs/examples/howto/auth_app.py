"""docs-test: skip: run by tests/integration/test_authorization.py, served by auth.ini as the page says.

A plain WSGI app with a cookie login, and the route the gateway asks before each WebSocket."""
import secrets
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

PASSWORDS = {"alice": "wonderland", "bob": "builder"}   # yours: a database, passwords hashed
SESSIONS: dict[str, str] = {}                           # session cookie -> user name


def logged_in(environ) -> str | None:
    cookie = SimpleCookie(environ.get("HTTP_COOKIE", ""))
    return SESSIONS.get(cookie["session"].value) if "session" in cookie else None


def auth_check(environ, start_response):
    """GET /auth/check, asked in-process by the gateway with the WebSocket request's headers."""
    user = logged_in(environ)
    if user is None:
        start_response("401 Unauthorized", [("WWW-Authenticate", 'Cookie realm="example"'),
                                            ("Content-Type", "text/plain")])
        return [b"log in first\n"]
    start_response("204 No Content", [("X-Auth-User", user)])   # X-Auth-Groups, X-Auth-Expires: optional
    return []


def log_in(environ, start_response):
    """POST /login with a form (user, password): a session cookie."""
    size = int(environ.get("CONTENT_LENGTH") or 0)
    form = {key: values[0] for key, values in parse_qs(environ["wsgi.input"].read(size).decode()).items()}
    user = form.get("user", "")
    if user not in PASSWORDS or not secrets.compare_digest(PASSWORDS[user], form.get("password", "")):
        start_response("403 Forbidden", [("Content-Type", "text/plain")])
        return [b"wrong user or password\n"]
    session = secrets.token_urlsafe(24)
    SESSIONS[session] = user
    start_response("303 See Other", [("Location", "/"),
                                     ("Set-Cookie", f"session={session}; Path=/; HttpOnly; SameSite=Lax")])
    return []


def log_out(environ, start_response):
    """POST /logout: the session cookie is forgotten here, so the gateway's next recheck closes
    the WebSockets it opened (auth_recheck in auth.ini)."""
    cookie = SimpleCookie(environ.get("HTTP_COOKIE", ""))
    if "session" in cookie:
        SESSIONS.pop(cookie["session"].value, None)
    start_response("303 See Other", [("Location", "/"), ("Set-Cookie", "session=; Path=/; Max-Age=0")])
    return []


def application(environ, start_response):
    if environ["PATH_INFO"] == "/auth/check":
        return auth_check(environ, start_response)
    if environ["PATH_INFO"] == "/login" and environ["REQUEST_METHOD"] == "POST":
        return log_in(environ, start_response)
    if environ["PATH_INFO"] == "/logout" and environ["REQUEST_METHOD"] == "POST":
        return log_out(environ, start_response)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"hello, {logged_in(environ) or 'stranger'}\n".encode()]


def make_app(global_config, **settings):
    """PasteDeploy's app factory (``paste.app_factory = auth_app:make_app``)."""
    return application
