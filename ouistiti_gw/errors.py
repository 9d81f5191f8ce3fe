"""The root of every exception ouistiti-gw raises on purpose.

Each kind of failure is a named child of :class:`GatewayError`, defined beside the code that
raises it (a bad setting, a refused name, an unreachable server, a broken protocol, a closed
connection), so a caller can catch one kind, or all of them with one ``except``.
"""
from __future__ import annotations


class GatewayError(Exception):
    """Base of the exceptions ouistiti-gw raises on purpose (never a bug's own exception)."""
