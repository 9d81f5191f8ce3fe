"""Reference pages generated from the code at build time, so they cannot drift from it.

``.. option-table:: ouistiti_gw.config.GatewayConfig`` writes one entry per option of that schema
(``ouistiti_gw.config.options()``): its keyword and ini key, its ``OUISTITI_GW_*`` variable where
the environment may set it, its ``serve`` flag, its default, what it accepts and its help. Each
entry is a ``confval`` target: ``{confval}`max_connections``` links to it, and a link to an option
that does not exist fails the ``-n`` build.

``.. cli-help::`` writes what ``ouistiti-gw --help`` and each subcommand's ``--help`` print,
from the parser itself (``ouistiti_gw.cli.build_parser()``).
"""
from __future__ import annotations

import argparse
import importlib
import os
from contextlib import contextmanager
from typing import Any, Iterator

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

from ouistiti_gw.cli import build_parser
from ouistiti_gw.config import Option, Patterns, options

#: The width ``--help`` is wrapped to on the page, whatever the terminal of the build.
HELP_COLUMNS = "100"


def _schema(dotted: str) -> type:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _accepts(item: Option) -> str:
    """What values the option takes, from its type, choices and bounds."""
    if item.choices:
        return "one of " + ", ".join(f"``{choice}``" for choice in item.choices)
    kind = "a comma-separated list" if item.kind == Patterns else item.kind.__name__
    bounds = []
    if item.minimum is not None:
        bounds.append(f">= {item.minimum:g}")
    if item.maximum is not None:
        bounds.append(f"<= {item.maximum:g}")
    return kind + (f" ({', '.join(bounds)})" if bounds else "")


def option_lines(item: Option) -> list[str]:
    """The reStructuredText of one option's entry."""
    environment = f"``{item.environment_variable}``" if item.environment else \
        "none (the server's own setting: gunicorn has its own)"
    return [
        f".. confval:: {item.name}",
        "",
        f"   {item.help[:1].upper()}{item.help[1:]}.",
        "",
        f"   :keyword and ini key: ``{item.name}``",
        f"   :environment: {environment}",
        f"   :command line: ``{item.cli_flag}``",
        f"   :default: ``{item.default_text}``",
        f"   :accepts: {_accepts(item)}",
        "",
    ]


class OptionTable(SphinxDirective):
    """Every option of one schema, in its field order."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        lines: list[str] = []
        for item in options(_schema(self.arguments[0])):
            lines.extend(option_lines(item))
        return self.parse_text_to_nodes("\n".join(lines)) if lines else []


@contextmanager
def _columns(width: str) -> Iterator[None]:
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = width
    try:
        yield
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous


def help_texts() -> list[tuple[str, str]]:
    """(command, its --help) for ``ouistiti-gw`` and each subcommand."""
    with _columns(HELP_COLUMNS):
        parser = build_parser()
        texts = [("ouistiti-gw", parser.format_help())]
        for action in parser._actions:  # argparse keeps its subparsers only here
            if isinstance(action, argparse._SubParsersAction):
                texts.extend((f"ouistiti-gw {name}", sub.format_help()) for name, sub in action.choices.items())
    return texts


class CliHelp(SphinxDirective):
    """``ouistiti-gw --help`` and each subcommand's, as the parser prints them."""

    def run(self) -> list[nodes.Node]:
        result: list[nodes.Node] = []
        for command, text in help_texts():
            result.append(nodes.paragraph("", "", nodes.literal("", f"{command} --help")))
            block = nodes.literal_block(text, text)
            block["language"] = "text"
            result.append(block)
        return result


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_object_type("confval", "confval", "pair: %s; option", objname="option")
    app.add_directive("option-table", OptionTable)
    app.add_directive("cli-help", CliHelp)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

