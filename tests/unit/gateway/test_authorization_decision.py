"""The decision of ``gateway/authorization.py``, called directly: WSGI apps of the test itself
answer the subrequest (in-process, as the gateway calls them), no server, no network."""
import json

import pytest

from ouistiti_gw.config import ConfigurationError, GatewayConfig
from ouistiti_gw.core import proxy_protocol
from ouistiti_gw.core.protocol import Protocol
from ouistiti_gw.gateway.authorization import (
    Authorization,
    AuthorizationRefused,
    Authorized,
    User,
    credentials,
    identity_error,
    login_of,
)
from ouistiti_gw.gateway.identity import Identity
from ouistiti_gw.gateway.names import NameRefused, NameRules, check_segment
from ouistiti_gw.gateway.refusals import Refusal
from ouistiti_gw.reload.session_state import Admission, Login, SessionState, StateError, as_fields, from_fields

HANDSHAKE = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": "/chat/é".encode().decode("latin-1"),
             "QUERY_STRING": "a=1", "HTTP_COOKIE": "sid=1", "HTTP_UPGRADE": "websocket", "HTTP_CONNECTION": "Upgrade",
             "HTTP_SEC_WEBSOCKET_KEY": "k", "HTTP_X_ORIGINAL_URI": "/forged", "CONTENT_LENGTH": "0",
             "REMOTE_ADDR": "192.0.2.7", "REMOTE_PORT": "5000", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80",
             "wsgi.url_scheme": "http", "ouistiti_gw.gateway.upgrade": object(), "gunicorn.socket": object()}


def answering(status, headers=(), body=b""):
    """A WSGI app answering every request so, recording the environ it got."""
    seen = []

    def app(environ, start_response):
        seen.append(environ)
        start_response(status, list(headers))
        return [body]
    return app, seen


def decide(app, name="chat/é", allow="*", **options):
    config = GatewayConfig(docroot="/tmp", auth_request="/auth", allow=allow, **options)
    return Authorization(config, app, NameRules.from_options(config.allow, config.deny)).decide(dict(HANDSHAKE), name)


def test_the_subrequest_is_a_get_of_the_fixed_path_with_the_requests_headers_only():
    app, seen = answering("204 No Content", [("X-Auth-User", "alice"), ("X-Auth-Groups", "a, b"),
                                             ("X-Auth-Expires", "1700000000")])
    decided = decide(app)
    assert isinstance(decided, Authorized) and decided.user == User("alice", ("a", "b"), 1700000000)
    environ = seen[0]
    assert (environ["REQUEST_METHOD"], environ["PATH_INFO"], environ["QUERY_STRING"]) == ("GET", "/auth", "")
    assert environ["wsgi.input"].read() == b"" and environ["CONTENT_LENGTH"] == "0"
    assert environ["HTTP_X_ORIGINAL_URI"] == "/chat/%C3%A9?a=1" and environ["HTTP_COOKIE"] == "sid=1"
    assert not {"HTTP_UPGRADE", "HTTP_CONNECTION", "HTTP_SEC_WEBSOCKET_KEY", "ouistiti_gw.gateway.upgrade",
                "gunicorn.socket"} & set(environ)
    assert decided.credentials["PATH_INFO"] == HANDSHAKE["PATH_INFO"]  # kept for a recheck, unchanged


def test_a_401_is_sent_on_with_the_apps_headers_and_body():
    app, _ = answering("401 Unauthorized", [("WWW-Authenticate", "Bearer"), ("Connection", "close")], b"no")
    refusal = decide(app)
    assert isinstance(refusal, Refusal)
    assert (refusal.status, refusal.headers, refusal.body) == (401, (("WWW-Authenticate", "Bearer"),), b"no")


@pytest.mark.parametrize("status", ["500 Oops", "302 Found", "404 Not Found", "x"])
def test_any_other_status_is_a_503_whose_detail_is_for_the_log_only(status):
    refusal = decide(answering(status, body=b"secret")[0])
    assert (refusal.status, refusal.category, refusal.reason) == (503, "auth_failed", "the authorization failed")
    assert "secret" not in refusal.reason


def test_an_exception_is_a_503_and_a_too_long_answer_too():
    def raising(environ, start_response):
        raise KeyError("boom")
    assert "raised KeyError" in decide(raising).logged
    assert "longer than" in decide(answering("200 OK", body=b"x" * (65 * 1024))[0]).logged


def test_without_x_auth_user_the_client_is_anonymous_and_reaches_no_user_name():
    app, _ = answering("200 OK")
    assert decide(app, name="echo", allow="echo, users/{user}/*").user is None
    assert decide(app, name="users/x/echo", allow="echo, users/{user}/*").status == 403


@pytest.mark.parametrize("user", ["a/b", "..", ".", "*", "a?", "[a]", "%2e", "{group}", "a\\b"])
def test_a_user_that_is_no_safe_segment_is_refused_where_it_would_be_interpolated(user):
    app, _ = answering("200 OK", [("X-Auth-User", user)])
    assert decide(app, name="echo", allow="echo, users/{user}/*").status == 403
    assert isinstance(decide(app, name="echo", allow="echo"), Authorized)  # no placeholder: no path


@pytest.mark.parametrize("user", ["", "a" * 257, "a\x00", "a b", "a\u2028", "\x1b[31m", "a\u202e"])
def test_an_identity_that_cannot_go_into_a_header_or_a_log_line_is_refused(user):
    assert decide(answering("200 OK", [("X-Auth-User", user)])[0]).status == 403


def test_identity_rules():
    assert identity_error(User("alice@example.com", ("staff",), 0)) is None
    assert identity_error(User("josé")) is None
    assert "comma" in identity_error(User("a", ("x,y",)))
    assert "groups" in identity_error(User("a", tuple(f"g{i}" for i in range(65))))
    assert "expires" in identity_error(User("a", expires=-1))
    assert decide(answering("200 OK", [("X-Auth-User", "a"), ("X-Auth-Expires", "soon")])[0]).status == 403


def test_a_utf8_user_in_a_latin1_header_is_read_as_utf8():
    app, _ = answering("200 OK", [("X-Auth-User", "josé".encode().decode("latin-1"))])
    assert decide(app).user.name == "josé"


def test_placeholders_fill_with_the_user_and_each_group():
    rules = NameRules.from_options("echo, users/{user}/*, teams/{group}/*", "users/{user}/private")
    assert rules.personal and rules.refusal("users/bob/echo") is None  # the gateway's, before the user
    alice = rules.for_user("alice", ("red", "blue"))
    assert alice.permits("users/alice/echo") and alice.permits("teams/blue/x") and alice.permits("echo")
    assert not alice.permits("users/bob/echo") and not alice.permits("teams/green/x")
    assert not alice.permits("users/alice/private")
    with pytest.raises(NameRefused):
        rules.for_user("alice", ("a/b",))
    assert NameRules.from_options("echo").for_user("a/b") == NameRules.from_options("echo")


@pytest.mark.parametrize("segment", ["alice", "alice@example.com", "Zoë", "a.b", "a-b_c"])
def test_safe_segments(segment):
    check_segment(segment)


def test_authorize_a_function(tmp_path, monkeypatch):
    (tmp_path / "decider.py").write_text(
        "from ouistiti_gw.gateway.authorization import AuthorizationRefused, User\n"
        "def decide(environ):\n"
        "    who = environ.get('HTTP_COOKIE')\n"
        "    if who == 'sid=1': return 'alice'\n"
        "    if who == 'sid=2': return User('bob', ('staff',))\n"
        "    if who == 'sid=3': return None\n"
        "    raise AuthorizationRefused(401, 'log in', [('WWW-Authenticate', 'Cookie')])\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = GatewayConfig(docroot="/tmp", authorize="decider:decide")
    authorization = Authorization(config, None, NameRules())
    for cookie, expected in (("sid=1", User("alice")), ("sid=2", User("bob", ("staff",)))):
        assert authorization.decide({**HANDSHAKE, "HTTP_COOKIE": cookie}, "chat").user == expected
    assert authorization.decide({**HANDSHAKE, "HTTP_COOKIE": "sid=3"}, "chat").status == 503  # None: not a user
    refused = authorization.decide({**HANDSHAKE, "HTTP_COOKIE": ""}, "chat")
    assert (refused.status, refused.headers) == (401, (("WWW-Authenticate", "Cookie"),))
    with pytest.raises(ValueError):
        AuthorizationRefused(500)


def test_an_authorize_that_does_not_import_stops_the_start():
    with pytest.raises(ConfigurationError, match="^authorize = no_such_module:f: ModuleNotFoundError"):
        Authorization(GatewayConfig(docroot="/tmp", authorize="no_such_module:f"), None, NameRules())


def test_credentials_keep_nothing_of_the_servers():
    assert not [key for key in credentials(HANDSHAKE) if "." in key and not key.startswith("wsgi.")]


def test_the_user_goes_into_the_v2_header_and_back():
    identity = Identity(GatewayConfig(docroot="/tmp", proxy_protocol="v2"))
    request = {key: value for key, value in HANDSHAKE.items() if "." not in key or key.startswith("wsgi.")}
    header = identity.proxy_header({**request, "REMOTE_USER": "front"}, None, User("Zoë", ("a", "b"), 17))
    parsed, _ = proxy_protocol.parse(header)
    assert (parsed.user, parsed.groups, parsed.expires) == ("Zoë", ("a", "b"), 17)
    parsed, _ = proxy_protocol.parse(identity.proxy_header({**request, "REMOTE_USER": "front"}, None))
    assert (parsed.user, parsed.groups, parsed.expires) == ("front", (), None)


def moved(login: Login | None) -> Login | None:
    """``login`` as the successor reads it: in a session's state, through JSON."""
    state = SessionState("/d", "echo", "c", 0.0, 0.0, b"", b"", False, None, None, Protocol().snapshot(),
                         Admission("echo", "echo", "echo", None, "localhost", "http"), login=login)
    return from_fields(json.loads(json.dumps(as_fields(state)))).login


def test_a_decision_moves_with_its_session_and_the_successor_asks_the_same_question():
    app, seen = answering("204 No Content", [("X-Auth-User", "alice"), ("X-Auth-Groups", "staff"),
                                             ("X-Auth-Expires", "1700000000")])
    config = GatewayConfig(docroot="/tmp", auth_request="/auth", allow="echo, users/{user}/*, teams/{group}/*")
    authorization = Authorization(config, app, NameRules.from_options(config.allow, config.deny))
    decided = authorization.decide(dict(HANDSHAKE), "echo")
    assert isinstance(decided, Authorized)
    login = moved(login_of(decided))
    assert login == Login("alice", ("staff",), 1700000000, login.credentials)
    assert not [key for key in login.credentials if "." in key and key != "wsgi.url_scheme"]
    resumed = authorization.resumed(login)
    assert resumed is not None and resumed.user == decided.user
    assert [resumed.rules.permits(name) for name in ("echo", "users/alice/a", "users/bob/a", "teams/staff/a")] == \
        [True, True, False, True]
    assert authorization.again(resumed, "users/alice/a") == decided.user
    asked, again = seen
    assert again["wsgi.input"].read() == b"" and again["wsgi.version"] == (1, 0)
    assert {key: value for key, value in again.items() if key.isupper()} == \
        {key: value for key, value in asked.items() if key.isupper()}


def test_what_moves_without_a_user_or_to_a_gateway_without_authorization():
    app, _ = answering("204 No Content")  # anonymous
    config = GatewayConfig(docroot="/tmp", auth_request="/auth", allow="echo, users/{user}/*")
    authorization = Authorization(config, app, NameRules.from_options(config.allow, config.deny))
    resumed = authorization.resumed(moved(login_of(authorization.decide(dict(HANDSHAKE), "echo"))))
    assert resumed is not None and resumed.user is None and not resumed.rules.permits("users/alice/a")
    assert authorization.resumed(None) is None  # from an older process: judged as before
    assert login_of(None) is None and login_of(Authorized(None, NameRules())) is None
    plain = Authorization(GatewayConfig(docroot="/tmp"), app, NameRules())
    assert plain.resumed(Login("alice", (), None, {})) is None


@pytest.mark.parametrize("login", [Login("", (), None, {}), Login("a b", (), None, {}), Login("a\n", (), None, {}),
                                   Login("x" * 257, (), None, {}), Login("a", ("b,c",), None, {}),
                                   Login("a", tuple(f"g{n}" for n in range(65)), None, {}), Login("a", (), -1, {}),
                                   Login("a", (), True, {}), Login(None, ("g",), None, {}),
                                   Login("a", (), None, {"gunicorn.socket": "x"}),
                                   Login("a", (), None, {"http_cookie": "x"})])
def test_a_moved_login_the_app_could_not_have_given_refuses_the_move(login):
    """Checked again on the way in, as the app's answer is: the session stays with the old process."""
    app, _ = answering("204 No Content")
    authorization = Authorization(GatewayConfig(docroot="/tmp", auth_request="/auth"), app, NameRules())
    with pytest.raises(StateError, match="a moved login"):
        authorization.resumed(moved(login))


def test_a_moved_user_that_cannot_fill_a_placeholder_reaches_no_name():
    app, _ = answering("204 No Content")
    config = GatewayConfig(docroot="/tmp", auth_request="/auth", allow="echo, users/{user}/*")
    authorization = Authorization(config, app, NameRules.from_options(config.allow, config.deny))
    resumed = authorization.resumed(Login("a*b", (), None, {}))
    assert resumed is not None and not resumed.rules.permits("echo")
