"""Reload on SIGHUP with one PID for the supervisor: a small master over the serving worker.

``ouistiti-gw serve`` starts a master (the PID systemd watches, ``ExecReload=/bin/kill -HUP
$MAINPID``) that runs the real server as a worker: the same command, executed afresh. On SIGHUP
the master starts a successor, again a fresh ``python -m ouistiti_gw ...``, so it runs the code
and the configuration now on disk, and hands it the listening socket (inherited descriptor: no
connection is refused during the switch). Once the successor says it is ready, the master gives
the two workers the ends of a socketpair: the old one stops accepting and moves its live sessions
over it (:mod:`ouistiti_gw.reload.migration`), then exits once the sessions that could not move (wss://)
have drained. If the successor cannot start (a bad configuration, an import error in the new
code, a crash before it is ready), the old worker keeps serving and the master logs one line
saying why.

The master knows nothing of the configuration: the first worker binds the listening socket and
sends it up. Master and worker talk over a ``SOCK_SEQPACKET`` socketpair, one packet a message:
worker -> master ``listen`` (+ the listening socket), ``ready``, ``failed REASON``; master ->
worker ``give`` or ``take`` (+ its end of the takeover channel). SIGTERM and SIGINT stop every
worker and then the master, with the current worker's exit status.
"""
from __future__ import annotations

import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import NoReturn

if __package__:
    from ..green.fdpass import receive_fds, send_fds
else:  # run as a script (become_master), isolated: the package stays unloaded, green/fdpass.py is read alone
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "green"))
    from fdpass import receive_fds, send_fds  # type: ignore[no-redef]
    del sys.path[0]

#: (Run as a script by :func:`become_master`, this module is ``__main__``: its log lines keep their name.)
log = logging.getLogger("ouistiti_gw.reload.supervisor" if __name__ == "__main__" else __name__)

#: The worker's end of its control channel (a descriptor number); set only in workers.
CONTROL_VARIABLE = "OUISTITI_RELOAD_CONTROL_FD"
#: The listening socket a successor inherits (a descriptor number).
LISTEN_VARIABLE = "OUISTITI_RELOAD_LISTEN_FD"
#: How long a successor may take to load and start serving before the reload is given up.
READY_TIMEOUT_SECONDS = 60.0


def send_message(channel: socket.socket, message: bytes, fd: int | None = None) -> None:
    """One control message, with a descriptor when given."""
    send_fds(channel, message, [fd] if fd is not None else [])


def receive_message(channel) -> tuple[bytes, int | None]:
    """The next control message and its descriptor (``b""``: the other end is gone); a message
    with more than one descriptor comes without any (they are closed)."""
    message, fds, _ = receive_fds(channel, 4096, 1)
    return message, (fds[0] if fds else None)


@dataclass(eq=False)
class Worker:
    """A worker process and the master's end of its control channel."""

    process: subprocess.Popen
    control: socket.socket
    #: It said it serves.
    ready: bool = False
    #: Why it cannot start, as it said before exiting (empty: it did not say).
    failure: str = ""

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass
class Master:
    """Run ``argv`` as the worker; start a successor on SIGHUP; stop everything on SIGTERM."""

    argv: list[str]
    workers: list[Worker] = field(default_factory=list)
    current: Worker | None = None
    successor: Worker | None = None
    successor_deadline: float = 0.0
    listener: int | None = None
    signals: list[int] = field(default_factory=list)
    exit_status: int = 0
    selector: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)

    def run(self) -> int:
        wakeup_read, wakeup_write = socket.socketpair()
        wakeup_write.setblocking(False)
        signal.set_wakeup_fd(wakeup_write.fileno(), warn_on_full_buffer=False)
        for caught in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(caught, lambda number, _frame: self.signals.append(number))
        self.selector.register(wakeup_read, selectors.EVENT_READ)
        self.current = self._start()
        stopping = False
        while self.workers:
            for key, _ in self.selector.select(timeout=1.0):
                if key.fileobj is wakeup_read:
                    wakeup_read.recv(4096)
                else:
                    self._hear(key.data)
            while self.signals:
                sig = self.signals.pop(0)
                if sig == signal.SIGHUP and not stopping:
                    self._reload()
                elif sig in (signal.SIGTERM, signal.SIGINT):
                    stopping = True
                    for worker in self.workers:
                        worker.process.send_signal(signal.SIGTERM)
            self._reap()
            if self.successor is not None and time.monotonic() > self.successor_deadline:
                self.successor.failure = f"not ready after {READY_TIMEOUT_SECONDS:g} s"
                self.successor.process.kill()
        return self.exit_status

    def _start(self) -> Worker:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ, **{CONTROL_VARIABLE: str(theirs.fileno())})
        fds = [theirs.fileno()]
        if self.listener is not None:
            env[LISTEN_VARIABLE] = str(self.listener)
            fds.append(self.listener)
        process = subprocess.Popen(self.argv, env=env, pass_fds=fds)
        theirs.close()
        worker = Worker(process, ours)
        self.workers.append(worker)
        self.selector.register(ours, selectors.EVENT_READ, worker)
        return worker

    def _reload(self) -> None:
        if self.successor is not None:
            log.warning("reload: already under way (worker %d starting): SIGHUP ignored", self.successor.pid)
            return
        if self.listener is None or self.current is None or not self.current.ready:
            log.warning("reload: the worker is not serving yet: SIGHUP ignored")
            return
        self.successor = self._start()
        self.successor_deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        log.info("reload: starting a new worker (pid %d) with the code and configuration on disk", self.successor.pid)

    def _hear(self, worker: Worker) -> None:
        try:
            message, fd = receive_message(worker.control)
        except OSError:
            message, fd = b"", None
        if not message:
            self.selector.unregister(worker.control)
            return
        if message == b"listen" and fd is not None and self.listener is None:
            self.listener = fd
        elif fd is not None:
            os.close(fd)
        if message == b"ready":
            worker.ready = True
            if worker is self.successor:
                self._switch(worker)
        elif message.startswith(b"failed "):
            worker.failure = message[len(b"failed "):].decode("utf-8", "replace")

    def _switch(self, successor: Worker) -> None:
        """The successor serves: connect it with the old worker, which hands its sessions over."""
        old = self.current
        assert old is not None
        give, take = socket.socketpair()
        send_message(successor.control, b"take", take.fileno())
        send_message(old.control, b"give", give.fileno())
        give.close()
        take.close()
        self.current, self.successor = successor, None
        log.info("reload: worker %d serves; worker %d hands its sessions over and exits", successor.pid, old.pid)

    def _reap(self) -> None:
        for worker in [w for w in self.workers if w.process.poll() is not None]:
            self.workers.remove(worker)
            if worker.control.fileno() in self.selector.get_map():
                self.selector.unregister(worker.control)
            worker.control.close()
            status = worker.process.returncode
            if worker is self.successor:
                self.successor = None
                why = worker.failure or f"it exited with status {status} before it was ready (its output says why)"
                log.error("reload failed: the new worker (pid %d) did not start: %s; worker %d keeps serving",
                          worker.pid, why, self.current.pid if self.current else 0)
            elif worker is self.current:
                self.exit_status = status if status >= 0 else 128 - status
                self.current = None
                for other in self.workers:  # the service is gone: a supervisor restarts the whole
                    other.process.send_signal(signal.SIGTERM)
            else:
                log.info("reload: old worker %d exited (status %d)", worker.pid, status)


def supervise(argv: list[str]) -> int:
    """Run ``argv`` (a command that serves, under :class:`WorkerLink`) as the master; its exit status."""
    return Master(argv).run()


def become_master(argv: list[str]) -> NoReturn:
    """Replace this process (same PID) by a master running ``argv``: this module as a script, in
    isolated mode, so the master holds the standard library's few modules and none of the
    gateway's (the package, gevent: ~20 MiB a master does not need)."""
    os.execv(sys.executable, [sys.executable, "-I", os.path.abspath(__file__), *argv])


# -- the worker's side ---------------------------------------------------------------------------

class WorkerLink:
    """A worker's control channel to its master (None outside a master: :meth:`from_environment`)."""

    def __init__(self, control_fd: int, listen_fd: int | None) -> None:
        from gevent import socket as gevent_socket

        self.control = gevent_socket.socket(fileno=control_fd)
        #: The listening socket a successor inherited (a descriptor), None for the first worker.
        self.listen_fd = listen_fd

    @property
    def successor(self) -> bool:
        """True for a worker started by a reload (not the first one)."""
        return self.listen_fd is not None

    def inherited_listener(self):
        """The listening socket a successor inherited, or None."""
        from gevent import socket as gevent_socket

        return gevent_socket.socket(fileno=self.listen_fd) if self.listen_fd is not None else None

    def serving(self, listener: socket.socket) -> None:
        """Tell the master this worker accepts connections (the first worker sends its listening socket)."""
        if self.listen_fd is None:
            send_message(self.control, b"listen", listener.fileno())
        send_message(self.control, b"ready")

    def failed(self, reason: str) -> None:
        """Tell the master why this worker cannot start (it logs it as the reload's failure)."""
        try:
            send_message(self.control, b"failed " + reason.encode("utf-8", "replace")[:4000])
        except OSError:
            pass

    def next_order(self) -> tuple[str, socket.socket] | None:
        """Wait for the master's word: ``("give", channel)`` or ``("take", channel)``; None when
        the master is gone."""
        from gevent import socket as gevent_socket

        while True:
            message, fd = receive_message(self.control)
            if not message:
                return None
            if fd is not None and message in (b"give", b"take"):
                return message.decode("ascii"), gevent_socket.socket(fileno=fd)
            if fd is not None:
                os.close(fd)


_link: list[WorkerLink | None] = []


def worker_link() -> WorkerLink | None:
    """This process's link to its master, None outside a master. Read from the environment once,
    which is then cleared: processes this worker starts are no workers."""
    if not _link:
        control = os.environ.pop(CONTROL_VARIABLE, None)
        listen = os.environ.pop(LISTEN_VARIABLE, None)
        _link.append(WorkerLink(int(control), int(listen) if listen is not None else None)
                     if control is not None else None)
    return _link[0]


def worker_argv(arguments: list[str]) -> list[str]:
    """The command that runs ``ouistiti-gw ARGUMENTS`` afresh (new code) as a worker."""
    return [sys.executable, "-m", "ouistiti_gw", *arguments]


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    raise SystemExit(supervise(sys.argv[1:]))
