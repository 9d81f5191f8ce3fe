"""RFC 6455 sections 5.5.1, 7 and 7.4: the closing handshake (Autobahn|Testsuite case group 7).

The server answers a close frame with a close frame echoing the status code, sends nothing
after it, and then closes the TCP connection itself (section 7.1.1: "the underlying TCP
connection ... SHOULD be closed first by the server"); every check of a close frame in this
suite (``RawClient.expect_close``) also waits for that end of the connection.

gevent-websocket 0.10.1, which :mod:`ouistiti_gw.green.websocket` replaced, got most of this group
wrong: its ``close(code, message)`` wrote only ``message`` as the payload, never the code, so
the reply to a valid close carried the peer's reason where the status code belongs (or nothing),
every protocol error it found was answered with a close frame without a code, and it accepted
close codes of 5000 and above.
"""
from __future__ import annotations

import socket
import uuid
from typing import Callable

import pytest

from rawclient import (
    CLOSE,
    CONTINUATION,
    PING,
    STREAM_ECHO,
    TEXT,
    Close,
    Message,
    RawClient,
    build_frame,
    close_payload,
    play,
    utf8_text,
)
from support.unix_servers import UnixServer, read_until_eof, say_bye_and_leave

Connect = Callable[..., RawClient]
PROTOCOL_ERROR, INVALID_DATA = 1002, 1007

#: Section 7.4.1 codes and the ranges 3000-4999 of 7.4.2; 1012-1014 were registered with IANA
#: after the RFC (service restart, try again later, bad gateway) and are accepted as browsers do.
VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999]
#: Below 1000 unused, 1004 reserved, 1005/1006/1015 never on the wire, 1016-2999 unassigned
#: (reserved for this protocol and its extensions), 5000 and up outside the defined ranges.
INVALID_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]


@pytest.mark.parametrize("code", VALID_CODES)
def test_valid_close_code_echoed(connect: Connect, code: int) -> None:
    """Autobahn 7.7.x: section 5.5.1, the reply "typically echos the status code it received".

    (gevent-websocket replied with a close frame whose payload was the reason alone.)
    """
    play(connect(), [([build_frame(CLOSE, close_payload(code, b"bye"))], [Close(code)])])


@pytest.mark.parametrize("code", INVALID_CODES)
def test_invalid_close_code_refused(connect: Connect, code: int) -> None:
    """Autobahn 7.9.x and 7.13.x: a code the RFC does not allow on the wire fails with 1002.

    (gevent-websocket answered with a codeless close frame, and took 5000 and 65535 as valid.)
    """
    play(connect(), [([build_frame(CLOSE, close_payload(code))], [Close(PROTOCOL_ERROR)])])


#: Autobahn 7.3.x and 7.5.1: close payloads -> the code the server must answer with.
CLOSE_PAYLOADS = {
    "7.3.1-empty": (b"", 1000),
    "7.3.2-one-byte": (b"\x03", PROTOCOL_ERROR),
    "7.3.3-code-only": (close_payload(1000), 1000),
    "7.3.4-code-and-reason": (close_payload(1000, b"Hello World!"), 1000),
    "7.3.5-123-byte-reason": (close_payload(1000, b"*" * 123), 1000),
    "7.3.6-124-byte-reason": (close_payload(1000, b"*" * 124), PROTOCOL_ERROR),
    "utf8-reason": (close_payload(1000, "Grüße 😀".encode()), 1000),
    "7.5.1-invalid-utf8-reason": (
        close_payload(1000, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited"), INVALID_DATA),
    "reason-cut-inside-a-character": (close_payload(1000, "é".encode()[:1]), INVALID_DATA),
}


@pytest.mark.parametrize(("payload", "answer"), CLOSE_PAYLOADS.values(), ids=CLOSE_PAYLOADS.keys())
def test_close_payload(connect: Connect, payload: bytes, answer: int) -> None:
    """Section 5.5.1: a close body is empty or a 2-byte code and a UTF-8 reason, 125 bytes at most.

    An empty close means "no status" (1005, which must not be sent back): the reply is 1000.
    A 1-byte body is malformed (1002); a reason that is not UTF-8 is invalid data (1007, section
    8.1 applies to it as to text). (gevent-websocket answered these errors without a code.)
    """
    play(connect(), [([build_frame(CLOSE, payload)], [Close(answer)])])


def recorder(unix_servers, docroot: str) -> tuple[UnixServer, str]:
    """A UNIX server behind the gateway that records what reaches it, and its URL path."""
    name = f"record-{uuid.uuid4().hex[:8]}"
    return unix_servers(f"{docroot}/{name}", read_until_eof), f"/{name}"


#: Autobahn 7.1.2-7.1.5: frames the client sends after (or around) its close frame.
AFTER_CLOSE = {
    "7.1.2-close-twice": [build_frame(CLOSE, close_payload(1000)), build_frame(CLOSE, close_payload(1001))],
    "7.1.3-ping-after-close": [build_frame(CLOSE, close_payload(1000)), build_frame(PING, b"ping")],
    "7.1.4-text-after-close": [build_frame(CLOSE, close_payload(1000)), build_frame(TEXT, b"after close")],
    "7.1.5-close-inside-fragmented-message": [build_frame(TEXT, b"frag", fin=False),
                                              build_frame(CLOSE, close_payload(1000)),
                                              build_frame(CONTINUATION, b"ment")],
}


@pytest.mark.parametrize("frames", AFTER_CLOSE.values(), ids=AFTER_CLOSE.keys())
def test_frames_after_close_ignored(connect: Connect, unix_servers, conformance_docroot: str,
                                    frames: list[bytes]) -> None:
    """Section 5.5.1: after a close frame, the endpoint "MUST NOT send any more data frames",
    and what follows it is not data: one close answer (code 1000), no pong, no second close, and
    nothing reaches the UNIX server, not even the first fragment of an unfinished message."""
    server, path = recorder(unix_servers, conformance_docroot)
    play(connect(path), [(frames, [Close(1000)])])
    assert server.closed_by_peer.wait(5), "the UNIX connection outlived the session"
    assert server.received == []


def test_text_then_close(connect: Connect) -> None:
    """Autobahn 7.1.1: a message is echoed, then the closing handshake completes normally."""
    play(connect(), [([build_frame(TEXT, b"Hello World")], [Message(b"Hello World")])])


def test_close_after_a_large_message(connect: Connect) -> None:
    """Autobahn 7.1.6: a 256 KiB message, a close and a ping, in one write.

    The close is handled in order, after the message: any echo of it that the gateway still
    relays comes before the close frame, the ping after the close gets no pong, and the TCP
    connection ends.
    """
    client = connect(STREAM_ECHO)
    client.send(build_frame(TEXT, utf8_text(256 * 1024)), build_frame(CLOSE, close_payload(1000)),
                build_frame(PING, b"ping"))
    while (frame := client.recv_frame()).opcode == TEXT:
        pass
    assert frame.opcode == CLOSE and frame.close_code == 1000, frame
    client.expect_eof()


def test_server_initiated_close(connect: Connect, unix_servers, conformance_docroot: str) -> None:
    """The UNIX server leaves: the gateway sends close 1000, then no more data, and ends the TCP
    connection once the client's close has answered it.

    Section 5.5.2: a ping MUST be answered "unless it already received a Close frame": one that
    crosses our close frame is still answered. Section 5.5.1: no data frame follows our close,
    so the message after it is not relayed (the UNIX server is gone anyway).
    """
    name = f"bye-{uuid.uuid4().hex[:8]}"
    unix_servers(f"{conformance_docroot}/{name}", say_bye_and_leave)
    client = connect(f"/{name}")
    client.send(build_frame(TEXT, b"hi"))
    client.expect_message(b"bye", text=True)
    frame = client.expect_frame(CLOSE)
    assert frame.close_code == 1000, frame
    client.send(build_frame(PING, b"crossing"))
    client.expect_pong(b"crossing")
    client.send(build_frame(TEXT, b"too late"), build_frame(CLOSE, close_payload(1000)))
    client.expect_eof()


def test_failed_connection_ends_with_fin_not_reset(connect: Connect) -> None:
    """After failing a connection, the server should end TCP with a FIN, not a reset.

    Section 7.1.7 fails the connection while the client may still be writing (here 4 MiB after
    the faulty frame). Closing a socket with unread input makes the kernel send a reset, and
    a client's TCP may then discard received data its application has not read yet: the very
    close frame that says why (Linux keeps it, which is why the other cases pass). The cure is
    a lingering close, as HTTP servers do: shut down the writing side after the close frame,
    read and discard until the client's EOF or a deadline, then close (``WebSocket.linger``,
    called when a session ends).
    """
    client = connect()
    writer = client.send_in_background(build_frame(0x3, b"reserved opcode"),
                                       build_frame(TEXT, utf8_text(4 * 1024 * 1024)))
    frame = client.expect_frame(CLOSE)
    assert frame.close_code == PROTOCOL_ERROR, frame
    writer.join(10)
    try:
        client.sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # already reset
    client.expect_eof()
    assert not client.reset, "the server reset the connection"
