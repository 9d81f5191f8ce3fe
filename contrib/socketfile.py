"""The socket file of a sample server: its path, its directories, binding it, removing it.

Steps 3 and the clean-up of :func:`ouistiti_gw_contrib.server.run`'s start-up: the directories
are created (0755, so a non-root gateway can traverse them), a stale socket is removed (a live one
or a non-socket file is refused) and the socket is bound, chmod 0777 like ouistiti does, and
chowned to the user. Its device and inode are noted: at exit only that file is removed, never what
replaced it at the same path. A descriptor of its directory is kept open so the socket can still
be unlinked at exit after the rights are dropped (``unlinkat`` needs write access to that
directory only, not to the path leading to it); a directory this program created to hold the
socket is chowned to the user for that. (In an existing directory the user cannot write, the
socket stays behind at exit, with a warning; the next start replaces it as stale.)

Plain (blocking) sockets: this runs before gevent's hub exists, and before a ``-D`` fork.
"""
from __future__ import annotations

import errno
import logging
import os
import pwd
import socket
import stat
from dataclasses import dataclass
from typing import Optional, Tuple

from ouistiti_gw.backend import MAX_SOCKET_PATH_BYTES, BackendUnavailable, connect_unix, fits_sun_path

from .errors import StartupError

log = logging.getLogger(__name__)


@dataclass
class BoundSocket:
    """The bound (not yet listening) socket and what is needed to remove it."""

    sock: socket.socket
    path: str
    dir_fd: int
    created_dir: bool
    #: ``(st_dev, st_ino)`` of the socket file at bind time: only that file is ours to remove.
    identity: Tuple[int, int]

    def unlink(self) -> None:
        """Remove the socket file, even after the rights were dropped.

        Only the very file bound at start is removed: if something else took
        the path meanwhile (a regular file, another server's socket), it stays.
        """
        name = os.path.basename(self.path)
        try:
            found = os.stat(name, dir_fd=self.dir_fd, follow_symlinks=False)
            if (found.st_dev, found.st_ino) != self.identity:
                log.warning("not removing %s: it is no longer the socket this server created", self.path)
                return
            os.unlink(name, dir_fd=self.dir_fd)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot remove %s: %s", self.path, exc)


def socket_path(docroot: str, name: str) -> str:
    """``DIR/NAME``, refusing names that would leave DIR or not fit sun_path (the gateway's rule,
    :func:`ouistiti_gw.backend.fits_sun_path`)."""
    parts = name.split("/")
    if not name or name.startswith("/") or ".." in parts or "" in parts:
        raise StartupError(f"invalid socket name {name!r}: must be a relative path "
                           "without '..' or empty components")
    path = os.path.join(os.path.abspath(docroot), name)
    if not fits_sun_path(path):
        raise StartupError(f"socket path too long ({len(os.fsencode(path))} > "
                           f"{MAX_SOCKET_PATH_BYTES} bytes): {path}")
    return path


def make_dirs(directory: str) -> bool:
    """Create *directory* and its missing parents with mode 0755.

    Returns whether *directory* itself was created.  The mode is set with
    chmod so a restrictive umask cannot lock a non-root gateway out.
    """
    if os.path.isdir(directory):
        return False
    parent = os.path.dirname(directory)
    if parent != directory:
        make_dirs(parent)
    try:
        os.mkdir(directory)
    except FileExistsError:
        if not os.path.isdir(directory):
            raise StartupError(f"{directory} exists and is not a directory") from None
        return False
    except OSError as exc:
        raise StartupError(f"cannot create {directory}: {exc.strerror}") from None
    os.chmod(directory, 0o755)
    return True


def remove_stale_socket(path: str) -> None:
    """Remove a socket file left by a dead server; refuse anything else.

    A live server answers a connect() (of either socket type, or times out
    when its backlog is full); a dead one's file refuses the connection.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise StartupError(f"{path} exists and is not a socket: not removing it")
    try:
        connect_unix(path, timeout=1.0, socket_class=socket.socket).close()
    except BackendUnavailable as exc:
        if exc.errno == errno.ECONNREFUSED:
            log.info("removing stale socket %s", path)
            os.unlink(path)
            return
        if exc.errno == errno.ENOENT:
            return
        raise StartupError(f"{path} is in use ({exc.reason}): not removing it") from None
    raise StartupError(f"{path} is in use by a running server")


def bind_socket(path: str, sock_type: int, owner: Optional[pwd.struct_passwd]) -> BoundSocket:
    """Create the directories, bind *path*, make it reachable by the gateway."""
    directory = os.path.dirname(path)
    created = make_dirs(directory)
    remove_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, sock_type)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot bind {path}: {exc.strerror}") from None
    os.chmod(path, 0o777)
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    bound_file = os.lstat(path)
    bound = BoundSocket(sock, path, dir_fd, created, (bound_file.st_dev, bound_file.st_ino))
    if owner is not None:
        os.chown(path, owner.pw_uid, owner.pw_gid)
        if created:
            os.chown(directory, owner.pw_uid, owner.pw_gid)
    return bound
