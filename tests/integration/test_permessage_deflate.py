"""permessage-deflate end to end: `websockets` as the client of the gateway as users run it (the
CLI), every parameter combination that matters; a deflate bomb against the gateway's memory; and
idle compressed sessions that must cost what uncompressed ones cost, read from /proc.
"""
from __future__ import annotations

import json
import socket
import time

import pytest
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.sync.client import connect

from ouistiti_gw.core.deflate import COMPRESSOR_IDLE_SECONDS
from rawclient import BINARY, TEXT, RawClient, build_frame
from support import wait_until
from support.addresses import free_port
from support.clients import handshake_status, raise_fd_limit
from support.compression import deflate, deflate_bomb, inflated_size_of_bomb
from support.processes import PROJECT_WORKER, STOCK_WORKER, gateway_cli, gunicorn, proc_status
from support.unix_servers import read_until_eof

OFFER = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
MiB = 1024 * 1024
MESSAGE_TOO_BIG = 1009


def chat_message(i: int) -> str:
    """About 200 bytes of chat-like JSON, as a browser would send."""
    return json.dumps({"type": "message", "room": "general", "from": f"user{i % 7}",
                       "text": f"message {i}: are we still meeting at {i % 24}:00 in the usual place?",
                       "sent": 1764547200 + i, "client": "ouistiti-web/1.0"})


@pytest.fixture
def seqpacket_echo(docroot, unix_servers) -> str:
    """A SOCK_SEQPACKET echo: one message back per message, so every echo is compared whole."""
    unix_servers(f"{docroot}/echo", sock_type=socket.SOCK_SEQPACKET)
    return docroot


def chat(ws, count: int = 30) -> None:
    for i in range(count):
        message = chat_message(i)
        ws.send(message)
        assert ws.recv(timeout=10) == message
    big = {"rows": [{"id": i, "name": f"row {i}", "tags": ["a", "b"]} for i in range(2000)]}
    ws.send(json.dumps(big))
    assert json.loads(ws.recv(timeout=10)) == big
    ws.send(bytes(range(256)) * 40)
    assert ws.recv(timeout=10) == bytes(range(256)) * 40


@pytest.mark.parametrize(("factory", "answer"), [
    (ClientPerMessageDeflateFactory(client_max_window_bits=True),  # what browsers offer
     "permessage-deflate; client_no_context_takeover"),
    (ClientPerMessageDeflateFactory(server_no_context_takeover=True),
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
    (ClientPerMessageDeflateFactory(client_no_context_takeover=True),
     "permessage-deflate; client_no_context_takeover"),
    (ClientPerMessageDeflateFactory(server_max_window_bits=10, client_max_window_bits=9),
     "permessage-deflate; client_no_context_takeover; server_max_window_bits=10"),
    (ClientPerMessageDeflateFactory(server_max_window_bits=15, server_no_context_takeover=True),
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=15"),
], ids=["browser-offer", "server_no_context_takeover", "client_no_context_takeover", "windows-10-9",
        "window-15-no-server-context"])
def test_websockets_negotiates_each_combination_and_chats(seqpacket_echo, factory, answer):
    with gateway_cli(seqpacket_echo) as gateway:
        with connect(f"{gateway.url}/echo", extensions=[factory], compression=None) as ws:
            assert ws.response.headers["Sec-WebSocket-Extensions"] == answer
            chat(ws)
        assert "Traceback" not in gateway.log()


def test_with_client_context_takeover_on_messages_refer_to_earlier_ones(seqpacket_echo):
    """``compression_client_context = on``: the client keeps its deflate context, so its later
    messages refer back to earlier ones; the gateway keeps its inflater to read them."""
    with gateway_cli(seqpacket_echo, "--compression-client-context", "on") as gateway:
        with connect(f"{gateway.url}/echo") as ws:
            assert ws.response.headers["Sec-WebSocket-Extensions"] == "permessage-deflate"
            assert not ws.protocol.extensions[0].local_no_context_takeover
            chat(ws)


def test_compression_off_and_a_client_without_it_go_uncompressed(seqpacket_echo):
    with gateway_cli(seqpacket_echo, "--compression", "off") as gateway:
        with connect(f"{gateway.url}/echo") as ws:  # websockets offers permessage-deflate by default
            assert "Sec-WebSocket-Extensions" not in ws.response.headers
            assert ws.protocol.extensions == []
            chat(ws, 3)
    with gateway_cli(seqpacket_echo) as gateway:
        with connect(f"{gateway.url}/echo", compression=None) as ws:
            assert "Sec-WebSocket-Extensions" not in ws.response.headers
            chat(ws, 3)


@pytest.mark.gunicorn
@pytest.mark.parametrize(("worker", "answer"), [(PROJECT_WORKER, "permessage-deflate; client_no_context_takeover"),
                                                (STOCK_WORKER, None)], ids=["GatewayWorker", "stock-worker"])
def test_under_gunicorn_only_the_projects_worker_negotiates(seqpacket_echo, worker, answer):
    """gevent-websocket's stock worker answers the handshake before the gateway runs: no
    extension, and the session works uncompressed."""
    port = free_port()
    with gunicorn(worker, port, {"OUISTITI_GW_DOCROOT": seqpacket_echo}):
        with connect(f"ws://127.0.0.1:{port}/echo") as ws:
            assert ws.response.headers.get("Sec-WebSocket-Extensions") == answer
            chat(ws, 3)


def test_a_declined_offer_is_one_log_line_and_the_session_goes_on(seqpacket_echo):
    offer = "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=99\r\n"
    with gateway_cli(seqpacket_echo) as gateway:
        status, headers, _ = handshake_status(gateway.port, "/echo", extra=offer)
        assert status == 101 and "sec-websocket-extensions" not in headers
        log = gateway.log()
    declined = [line for line in log.splitlines() if "no compression" in line]
    assert len(declined) == 1 and "server_max_window_bits='99' is not 8 to 15" in declined[0], log
    assert "Traceback" not in log


def test_direct_mode_never_negotiates(docroot, unix_servers):
    """The UNIX server gets the raw socket in direct mode and knows nothing of compression."""
    unix_servers(f"{docroot}/echo", read_until_eof)
    with gateway_cli(docroot, "--mode", "direct") as gateway:
        status, headers, _ = handshake_status(gateway.port, "/echo", extra=OFFER)
        assert status == 101
        assert "sec-websocket-extensions" not in headers


def memory_kib(pid: int, field: str = "VmRSS") -> int:
    return int(proc_status(pid)[field].split()[0])


def test_a_deflate_bomb_is_1009_and_costs_the_gateway_a_few_mib(docroot, unix_servers):
    """2 MiB that inflate to 2.2 GB, in one frame (under the 16 MiB limit on its wire size):
    closed with 1009 once 16 MiB have been inflated and passed on, the gateway's peak RSS
    (VmHWM, reset before the bomb) at most a few MiB over what it was."""
    sink = unix_servers(f"{docroot}/sink", read_until_eof)
    bomb = deflate_bomb(2 * MiB)
    assert inflated_size_of_bomb(2 * MiB) > 2_000_000_000
    with gateway_cli(docroot) as gateway:
        warm_up = RawClient(gateway.port, "/sink", extra_headers=OFFER)
        warm_up.send(build_frame(BINARY, deflate(bytes(4 * MiB)), rsv=4))  # the same path, within the limit
        warm_up.close_cleanly()
        with open(f"/proc/{gateway.serving_pid}/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # VmHWM := VmRSS
        before = memory_kib(gateway.serving_pid)
        client = RawClient(gateway.port, "/sink", extra_headers=OFFER)
        client.send_in_background(build_frame(BINARY, bomb, rsv=4))
        client.expect_close(MESSAGE_TOO_BIG)
        peak = memory_kib(gateway.serving_pid, "VmHWM")
        log = gateway.log()
    assert peak - before < 4 * 1024, f"the gateway's RSS went from {before} KiB to {peak} KiB"
    assert 16 * MiB <= sum(map(len, sink.received)) - 4 * MiB <= 16 * MiB + 64 * 1024
    assert log.count("closing WebSocket: message over 16777216 bytes") == 1, log
    assert "Traceback" not in log


def held_and_left_kib(gateway, path: str, count: int, offer: str, frame: bytes, *, echoed: bool) -> tuple[float, float]:
    """RSS per session of ``count`` sessions that each sent ``frame`` (and got its echo back, if
    ``echoed``): while they are open, and once they all closed (a trim included)."""
    raise_fd_limit(2 * count + 200)
    warm_up = RawClient(gateway.port, path, extra_headers=offer)
    warm_up.send(frame)
    if echoed:
        warm_up.recv_frame()
    warm_up.close_cleanly()
    time.sleep(2)
    before = memory_kib(gateway.serving_pid)
    clients = [RawClient(gateway.port, path, extra_headers=offer) for _ in range(count)]
    for client in clients:
        client.send(frame)
        if echoed:
            assert client.recv_frame().rsv == 4
    time.sleep(1)
    held = memory_kib(gateway.serving_pid)
    for client in clients:
        client.close()
    wait_until(lambda: gateway.log().count("session closed") == count + 1, what="every session closed")
    time.sleep(2)  # the trim that follows the sessions' end
    return (held - before) / count, (memory_kib(gateway.serving_pid) - before) / count


@pytest.mark.parametrize("sock_type", [socket.SOCK_STREAM, socket.SOCK_SEQPACKET], ids=["stream", "seqpacket"])
def test_unfinished_compressed_messages_hold_what_the_client_sent(docroot, unix_servers, sock_type):
    """300 sessions each send the first frame (211 bytes) of a compressed message of 200 000
    zeros, and never the rest, offering what an attacker would (no client_max_window_bits).
    Each used to hold an inflater (~40 KiB) and what it inflated (up to 200 KB for a SOCK_SEQPACKET
    server, which gets whole messages): 69 and 264 KiB per session, 61 and 256 of them still
    there after the sessions closed. Now the frame is kept as it came: a session costs what an
    idle one does (~29 KiB), and after they close the memory goes back but for ~10 KiB each."""
    unix_servers(f"{docroot}/sink", read_until_eof, sock_type=sock_type)
    first_frame = build_frame(BINARY, deflate(bytes(200_000)), fin=False, rsv=4)
    with gateway_cli(docroot) as gateway:
        held, left = held_and_left_kib(gateway, "/sink", 300, "Sec-WebSocket-Extensions: permessage-deflate\r\n",
                                       first_frame, echoed=False)
    assert held < 45, f"{held:.1f} KiB per session holding an unfinished compressed message"
    assert left < 20, f"{left:.1f} KiB per session stayed after they closed"


def test_memory_comes_back_when_sessions_with_live_compressors_close(seqpacket_echo):
    """300 sessions each echo a 16 000-byte message compressed (the worst case: a compressor of
    ~130 KiB kept for the next message), then all close at once, before the idle drop. Their
    memory used to stay (45 KiB per session of ~160): the sessions' objects waited for the
    garbage collector (a reference cycle) and nothing trimmed the heap after they ended."""
    message = json.dumps([{"id": i, "name": f"row {i}", "tags": ["a", "b"]} for i in range(1000)]).encode()[:16000]
    with gateway_cli(seqpacket_echo) as gateway:
        held, left = held_and_left_kib(gateway, "/echo", 300, OFFER, build_frame(BINARY, deflate(message), rsv=4),
                                       echoed=True)
    assert held > 100, f"{held:.1f} KiB per session: the compressors were not measured"
    assert left < held / 6, f"{left:.1f} of {held:.1f} KiB per session stayed after they closed"


def idle_session_cost_kib(docroot: str, count: int, offer: str) -> tuple[float, float]:
    """RSS per session of ``count`` sessions that each echoed a chat message: right after it,
    and once the compressor's idle time is over."""
    raise_fd_limit(2 * count + 200)
    with gateway_cli(docroot) as gateway:
        warm_up = RawClient(gateway.port, "/echo", extra_headers=offer)
        warm_up.close_cleanly()
        before = memory_kib(gateway.serving_pid)
        clients = [RawClient(gateway.port, "/echo", extra_headers=offer) for _ in range(count)]
        for i, client in enumerate(clients):
            message = chat_message(i).encode()
            client.send(build_frame(TEXT, deflate(message), rsv=4) if offer else build_frame(TEXT, message))
            frame = client.expect_frame(TEXT, message)
            assert frame.rsv == (4 if offer else 0)
        busy = memory_kib(gateway.serving_pid)
        time.sleep(COMPRESSOR_IDLE_SECONDS + 2)
        idle = memory_kib(gateway.serving_pid)
        for client in clients:
            client.close()
    return (busy - before) / count, (idle - before) / count


def test_idle_compressed_sessions_cost_what_uncompressed_ones_cost(seqpacket_echo):
    """1000 sessions that each had one compressed exchange: while their compressors live they
    cost nearly three times as much (~44 KiB more each: the pages of zlib's state a 200-byte
    message touches); once dropped and trimmed, within a few KiB of what plain sessions cost
    (what stays is partial heap pages: measured ~25 KiB plain, ~30 KiB compressed)."""
    plain_busy, plain_idle = idle_session_cost_kib(seqpacket_echo, 1000, "")
    busy, idle = idle_session_cost_kib(seqpacket_echo, 1000, OFFER)
    assert busy > plain_busy + 20, (busy, plain_busy)  # the measure sees compressors
    assert idle < plain_idle + 6, f"{idle:.1f} KiB per idle compressed session, {plain_idle:.1f} uncompressed"
