"""Messages through the gateway: echo, text/binary choice, SEQPACKET boundaries, how sessions end."""
import os
import select
import socket
import struct
import time

import pytest
import websocket as websocket_client
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from ouistiti_gw.gateway.session import CLOSE_TIMEOUT_SECONDS
from rawclient import TEXT, RawClient, build_frame
from support import wait_until
from support.clients import handshake_request, raw_request
from support.unix_servers import read_until_eof, say_bye_and_leave

TEXT_UNIT = "héllo wörld € 😀 "  # 1-, 2-, 3- and 4-byte characters, so reads split them


def text_of_size(size: int) -> str:
    encoded = (TEXT_UNIT * (size // len(TEXT_UNIT.encode()) + 1)).encode()[:size]
    return encoded.decode("utf-8", "ignore")


def receive_exactly(ws, size: int) -> list:
    """Messages until ``size`` bytes came back (a stream server may answer in several reads)."""
    messages, received = [], 0
    while received < size:
        message = ws.recv()
        messages.append(message)
        received += len(message.encode() if isinstance(message, str) else message)
    return messages


@pytest.mark.parametrize("size", [0, 1024, 1024 * 1024])
@pytest.mark.parametrize("kind", ["text", "binary"])
def test_echo_with_websockets(gateway, docroot, unix_servers, size, kind):
    unix_servers(f"{docroot}/echo")
    payload = text_of_size(size) if kind == "text" else os.urandom(size)
    marker = "end" if kind == "text" else b"\xffend"
    with connect(f"{gateway.url}/echo", max_size=None) as ws:
        ws.send(payload)
        ws.send(marker)
        expected = payload + marker
        messages = receive_exactly(ws, len(expected.encode() if kind == "text" else expected))
    if kind == "text":
        # every read became a text frame, even where it cut a multi-byte character
        assert all(isinstance(m, str) for m in messages)
        assert "".join(messages) == expected
    else:
        assert b"".join(m.encode() if isinstance(m, str) else m for m in messages) == expected


@pytest.mark.parametrize("kind", ["text", "binary"])
def test_echo_with_websocket_client(gateway, docroot, unix_servers, kind):
    unix_servers(f"{docroot}/echo")
    ws = websocket_client.create_connection(f"{gateway.url}/echo")
    try:
        if kind == "text":
            ws.send("ça marche")
            assert ws.recv() == "ça marche"
        else:
            ws.send_binary(b"\x00\xff" * 512)
            assert ws.recv() == b"\x00\xff" * 512
        ws.send_close(1000, b"done")
        opcode, frame = ws.recv_data_frame(control_frame=True)
        # the reply echoes the status code (gevent-websocket's close() sent none)
        assert opcode == websocket_client.ABNF.OPCODE_CLOSE and frame.data[:2] == struct.pack("!H", 1000)
    finally:
        ws.shutdown()


def split_character_server(conn, server):
    """Each client message starts the next step, so reads never merge two steps."""
    conn.recv(100)
    conn.sendall("café".encode()[:-1])  # b"caf\xc3"
    time.sleep(0.02)
    conn.sendall("é!".encode()[1:])  # b"\xa9!"
    conn.recv(100)
    conn.sendall(b"\x00\x01binary\xfe")
    conn.recv(100)
    conn.sendall(b"ends with a lead byte \xe2\x82")  # its continuation never comes
    conn.recv(100)


def test_character_split_across_reads_stays_text(gateway, docroot, unix_servers):
    unix_servers(f"{docroot}/split", split_character_server)
    with connect(f"{gateway.url}/split") as ws:
        ws.send("go")
        messages = receive_exactly(ws, len("café!".encode()))
        assert all(isinstance(m, str) for m in messages) and "".join(messages) == "café!"
        ws.send("next")
        assert ws.recv() == b"\x00\x01binary\xfe"
        ws.send("next")
        # the held-back bytes are not lost: they go out as binary once it is clear none follow
        assert ws.recv() == "ends with a lead byte "
        assert ws.recv() == b"\xe2\x82"


def test_seqpacket_boundaries_are_kept_both_ways(gateway, docroot, unix_servers):
    server = unix_servers(f"{docroot}/packets", sock_type=socket.SOCK_SEQPACKET)
    # binary messages start with 0xff, never valid UTF-8, so they come back binary
    messages = [b"\xff" + os.urandom(n) for n in (0, 1, 2, 1000, 65536, 100000, 5)] + ["text", "ü" * 1000]
    with connect(f"{gateway.url}/packets", max_size=None) as ws:
        for message in messages:
            ws.send(message)
        replies = [ws.recv() for _ in messages]
    assert replies == messages
    assert server.received == [m.encode() if isinstance(m, str) else m for m in messages]


def test_messages_one_read_brought_reach_a_stream_server_in_one_write(gateway, docroot, unix_servers):
    """Whole messages are gathered until every frame of the client's read is delivered: one
    write to the server for all of them, not one system call per message."""
    server = unix_servers(f"{docroot}/echo")
    client = RawClient(gateway.port, "/echo")
    messages = [f"message {index};".encode() for index in range(20)]
    client.send(*(build_frame(TEXT, message) for message in messages))  # one write, one read
    client.expect_stream(b"".join(messages), text=True)
    client.close_cleanly()
    assert server.received == [b"".join(messages)]


def test_seqpacket_message_too_big_closes_1009(gateway, docroot, unix_servers):
    unix_servers(f"{docroot}/packets", sock_type=socket.SOCK_SEQPACKET)
    with connect(f"{gateway.url}/packets", max_size=None) as ws:
        ws.send(b"x" * (4 * 1024 * 1024))  # beyond any SO_SNDBUF of a UNIX SEQPACKET socket
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv()
    assert closed.value.rcvd.code == 1009
    assert "too big" in closed.value.rcvd.reason


def test_name_with_subdirectory(gateway, docroot, unix_servers):
    unix_servers(f"{docroot}/chat/room1")
    with connect(f"{gateway.url}/chat/room1?ignored=query") as ws:
        ws.send("in room1")
        assert ws.recv() == "in room1"


def test_subprotocol_names_the_socket_as_in_ouistiti(gateway, docroot, unix_servers):
    unix_servers(f"{docroot}/echo")
    with connect(f"{gateway.url}/anything", subprotocols=["echo"]) as ws:
        assert ws.subprotocol == "echo"
        ws.send("via protocol")
        assert ws.recv() == "via protocol"


def test_client_close_closes_the_unix_connection(gateway, docroot, unix_servers):
    server = unix_servers(f"{docroot}/sink", read_until_eof)
    with connect(f"{gateway.url}/sink") as ws:
        ws.send("last words")
    assert server.closed_by_peer.wait(10)
    assert b"".join(server.received) == b"last words"


def test_client_vanishing_closes_the_unix_connection(gateway, docroot, unix_servers):
    server = unix_servers(f"{docroot}/sink", read_until_eof)
    status, _, sock, _ = raw_request(gateway.port, handshake_request("/sink", port=gateway.port))
    assert status == 101
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # an RST, no close frame
    assert server.closed_by_peer.wait(10)


def test_server_exit_closes_the_client_with_1000(gateway, docroot, unix_servers):
    unix_servers(f"{docroot}/bye", say_bye_and_leave)
    with connect(f"{gateway.url}/bye") as ws:
        ws.send("hi")
        assert ws.recv() == "bye"
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv()
    assert closed.value.rcvd.code == 1000


def test_client_silent_after_our_close_is_given_up_on(gateway, docroot, unix_servers):
    """Section 7.1.1: after its close frame the gateway waits for the client's (it does not cut
    the connection at once), but not forever: a client that never answers is closed after
    ``CLOSE_TIMEOUT_SECONDS``."""
    unix_servers(f"{docroot}/bye", say_bye_and_leave)
    status, _, sock, rest = raw_request(gateway.port, handshake_request("/bye", port=gateway.port))
    assert status == 101
    sock.sendall(b"\x81\x82abcd" + bytes(b ^ k for b, k in zip(b"hi", b"ab")))  # masked text "hi"
    received = rest
    while b"\x88" not in received:  # "bye", then the close frame
        received += sock.recv(100)
    assert received.startswith(b"\x81\x03bye\x88")
    sock.settimeout(1.0)
    with pytest.raises(socket.timeout):
        sock.recv(100)  # still open: our answer is awaited
    sock.settimeout(CLOSE_TIMEOUT_SECONDS + 5)
    while sock.recv(100):  # the gateway gives up and hangs up
        pass
    sock.close()
    line = wait_until(lambda: [line for line in gateway.log().splitlines() if "session closed name=bye" in line],
                      what="session log line")[0]
    assert "close=1000" in line


def reset_connection(conn, server):
    select.select([conn], [], [], 10)  # data is waiting, unread: closing now resets the connection
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def test_server_error_closes_the_client_with_1011(gateway, docroot, unix_servers):
    unix_servers(f"{docroot}/reset", reset_connection)
    with connect(f"{gateway.url}/reset") as ws:
        ws.send("boom")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv()
    assert closed.value.rcvd.code == 1011


def test_session_log_line(gateway, docroot, unix_servers):
    unix_servers(f"{docroot}/echo")
    with connect(f"{gateway.url}/echo") as ws:
        ws.send("12345")
        ws.recv()
    line = wait_until(lambda: [line for line in gateway.log().splitlines() if "session closed name=echo" in line],
                      what="session log line")[0]
    assert "bytes_in=5 bytes_out=5 close=1000" in line and "client=127.0.0.1:" in line
