"""From a name to the socket file below docroot, held open: the file checked is the file connected.

:mod:`ouistiti_gw.gateway.names` judges names, as text; this module finds the file a name leads to with
descriptors, never by a path looked up twice. Docroot is opened (``O_PATH``), then each component
in the directory opened before it, following no link (``O_NOFOLLOW``), and the file itself is
held open (``O_PATH``) until :func:`~ouistiti_gw.green.unix.connect_opened` connects to it through
``/proc/self/fd/N``: the kernel finds the server by the inode the descriptor holds, whatever
names docroot gives it by then. Looking a path up to check it, then again to connect, let a
directory swapped for a link in between lead to a denied socket.

A name with a link on its way is resolved first (:func:`~ouistiti_gw.gateway.names.resolve_inside`),
the rules judge the name it resolves to (:func:`~ouistiti_gw.gateway.names.check_destination`), and that
name is opened the same way: a link on it then means docroot changed during the lookup, or the
links loop (404).

A socket file with more than one name (a hard link: sockets are mode 0777, so
``fs.protected_hardlinks`` lets anyone who may write docroot link them) is refused (403): the
rules judge names, and the other names of a file cannot be found from it. ``bind`` gives a
socket one name; a second one is somebody's link.

Bounded work: ouistiti's subprotocol fallback tries at most :data:`MAX_PROTOCOL_CANDIDATES`
names. A one-component name costs one ``openat`` when nothing is there and ``openat`` plus
``fstat`` when something is; a name of *n* components, *n* ``openat`` and *n* - 1 ``close``
more; a link on the way, ``os.path.realpath`` (an ``lstat`` per component of the whole path)
and the second walk; each lookup, a ``stat`` of docroot (still the directory held open?). A
handshake for a missing name with 6 000 subprotocols makes 9 ``openat`` and the ``stat``, well
under a session's turn of the event loop (``benchmarks/PROFILE.md``): it does not yield.
"""
from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from typing import Any

from ..green.unix import BackendUnavailable, connect_opened, unavailable
from .names import (
    NameRefused,
    NameRules,
    check_destination,
    check_fits,
    check_name,
    fits_sun_path,
    resolve_inside,
)

log = logging.getLogger(__name__)

#: How many of the requested subprotocols the fallback tries as socket names, in the client's
#: order; the others are ignored (still a valid handshake, served if its name exists). Browsers
#: send what the page lists: one to three (STOMP's versions, MQTT's, graphql-ws'), WAMP's
#: serializers up to six or so.
MAX_PROTOCOL_CANDIDATES = 8
#: Every descriptor the lookup opens: a handle on a name, not an open file (no read, no write,
#: no effect on FIFOs or devices), and never a link followed.
_HANDLE = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_CHANGED = "no such socket (a link on its way loops, or changed during the lookup)"


class _LinkOnTheWay(Exception):
    """The name's way holds a symbolic link: resolve it first."""


@dataclass(frozen=True)
class Target:
    """Where a WebSocket request goes: the name it was found by, the subprotocol to answer."""

    name: str
    protocol: str | None


class SocketFile:
    """What a name leads to below docroot, held open (``O_PATH``) until connected; or, when there
    is nothing, the error that says so, raised by :meth:`connect` as its HTTP status. Close it
    (it is a context manager) once connected, on every path. ``name`` is where it is below
    docroot, links followed (what allow/deny judged)."""

    def __init__(self, name: str, fd: int | None, mode: int | None = None,
                 error: OSError | None = None) -> None:
        self.name = name
        self.fd = fd
        self.mode = mode  # its type and permissions (``st_mode``): a whole stat_result is 600 bytes a session
        self.error = error

    @property
    def exists(self) -> bool:
        return self.fd is not None

    @property
    def is_directory(self) -> bool:
        return self.mode is not None and stat.S_ISDIR(self.mode)

    def connect(self) -> Any:
        """A socket connected to this very file: :class:`~ouistiti_gw.green.unix.BackendUnavailable` if
        there is none (404), it is no socket (403), or nobody listens (503)."""
        if self.error is not None:
            raise unavailable(self.error)
        if self.fd is None or self.mode is None:
            raise ValueError("the socket file is closed")
        return connect_opened(self.fd, self.mode)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def take(self) -> "SocketFile":
        """This file in a new holder, this one left empty: what a ``with`` block hands on outlives it."""
        taken = SocketFile(self.name, self.fd, self.mode, self.error)
        self.fd = None
        return taken

    def __enter__(self) -> "SocketFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_target(docroot: str, rules: NameRules, name: str, protocols: list[str]) -> tuple[Target, SocketFile]:
    """The socket file for ``name`` (allowed by ``rules`` already), with ouistiti's fallback on
    the requested subprotocols, held open.

    ouistiti (``mod_websocket.c``, ``_checkfile``) opens ``docroot/name``; if that does not exist
    it tries ``docroot/protocol``, and if ``name`` is a directory it tries ``name/protocol``. We
    do the same for each of the first :data:`MAX_PROTOCOL_CANDIDATES` requested protocols in
    order, a candidate that fails the string checks or the rules being skipped. Raises
    :class:`NameRefused` (403) for a name too long for a socket address, one whose links lead out
    of docroot or to a name the rules refuse, or to a socket with more than one name (a
    candidate of the fallback too, unless it leads to nothing), and
    :class:`~ouistiti_gw.green.unix.BackendUnavailable` when docroot cannot be looked into (out of
    descriptors: 503). The file returned may be missing, a directory or no socket at all: its
    :meth:`SocketFile.connect` says so.
    """
    root = hold_docroot(docroot)
    return _choose(root.fd, root.real_path, rules, name, protocols)


@dataclass(frozen=True)
class _Root:
    """The docroot directory held open (``O_PATH``) between lookups, and its resolved path."""

    fd: int
    real_path: str
    device: int
    inode: int


#: Each docroot's held directory, by the path the gateway was given.
_roots: dict[str, _Root] = {}


def hold_docroot(docroot: str) -> _Root:
    """The directory ``docroot`` names now, held open: one ``stat`` a lookup says it is still
    the one held (else it is opened again), instead of a ``realpath`` (an ``lstat`` per
    component) and an ``open`` and ``close`` each time. A docroot replaced, or a link on its
    path pointed elsewhere, is a new directory: the next lookup opens it. The gateway calls it
    when it is built, so that the descriptor is taken at start, not by the first client
    (:class:`~ouistiti_gw.green.unix.BackendUnavailable` if docroot cannot be opened)."""
    try:
        now = os.stat(docroot)
    except OSError as error:
        raise unavailable(error) from None
    held = _roots.get(docroot)
    if held is not None and (held.device, held.inode) == (now.st_dev, now.st_ino):
        return held
    real_path = os.path.realpath(docroot)
    try:
        fd = os.open(real_path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as error:
        raise unavailable(error) from None
    opened = os.fstat(fd)
    _roots[docroot] = _Root(fd, real_path, opened.st_dev, opened.st_ino)
    if held is not None:
        os.close(held.fd)
    return _roots[docroot]


def _choose(root: int, real_root: str, rules: NameRules, name: str, protocols: list[str]) -> tuple[Target, SocketFile]:
    protocol = protocols[0] if protocols else None
    check_fits(os.path.join(real_root, name))
    with _open_resolved(root, real_root, rules, name, judge_missing=True) as asked:
        if asked.exists and not asked.is_directory:
            return Target(name, protocol), asked.take()
        prefix = name + "/" if asked.is_directory else ""
        if len(protocols) > MAX_PROTOCOL_CANDIDATES:
            log.debug("more than %d subprotocols requested: only the first %d are tried as socket names",
                      MAX_PROTOCOL_CANDIDATES, MAX_PROTOCOL_CANDIDATES)
        for candidate_protocol in protocols[:MAX_PROTOCOL_CANDIDATES]:
            candidate = prefix + candidate_protocol
            if not _may_serve(rules, real_root, candidate):
                continue
            with _open_resolved(root, real_root, rules, candidate, judge_missing=False) as found:
                if found.exists:
                    return Target(candidate, candidate_protocol), found.take()
        return Target(name, protocol), asked.take()


def _may_serve(rules: NameRules, real_root: str, candidate: str) -> bool:
    """A candidate's string checks, before any system call: one that fails them is skipped."""
    try:
        check_name(candidate)
    except NameRefused:
        return False
    return fits_sun_path(os.path.join(real_root, candidate)) and rules.permits(candidate)


def _open_resolved(root: int, real_root: str, rules: NameRules, name: str, *, judge_missing: bool) -> SocketFile:
    """``name``'s file below the docroot opened as ``root``; for a name with a link on its way, the
    file of the name it resolves to, which the rules judge too (also when it does not exist, if
    ``judge_missing``: ``pub/missing`` with ``pub -> internal`` is a denied place)."""
    try:
        return _open_unfollowed(root, name)
    except _LinkOnTheWay:
        pass
    try:
        resolved = os.path.relpath(resolve_inside(real_root, name), real_root)
    except OSError:  # a link that was one at lstat() is gone at readlink()
        raise BackendUnavailable(404, _CHANGED) from None
    try:
        found = _open_unfollowed(root, resolved)
    except _LinkOnTheWay:
        raise BackendUnavailable(404, _CHANGED) from None
    if found.exists or judge_missing:
        try:
            check_destination(rules, name, resolved)
        except NameRefused:
            found.close()
            raise
    return found


def _open_unfollowed(root: int, name: str) -> SocketFile:
    """Open ``name`` (components with no ``.`` or ``..``) below ``root``, each component in the
    directory opened before it, following no link (:class:`_LinkOnTheWay` at one). A missing
    component gives a :class:`SocketFile` that does not exist; other errors (out of
    descriptors, no search permission) are raised as :class:`~ouistiti_gw.green.unix.BackendUnavailable`."""
    *directories, last = name.split("/")
    directory = root
    try:
        for component in directories:
            parent, directory = directory, _open_directory(directory, component)
            if parent != root:
                os.close(parent)
        fd = os.open(last, _HANDLE, dir_fd=directory)
    except (FileNotFoundError, NotADirectoryError) as missing:
        return SocketFile(name, None, error=missing)
    except OSError as error:
        raise unavailable(error) from None
    finally:
        if directory != root:
            os.close(directory)
    try:
        status = os.fstat(fd)
    except OSError as error:
        os.close(fd)
        raise unavailable(error) from None
    if stat.S_ISLNK(status.st_mode):
        os.close(fd)
        raise _LinkOnTheWay
    if stat.S_ISSOCK(status.st_mode) and status.st_nlink > 1:
        os.close(fd)
        raise NameRefused(f"socket file has {status.st_nlink} names (hard links)")
    return SocketFile(name, fd, status.st_mode)


def _open_directory(directory: int, component: str) -> int:
    """``component`` of ``directory`` if it is a directory; :class:`_LinkOnTheWay` if it is a link."""
    try:
        return os.open(component, _HANDLE | os.O_DIRECTORY, dir_fd=directory)
    except NotADirectoryError:
        if stat.S_ISLNK(os.stat(component, dir_fd=directory, follow_symlinks=False).st_mode):
            raise _LinkOnTheWay from None
        raise
