"""Sphinx configuration: furo, Markdown pages (MyST), autodoc of the public API, and the pages
generated from the code (_ext/generated.py). Built with ``sphinx-build -W -n``: warnings are
errors and every cross-reference must resolve. No intersphinx: the build needs no network."""
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

from ouistiti_gw import __version__  # noqa: E402

project = "ouistiti-gw"
author = "the ouistiti-gw developers"
copyright = "the ouistiti-gw developers, MIT licence"
release = version = __version__

extensions = ["myst_parser", "sphinx.ext.autodoc", "generated", "internal_refs"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "examples"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = f"ouistiti-gw {release}"

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": False}

nitpicky = True
# Types of the standard library and of third-party packages: with no intersphinx (no network in
# CI) they have no page to link to. Everything of ouistiti-gw's own must resolve.
nitpick_ignore_regex = [
    ("py:class", r"(socket|ssl|enum|typing|collections\.abc|ipaddress)\..*"),
    ("py:class", r"(gevent|geventwebsocket|webob|gunicorn|_typeshed)\..*"),
    ("py:class", r"'?(WSGIApplication|WSGIEnvironment|StartResponse)'?"),
]
