"""What the sample UNIX servers (echo, chat, jsonrpc) share.

The ouistiti gateway connects each WebSocket client to ``DOCROOT/NAME``, a
UNIX socket served by a separate program.  These samples follow ouistiti's
command line (``-R DIR -n NAME -u USER -m BACKLOG -D``) and differ only in
what they do with a connected client, so this module holds everything else:

* :func:`build_parser` -- the common options;
* :func:`run` -- the start-up sequence, then the accept loop until SIGTERM or
  SIGINT, then the clean-up (clients closed, socket file removed, exit 0);
* :func:`adopted`, :func:`recv_packet`, :func:`enlarge_send_buffer`,
  :func:`max_packet_size` -- a client, piped or handed over directly, and its
  packets (over :mod:`ouistiti_gw.backend`); :func:`peer_address` and
  :func:`peer_user` -- who it is, as the gateway said.

The socket file is :mod:`.socketfile`'s job, the user and the daemon
:mod:`.process`'s; this module is the command line and the accept loop.

Start-up order, and why:

1. The user given with ``-u`` is looked up first, so a typo fails before
   anything is touched (exit 1).
2. ``prepare()`` (the program's own checks, e.g. importing the RPC library)
   runs with the original rights, so files only root may read still load.
3. The socket file is bound (:mod:`.socketfile`: directories, stale socket,
   mode and owner, and what exactly is removed at exit).
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
import signal
import sys
from typing import Callable, Iterator, Optional, Union

import gevent
import gevent.event
import gevent.pool
import gevent.socket

from ouistiti_gw.backend import (  # noqa: F401  (max_packet_size: part of the samples' API)
    DirectClient,
    ProxyProtocolError,
    adopt,
    client_address,
    client_user,
    max_packet_size,
)
from ouistiti_gw.backend import enlarge_send_buffer as enlarge_unix_send_buffer
from ouistiti_gw.backend import recv_packet as recv_unix_packet

from .errors import StartupError
from .process import daemonize, drop_privileges, lookup_user
from .socketfile import bind_socket, socket_path

log = logging.getLogger(__name__)

DEFAULT_DOCROOT = "/var/run/websocket"
DEFAULT_BACKLOG = 50

#: A connection handler: serves one client until it leaves.  The server closes
#: the socket afterwards.
#: A client: the UNIX connection from the gateway, or the browser's own socket in direct mode.
Connection = Union[gevent.socket.socket, DirectClient]
Handler = Callable[[Connection], None]


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
    """One whole SOCK_SEQPACKET packet (:func:`ouistiti_gw.backend.recv_packet`); an empty result
    means the peer closed the connection. A direct client gives one WebSocket message instead."""
    if isinstance(conn, DirectClient):
        return conn.recv()
    return recv_unix_packet(conn)


@contextlib.contextmanager
def adopted(conn: gevent.socket.socket, expect_proxy_header: bool = False) -> Iterator[Connection]:
    """The client a new UNIX connection stands for, closed on exit.

    In direct mode the gateway hands the browser's own socket over (see
    :func:`ouistiti_gw.backend.direct.adopt`): the handler then serves that instead.
    Telling the two apart may take up to half a second for a client that
    sends nothing, so a server that writes first (chat) queues until then.
    With ``expect_proxy_header`` (the ``-P`` option, which the handler is
    given when the sample builds it) a piped connection's PROXY header is read
    first (a connection without one raises ProxyProtocolError, logged by the
    server).
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


def peer_user(conn: Connection) -> Optional[str]:
    """The user the gateway's authorization let in (``auth_request``, ``authorize``), from the
    PROXY v2 header read with ``-P``; else None (no authorization, v1, or direct mode)."""
    return client_user(conn)


def enlarge_send_buffer(conn: Connection) -> int:
    """:func:`ouistiti_gw.backend.enlarge_send_buffer` for a UNIX connection; a direct client's TCP
    socket is left as it is (0)."""
    if isinstance(conn, DirectClient):
        return 0
    return enlarge_unix_send_buffer(conn)
