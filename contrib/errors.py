"""The one exception a sample server's start-up raises on purpose."""
from __future__ import annotations


class StartupError(Exception):
    """A condition that prevents the server from starting (exit status 1, its message logged)."""
