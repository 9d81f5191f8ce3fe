"""A fast UNIX-socket echo server (SOCK_STREAM), the one backend every contender is measured against.

Why not the sample in ``contrib/``: that one is written for clarity and features (options,
privileges, daemon mode), and a benchmark must not measure its backend. This one is a single
thread on level-triggered ``epoll`` with one reusable receive buffer: a read is written straight
back, and only what the peer's socket would not take is kept (the connection then stops being read
until it has drained, so a slow reader gets back-pressure instead of an unbounded queue).

    python benchmarks/echo_server.py /tmp/bench/echo
    python benchmarks/echo_server.py --tcp PORT        # the same echo on 127.0.0.1:PORT

It prints ``ready`` on stdout once listening and removes its socket on SIGTERM or SIGINT. The
TCP form is the ``raw-tcp`` reference: what loopback TCP alone costs, the transport every
contender's client uses.
"""
from __future__ import annotations

import os
import select
import signal
import socket
import sys

from procinfo import raise_nofile_limit

#: One read; large enough that a 16 MiB echo costs few system calls.
READ_SIZE = 256 * 1024
_IN = select.EPOLLIN
_OUT = select.EPOLLOUT
_ERR = select.EPOLLERR | select.EPOLLHUP


class _Stop(Exception):
    pass


def _stop(signum, frame) -> None:
    raise _Stop


def listen(address: str | int) -> socket.socket:
    """A listening UNIX socket at the path ``address``, or TCP on 127.0.0.1 port ``address``."""
    if isinstance(address, int):
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", address))
    else:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if os.path.exists(address):
            os.unlink(address)
        listener.bind(address)
    listener.listen(4096)
    return listener


def serve(address: str | int) -> None:
    """Echo every byte on every connection to ``address`` (see :func:`listen`) until a signal stops us."""
    raise_nofile_limit()
    listener = listen(address)
    listener.setblocking(False)
    poller = select.epoll()
    listen_fd = listener.fileno()
    poller.register(listen_fd, _IN)
    sockets: dict[int, socket.socket] = {}
    pending: dict[int, memoryview] = {}
    buffer = bytearray(READ_SIZE)
    view = memoryview(buffer)

    def drop(fd: int) -> None:
        poller.unregister(fd)
        pending.pop(fd, None)
        sockets.pop(fd).close()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print("ready", flush=True)
    try:
        while True:
            for fd, events in poller.poll():
                if fd == listen_fd:
                    _accept_all(listener, poller, sockets)
                    continue
                sock = sockets.get(fd)
                if sock is None:
                    continue
                if events & _OUT:
                    rest = pending[fd]
                    try:
                        sent = sock.send(rest)
                    except BlockingIOError:
                        continue
                    except OSError:
                        drop(fd)
                        continue
                    if sent < len(rest):
                        pending[fd] = rest[sent:]
                    else:
                        del pending[fd]
                        poller.modify(fd, _IN)
                elif events & (_IN | _ERR):
                    try:
                        size = sock.recv_into(buffer)
                    except BlockingIOError:
                        continue
                    except OSError:
                        size = 0
                    if not size:
                        drop(fd)
                        continue
                    try:
                        sent = sock.send(view[:size])
                    except BlockingIOError:
                        sent = 0
                    except OSError:
                        drop(fd)
                        continue
                    if sent < size:
                        pending[fd] = memoryview(bytes(view[sent:size]))
                        poller.modify(fd, _OUT)
    except _Stop:
        pass
    finally:
        for sock in sockets.values():
            sock.close()
        listener.close()
        if isinstance(address, str):
            try:
                os.unlink(address)
            except OSError:
                pass


def _accept_all(listener: socket.socket, poller: select.epoll, sockets: dict[int, socket.socket]) -> None:
    while True:
        try:
            sock, _ = listener.accept()
        except BlockingIOError:
            return
        except OSError:
            return  # out of descriptors: the client sees a refused or stalled connect
        sock.setblocking(False)
        if sock.family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sockets[sock.fileno()] = sock
        poller.register(sock.fileno(), _IN)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--tcp":
        serve(int(sys.argv[2]))
    elif len(sys.argv) == 2:
        serve(sys.argv[1])
    else:
        sys.exit("usage: echo_server.py SOCKET_PATH | --tcp PORT")
