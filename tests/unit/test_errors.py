"""One exception tree: every exception the package raises on purpose is a ``GatewayError``.

Private control-flow exceptions (a leading underscore: thrown into a greenlet, or carried out of a
callback) are not raised to callers and stay outside the tree.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil

import ouistiti_gw
from ouistiti_gw.errors import GatewayError


def public_exceptions() -> list[type[BaseException]]:
    found = []
    for module_info in pkgutil.iter_modules(ouistiti_gw.__path__):
        if module_info.name == "__main__":
            continue  # importing it runs the command
        module = importlib.import_module(f"ouistiti_gw.{module_info.name}")
        for name, value in vars(module).items():
            if (inspect.isclass(value) and issubclass(value, BaseException) and not name.startswith("_")
                    and value.__module__ == module.__name__):
                found.append(value)
    return found


def test_the_package_defines_named_exceptions():
    names = {exception.__name__ for exception in public_exceptions()}
    assert {"ConfigurationError", "NameRefused", "BackendUnavailable", "ProtocolViolation",
            "WebSocketClosed"} <= names


def test_every_public_exception_is_a_gateway_error():
    strays = [f"{exception.__module__}.{exception.__name__}" for exception in public_exceptions()
              if not issubclass(exception, GatewayError)]
    assert not strays, f"not under GatewayError: {strays}"
