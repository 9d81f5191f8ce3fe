"""A shim for tools that still run ``setup.py``: the project's metadata is in pyproject.toml."""
from setuptools import setup

setup()
