"""Reload without dropping a session: ``ouistiti-gw serve`` gets SIGHUP while sessions talk.

The gateway serves an ini file whose app is a module of the test's own (``reload_version``),
imported afresh by each new worker: the test rewrites it before each reload, and the new worker's
log line and HTTP answer must show the new version (fresh code, fresh configuration). Hundreds of
sessions (text and binary, stream and SEQPACKET servers, every one behind a PROXY v2 header)
exchange numbered messages through several reloads in a row; raw clients leave a message in the
middle of its fragments and a frame cut in its header or inside a character across a reload; a
server keeps a UTF-8 character split between its writes at every moment.
"""
from __future__ import annotations

import array
import asyncio
import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import pytest
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from ouistiti_gw.core.protocol import Protocol
from ouistiti_gw.reload.rendezvous import FRESH_SECONDS
from ouistiti_gw.reload.session_state import Admission, SessionState, as_fields
from rawclient import CONTINUATION, TEXT, RawClient, build_frame
from support import BIN, ROOT, wait_until
from support.addresses import free_port, remove_tree, short_tempdir
from support.clients import http_get, self_signed_certificate
from support.processes import PROJECT_WORKER, ServerProcess, fd_count, gateway_cli, gunicorn, gunicorn_argv, only_child
from support.unix_servers import UnixServer, echo_handler

SESSIONS = 200
#: Seconds between two messages of one session (200 sessions: ~2000 messages a second).
PACE = 0.1
RELOADS = 3

VERSION_MODULE = '''
import gc
import logging

import greenlet

VERSION = {version!r}
{crash}
logging.getLogger("reload_version").info("app code version %s", VERSION)


def app(environ, start_response):
    if environ["PATH_INFO"] == "/greenlets":
        gc.collect()
        body = str(sum(1 for o in gc.get_objects() if isinstance(o, greenlet.greenlet) and not o.dead))
    else:
        body = VERSION
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body.encode()]


def make(global_conf, **settings):
    return app
'''

INI = '''
[pipeline:main]
pipeline = websocket version

[filter:websocket]
use = egg:ouistiti_gw#websocket
docroot = {docroot}
proxy_protocol = v2
max_connections = {max_connections}
{settings}

[app:version]
use = call:reload_version:make

[server:main]
use = egg:ouistiti_gw#gevent
port = {port}
drain_timeout = 2
'''


class Deployment:
    """The gateway's ini file and app module, as an operator edits them before a reload."""

    def __init__(self, directory: Path, docroot: str, port: int) -> None:
        self.directory, self.docroot, self.port = directory, docroot, port
        self.ini = directory / "gateway.ini"
        self.write("v0")

    def write(self, version: str, *, max_connections: str = "10000", crash: bool = False,
              docroot: str | None = None, settings: str = "") -> None:
        """The app as ``version``, and the ini file (``settings``: more lines for the gateway's section)."""
        (self.directory / "reload_version.py").write_text(VERSION_MODULE.format(
            version=version, crash="raise RuntimeError('broken new code')" if crash else ""))
        self.ini.write_text(INI.format(docroot=docroot or self.docroot, port=self.port,
                                       max_connections=max_connections, settings=settings))

    def start(self) -> ServerProcess:
        env = {"PYTHONPATH": str(self.directory), "PYTHONDONTWRITEBYTECODE": "1"}
        return ServerProcess([str(BIN / "ouistiti-gw"), "serve", str(self.ini)], self.port, env=env)


def proxied_echo(conn: socket.socket, server: UnixServer) -> None:
    """Read the PROXY header, then echo every read (stream) or packet (seqpacket)."""
    from ouistiti_gw.backend import read_proxy_header

    read_proxy_header(conn)
    while data := conn.recv(65536):
        conn.sendall(data)


def flood(conn: socket.socket, server: UnixServer) -> None:
    """Read the PROXY header, then write as fast as the gateway takes it."""
    from ouistiti_gw.backend import read_proxy_header

    read_proxy_header(conn)
    chunk = b"x" * 65536
    while True:
        conn.sendall(chunk)


class SplitCharacter:
    """A stream server that always leaves a UTF-8 character cut between two writes: ``C3``, then
    ``A9 C3`` every 0.1 s (each ``é`` completes as the next begins), so the gateway holds a byte
    back at nearly any moment a reload pauses the session."""

    def __init__(self) -> None:
        self.sent = 0
        self.stop = threading.Event()

    def __call__(self, conn: socket.socket, server: UnixServer) -> None:
        from ouistiti_gw.backend import read_proxy_header

        read_proxy_header(conn)
        conn.sendall(b"\xc3")
        while not self.stop.wait(0.1):
            conn.sendall(b"\xa9\xc3")
            self.sent += 1
        conn.sendall(b"\xa9")
        self.sent += 1
        conn.recv(1)  # until the client leaves


class Traffic:
    """Sessions exchanging numbered messages from one event loop in a thread, until :meth:`stop`.

    Each session sends ``INDEX:N`` (text, or binary: ``FF`` and those bytes) and waits for its echo
    before the next: a message lost, duplicated or reordered shows as a wrong echo or a timeout.
    Every session offers permessage-deflate (the client library's default, the gateway's too);
    every tenth one's messages are long enough to be compressed both ways.
    Beside them, new connections come and go every 50 ms, and one session counts the ``é``
    of :class:`SplitCharacter`.
    """

    def __init__(self, port: int, sessions: int) -> None:
        self.port, self.sessions = port, sessions
        self.counts = [0] * sessions
        self.errors: list[str] = []
        self.new_connections = 0
        self.characters = 0
        self.opened = 0
        self.compressed = 0
        self._stopping = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._main(),), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), f"the clients did not finish: {self.errors[:5]}, {self.characters}"

    async def _main(self) -> None:
        tasks = [self._session(index) for index in range(self.sessions)]
        await asyncio.gather(*tasks, self._newcomers(), self._split_characters())

    def _url(self, name: str) -> str:
        return f"ws://127.0.0.1:{self.port}/{name}"

    async def _session(self, index: int) -> None:
        name = "stream" if index % 2 else "seqpacket"
        binary = index % 4 >= 2
        padding = "é" * 300 if index % 10 == 0 else ""
        try:
            async with async_connect(self._url(name), ping_interval=None, max_size=None, open_timeout=30) as ws:
                self.opened += 1
                self.compressed += bool(padding and ws.protocol.extensions)
                while not self._stopping.is_set():
                    text = f"{index}:{self.counts[index]}:{padding}"
                    message = b"\xff" + text.encode() if binary else text  # not UTF-8: comes back binary
                    await ws.send(message)
                    echo = await asyncio.wait_for(ws.recv(), 10)
                    if echo != message:
                        raise AssertionError(f"sent {message!r}, got back {echo!r}")
                    self.counts[index] += 1
                    await asyncio.sleep(PACE)
        except Exception as error:  # noqa: BLE001  (any failure of any session is the test's failure)
            self.errors.append(f"session {index} ({name}, {'binary' if binary else 'text'}): {error!r}")

    async def _newcomers(self) -> None:
        while not self._stopping.is_set():
            try:
                async with async_connect(self._url("stream"), ping_interval=None, open_timeout=10) as ws:
                    await ws.send("newcomer")
                    if await asyncio.wait_for(ws.recv(), 10) != "newcomer":
                        raise AssertionError("wrong echo")
                self.new_connections += 1
            except Exception as error:  # noqa: BLE001
                self.errors.append(f"new connection: {error!r}")
            await asyncio.sleep(0.05)

    async def _split_characters(self) -> None:
        try:
            async with async_connect(self._url("utf8"), ping_interval=None, open_timeout=30) as ws:
                while not self._stopping.is_set():
                    try:
                        message = await asyncio.wait_for(ws.recv(), 0.5)
                    except TimeoutError:
                        continue
                    if not isinstance(message, str) or set(message) != {"é"}:
                        raise AssertionError(f"a cut character came as {message!r}")
                    self.characters += len(message)
        except Exception as error:  # noqa: BLE001
            self.errors.append(f"split character session: {error!r}")


def worker_of(gateway: ServerProcess) -> int:
    return only_child(gateway.pid)


def reload(gateway: ServerProcess, deployment: Deployment, version: str, settings: str = "") -> int:
    """Rewrite the app as ``version`` (and the gateway's ``settings``), SIGHUP the master; the new
    worker's pid, once the old one exited."""
    old = worker_of(gateway)
    deployment.write(version, settings=settings)
    gateway.process.send_signal(signal.SIGHUP)
    wait_until(lambda: f"app code version {version}" in gateway.log(), what=f"worker with {version}")
    wait_until(lambda: not os.path.exists(f"/proc/{old}"), what=f"old worker {old} to exit")
    return worker_of(gateway)


@pytest.fixture
def deployment(tmp_path):
    docroot = short_tempdir()
    servers = [UnixServer(f"{docroot}/stream", proxied_echo),
               UnixServer(f"{docroot}/seqpacket", proxied_echo, socket.SOCK_SEQPACKET)]
    split = SplitCharacter()
    servers.append(UnixServer(f"{docroot}/utf8", split))
    servers.append(UnixServer(f"{docroot}/flood", flood))
    deployment = Deployment(tmp_path, docroot, free_port())
    deployment.split = split  # type: ignore[attr-defined]
    yield deployment
    split.stop.set()
    for server in servers:
        server.close()
    remove_tree(docroot)


def fragments_cut(cut_in: str) -> tuple[bytes, bytes, str]:
    """A text message in three fragments, as bytes cut in two, and the message."""
    parts = ["fragment one, ", "a character cut: é, ", "the end"]
    frames = build_frame(TEXT, parts[0].encode(), fin=False) + build_frame(
        CONTINUATION, parts[1].encode(), fin=False) + build_frame(CONTINUATION, parts[2].encode())
    second = len(build_frame(TEXT, parts[0].encode(), fin=False))
    # in the second frame's header (after its first byte), or inside its "é" (2-byte header, 4-byte mask)
    cut = second + 1 if cut_in == "header" else second + 6 + parts[1].encode().index("é".encode()) + 1
    return frames[:cut], frames[cut:], "".join(parts)


def test_sessions_live_through_reloads(deployment):
    with deployment.start() as gateway:
        first = worker_of(gateway)
        wait_until(lambda: http_get(deployment.port, "/greenlets")[0] == 200, what="app")
        idle_fds, idle_greenlets = fd_count(first), int(http_get(deployment.port, "/greenlets")[1])
        traffic = Traffic(deployment.port, SESSIONS)
        cut = {where: (RawClient(deployment.port, "/seqpacket"), *fragments_cut(where)) for where in ("header", "utf8")}
        try:
            wait_until(lambda: traffic.opened == SESSIONS and traffic.characters, what="sessions open",
                       timeout=30)
            assert traffic.compressed == SESSIONS // 10
            for client, before, _, _ in cut.values():
                client.send(before)
            master_fds = fd_count(gateway.pid)  # (it holds the listening socket since the worker served)
            workers = [first]
            for number in range(1, RELOADS + 1):
                counts, newcomers = list(traffic.counts), traffic.new_connections
                workers.append(reload(gateway, deployment, f"v{number}"))
                assert http_get(deployment.port, "/")[1] == f"v{number}".encode()
                # every session goes on talking in the new worker, and new ones are served
                wait_until(lambda: all(now > then + 2 for now, then in zip(traffic.counts, counts)),
                           what="every session to talk after the reload", timeout=20)
                wait_until(lambda: traffic.new_connections > newcomers + 2, what="new connections")
                if number == 1:
                    for client, _, after, message in cut.values():
                        client.send(after)
                        client.expect_message(message.encode(), text=True)
            assert len(set(workers)) == RELOADS + 1
            deployment.split.stop.set()
            time.sleep(0.3)  # its last byte written
            wait_until(lambda: traffic.characters == deployment.split.sent, what="every split character")
        finally:
            traffic.stop()
            for client, *_ in cut.values():
                client.close()
        assert not traffic.errors, traffic.errors[:5]
        log = gateway.log()
        assert log.count("session moved") >= RELOADS * SESSIONS
        assert "close=1001" not in log and "Traceback" not in log
        last = workers[-1]
        assert fd_count(gateway.pid) == master_fds
        wait_until(lambda: fd_count(last) <= idle_fds, what=f"fds back to {idle_fds}")
        wait_until(lambda: int(http_get(deployment.port, "/greenlets")[1]) <= idle_greenlets,
                   what=f"greenlets back to {idle_greenlets}")


def echoed(ws, size: int) -> int:
    """How many bytes the stream echo sent back, read until ``size`` came (one message per read)."""
    total = 0
    while total < size:
        total += len(ws.recv(timeout=10))
    return total


def closing_of(ws) -> tuple[int, str]:
    """The close code and reason that end ``ws``, whatever messages come before."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv(timeout=10)
    return closed.value.rcvd.code, closed.value.rcvd.reason


def test_a_reload_applies_the_new_configuration_to_the_moved_sessions(deployment):
    """README, Reload: the configuration now on disk runs on the same sessions. max_message_size
    drops to 1 MiB, ``seqpacket`` is denied, and origins and allowed_hosts name others: after
    SIGHUP, a moved session gets 1009 for the 2 MiB message it sent before; the sessions on the
    denied name, with an Origin or a Host no longer accepted, are closed with 1008 and a reason
    (one log line each); a session still admitted talks on."""
    port, big = deployment.port, 2 * 1024 * 1024
    url = f"ws://127.0.0.1:{port}"
    with deployment.start() as gateway, ExitStack() as stack:
        large = stack.enter_context(connect(f"{url}/stream", max_size=None))
        denied = stack.enter_context(connect(f"{url}/seqpacket"))
        with_origin = stack.enter_context(connect(f"{url}/stream", origin=f"http://127.0.0.1:{port}"))
        # Host: localhost, a loopback name the default allowed_hosts accepts on 127.0.0.1
        named = stack.enter_context(connect(f"ws://localhost:{port}/stream",
                                            sock=socket.create_connection(("127.0.0.1", port))))
        calm = stack.enter_context(connect(f"{url}/stream"))
        large.send(b"x" * big)
        assert echoed(large, big) == big
        reload(gateway, deployment, "v1", "max_message_size = 1048576\ndeny = seqpacket\n"
                                          "origins = https://app.example\nallowed_hosts = 127.0.0.1")
        assert closing_of(denied) == (1008, "after a reload: name not served (allow/deny)")
        code, reason = closing_of(with_origin)
        assert (code, reason) == (1008, f"after a reload: origin http://127.0.0.1:{port} not allowed")
        code, reason = closing_of(named)
        assert code == 1008 and reason.startswith(f"after a reload: Host localhost:{port} is not one of"), reason
        calm.send("still admitted")
        assert calm.recv(timeout=10) == "still admitted"
        large.send(b"x" * big)  # (its first 1 MiB has reached the server: a big message goes on as it comes)
        assert closing_of(large) == (1009, "message over 1048576 bytes")
        log = gateway.log()
        assert log.count("closing seqpacket from 127.0.0.1:") == 1
        assert log.count(": after a reload: ") == 3 and "Traceback" not in log


def test_a_failed_reload_keeps_every_session(deployment):
    with deployment.start() as gateway:
        worker = worker_of(gateway)
        traffic = Traffic(deployment.port, 20)
        try:
            wait_until(lambda: traffic.opened == 20, what="sessions open")
            for why, change in (("max_connections = 'lots' is not a valid int", {"max_connections": "lots"}),
                                ("RuntimeError: broken new code", {"crash": True})):
                deployment.write("broken", **change)
                failures = gateway.log().count("reload failed")
                counts = list(traffic.counts)
                gateway.process.send_signal(signal.SIGHUP)
                wait_until(lambda: gateway.log().count("reload failed") > failures, what="the reload to fail")
                line = [line for line in gateway.log().splitlines() if "reload failed" in line][-1]
                assert why in line and f"worker {worker} keeps serving" in line, line
                assert worker_of(gateway) == worker
                wait_until(lambda: all(now > then + 2 for now, then in zip(traffic.counts, counts)),
                           what="sessions to talk on", timeout=20)
            assert "max_connections = 'lots' is not a valid int" in gateway.log()
            reload(gateway, deployment, "v1")  # mended: the next reload works
        finally:
            traffic.stop()
        assert not traffic.errors, traffic.errors[:5]
        assert gateway.log().count("session moved") >= 20


def reload_counts(url: str, context: ssl.SSLContext | None = None) -> dict[str, float]:
    """``ouistiti_gw_reload_sessions_total`` by outcome, from a scrape (every worker's, summed)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10, context=context) as response:
        text = response.read().decode()
    return {outcome: float(value) for outcome, value in
            re.findall(r'^ouistiti_gw_reload_sessions_total\{outcome="(\w+)"\} (\S+)$', text, re.M)}


@pytest.fixture
def echo_docroot():
    docroot = short_tempdir()
    echo = UnixServer(f"{docroot}/echo", echo_handler)
    yield docroot
    echo.close()
    remove_tree(docroot)


def test_the_metrics_count_moved_sessions(echo_docroot, tmp_path):
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}  # the old worker's counts outlive it
    with gateway_cli(echo_docroot, "--metrics-path", "/metrics", env=env) as gateway, ExitStack() as stack:
        sessions = [stack.enter_context(connect(f"{gateway.url}/echo")) for _ in range(3)]
        old = worker_of(gateway)
        gateway.process.send_signal(signal.SIGHUP)
        wait_until(lambda: not os.path.exists(f"/proc/{old}"), what="the old worker to exit")
        for number, ws in enumerate(sessions):
            ws.send(f"still here {number}")
            assert ws.recv() == f"still here {number}"
        assert reload_counts(f"http://127.0.0.1:{gateway.port}") == {"moved": 3.0}
        log = gateway.log()
    assert "reload: 3 session(s) moved to the new worker, 0 left to drain" in log
    # the old worker's last words do not read like an outage; each line names its process
    assert f"[{old}] INFO ouistiti_gw.servers.wsgi_server: stopping: no session open" in log
    assert "closing 0 open session(s)" not in log


def test_wss_sessions_drain_then_close_with_1001(echo_docroot, tmp_path):
    """Python's ssl cannot hand a TLS session to another process: it stays with the old worker,
    served as before, for drain_timeout; then 1001, and the old worker exits."""
    cert, key = self_signed_certificate(str(tmp_path))
    context = ssl.create_default_context(cafile=cert)
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    with gateway_cli(echo_docroot, "--certfile", cert, "--keyfile", key, "--drain-timeout", "1.5",
                     "--metrics-path", "/metrics", env=env) as gateway:
        with connect(f"wss://127.0.0.1:{gateway.port}/echo", ssl=context) as ws:
            old = worker_of(gateway)
            gateway.process.send_signal(signal.SIGHUP)
            wait_until(lambda: "1 left to drain for up to 1.5 s" in gateway.log(), what="the drain to start")
            ws.send("draining")  # still served by the old worker
            assert ws.recv() == "draining"
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            assert closed.value.rcvd.code == 1001
        wait_until(lambda: not os.path.exists(f"/proc/{old}"), what="the old worker to exit")
        with connect(f"wss://127.0.0.1:{gateway.port}/echo", ssl=context) as ws:  # the new worker serves wss
            ws.send("new")
            assert ws.recv() == "new"
        assert "reload: drain time over: closing 1 session(s) with 1001" in gateway.log()
        assert reload_counts(f"https://127.0.0.1:{gateway.port}", context) == {"drained": 1.0}


def test_the_systemd_units_reload_moves_the_sessions(echo_docroot):
    """contrib/systemd's ExecReload, run as systemd runs it (``$MAINPID``: the master)."""
    unit = (ROOT / "contrib" / "systemd" / "ouistiti-gw.service").read_text()
    directives = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#"))
    assert shlex.split(directives["ExecStart"])[0].endswith("/ouistiti-gw")
    assert shlex.split(directives["ExecStart"])[1] == "serve"
    with gateway_cli(echo_docroot) as gateway, connect(f"{gateway.url}/echo") as ws:
        old = worker_of(gateway)
        reload_command = shlex.split(directives["ExecReload"].replace("$MAINPID", str(gateway.pid)))
        subprocess.run(reload_command, check=True)
        wait_until(lambda: not os.path.exists(f"/proc/{old}"), what="the old worker to exit")
        assert worker_of(gateway) != old
        ws.send("reloaded")
        assert ws.recv() == "reloaded"


def children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.gunicorn
def test_gunicorn_hup_hands_the_sessions_to_the_new_workers(deployment):
    """gunicorn's HUP forks new workers and stops the old ones: each old GatewayWorker deals its
    sessions out among the new ones (ouistiti_gw.reload.rendezvous) instead of closing them."""
    env = {"OUISTITI_GW_DOCROOT": deployment.docroot, "OUISTITI_GW_PROXY_PROTOCOL": "v2"}
    with gunicorn(PROJECT_WORKER, deployment.port, env, "-w", "2", "--graceful-timeout", "10",
                  "--log-level", "info") as master:
        traffic = Traffic(deployment.port, 60)
        try:
            wait_until(lambda: traffic.opened == 60 and traffic.characters, what="sessions open", timeout=30)
            for _ in range(2):
                time.sleep(FRESH_SECONDS)  # the workers serving now are no reload's new ones any more
                old, counts = children(master.pid), list(traffic.counts)
                master.process.send_signal(signal.SIGHUP)
                wait_until(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in old),  # noqa: B023
                           what="the old workers to exit", timeout=30)
                assert len(children(master.pid)) == 2
                wait_until(lambda: all(now > then + 2 for now, then in zip(traffic.counts, counts)),  # noqa: B023
                           what="every session to talk in the new workers", timeout=20)
        finally:
            traffic.stop()
        assert not traffic.errors, traffic.errors[:5]
        log = master.log()
        assert log.count("session moved") >= 2 * 61
        assert "close=1001" not in log and "Traceback" not in log


def test_a_session_the_new_worker_refuses_stays_with_the_old_one(deployment, tmp_path):
    """The new configuration serves another docroot: no gateway there takes the session, which
    the old worker serves on (as a wss:// one) for drain_timeout, then closes with 1001."""
    with deployment.start() as gateway, connect(f"ws://127.0.0.1:{deployment.port}/stream") as ws:
        old = worker_of(gateway)
        deployment.write("v1", docroot=str(tmp_path))
        gateway.process.send_signal(signal.SIGHUP)
        wait_until(lambda: "1 left to drain" in gateway.log(), what="the session to stay")
        assert f"no gateway serves docroot {deployment.docroot} here" in gateway.log()
        ws.send("still served by the old worker")
        assert ws.recv() == "still served by the old worker"
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd.code == 1001
        wait_until(lambda: not os.path.exists(f"/proc/{old}"), what="the old worker to exit")


def test_a_client_that_does_not_read_holds_up_no_reload(deployment):
    """Its session cannot stop between two writes (the gateway is blocked writing to it): after
    PAUSE_TIMEOUT_SECONDS it stays with the old worker, which closes it after drain_timeout;
    the others move meanwhile, and the old worker exits."""
    with deployment.start() as gateway, connect(f"ws://127.0.0.1:{deployment.port}/stream") as ws:
        stuck = RawClient(deployment.port, "/flood")  # never reads
        try:
            old = worker_of(gateway)
            wait_until(lambda: fd_count(old) and stuck.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
                       what="the flood")
            time.sleep(0.5)  # the client's buffers are full: the gateway's write waits
            gateway.process.send_signal(signal.SIGHUP)
            wait_until(lambda: "1 session(s) moved to the new worker, 1 left to drain" in gateway.log(),
                       what="the move", timeout=20)
            assert "it did not stop for 2 s (a peer that does not read)" in gateway.log()
            ws.send("moved")
            assert ws.recv() == "moved"
            wait_until(lambda: not os.path.exists(f"/proc/{old}"), what="the old worker to exit", timeout=20)
        finally:
            stuck.close()


@pytest.mark.gunicorn
def test_gunicorn_shutdown_moves_nothing(echo_docroot):
    """At a plain shutdown every worker is older than a reload's new ones would be: sessions
    close with 1001 as before, none is handed from one stopping worker to another."""
    with gunicorn(PROJECT_WORKER, free_port(), {"OUISTITI_GW_DOCROOT": echo_docroot}, "-w", "2",
                  "--log-level", "info") as master, ExitStack() as stack:
        sessions = [stack.enter_context(connect(f"{master.url}/echo")) for _ in range(6)]
        time.sleep(FRESH_SECONDS)
        master.process.send_signal(signal.SIGTERM)
        for ws in sessions:
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            assert closed.value.rcvd.code == 1001
        master.process.wait(timeout=10)
        assert "session moved" not in master.log() and master.log().count("close=1001") == 6


def hup_moves_a_session(master: ServerProcess) -> None:
    """A session opened before ``kill -HUP`` on gunicorn's master talks on in its new worker."""
    with connect(f"{master.url}/echo") as ws:
        time.sleep(FRESH_SECONDS)  # the worker serving now is no reload's new one any more
        old = only_child(master.pid)
        master.process.send_signal(signal.SIGHUP)
        wait_until(lambda: not os.path.exists(f"/proc/{old}"), what="the old worker to exit", timeout=20)
        ws.send("moved")
        assert ws.recv(timeout=10) == "moved"
    assert "session moved" in master.log() and "close=1001" not in master.log()


@pytest.mark.gunicorn
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                    reason="squats the directories in a private mount namespace: needs root and unshare")
def test_gunicorn_reload_survives_a_squatted_directory(echo_docroot):
    """Another user made /tmp/ouistiti-gw-UID first (and, as the workers are root's here,
    /run/ouistiti-gw: only root could, but it stands for any directory not the user's own):
    gunicorn's master makes a private temporary one instead, the HUP still moves the session,
    and the directory goes when the master exits. The squats are bind mounts in a mount
    namespace of gunicorn's own, so nothing else on the machine sees them."""
    squat, tmpdir = short_tempdir("squat-"), short_tempdir("tmpdir-")
    os.chown(squat, 65534, 65534)  # nobody's
    os.chmod(squat, 0o755)
    shared = f"/tmp/ouistiti-gw-{os.getuid()}"  # the directory of the code before, a mount point here
    os.makedirs(shared, 0o700, exist_ok=True)
    script = (f"mount --bind {squat} {shared} && mount -t tmpfs -o mode=755 tmpfs /run && "
              f"mkdir /run/ouistiti-gw && chown 65534 /run/ouistiti-gw && exec \"$@\"")
    port = free_port()
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
            *gunicorn_argv(PROJECT_WORKER, port, "--graceful-timeout", "10", "--log-level", "info",
                           "ouistiti_gw:make_app()")]
    env = {"OUISTITI_GW_DOCROOT": echo_docroot, "TMPDIR": tmpdir, "XDG_RUNTIME_DIR": ""}
    try:
        with ServerProcess(argv, port, env=env) as master:
            hup_moves_a_session(master)
            assert "/run/ouistiti-gw is not a directory of uid 0 closed to others" in master.log()
            made = os.listdir(tmpdir)
            assert [name for name in made if name.startswith("ouistiti-gw-")], made
        assert not [name for name in os.listdir(tmpdir) if name.startswith("ouistiti-gw-")]
    finally:
        remove_tree(squat)
        remove_tree(tmpdir)


def takeover_record(fields: object) -> bytes:
    """A record of the takeover channel: 4-byte length, then JSON (ouistiti_gw.reload.migration)."""
    body = json.dumps(fields).encode()
    return struct.pack("!I", len(body)) + body


def send_with_fds(channel: socket.socket, data: bytes, fds: list[int]) -> None:
    channel.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else [])


def takeover_answer(channel: socket.socket) -> dict | None:
    """The successor's answer to a record; None when it ended the channel instead (a reset when
    it left the rest of the record unread)."""
    channel.settimeout(10)
    try:
        head = channel.recv(4, socket.MSG_WAITALL)
    except ConnectionResetError:
        return None
    if not head:
        return None
    (length,) = struct.unpack("!I", head)
    return json.loads(channel.recv(length, socket.MSG_WAITALL))


def session_fields(docroot: str, name: str, **protocol: object) -> dict:
    """A session's state as an old worker sends it, for ``name`` (``protocol``: fields changed)."""
    state = SessionState(docroot=docroot, name=name, client="127.0.0.1:5000", started=time.monotonic(),
                         last_heard=time.monotonic(), held=b"", server_pending=b"", proxy_header_sent=False,
                         message_tokens=None, message_bucket_updated=None, protocol=Protocol().snapshot(),
                         admission=Admission(name, name, name, None, None, "http"))
    fields = as_fields(state)
    fields["protocol"].update(protocol)
    return fields


@pytest.mark.gunicorn
def test_crafted_takeover_records_leak_no_descriptor(echo_docroot):
    """Whoever connects to a worker's takeover socket as its user: non-socket descriptors, a bad
    opcode, one descriptor, an array, truncated or broken JSON, too many descriptors. Each is
    refused, or ends the channel, with one log line and no traceback, and the worker holds as
    many descriptors as before. A well-formed session on a name the worker's ``deny`` covers is
    taken and closed at once with 1008 and a reason."""
    runtime = short_tempdir("xdg-")  # ours, 0700: the workers meet in runtime/ouistiti-gw
    env = {"OUISTITI_GW_DOCROOT": echo_docroot, "OUISTITI_GW_DENY": "secret", "XDG_RUNTIME_DIR": runtime}
    dev_null = [os.open(os.devnull, os.O_RDONLY) for _ in range(5)]
    try:
        with gunicorn(PROJECT_WORKER, free_port(), env, "-w", "1", "--log-level", "info") as master:
            worker = only_child(master.pid)
            path = f"{runtime}/ouistiti-gw/{master.pid}-{worker}.sock"
            wait_until(lambda: os.path.exists(path), what="the takeover socket")
            baseline = fd_count(worker)
            pair = socket.socketpair()
            good = session_fields(echo_docroot, "echo")
            refused = [(good, dev_null[:2], "is not a socket"),
                       (session_fields(echo_docroot, "echo", frame=[True, 99, 5, {"b64": "ESIzRA=="}]),
                        [pair[0].fileno(), pair[1].fileno()], "malformed session state: frame"),
                       (good, dev_null[:1], "with 2 descriptors, not 1")]
            ending = [(takeover_record([1, 2]), dev_null[:2]),
                      (takeover_record(good)[:40], dev_null[:2]),  # then nothing: the channel ends inside it
                      (struct.pack("!I", 9) + b"{not json", dev_null[:2]),
                      (takeover_record(good), dev_null[:5])]
            for fields, fds, why in refused:
                with socket.socket(socket.AF_UNIX) as channel:
                    channel.connect(path)
                    send_with_fds(channel, takeover_record({"session": fields}), fds)
                    answer = takeover_answer(channel)
                    assert answer is not None and answer["taken"] is False and why in answer["why"], answer
                wait_until(lambda: fd_count(worker) == baseline, what=f"descriptors back to {baseline} ({why})")
            for data, fds in ending:
                with socket.socket(socket.AF_UNIX) as channel:
                    channel.connect(path)
                    send_with_fds(channel, data, fds)
                    channel.shutdown(socket.SHUT_WR)
                    assert takeover_answer(channel) is None
                wait_until(lambda: fd_count(worker) == baseline, what=f"descriptors back to {baseline} ({data[:20]!r})")
            pair[0].close()
            pair[1].close()
            client, client_end = socket.socketpair()
            server, server_end = socket.socketpair()
            with socket.socket(socket.AF_UNIX) as channel, client, server:
                channel.connect(path)
                send_with_fds(channel, takeover_record({"session": session_fields(echo_docroot, "secret")}),
                              [client_end.fileno(), server_end.fileno()])
                client_end.close()
                server_end.close()
                assert takeover_answer(channel) == {"taken": True, "why": ""}
                client.settimeout(10)
                reason = b"after a reload: name not served (allow/deny)"
                assert client.recv(100) == bytes([0x88, 2 + len(reason)]) + struct.pack("!H", 1008) + reason
            wait_until(lambda: fd_count(worker) == baseline, what=f"descriptors back to {baseline} (a denied session)")
            log = master.log()
            assert "closing secret from 127.0.0.1:5000: after a reload: name not served" in log
            assert log.count("reload: refused a session: ") == len(refused)
            assert log.count("reload: takeover channel failed: ") == len(ending)
            assert "Traceback" not in log
    finally:
        for fd in dev_null:
            os.close(fd)
        remove_tree(runtime)
