"""PROXY protocol end to end: the gateway tells UNIX servers who the client is.

Real parts only: the gateway process, UNIX servers (ours, the contrib samples with ``-P``), and
HAProxy as a parser no one here wrote (its ``accept-proxy`` drops a connection whose header it
cannot parse; it passes the source on with ``send-proxy-v2`` and logs it with ``%ci:%cp``).
Clients connect from 127.0.0.2 so the address the server learns is not the trivial one.
"""
import json
import shutil
import socket
import ssl
import subprocess

import pytest
from proxyprotocol.v2 import ProxyProtocolV2
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from ouistiti_gw.cli import unix_accepts
from ouistiti_gw.core import proxy_protocol as proxy
from support import wait_until
from support.clients import self_signed_certificate, socket_from
from support.processes import gateway_cli, gateway_test_app
from support.unix_servers import proxied_echo_handler

CLIENT_HOST = "127.0.0.2"


def connect_from(gateway, path: str, **kwargs):
    """A WebSocket client of ``gateway`` whose TCP connection comes from 127.0.0.2."""
    scheme = "wss" if "ssl" in kwargs else "ws"
    sock = socket_from(CLIENT_HOST, gateway.port)
    port = sock.getsockname()[1]
    return connect(f"{scheme}://127.0.0.1:{gateway.port}{path}", sock=sock, **kwargs), port


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("sock_type", [socket.SOCK_STREAM, socket.SOCK_SEQPACKET])
def test_header_first_then_the_messages(docroot, unix_servers, version, sock_type):
    server = unix_servers(f"{docroot}/room/chat", proxied_echo_handler, sock_type)
    with gateway_test_app(docroot, "--set", f"proxy_protocol={version}") as gateway:
        ws, client_port = connect_from(gateway, "/room?x=1", subprotocols=["chat"])
        with ws:
            ws.send("hello")
            assert ws.recv() == "hello"
        header = server.headers[0]
        assert header.source == (CLIENT_HOST, client_port)
        assert header.destination == ("127.0.0.1", gateway.port)
        assert server.received == [b"hello"]  # nothing of the header leaked into the payload
        if version == "v2":
            assert (header.authority, header.path, header.query, header.protocol, header.ssl) == (
                f"127.0.0.1:{gateway.port}", "/room", "x=1", "chat", None)
            foreign = ProxyProtocolV2().unpack(server.raw_headers[0])
            assert (str(foreign.source[0]), foreign.source[1]) == (CLIENT_HOST, client_port)
        wait_until(lambda: f"client={CLIENT_HOST}:{client_port}" in gateway.log(), what="the session line")


def test_wss_client_gets_the_ssl_tlv(tmp_path, docroot, unix_servers):
    server = unix_servers(f"{docroot}/echo", proxied_echo_handler)
    cert, key = self_signed_certificate(str(tmp_path))
    context = ssl.create_default_context(cafile=cert)
    with gateway_cli(docroot, "--proxy-protocol", "v2", "--certfile", cert, "--keyfile", key) as gateway:
        ws, _ = connect_from(gateway, "/echo", ssl=context, server_hostname="127.0.0.1")
        with ws:
            ws.send("secret")
            assert ws.recv() == "secret"
    ssl_tlv = server.headers[0].ssl
    assert ssl_tlv.client & proxy.PP2_CLIENT_SSL and ssl_tlv.verify != 0
    assert ssl_tlv.version.startswith("TLSv1")


def test_forwarded_for_counts_from_trusted_proxies_only(docroot, unix_servers):
    server = unix_servers(f"{docroot}/echo", proxied_echo_handler)
    with gateway_test_app(docroot, "--set", "proxy_protocol=v1", "--set", "trusted_proxies=127.0.0.1") as gateway:
        spoofed = {"X-Forwarded-For": "6.6.6.6, 203.0.113.9"}
        with connect(f"{gateway.url}/echo", additional_headers=spoofed) as ws:  # from 127.0.0.1: trusted
            ws.send("a")
            ws.recv()
        ws, port = connect_from(gateway, "/echo", additional_headers=spoofed)  # from 127.0.0.2: not trusted
        with ws:
            ws.send("b")
            ws.recv()
        assert [h.source for h in server.headers] == [("203.0.113.9", 0), (CLIENT_HOST, port)]
        assert "client=203.0.113.9:0" in gateway.log()


def test_samples_learn_the_client_address(tmp_path, docroot, sample):
    plugin = tmp_path / "peer.py"
    plugin.write_text("METHODS = {'peer': lambda session: session.peer}\n")
    sample("chat", "-w", "-P")
    sample("jsonrpc", "-P", "-L", str(plugin))
    sample("echo", "-P")
    with gateway_cli(docroot, "--proxy-protocol", "v2") as gateway:
        (alice, _), (bob, _) = connect_from(gateway, "/chat"), connect_from(gateway, "/chat")
        with alice, bob:
            alice.send("WSHello alice")
            assert alice.recv() == "WSWelcome alice"
            bob.send("WSWhois alice")
            assert bob.recv() == f"WSIs alice {CLIENT_HOST}"
        rpc, _ = connect_from(gateway, "/jsonrpc")
        with rpc:
            rpc.send(json.dumps({"jsonrpc": "2.0", "method": "peer", "id": 1}))
            assert json.loads(rpc.recv())["result"] == CLIENT_HOST
        echo, _ = connect_from(gateway, "/echo")
        with echo:
            echo.send("PROXY TCP4 6.6.6.6 6.6.6.6 1 2\r\n")  # payload, even if it looks like a header
            assert echo.recv() == "PROXY TCP4 6.6.6.6 6.6.6.6 1 2\r\n"


def test_direct_mode_needs_no_header_and_a_sample_with_p_refuses_plain_pipes(docroot, sample):
    sample("chat", "-w", "-P")
    with gateway_cli(docroot, "--mode", "direct", "--proxy-protocol", "v2") as gateway:
        (alice, _), (bob, _) = connect_from(gateway, "/chat"), connect_from(gateway, "/chat")
        with alice, bob:
            alice.send("WSHello alice")
            assert alice.recv() == "WSWelcome alice"
            bob.send("WSWhois alice")
            assert bob.recv() == f"WSIs alice {CLIENT_HOST}"  # from the handover's sockaddr
        assert gateway.log().count("session handed over") == 2
    with gateway_cli(docroot) as gateway:  # no proxy_protocol: -P servers refuse the connection
        with connect(f"{gateway.url}/chat") as ws:
            ws.send("WSHello mallory")
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=10)


# -- HAProxy parses what we send --------------------------------------------------------------------

HAPROXY_CONFIG = """
global
    log stdout format raw local0
defaults
    mode tcp
    log global
    log-format "client=%ci:%cp frontend=%fi:%fp"
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend from_gateway
    bind unix@{docroot}/echo accept-proxy mode 666
    default_backend to_echo
backend to_echo
    server echo unix@{docroot}/behind send-proxy-v2
"""


@pytest.fixture
def haproxy(docroot):
    """HAProxy in the foreground: accept-proxy on DOCROOT/echo, send-proxy-v2 to DOCROOT/behind."""
    assert shutil.which("haproxy"), "haproxy is not installed (bash .ci/run installs it)"
    config = f"{docroot}/haproxy.cfg"
    with open(config, "w") as file:
        file.write(HAPROXY_CONFIG.format(docroot=docroot))
    process = subprocess.Popen(["haproxy", "-db", "-f", config], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    try:
        wait_until(lambda: process.poll() is not None or unix_accepts(f"{docroot}/echo"), what="haproxy")
        assert process.poll() is None, process.stdout.read()
        yield process
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.haproxy
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_haproxy_accepts_our_header(docroot, unix_servers, haproxy, version):
    behind = unix_servers(f"{docroot}/behind", proxied_echo_handler)
    with gateway_test_app(docroot, "--set", f"proxy_protocol={version}") as gateway:
        ws, client_port = connect_from(gateway, "/echo")
        with ws:
            ws.send("through haproxy")
            assert ws.recv() == "through haproxy"  # HAProxy drops a connection whose header is malformed
    assert behind.headers[0].source == (CLIENT_HOST, client_port)  # passed on by HAProxy's send-proxy-v2
    assert behind.headers[0].destination == ("127.0.0.1", gateway.port)
    haproxy.terminate()
    log = haproxy.communicate(timeout=10)[0]
    assert f"client={CLIENT_HOST}:{client_port} frontend=127.0.0.1:{gateway.port}" in log
