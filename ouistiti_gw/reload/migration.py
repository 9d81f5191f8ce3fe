"""Moving live sessions from one process to its successor, over a UNIX socket (a reload).

The old process pauses each session (:meth:`~ouistiti_gw.gateway.session.Session.pause`,
:mod:`ouistiti_gw.reload.pause`), sends one record holding its state
(:mod:`ouistiti_gw.reload.session_state`) with the client's and the UNIX
server's sockets as ancillary data (``SCM_RIGHTS``), and waits for the successor's answer:
taken (the session ends in the old process without a word to either peer) or refused (it
resumes there). The successor builds each session it takes with the gateway that serves the
same docroot (:func:`register`) before it answers; a state it cannot read or restore (another
version, a malformed one), descriptors that are not a client's and a UNIX server's sockets, or a
docroot it does not serve are refused, and that session stays with the old process until it
ends.

The channel's peer is the old process of the same service (the CLI's master pairs them; under
gunicorn the peer's credentials are checked), yet nothing it sends is trusted further than it
must be: every descriptor a record brings is closed on every path but the one where a session
takes it, a record is at most :data:`MAX_RECORD_BYTES`, and a malformed one (more descriptors
than a session's two, a length or JSON that does not hold, not an object) ends the channel.

A record on the channel (a ``SOCK_STREAM`` socketpair, so a state of any size fits): a 4-byte
big-endian length, then that many bytes of JSON; a session's two descriptors ride on its first
byte. Old to new: ``{"session": STATE}`` + [client, server]; new to old: ``{"taken": bool,
"why": str}``. The old process shuts its side down when it has nothing more to send.

What never moves: a wss:// session (Python's ``ssl`` cannot hand its TLS state to another
process) and a session whose closing handshake has started; they end in the old process.
"""
from __future__ import annotations

import json
import logging
import struct
from dataclasses import dataclass
from typing import Callable, Iterable

from gevent import socket
from gevent.lock import Semaphore
from gevent.pool import Pool
from gevent.queue import Queue
from gevent.ssl import SSLSocket

from ..core.logsafe import loggable
from ..errors import GatewayError
from ..green.fdpass import close_fds, receive_fds, send_fds
from ..green.light_greenlet import LightGreenlet
from ..green.sockio import StreamEnded, recv_exactly
from .live_sessions import LiveSession
from .session_state import SessionState, StateError, as_fields, from_fields

log = logging.getLogger(__name__)

#: Builds a moved session in the successor, ``resume(state, client, server)``, and returns what
#: runs it to its end; :class:`StateError` when the state cannot be restored.
Resume = Callable[[SessionState, socket.socket, socket.socket], Callable[[], None]]
_LENGTH = struct.Struct("!I")
#: Descriptors a record may carry: a session's two.
_MAX_FDS = 2
#: The longest record: a state holds at most a read's unparsed bytes and a message's beginning
#: (a SOCK_SEQPACKET server's largest packet), in base64.
MAX_RECORD_BYTES = 64 * 1024 * 1024
#: Sessions being paused or sent at once (each waits for at most this many moves before its own).
SESSIONS_IN_FLIGHT = 64
#: The gateways of this process that take moved sessions, by docroot.
_resumers: dict[str, Resume] = {}


def register(docroot: str, resume: Resume) -> None:
    """Sessions moved here for ``docroot`` run with ``resume`` (the gateway serving it)."""
    _resumers[docroot] = resume


@dataclass
class Migration:
    """What a reload did with the old process's sessions."""

    moved: int = 0
    #: Sessions that stay with the old process: wss://, closing, or refused by the successor.
    staying: int = 0


# -- records ---------------------------------------------------------------------------------

def send_record(channel: socket.socket, fields: dict, fds: Iterable[int] = ()) -> None:
    """One record, ``fds`` riding on its first byte."""
    body = json.dumps(fields, separators=(",", ":")).encode("utf-8")
    send_fds(channel, _LENGTH.pack(len(body)) + body, list(fds))


class RecordError(GatewayError):
    """A record that does not hold: the channel cannot go on."""


class SuccessorGone(GatewayError):
    """The new process stopped taking sessions: those not moved yet stay in this one."""


def receive_record(channel: socket.socket) -> tuple[dict, list[int]] | None:
    """The next record and the descriptors it carried (the caller's to close); None at the end of
    the channel. OSError, or :class:`RecordError` when it does not hold (cut short, too long, not
    a JSON object, too many descriptors), its descriptors closed then."""
    head, fds, truncated = receive_fds(channel, _LENGTH.size, _MAX_FDS)
    if truncated:
        raise RecordError(f"a record came with more than {_MAX_FDS} descriptors")
    try:
        if not head:
            return None
        head += _receive(channel, _LENGTH.size - len(head))
        (length,) = _LENGTH.unpack(head)
        if length > MAX_RECORD_BYTES:
            raise RecordError(f"a record of {length} bytes (at most {MAX_RECORD_BYTES})")
        try:
            fields = json.loads(_receive(channel, length))
        except ValueError as error:  # not UTF-8, or not JSON
            raise RecordError(f"a record that is not JSON: {error}") from None
        if not isinstance(fields, dict):
            raise RecordError("a record that is not a JSON object")
    except BaseException:
        close_fds(fds)
        raise
    return fields, fds


def _receive(channel: socket.socket, size: int) -> bytes:
    try:
        return recv_exactly(channel, size)
    except StreamEnded:
        raise RecordError("the takeover channel ended inside a record") from None


# -- the old process ---------------------------------------------------------------------------

def why_stays(session: LiveSession) -> str | None:
    """Why ``session`` cannot move at all (None: it can, once paused)."""
    if isinstance(session.client_socket, SSLSocket):
        return "wss:// (the TLS state cannot leave this process)"
    return None


def give_sessions(channel: socket.socket, sessions: Iterable[LiveSession], migration: Migration) -> None:
    """Move every session of ``sessions`` that can move; count the others in ``handover`` (each
    is marked ``"drained"``: it ends here). Raises :class:`SuccessorGone` when the successor is
    gone (the sessions not moved yet stay here).

    Up to :data:`SESSIONS_IN_FLIGHT` sessions are paused and sent at once, their answers read as
    they come (in the order sent): a session waits for the move of a few others, not for every
    round trip before its own.
    """
    sending = Semaphore()
    sent: Queue = Queue()  # the sessions sent, in order, then None
    answers = LightGreenlet.spawn(_read_answers, channel, sent, migration)
    givers = Pool(SESSIONS_IN_FLIGHT, greenlet_class=LightGreenlet)
    try:
        for session in sessions:
            if session.reload_outcome is not None:
                continue
            if answers.ready():
                break  # the reader failed: nothing more can move
            givers.spawn(_give, channel, session, sending, sent, migration)
        givers.join()
    finally:
        sent.put(None)
        answers.join()
    if not answers.successful() or answers.value is False:
        raise SuccessorGone("the new process is gone")


def _give(channel: socket.socket, session: LiveSession, sending: Semaphore, sent: Queue, migration: Migration) -> None:
    why = why_stays(session)
    state = session.pause() if why is None else None
    if state is not None:
        with sending:
            try:
                send_record(channel, {"session": as_fields(state)},
                            [session.client_socket.fileno(), session.backend.fileno()])
                sent.put(session)
                return
            except OSError as error:
                log.warning("reload: the new process is gone (%s): session %s stays here", error, session.name)
                session.moved(False)
    elif why is not None:
        log.info("reload: session %s from %s stays to drain: %s", session.name, session.client, why)
    session.reload_outcome = "drained"
    migration.staying += 1


def _read_answers(channel: socket.socket, sent: Queue, migration: Migration) -> bool:
    """The successor's answer to each session sent; False once the channel failed (the sessions
    still waiting then resume here)."""
    healthy = True
    for session in iter(sent.get, None):
        answer = None
        if healthy:
            try:
                answer = receive_record(channel)
            except (OSError, RecordError) as error:
                log.warning("reload: the new process is gone (%s): sessions not moved stay here", error)
            healthy = answer is not None
        fields = answer[0] if answer is not None else {}
        if answer is not None:
            close_fds(answer[1])  # an answer carries none
        taken = fields.get("taken") is True
        if answer is not None and not taken:
            log.warning("reload: the new process refused session %s from %s: %s", session.name, session.client,
                        loggable(fields.get("why")))
        session.moved(taken)
        if taken:
            migration.moved += 1
        else:
            session.reload_outcome = "drained"
            migration.staying += 1
    return healthy


# -- the successor -----------------------------------------------------------------------------

def take_sessions(channel: socket.socket) -> int:
    """Take the sessions the old process sends until it is done; return how many were taken."""
    taken = 0
    while True:
        try:
            record = receive_record(channel)
        except (OSError, RecordError) as error:
            log.warning("reload: takeover channel failed: %s", loggable(error))
            return taken
        if record is None:
            return taken
        fields, fds = record
        why = _take(fields, fds)
        if why is not None:
            log.info("reload: refused a session: %s", loggable(why))
        taken += why is None
        try:
            send_record(channel, {"taken": why is None, "why": why or ""})
        except OSError as error:
            log.warning("reload: takeover channel failed: %s", error)
            return taken


def _take(fields: dict, fds: list[int]) -> str | None:
    """Build and start the session a record carries; None once it runs, else why not (its
    descriptors, our copies, are closed: the old process keeps it)."""
    sockets: list[socket.socket] = []
    try:
        if len(fds) != _MAX_FDS:
            raise StateError(f"a session comes with {_MAX_FDS} descriptors, not {len(fds)}")
        state = from_fields(fields.get("session"))
        resume = _resumers.get(state.docroot)
        if resume is None:
            raise StateError(f"no gateway serves docroot {state.docroot} here")
        for fd in fds:
            sockets.append(_adopt(fd))
        client, backend = sockets
        _check_kinds(client, backend)
        run = resume(state, client, backend)
    except StateError as error:
        for sock in sockets:
            sock.close()
        close_fds(fds[len(sockets):])
        return str(error)
    LightGreenlet.spawn(run)
    return None


def _adopt(fd: int) -> socket.socket:
    """The socket of descriptor ``fd``, which it then owns; StateError (``fd`` still ours) if not a socket."""
    try:
        return socket.socket(fileno=fd)
    except OSError as error:
        raise StateError(f"descriptor {fd} is not a socket ({error.strerror})") from None


def _check_kinds(client: socket.socket, backend: socket.socket) -> None:
    """A client's connection is a stream (TCP, or UNIX behind a proxy); a server's, a UNIX stream or seqpacket."""
    if client.type != socket.SOCK_STREAM:
        raise StateError("the client's descriptor is not a stream socket")
    if backend.family != socket.AF_UNIX or backend.type not in (socket.SOCK_STREAM, socket.SOCK_SEQPACKET):
        raise StateError("the server's descriptor is not a UNIX stream or seqpacket socket")
