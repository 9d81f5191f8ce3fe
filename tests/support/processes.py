"""Processes the tests start and look into: the gateway as users run it (the CLI, the test app,
gunicorn with either worker), any logged subprocess, and what a process holds (its children, its
listening socket, its descriptors and greenlets), read from /proc."""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from support import BIN, TESTS, TIMEOUT, wait_until
from support.addresses import free_port


def listening_inodes(port: int) -> set[int]:
    """Inodes of the TCP sockets listening on ``port`` (any address), from /proc/net/tcp{,6}."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    inodes.add(int(fields[9]))
    return inodes


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    tree, index = [pid], 0
    while index < len(tree):
        try:
            for task in os.listdir(f"/proc/{tree[index]}/task"):
                with open(f"/proc/{tree[index]}/task/{task}/children") as children:
                    tree.extend(int(child) for child in children.read().split())
        except OSError:
            pass  # it just ended
        index += 1
    return tree


def listens_on(pid: int, port: int) -> bool:
    """Whether the process ``pid`` (or one it started) holds the socket listening on ``port``:
    a server counts as started only when *it* answers there, not whoever else got the port."""
    wanted = {f"socket:[{inode}]" for inode in listening_inodes(port)}
    for member in process_tree(pid) if wanted else []:
        try:
            if any(os.readlink(f"/proc/{member}/fd/{fd}") in wanted for fd in os.listdir(f"/proc/{member}/fd")):
                return True
        except OSError:
            continue  # it ended, or an fd closed while we looked
    return False


def only_child(pid: int) -> int:
    """The one child process of ``pid`` (gunicorn's worker, which carries the sessions)."""
    children = wait_until(lambda: Path(f"/proc/{pid}/task/{pid}/children").read_text().split(), what="a child")
    assert len(children) == 1, children
    return int(children[0])


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def settled_fd_count(pid: int) -> int:
    """The descriptors of an idle gateway, once the start-up probe's connection is closed too."""
    previous = -1
    while (count := fd_count(pid)) != previous:
        previous = count
        time.sleep(0.5)
    return count


def live_greenlets(port: int) -> int:
    """Greenlets alive in a gateway process running ``tests/wrapped_app.py``, as it counts them."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/greenlets", timeout=10) as response:
        return int(response.read())


def proc_status(pid: int) -> dict[str, str]:
    """/proc/PID/status as a dict."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        return dict(line.rstrip("\n").split(":\t", 1) for line in status if ":\t" in line)


def wait_exit(pid: int) -> None:
    """Wait for a process that is not our child (a daemon) to end."""
    fd = os.pidfd_open(pid)
    try:
        ready, _, _ = select.select([fd], [], [], TIMEOUT)
        assert ready, f"process {pid} did not end"
    finally:
        os.close(fd)


# -- processes the tests start ----------------------------------------------------------------

class LoggedProcess:
    """A subprocess whose stdout and stderr go to a temporary file, read back with :meth:`log`.

    ``env`` adds to (or overrides) the test process's environment.
    """

    def __init__(self, argv: list[str], env: dict | None = None, cwd: str | Path | None = None,
                 user: str | None = None) -> None:
        self.log_path = tempfile.mktemp(prefix="gw-log-", dir="/tmp")
        self.log_file = open(self.log_path, "wb")
        full_env = dict(os.environ, **(env or {}))
        self.process = subprocess.Popen(argv, stdout=self.log_file, stderr=subprocess.STDOUT, env=full_env,
                                        cwd=cwd, user=user)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        """What the process wrote so far."""
        self.log_file.flush()
        return Path(self.log_path).read_text(errors="replace")

    def remove_log(self) -> None:
        self.log_file.close()
        if os.path.exists(self.log_path):
            os.unlink(self.log_path)


class ServerProcess(LoggedProcess):
    """A server subprocess listening on ``port``; stopped with SIGTERM (then SIGKILL) on exit."""

    def __init__(self, argv: list[str], port: int, env: dict | None = None, cwd: str | None = None,
                 user: str | None = None) -> None:
        self.port = port
        super().__init__(argv, env, cwd, user)
        try:
            wait_until(lambda: self.process.poll() is not None or listens_on(self.pid, port),
                       what=f"port {port} (pid {self.pid})")
            if self.process.poll() is not None:
                raise AssertionError(f"server exited: {self.log()}")
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def serving_pid(self) -> int:
        """The process that carries the sessions, whose memory and descriptors a test measures:
        the only child of a master (``ouistiti-gw serve``'s worker, gunicorn's single worker),
        else this process itself."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        return int(children[0]) if len(children) == 1 else self.pid

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_file.close()
        return self.process.returncode

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        self.remove_log()


# -- the gateway, as users run it -------------------------------------------------------------

STOCK_WORKER = "geventwebsocket.gunicorn.workers.GeventWebSocketWorker"
PROJECT_WORKER = "ouistiti_gw.worker.GatewayWorker"


def gateway_cli(docroot: str, *options: str, port: int | None = None, **kwargs) -> ServerProcess:
    """``ouistiti-gw serve --docroot DOCROOT`` on a free port."""
    port = port or free_port()
    argv = [str(BIN / "ouistiti-gw"), "serve", "--docroot", docroot, "--port", str(port), *options]
    return ServerProcess(argv, port, **kwargs)


def gateway_test_app(docroot: str, *options: str, port: int | None = None, **kwargs) -> ServerProcess:
    """The gateway in front of the test app of ``tests/wrapped_app.py`` (routes, streaming, close())."""
    port = port or free_port()
    argv = [sys.executable, str(TESTS / "wrapped_app.py"), "--docroot", docroot, "--port", str(port), *options]
    return ServerProcess(argv, port, **kwargs)


def gunicorn_argv(worker: str, port: int, *arguments: str) -> list[str]:
    """gunicorn's command line with ``worker`` on ``127.0.0.1:port``; the app is the last argument."""
    return [str(BIN / "gunicorn"), "-k", worker, "-b", f"127.0.0.1:{port}", "--graceful-timeout", "2", *arguments]


def gunicorn(worker: str, port: int, env: dict, *options: str) -> ServerProcess:
    """gunicorn serving ``ouistiti_gw:make_app()`` configured by ``env`` (``OUISTITI_GW_*``)."""
    return ServerProcess(gunicorn_argv(worker, port, *options, "ouistiti_gw:make_app()"), port, env=env)


def gateway_served_by(server: str, docroot: str) -> ServerProcess:
    """The gateway alone (``make_app()``'s) on a free port, served by ``"cli"`` (the project's
    handler) or ``"gunicorn"`` (the project's worker, logging at info)."""
    port = free_port()
    if server == "cli":
        return gateway_cli(docroot, port=port)
    return gunicorn("ouistiti_gw.worker.GatewayWorker", port, {"OUISTITI_GW_DOCROOT": docroot}, "--log-level", "info")
