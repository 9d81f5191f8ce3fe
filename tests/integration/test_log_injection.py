"""A client cannot write a line of its own into the gateway's log, nor paint the reader's terminal.

The gateway runs as users run it (the CLI, whose log lines start with a timestamp). The clients
send, where the log quotes them, percent-escapes for CR, LF, ESC and NUL in the path, raw NEL
(0x85, a line break to Python's ``splitlines``), ESC and BEL bytes in header values (a raw CR, LF
or NUL there gets 400 before any app runs: tests/test_request_limits.py), and values far longer
than a log line should hold.
"""
import re

import pytest

from support import wait_until
from support.addresses import free_port
from support.clients import handshake_request, handshake_status, raw_request
from support.processes import PROJECT_WORKER, gateway_cli, gunicorn

FORGED = "2099-01-01 00:00:00,000 CRITICAL forged"
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \[\d+\] (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


def send(port: int, path: str, extra: str = "", **kwargs) -> int:
    status, _, sock, _ = raw_request(port, handshake_request(path, port=port, extra=extra, **kwargs))
    sock.close()
    return status


def test_no_client_value_reaches_the_log_unescaped(docroot, unix_servers):
    unix_servers(f"{docroot}/echo")
    forged_path = "/x%0a" + FORGED.replace(" ", "%20") + "%1b[31m%00%0d"
    raw = f"\x85{FORGED}\x1b[31m"
    with gateway_cli(docroot, "--trusted-proxies", "127.0.0.1", "--origins", "http://ok.example") as gateway:
        statuses = [
            send(gateway.port, forged_path),                                     # a name refused: path logged
            send(gateway.port, forged_path, version="8"),                         # a malformed handshake: ditto
            send(gateway.port, "/echo", f"Origin: http://a{raw}\r\n"),         # origin refused
            send(gateway.port, "/echo", f"Origin: http://{'o' * 5000}\r\n"),      # ...and a long one
            send(gateway.port, "/echo", f"Sec-WebSocket-Protocol: p{raw}\r\n"  # protocol, forwarded client
                 f"X-Forwarded-For: [fe80::1%x{raw}]\r\nOrigin: http://b\x1b]0;title\x07\r\n"),
            send(gateway.port, "/missing%e2%80%a8" + FORGED.replace(" ", "%20")),  # U+2028 (a line break too): refused
        ]
        request = handshake_request("/echo", port=gateway.port).replace(
            f"Host: 127.0.0.1:{gateway.port}".encode(), f"Host: evil{raw}".encode("latin-1"))
        statuses.append(raw_request(gateway.port, request)[0])                    # Host refused
        wait_until(lambda: gateway.log().count("refused WebSocket") == 7, what="seven refusal lines")
        assert handshake_status(gateway.port, "/echo")[0] == 101  # nothing of that harmed the service
        log = gateway.log()
    assert statuses == [403, 426, 403, 403, 403, 403, 403]
    for line in log.splitlines():
        assert TIMESTAMP.match(line), f"a line the gateway did not write: {line!r}"
    assert not set(log) & {"\x1b", "\x00", "\x07", "\r", "\x85", "\u2028"}
    assert f"/x\\x0a{FORGED}\\x1b[31m\\x00\\x0d" in log  # escaped, and readable
    assert f"origin http://a\\x85{FORGED}\\x1b[31m not allowed" in log
    assert f"Host evil\\x85{FORGED}" in log
    assert f"/missing\\u2028{FORGED}" in log
    long_origin = next(line for line in log.splitlines() if "ooooo" in line)
    assert "o" * 200 not in long_origin and "o…" in long_origin  # capped, and says so


#: A request line and headers as the audit sent them: raw ESC sequences (clear the screen, paint
#: it red) and a UTF-8 line separator, none of them percent-encoded.
FORGED_TARGET = "/echo\x1b[2J\x1b[31mFORGED\u2028" + FORGED.replace(" ", "_")
FORGED_REQUEST = (f"GET {FORGED_TARGET} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  f"User-Agent: agent\x1b]0;title\x07\r\nReferer: http://r\x1b[2J\r\n\r\n").encode("utf-8")
ESCAPED_TARGET = "/echo\\x1b[2J\\x1b[31mFORGED\\u2028" + FORGED.replace(" ", "_")


def test_the_access_log_escapes_the_request_line(docroot):
    """The access line quotes the request line as the client sent it: escaped like every other
    client value (it was written raw: a client could clear the reader's terminal)."""
    with gateway_cli(docroot) as gateway:
        assert raw_request(gateway.port, FORGED_REQUEST)[0] == 404  # a plain request: the app's answer
        wait_until(lambda: "FORGED" in gateway.log(), what="the access line")
        log = gateway.log()
    access = next(line for line in log.splitlines() if "FORGED" in line)
    assert "ouistiti_gw.access" in access and ESCAPED_TARGET in access
    assert not set(log) & {"\x1b", "\x07", "\u2028"}


@pytest.mark.gunicorn
def test_gunicorns_access_log_escapes_what_it_quotes(docroot):
    """gunicorn's access format quotes the request line, the User-Agent and the Referer."""
    port = free_port()
    with gunicorn(PROJECT_WORKER, port, {"OUISTITI_GW_DOCROOT": docroot}, "--access-logfile", "-") as gateway:
        assert raw_request(port, FORGED_REQUEST)[0] == 404
        wait_until(lambda: "FORGED" in gateway.log(), what="the access line")
        log = gateway.log()
    access = next(line for line in log.splitlines() if "FORGED" in line)
    assert ESCAPED_TARGET in access and "agent\\x1b]0;title\\x07" in access and "http://r\\x1b[2J" in access
    assert not set(log) & {"\x1b", "\x07", "\u2028"}
