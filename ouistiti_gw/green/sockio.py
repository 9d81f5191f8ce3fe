"""Socket reads and writes with fewer system calls than gevent's defaults, where it is safe, and
a fair share of the event loop for every connection; :func:`recv_exactly` for a fixed size.

Socket system calls are most of the gateway's busy time with small messages (the profile:
``benchmarks/PROFILE.md``), so the calls that do nothing are worth removing:

- gevent's ``sendall`` asks the kernel for ``SO_SNDBUF`` (a ``getsockopt``) before every send;
- gevent's ``recv`` always tries the system call first and, on a socket with nothing to read,
  gets ``EAGAIN`` and only then waits. In a ping-pong every read after a message finds the
  socket empty: one wasted call per read.

The other side of reading without waiting: a greenlet whose socket always has data never goes
back to the event loop, and every other connection of the process waits for it. A loop that
reads (or parses) without waiting calls :func:`yield_to_loop` after a bounded amount of work.
"""
from __future__ import annotations

from gevent import get_hub
from gevent.socket import socket as _PLAIN_SOCKET

from ..errors import GatewayError

#: Reads in a row that did not wait before :meth:`Receiver.recv` lets the loop run (at 256 KiB
#: per read, 4 MiB: a few milliseconds of work).
READS_PER_TURN = 16
#: libev's priority for the timer of :func:`yield_to_loop` (watchers default to 0; -2 is the lowest).
_AFTER_OTHERS = -1


def yield_to_loop() -> None:
    """Let the event loop poll every socket once, and run what is ready, before going on.

    ``gevent.sleep(0)`` does not do that: it queues a callback, and gevent runs the callbacks
    queued while it runs callbacks (ours again, and again) for up to ``getswitchinterval()``
    (5 ms) before it polls for I/O. A timer of zero delay expires only in the loop's next
    iteration, after the poll; at a priority below the default, its callback runs after those
    of every socket found ready there (libev runs a loop's pending callbacks by priority, and
    within one priority the latest first: ours, without it). Each connection with data ready
    has had its turn when we go on.
    """
    hub = get_hub()
    with hub.loop.timer(0, priority=_AFTER_OTHERS) as timer:
        hub.wait(timer)


class StreamEnded(GatewayError):
    """The peer closed its side before a read of a fixed size was complete."""


def recv_exactly(sock, size: int) -> bytes:
    """``size`` bytes from ``sock``, however many reads it takes; :class:`StreamEnded` if the
    stream ends first."""
    chunks = []
    while size:
        chunk = sock.recv(size)
        if not chunk:
            raise StreamEnded(f"the connection ended {size} bytes short")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def send_all(sock, data: bytes | bytearray | memoryview) -> None:
    """``sock.sendall(data)`` in one system call when the socket takes it all, as it nearly always does.

    On gevent's plain socket that call is the OS socket's own ``send`` (gevent's wrapper around it
    only adds a frame and a timeout lookup), and gevent's wait comes in only when it would block.
    Anything else (a TLS socket, which encrypts first) is sent through its own ``send``.
    """
    if type(sock) is _PLAIN_SOCKET:
        try:
            sent = sock._sock.send(data)  # (closed: gevent's stand-in raises EBADF)
        except BlockingIOError:
            sent = 0
    else:
        sent = sock.send(data)
    if sent < len(data):
        sock.sendall(memoryview(data)[sent:])


class Receiver:
    """``recv`` on one gevent socket, waiting for it to be readable first when the previous read
    emptied it (it returned less than asked for), and yielding to the event loop after
    :data:`READS_PER_TURN` reads in a row that did not wait (a client sending faster than we
    read must not keep the loop to itself).

    The wait is gevent's own (``socket._wait`` on its read watcher, honouring the socket's
    timeout exactly as ``recv`` does). It is used only on plain sockets: a TLS socket may hold
    decrypted bytes its descriptor knows nothing of. Where gevent lacks that method, reads are
    plain ``recv`` calls. What it saves: ``benchmarks/PROFILE.md`` (1 KiB messages).
    """

    __slots__ = ("sock", "_drained", "_wait", "_reads")

    def __init__(self, sock) -> None:
        self.sock = sock
        self._drained = False
        #: Reads since the last wait (or yield).
        self._reads = 0
        wait = getattr(sock, "_wait", None)
        plain = not hasattr(sock, "pending")  # gevent's SSLSocket has pending(), sockets do not
        self._wait = wait if wait is not None and plain and hasattr(sock, "_read_event") else None

    def recv(self, size: int) -> bytes:
        if self._drained and self._wait is not None and self.sock._read_event is not None:
            # (the event is None once the socket is closed: then recv reports it)
            self._wait(self.sock._read_event)
            self._reads = 0
        elif self._reads >= READS_PER_TURN:
            yield_to_loop()
            self._reads = 0
        data = self.sock.recv(size)
        self._reads += 1
        self._drained = len(data) < size
        return data


class ReadPaused(GatewayError):
    """A pump stopped before a read so that its session can move to another process (a reload):
    nothing was read, so nothing is lost. Thrown into a pump waiting to read
    (:func:`interrupt_read`), or raised by one about to; the session catches it."""


def interrupt_read(sock) -> None:
    """Make a greenlet waiting to read ``sock`` raise :class:`ReadPaused` (none waiting: nothing).

    The wait is cancelled in the event loop's next turn, as closing a socket cancels it; a
    greenlet woken by data meanwhile is not interrupted, and reads on (it checks its pause flag
    before its next read).
    """
    watcher = getattr(sock, "_read_event", None)
    if watcher is not None and watcher.active:
        get_hub().cancel_wait(watcher, ReadPaused())
