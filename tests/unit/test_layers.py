"""The package's layering, read from its source tree: each module imports only its own layer or
the ones below it.

The layers are the package's sub-packages (and three top-level modules), bottom up as
docs/explanation/architecture.md ("Layers and modules") draws them: the errors; the sans-I/O
``core``; the options' schema (``config``); the gevent shells (``green``); the server-side API
(``backend``) and the reload machinery (``reload``); the ``gateway``; the ``servers`` that only
wire; the command line and the package's face at the top. A module's layer is where it sits: a
new sub-package must be given its place in :data:`LAYERS` first (the test names it until it is).
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "ouistiti_gw"
CONTRIB = PACKAGE.parent / "contrib"

#: Bottom up. A sub-package is a layer; so are two top-level modules; the rest of the top is "top".
LAYERS = ["errors", "core", "config", "green", "backend", "reload", "gateway", "servers", "top"]
TOP_LEVEL_LIMIT = 12
#: Third-party and standard modules that do I/O (or are the servers): none in the core.
#: A core module may still take constants from ``socket`` (``from socket import AF_INET``).
IO_MODULES = {"gevent", "geventwebsocket", "socket", "gunicorn", "webob", "paste"}
#: gevent-websocket's classes are subclassed by the servers' handler and worker; everywhere else
#: it is reached through the gateway's adapter (by its environ key, no import).
GEVENTWEBSOCKET_IMPORTERS = {"servers.handler", "servers.worker"}
GEVENTWEBSOCKET_READERS = {"gateway.stock_handler", "servers.handler"}


def modules(package: Path = PACKAGE) -> list[str]:
    """Every module of the package, dotted below it: ``core.frames``, ``cli``."""
    return sorted(".".join(path.relative_to(package).with_suffix("").parts)
                  for path in package.rglob("*.py") if "__pycache__" not in path.parts)


def layer_of(module: str) -> str:
    head = module.split(".")[0]
    if head in LAYERS:
        return head
    assert "." not in module, f"{module}: its sub-package {head!r} has no place in LAYERS"
    return "top"


def source_of(module: str, package: Path = PACKAGE) -> str:
    path = package.joinpath(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    return path.read_text(encoding="utf-8")


def imports(module: str, package: Path = PACKAGE) -> list[tuple[str, str, tuple[str, ...]]]:
    """Every import of ``module`` (function bodies included): ``(kind, name, names)`` with kind
    ``"own"`` (a module of the package, dotted below it) or ``"other"`` (the top-level name)."""
    tree = ast.parse(source_of(module, package))
    here = module.split(".")[:-1] if not package.joinpath(*module.split(".")).is_dir() else module.split(".")
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top, _, rest = alias.name.partition(".")
                found.append(("own", rest, ()) if top == package.name else ("other", top, ()))
        elif isinstance(node, ast.ImportFrom):
            names = tuple(alias.name for alias in node.names)
            if node.level:
                base = here[:len(here) - node.level + 1]
                if node.module:
                    found.append(("own", ".".join([*base, node.module]), names))
                else:  # from . import x: x is a module of that package, or a name of its __init__
                    found.extend(("own", ".".join([*base, name]) if base else name, ()) for name in names)
            elif node.module and (node.module == package.name or node.module.startswith(package.name + ".")):
                rest = node.module[len(package.name) + 1:]
                found.extend(("own", f"{rest}.{name}" if rest else name, ()) for name in names)
            elif node.module and node.module != "__future__":
                found.append(("other", node.module.split(".")[0], names))
    return found


def test_the_top_holds_at_most_a_dozen_modules():
    top = [path.name for path in PACKAGE.glob("*.py")]
    assert len(top) <= TOP_LEVEL_LIMIT, f"{len(top)} modules at the top: {sorted(top)}"


def test_every_sub_package_is_a_layer():
    unplaced = [path.name for path in PACKAGE.iterdir()
                if path.is_dir() and (path / "__init__.py").exists() and path.name not in LAYERS]
    assert not unplaced, f"give these sub-packages a place in LAYERS: {unplaced}"


@pytest.mark.parametrize("module", modules())
def test_imports_go_down_the_data_path(module):
    rank = LAYERS.index(layer_of(module))
    upward = [f"{name} ({layer_of(name)})" for kind, name, _ in imports(module)
              if kind == "own" and name and LAYERS.index(layer_of(name)) > rank]
    assert not upward, f"{module} ({layer_of(module)}) imports a higher layer: {upward}"


@pytest.mark.parametrize("module", [module for module in modules() if layer_of(module) == "core"])
def test_the_core_imports_nothing_that_does_io(module):
    doing_io = [name for kind, name, names in imports(module)
                if kind == "other" and name in IO_MODULES
                and not (name == "socket" and names and all(item.isupper() for item in names))]
    assert not doing_io, f"{module} is in the sans-I/O core but imports {doing_io}"


@pytest.mark.parametrize("module", [module for module in modules() if module not in GEVENTWEBSOCKET_IMPORTERS])
def test_gevent_websocket_only_in_the_glue_that_subclasses_it(module):
    assert "geventwebsocket" not in [name for kind, name, _ in imports(module) if kind == "other"]


@pytest.mark.parametrize("module", [module for module in modules() if module not in GEVENTWEBSOCKET_READERS])
def test_gevent_websocket_internals_only_in_the_adapter(module):
    """``environ["wsgi.websocket"]`` and what hangs off it are read in the adapter
    (``gateway.stock_handler``) and gevent-websocket's subclass (``servers.handler``) only."""
    source = source_of(module)
    assert "wsgi.websocket" not in source and "stream.handler" not in source


@pytest.mark.parametrize("module", modules())
def test_the_package_does_not_depend_on_its_samples(module):
    names = [name for _, name, _ in imports(module)]
    assert "ouistiti_gw_contrib" not in names and "contrib" not in names


@pytest.mark.parametrize("module", modules(CONTRIB))
def test_the_samples_import_only_the_server_side_api(module):
    tree = ast.parse(source_of(module, CONTRIB))
    paths = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    paths |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    package = {path for path in paths if path.split(".")[0] == "ouistiti_gw"}
    assert package <= {"ouistiti_gw.backend"}, f"contrib/{module} imports {sorted(package)}"


@pytest.mark.parametrize("module", [module for module in modules() if module != "core.protocol"])
def test_only_the_core_touches_its_private_fields(module):
    """The protocol core saves and restores itself (``Protocol.snapshot``/``restore``): no other
    module reads or writes ``protocol._x``."""
    assert not re.findall(r"protocol\._\w+", source_of(module))


#: One job per class: past this many lines, a class outside the protocol core is doing several.
CLASS_LINES_LIMIT = 220


@pytest.mark.parametrize("module", [module for module in modules() if layer_of(module) != "core"])
def test_no_class_outside_the_core_is_long(module):
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(ast.parse(source_of(module))) if isinstance(node, ast.ClassDef)
            and node.end_lineno is not None and node.end_lineno - node.lineno + 1 > CLASS_LINES_LIMIT]
    assert not long, f"{module}: {long}"


def test_descriptors_are_received_in_one_module():
    """SCM_RIGHTS is decoded in ``green.fdpass`` only: every other module goes through it."""
    assert [module for module in modules() if "recvmsg" in source_of(module)] == ["green.fdpass"]


def test_the_import_reader_sees_every_form_of_import(tmp_path):
    """The reader the checks rely on: relative (up and down), absolute and nested imports all count."""
    package = tmp_path / "ouistiti_gw"
    (package / "gateway").mkdir(parents=True)
    (package / "gateway" / "names.py").write_text(
        "from . import session\nfrom .stock_handler import adapt\nfrom ..core.frames import CloseCode\n"
        "from .. import errors\nimport ouistiti_gw.cli\nfrom ouistiti_gw.servers import handler\n"
        "def later():\n    import gevent.socket\n    from socket import AF_INET\n", encoding="utf-8")
    assert imports("gateway.names", package) == [
        ("own", "gateway.session", ()), ("own", "gateway.stock_handler", ("adapt",)),
        ("own", "core.frames", ("CloseCode",)), ("own", "errors", ()), ("own", "cli", ()),
        ("own", "servers.handler", ()), ("other", "gevent", ()), ("other", "socket", ("AF_INET",))]


def architecture_listing(directory: str) -> set[str]:
    """The modules the documentation's Architecture page lists under ``directory/``, by their path
    below it (``core/frames``), sub-packages' ``__init__`` left out."""
    page = (PACKAGE.parent / "docs" / "explanation" / "architecture.md").read_text(encoding="utf-8")
    blocks = page.split("## Layers and modules", 1)[1].split("```")[1::2]
    block = next(block for block in blocks if block.startswith("\nouistiti_gw/"))
    listed, inside, sub = set(), False, ""
    for line in block.splitlines():
        if not line.startswith(" "):
            inside, sub = line.startswith(f"{directory}/"), ""
        elif inside:
            entry = line.strip().split()[0]
            if line.startswith("  ") and not line.startswith("   ") and entry.endswith("/"):
                sub = entry
            elif entry.endswith(".py"):
                listed.add((sub if line.startswith("    ") else "") + entry[:-3])
    return listed


@pytest.mark.parametrize("directory", ["ouistiti_gw", "contrib"])
def test_the_architecture_page_lists_every_module(directory):
    root = PACKAGE.parent / directory
    tree = {"/".join(path.relative_to(root).with_suffix("").parts) for path in root.rglob("*.py")
            if "__pycache__" not in path.parts and path.name not in ("__init__.py", "__main__.py")}
    assert architecture_listing(directory) == tree
