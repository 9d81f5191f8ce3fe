"""Under gunicorn, where an old ``GatewayWorker`` finds the new workers to hand its sessions to.

On ``kill -HUP`` gunicorn's master forks new workers, then sends the old ones SIGTERM at once; by
default an old worker then closes its sessions (1001) within ``--graceful-timeout``. Here each
``GatewayWorker``, once its app is loaded, listens on a takeover socket in a directory that only
the workers' user can enter, which gunicorn's master picks once (:func:`rendezvous_directory`,
called as it builds each worker object, before the fork) and keeps across HUPs:

    $XDG_RUNTIME_DIR/ouistiti-gw/   when that is set and is the workers' user's own, mode 0700
    /run/ouistiti-gw/                else when the workers run as root
    $TMPDIR/ouistiti-gw-XXXXXXXX/    else a new one (``mkdtemp``), removed when the master exits
        MASTERPID-WORKERPID.sock

Nobody else can make the first two (their parents are the user's, or root's, alone) nor guess
the third before it exists, so another local user cannot turn migration off by making the
directory first (the old ``/tmp/ouistiti-gw-UID`` could be); one of the first two that exists
but is not the user's own with mode 0700 is passed over (one log line).

A worker told to stop looks there for its *successors*: workers of the same master that started
after it, less than :data:`FRESH_SECONDS` before the SIGTERM. gunicorn forks a reload's new
workers a moment before it stops the old ones; at a plain shutdown every sibling is older than
that, so nothing moves and sessions close with 1001 as before. (So a second HUP, or a shutdown,
within those seconds of a reload or of the start may find the previous generation's workers too:
sessions then move to a worker that is stopping as well, and close there.)

It waits for their sockets (a new worker is still loading its app), checks that the peer of
each connection is that very worker (``SO_PEERCRED``: same user, that PID), and deals its
sessions out among them over :mod:`ouistiti_gw.reload.migration`. What cannot move (wss://, a
closing session, a refused one) is closed with 1001 as before. A worker unlinks its socket when
it stops.
"""
from __future__ import annotations

import atexit
import logging
import os
import shutil
import socket as stdlib_socket
import stat
import struct
import tempfile
import time
from typing import Callable

import gevent
from gevent import socket

from ..green.light_greenlet import LightGreenlet
from .live_sessions import LiveSessions
from .migration import Migration, SuccessorGone, give_sessions, take_sessions

log = logging.getLogger(__name__)

#: A sibling started less than this before our SIGTERM is a reload's new worker (gunicorn forks
#: them all, then stops the old ones: milliseconds apart).
FRESH_SECONDS = 2.0
_TICKS = os.sysconf("SC_CLK_TCK")


#: Where workers running as root meet.
ROOT_DIRECTORY = "/run/ouistiti-gw"
#: The directory picked for each (uid, gid) of workers, once per master.
_picked: dict[tuple[int, int], str | None] = {}


def rendezvous_directory(uid: int, gid: int) -> str | None:
    """The directory where this master's workers, running as ``uid``:``gid``, meet (see the
    module's docstring); None (and a log line) when none can be made. Called in gunicorn's
    master: the same one for every worker it starts, a HUP's included, unless it is gone (a
    cleaner of old temporary files may remove it): then another."""
    picked = _picked.get((uid, gid))
    if picked is None or not is_private(picked, uid):
        picked = _picked[uid, gid] = _pick(uid, gid)
    return picked


def _pick(uid: int, gid: int) -> str | None:
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and is_private(base, uid):
        path = _made(os.path.join(base, "ouistiti-gw"), uid, gid)
        if path is not None:
            return path
    if uid == 0:
        path = _made(ROOT_DIRECTORY, uid, gid)
        if path is not None:
            return path
    try:
        path = tempfile.mkdtemp(prefix="ouistiti-gw-")
        _give_to(path, uid, gid)
    except OSError as error:
        log.warning("reload: no directory for the takeover sockets (%s): sessions will not move", error)
        return None
    atexit.register(_remove, path, os.getpid())
    return path


def _made(path: str, uid: int, gid: int) -> str | None:
    """``path``, made for ``uid`` alone if missing; None (one log line) if it cannot be, or is not
    ``uid``'s own directory closed to others."""
    try:
        os.mkdir(path, 0o700)
        _give_to(path, uid, gid)
    except FileExistsError:
        pass
    except OSError as error:
        log.warning("reload: cannot make %s (%s): a temporary directory instead", path, error)
        return None
    if is_private(path, uid):
        return path
    log.warning("reload: %s is not a directory of uid %d closed to others: a temporary directory instead", path, uid)
    return None


def _give_to(path: str, uid: int, gid: int) -> None:
    """A root master's directory for workers that run as another user (gunicorn's ``--user``)."""
    if os.geteuid() != uid:
        os.chown(path, uid, gid)


def _remove(path: str, creator: int) -> None:
    """At the master's exit (its forked workers exit through the same handlers)."""
    if os.getpid() == creator:
        shutil.rmtree(path, ignore_errors=True)


def is_private(path: str, uid: int) -> bool:
    """``path`` is a directory (not a link to one) of ``uid``'s, closed to others."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == uid and not info.st_mode & 0o077


def _started(pid: int) -> float | None:
    """Seconds since boot at which ``pid`` started (None: it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as status:
            return int(status.read().rsplit(b")", 1)[1].split()[19]) / _TICKS
    except (OSError, IndexError, ValueError):
        return None


def _uptime() -> float:
    with open("/proc/uptime") as uptime:
        return float(uptime.read().split()[0])


def siblings() -> list[int]:
    master = os.getppid()
    try:
        with open(f"/proc/{master}/task/{master}/children") as children:
            return [int(pid) for pid in children.read().split() if int(pid) != os.getpid()]
    except OSError:
        return []


def successors() -> list[int]:
    """The workers of our master that a reload started: younger than us, and fresh."""
    mine, now = _started(os.getpid()), _uptime()
    found = []
    for pid in siblings():
        started = _started(pid)
        if started is not None and mine is not None and started > mine and now - started < FRESH_SECONDS:
            found.append(pid)
    return found


def socket_path(directory: str, pid: int) -> str:
    return os.path.join(directory, f"{os.getppid()}-{pid}.sock")


class WorkerPoint:
    """A socket of this worker's at ``path`` in the rendezvous directory: each connection from
    the workers' user is served by ``serve`` in a greenlet of its own, any other one closed unread."""

    def __init__(self, path: str, serve: Callable[[socket.socket], None]) -> None:
        self.path = path
        if os.path.exists(self.path):
            os.unlink(self.path)  # a dead worker's, with our PID
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(16)
        self._serve = serve
        self._accepting = LightGreenlet.spawn(self._accept)

    def _accept(self) -> None:
        while True:
            channel, _ = self.listener.accept()
            if peer(channel)[1] != os.getuid():
                channel.close()
                continue
            LightGreenlet.spawn(self._serve, channel)

    def close(self) -> None:
        """No more connections (we stop too): the socket goes."""
        self._accepting.kill()
        self.listener.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


class TakeoverPoint(WorkerPoint):
    """This worker's takeover socket: sessions of older workers come in there."""

    def __init__(self, directory: str) -> None:
        super().__init__(socket_path(directory, os.getpid()), self._take)

    @staticmethod
    def _take(channel) -> None:
        with channel:
            log.info("reload: took %d session(s) from an old worker", take_sessions(channel))


def peer(channel) -> tuple[int, int]:
    """``(pid, uid)`` of the process at the other end of a UNIX connection."""
    credentials = channel.getsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _ = struct.unpack("3i", credentials)
    return pid, uid


def _connect(directory: str, pid: int, deadline: float):
    """A takeover channel to the worker ``pid``, once it listens (None past ``deadline``)."""
    path = socket_path(directory, pid)
    while time.monotonic() < deadline and _started(pid) is not None:
        channel = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            channel.connect(path)
        except OSError:
            channel.close()
            gevent.sleep(0.05)
            continue
        if peer(channel) == (pid, os.getuid()):
            return channel
        channel.close()
        log.warning("reload: %s is not worker %d's: not used", path, pid)
        return None
    return None


def migrate(directory: str, sessions: LiveSessions, wait: float) -> Migration:
    """Deal ``sessions`` out among this worker's successors (waiting up to ``wait`` seconds for
    them to listen); what did not move is left to the caller."""
    migration = Migration()
    pids = successors()
    if not pids:
        return migration
    deadline = time.monotonic() + wait
    channels = [channel for channel in (_connect(directory, pid, deadline) for pid in pids) if channel is not None]
    if not channels:
        log.warning("reload: no new worker listened within %g s: sessions are closed", wait)
        return migration
    everyone = list(sessions)
    movers = [LightGreenlet.spawn(_give, channel, everyone[index::len(channels)], migration)
              for index, channel in enumerate(channels)]
    gevent.joinall(movers)
    log.info("reload: %d session(s) moved to %d new worker(s), %d stay", migration.moved, len(channels),
             migration.staying)
    return migration


def _give(channel, sessions: list, migration: Migration) -> None:
    with channel:
        try:
            give_sessions(channel, sessions, migration)
        except SuccessorGone:
            pass  # that worker is gone: its share stays here
