"""Cross-references from the API's docstrings to the package's internals.

The reference documents the public API; its docstrings also name internal modules and objects
(``:mod:`ouistiti_gw.backend.handover```, ``:class:`~ouistiti_gw.core.protocol.Protocol```) that have no page.
A reference to such an object is shown as code, without a link, **only if the object exists**:
a reference to a name the package does not have (a typo, a rename) still fails the ``-n`` build.
"""
from __future__ import annotations

import importlib
from typing import Any

from docutils import nodes
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment

PACKAGE = "ouistiti_gw"


def _exists(dotted: str) -> bool:
    """Whether ``dotted`` names a module of the package, or an attribute of one (nested too)."""
    if dotted != PACKAGE and not dotted.startswith(PACKAGE + "."):
        return False
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for name in parts[split:]:
            if not hasattr(found, name):
                return False
            found = getattr(found, name)
        return True
    return False


def candidates(node: pending_xref) -> list[str]:
    """The full names a Python reference may mean, from where it is written."""
    target = node["reftarget"].lstrip("~.")
    module, klass = node.get("py:module"), node.get("py:class")
    names = [target]
    if module:
        names.append(f"{module}.{target}")
        if klass:
            names.append(f"{module}.{klass}.{target}")
    return names


def internal_reference(app: Sphinx, env: BuildEnvironment, node: pending_xref,
                       contnode: nodes.Element) -> nodes.Element | None:
    if node.get("refdomain") != "py":
        return None
    if any(_exists(name) for name in candidates(node)):
        return contnode
    return None


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("missing-reference", internal_reference)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
