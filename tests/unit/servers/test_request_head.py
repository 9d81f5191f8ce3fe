"""The header section parser: both of its readers against each other, and against what the handler
used before it (``email.parser`` into gevent's ``OldMessage``), for every field and every refusal."""
import email.parser
import io
import random
import socket

import pytest
from gevent.pywsgi import OldMessage

from ouistiti_gw.servers.request_head import (
    MAX_HEADER_FIELDS,
    MAX_HEADER_LINE,
    RequestHeaders,
    RequestRefused,
    buffered_header_section,
    end_of_section,
    read_header_section,
)

BUDGET = 32 * 1024


def email_message(section: str) -> OldMessage:
    """The headers as the handler parsed them before: its lines (blank line excluded) through email.parser."""
    return email.parser.Parser(_class=OldMessage).parsestr(section)


def outcome(read, data: bytes, budget: int):
    """(fields, what is left in the reader) or (status, why) of one reading of ``data``, all of
    it in the reader's buffer once it is first read."""
    reader = io.BufferedReader(io.BytesIO(data), buffer_size=max(len(data), io.DEFAULT_BUFFER_SIZE))
    try:
        headers = read(reader, budget)
    except RequestRefused as refused:
        return refused.status, refused.why
    return (None if headers is None else headers.items()), reader.read()


def both_readers(data: bytes, budget: int = BUDGET):
    """What both readers make of ``data``, which holds a whole section: the same thing."""
    in_one_piece = outcome(buffered_header_section, data, budget)
    line_by_line = outcome(read_header_section, data, budget)
    assert in_one_piece == line_by_line
    return line_by_line


HANDSHAKE = ("Host: 127.0.0.1:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")


@pytest.mark.parametrize("section", [
    HANDSHAKE,
    "",
    HANDSHAKE.replace("\r\n", "\n"),  # bare LF line ends, as http.client takes them
    "A: one\nB: two\r\nC: three\n",
    "X-Spaces:   padded  \t\r\nX-Empty:\r\nX-Blank: \t \r\nX-Tight:value\r\n",
    "Cookie: a=1\r\ncookie: b=2\r\nCOOKIE: c=3\r\n",
    "X-Latin: caf\xe9 \x85 \x0c\x1c end\r\nX-Colons: a: b: c\r\n",
    "X_Under: kept\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n",
], ids=["handshake", "empty", "bare-lf", "mixed-ends", "whitespace", "repeated", "latin-1", "cgi-names"])
def test_fields_are_those_email_parser_gave(section):
    data = (section + "\r\nafter").encode("latin-1")
    fields, rest = both_readers(data)
    assert rest == b"after"
    old = email_message(section)
    assert fields == old.items()
    headers = RequestHeaders(fields)
    for name in ("host", "HOST", "Cookie", "content-type", "missing", "From someone", "Upgrade"):
        assert headers.get(name) == old.get(name) and headers.get(name, "-") == old.get(name, "-")
        assert headers.getheader(name) == old.getheader(name)
        assert headers.get_all(name) == old.get_all(name)
    assert headers.typeheader == old.typeheader
    assert headers.headers == list(old.headers)


def test_a_field_is_deleted_under_any_case():
    headers = RequestHeaders([("Content-Length", "5"), ("Host", "x"), ("content-length", "6")])
    del headers["CONTENT-LENGTH"]
    del headers["missing"]  # as email.message: nothing to delete is no error
    assert headers.items() == [("Host", "x")] and headers.get("content-length") is None


@pytest.mark.parametrize("line, why", [
    (" folded: x", "obsolete line folding"),
    ("\tfolded: x", "obsolete line folding"),
    ("A: b\rc", "a bare CR"),
    ("A: b\0c", "NUL"),
    ("\rA: b", "a bare CR"),
    ("no colon", "without a field name"),
    (": no name", "without a field name"),
    ("A : b", "whitespace between"),
    ("A\t: b", "whitespace between"),
    # email.parser took these for the start of a body, and the fields after them were lost to the checks
    ("Bad Name: x", "not a token"),
    ("From someone: x", "not a token"),
    ("X\x7fDel: x", "not a token"),
    ("X(y): z", "not a token"),
    ("Caf\xe9: x", "not a token"),
])
def test_malformed_lines_get_400_from_both_readers(line, why):
    status, reason = both_readers(f"Host: x\r\n{line}\r\nA: b\r\n\r\n".encode("latin-1"))
    assert status == "400 Bad Request" and why in reason


def section_of(size: int) -> bytes:
    """A header section of exactly ``size`` bytes, its final blank line included."""
    return ("X-Fill: ".ljust(size - 4, "a") + "\r\n\r\n").encode()


def test_a_section_of_exactly_the_budget_is_taken_one_byte_more_gets_431():
    assert both_readers(section_of(200), budget=200)[0] == [("X-Fill", "a" * 188)]
    assert both_readers(section_of(201), budget=200) == (
        "431 Request Header Fields Too Large", "request header fields over 200 bytes")
    # the blank line counts: a field line that uses the whole budget leaves no room for it
    assert both_readers(section_of(200)[:-2] + b"\r\n", budget=198)[0].startswith("431")


def test_a_line_of_exactly_the_line_limit_is_taken_one_byte_more_gets_431():
    line = "X-Long: ".ljust(MAX_HEADER_LINE - 2, "a") + "\r\n"
    assert both_readers(f"{line}\r\n".encode())[0] == [("X-Long", "a" * (MAX_HEADER_LINE - 10))]
    assert both_readers(f"A{line}\r\n".encode()) == (
        "431 Request Header Fields Too Large", f"a header line over {MAX_HEADER_LINE} bytes")


def test_fields_past_the_hundredth_get_431():
    fields = "".join(f"X-{i}: {i}\r\n" for i in range(MAX_HEADER_FIELDS))
    assert len(both_readers(f"{fields}\r\n".encode())[0]) == MAX_HEADER_FIELDS
    assert both_readers(f"{fields}X-More: 1\r\n\r\n".encode()) == (
        "431 Request Header Fields Too Large", f"more than {MAX_HEADER_FIELDS} header fields")


#: Pieces of random header lines: names, separators, whitespace, what gets refused, Latin-1.
PIECES = ["Host", "X-A", "a", "From ", "_", "-", ":", ": ", " ", "\t", "\r", "\0", "\x85", "\x0c", "\xe9", "v"]


@pytest.mark.parametrize("seed", range(20))
def test_random_sections_read_alike_and_as_email_parser_read_them(seed):
    """Any lines, ends and budget: the two readers agree on fields or refusal, and taken fields
    are email.parser's."""
    rng = random.Random(seed)
    for _ in range(100):
        lines = ["".join(rng.choices(PIECES, k=rng.randint(1, 8))) + rng.choice(["\r\n", "\n"])
                 for _ in range(rng.randint(0, 6))]
        section = "".join(line for line in lines if line != "\r\n")  # no blank line before the last
        blank = rng.choice(["\r\n", "\n"])
        result = both_readers(f"{section}{blank}rest".encode("latin-1"), rng.randint(8, 120))
        if not isinstance(result[0], str):  # taken, not refused
            assert result == (email_message(section).items(), b"rest")


def test_a_section_cut_by_eof_is_the_lines_before_it():
    """A client that closes after its last field line: line by line, the section ends there (as
    before); the one-piece reader never saw a blank line, so it leaves the bytes to the other."""
    data = b"Host: x\r\nA: b"
    assert outcome(buffered_header_section, data, BUDGET) == (None, data)
    assert outcome(read_header_section, data, BUDGET) == (email_message("Host: x\r\nA: b").items(), b"")


def test_a_section_in_pieces_is_left_to_the_line_reader():
    """Over a socket, what has arrived: part of a section is left (nothing read) to the line
    reader, which waits for the rest; a whole one is taken in one piece. What follows stays."""
    ours, client = socket.socketpair()
    with ours, client, ours.makefile("rb") as reader:
        client.sendall(b"Host: x\r\nUpgrade: web")
        reader.peek()  # what has arrived: the handler's has_pending_input
        assert buffered_header_section(reader, BUDGET) is None
        client.sendall(b"socket\r\n\r\n\x81\x05")
        assert read_header_section(reader, BUDGET).items() == [("Host", "x"), ("Upgrade", "websocket")]
        assert reader.read(2) == b"\x81\x05"
        client.sendall(b"Host: y\r\n\r\n\x81\x05")
        reader.peek()
        assert buffered_header_section(reader, BUDGET).items() == [("Host", "y")]
        assert reader.read(2) == b"\x81\x05"


@pytest.mark.parametrize("data, end", [
    (b"GET / HTTP/1.1\r\n\r\nnext", 18),
    (b"GET /\n\nnext", 7),
    (b"GET / HTTP/1.1\r\nA: b\r\n\r\n", 24),
    (b"GET / HTTP/1.1\r\nA: b\n\nnext", 22),
    (b"GET / HTTP/1.1\r\nA: b\n\r\nC: d\r\n\r\n", 23),
    (b"GET / HTTP/1.1\r\nA: b\r\n", -1),
    (b"GET / HTTP/1.1\r\nA: b\r\n\r", -1),
])
def test_the_end_of_a_section_after_its_request_line(data, end):
    """What the handler asks of the bytes its request line was read from: is the head all there?"""
    assert end_of_section(data, data.index(b"\n") + 1) == end
