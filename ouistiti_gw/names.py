"""From a request path to a UNIX socket path: the allow/deny rules and a traversal-proof resolution.

Pure functions, no I/O beyond ``os.path.realpath`` and ``os.lstat``: the gateway asks this module
*which file* a WebSocket request may reach, and only then opens a connection.

Security stance: a name that could mean anything other than "this file below docroot" is refused,
not repaired. Refused are: empty names, absolute names, ``.`` and ``..`` segments, empty segments
(``a//b``), NUL and other control characters (C1 ones and the Unicode line and paragraph
separators too: a name is written to log lines and headers), backslashes, names that are not
valid UTF-8, and names that still hold a percent escape which decodes to one of those (double
encoding such as ``%252e%252e``). Last, the checks that matter whatever the string looked like: the
*resolved* path (symlinks followed) must lie inside the resolved docroot, and the allow/deny rules
judge the name it resolves to as well as the name asked for, so a link cannot lead around ``deny``.
"""
from __future__ import annotations

import fnmatch
import os
import stat
import unicodedata
from dataclasses import dataclass
from urllib.parse import unquote

from .errors import GatewayError

#: ``sizeof(sockaddr_un.sun_path)`` on Linux, minus the terminating NUL.
MAX_SOCKET_PATH_BYTES = 107
#: How many rounds of percent-decoding are inspected for hidden traversal.
_DECODE_ROUNDS = 3
#: Unicode categories refused in a name: controls (C0, DEL, C1) and line/paragraph separators.
_CONTROL_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})


def fits_sun_path(path: str) -> bool:
    """Whether ``path`` fits a UNIX socket address: ``bind`` and ``connect`` refuse a longer one
    (the sample servers check their own path with this rule too)."""
    return len(os.fsencode(path)) <= MAX_SOCKET_PATH_BYTES


class NameRefused(GatewayError, ValueError):
    """The name can never designate a socket below docroot (traversal, bad characters...)."""


def parse_patterns(patterns: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """Split a comma-separated glob list (``"ws_*, internal/*"``) into its patterns."""
    if not patterns:
        return ()
    if isinstance(patterns, str):
        patterns = patterns.split(",")
    return tuple(p.strip() for p in patterns if p.strip())


@dataclass(frozen=True)
class NameRules:
    """The seed's ``allow`` and ``deny`` options: a name must match ``allow`` and not ``deny``.

    Patterns are shell globs matched against the whole name with :func:`fnmatch.fnmatchcase`, so
    ``*`` also matches ``/`` (``internal/*`` covers ``internal/a/b``), as ouistiti's globs do.
    """

    allow: tuple[str, ...] = ("*",)
    deny: tuple[str, ...] = ()

    @classmethod
    def from_options(cls, allow: str | list[str] | tuple[str, ...] | None = "*",
                     deny: str | list[str] | tuple[str, ...] | None = "") -> "NameRules":
        return cls(parse_patterns(allow), parse_patterns(deny))

    def permits(self, name: str) -> bool:
        def matches(patterns: tuple[str, ...]) -> bool:
            return any(fnmatch.fnmatchcase(name, p) for p in patterns)

        return matches(self.allow) and not matches(self.deny)


def wsgi_path_to_name(path_info: str) -> str:
    """Turn a WSGI ``PATH_INFO`` (latin-1 decoded bytes, PEP 3333) into a socket name.

    The leading ``/`` is dropped; the rest must be valid UTF-8 and pass :func:`check_name`.
    """
    try:
        name = path_info.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        raise NameRefused("name is not valid UTF-8") from None
    if name.startswith("/"):
        name = name[1:]
    check_name(name)
    return name


def check_name(name: str) -> None:
    """Refuse any name whose string form could leave docroot or confuse the filesystem."""
    if not name:
        raise NameRefused("empty name")
    decoded = name
    for _ in range(_DECODE_ROUNDS):
        _check_plain(decoded)
        if "%" not in decoded:
            return
        try:
            decoded, previous = unquote(decoded, errors="strict"), decoded
        except UnicodeDecodeError:
            raise NameRefused("percent-escape that is not valid UTF-8") from None
        if decoded == previous:
            return
    raise NameRefused("name is percent-encoded too many times")


def _check_plain(name: str) -> None:
    if name.startswith("/"):
        raise NameRefused("absolute name")
    if "\\" in name:
        raise NameRefused("backslash in name")
    if any(unicodedata.category(c) in _CONTROL_CATEGORIES for c in name):
        raise NameRefused("control character in name")
    for segment in name.split("/"):
        if segment in ("", ".", ".."):
            raise NameRefused(f"{segment or 'empty'!s} segment in name")


def resolve_inside(docroot: str, name: str) -> str:
    """Return the real path of ``docroot/name``, or raise :class:`NameRefused` if it lies outside.

    The name must already have passed :func:`check_name`. Symlinks are followed (a link inside
    docroot to another place inside docroot is fine); the result must be docroot itself's
    descendant. The path must also fit in ``sockaddr_un``.
    """
    root = os.path.realpath(docroot)
    resolved = os.path.realpath(os.path.join(root, name))
    if os.path.commonpath([root, resolved]) != root or resolved == root:
        raise NameRefused("name resolves outside docroot")
    if not fits_sun_path(resolved):
        raise NameRefused("path too long for a UNIX socket address")
    return resolved


def check_destination(docroot: str, rules: NameRules, name: str, path: str) -> None:
    """Refuse ``name`` when its resolved ``path`` is a name the rules do not permit.

    ``path`` comes from :func:`resolve_inside`. A symlink (``alias -> internal/secret``), a
    symlinked directory (``pub -> internal``) or a subprotocol fallback must not connect to a
    socket whose own name ``deny`` covers, or ``allow`` does not: the request was aimed at the
    gateway and is refused (403), not passed on. The reason does not say where the link leads.
    """
    connected = name_below(docroot, path)
    if connected != name and not rules.permits(connected):
        raise NameRefused("name leads to a socket that is not served")


def name_below(docroot: str, path: str) -> str:
    """The name allow/deny judge for ``path`` (from :func:`resolve_inside`): below the resolved docroot."""
    return os.path.relpath(path, os.path.realpath(docroot))


def is_directory(path: str) -> bool:
    """True when ``path`` is an existing directory (used for ouistiti's ``name/protocol`` lookup)."""
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except OSError:
        return False


def exists(path: str) -> bool:
    return os.path.lexists(path)


def parse_protocols(header: str | None) -> list[str]:
    """The tokens of a ``Sec-WebSocket-Protocol`` request header, in the client's order."""
    if not header:
        return []
    return [p.strip() for p in header.split(",") if p.strip()]


@dataclass(frozen=True)
class Target:
    """Where a WebSocket request goes: the socket file, the name it was found by, the protocol."""

    name: str
    path: str
    protocol: str | None


def find_target(docroot: str, rules: NameRules, name: str, protocols: list[str]) -> Target | None:
    """Pick the socket for ``name``, with ouistiti's fallback on the requested subprotocols.

    ouistiti (``mod_websocket.c``, ``_checkfile``) opens ``docroot/name``; if that does not exist
    it tries ``docroot/protocol``, and if ``name`` is a directory it tries ``name/protocol``. We
    do the same for each requested protocol in order, every candidate passing the same name checks
    and allow/deny rules. Returns ``None`` when the name asked for is not the gateway's (not
    allowed, or denied), and skips a protocol candidate that is not; raises :class:`NameRefused`
    for a hostile name, and for an allowed name whose resolved path (the one connected) is not
    (:func:`check_destination`). The returned path may not exist: the caller connects and
    answers 404 then.
    """
    if not rules.permits(name):
        return None
    path = resolve_inside(docroot, name)
    check_destination(docroot, rules, name, path)
    protocol = protocols[0] if protocols else None
    if exists(path) and not is_directory(path):
        return Target(name, path, protocol)
    prefix = name + "/" if is_directory(path) else ""
    for candidate_protocol in protocols:
        candidate = prefix + candidate_protocol
        try:
            check_name(candidate)
            candidate_path = resolve_inside(docroot, candidate)
        except NameRefused:
            continue
        if rules.permits(candidate) and exists(candidate_path):
            check_destination(docroot, rules, candidate, candidate_path)
            return Target(candidate, candidate_path, candidate_protocol)
    return Target(name, path, protocol)
