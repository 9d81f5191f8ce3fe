"""The admin endpoint at ``admin_path``: this process's live sessions, listed and closed.

What HAProxy's runtime API does with ``show sess`` and ``shutdown session``, over HTTP and in
JSON, under the guard of the metrics page (:class:`~ouistiti_gw.gateway.page_gate.PageGate`:
``admin_allow``, this gateway's own ``Host`` names):

- ``GET PATH``: ``{"pid": ..., "workers": [...], "sessions": [...]}``, each session with its ``id`` (``PID-N``:
  the process and the session's number in it), ``name``, ``user`` (the authorization's, or
  null), ``client``, ``since`` (Unix time), ``bytes_in`` and ``bytes_out`` (payload, as the
  server sees it), ``compressed`` (permessage-deflate) and ``moved`` (resumed here after a reload);
- ``DELETE PATH/ID`` or ``POST PATH/ID/close``: close that session; ``DELETE PATH?user=NAME``:
  every session of that user; ``code`` (1008 by default) and ``reason`` in the query. The answer
  says how many were closed.

The sessions of this gateway (its docroot) in this process and, under gunicorn with several
``GatewayWorker``, in the other workers, which this one asks (:mod:`ouistiti_gw.reload.admin_channel`).
"""
from __future__ import annotations

import json
import logging
import os
import time
from typing import TYPE_CHECKING, Any, Iterable
from urllib.parse import parse_qs

from ..config import GatewayConfig
from ..core.frames import CloseCode, fit_close_reason, is_valid_close_code
from ..core.logsafe import loggable
from ..errors import GatewayError
from ..reload.admin_channel import ask_siblings, register
from ..reload.live_sessions import LiveSessions, close_each, process_sessions
from .admission import HostPolicy
from .identity import Identity
from .page_gate import PageGate
from .session import Session

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

log = logging.getLogger(__name__)

#: The reason of an admin's close when the request names none.
DEFAULT_REASON = "closed by an administrator"
_STATUS_LINES = {200: "200 OK", 400: "400 Bad Request", 403: "403 Forbidden", 404: "404 Not Found",
                 405: "405 Method Not Allowed"}


class AdminError(GatewayError):
    """A request the endpoint cannot do: its status and a message for the admin."""

    def __init__(self, status: int, message: str, allow: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.allow = allow


def close_code(text: str) -> int:
    """The ``code`` of a close request: a code a close frame may carry and that is not reserved
    for libraries (3000-3999) -- 1000-1003, 1007-1014 or 4000-4999 -- or :class:`AdminError` 400."""
    code = int(text) if text.isascii() and text.isdigit() and len(text) == 4 else 0
    if not is_valid_close_code(code) or 3000 <= code <= 3999:
        raise AdminError(400, f"code {loggable(text)!r} is not 1000-1003, 1007-1014 or 4000-4999")
    return code


class AdminPage:
    """The endpoint at ``config.admin_path`` for a gateway whose sessions run below ``docroot``."""

    def __init__(self, config: GatewayConfig, docroot: str, identity: Identity, hosts: HostPolicy,
                 live: LiveSessions = process_sessions) -> None:
        self.path = config.admin_path
        self.docroot = docroot
        self.live = live
        self.gate = PageGate(config.admin_allow, "admin_allow", identity, hosts, what="admin request",
                             refused="the admin endpoint is not served to this address")
        register(docroot, self.for_sibling)  # the other gunicorn workers' requests

    def serves(self, path: str) -> bool:
        """Whether a request for ``path`` (PATH_INFO) is the endpoint's."""
        return path == self.path or path.startswith(self.path + "/")

    def __call__(self, environ: "WSGIEnvironment", start_response: "StartResponse") -> Iterable[bytes]:
        refusal = self.gate.refusal(environ)
        if refusal is not None:
            return _answer(start_response, 403, {"error": refusal})
        try:
            return _answer(start_response, 200, self._do(environ))
        except AdminError as error:
            return _answer(start_response, error.status, {"error": str(error)},
                           [("Allow", error.allow)] if error.allow else [])

    def _do(self, environ: "WSGIEnvironment") -> dict[str, Any]:
        method, query = environ.get("REQUEST_METHOD", "GET"), _query(environ)
        rest = environ.get("PATH_INFO", "")[len(self.path):].strip("/").split("/")
        if rest == [""]:
            if method == "GET":
                return self._list()
            if method != "DELETE":
                raise AdminError(405, f"{method} {self.path}: GET lists, DELETE ?user=NAME closes", "GET, DELETE")
            if "user" not in query:
                raise AdminError(400, f"DELETE {self.path} closes the sessions of one user: add ?user=NAME")
            return self._close(query, by_user=query["user"])
        if len(rest) == 1 or (len(rest) == 2 and rest[1] == "close"):
            wanted = "DELETE" if len(rest) == 1 else "POST"
            if method != wanted:
                raise AdminError(405, f"{method} on a session: {wanted} closes it", wanted)
            return self._close(query, by_id=rest[0])
        raise AdminError(404, f"no such admin path: {loggable(environ.get('PATH_INFO', ''))}")

    def _list(self) -> dict[str, Any]:
        """This worker's sessions and its siblings' (those that answered: ``workers``)."""
        answers = ask_siblings(self.docroot, {"op": "list"})
        sessions = [_describe(session) for session in self._sessions()]
        for answer in answers.values():
            sessions += answer.get("sessions") or []
        return {"pid": os.getpid(), "workers": sorted([os.getpid(), *answers]), "sessions": sessions}

    def _close(self, query: dict[str, str], *, by_id: str | None = None, by_user: str | None = None
               ) -> dict[str, Any]:
        """Close the session ``by_id`` (``PID-N``: here, or in the sibling worker PID), or every
        session of ``by_user`` in every worker, as ``query`` says."""
        code = close_code(query.get("code", str(int(CloseCode.POLICY_VIOLATION))))
        reason = fit_close_reason(query.get("reason", DEFAULT_REASON))
        request = {"op": "close", "id": by_id, "user": by_user, "code": code, "reason": reason}
        if by_id is None:
            closed = self._close_here(None, by_user, code, reason)
            closed += sum(int(answer.get("closed", 0)) for answer in ask_siblings(self.docroot, request).values())
        elif by_id.partition("-")[0] == str(os.getpid()):
            closed = self._close_here(by_id, None, code, reason)
        else:
            pid = by_id.partition("-")[0]
            answer = (ask_siblings(self.docroot, request, only=int(pid)).get(int(pid))
                      if pid.isascii() and pid.isdigit() else None)
            if answer is None or "error" in answer:
                raise AdminError(404, f"no live session with id {loggable(by_id)}")
            closed = int(answer.get("closed", 0))
        return {"closed": closed, "code": code, "reason": reason}

    def for_sibling(self, request: dict[str, Any]) -> dict[str, Any]:
        """What this worker answers another one's request (:mod:`ouistiti_gw.reload.admin_channel`)."""
        if request.get("op") == "list":
            return {"sessions": [_describe(session) for session in self._sessions()]}
        try:
            code = close_code(str(request.get("code")))
            return {"closed": self._close_here(request.get("id"), request.get("user"), code,
                                               fit_close_reason(str(request.get("reason", ""))))}
        except AdminError as error:
            return {"error": str(error)}

    def _sessions(self) -> list[Session]:
        """This gateway's sessions that run here now (not one that moved away on a reload)."""
        return [session for session in self.live
                if isinstance(session, Session) and session.docroot == self.docroot
                and session.reload_outcome != "moved"]

    def _close_here(self, by_id: str | None, by_user: str | None, code: int, reason: str) -> int:
        """Close this worker's session ``by_id``, or its sessions of ``by_user``; return how many."""
        if by_id is not None:
            sessions = [session for session in self._sessions() if session_id(session) == by_id]
            if not sessions:
                raise AdminError(404, f"no live session with id {loggable(by_id)}")
            which = f"id {loggable(by_id)}"
        elif isinstance(by_user, str):
            sessions = [session for session in self._sessions() if _user(session) == by_user]
            which = f"user {loggable(by_user)}"
        else:
            raise AdminError(400, "a close names a session or a user")
        for session in sessions:
            log.warning("closing %s from %s (id %s): admin request for %s: %d %s", session.name, session.client,
                        session_id(session), which, code, loggable(reason))
        return close_each(sessions, code, reason)


def session_id(session: Session) -> str:
    """A session's id on the endpoint: ``PID-N``, this process's and the session's numbers."""
    return f"{os.getpid()}-{session.id}"


def _describe(session: Session) -> dict[str, Any]:
    ws = session.websocket
    return {"id": session_id(session), "name": session.name, "user": _user(session), "client": session.client,
            "since": round(time.time() - (time.monotonic() - session.started), 3),
            "bytes_in": ws.bytes_received, "bytes_out": ws.bytes_sent,
            "compressed": ws.protocol.deflate is not None, "moved": session.resumed}


def _user(session: Session) -> str | None:
    authorized = session.authorized
    return authorized.user.name if authorized is not None and authorized.user is not None else None


def _query(environ: "WSGIEnvironment") -> dict[str, str]:
    """The query's parameters (the last of each name), decoded as UTF-8, or :class:`AdminError` 400."""
    try:
        raw = environ.get("QUERY_STRING", "").encode("latin-1").decode("utf-8")
        return {key: values[-1] for key, values in parse_qs(raw, keep_blank_values=True, errors="strict").items()}
    except (UnicodeError, ValueError):
        raise AdminError(400, "the query is not UTF-8") from None


def _answer(start_response: "StartResponse", status: int, document: dict[str, Any],
            headers: list[tuple[str, str]] | None = None) -> Iterable[bytes]:
    body = json.dumps(document, indent=1).encode("utf-8") + b"\n"
    start_response(_STATUS_LINES[status], [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                                           ("Cache-Control", "no-store"), *(headers or [])])
    return [body]
