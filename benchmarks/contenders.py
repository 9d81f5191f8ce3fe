"""The servers compared, each started on loopback in front of the same UNIX echo server.

- ``ouistiti-gw``: this gateway under its own server (``ouistiti-gw serve``);
- ``gunicorn``: this gateway under gunicorn with gevent-websocket's stock worker (1 worker);
- ``websockify``: websockify 0.13 with ``--unix-target`` (the peer a user would pick instead);
  it forks one process per connection, as it does by default;
- ``gw-2workers``: this gateway under gunicorn with the project's ``GatewayWorker``, 2 workers:
  one per core of this machine, as it would be deployed to use them;
- ``gw-deflate``: ``ouistiti-gw serve`` with clients that offer permessage-deflate, as browsers
  do (the other contenders' clients offer nothing: ``ouistiti-gw`` is compression off);
- ``direct``: this gateway in direct mode, the sample echo speaking WebSocket itself;
- ``ouistiti``: the C server itself (optional, ``--ouistiti DIR``), through the reference script;
- ``raw``: no WebSocket at all, the client talks to the UNIX socket: the limit of this machine;
- ``raw-tcp``: no WebSocket either, the same echo on loopback TCP: the limit for anything a
  client reaches over TCP, as every contender but ``raw`` is.

Every server gets a high descriptor limit (``preexec_fn``) so that idle-connection counts are
limited by memory, not by ``ulimit -n``.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from ouistiti_gw.core.deflate import COMPRESSOR_IDLE_SECONDS
from ouistiti_gw.green.heap_trim import TRIM_DELAY
from procinfo import process_tree, raise_nofile_limit

log = logging.getLogger(__name__)

READY_TIMEOUT_SECONDS = 20.0
STOP_TIMEOUT_SECONDS = 10.0
#: ouistiti's reference script: in ``$OUISTITI_REFERENCE_DIR``, by default ``../shared/reference``
#: beside the repository (as for the tests that build its C samples).
OUISTITI_SCRIPT = os.path.join(
    os.environ.get("OUISTITI_REFERENCE_DIR")
    or os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                    "shared", "reference"),
    "ouistiti-ref")
ECHO_NAME = "echo"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _accepts_tcp(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def stop_tree(process: subprocess.Popen) -> None:
    """SIGTERM the process and every descendant (forked children included), then SIGKILL leftovers."""
    if process.poll() is not None:
        return
    pids = process_tree(process.pid)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        process.wait(timeout=STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()


@dataclass
class Contender:
    """How to run one server: ``command`` gets the docroot, the echo socket path and a port."""

    name: str
    description: str
    #: largest message it can carry (ouistiti's C module breaks at 64 KiB), 0 = no limit
    max_message: int = 0
    #: most connections it accepts at once (ouistiti's default maxclients), 0 = no limit
    max_connections: int = 0
    #: most idle connections it can hold, 0 = no limit, and why
    max_idle: int = 0
    idle_limit_reason: str = ""
    #: descriptors one connection costs the server's busiest process (a gateway: TCP + UNIX);
    #: 0 for servers that fork a process per connection
    fds_per_connection: int = 2
    #: the client's frames: binary (websockify refuses text with 1003), text for ouistiti's C
    #: module, which only carries text; payloads are ASCII either way
    text_frames: bool = False
    process: subprocess.Popen | None = None
    log_path: str = ""
    #: the server's working directory (None: the benchmark's)
    cwd: str | None = None
    #: the clients offer permessage-deflate
    deflate: bool = False
    #: seconds between the last idle connection and the memory reading
    settle_seconds: float = 1.0
    #: SIGHUP to ``pid`` moves the live sessions to a new worker (``measure_reload``)
    reloads: bool = False

    def command(self, docroot: str, port: int) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def start(self, docroot: str, log_dir: str) -> dict:
        """Start the server; return the client's target description once it accepts connections."""
        port = free_port()
        argv, env = self.command(docroot, port)
        self.log_path = os.path.join(log_dir, f"{self.name}.log")
        with open(self.log_path, "wb") as log_file:
            self.process = subprocess.Popen(argv, env={**os.environ, **env}, stdin=subprocess.DEVNULL,
                                            stdout=log_file, stderr=subprocess.STDOUT, cwd=self.cwd,
                                            preexec_fn=raise_nofile_limit)
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while not _accepts_tcp(port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not start; see {self.log_path}")
            time.sleep(0.05)
        return {"kind": "ws", "host": "127.0.0.1", "port": port, "path": "/" + ECHO_NAME, "text": self.text_frames,
                "deflate": self.deflate}

    def skip_reason(self, size: int, connections: int, idle: bool = False) -> str | None:
        """Why a figure with these messages and connections is not taken, or None."""
        if self.max_message and size > self.max_message:
            return f"messages over {self.max_message} B break it"
        if self.max_connections and connections > self.max_connections:
            return (f"accepts {self.max_connections} connections at once (ouistiti's default maxclients; "
                    "the reference script's config sets none)")
        if idle and self.max_idle and connections > self.max_idle:
            return self.idle_limit_reason
        return None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def stop(self) -> None:
        if self.process is not None:
            stop_tree(self.process)
            self.process = None


class OuistitiGw(Contender):
    #: ``max_byte_rate`` off: the bulk rows measure what one connection carries at full speed
    #: (the default, 64 MiB/s a session, bounds what a client costs its server).
    options: tuple[str, ...] = ("--max-byte-rate", "0")

    def command(self, docroot: str, port: int) -> tuple[list[str], dict[str, str]]:
        return ([sys.executable, "-m", "ouistiti_gw", "serve", "--docroot", docroot, "--port", str(port),
                 *self.options], {})


class Baseline(OuistitiGw):
    """``ouistiti-gw serve`` from another source tree (an older commit's worktree): the same gateway
    before a change, measured in the same run as after it. It runs in that tree: ``python -m``
    puts the working directory first on ``sys.path``, before the editable install's finder."""

    options = ()  # an older tree may not know the flags; before max_byte_rate there was no limit


class DirectMode(Contender):
    """``--mode direct``: the gateway hands each client's socket to the server, which must speak
    WebSocket itself, so the server here is the package's own sample echo (``websocket_echo``,
    ``ouistiti_gw.backend.direct``) in a docroot of its own, started with the gateway in one process tree."""

    def command(self, docroot: str, port: int) -> tuple[list[str], dict[str, str]]:
        own = os.path.join(docroot, "direct")
        script = (f'{sys.executable} -m ouistiti_gw_contrib.echo -R "{own}" -n {ECHO_NAME} & '
                  f'while [ ! -S "{own}/{ECHO_NAME}" ]; do sleep 0.05; done; '
                  f'exec {sys.executable} -m ouistiti_gw serve --docroot "{own}" --port {port} --mode direct')
        return (["sh", "-c", script], {})


class Gunicorn(Contender):
    def command(self, docroot: str, port: int) -> tuple[list[str], dict[str, str]]:
        return ([sys.executable, "-m", "gunicorn", "-k", "geventwebsocket.gunicorn.workers.GeventWebSocketWorker",
                 "-w", "1", "--worker-connections", "20000", "--backlog", "2048", "--timeout", "300",
                 "--graceful-timeout", "2", "-b", f"127.0.0.1:{port}", "ouistiti_gw:make_app()"],
                {"OUISTITI_GW_DOCROOT": docroot})


class GatewayWorkers(Contender):
    """gunicorn with the project's worker; ``workers`` processes share the listening socket."""

    workers: int = 2

    def command(self, docroot: str, port: int) -> tuple[list[str], dict[str, str]]:
        return ([sys.executable, "-m", "gunicorn", "-k", "ouistiti_gw.worker.GatewayWorker",
                 "-w", str(self.workers), "--worker-connections", "20000", "--backlog", "2048", "--timeout", "300",
                 "--graceful-timeout", "2", "-b", f"127.0.0.1:{port}", "ouistiti_gw:make_app()"],
                {"OUISTITI_GW_DOCROOT": docroot})


class Websockify(Contender):
    def command(self, docroot: str, port: int) -> tuple[list[str], dict[str, str]]:
        return ([sys.executable, "-m", "websockify", f"127.0.0.1:{port}",
                 f"--unix-target={os.path.join(docroot, ECHO_NAME)}"], {})


class Ouistiti(Contender):
    """The C server; ``directory`` is where ``ouistiti-ref build`` installed it."""

    directory: str = ""

    def command(self, docroot: str, port: int) -> tuple[list[str], dict[str, str]]:
        return (["bash", OUISTITI_SCRIPT, "serve", self.directory, str(port), docroot], {})


class Raw(Contender):
    """No server process: the client connects to the echo socket itself."""

    fds_per_connection = 0

    def start(self, docroot: str, log_dir: str) -> dict:
        return {"kind": "unix", "path": os.path.join(docroot, ECHO_NAME)}


class RawTcp(Contender):
    """The benchmark's echo server on loopback TCP, its own process; no gateway to measure memory of."""

    def command(self, docroot: str, port: int) -> tuple[list[str], dict[str, str]]:
        return ([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "echo_server.py"),
                 "--tcp", str(port)], {})

    def start(self, docroot: str, log_dir: str) -> dict:
        target = super().start(docroot, log_dir)
        return {"kind": "tcp", "host": target["host"], "port": target["port"]}

    @property
    def pid(self) -> int | None:
        return None


@contextmanager
def source_tree(baseline: str) -> Iterator[str]:
    """The directory of a baseline's source tree: ``baseline`` itself if it is a directory, else a
    commit of this repository (``41048bc``, ``HEAD~3``) written out by ``git archive`` into a
    temporary directory, removed afterwards (no worktree is registered)."""
    if os.path.isdir(baseline):
        yield baseline
        return
    repository = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    directory = tempfile.mkdtemp(prefix="owb-baseline-", dir="/tmp")
    try:
        archive = subprocess.run(["git", "-C", repository, "archive", "--format=tar", baseline],
                                 capture_output=True, check=False)
        if archive.returncode:
            raise SystemExit(f"--baseline {baseline}: neither a directory nor a commit "
                             f"({archive.stderr.decode(errors='replace').strip()})")
        subprocess.run(["tar", "-x", "-C", directory], input=archive.stdout, check=True)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


_WEBSOCKIFY_SELECT = ("fails past ~500 open connections: each forked child inherits one descriptor per "
                      "earlier child and its select() raises 'filedescriptor out of range' (seen at 1 000)")


def all_contenders(ouistiti_dir: str | None, baseline_dir: str | None = None) -> list[Contender]:
    """Every contender in table order; ouistiti only when its build directory is given, the
    baseline only when its source tree is."""
    contenders: list[Contender] = [
        OuistitiGw("ouistiti-gw", "this gateway, `ouistiti-gw serve` (gevent pywsgi + GatewayHandler)",
                   reloads=True),
        OuistitiGw("gw-deflate", "`ouistiti-gw serve`, clients offering permessage-deflate (as browsers do)",
                   deflate=True, settle_seconds=COMPRESSOR_IDLE_SECONDS + TRIM_DELAY + 1.0),
        Gunicorn("gunicorn", "this gateway under gunicorn, GeventWebSocketWorker, 1 worker"),
        GatewayWorkers("gw-2workers", "this gateway under gunicorn, the project's GatewayWorker, 2 workers "
                                      "(one per core)"),
        DirectMode("direct", "this gateway in direct mode: the sample echo server speaks WebSocket itself"),
        Websockify("websockify", "websockify 0.13 --unix-target (default mode: a fork per connection)",
                   max_idle=500, fds_per_connection=0, idle_limit_reason=_WEBSOCKIFY_SELECT),
    ]
    if baseline_dir:
        baseline = Baseline("baseline", f"`ouistiti-gw serve` from the source tree {baseline_dir} (before a change)")
        baseline.cwd = os.path.abspath(baseline_dir)
        contenders.insert(1, baseline)
    if ouistiti_dir:
        ouistiti = Ouistiti("ouistiti", "ouistiti C (reference build), mod_websocket: a fork per connection",
                            max_message=65535 - 14, max_connections=10, text_frames=True,
                            fds_per_connection=0)
        ouistiti.directory = os.path.abspath(ouistiti_dir)
        contenders.append(ouistiti)
    contenders.append(Raw("raw", "the UNIX echo with no WebSocket: the limit of this machine"))
    contenders.append(RawTcp("raw-tcp", "the same echo on loopback TCP, no WebSocket: the limit over TCP"))
    return contenders
