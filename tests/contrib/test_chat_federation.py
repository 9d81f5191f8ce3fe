"""websocket_chat --redis: two chat servers ("hosts", each with its own docroot)
share one room through a real redis-server.

Each host is a real ``python -m ouistiti_gw_contrib.chat`` process, talked to
with plain SOCK_SEQPACKET clients; one case goes through two real gateway
processes.  "Nothing else arrived" is checked with markers, as in
test_contrib_chat.py: a sender's messages cross in order, so a marker sent
after them arrives after them.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from typing import Iterator, List, Tuple

import pytest
from websockets.sync.client import connect as ws_connect

from ouistiti_gw.green.unix import recv_packet
from ouistiti_gw_contrib.chatname import CHARACTERS, NUMBERED
from support import wait_until
from support.addresses import free_port
from support.processes import gateway_cli, listens_on
from support.samples import SampleServer, join, next_after, run, start_servers

REDIS_SERVER = shutil.which("redis-server") or "redis-server"  # missing: the test fails (.ci/run installs it)

LOST = "unreachable"
FEDERATING = "federating room"


class Redis:
    """A throw-away redis-server on a free loopback port, without persistence."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        """Start it (again, on the same port) and wait until it accepts."""
        assert REDIS_SERVER is not None
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: self.process.poll() is not None or listens_on(self.process.pid, self.port), "redis-server")
        assert self.process.poll() is None, "redis-server exited"

    def kill(self) -> None:
        """SIGKILL: no goodbye to the clients, the data is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def module_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="ogf")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def fresh_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="ogf")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def throwaway_redis() -> Iterator[Redis]:
    redis = Redis()
    yield redis
    redis.kill()


@pytest.fixture(scope="module")
def redis() -> Iterator[Redis]:
    server = Redis()
    yield server
    server.kill()


def start_hosts(directory: str, redis: Redis, room: str, count: int = 2,
                *options: str) -> Tuple[List[SampleServer], List[SampleServer]]:
    """*count* federated chat servers, docroots DIR/D1, DIR/D2..., each
    subscribed to *room*; and the list of all started (to kill)."""
    start, started = start_servers(directory)
    hosts = [start("chat", "-w", "--redis", redis.url, "--room", room, *options,
                   name="chat", docroot=os.path.join(directory, f"D{number}"))
             for number in range(1, count + 1)]
    for host in hosts:
        wait_until(lambda: FEDERATING in host.log(), "the chat server to subscribe")
    return hosts, started


@pytest.fixture(scope="module")
def hosts(module_dir, redis) -> Iterator[List[SampleServer]]:
    """Two federated chat servers (A: docroot D1, B: docroot D2), room r1."""
    hosts, started = start_hosts(module_dir, redis, "r1")
    yield hosts
    for host in hosts:
        host.stop()  # SIGTERM: exit 0 and socket removed, with the federation on
    for server in started:
        server.kill()


def hello(sock: socket.socket, name: bytes) -> bytes:
    """Say WSHello NAME; the name the server gave."""
    sock.send(b"WSHello " + name)
    welcome = recv_packet(sock)
    assert welcome.startswith(b"WSWelcome ")
    return welcome.split(b" ", 1)[1]


def close(*socks: socket.socket) -> None:
    for sock in socks:
        sock.close()


@pytest.mark.redis
def test_broadcast_reaches_all_clients_of_both_hosts_once_in_order(hosts):
    a_host, b_host = hosts
    clients = [join(a_host, b"bc_a1"), join(a_host, b"bc_a2"), join(b_host, b"bc_b1"), join(b_host, b"bc_b2")]
    messages = 30
    for sequence in range(messages):
        for number, sock in enumerate(clients):
            sock.send(b"%d:%d" % (number, sequence))
    for number, sock in enumerate(clients):
        by_sender: dict = {}
        for _ in range((len(clients) - 1) * messages):
            sender, sequence = recv_packet(sock).split(b":")
            by_sender.setdefault(int(sender), []).append(int(sequence))
        expected = {sender: list(range(messages)) for sender in range(len(clients)) if sender != number}
        assert by_sender == expected, f"client {number}"
    # Nothing more came, from either host: the next message is a marker from each.
    for receiver in range(len(clients)):
        marker_from = clients[(receiver + 1) % len(clients)]
        assert next_after(marker_from, clients[receiver]) == []
        for other in clients:  # the marker reached the others too
            if other is not marker_from and other is not clients[receiver]:
                assert recv_packet(other) == b"marker %d" % id(clients[receiver])
    close(*clients)


@pytest.mark.redis
def test_private_reaches_the_client_on_the_other_host_only(hosts):
    a_host, b_host = hosts
    sender, bystander_a = join(a_host, b"pv_sender"), join(a_host, b"pv_by_a")
    dave, bystander_b = join(b_host, b"pv_dave"), join(b_host, b"pv_by_b")
    sender.send(b"WSPrivate pv_dave meet me at noon\n")
    assert recv_packet(dave) == b"meet me at noon"
    sender.send(b"WSPrivate pv_by_a local secret")  # same host: stays local
    assert recv_packet(bystander_a) == b"local secret"
    # dave's marker is the first thing every other client gets.
    marker = b"marker %d" % id(bystander_b)
    assert next_after(dave, bystander_b) == []
    assert recv_packet(sender) == recv_packet(bystander_a) == marker
    close(sender, bystander_a, dave, bystander_b)


@pytest.mark.redis
def test_names_are_unique_across_hosts_and_freed_when_their_client_goes(hosts):
    a_host, b_host = hosts
    first, second, third = a_host.connect(), b_host.connect(), a_host.connect()
    assert hello(first, b"bob") == b"bob"
    assert hello(second, b"bob") == b"bob001"  # bob is on the other host
    assert hello(third, b"bob") == b"bob002"   # bob001 is on the other host
    assert hello(second, b"bob") == b"bob001"  # asks again: keeps its numbered name
    first.close()
    newcomer = b_host.connect()
    wait_until(lambda: hello(newcomer, b"bob") == b"bob", "bob to be free after its client left")
    assert hello(newcomer, b"robert") == b"robert"  # a new name frees the old one
    wait_until(lambda: hello(third, b"bob") == b"bob", "bob to be free after a rename")
    close(second, third, newcomer)


@pytest.mark.redis
def test_name_rules_hold_across_hosts(hosts):
    """A client cannot pass for another host's numbered duplicate, and names
    are compared after NFC normalization on every host."""
    a_host, b_host = hosts
    first, second = a_host.connect(), b_host.connect()
    assert hello(first, b"nr_bob") == b"nr_bob"
    assert hello(second, b"nr_bob") == b"nr_bob001"
    newcomer = a_host.connect()
    for refused, reason in ((b"nr_bob001", NUMBERED), (b"nr_bob002", NUMBERED), (b"nr\x1b[2Jbob", CHARACTERS)):
        newcomer.send(b"WSHello " + refused)
        assert recv_packet(newcomer) == b"WSError WSHello " + reason.encode()
    assert hello(newcomer, b"nr_bob") == b"nr_bob002"
    assert hello(first, "nr_\u00e9".encode()) == "nr_\u00e9".encode()  # on A, precomposed
    assert hello(second, "nr_e\u0301".encode()) == "nr_\u00e9001".encode()  # on B, decomposed: the same name
    close(first, second, newcomer)


def whois(sock: socket.socket, name: bytes) -> bytes:
    """The answer to WSWhois NAME, without "WSIs NAME "."""
    sock.send(b"WSWhois " + name)
    answer = recv_packet(sock)
    assert answer.startswith(b"WSIs %s " % name)
    return answer[len(b"WSIs %s " % name):]


@pytest.mark.redis
def test_whois_across_hosts(hosts):
    a_host, b_host = hosts
    asker, erin = join(a_host, b"wh_asker"), join(b_host, b"wh_erin")
    assert whois(asker, b"wh_erin") == b"network error"  # held on B, which does not know its address
    assert whois(erin, b"wh_asker") == b"network error"
    assert whois(asker, b"wh_nobody") == b"undefined"
    erin.close()
    wait_until(lambda: whois(asker, b"wh_erin") == b"undefined", "erin to be gone")
    asker.close()


@pytest.mark.redis
def test_names_of_a_crashed_server_are_freed_when_they_expire(hosts, redis, fresh_dir):
    a_host, _ = hosts
    (crasher,), started = start_hosts(fresh_dir, redis, "r1", 1, "--name-ttl", "1")
    try:
        zed = join(crasher, b"zed")
        asker = a_host.connect()
        assert hello(asker, b"zed") == b"zed001"
        assert whois(asker, b"zed") == b"network error"
        crasher.process.send_signal(signal.SIGKILL)  # no goodbye: the key stays until it expires
        crasher.process.wait()
        wait_until(lambda: hello(asker, b"zed") == b"zed", "the crashed server's name to expire")
        close(zed, asker)
    finally:
        for server in started:
            server.kill()


@pytest.mark.redis
def test_redis_lost_local_chat_goes_on_then_federation_resumes(throwaway_redis, fresh_dir):
    (a_host, b_host), started = start_hosts(fresh_dir, throwaway_redis, "r2")
    try:
        kim, a_other, b_client = join(a_host, b"kim"), join(a_host, b"lo_a"), join(b_host, b"lo_b")
        kim.send(b"before")
        assert recv_packet(a_other) == recv_packet(b_client) == b"before"

        throwaway_redis.kill()
        for host in (a_host, b_host):
            wait_until(lambda: LOST in host.log(), "the loss of Redis to be logged")
        for number in range(20):
            kim.send(b"local %d" % number)
        assert [recv_packet(a_other) for _ in range(20)] == [b"local %d" % number for number in range(20)]
        assert whois(kim, b"lo_a") == b"network error"
        assert whois(kim, b"lo_b") == b"undefined"  # on the other host: unknown while apart
        newcomer = b_host.connect()
        assert hello(newcomer, b"lo_new") == b"lo_new"  # names still work, locally
        assert a_host.log().count(LOST) == 1  # once, not per message

        throwaway_redis.start()  # same port, empty
        b_client.settimeout(0.1)

        def crossed() -> bool:
            kim.send(b"probe")
            try:
                return recv_packet(b_client) == b"probe"
            except socket.timeout:
                return False

        wait_until(crossed, "federation to resume")
        b_client.settimeout(None)
        assert set(next_after(kim, b_client)) <= {b"probe"}  # late probes, then nothing else
        for number in range(10):
            kim.send(b"again %d" % number)
        assert [recv_packet(b_client) for _ in range(10)] == [b"again %d" % number for number in range(10)]
        # kim's name was claimed again on reconnection, before anything was published.
        late = b_host.connect()
        assert hello(late, b"kim") == b"kim001"
        for host in (a_host, b_host):
            assert host.log().count(LOST) == 1
            assert host.log().count(FEDERATING) == 2
        close(kim, a_other, b_client, newcomer, late)
    finally:
        for server in started:
            server.kill()


@pytest.mark.redis
def test_end_to_end_through_two_gateways(hosts, module_dir):
    """Browsers on two gateways (direct mode, so the chat servers know their
    addresses) chat together; whois answers what the other host knows."""
    with gateway_cli(os.path.join(module_dir, "D1"), "--mode", "direct") as gateway_a, \
            gateway_cli(os.path.join(module_dir, "D2"), "--mode", "direct") as gateway_b, \
            ws_connect(f"{gateway_a.url}/chat") as alice, ws_connect(f"{gateway_b.url}/chat") as bob:
        alice.send("WSHello e2e_alice")
        assert alice.recv() == "WSWelcome e2e_alice"
        bob.send("WSHello e2e_bob")
        assert bob.recv() == "WSWelcome e2e_bob"
        bob.send("WSWhois e2e_alice")
        assert bob.recv() == "WSIs e2e_alice 127.0.0.1"
        alice.send("héllo bob")
        assert bob.recv() == "héllo bob"
        bob.send(b"\x00\xffbinary")
        assert alice.recv() == b"\x00\xffbinary"
        bob.send("WSPrivate e2e_alice just you")
        assert alice.recv() == "just you"


def test_bad_federation_options_are_refused(fresh_dir):
    result = run("chat", "-R", fresh_dir, "-n", "bad", "--redis", "http://127.0.0.1:1/0")
    assert result.returncode == 1
    assert "--redis" in result.stderr
    assert not os.path.lexists(os.path.join(fresh_dir, "bad"))
    result = run("chat", "-R", fresh_dir, "--room", "r1")
    assert result.returncode == 2 and "--room needs --redis" in result.stderr
