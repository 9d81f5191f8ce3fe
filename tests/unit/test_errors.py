"""One exception tree: every exception the package raises on purpose is a ``GatewayError``, none is
a ``ValueError``, and ``errors.py`` maps the whole tree.

Private control-flow exceptions (a leading underscore: thrown into a greenlet, or carried out of a
callback) are not raised to callers and stay outside the tree; they are no ``ValueError`` either.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import pytest

import ouistiti_gw
from ouistiti_gw import cli, errors
from ouistiti_gw.config import ConfigurationError
from ouistiti_gw.errors import GatewayError

#: A class line of the map in errors.py: ``    NameRefused (gateway.names): why``.
MAP_ENTRY = re.compile(r"^( *)(\w+) \(([\w.]+)\):")


def defined_exceptions() -> list[type[BaseException]]:
    """Every exception class a module of the package defines, private ones included."""
    found = []
    for module_info in pkgutil.walk_packages(ouistiti_gw.__path__, "ouistiti_gw."):
        if module_info.name == "ouistiti_gw.__main__":
            continue  # importing it runs the command
        module = importlib.import_module(module_info.name)
        for value in vars(module).values():
            if (inspect.isclass(value) and issubclass(value, BaseException)
                    and value.__module__ == module.__name__):
                found.append(value)
    return found


def public_exceptions() -> list[type[BaseException]]:
    return [exception for exception in defined_exceptions() if not exception.__name__.startswith("_")]


def the_map() -> dict[str, tuple[str, str | None]]:
    """errors.py's map: each class listed, by name, as ``(module, parent listed above it)``."""
    block = errors.__doc__.split("::\n\n", 1)[1].split("\n\n", 1)[0]
    listed: dict[str, tuple[str, str | None]] = {"GatewayError": ("errors", None)}
    enclosing: list[tuple[int, str]] = [(4, "GatewayError")]
    for line in block.splitlines()[1:]:
        entry = MAP_ENTRY.match(line)
        if entry is None:
            continue  # a group's heading
        indent, name, module = len(entry[1]), entry[2], entry[3]
        while enclosing[-1][0] >= indent:
            enclosing.pop()
        listed[name] = (module, enclosing[-1][1])
        enclosing.append((indent, name))
    return listed


def test_the_package_defines_named_exceptions():
    names = {exception.__name__ for exception in public_exceptions()}
    assert {"ConfigurationError", "NameRefused", "BackendUnavailable", "ProtocolViolation",
            "WebSocketClosed"} <= names


def test_every_public_exception_is_a_gateway_error():
    strays = [f"{exception.__module__}.{exception.__name__}" for exception in public_exceptions()
              if not issubclass(exception, GatewayError)]
    assert not strays, f"not under GatewayError: {strays}"


def test_no_exception_of_the_package_is_a_value_error():
    """A ``ValueError`` means a bug: a caller that catches one must not catch ours by accident."""
    strays = [f"{exception.__module__}.{exception.__name__}" for exception in defined_exceptions()
              if issubclass(exception, ValueError)]
    assert not strays, f"also a ValueError: {strays}"


def test_the_map_in_errors_py_lists_every_exception_under_its_parent():
    listed = the_map()
    defined = {exception.__name__: exception for exception in public_exceptions()}
    assert set(listed) == set(defined), "errors.py's map and the package's classes differ"
    for name, (module, parent) in listed.items():
        exception = defined[name]
        assert exception.__module__ == f"ouistiti_gw.{module}", f"{name} is not defined in {module}"
        if parent is not None:
            assert defined[parent] in exception.__bases__, f"{name} is listed under {parent}"


def test_the_map_reader_sees_nesting_and_skips_headings():
    listed = the_map()
    assert listed["IncompleteHeader"] == ("core.proxy_protocol", "ProxyProtocolError")
    assert listed["NameRefused"] == ("gateway.names", "GatewayError")
    assert "refusals" not in listed


def test_a_bugs_value_error_is_a_traceback_not_a_usage_error(monkeypatch):
    """Only a ConfigurationError is "usage" (exit 2): a ValueError from broken code goes on up
    with its traceback. No real input makes one escape today, so the command's work is replaced."""
    def broken(args):
        raise ValueError("a bug")

    monkeypatch.setattr(cli, "run_demo", broken)
    with pytest.raises(ValueError, match="a bug"):
        cli.main(["demo"])


def test_a_configuration_error_is_a_usage_error(monkeypatch, capsys):
    def refused(args):
        raise ConfigurationError("port = 'x' is not a valid int", "port")

    monkeypatch.setattr(cli, "run_demo", refused)
    assert cli.main(["demo"]) == cli.EXIT_USAGE
    assert capsys.readouterr().err.splitlines()[-1].endswith("port = 'x' is not a valid int")
