"""Behind nginx: the shipped contrib/nginx/ouistiti-gw.conf, run by Debian's real nginx.

nginx ends TLS (a self-signed certificate made here by the openssl CLI) and spreads sessions over
two gateway processes started with the commands the file's header gives. The client connects from
127.0.0.2 to the site's name (``Host: ws.example.com``, as a browser on the real site sends it),
so the UNIX server's PROXY header must name 127.0.0.2 (and its port), read from nginx's Forwarded
header, not nginx's own 127.0.0.1.
"""
import re
import shlex
import shutil
import ssl
import subprocess

import pytest
from websockets.sync.client import connect

from ouistiti_gw.core import proxy_protocol as proxy
from support import BIN, ROOT, wait_until
from support.addresses import free_port
from support.clients import self_signed_certificate, socket_from
from support.processes import ServerProcess, listens_on
from support.unix_servers import proxied_echo_handler

pytestmark = pytest.mark.nginx

SHIPPED = ROOT / "contrib" / "nginx" / "ouistiti-gw.conf"
CLIENT_HOST = "127.0.0.2"
#: The site's name in the shipped file: a Host no loopback default would answer.
SITE = "ws.example.com"


def shipped_gateway_commands(docroot: str, ports: list[int]) -> list[list[str]]:
    """The gateway commands of the shipped file's header, with this test's docroot and ports."""
    commands = re.findall(r"^#\s+(ouistiti-gw serve .*)$", SHIPPED.read_text(), re.MULTILINE)
    assert len(commands) == 2, "the shipped config no longer names two gateway commands"
    argvs = []
    for command, port in zip(commands, ports):
        argv = shlex.split(command.replace("/var/run/websocket", docroot))
        argv[argv.index("--port") + 1] = str(port)
        argvs.append([str(BIN / argv[0]), *argv[1:]])
    return argvs

WRAPPER = """
worker_processes 1;
events {{ worker_connections 256; }}
http {{
    access_log {prefix}/access.log;
    include {prefix}/ouistiti-gw.conf;
}}
"""


def derived_config(port: int, upstreams: list[int], cert: str, key: str) -> str:
    """The shipped file with this test's ports and certificate: every replacement must apply."""
    text = SHIPPED.read_text()
    for old, new in [("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;"),
                     ("listen [::]:443 ssl;", ""),
                     ("server 127.0.0.1:8081;", f"server 127.0.0.1:{upstreams[0]};"),
                     ("server 127.0.0.1:8082;", f"server 127.0.0.1:{upstreams[1]};"),
                     ("/etc/ssl/ouistiti-gw/cert.pem", cert),
                     ("/etc/ssl/ouistiti-gw/key.pem", key)]:
        assert text.count(old) == 1, f"the shipped config no longer has {old!r}"
        text = text.replace(old, new)
    return text


@pytest.fixture
def nginx(tmp_path):
    """Start nginx in front of ``upstreams``: ``nginx([port_a, port_b]) -> (port, cafile)``."""
    assert shutil.which("nginx"), "nginx is not installed (bash .ci/run installs it)"
    processes = []

    def start(upstreams: list[int]) -> tuple[int, str]:
        cert, key = self_signed_certificate(str(tmp_path))
        port = free_port()
        (tmp_path / "ouistiti-gw.conf").write_text(derived_config(port, upstreams, cert, key))
        (tmp_path / "nginx.conf").write_text(WRAPPER.format(prefix=tmp_path))
        process = subprocess.Popen(
            ["nginx", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-e", str(tmp_path / "error.log"),
             "-g", f"daemon off; pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log;"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        processes.append(process)
        wait_until(lambda: process.poll() is not None or listens_on(process.pid, port), what="nginx")
        assert process.poll() is None, process.stdout.read() + (tmp_path / "error.log").read_text()
        return port, cert

    yield start
    for process in processes:
        process.terminate()
        process.wait(10)


def test_wss_through_nginx_to_two_gateways(docroot, unix_servers, nginx):
    server = unix_servers(f"{docroot}/echo", proxied_echo_handler)
    ports = [free_port(), free_port()]
    first_argv, second_argv = shipped_gateway_commands(docroot, ports)
    with ServerProcess(first_argv, ports[0]) as first, ServerProcess(second_argv, ports[1]) as second:
        port, cafile = nginx([first.port, second.port])
        context = ssl.create_default_context(cafile=cafile)
        client_ports = []
        for i in range(6):
            sock = socket_from(CLIENT_HOST, port)
            client_ports.append(sock.getsockname()[1])
            # the site's name in the URL (Host and Origin); the certificate is for 127.0.0.1
            with connect(f"wss://{SITE}:{port}/echo", sock=sock, ssl=context, server_hostname="127.0.0.1",
                         origin=f"https://{SITE}:{port}") as ws:
                ws.send(f"message {i}")
                assert ws.recv() == f"message {i}"
        assert [h.source for h in server.headers] == [(CLIENT_HOST, p) for p in client_ports]
        assert all(h.ssl is not None and h.ssl.client & proxy.PP2_CLIENT_SSL for h in server.headers)
        for gateway in (first, second):  # round robin: both instances carried sessions
            wait_until(lambda: gateway.log().count(f"session closed name=echo client={CLIENT_HOST}:") == 3,
                       what=f"3 sessions on the gateway at port {gateway.port}")
