"""A session paused for a reload: where the reload's greenlet and the session's pumps meet
(:class:`Pause`), and the session as data (:func:`capture`, :func:`restore`).

A reload moves a session to another process (:mod:`ouistiti_gw.reload.migration`): the session
stops both its pumps before their next read, where no frame is half written and every byte read
is in the protocol core or the session's buffers; :func:`capture` is then all of it
(:class:`~ouistiti_gw.reload.session_state.SessionState`), and :func:`restore` puts it into a new
session there. This layer sits below the gateway: it works on the session
(:class:`~ouistiti_gw.gateway.session.Session`) through :class:`Pausable`.
"""
from __future__ import annotations

import logging
from typing import Protocol

import gevent
from gevent import socket
from gevent.event import AsyncResult

from ..core.ratelimit import TokenBucket
from ..core.utf8 import Utf8Splitter
from ..green.sockio import interrupt_read
from ..green.websocket import WebSocket
from .session_state import Admission, Login, SessionState

log = logging.getLogger(__name__)

#: How long a reload waits for a session's pumps to reach a read (one writing to a peer that does
#: not read may wait long): past it the session stays where it is.
PAUSE_TIMEOUT_SECONDS = 2.0


class HeldMessage(Protocol):
    """The session's feed to the server (:class:`~ouistiti_gw.gateway.relay.ServerFeed`)."""

    #: The beginning of a client message not yet written to the server.
    held: bytearray


class Pausable(Protocol):
    """The parts of a session that pausing stops and its state is made of."""

    docroot: str
    name: str
    client: str
    backend: socket.socket
    started: float
    proxy_header_sent: bool
    resumed: bool
    admission: Admission

    @property
    def websocket(self) -> WebSocket: ...

    @property
    def feed(self) -> HeldMessage: ...

    @property
    def splitter(self) -> Utf8Splitter: ...

    @property
    def bucket(self) -> TokenBucket | None: ...

    @property
    def login(self) -> Login | None: ...


class Pause:
    """One session's pause, from the reload's request to the successor's answer.

    The reload's greenlet stops the session's pumps and waits for its state
    (:meth:`wait_for_state`), then passes the successor's answer on (:meth:`decide`); the
    session's own greenlet, once both pumps stopped, hands the state over and waits for that
    answer (:meth:`settle`).
    """

    __slots__ = ("_state", "_decision")

    def __init__(self) -> None:
        self._state = AsyncResult()
        self._decision = AsyncResult()

    @staticmethod
    def possible(websocket: WebSocket) -> bool:
        """False when the session cannot move now: it is ending, or already pausing (its
        keepalive stopped), or its core says no (its closing handshake has started:
        :meth:`~ouistiti_gw.core.protocol.Protocol.why_not_movable`)."""
        return websocket.keepalive.running and websocket.protocol.why_not_movable() is None

    def wait_for_state(self, session: Pausable) -> SessionState | None:
        """Stop both pumps of ``session`` before their next read and return its state once they
        stopped; None (it goes on here) when it cannot move by then, or they did not stop in
        :data:`PAUSE_TIMEOUT_SECONDS`."""
        websocket = session.websocket
        websocket.keepalive.stop()  # no ping may start while we move, no idle timeout may cut the wait
        websocket.pause_reading()
        interrupt_read(session.backend)
        try:
            state = self._state.get(timeout=PAUSE_TIMEOUT_SECONDS)
        except gevent.Timeout:
            log.info("reload: session %s from %s stays here: it did not stop for %g s (a peer that does not read)",
                     session.name, session.client, PAUSE_TIMEOUT_SECONDS)
            state = None
        if state is None:
            self._decision.set(False)  # when it does stop, it goes on here
        return state

    def decide(self, taken: bool) -> None:
        """The successor's answer (True: it took the session), after a state."""
        self._decision.set(taken)

    @property
    def deciding(self) -> bool:
        """Until the answer: the session may be another process's by then."""
        return not self._decision.ready()

    def settle(self, session: Pausable, stopped: bool) -> bool:
        """From the session's greenlet, both pumps stopped: hand its state over and return
        whether the successor took it. ``stopped`` False (the server pump ended the session
        instead, as the server closed), or a core that cannot move now: no state, it stays."""
        websocket = session.websocket
        protocol = websocket.protocol
        websocket.pausing = False  # (it reads again if it goes on here)
        if stopped and protocol.why_not_movable() is None:  # (inside a compressed message, it is not)
            websocket.wait_for_writes()
            if protocol.deflate is not None:
                protocol.deflate.drop()  # between messages: the successor starts a fresh context
            self._state.set(capture(session))
            return bool(self._decision.get())
        self._state.set(None)
        return False


def capture(session: Pausable) -> SessionState:
    """All ``session`` is, for a successor (both pumps stopped before a read). The feed wrote
    the whole messages it gathered before that read: only a message's beginning is held."""
    websocket, bucket = session.websocket, session.bucket
    return SessionState(
        docroot=session.docroot, name=session.name, client=session.client, started=session.started,
        last_heard=websocket.last_heard, held=bytes(session.feed.held), server_pending=session.splitter.pending,
        proxy_header_sent=session.proxy_header_sent,
        message_tokens=bucket.tokens if bucket is not None else None,
        message_bucket_updated=bucket.updated if bucket is not None else None,
        protocol=websocket.protocol.snapshot(), admission=session.admission, login=session.login)


def restore(session: Pausable, state: SessionState) -> None:
    """Put ``state``, a session paused in another process, into ``session``, before it runs
    (its :attr:`~SessionState.login` is the gateway's to judge:
    :meth:`~ouistiti_gw.gateway.authorization.Authorization.resumed`)."""
    session.started, session.websocket.last_heard = state.started, state.last_heard
    session.feed.held[:] = state.held
    session.splitter.pending = state.server_pending
    session.proxy_header_sent, session.resumed = state.proxy_header_sent, True
    bucket = session.bucket
    if bucket is not None and state.message_tokens is not None and state.message_bucket_updated is not None:
        bucket.resume(state.message_tokens, state.message_bucket_updated)
    session.websocket.protocol.restore(state.protocol)
