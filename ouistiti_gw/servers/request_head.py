"""A request's header section, read within its budget, checked and split into fields in one pass.

gevent's ``pywsgi`` reads the headers line by line with ``http.client``, which neither holds them
to our budget nor refuses what RFC 9112 says a server must refuse; nor is it quick: it joins the
lines, decodes them and parses them again with ``email.parser``, then every lookup lower-cases
every name. Here each line is counted, checked and split once, and the fields are kept in a dict
of lower-case names (:class:`RequestHeaders`). When the reader already holds the whole section
(a handshake nearly always comes in one segment), :func:`buffered_header_section` takes it in one
piece, without a system call; otherwise :func:`read_header_section` reads it line by line, as it
comes. Both take the same lines to the same fields or the same refusal (:class:`RequestRefused`).
"""
from __future__ import annotations

import re
from typing import BinaryIO

from ..errors import GatewayError

#: Bytes of one header line (CRLF included): nginx's buffer size.
MAX_HEADER_LINE = 8 * 1024
#: Header fields of one request: ``http.client``'s and HAProxy's bound.
MAX_HEADER_FIELDS = 100


class RequestRefused(GatewayError):
    """A request head the handler answers itself, before any app sees it.

    gevent hands whatever ``read_request`` raises to
    :meth:`~ouistiti_gw.servers.handler.GatewayHandler._handle_client_error`, which answers this
    one with its own status (a ``ValueError`` there is gevent's 400).
    """

    def __init__(self, status: str, why: str) -> None:
        super().__init__(why)
        self.status = status
        self.code = status.split()[0]
        self.why = why

    def response(self) -> bytes:
        body = (self.why + "\n").encode("latin-1", "replace")
        head = (f"HTTP/1.1 {self.status}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n"
                f"Content-Length: {len(body)}\r\n\r\n")
        return head.encode("latin-1") + body


class RequestHeaders:
    """A request's header fields, read as pywsgi, gevent-websocket and gunicorn read the
    ``http.client.HTTPMessage`` gevent would have built: ``get``, ``getheader``, ``get_all``,
    ``items``, ``headers`` (the lines), ``typeheader``, ``status`` and ``del``. Names are matched
    without regard to case, values are as the client sent them (spaces before them removed)."""

    #: pywsgi refuses a request whose headers have a status (``http.client``'s line too long): never here.
    status = ""

    def __init__(self, fields: list[tuple[str, str]]) -> None:
        self._fields = fields
        self._values: dict[str, list[str]] = {}
        for name, value in fields:
            self._values.setdefault(name.lower(), []).append(value)

    def get(self, name: str, default: str | None = None) -> str | None:
        values = self._values.get(name.lower())
        return values[0] if values else default

    getheader = get

    def get_all(self, name: str, failobj: list[str] | None = None) -> list[str] | None:
        values = self._values.get(name.lower())
        return list(values) if values else failobj

    def __delitem__(self, name: str) -> None:
        lower = name.lower()
        if self._values.pop(lower, None) is not None:
            self._fields = [field for field in self._fields if field[0].lower() != lower]

    def items(self) -> list[tuple[str, str]]:
        return list(self._fields)

    @property
    def headers(self) -> list[str]:
        return [f"{name}: {value}\r\n" for name, value in self._fields]

    @property
    def typeheader(self) -> str | None:
        return self.get("content-type")


def _field_line_error(content: str) -> str | None:
    """Why a header line (``content``: its CR LF or LF removed) is malformed (RFC 9112 sections
    5.1 and 5.2), or None."""
    if content[:1] in (" ", "\t"):
        # A continuation would glue CR LF into the previous field's value.
        return "obsolete line folding (RFC 9112 section 5.2)"
    if "\r" in content or "\0" in content:
        # A parser that ends a line at a bare CR would make one field two.
        return "a bare CR or NUL in a header line (RFC 9112 section 2.2)"
    name, colon, _ = content.partition(":")
    if not colon or not name:
        return "a header line without a field name and colon"
    if name[-1:] in (" ", "\t"):
        return "whitespace between a field name and its colon"
    if not _TOKEN.fullmatch(name):
        # What one parser skips and another takes (email.parser took it for the start of a body,
        # and every field after it was lost to the checks) is refused, not guessed.
        return "a field name that is not a token (RFC 9110 section 5.6.2)"
    return None


#: A field name: a token (RFC 9110 section 5.6.2).
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class _Section:
    """A header section taken line by line: each line held to the budget, checked, split once."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        #: Bytes of the budget the lines so far have left.
        self.left = budget
        self.lines = 0
        self.fields: list[tuple[str, str]] = []

    @property
    def limit(self) -> int:
        """The most bytes the next line may have."""
        return min(MAX_HEADER_LINE, self.left)

    def take(self, line: str, size: int) -> bool:
        """One line of ``size`` bytes as read, its LF removed (a line ended by EOF has none, and
        ``size`` counts none); True when it ends the section.

        Past the budget, a line over :data:`MAX_HEADER_LINE` or more than :data:`MAX_HEADER_FIELDS`
        fields: :class:`RequestRefused` with 431, as soon as the excess is seen. A malformed
        line: 400.
        """
        limit = self.limit
        if size > limit:
            why = (f"request header fields over {self.budget} bytes" if limit == self.left
                   else f"a header line over {MAX_HEADER_LINE} bytes")
            raise RequestRefused("431 Request Header Fields Too Large", why)
        content = line[:-1] if size > len(line) and line[-1:] == "\r" else line
        if not content:
            return True
        self.left -= size
        malformed = _field_line_error(content)
        if malformed is not None:
            raise RequestRefused("400 Bad Request", malformed)
        self.lines += 1
        if self.lines > MAX_HEADER_FIELDS:
            raise RequestRefused("431 Request Header Fields Too Large", f"more than {MAX_HEADER_FIELDS} header fields")
        name, _, value = content.partition(":")
        self.fields.append((name, value.lstrip(" \t")))
        return False


def read_header_section(rfile: BinaryIO, budget: int) -> RequestHeaders:
    """The request's header fields up to the blank line, read line by line within ``budget``
    bytes (the blank line included), as they come: the gateway never reads (nor holds) more than
    the budget. Refusals: :meth:`_Section.take`."""
    section = _Section(budget)
    while True:
        raw = rfile.readline(section.limit + 1)
        line = raw.decode("iso-8859-1")
        if section.take(line[:-1] if line[-1:] == "\n" else line, len(raw)):
            return RequestHeaders(section.fields)


def end_of_section(data: bytes, start: int = 0) -> int:
    """Where the blank line that ends the header section at ``start`` in ``data`` ends, or -1
    (not all of the section is there)."""
    if data[start:start + 1] == b"\n":
        return start + 1
    if data[start:start + 2] == b"\r\n":
        return start + 2
    ends = [at + len(blank) for blank in (b"\n\n", b"\n\r\n") if (at := data.find(blank, start)) >= 0]
    return min(ends, default=-1)


def buffered_header_section(rfile: BinaryIO, budget: int) -> RequestHeaders | None:
    """The request's header fields when the bytes ``rfile`` buffers (it must have some: ``peek``
    would wait for more) hold the whole section, taken from them in one piece; None (nothing read)
    when they do not. Fields and refusals are those of :func:`read_header_section`."""
    end = end_of_section(rfile.peek())  # type: ignore[attr-defined]
    if end < 0:
        return None
    section = _Section(budget)
    for line in rfile.read(end).decode("iso-8859-1").split("\n")[:-1]:
        if section.take(line, len(line) + 1):
            break
    return RequestHeaders(section.fields)


#: A Content-Length value (RFC 9112 section 8.6: ``1*DIGIT``; not Python's ``int()``, which takes
#: ``+5``, `` 5`` and ``1_0``).
_DECIMAL = re.compile(r"[0-9]+")


def framing_error(headers: RequestHeaders) -> str | None:
    """Why the length of a request's body is ambiguous (RFC 9112 section 6.3), or None.

    Two parsers in a chain that read different lengths from one request are how requests are
    smuggled past a front proxy. gevent takes the first ``Content-Length`` and lets a
    ``Transfer-Encoding`` that is not ``chunked`` stand beside one; the RFC says a server "MUST
    respond with a 400 (Bad Request) status code and then close the connection" for an invalid
    Content-Length or a final transfer coding other than chunked, and calls both headers
    together an error a server ought to treat as one.
    """
    lengths = headers.get_all("Content-Length") or []
    encodings = headers.get_all("Transfer-Encoding") or []
    if lengths and encodings:
        return "both Content-Length and Transfer-Encoding (RFC 9112 section 6.3)"
    values = {value.strip() for value in lengths}  # a list (``5, 5``) is no decimal number either
    if not all(_DECIMAL.fullmatch(value) for value in values):
        return "a Content-Length that is not a decimal number (RFC 9112 section 8.6)"
    if len(values) > 1:
        return "conflicting Content-Length values (RFC 9112 section 6.3)"
    codings = [coding.strip().lower() for field in encodings for coding in field.split(",")]
    if codings and codings[-1] != "chunked":
        return "a Transfer-Encoding whose last coding is not chunked (RFC 9112 section 6.3)"
    return None
