"""From a request path to a UNIX socket name: the allow/deny rules and a traversal-proof resolution.

Pure functions, no I/O beyond ``os.path.realpath``: the gateway asks this module *which names* a
WebSocket request may reach; :mod:`ouistiti_gw.gateway.lookup` then opens the file by descriptors.

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
import itertools
import os
import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import unquote

from ..config import PLACEHOLDERS, has_placeholder, parse_patterns
from ..errors import GatewayError
from ..green.unix import fits_sun_path

#: How many rounds of percent-decoding are inspected for hidden traversal.
_DECODE_ROUNDS = 3
#: Unicode categories refused in a name: controls (C0, DEL, C1) and line/paragraph separators.
_CONTROL_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})
#: A token of a comma-separated header, without the whitespace around it.
_PROTOCOL_TOKEN = re.compile(r"[^,\s](?:[^,]*[^,\s])?")


class NameRefused(GatewayError):
    """The name can never designate a socket below docroot (traversal, bad characters...)."""


@dataclass(frozen=True)
class NameRules:
    """The seed's ``allow`` and ``deny`` options: a name must match ``allow`` and not ``deny``.

    Patterns are shell globs matched against the whole name with :func:`fnmatch.fnmatchcase`, so
    ``*`` also matches ``/`` (``internal/*`` covers ``internal/a/b``), as ouistiti's globs do.

    A pattern may hold ``{user}`` and ``{group}`` (``users/{user}/*``): :meth:`for_user` fills them
    with an authenticated user's name and each of its groups (checked by :func:`check_segment`
    first). Until the user is known (:meth:`refusal`, which decides whether a request is the
    gateway's at all), a placeholder of ``allow`` stands for ``*`` and a pattern of ``deny``
    with one is left out: the request is then judged again with the user's own rules.
    """

    allow: tuple[str, ...] = ("*",)
    deny: tuple[str, ...] = ()

    @classmethod
    def from_options(cls, allow: str | list[str] | tuple[str, ...] | None = "*",
                     deny: str | list[str] | tuple[str, ...] | None = "") -> "NameRules":
        return cls(parse_patterns(allow), parse_patterns(deny))

    @property
    def personal(self) -> bool:
        """Whether a pattern names the user or a group: the rules differ from one user to the next."""
        return has_placeholder(self.allow + self.deny)

    def permits(self, name: str) -> bool:
        return self.refusal(name) is None

    def refusal(self, name: str) -> str | None:
        """Which rule keeps ``name`` out (``denied by deny = internal/*``), or None if it is served
        (to some user, when the rules are :attr:`personal`)."""
        allow = tuple(_any_value(pattern) for pattern in self.allow)
        deny = tuple(pattern for pattern in self.deny if not has_placeholder((pattern,)))
        if not any(fnmatch.fnmatchcase(name, pattern) for pattern in allow):
            return f"not allowed by allow = {', '.join(self.allow) or '(empty)'}"
        denied_by = next((pattern for pattern in deny if fnmatch.fnmatchcase(name, pattern)), None)
        return f"denied by deny = {denied_by}" if denied_by is not None else None

    def for_user(self, user: str | None, groups: tuple[str, ...] = ()) -> "NameRules":
        """The rules of one user: each placeholder filled with ``user`` and each of ``groups``
        (a pattern whose placeholder has no value, ``{user}`` for an anonymous client, stands for
        no name). Raises :class:`NameRefused` when one of them would be interpolated and is not a
        safe path segment (:func:`check_segment`)."""
        if not self.personal:
            return self
        for value in (user, *groups) if user is not None else groups:
            check_segment(value)
        return NameRules(_filled(self.allow, user, groups), _filled(self.deny, user, groups))


def _any_value(pattern: str) -> str:
    for placeholder in PLACEHOLDERS:
        pattern = pattern.replace(placeholder, "*")
    return pattern


def _filled(patterns: tuple[str, ...], user: str | None, groups: tuple[str, ...]) -> tuple[str, ...]:
    filled: list[str] = []
    for pattern in patterns:
        if "{user}" in pattern:
            if user is None:
                continue
            pattern = pattern.replace("{user}", user)  # a safe segment holds no brace
        filled.extend((pattern.replace("{group}", group) for group in groups) if "{group}" in pattern else (pattern,))
    return tuple(filled)


#: Characters a user or group name may not hold to be put in a name: a separator, a glob's, an
#: escape's, a placeholder's.
_UNSAFE_IN_SEGMENT = frozenset("/\\*?[]%{}")


def check_segment(value: str) -> None:
    """Refuse ``value`` (a user or group name) as one segment of a socket name: it must be a
    whole segment that :func:`check_name` accepts, and match only itself as part of a glob."""
    if value in ("", ".", "..") or any(c in _UNSAFE_IN_SEGMENT for c in value) or any(
            unicodedata.category(c) in _CONTROL_CATEGORIES for c in value):
        raise NameRefused("user or group is not a safe path segment")


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
    check_fits(resolved)
    return resolved


def check_fits(path: str) -> None:
    """Refuse a socket path that does not fit a UNIX socket address (:func:`fits_sun_path`)."""
    if not fits_sun_path(path):
        raise NameRefused("path too long for a UNIX socket address")


def check_destination(rules: NameRules, name: str, resolved: str) -> None:
    """Refuse ``name`` when the name it ``resolved`` to (below docroot, links followed) is one the
    rules do not permit.

    A symlink (``alias -> internal/secret``), a symlinked directory (``pub -> internal``) or a
    subprotocol fallback must not connect to a socket whose own name ``deny`` covers, or
    ``allow`` does not: the request was aimed at the gateway and is refused (403), not passed
    on. The reason does not say where the link leads.
    """
    if resolved != name and not rules.permits(resolved):
        raise NameRefused("name leads to a socket that is not served")


def parse_protocols(header: str | None, limit: int | None = None) -> list[str]:
    """The tokens of a ``Sec-WebSocket-Protocol`` request header, in the client's order; only the
    first ``limit`` if given: the rest of a header of thousands is not even split."""
    return [token.group() for token in itertools.islice(_PROTOCOL_TOKEN.finditer(header or ""), limit)]
