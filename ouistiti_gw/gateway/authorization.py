"""Who may connect: the wrapped app decides for each WebSocket, before any UNIX connection.

Two ways to ask it, one of them configured (:class:`~ouistiti_gw.config.GatewayConfig`):

- ``auth_request = /PATH``: the wrapped WSGI app itself is called in-process with a ``GET /PATH``
  whose environ carries the upgrade request's headers (``Cookie``, ``Authorization``...; no
  ``Upgrade``, ``Connection``, ``Sec-WebSocket-Key``/``-Version``/``-Extensions``, no body) and
  ``X-Original-URI``, ``X-Original-Method``. A 2xx answer allows, with the user named by its
  ``X-Auth-User`` header (none: anonymous), the groups of ``X-Auth-Groups`` (comma-separated)
  and ``X-Auth-Expires`` (Unix time); 401 and 403 are the client's answer, with the app's
  headers (``WWW-Authenticate``...) and body; any other status, an exception or a body over
  :data:`MAX_ANSWER_BYTES` is a 503 and one log line, never a traceback to the client.
- ``authorize = module:callable``: a function of that same environ (the WebSocket's own path
  and query this time), which returns a :class:`User` or a user name, or raises
  :class:`AuthorizationRefused`.

The subrequest reaches one route only: the path is fixed by the configuration, the method is
GET, the body empty, and no key of the server's (the upgrade, the socket) is passed: the app
cannot take the connection. It runs in the request's greenlet, so an app that waits (a
database) must wait the gevent way (a gevent-aware driver, or a monkey-patched process);
one that blocks the thread stalls every session of the process while it does.

What the answer says is checked before it goes into a PROXY header, a socket name or a log
line (:func:`identity_error`, then :meth:`~ouistiti_gw.gateway.names.NameRules.for_user`): a
value that is too long, holds a control character or whitespace, or (for ``{user}`` and
``{group}`` in ``allow``/``deny``) is not a safe path segment is refused with 403, never
repaired. The decision keeps the environ it was made with (:attr:`Authorized.credentials`) for
the session, so that the same question can be asked again later, in this process or, after a
reload, in the next one (:func:`login_of`, :meth:`Authorization.resumed`).
"""
from __future__ import annotations

import importlib
import io
import logging
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Union
from urllib.parse import quote

from ..config import ConfigurationError, GatewayConfig
from ..core.logsafe import loggable
from ..errors import GatewayError
from ..reload.session_state import Login, StateError
from .names import NameRefused, NameRules
from .refusals import Refusal

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication, WSGIEnvironment

log = logging.getLogger(__name__)

#: The most characters of a user or group name.
MAX_NAME_CHARS = 256
#: The most groups of one user.
MAX_GROUPS = 64
#: The largest body of an ``auth_request`` answer the gateway reads (a refusal's is sent on).
MAX_ANSWER_BYTES = 64 * 1024
#: What the upgrade request's environ loses before the decision reads it: the handshake's own
#: headers and the body's (there is none), and what a client could send to pass for the gateway.
_NOT_PASSED = frozenset({"HTTP_UPGRADE", "HTTP_CONNECTION", "HTTP_SEC_WEBSOCKET_KEY", "HTTP_SEC_WEBSOCKET_VERSION",
                         "HTTP_SEC_WEBSOCKET_EXTENSIONS", "CONTENT_TYPE", "CONTENT_LENGTH", "HTTP_TRANSFER_ENCODING",
                         "HTTP_X_ORIGINAL_URI", "HTTP_X_ORIGINAL_METHOD"})
#: The ``wsgi.*`` keys it keeps (PEP 3333's, but the input): none a server adds.
_WSGI_KEYS = frozenset({"wsgi.version", "wsgi.url_scheme", "wsgi.errors", "wsgi.multithread", "wsgi.multiprocess",
                        "wsgi.run_once", "wsgi.file_wrapper"})
#: Headers of an app's 401 or 403 that are the connection's, not the answer's.
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "upgrade", "content-length", "te",
                         "trailer", "proxy-authenticate"})
_STATUSES_SENT_ON = (401, 403)


class AuthorizationRefused(GatewayError):
    """The app's refusal of a WebSocket (``authorize``): the client gets ``status``, 401 or 403.

    :param reason: logged, and sent to the client as the answer's one line of text.
    :param headers: more headers of the answer, such as ``[("WWW-Authenticate", "Bearer")]``.
    """

    def __init__(self, status: int = 403, reason: str = "not authorized",
                 headers: Iterable[tuple[str, str]] = ()) -> None:
        if status not in _STATUSES_SENT_ON:
            raise ValueError(f"an authorization refusal is 401 or 403, not {status}")
        self.status, self.reason, self.headers = status, reason, tuple(headers)
        super().__init__(reason)


class AuthorizationFailed(GatewayError):
    """The app could not decide (an exception, a 5xx, an answer the gateway cannot read): 503."""


@dataclass(frozen=True)
class User:
    """Who the app says the client is: a name, its groups, and when the authorization ends."""

    name: str
    groups: tuple[str, ...] = ()
    #: Unix time, or None: until the session ends.
    expires: int | None = None


@dataclass(frozen=True)
class Authorized:
    """A WebSocket the app let in: who (None: anonymous, or no authorization configured), the
    names that user may reach, and the environ the decision read (None without authorization),
    kept for the session so that the question can be asked again."""

    user: User | None
    rules: NameRules
    credentials: dict[str, Any] | None = None


def identity_error(user: User) -> str | None:
    """Why ``user`` cannot go into a PROXY header or a log line as it is, or None: each name is
    1 to :data:`MAX_NAME_CHARS` printable characters without whitespace (a group has no comma),
    at most :data:`MAX_GROUPS` groups, ``expires`` a non-negative integer."""
    for kind, value in (("user", user.name), *(("group", group) for group in user.groups)):
        if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME_CHARS:
            return f"{kind} name is empty or longer than {MAX_NAME_CHARS} characters"
        if not value.isprintable() or " " in value or (kind == "group" and "," in value):
            return f"{kind} name {loggable(value, 40)} holds a control character, whitespace or a comma"
    if len(user.groups) > MAX_GROUPS:
        return f"more than {MAX_GROUPS} groups"
    if user.expires is not None and (type(user.expires) is not int or user.expires < 0):
        return "expires is not a Unix time"
    return None


def _is_cgi(key: str) -> bool:
    """A CGI variable or a header (``HTTP_*``): no server's key has that shape."""
    return key.isupper() and "." not in key


def credentials(environ: "WSGIEnvironment") -> dict[str, Any]:
    """The copy of the upgrade request's environ a decision reads: its CGI variables and headers
    but those of :data:`_NOT_PASSED`, PEP 3333's ``wsgi.*`` keys, no key of the server's, an
    empty body, and ``X-Original-URI`` (as sent: path and query) and ``X-Original-Method``."""
    copy = {key: value for key, value in environ.items()
            if key in _WSGI_KEYS or (_is_cgi(key) and key not in _NOT_PASSED)}
    uri = quote(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""), safe="/;=,~!$&'()*+@:",
                encoding="latin-1")
    if environ.get("QUERY_STRING"):
        uri += "?" + environ["QUERY_STRING"]
    copy.update({"HTTP_X_ORIGINAL_URI": uri, "HTTP_X_ORIGINAL_METHOD": environ.get("REQUEST_METHOD", "GET"),
                 "REQUEST_METHOD": "GET", "CONTENT_LENGTH": "0", "wsgi.input": io.BytesIO()})
    return copy


def login_of(authorized: Authorized | None) -> Login | None:
    """What of ``authorized`` a reload carries to the successor with its session: the user, and
    the strings of its credentials (CGI variables, headers, the URL scheme); None when no
    authorization decided (nothing to recheck)."""
    if authorized is None or authorized.credentials is None:
        return None
    user = authorized.user
    strings = {key: value for key, value in authorized.credentials.items()
               if isinstance(value, str) and (_is_cgi(key) or key == "wsgi.url_scheme")}
    return Login(user.name if user else None, user.groups if user else (), user.expires if user else None, strings)


def _environ_of(login: Login) -> dict[str, Any]:
    """The credentials of a moved session as a decision's environ: its strings, checked to be
    what :func:`login_of` carries, with PEP 3333's other keys made here."""
    foreign = next((key for key in login.credentials if not (_is_cgi(key) or key == "wsgi.url_scheme")), None)
    if foreign is not None:
        raise StateError(f"a moved login's credentials hold {loggable(foreign, 40)}, not a CGI variable or header")
    return {**login.credentials, "REQUEST_METHOD": "GET", "CONTENT_LENGTH": "0", "wsgi.input": io.BytesIO(),
            "wsgi.version": (1, 0), "wsgi.url_scheme": login.credentials.get("wsgi.url_scheme", "http"),
            "wsgi.errors": sys.stderr, "wsgi.multithread": False, "wsgi.multiprocess": False, "wsgi.run_once": False}


@dataclass(frozen=True)
class _Answer:
    status: int
    status_line: str
    headers: list[tuple[str, str]]
    body: bytes


def _call(app: "WSGIApplication", environ: "WSGIEnvironment") -> _Answer:
    """The app's whole answer to ``environ``, its result closed (PEP 3333)."""
    started: list[tuple[str, list[tuple[str, str]]]] = []
    body: list[bytes] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], Any]:
        if exc_info is not None and started:
            raise exc_info[1].with_traceback(exc_info[2])
        started[:] = [(status, list(headers))]
        return body.append

    result = app(environ, start_response)
    try:
        for chunk in result:
            body.append(chunk)
            if sum(map(len, body)) > MAX_ANSWER_BYTES:
                raise AuthorizationFailed(f"answer longer than {MAX_ANSWER_BYTES} bytes")
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    if not started:
        raise AuthorizationFailed("no answer (start_response never called)")
    status_line, headers = started[0]
    try:
        status = int(status_line.split(" ", 1)[0])
    except ValueError:
        raise AuthorizationFailed(f"status {status_line!r} is not a number") from None
    return _Answer(status, status_line, headers, b"".join(body))


def _header_text(value: str) -> str:
    """A WSGI header value (latin-1 characters, PEP 3333) as the UTF-8 text it stands for, when it does."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def user_of(headers: list[tuple[str, str]]) -> User | None:
    """The user a 2xx answer names in ``X-Auth-User``, ``X-Auth-Groups`` and ``X-Auth-Expires``
    (None: no ``X-Auth-User``, anonymous). An expiry that is not a number is an
    :class:`AuthorizationRefused` (403): what the app says is never guessed at."""
    found = {name.lower(): _header_text(value) for name, value in headers}
    if "x-auth-user" not in found:
        return None
    groups = tuple(group.strip() for group in found.get("x-auth-groups", "").split(",") if group.strip())
    expires = found.get("x-auth-expires", "").strip()
    if expires and not (expires.isascii() and expires.isdigit()):
        raise AuthorizationRefused(403, "X-Auth-Expires is not a Unix time")
    return User(found["x-auth-user"], groups, int(expires) if expires else None)


class Subrequest:
    """``auth_request``: ask the wrapped ``app`` at ``path``, in-process."""

    def __init__(self, app: "WSGIApplication", path: str) -> None:
        self.app = app
        self.path = path

    def __call__(self, environ: dict[str, Any]) -> User | None:
        request = {key: value for key, value in environ.items() if key not in ("RAW_URI", "REQUEST_URI")}
        request.update({"PATH_INFO": self.path, "QUERY_STRING": "", "wsgi.input": io.BytesIO()})
        try:
            answer = _call(self.app, request)
        except (AuthorizationFailed, AuthorizationRefused):
            raise
        except Exception as error:
            raise AuthorizationFailed(f"raised {type(error).__name__}: {error}") from None
        if 200 <= answer.status < 300:
            return user_of(answer.headers)
        if answer.status in _STATUSES_SENT_ON:
            raise _SentOn(answer)
        raise AuthorizationFailed(f"answered {answer.status_line}")


class _SentOn(AuthorizationRefused):
    """An app's 401 or 403, to be sent to the client as it is."""

    def __init__(self, answer: _Answer) -> None:
        super().__init__(answer.status, f"auth_request answered {answer.status_line}",
                         [(name, value) for name, value in answer.headers if name.lower() not in _HOP_BY_HOP])
        self.body = answer.body


class Function:
    """``authorize``: a function of the environ returns the :class:`User` (or its name)."""

    def __init__(self, function: Callable[[dict[str, Any]], Union[User, str]]) -> None:
        self.function = function

    def __call__(self, environ: dict[str, Any]) -> User | None:
        try:
            user = self.function(environ)
        except AuthorizationRefused:
            raise
        except Exception as error:
            raise AuthorizationFailed(f"raised {type(error).__name__}: {error}") from None
        if isinstance(user, str):
            return User(user)
        if not isinstance(user, User):
            raise AuthorizationFailed(f"returned {type(user).__name__}, not a User or a user name")
        return user


def load_function(spec: str) -> Callable[[dict[str, Any]], Union[User, str]]:
    """The function ``authorize = module:callable`` names, imported now: a
    :class:`~ouistiti_gw.config.ConfigurationError` if it cannot be."""
    module_name, _, attributes = spec.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
        for attribute in attributes.split("."):
            found = getattr(found, attribute)
    except (ImportError, AttributeError) as error:
        raise ConfigurationError(f"authorize = {spec}: {type(error).__name__}: {error}", "authorize") from None
    if not callable(found):
        raise ConfigurationError(f"authorize = {spec}: not callable", "authorize")
    return found


class Authorization:
    """The decision for each WebSocket as a gateway's configuration says: who the client is,
    and which names it may reach (``rules``, with ``{user}`` and ``{group}``)."""

    def __init__(self, config: GatewayConfig, app: "WSGIApplication", rules: NameRules) -> None:
        self.rules = rules
        self.ask: Callable[[dict[str, Any]], User | None] | None = None
        self.where = ""
        if config.auth_request:
            self.ask, self.where = Subrequest(app, config.auth_request), f"auth_request {config.auth_request}"
        elif config.authorize:
            self.ask, self.where = Function(load_function(config.authorize)), f"authorize {config.authorize}"
        self._everyone = Authorized(None, rules)

    def decide(self, environ: "WSGIEnvironment", name: str) -> Authorized | Refusal:
        """Who the client of this WebSocket request for ``name`` is, or why it may not connect."""
        if self.ask is None:
            return self._everyone
        kept = credentials(environ)
        try:
            user = self.ask(kept)
        except _SentOn as refused:
            return Refusal(refused.status, f"{self.where} answered {refused.status}", "unauthorized",
                           refused.headers, refused.body)
        except AuthorizationRefused as refused:
            return Refusal(refused.status, f"{self.where}: {loggable(refused.reason)}", "unauthorized",
                           refused.headers)
        except AuthorizationFailed as failed:
            return Refusal(503, "the authorization failed", "auth_failed", logged=f"{self.where} {loggable(failed)}")
        try:
            rules = self._rules_of(user, name)
        except AuthorizationRefused as refused:
            return Refusal(403, refused.reason, "unauthorized")
        return Authorized(user, rules, kept)

    def again(self, authorized: Authorized, name: str) -> User | None:
        """The same question about a session open on ``name``, asked with the credentials its
        upgrade kept (:mod:`ouistiti_gw.gateway.recheck`): the user, or
        :class:`AuthorizationRefused` (the app's refusal, another user, a name this user may no
        longer reach) or :class:`AuthorizationFailed` (no answer)."""
        assert self.ask is not None and authorized.credentials is not None
        user = self.ask(dict(authorized.credentials))  # a copy: a function may change what it gets
        before = authorized.user
        if (user.name if user else None) != (before.name if before else None):
            raise AuthorizationRefused(403, f"the answer names {loggable(user.name) if user else 'nobody'}, "
                                            f"not {loggable(before.name) if before else 'nobody'}")
        self._rules_of(user, name)
        return user

    def resumed(self, login: Login | None) -> Authorized | None:
        """The authorization of a session a reload moved here, as :func:`login_of` carried it
        (None: it carries none, or no authorization is configured here: nothing to recheck).
        Its user is checked as an answer of the app is (:func:`identity_error`): a
        :class:`~ouistiti_gw.reload.session_state.StateError` if it would not be accepted, and
        the session stays with the old process. A user whose name cannot fill this
        configuration's ``{user}`` or ``{group}`` gets rules that serve no name, as the decision
        would refuse it any: the caller's judgement closes the session."""
        if login is None or self.ask is None:
            return None
        user = User(login.user, login.groups, login.expires) if login.user is not None else None
        wrong = identity_error(user) if user is not None else None
        if user is None and (login.groups or login.expires is not None):
            wrong = "groups or an expiry without a user"
        if wrong is not None:
            raise StateError(f"a moved login's {wrong}")
        environ = _environ_of(login)
        try:
            rules = self.rules.for_user(login.user, login.groups)
        except NameRefused:
            rules = NameRules(allow=())
        return Authorized(user, rules, environ)

    def _rules_of(self, user: User | None, name: str) -> NameRules:
        """The names ``user`` may reach, ``name`` among them, or :class:`AuthorizationRefused` (403)."""
        wrong = identity_error(user) if user is not None else None
        if wrong is not None:
            raise AuthorizationRefused(403, f"{self.where}: {wrong}")
        try:
            rules = self.rules.for_user(user.name if user else None, user.groups if user else ())
        except NameRefused as refused:
            raise AuthorizationRefused(403, f"{self.where}: {refused}") from None
        if rules.refusal(name) is not None:
            who = loggable(user.name) if user else "an anonymous client"
            raise AuthorizationRefused(403, f"{loggable(name)} is not served to {who}")
        return rules
