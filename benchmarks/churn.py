"""The churning client: sessions opened and closed as fast as they come, as after a mass reconnect.

Page reloads, mobile clients changing networks, a deploy behind a load balancer or a front proxy
restarting make every client reconnect at once; what that costs a server is the life of a whole
session, not a message. Each of ``loops`` concurrent loops in this process repeats, until the
deadline: connect, handshake, send one message, read its whole echo, send a close frame, wait for
the server to close (RFC 6455 section 7.1.1: the server closes the TCP connection first), close.
Against the raw UNIX echo there is no handshake and no close frame: connect, echo, close.

Everything runs on one epoll loop (non-blocking connects), so a process carries many loops at a
small cost per session and the server, not this client, sets the pace. What goes wrong is counted
by stage, never raised: a connection refused or reset before the handshake's answer, an answer that
is not a 101 (a 503 past capacity), an echo that never came, a close that never came.
"""
from __future__ import annotations

import errno
import selectors
import socket
import time

from wsclient import STALL_SECONDS, FrameCounter, RawCounter, handshake_request

#: A masked close frame with status 1000 (the mask is all zero: the payload goes as is).
CLOSE_FRAME = b"\x88\x82\x00\x00\x00\x00\x03\xe8"
#: Error messages kept in the result, the first of each kind.
SAMPLES = 5
CONNECTING, HANDSHAKING, ECHOING, CLOSING = "connect", "handshake", "echo", "close"
#: What a failure at each stage is counted as.
FAILURE_OF = {CONNECTING: "connect_errors", HANDSHAKING: "handshake_errors", ECHOING: "lost",
              CLOSING: "close_timeouts"}


class _Loop:
    """One loop's session in progress: its socket, its stage and what has come back so far."""

    __slots__ = ("sock", "stage", "head", "counter", "got", "deadline")

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.stage = CONNECTING
        self.head = b""
        self.counter: FrameCounter | RawCounter = RawCounter()
        self.got = 0
        self.deadline = 0.0


class Churn:
    """``loops`` sessions at a time against ``target``, each one message of ``frame`` (``size``
    payload bytes), until ``duration`` has passed; sessions in progress then finish."""

    def __init__(self, target: dict, loops: int, frame: bytes, size: int) -> None:
        self.target = target
        self.frame = frame
        self.size = size
        self.loops = [_Loop() for _ in range(loops)]
        self.selector = selectors.EpollSelector()
        self.buffer = memoryview(bytearray(1 << 16))
        self.counts = {"sessions": 0, **{name: 0 for name in FAILURE_OF.values()}}
        self.samples: dict[str, str] = {}

    def run(self, duration: float) -> dict:
        started = time.perf_counter()
        stop_starting = started + duration
        for loop in self.loops:
            self._open(loop)
        active = len(self.loops)
        while active:
            for key, _ in self.selector.select(0.2):
                loop = key.data
                try:
                    self._advance(loop)
                except OSError as error:
                    self._fail(loop, f"{loop.stage}: {error}")
            now = time.perf_counter()
            for loop in self.loops:
                if loop.sock is not None and now > loop.deadline:
                    self._fail(loop, f"{loop.stage}: nothing for {STALL_SECONDS:g} s")
                if loop.sock is None and now < stop_starting:
                    self._open(loop)
            active = sum(1 for loop in self.loops if loop.sock is not None)
        self.selector.close()
        return {**self.counts, "started": started, "ended": time.perf_counter(), "errors": self.samples}

    def _open(self, loop: _Loop) -> None:
        loop.head, loop.got = b"", 0
        loop.deadline = time.perf_counter() + STALL_SECONDS
        if self.target["kind"] == "unix":
            loop.counter = RawCounter()
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self.target["path"])
            except OSError as error:
                sock.close()
                loop.stage = CONNECTING
                self._count(CONNECTING, f"connect: {error}")
                return
            loop.sock, loop.stage = sock, ECHOING
            sock.setblocking(False)
            sock.send(self.frame)
            self.selector.register(sock, selectors.EVENT_READ, loop)
            return
        loop.counter = FrameCounter()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        code = sock.connect_ex((self.target["host"], self.target["port"]))
        loop.sock, loop.stage = sock, CONNECTING
        if code not in (0, errno.EINPROGRESS):
            self._fail(loop, f"connect: {errno.errorcode.get(code, code)}")
            return
        self.selector.register(sock, selectors.EVENT_WRITE, loop)

    def _advance(self, loop: _Loop) -> None:
        """The socket of ``loop`` is ready: take its session one step further."""
        sock = loop.sock
        assert sock is not None
        if loop.stage == CONNECTING:
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                raise OSError(code, errno.errorcode.get(code, str(code)))
            sock.send(handshake_request(self.target["host"], self.target["port"], self.target["path"]))
            loop.stage = HANDSHAKING
            self.selector.modify(sock, selectors.EVENT_READ, loop)
            return
        received = sock.recv_into(self.buffer)
        data = self.buffer[:received]
        if loop.stage == HANDSHAKING:
            if not received:
                raise OSError(errno.ECONNRESET, f"closed after {loop.head[:60]!r}")
            loop.head += bytes(data)
            if b"\r\n\r\n" not in loop.head:
                return
            head, rest = loop.head.split(b"\r\n\r\n", 1)
            if not head.startswith(b"HTTP/1.1 101"):
                raise OSError(errno.EPROTO, head.split(b"\r\n", 1)[0].decode("latin-1"))
            loop.stage = ECHOING
            sock.send(self.frame)
            data = memoryview(rest)
            if not rest:
                return
        elif not received:
            if loop.stage == CLOSING:
                self._done(loop)
                return
            raise OSError(errno.ECONNRESET, "closed before the echo")
        loop.got += loop.counter.feed(data)
        if loop.stage == ECHOING and loop.got >= self.size:
            if self.target["kind"] == "unix":
                self._done(loop)
                return
            loop.stage = CLOSING
            sock.send(CLOSE_FRAME)

    def _done(self, loop: _Loop) -> None:
        self.counts["sessions"] += 1
        self._close(loop)

    def _fail(self, loop: _Loop, why: str) -> None:
        self._count(loop.stage, why)
        self._close(loop)

    def _count(self, stage: str, why: str) -> None:
        kind = FAILURE_OF[stage]
        self.counts[kind] += 1
        if kind not in self.samples and len(self.samples) < SAMPLES:
            self.samples[kind] = why

    def _close(self, loop: _Loop) -> None:
        if loop.sock is not None:
            try:
                self.selector.unregister(loop.sock)
            except (KeyError, ValueError):
                pass  # failed before it was registered
            loop.sock.close()
            loop.sock = None
