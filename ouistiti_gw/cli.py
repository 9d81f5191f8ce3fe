"""The ouistiti-gw command: serve (an ini file, or options) and demo (no config at all).

    ouistiti-gw serve example.ini
    ouistiti-gw serve --docroot /var/run/websocket --port 8080
    ouistiti-gw demo

Both listen on 127.0.0.1 unless told otherwise and print the URL to open. Ctrl-C (or SIGTERM)
stops everything they started and removes what they created.

Exit status: 0 when stopped, 1 for a failure while running (the port is taken, a sample server
did not start), 2 for a usage or configuration error (as argparse's): a missing or malformed ini
file, an unknown setting, a bad value. Either way one line on stderr says why.
"""
from __future__ import annotations

import argparse
import errno
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack

from .inifile import IniFile
from .middleware import MODES, WebSocketGateway
from .paste import SETTINGS, build_gateway, demo_page_directory, make_static_app, not_found_app
from .unix import BackendUnavailable, connect_unix
from .wsgi_server import make_server, serve_until_stopped

log = logging.getLogger(__name__)

#: The demo's account in its jsonrpc/authrpc panel (a throw-away database in the temporary docroot).
DEMO_USER, DEMO_PASSWORD = "demo", "demo"
SERVER_START_TIMEOUT_SECONDS = 10.0
EXIT_FAILURE, EXIT_USAGE = 1, 2


def _add_listen_options(parser: argparse.ArgumentParser, default_port: int) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=default_port, help="port (default: %(default)s; 0 picks one)")
    parser.add_argument("--certfile", help="TLS certificate (PEM): serve https:// and wss://")
    parser.add_argument("--keyfile", help="TLS private key (PEM), if not inside --certfile")
    parser.add_argument("--header-timeout", type=float,
                        help="seconds a client may take to send its request headers (default 10)")
    parser.add_argument("--max-header-size", type=int,
                        help="bytes of request headers; more get 431 (default 32768)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ouistiti-gw", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve an ini file's pipeline, or the gateway alone")
    serve.add_argument("ini", nargs="?", help="a PasteDeploy ini file (its [server:main] is used if present)")
    serve.add_argument("--docroot", help="directory of the UNIX sockets")
    serve.add_argument("--allow", default="*", help="comma-separated globs of names served (default: *)")
    serve.add_argument("--deny", default="", help="comma-separated globs of names never served")
    serve.add_argument("--mode", default="pipe", choices=MODES,
                       help="pipe: the gateway relays messages (default); direct: after the handshake the "
                       "client's socket itself is handed to the UNIX server")
    serve.add_argument("--origins", help="allowed browser Origins: '*', or a comma-separated list "
                       "(default: only this same host)")
    serve.add_argument("--allowed-hosts", help="Host names WebSocket handshakes may carry, globs allowed "
                       "(default: only loopback names when reached on a loopback address)")
    serve.add_argument("--max-connections", type=int, help="sessions at once before 503 (default 10000)")
    serve.add_argument("--max-message-size", type=int, help="largest client message in bytes (default 16 MiB)")
    serve.add_argument("--max-message-rate", type=float, help="client messages/s per session (default: no limit)")
    serve.add_argument("--max-frame-rate", type=float,
                       help="client frames/s per session, pings and pongs included (default 100000; 0: no limit)")
    serve.add_argument("--metrics-path", help="serve Prometheus metrics at this path, e.g. /metrics")
    serve.add_argument("--metrics-allow", help="IPs/CIDRs that may scrape the metrics (default: 127.0.0.0/8, ::1)")
    serve.add_argument("--ping-interval", type=float, help="ping a client quiet for this long, seconds (default 30)")
    serve.add_argument("--idle-timeout", type=float,
                       help="close a session after this long without a frame, seconds (default 90)")
    serve.add_argument("--proxy-protocol", choices=["v1", "v2"],
                       help="start each UNIX connection with a PROXY header saying who the client is")
    serve.add_argument("--trusted-proxies", help="comma-separated IPs/CIDRs of front proxies whose "
                       "Forwarded/X-Forwarded-For headers name the client (default: none)")
    _add_listen_options(serve, 8080)

    demo = commands.add_parser("demo", help="a temporary docroot, the sample servers and a demo page")
    _add_listen_options(demo, 8080)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "demo":
            return run_demo(args)
        return run_serve(args)
    except ValueError as error:  # ConfigurationError, or options that do not go together
        print(f"ouistiti-gw: {error}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as error:
        hint = " (another server listens there: stop it, or choose another port)" \
            if error.errno == errno.EADDRINUSE else ""
        print(f"ouistiti-gw: {error}{hint}", file=sys.stderr)
        return EXIT_FAILURE


def cli_flag(key: str) -> str:
    """How the command line spells a setting: ``--max-connections``."""
    return "--" + key.replace("_", "-")


def run_serve(args: argparse.Namespace) -> int:
    if args.ini:
        return _serve_ini(os.path.abspath(args.ini))
    settings = {key: str(value) for key, value in vars(args).items()
                if key in SETTINGS and value is not None}
    settings.setdefault("docroot", "")
    app = build_gateway(not_found_app, settings, cli_flag)
    serve_until_stopped(_make_server(app, args))
    return 0


def _serve_ini(path: str) -> int:
    ini = IniFile(path)
    app, server = ini.load()
    if server is None:
        log.info("%s has no [server:main]: serving on 127.0.0.1:8080", path)
        server = _serve_default
    with ini.errors():  # the server runner checks its own settings (port = eighty)
        server(app)
    return 0


def _serve_default(app) -> None:
    serve_until_stopped(make_server(app))


def _make_server(app, args: argparse.Namespace):
    return make_server(app, args.host, args.port, args.certfile, args.keyfile, args.header_timeout,
                       args.max_header_size)


def run_demo(args: argparse.Namespace) -> int:
    """The README's first command: everything the demo page needs, gone again after Ctrl-C."""
    with ExitStack() as cleanup:
        docroot = tempfile.mkdtemp(prefix="ouistiti-gw-demo-")
        cleanup.callback(shutil.rmtree, docroot, ignore_errors=True)
        server = _make_server(WebSocketGateway(make_static_app({}, demo_page_directory()), docroot), args)
        server.init_socket()  # bind now: a port already in use fails before any sample server starts
        database = os.path.join(docroot, "users.db")
        subprocess.run([sys.executable, "-m", "ouistiti_gw_contrib.authrpc", database, "adduser", DEMO_USER],
                       input=DEMO_PASSWORD + "\n", text=True, check=True, capture_output=True)
        servers = [("ouistiti_gw_contrib.echo", "echo", []),
                   ("ouistiti_gw_contrib.chat", "chat", ["-w"]),
                   ("ouistiti_gw_contrib.jsonrpc", "jsonrpc", ["-L", "ouistiti_gw_contrib.authrpc", "-C", database])]
        for module, name, options in servers:
            process = start_sample_server(module, docroot, name, options)
            cleanup.callback(stop_process, process)
        log.info("demo account for the jsonrpc panel: user %r, password %r", DEMO_USER, DEMO_PASSWORD)
        serve_until_stopped(server)
    return 0


def start_sample_server(module: str, docroot: str, name: str, options: list[str]) -> subprocess.Popen:
    """Start one of the contrib servers and wait until its socket accepts connections."""
    process = subprocess.Popen([sys.executable, "-m", module, "-R", docroot, "-n", name, *options])
    path = os.path.join(docroot, name)
    deadline = time.monotonic() + SERVER_START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise OSError(f"sample server {module} exited with status {process.returncode}")
        if unix_accepts(path):
            log.info("started %s on %s", module, path)
            return process
        time.sleep(0.05)
    stop_process(process)
    raise OSError(f"sample server {module} did not listen on {path}")


def unix_accepts(path: str) -> bool:
    """True when a server listens on the UNIX socket ``path`` (stream or seqpacket)."""
    try:
        connect_unix(path).close()
    except BackendUnavailable:
        return False
    return True


def stop_process(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
