"""Direct mode: the client's socket itself goes to the UNIX server, in ouistiti's wire format."""
import json
import ssl
import subprocess

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from ouistiti_gw.cli import unix_accepts
from support import TESTS, wait_until
from support.addresses import free_port
from support.clients import handshake_request, raw_request
from support.processes import fd_count, gateway_cli, gunicorn, only_child
from support.samples import PLUGIN


@pytest.fixture
def direct_gateway(docroot):
    with gateway_cli(docroot, "--mode", "direct", "-v") as gateway:
        yield gateway


def wait_for_handovers(gateway, count: int) -> None:
    wait_until(lambda: gateway.log().count("session handed over") >= count, what=f"{count} handovers")


def test_echo_direct_and_nothing_kept(direct_gateway, sample):
    sample("echo")
    with connect(f"{direct_gateway.url}/echo") as ws:  # warm-up
        ws.send("warm")
        assert ws.recv() == "warm"
    wait_for_handovers(direct_gateway, 1)
    worker = only_child(direct_gateway.pid)  # the CLI's worker, under its master
    baseline = fd_count(worker)
    with connect(f"{direct_gateway.url}/echo", max_size=None) as ws:
        wait_for_handovers(direct_gateway, 2)
        # the session is served by the echo server alone: the gateway holds no fd for it
        assert fd_count(worker) <= baseline
        ws.send("héllo direct")
        assert ws.recv() == "héllo direct"
        ws.send(b"\xff" * 100000)
        assert ws.recv() == b"\xff" * 100000
    assert "session open" not in direct_gateway.log()  # never piped


@pytest.mark.gunicorn
@pytest.mark.parametrize("worker", ["ouistiti_gw.worker.GatewayWorker",
                                    "geventwebsocket.gunicorn.workers.GeventWebSocketWorker"])
def test_direct_under_gunicorn(docroot, sample, worker):
    """gunicorn must neither reuse nor read from nor close a handed-over connection."""
    sample("echo")
    port = free_port()
    env = {"OUISTITI_GW_DOCROOT": docroot, "OUISTITI_GW_MODE": "direct"}
    with gunicorn(worker, port, env, "--log-level", "info") as gateway:
        for i in range(3):
            with connect(f"ws://127.0.0.1:{port}/echo") as ws:
                for j in range(3):
                    ws.send(f"{i}.{j}")
                    assert ws.recv() == f"{i}.{j}"
        if worker.startswith("ouistiti_gw"):  # the stock worker leaves the gateway's logging alone
            wait_for_handovers(gateway, 3)


def test_chat_direct_whois_answers_the_real_address(direct_gateway, sample):
    sample("chat", "-w")
    with connect(f"{direct_gateway.url}/chat") as alice, connect(f"{direct_gateway.url}/chat") as bob:
        alice.send("WSHello alice")
        assert alice.recv() == "WSWelcome alice"
        bob.send("WSWhois alice")
        assert bob.recv() == "WSIs alice 127.0.0.1"
        bob.send("hi alice")
        assert alice.recv() == "hi alice"


def test_jsonrpc_direct(direct_gateway, sample):
    sample("jsonrpc", "-L", str(PLUGIN))
    with connect(f"{direct_gateway.url}/jsonrpc") as ws:
        ws.send(json.dumps({"jsonrpc": "2.0", "method": "subtract", "params": [42, 23], "id": 1}))
        assert json.loads(ws.recv()) == {"jsonrpc": "2.0", "result": 19, "id": 1}
    wait_for_handovers(direct_gateway, 1)


def test_wss_falls_back_to_piping(tmp_path, docroot, sample):
    sample("echo")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    with gateway_cli(docroot, "--mode", "direct", "--certfile", str(cert), "--keyfile", str(key)) as gateway:
        with connect(f"wss://127.0.0.1:{gateway.port}/echo", ssl=context) as ws:
            ws.send("over TLS")
            assert ws.recv() == "over TLS"
        assert "plain HTTP only" in gateway.log() and "session handed over" not in gateway.log()


def test_bytes_after_the_handshake_are_not_lost(direct_gateway, sample):
    """A frame sent in the same packet as the handshake is already in the gateway's buffer."""
    sample("echo")
    mask = b"\x01\x02\x03\x04"
    frame = bytes([0x81, 0x80 | 5, *mask]) + bytes(b ^ mask[i % 4] for i, b in enumerate(b"early"))
    request = handshake_request("/echo", port=direct_gateway.port) + frame
    status, _, sock, rest = raw_request(direct_gateway.port, request)
    with sock:
        assert status == 101
        while len(rest) < 7:
            rest += sock.recv(100)
        assert rest[:7] == b"\x81\x05early"
    assert "piping instead of handing over" in direct_gateway.log()


def test_server_that_does_not_take_the_socket(direct_gateway, docroot, unix_servers):
    unix_servers(f"{docroot}/rude", lambda conn, server: None)  # closes without reading
    with connect(f"{direct_gateway.url}/rude") as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv()
    assert closed.value.rcvd.code == 1011
    assert "did not take the connection" in direct_gateway.log()


@pytest.fixture(scope="module")
def recvaddr_server(tmp_path_factory, ouistiti_tarball):
    """A C server built on ouistiti's own ``ouistiti_recvaddr()`` (``utils/utils.c`` of its source)."""
    build = tmp_path_factory.mktemp("recvaddr")
    member = next(m for m in ouistiti_tarball.getmembers() if m.name.endswith("/utils/utils.c"))
    (build / "utils.c").write_bytes(ouistiti_tarball.extractfile(member).read())
    binary = build / "recvaddr"
    subprocess.run(["cc", "-O2", "-o", str(binary), str(TESTS / "ouistiti_recvaddr_server.c"), str(build / "utils.c")],
                   check=True)
    return binary


@pytest.mark.cc
def test_a_server_written_for_ouistiti_gets_the_client(direct_gateway, docroot, recvaddr_server):
    server = subprocess.Popen([str(recvaddr_server), f"{docroot}/hello"])
    try:
        wait_until(lambda: unix_accepts(f"{docroot}/hello"), what="the C server")
        with connect(f"{direct_gateway.url}/hello") as ws:
            assert ws.recv() == "hello 127.0.0.1"
    finally:
        server.terminate()
        server.wait()
