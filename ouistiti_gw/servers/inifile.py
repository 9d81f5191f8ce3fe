"""A PasteDeploy ini file, checked before PasteDeploy loads it, so that what is wrong is one line.

Left to PasteDeploy, a syntax error (or a ``.py`` file given as the ini) and a ``use = egg:`` that
names no entry point end in tracebacks, and a bad value names neither its file nor its section.
:class:`IniFile` reads the file as PasteDeploy will and checks each ``use = egg:`` against the
installed entry points; :meth:`IniFile.load` then loads it and, like :meth:`IniFile.errors`, turns a
wrong setting into a :class:`~ouistiti_gw.config.ConfigurationError` that starts with ``FILE [SECTION]:``.
"""
from __future__ import annotations

import configparser
from contextlib import contextmanager
from importlib import metadata
from typing import TYPE_CHECKING, Callable, Iterator

from ..config import INI, ConfigurationError

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

#: The entry point groups PasteDeploy looks in, by the prefix of the section's name.
ENTRY_POINT_GROUPS = {
    "app": ("paste.app_factory", "paste.composite_factory"),
    "application": ("paste.app_factory", "paste.composite_factory"),
    "composite": ("paste.composite_factory",),
    "filter": ("paste.filter_factory", "paste.filter_app_factory"),
    "filter-app": ("paste.filter_factory", "paste.filter_app_factory"),
    "server": ("paste.server_factory", "paste.server_runner"),
}
#: The ``use =`` of a section that configures the gateway: where a missing setting belongs.
GATEWAY_USES = {"egg:ouistiti_gw", "egg:ouistiti_gw#main", "egg:ouistiti_gw#websocket"}


class IniFile:
    """``path`` read and checked; :class:`ConfigurationError` if it is missing or malformed."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.parser = configparser.ConfigParser(interpolation=None)
        try:
            with open(path, encoding="utf-8") as file:
                text = file.read()
        except FileNotFoundError:
            raise ConfigurationError("no such file", source=INI.at(path)) from None
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigurationError(f"cannot read it: {error}", source=INI.at(path)) from None
        try:
            self.parser.read_string(text, path)
        except configparser.Error as error:
            raise ConfigurationError(syntax_error(error), source=INI.at(path)) from None
        unclosed = unclosed_header(text)
        if unclosed is not None:
            raise ConfigurationError(unclosed, source=INI.at(path))
        for section in self.parser.sections():
            self._check_use(section)

    @property
    def has_server(self) -> bool:
        return self.parser.has_section("server:main")

    def _check_use(self, section: str) -> None:
        use = self.parser.get(section, "use", fallback="").strip()
        groups = ENTRY_POINT_GROUPS.get(section.split(":", 1)[0].strip())
        if not use.startswith("egg:") or groups is None:
            return
        distribution, _, name = use[len("egg:"):].partition("#")
        place = INI.at(f"{self.path} [{section}]")
        try:
            entry_points = metadata.distribution(distribution).entry_points
        except metadata.PackageNotFoundError:
            raise ConfigurationError(f"use = {use}: {distribution} is not installed", "use", place) from None
        names = sorted({point.name for point in entry_points if point.group in groups})
        if (name or "main") not in names:
            raise ConfigurationError(f"use = {use}: no such entry point "
                                     f"({distribution} has {', '.join(names) or 'none'} here)", "use", place)

    def section_of(self, key: str | None) -> str | None:
        """The section that sets ``key`` or, for a missing one, the first that configures the gateway."""
        sections = self.parser.sections()
        for section in sections:
            if key and key in self.parser.options(section):
                return section
        for section in sections:
            if self.parser.get(section, "use", fallback="").strip() in GATEWAY_USES:
                return section
        return None

    def load(self) -> tuple["WSGIApplication", Callable[["WSGIApplication"], None] | None]:
        """PasteDeploy's ``main`` app and its ``[server:main]`` runner (``None`` if there is none)."""
        from paste.deploy import loadapp, loadserver

        uri = f"config:{self.path}"
        try:
            with self.errors():
                return loadapp(uri), (loadserver(uri) if self.has_server else None)
        except LookupError as error:  # PasteDeploy: a section or a loader it cannot find
            raise ConfigurationError(str(error), source=INI.at(self.path)) from None

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Rewrite a configuration error from this file's factories as one naming the place."""
        try:
            yield
        except ConfigurationError as error:
            section = self.section_of(error.key)
            where = f"{self.path} [{section}]" if section else self.path
            raise error.at(where) from None
        except configparser.Error as error:  # PasteDeploy's interpolation of %(name)s
            raise ConfigurationError(error.message.splitlines()[0], source=INI.at(self.path)) from None


def unclosed_header(text: str) -> str | None:
    """A section header without its ``]``, with its line number, or None.

    configparser reads ``[filter:websocket`` (a colon in it) as a setting ``[filter`` of the
    section above, and PasteDeploy then says that section "has extra settings", naming no line.
    """
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("[") and not stripped.endswith("]"):
            return f"line {number}: {stripped!r} opens a [section] it does not close"
    return None


def syntax_error(error: configparser.Error) -> str:
    """configparser's several-line message, as one line with the line number."""
    if isinstance(error, configparser.MissingSectionHeaderError):
        return f"line {error.lineno}: {error.line.strip()!r} before any [section] (is this an ini file?)"
    if isinstance(error, configparser.ParsingError):
        lineno, line = error.errors[0]  # ``line`` is already a repr
        return f"line {lineno}: cannot parse {line}"
    if isinstance(error, (configparser.DuplicateSectionError, configparser.DuplicateOptionError)):
        return f"line {error.lineno}: {error.message.rsplit(']: ', 1)[-1]}"
    return error.message.splitlines()[0]
