"""The package's layering, read from its source: each module imports only modules below it.

The data path, bottom up, as docs/explanation/architecture.md ("Layers and modules") lists it:
pure rules and codecs that do no I/O; the I/O shells and socket helpers; the session that pumps
between the client and the UNIX server (sockets, not WSGI); what reads a request's environ (who
the client is, the stock worker's adapter); the middleware, the one place that knows WSGI and the
session; the server glue that only wires. A module may import its own layer or a lower one, never
a higher one. A new module must be placed in :data:`LAYERS` first: the test names it until it is.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "ouistiti_gw"

PURE, IO, SESSION, REQUEST, MIDDLEWARE, GLUE = range(6)
LAYER_NAMES = ["pure", "I/O", "session", "request", "middleware", "server glue"]
LAYERS = {
    # pure: decisions, codecs, the upgrade contract
    "errors": PURE, "logsafe": PURE, "addresses": PURE, "names": PURE, "policy": PURE, "ratelimit": PURE,
    "frames": PURE, "utf8": PURE, "deflate": PURE, "protocol": PURE, "proxy_protocol": PURE, "upgrade": PURE,
    "session_state": PURE,
    # I/O: sockets, descriptors passed over them, the WebSocket shell, the handover, the log and
    # metrics plumbing
    "greenlets": IO, "sockio": IO, "fdpass": IO, "unix": IO, "connection": IO, "websocket": IO, "direct": IO,
    "handover": IO, "logs": IO, "metrics": IO, "accepting": IO, "trim": IO, "lookup": IO,
    # the session: sockets and the WebSocket, not WSGI
    "bridge": SESSION, "takeover": SESSION,
    # what a request's environ says, below the middleware that decides on it; the options'
    # schema
    "identity": REQUEST, "stock": REQUEST, "config": REQUEST,
    "middleware": MIDDLEWARE,
    # server glue: only wires
    "handler": GLUE, "tls": GLUE, "worker": GLUE, "wsgi_server": GLUE, "lazy": GLUE, "paste": GLUE,
    "inifile": GLUE, "supervisor": GLUE, "rendezvous": GLUE, "cli": GLUE, "__init__": GLUE, "__main__": GLUE,
}
#: Third-party and standard modules that do I/O (or are the servers): none in a pure module.
#: A pure module may still take constants from ``socket`` (``from socket import AF_INET``).
IO_MODULES = {"gevent", "geventwebsocket", "socket", "gunicorn", "webob", "paste"}
#: gevent-websocket's classes are subclassed by the glue; everywhere else it is reached through
#: ``stock`` (by its environ key, no import).
GEVENTWEBSOCKET_IMPORTERS = {"handler", "worker"}


def modules() -> list[str]:
    return sorted(path.stem for path in PACKAGE.glob("*.py"))


def imports(module: str, package: Path = PACKAGE) -> list[tuple[str, str, tuple[str, ...]]]:
    """Every import of ``module`` (function bodies included): ``(kind, name, names)`` with kind
    ``"own"`` (a module of the package, by its short name) or ``"other"`` (the top-level name)."""
    tree = ast.parse((package / f"{module}.py").read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("ouistiti_gw."):
                    found.append(("own", alias.name.split(".")[1], ()))
                else:
                    found.append(("other", alias.name.split(".")[0], ()))
        elif isinstance(node, ast.ImportFrom):
            names = tuple(alias.name for alias in node.names)
            if node.level == 1 and node.module is None:  # from . import x
                found.extend(("own", name, ()) for name in names)
            elif node.level == 1:
                found.append(("own", node.module.split(".")[0], names))
            elif node.module and node.module.startswith("ouistiti_gw."):
                found.append(("own", node.module.split(".")[1], names))
            elif node.module and node.module != "__future__":
                found.append(("other", node.module.split(".")[0], names))
    return found


def test_every_module_has_a_layer():
    unplaced = [module for module in modules() if module not in LAYERS]
    assert not unplaced, f"place these modules in LAYERS: {unplaced}"


def test_every_layer_entry_is_a_module():
    """A module removed or renamed leaves no entry behind to mislead the reader."""
    absent = sorted(set(LAYERS) - set(modules()))
    assert not absent, f"LAYERS names modules that do not exist: {absent}"


@pytest.mark.parametrize("module", modules())
def test_imports_go_down_the_data_path(module):
    layer = LAYERS[module]
    upward = [f"{name} ({LAYER_NAMES[LAYERS[name]] if name in LAYERS else 'unplaced'})"
              for kind, name, _ in imports(module) if kind == "own" and LAYERS.get(name, GLUE + 1) > layer]
    assert not upward, f"{module} ({LAYER_NAMES[layer]}) imports a higher layer: {upward}"


@pytest.mark.parametrize("module", [module for module in modules() if LAYERS.get(module) == PURE])
def test_pure_modules_import_nothing_that_does_io(module):
    doing_io = [name for kind, name, names in imports(module)
                if kind == "other" and name in IO_MODULES
                and not (name == "socket" and names and all(item.isupper() for item in names))]
    assert not doing_io, f"{module} is pure but imports {doing_io}"


@pytest.mark.parametrize("module", modules())
def test_gevent_websocket_only_in_the_glue_that_subclasses_it(module):
    if module in GEVENTWEBSOCKET_IMPORTERS:
        return
    assert "geventwebsocket" not in [name for kind, name, _ in imports(module) if kind == "other"]


@pytest.mark.parametrize("module", modules())
def test_gevent_websocket_internals_only_in_the_adapter(module):
    """``environ["wsgi.websocket"]`` and what hangs off it are read in ``stock`` (the adapter)
    and ``handler`` (gevent-websocket's subclass) only."""
    if module in ("stock", "handler"):
        return
    source = (PACKAGE / f"{module}.py").read_text(encoding="utf-8")
    assert "wsgi.websocket" not in source and "stream.handler" not in source


@pytest.mark.parametrize("module", modules())
def test_the_package_does_not_depend_on_its_samples(module):
    names = [name for _, name, _ in imports(module)]
    assert "ouistiti_gw_contrib" not in names and "contrib" not in names


@pytest.mark.parametrize("module", [module for module in modules() if module != "protocol"])
def test_only_the_core_touches_its_private_fields(module):
    """The protocol core saves and restores itself (``Protocol.snapshot``/``restore``): no other
    module reads or writes ``protocol._x``."""
    source = (PACKAGE / f"{module}.py").read_text(encoding="utf-8")
    assert not re.findall(r"protocol\._\w+", source)


def test_the_import_reader_sees_every_form_of_import(tmp_path):
    """The reader the checks rely on: relative, absolute and nested imports all count."""
    (tmp_path / "names.py").write_text(
        "from . import handler\nfrom .stock import adapt\nimport ouistiti_gw.cli\n"
        "def later():\n    import gevent.socket\n    from socket import AF_INET\n", encoding="utf-8")
    assert imports("names", tmp_path) == [
        ("own", "handler", ()), ("own", "stock", ("adapt",)), ("own", "cli", ()),
        ("other", "gevent", ()), ("other", "socket", ("AF_INET",))]


def architecture_listing(directory: str) -> set[str]:
    """The modules the documentation's Architecture page lists under ``directory/``."""
    page = (PACKAGE.parent / "docs" / "explanation" / "architecture.md").read_text(encoding="utf-8")
    block = page.split("## Layers and modules", 1)[1].split("```", 2)[1]
    listed, inside = set(), False
    for line in block.splitlines():
        if not line.startswith(" "):
            inside = line.startswith(f"{directory}/")
        elif inside and line.strip().split()[0].endswith(".py"):
            listed.add(line.strip().split()[0][:-3])
    return listed


@pytest.mark.parametrize("directory", ["ouistiti_gw", "contrib"])
def test_the_architecture_page_lists_every_module(directory):
    tree = {path.stem for path in (PACKAGE.parent / directory).glob("*.py")} - {"__init__", "__main__"}
    assert architecture_listing(directory) == tree
