"""What the sample UNIX servers (echo, chat, jsonrpc) share.

The ouistiti gateway connects each WebSocket client to ``DOCROOT/NAME``, a
UNIX socket served by a separate program.  These samples follow ouistiti's
command line (``-R DIR -n NAME -u USER -m BACKLOG -D``) and differ only in
what they do with a connected client, so this module holds everything else:

* :func:`build_parser` -- the common options;
* :func:`run` -- the start-up sequence, then the accept loop until SIGTERM or
  SIGINT, then the clean-up (clients closed, socket file removed, exit 0);
* :func:`recv_packet` / :func:`max_packet_size` -- SOCK_SEQPACKET helpers.

Start-up order, and why:

1. The user given with ``-u`` is looked up first, so a typo fails before
   anything is touched (exit 1).
2. ``prepare()`` (the program's own checks, e.g. importing the RPC library)
   runs with the original rights, so files only root may read still load.
3. The directories are created (0755, so a non-root gateway can traverse them),
   a stale socket is removed (a live one or a non-socket file is refused) and
   the socket is bound, chmod 0777 like ouistiti does, and chowned to the user.
   Its device and inode are noted: at exit only that file is removed, never
   what replaced it at the same path.
   A descriptor of its directory is kept open so the socket can still be
   unlinked at exit after the rights are dropped (``unlinkat`` needs write
   access to that directory only, not to the path leading to it); a directory
   this program created to hold the socket is chowned to the user for that.
   (In an existing directory the user cannot write, the socket stays behind
   at exit, with a warning; the next start replaces it as stale.)
4. With ``-D`` the process double-forks; the original process waits on a pipe
   and exits 0 only when the daemon is listening (1 if its start failed), so a
   caller may connect as soon as it returns.
5. The gevent hub and the signal handlers are set up, then the rights are
   dropped for good: supplementary groups, gid, then uid.  (gevent imports
   modules while it sets up, and the interpreter's files may be readable by
   root only.)
6. ``start()`` (e.g. the RPC library's ``init``) runs as the final user, then
   ``listen(backlog)``: clients are only accepted once everything is ready.

Each client is served by its own greenlet (gevent), so a slow or dead client
only ever blocks itself.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import pwd
import signal
import socket
import stat
import sys
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Tuple, Union

import gevent
import gevent.event
import gevent.pool
import gevent.socket

from ouistiti_gw.direct import DirectClient, adopt, client_address
from ouistiti_gw.proxy import ProxyProtocolError

log = logging.getLogger(__name__)

DEFAULT_DOCROOT = "/var/run/websocket"
DEFAULT_BACKLOG = 50
#: ``sun_path`` holds 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107
#: ``-P``: piped connections start with a PROXY header (the gateway runs with proxy_protocol).
#: Set once by :func:`run`, read by :func:`adopted`.
expect_proxy_header = False

#: A connection handler: serves one client until it leaves.  The server closes
#: the socket afterwards.
#: A client: the UNIX connection from the gateway, or the browser's own socket in direct mode.
Connection = Union[gevent.socket.socket, DirectClient]
Handler = Callable[[Connection], None]


class StartupError(Exception):
    """A condition that prevents the server from starting (exit status 1)."""


def program_name(default: str, argv0: Optional[str] = None) -> str:
    """The command name the user ran, as ouistiti's ``basename(argv[0])``.

    ``python -m ouistiti_gw_contrib.echo`` runs as ``.../echo.py``: a module
    file name is not a useful socket name, so *default* (the console script
    name, e.g. ``websocket_echo``) is used then.
    """
    name = os.path.basename(argv0 if argv0 is not None else sys.argv[0])
    if not name or name.endswith(".py"):
        return default
    return name


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The options all samples accept; programs add their own afterwards."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("-R", dest="docroot", metavar="DIR", default=DEFAULT_DOCROOT,
                        help="socket directory, the gateway's docroot (default: %(default)s)")
    parser.add_argument("-n", dest="name", metavar="NAME", default=prog,
                        help="socket name below DIR, may contain sub-directories; "
                             "the URL path of the WebSocket (default: %(default)s)")
    parser.add_argument("-u", dest="user", metavar="USER",
                        help="run as USER (only when started as root)")
    parser.add_argument("-m", dest="backlog", metavar="N", type=int, default=DEFAULT_BACKLOG,
                        help="listen backlog (default: %(default)s)")
    parser.add_argument("-D", dest="daemon", action="store_true",
                        help="daemonize once the socket is listening")
    parser.add_argument("-P", dest="proxy_header", action="store_true",
                        help="expect a PROXY header (v1 or v2) on each piped connection, as the gateway "
                             "sends with proxy_protocol; connections without one are refused")
    return parser


def setup_logging(prog: str) -> None:
    """Log to stderr, prefixed with the program name."""
    logging.basicConfig(level=logging.INFO, format=f"{prog}: %(levelname)s: %(message)s")


# --------------------------------------------------------------------------
# Socket file
# --------------------------------------------------------------------------

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
    """``DIR/NAME``, refusing names that would leave DIR or not fit sun_path."""
    parts = name.split("/")
    if not name or name.startswith("/") or ".." in parts or "" in parts:
        raise StartupError(f"invalid socket name {name!r}: must be a relative path "
                           "without '..' or empty components")
    path = os.path.join(os.path.abspath(docroot), name)
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise StartupError(f"socket path too long ({len(os.fsencode(path))} > "
                           f"{MAX_SOCKET_PATH} bytes): {path}")
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


def remove_stale_socket(path: str, sock_type: int) -> None:
    """Remove a socket file left by a dead server; refuse anything else.

    A live server answers a connect() (or fails it with EPROTOTYPE when it
    uses another socket type, or times out when its backlog is full); a dead
    one's file refuses the connection.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise StartupError(f"{path} exists and is not a socket: not removing it")
    probe = socket.socket(socket.AF_UNIX, sock_type)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        log.info("removing stale socket %s", path)
        os.unlink(path)
        return
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StartupError(f"{path} is in use ({exc.strerror or exc}): not removing it") from None
    finally:
        probe.close()
    raise StartupError(f"{path} is in use by a running server")


def bind_socket(path: str, sock_type: int, owner: Optional[pwd.struct_passwd]) -> BoundSocket:
    """Create the directories, bind *path*, make it reachable by the gateway."""
    directory = os.path.dirname(path)
    created = make_dirs(directory)
    remove_stale_socket(path, sock_type)
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


# --------------------------------------------------------------------------
# Process
# --------------------------------------------------------------------------

def lookup_user(name: Optional[str]) -> Optional[pwd.struct_passwd]:
    """The account to switch to, or None when there is nothing to switch."""
    if name is None:
        return None
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        raise StartupError(f"unknown user {name!r}") from None
    if os.getuid() != 0:
        log.warning("not started as root: ignoring -u %s", name)
        return None
    return user


def drop_privileges(user: pwd.struct_passwd) -> None:
    """Become *user* for good: groups first, while still allowed to."""
    try:
        os.initgroups(user.pw_name, user.pw_gid)
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)
    except OSError as exc:
        raise StartupError(f"cannot switch to user {user.pw_name}: {exc.strerror}") from None
    log.info("running as %s (uid %d, gid %d)", user.pw_name, user.pw_uid, user.pw_gid)


def daemonize() -> Callable[[], None]:
    """Double-fork and detach; returns, in the daemon, the "ready" callback.

    The original process waits until the daemon calls it (exit 0) or dies
    before that (exit 1).  Until then the daemon keeps stderr, so start-up
    errors still reach the caller, and its working directory, so relative
    paths given to the program still work while it starts; the callback moves
    stdio to /dev/null and the working directory to /.
    """
    read_end, write_end = os.pipe()
    if os.fork():
        os.close(write_end)
        ready = os.read(read_end, 1) == b"1"
        os._exit(0 if ready else 1)
    os.close(read_end)
    os.setsid()
    if os.fork():
        os._exit(0)

    def ready() -> None:
        os.chdir("/")
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
        os.write(write_end, b"1")
        os.close(write_end)

    return ready


# --------------------------------------------------------------------------
# Serving
# --------------------------------------------------------------------------

class Server:
    """Accepts clients on a listening socket, one greenlet each.

    The signal handlers are installed on creation, before the socket listens,
    so a client that saw the socket accept may stop the server at once.
    """

    def __init__(self) -> None:
        self.handler: Optional[Handler] = None
        self.clients = gevent.pool.Group()
        self.stopped = gevent.event.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            gevent.signal_handler(signum, self.stopped.set)

    def serve_until_signal(self, listener: gevent.socket.socket, handler: Handler) -> None:
        """Serve until SIGTERM or SIGINT, then close every client."""
        self.handler = handler
        acceptor = gevent.spawn(self._accept_loop, listener)
        self.stopped.wait()
        log.info("stopping: closing %d client(s)", len(self.clients))
        acceptor.kill()
        self.clients.kill()
        listener.close()

    def _accept_loop(self, listener: gevent.socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error("accept: %s", exc)
                    gevent.sleep(0.1)
                    continue
                raise
            self.clients.spawn(self._serve_client, conn)

    def _serve_client(self, conn: gevent.socket.socket) -> None:
        log.debug("client %d connected", conn.fileno())
        assert self.handler is not None
        try:
            self.handler(conn)
        except OSError as exc:
            log.debug("client %d: %s", conn.fileno(), exc)
        except ProxyProtocolError as exc:
            log.warning("client refused: %s", exc)
        finally:
            conn.close()


def run(args: argparse.Namespace, sock_type: int,
        start: Callable[[], Handler],
        prepare: Callable[[], None] = lambda: None,
        release: Callable[[], None] = lambda: None) -> int:
    """Run a sample server with the common options parsed into *args*.

    *prepare* runs before binding with the original rights; *start* runs as
    the final user (after ``-u`` and ``-D``) and returns the connection
    handler; *release* runs after every client is closed.  *prepare* and
    *start* may raise :class:`StartupError` for a clean exit 1 with its
    message.
    """
    global expect_proxy_header
    expect_proxy_header = getattr(args, "proxy_header", False)
    try:
        user = lookup_user(args.user)
        path = socket_path(args.docroot, args.name)
        prepare()
        bound = bind_socket(path, sock_type, user)
    except (StartupError, OSError) as exc:
        log.error("%s", exc)
        return 1
    try:
        ready = daemonize() if args.daemon else (lambda: None)
        # Created with all rights: gevent imports modules as it sets up its
        # hub, and the interpreter's files may be readable by root only.
        server = Server()
        if user is not None:
            drop_privileges(user)
        handler = start()
        bound.sock.listen(args.backlog)
    except (StartupError, OSError) as exc:
        log.error("%s", exc)
        bound.unlink()
        return 1
    log.info("listening on %s", path)
    listener = gevent.socket.socket(fileno=bound.sock.detach())
    ready()
    try:
        server.serve_until_signal(listener, handler)
        release()
    finally:
        bound.unlink()
        os.close(bound.dir_fd)
    return 0


# --------------------------------------------------------------------------
# SOCK_SEQPACKET helpers
# --------------------------------------------------------------------------

def recv_packet(conn: Connection) -> bytes:
    """Receive one whole SOCK_SEQPACKET packet, whatever its size.

    The size is peeked first (MSG_TRUNC makes recv return the real length),
    so a large packet is neither truncated nor given a huge buffer up front.
    An empty result means the peer closed the connection. A direct client
    gives one WebSocket message instead.
    """
    if isinstance(conn, DirectClient):
        return conn.recv()
    size = conn.recv_into(bytearray(1), 1, socket.MSG_PEEK | socket.MSG_TRUNC)
    return conn.recv(max(size, 1))


@contextlib.contextmanager
def adopted(conn: gevent.socket.socket) -> Iterator[Connection]:
    """The client a new UNIX connection stands for, closed on exit.

    In direct mode the gateway hands the browser's own socket over (see
    :func:`ouistiti_gw.direct.adopt`): the handler then serves that instead.
    Telling the two apart may take up to half a second for a client that
    sends nothing, so a server that writes first (chat) queues until then.
    With ``-P`` a piped connection's PROXY header is read first (a
    connection without one raises ProxyProtocolError, logged by the server).
    """
    client = adopt(conn, proxy_header=expect_proxy_header)
    try:
        yield client
    finally:
        client.close()


def peer_address(conn: Connection) -> Optional[str]:
    """The browser's IP address where the gateway passed it (direct mode, or
    a PROXY header with ``-P``), else None."""
    address = client_address(conn)
    return address[0] if address is not None else None


def enlarge_send_buffer(conn: Connection) -> int:
    """Set SO_SNDBUF as large as allowed (the kernel caps it at
    net.core.wmem_max and reports twice the value set); return it.
    A direct client's TCP socket is left as it is."""
    if isinstance(conn, DirectClient):
        return 0
    try:
        with open("/proc/sys/net/core/wmem_max", "rb") as limit:
            wanted = int(limit.read())
    except (OSError, ValueError):
        wanted = 1 << 22
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, wanted)
    return conn.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)


def max_packet_size(sock_type: int = socket.SOCK_SEQPACKET) -> int:
    """The largest packet a socket with :func:`enlarge_send_buffer` can send.

    Linux refuses a packet longer than SO_SNDBUF - 32 (EMSGSIZE) and, above
    about 4 MiB, one it cannot allocate in one piece (ENOBUFS), so the value
    is measured once on a socket pair rather than derived.
    """
    def fits(size: int) -> bool:
        left, right = socket.socketpair(socket.AF_UNIX, sock_type)
        try:
            enlarge_send_buffer(left)
            left.setblocking(False)
            left.send(bytes(size))
            return True
        except OSError:
            return False
        finally:
            left.close()
            right.close()

    low, high = 1, 1 << 25
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return low
