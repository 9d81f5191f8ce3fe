"""The documentation site: it builds with warnings as errors, and what it tells a user to run runs.

Every code block of the tutorial and the how-to guides is a file under ``docs/examples/`` that the
page includes (``literalinclude``), or one of the project's own files that another test runs (the
nginx site, the systemd units). Each example file is run here for real, as the page shows it: the
shell scripts with bash, in a copy of their directory, with only the ports (8080, 8081, 8082) and
the docroots (``/tmp/ws``...) replaced by this test's own; then a real client talks through what
they started. A file that cannot run here (it needs root, systemd, Flask...) says so on its first
line (``docs-test: skip: REASON``), and the tests check that every other file is run by one of
them.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from support import BIN, ROOT, TIMEOUT, wait_until
from support.addresses import free_port, remove_tree, short_tempdir
from support.clients import http_get, listens

DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"
#: The pages whose every code block must run.
RUN_PAGES = sorted([*DOCS.glob("tutorial/*.md"), *DOCS.glob("howto/*.md")])
SKIP_MARKER = "docs-test: skip:"
#: Files of the project the how-tos include, and the test that runs each.
RUN_ELSEWHERE = {
    "example.ini": "test_serve_ini (here)",
    "contrib/nginx/ouistiti-gw.conf": "tests/system/test_nginx.py",
    "contrib/systemd/ouistiti-gw.service": "tests/system/test_systemd.py",
    "contrib/systemd/ouistiti-gw-sample@.service": "tests/system/test_systemd.py",
    "contrib/systemd/gateway.ini": "tests/system/test_systemd.py",
}
#: What the examples listen on and where their sockets are; each run gets its own.
PORTS = ("8080", "8081", "8082")
DOCROOTS = ("/tmp/hello-ws", "/tmp/ouistiti-gw", "/var/run/websocket", "/tmp/ws")

#: example file -> the test functions that run it (filled by @runs).
RUN_BY: dict[str, list[str]] = {}


def runs(*examples: str) -> Callable:
    """Record that the decorated test runs these example files (paths below docs/examples)."""
    def record(test: Callable) -> Callable:
        for example in examples:
            RUN_BY.setdefault(example, []).append(test.__name__)
        return test
    return record


def example_files() -> list[str]:
    return sorted(str(path.relative_to(EXAMPLES)) for path in EXAMPLES.rglob("*") if path.is_file())


def skip_reason(example: str) -> str | None:
    first = (EXAMPLES / example).read_text(encoding="utf-8").split("\n", 1)[0]
    return first.split(SKIP_MARKER, 1)[1].strip() if SKIP_MARKER in first else None


def code_blocks(page: Path) -> list[tuple[str, str]]:
    """(info string's first word, the rest) of each fenced block of a MyST page: ``{literalinclude}``
    and its path, ``sh`` for an inline block of shell, ``""`` for one without a language."""
    blocks, fence = [], None
    for line in page.read_text(encoding="utf-8").splitlines():
        opening = re.match(r"^(`{3,}|:{3,})(.*)$", line)
        if not opening:
            continue
        if fence is None:
            fence = opening.group(1)
            word, _, rest = opening.group(2).strip().partition(" ")
            blocks.append((word, rest.strip()))
        elif opening.group(1) == fence and not opening.group(2).strip():
            fence = None
    return blocks


def included_files() -> dict[str, list[str]]:
    """Each file a run page includes (relative to the project's root) -> the pages."""
    found: dict[str, list[str]] = {}
    for page in RUN_PAGES:
        for directive, argument in code_blocks(page):
            if directive == "{literalinclude}":
                path = (page.parent / argument.strip()).resolve().relative_to(ROOT)
                found.setdefault(str(path), []).append(page.name)
    return found


# -- the rules: no code block escapes the tests -------------------------------------------------

@pytest.mark.parametrize("page", RUN_PAGES, ids=lambda page: str(page.relative_to(DOCS)))
def test_every_code_block_of_the_tutorial_and_howtos_is_an_included_file(page):
    """An inline code block could drift from the code: the pages show files, which run here."""
    inline = [directive or "(no language)" for directive, _ in code_blocks(page)
              if directive not in ("{literalinclude}", "{toctree}", "{note}", "{warning}", "{tip}")]
    assert not inline, f"{page.name}: inline code blocks {inline}: put the code in docs/examples/ and include it"


def test_every_included_file_is_an_example_or_run_elsewhere():
    for path in included_files():
        assert path.startswith("docs/examples/") or path in RUN_ELSEWHERE, path
        assert (ROOT / path).is_file(), path


def test_every_example_is_shown_and_run_or_skipped_with_a_reason():
    shown = {path.removeprefix("docs/examples/") for path in included_files()}
    for example in example_files():
        assert example in shown, f"{example} is on no tutorial or how-to page"
        reason = skip_reason(example)
        if reason is None:
            assert example in RUN_BY, f"{example}: no test runs it, and it gives no reason (docs-test: skip:)"
        else:
            assert example not in RUN_BY and len(reason) > 10, example
    assert set(RUN_BY) <= set(example_files()), set(RUN_BY) - set(example_files())


# -- running the examples ----------------------------------------------------------------------

class Workspace:
    """A copy of example files in a temporary directory, with this run's ports and docroot."""

    def __init__(self) -> None:
        self.directory = Path(short_tempdir("gw-docs-"))
        self.docroot = os.path.join(self.directory, "run")
        os.mkdir(self.docroot)
        self.ports = {port: free_port() for port in PORTS}
        self.scripts: list[Script] = []

    @property
    def port(self) -> int:
        return self.ports["8080"]

    def localize(self, text: str) -> str:
        for port in PORTS:
            text = re.sub(rf"\b{port}\b", str(self.ports[port]), text)
        for docroot in DOCROOTS:
            text = re.sub(rf"{re.escape(docroot)}\b", self.docroot, text)
        return text

    def copy(self, *files: str) -> None:
        """Copy ``files`` (below docs/examples/, or the project's root for ``example.ini``)."""
        for name in files:
            source = EXAMPLES / name if (EXAMPLES / name).exists() else ROOT / name
            (self.directory / Path(name).name).write_text(self.localize(source.read_text(encoding="utf-8")))

    def run(self, script: str) -> "Script":
        """Start a copied shell script as a user would: ``bash SCRIPT``, the venv's commands on PATH."""
        started = Script.start(self.directory, script)
        self.scripts.append(started)
        return started

    def serve(self, script: str, *files: str, sock: str | None = None, sock_type: int = socket.SOCK_STREAM,
              port: int | None = None) -> "Script":
        """Copy ``script`` and ``files``, run the script, and wait until it listens on ``port`` (8080's
        stand-in by default) and, given ``sock``, until a server listens on ``DOCROOT/sock``."""
        self.copy(script, *files)
        started = self.run(Path(script).name)
        wait_listening(started, port or self.port)
        if sock:
            wait_socket(os.path.join(self.docroot, sock), sock_type)
        return started

    def close(self) -> None:
        for script in reversed(self.scripts):
            script.stop()
        remove_tree(str(self.directory))


class Script:
    """A process group: ``bash SCRIPT`` (:meth:`start`) and every process it starts, or a server the
    test started itself."""

    def __init__(self, name: str, process: subprocess.Popen, log_path: Path | None = None) -> None:
        self.name, self.process, self.log_path = name, process, log_path

    @classmethod
    def start(cls, directory: Path, name: str) -> "Script":
        log_path = directory / f"{name}.log"
        environment = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", PYTHONUNBUFFERED="1")
        with open(log_path, "wb") as log:
            process = subprocess.Popen(["bash", name], cwd=directory, env=environment, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        return cls(name, process, log_path)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def finish(self) -> str:
        """Wait for a script that ends by itself; its output, after checking it succeeded."""
        assert self.process.wait(TIMEOUT) == 0, f"{self.name} failed: {self.log()}"
        return self.log()

    def alive(self) -> bool:
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self) -> None:
        """SIGTERM to the whole group, as Ctrl-C would reach it; SIGKILL if it lingers."""
        if self.alive():
            os.killpg(self.process.pid, signal.SIGTERM)
            deadline = time.monotonic() + TIMEOUT
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.alive():
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(TIMEOUT)


@pytest.fixture
def workspace() -> Iterator[Workspace]:
    space = Workspace()
    yield space
    space.close()


def wait_listening(script: Script, port: int) -> None:
    """Wait until something of the script's group listens on ``port``."""
    wait_until(lambda: script.process.poll() not in (None, 0) or port_open(port), f"port {port} ({script.name})",
               timeout=30)
    assert port_open(port), script.log()


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def wait_socket(path: str, sock_type: int = socket.SOCK_STREAM) -> None:
    wait_until(lambda: listens(path, sock_type), f"a server on {path}")


def echo_server(space: Workspace, *options: str) -> subprocess.Popen:
    """The sample echo on ``DOCROOT/echo`` for the examples that start only the gateway."""
    process = subprocess.Popen([str(BIN / "websocket_echo"), "-R", space.docroot, "-n", "echo", *options],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    space.scripts.append(Script("websocket_echo", process))
    wait_socket(os.path.join(space.docroot, "echo"))
    return process


def round_trip(port: int, name: str, message: str = "round trip", host: str | None = None) -> str:
    """One message to ``ws://127.0.0.1:PORT/NAME`` (with ``Host: host`` if given) and its answer."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    with ws_connect(f"ws://{host or '127.0.0.1'}:{port}/{name}", sock=sock, open_timeout=TIMEOUT) as ws:
        ws.send(message)
        return ws.recv(timeout=TIMEOUT)


# -- the tutorial --------------------------------------------------------------------------------

TUTORIAL = ("tutorial/upper.py", "tutorial/hello.ini", "tutorial/index.html", "tutorial/run.sh",
            "tutorial/client.py")


@pytest.fixture
def tutorial(workspace) -> Iterator[Workspace]:
    workspace.serve("tutorial/run.sh", *TUTORIAL, sock="upper")
    yield workspace


@runs(*TUTORIAL)
def test_tutorial_a_client_talks_to_the_unix_server(tutorial):
    status, page = http_get(tutorial.port, "/")
    assert status == 200 and b"new WebSocket" in page
    answer = subprocess.run([sys.executable, "client.py"], cwd=tutorial.directory, capture_output=True, text=True,
                            timeout=TIMEOUT)
    assert answer.returncode == 0 and answer.stdout == "HELLO FROM PYTHON\n", answer.stderr


@pytest.mark.chromium
@runs("tutorial/index.html")
def test_tutorial_the_browser_talks_to_the_unix_server(tutorial):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium",
                                             args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{tutorial.port}/")
            expect(page.locator("#log")).to_contain_text("open", timeout=TIMEOUT * 1000)
            page.fill("#text", "hi there")
            page.click("#send")
            expect(page.locator("#log")).to_contain_text("< HI THERE", timeout=TIMEOUT * 1000)
        finally:
            browser.close()


# -- how-to guides ---------------------------------------------------------------------------

@pytest.mark.gunicorn
@runs("howto/wrap_app.py", "howto/serve_wrapped.sh")
def test_wrapped_app(workspace):
    workspace.serve("howto/serve_wrapped.sh", "howto/wrap_app.py", sock="echo")
    assert http_get(workspace.port, "/") == (200, b"the wrapped app answers every other request\n")
    assert round_trip(workspace.port, "echo") == "round trip"


@pytest.mark.gunicorn
@pytest.mark.parametrize("script", ["howto/gunicorn.sh", "howto/gunicorn_stock.sh"])
@runs("howto/gunicorn.sh", "howto/gunicorn_stock.sh")
def test_gunicorn(workspace, script):
    echo_server(workspace)
    workspace.serve(script)
    assert round_trip(workspace.port, "echo") == "round trip"


@pytest.mark.gunicorn
@runs("howto/gunicorn.conf.py")
def test_gunicorn_conf_py_drops_k(workspace):
    """gunicorn.conf.py in the directory gunicorn starts from: the same command without -k."""
    echo_server(workspace)
    workspace.copy("howto/gunicorn.conf.py")
    (workspace.directory / "start.sh").write_text(
        f"OUISTITI_GW_DOCROOT={workspace.docroot} gunicorn -b 127.0.0.1:{workspace.port} 'ouistiti_gw:make_app()'\n")
    wait_listening(workspace.run("start.sh"), workspace.port)
    assert round_trip(workspace.port, "echo") == "round trip"


@runs("howto/serve_ini.sh")
def test_serve_ini(workspace):
    workspace.serve("howto/serve_ini.sh", "example.ini", sock="echo")
    assert round_trip(workspace.port, "echo") == "round trip"
    status, page = http_get(workspace.port, "/")
    assert status == 200 and b"<html" in page.lower()


@pytest.mark.gunicorn
@runs("howto/gunicorn_paste.sh")
def test_gunicorn_paste(workspace):
    echo_server(workspace)
    workspace.serve("howto/gunicorn_paste.sh", "example.ini")
    assert round_trip(workspace.port, "echo") == "round trip"


@runs("howto/nginx_gateways.sh")
def test_the_gateways_behind_nginx(workspace):
    """Both gateways answer the site's name, and the echo (-P) gets their PROXY header."""
    workspace.copy("howto/nginx_gateways.sh")
    script = workspace.run("nginx_gateways.sh")
    wait_socket(os.path.join(workspace.docroot, "echo"))
    for port in (workspace.ports["8081"], workspace.ports["8082"]):
        wait_listening(script, port)
        assert round_trip(port, "echo", host="ws.example.com") == "round trip"


@pytest.mark.gunicorn
@runs("howto/gunicorn_workers.sh")
def test_gunicorn_workers_behind_nginx(workspace):
    echo_server(workspace, "-P")
    port = workspace.ports["8081"]
    workspace.serve("howto/gunicorn_workers.sh", port=port)
    for _ in range(8):  # whichever worker takes it
        assert round_trip(port, "echo") == "round trip"


@runs("howto/reload_start.sh", "howto/reload_hup.sh")
def test_reload_keeps_the_session(workspace):
    echo_server(workspace)
    workspace.copy("howto/reload_start.sh", "howto/reload_hup.sh")
    workspace.run("reload_start.sh").finish()  # the gateway stays, in the script's process group
    master = int((workspace.directory / "gateway.pid").read_text())
    wait_until(lambda: port_open(workspace.port), "the gateway")
    old = wait_until(lambda: workers_of(master), "the worker")
    with ws_connect(f"ws://127.0.0.1:{workspace.port}/echo", open_timeout=TIMEOUT) as ws:
        ws.send("before")
        assert ws.recv(timeout=TIMEOUT) == "before"
        workspace.run("reload_hup.sh").finish()
        wait_until(lambda: len(new := workers_of(master)) == 1 and new != old, "the new worker alone", timeout=30)
        ws.send("after")
        assert ws.recv(timeout=TIMEOUT) == "after"


def workers_of(pid: int) -> list[int]:
    return sorted(int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())


@runs("howto/direct.sh", "howto/direct_echo.py")
def test_direct_mode_server(workspace):
    script = workspace.serve("howto/direct.sh", "howto/direct_echo.py", sock="echo")
    assert round_trip(workspace.port, "echo", "handed over") == "handed over"
    wait_until(lambda: "direct client from ('127.0.0.1'," in script.log(), "the server's log line")


@pytest.mark.cc
@runs("howto/upper.c", "howto/c_server.sh")
def test_c_server(workspace):
    workspace.serve("howto/c_server.sh", "howto/upper.c", sock="upper")
    assert round_trip(workspace.port, "upper", "hello from c") == "HELLO FROM C"


@runs("howto/hello_rpc.py", "howto/rpc_server.sh")
def test_rpc_library(workspace):
    workspace.serve("howto/rpc_server.sh", "howto/hello_rpc.py", sock="hello", sock_type=socket.SOCK_SEQPACKET)
    request = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "greet", "params": ["bob"]})
    assert json.loads(round_trip(workspace.port, "hello", request)) == {"jsonrpc": "2.0", "id": 1,
                                                                        "result": "Hello, bob!"}


@runs("howto/metrics.sh")
def test_metrics(workspace):
    pytest.importorskip("prometheus_client", reason="the metrics extra (in the test extra) is not installed")
    echo_server(workspace)
    workspace.serve("howto/metrics.sh")
    assert round_trip(workspace.port, "echo") == "round trip"
    status, body = wait_until(lambda: (found := http_get(workspace.port, "/metrics"))[1].count(
        b'ouistiti_gw_sessions_total{code="1000"') and found, "the session counted")
    assert status == 200 and b"ouistiti_gw_sessions_open" in body


@runs("howto/admin.sh", "howto/admin_list.sh", "howto/admin_list.json", "howto/admin_close.sh")
def test_admin(workspace):
    assert shutil.which("curl"), "the how-to's scripts use curl (.ci/run installs it)"
    echo_server(workspace)
    workspace.serve("howto/admin.sh")
    workspace.copy("howto/admin_list.sh", "howto/admin_close.sh")
    with ws_connect(f"ws://127.0.0.1:{workspace.port}/echo", open_timeout=TIMEOUT) as ws:
        ws.send("x")
        ws.recv(timeout=TIMEOUT)
        listed = json.loads(workspace.run("admin_list.sh").finish())
        shown = json.loads((EXAMPLES / "howto" / "admin_list.json").read_text(encoding="utf-8"))
        assert listed.keys() == shown.keys() and listed["sessions"][0].keys() == shown["sessions"][0].keys()
        session = listed["sessions"][0]
        assert session["name"] == "echo" and session["bytes_in"] == 1
        script = workspace.directory / "admin_close.sh"
        script.write_text(script.read_text().replace("4242-1", session["id"]))
        answers = workspace.run("admin_close.sh").finish()
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=TIMEOUT)
    assert (ws.close_code, ws.close_reason) == (4001, "maintenance")
    assert '"closed": 1' in answers and '"closed": 0' in answers  # by id; nobody is alice here


# -- the site builds ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """``sphinx-build -W -n``: a warning, or a reference that does not resolve, fails it."""
    pytest.importorskip("sphinx", reason="the docs extra is not installed (pip install -e '.[docs]')")
    out = tmp_path_factory.mktemp("site")
    build = subprocess.run([sys.executable, "-m", "sphinx", "-W", "-n", "-q", "-b", "html", str(DOCS), str(out)],
                           capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert build.returncode == 0, build.stdout + build.stderr
    return out


def page_text(site: Path, name: str) -> str:
    html = (site / name).read_text(encoding="utf-8")
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html)).replace("&#8217;", "'").replace("&quot;", '"')


def test_the_option_reference_is_every_option_of_the_schema(site):
    from ouistiti_gw.config import GatewayConfig, ServerConfig, options

    text = page_text(site, "reference/options.html")
    for schema in (GatewayConfig, ServerConfig):
        for item in options(schema):
            entry = text.split(f"{item.name}¶", 1)[1]
            entry = entry.split("Default:", 1)
            assert item.cli_flag in entry[0], item.name
            assert (item.environment_variable in entry[0]) == item.environment, item.name
            assert entry[1].lstrip().startswith(item.default_text), (item.name, entry[1][:40])


def test_the_cli_reference_is_the_parsers_help(site):
    from ouistiti_gw.cli import build_parser

    text = page_text(site, "reference/cli.html")
    for command in ("ouistiti-gw --help", "ouistiti-gw serve --help", "ouistiti-gw demo --help"):
        assert command in text
    for action in build_parser()._subparsers._group_actions[0].choices["serve"]._actions:
        for flag in action.option_strings:
            assert flag in text


def test_the_api_reference_has_the_public_face(site):
    text = page_text(site, "reference/api.html")
    for name in ("WebSocketGateway", "GatewayConfig", "ConfigurationError", "make_app", "make_filter",
                 "DirectClient", "adopt", "client_address", "ProxyHeader"):
        assert f"{name}" in text, name


def test_the_benchmark_charts_are_on_the_site(site):
    for chart in (ROOT / "benchmarks" / "figures").glob("*.png"):
        assert (site / "_images" / chart.name).read_bytes() == chart.read_bytes()


def test_a_reference_to_nothing_fails_the_build(tmp_path):
    """-n is on, and the leniency for internals (docs/_ext/internal_refs.py) covers only real names."""
    pytest.importorskip("sphinx", reason="the docs extra is not installed (pip install -e '.[docs]')")
    source = tmp_path / "src"
    shutil.copytree(DOCS, source, ignore=shutil.ignore_patterns("_build"))
    wrong = "\nSee {class}`ouistiti_gw.gateway.middleware.NoSuchThing` and {confval}`no_such_option`.\n"
    (source / "index.md").write_text((source / "index.md").read_text() + wrong)
    build = subprocess.run([sys.executable, "-m", "sphinx", "-W", "-n", "-q", "--keep-going", "-b", "html",
                            str(source), str(tmp_path / "out")], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert build.returncode != 0
    assert "NoSuchThing" in build.stderr and "no_such_option" in build.stderr
