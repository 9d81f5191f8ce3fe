"""The ouistiti-gw command: serve (an ini file, or options) and demo (no config at all).

    ouistiti-gw serve example.ini
    ouistiti-gw serve --docroot /var/run/websocket --port 8080
    ouistiti-gw demo

Both listen on 127.0.0.1 unless told otherwise and print the URL to open. Ctrl-C (or SIGTERM)
stops everything they started and removes what they created. ``serve`` runs as a small master
over a worker that serves: SIGHUP to the master reloads the code and configuration on disk
without dropping a session (:mod:`ouistiti_gw.reload.supervisor`).

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
from importlib import metadata
from typing import NoReturn

from .config import COMMAND_LINE, Config, ConfigurationError, GatewayConfig, Options, ServerConfig, closest, options
from .gateway.middleware import WebSocketGateway
from .green.unix import BackendUnavailable, connect_unix
from .reload.supervisor import become_master, worker_argv, worker_link
from .servers.inifile import IniFile
from .servers.paste import demo_page_directory, make_static_app, not_found_app
from .servers.wsgi_server import make_server, serve_until_stopped

log = logging.getLogger(__name__)

#: The demo's account in its jsonrpc/authrpc panel (a throw-away database in the temporary docroot).
DEMO_USER, DEMO_PASSWORD = "demo", "demo"
SERVER_START_TIMEOUT_SECONDS = 10.0
EXIT_FAILURE, EXIT_USAGE = 1, 2


class CommandLine(argparse.ArgumentParser):
    """argparse, its errors in one line (why, and where to read more: no usage dump), with the
    flag a misspelt one most likely means."""

    def error(self, message: str) -> NoReturn:
        guess = None
        if message.startswith("unrecognized arguments: "):
            words = message.split(": ", 1)[1].split()
            guess = next(filter(None, (closest(word.split("=", 1)[0], self.flags())
                                       for word in words if word.startswith("--"))), None)
        hint = f" (did you mean {guess}?)" if guess else ""
        self.exit(EXIT_USAGE, f"{self.prog}: {message}{hint}; see {self.prog} --help\n")

    def flags(self) -> list[str]:
        """Every long flag of this parser and of its commands."""
        found = []
        for action in self._actions:
            found += [flag for flag in action.option_strings if flag.startswith("--")]
            if isinstance(action, argparse._SubParsersAction):
                for command in action.choices.values():
                    found += command.flags()
        return found


def add_options(parser: argparse.ArgumentParser, schema: type[Options]) -> None:
    """A flag for each option of ``schema``, its help and choices from the schema. Flags default
    to ``None`` (not given): :meth:`Options.load` fills in the schema's defaults."""
    for item in options(schema):
        default = "required" if item.required else f"default: {item.default_text}"
        parser.add_argument(item.cli_flag, choices=item.choices or None,
                            help=f"{item.help} ({default})".replace("%", "%%"))


def given(args: argparse.Namespace, schema: type[Config]) -> Config:
    """The ``schema`` instance the command line's flags make (their strings parsed there, once)."""
    settings = {item.name: getattr(args, item.name) for item in options(schema)
                if getattr(args, item.name) is not None}
    return schema.load(settings, COMMAND_LINE)


def build_parser() -> argparse.ArgumentParser:
    parser = CommandLine(prog="ouistiti-gw", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {metadata.version('ouistiti_gw')}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve an ini file's pipeline, or the gateway alone")
    serve.add_argument("ini", nargs="?", help="a PasteDeploy ini file (its [server:main] is used if present); "
                       "it holds every setting: the option flags below cannot go with it")
    demo = commands.add_parser("demo", help="a temporary docroot, the sample servers and a demo page")
    for command, schemas in ((serve, (GatewayConfig, ServerConfig)), (demo, (ServerConfig,))):
        command.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
        for schema in schemas:
            add_options(command, schema)
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(arguments)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "demo":
            return run_demo(args)
        if args.ini:
            refuse_flags_beside(args.ini, args)
        if worker_link() is None:
            become_master(worker_argv(arguments))
        return run_serve(args)
    except ConfigurationError as error:  # a bug's ValueError is no usage error: its traceback follows
        return fail(str(error), EXIT_USAGE)
    except OSError as error:
        hint = " (another server listens there: stop it, or choose another port)" \
            if error.errno == errno.EADDRINUSE else ""
        return fail(f"{error}{hint}", EXIT_FAILURE)
    except Exception as error:  # a bug, or broken new code: its traceback follows
        link = worker_link()
        if link is not None and link.successor:
            link.failed(f"{type(error).__name__}: {error}")
        raise


def refuse_flags_beside(ini: str, args: argparse.Namespace) -> None:
    """Option flags given with an ini file: a :class:`ConfigurationError`. The file configures
    several sections (and maybe several gateways), so a flag would not say which it changes;
    taken silently, it was simply lost."""
    flags = [item.cli_flag for schema in (GatewayConfig, ServerConfig) for item in options(schema)
             if getattr(args, item.name) is not None]
    if flags:
        raise ConfigurationError(f"{', '.join(flags)} cannot go with an ini file: set "
                                 f"{'them' if len(flags) > 1 else 'it'} in {ini} instead")


def fail(reason: str, status: int) -> int:
    """One line on stderr saying why; a reload's successor says it to its master instead, which
    logs it as the reload's failure (the old worker keeps serving)."""
    link = worker_link()
    if link is not None and link.successor:
        link.failed(reason)
    else:
        print(f"ouistiti-gw: {reason}", file=sys.stderr)
    return status


def run_serve(args: argparse.Namespace) -> int:
    if args.ini:
        return _serve_ini(os.path.abspath(args.ini))
    app = WebSocketGateway(not_found_app, config=given(args, GatewayConfig))
    serve_until_stopped(make_server(app, given(args, ServerConfig)))
    return 0


def _serve_ini(path: str) -> int:
    ini = IniFile(path)
    app, server = ini.load()
    if server is None:
        log.info("%s has no [server:main]: serving on %s:%d", path, ServerConfig.host, ServerConfig.port)
        server = _serve_default
    with ini.errors():  # the server runner checks its own settings (port = eighty)
        server(app)
    return 0


def _serve_default(app) -> None:
    serve_until_stopped(make_server(app))


def run_demo(args: argparse.Namespace) -> int:
    """The README's first command: everything the demo page needs, gone again after Ctrl-C."""
    with ExitStack() as cleanup:
        docroot = tempfile.mkdtemp(prefix="ouistiti-gw-demo-")
        cleanup.callback(shutil.rmtree, docroot, ignore_errors=True)
        server = make_server(WebSocketGateway(make_static_app({}, demo_page_directory()), docroot),
                             given(args, ServerConfig))
        server.init_socket()  # bind now: a port already in use fails before any sample server starts
        database = os.path.join(docroot, "users.db")
        subprocess.run([sys.executable, "-m", "ouistiti_gw_contrib.authrpc", database, "adduser", DEMO_USER],
                       input=DEMO_PASSWORD + "\n", text=True, check=True, capture_output=True)
        servers = [("ouistiti_gw_contrib.echo", "echo", []),
                   ("ouistiti_gw_contrib.chat", "chat", ["-w"]),
                   ("ouistiti_gw_contrib.jsonrpc", "jsonrpc", ["-L", "ouistiti_gw_contrib.authrpc", "-C", database])]
        for module, name, arguments in servers:
            process = start_sample_server(module, docroot, name, arguments)
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
