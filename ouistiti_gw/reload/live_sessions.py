"""The sessions running in this process: what a stopping server closes, and a reload moves."""
from __future__ import annotations

import weakref
from typing import Iterator, Protocol, Sequence

import gevent
from gevent import socket

from ..core.frames import CloseCode
from ..green.light_greenlet import LightGreenlet
from .session_state import SessionState


class LiveSession(Protocol):
    """What a stopping server and a reload need of a session
    (:class:`ouistiti_gw.gateway.session.Session`): this layer sits below the gateway."""

    name: str
    client: str
    backend: socket.socket
    #: ``"moved"``, ``"drained"`` (see the session), or None while it runs here.
    reload_outcome: str | None

    @property
    def client_socket(self) -> socket.socket: ...

    def close(self, code: int, reason: str) -> None: ...

    def pause(self) -> SessionState | None: ...

    def moved(self, taken: bool) -> None: ...


#: How long :func:`close_each` waits for the close frames to go out.
CLOSE_ALL_SECONDS = 1.0


class LiveSessions:
    """The sessions running in this process, so that a stopping server can close them properly
    (1001, and a moment for the client's answer) instead of cutting them.

    One per process, :data:`process_sessions`, and not one per gateway: the server that stops
    (gunicorn's worker, the CLI's server) does not build the gateway and cannot reach it -- a
    gunicorn worker serves whatever app it loaded, the gateway possibly wrapped deep inside it,
    or several gateways -- while every session of every gateway lives in that process. A test
    or an embedding that wants its own set passes one to :class:`~ouistiti_gw.gateway.session.Session`.
    """

    def __init__(self) -> None:
        self._sessions: "weakref.WeakSet[LiveSession]" = weakref.WeakSet()

    def add(self, session: LiveSession) -> None:
        self._sessions.add(session)

    def discard(self, session: LiveSession) -> None:
        self._sessions.discard(session)

    def __iter__(self) -> Iterator[LiveSession]:
        return iter(list(self._sessions))

    def __len__(self) -> int:
        return len(self._sessions)

    def wait_until_empty(self, timeout: float) -> None:
        """Return once every session ended (or moved), or after ``timeout`` seconds."""
        with gevent.Timeout(timeout, False):
            while self._sessions:
                gevent.sleep(0.1)

    def close_all(self, code: int = CloseCode.GOING_AWAY, reason: str = "server shutting down") -> int:
        """Send every open session a close frame (1001 by default); return how many there were.

        Each close has its greenlet (:func:`close_each`): one session writing to a client that
        does not read holds its own close, not the others'."""
        return close_each(list(self._sessions), code, reason)


def close_each(sessions: Sequence[LiveSession], code: int, reason: str) -> int:
    """Send each of ``sessions`` a close frame, each from its own greenlet, all within
    :data:`CLOSE_ALL_SECONDS`; return how many there were."""
    gevent.joinall([LightGreenlet.spawn(session.close, code, reason) for session in sessions],
                   timeout=CLOSE_ALL_SECONDS)
    return len(sessions)


#: The sessions of this process (see :class:`LiveSessions` for why the registry is process-wide).
process_sessions = LiveSessions()
