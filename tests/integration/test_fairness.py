"""A client flooding tiny frames slows only itself, and past its frame budget it is closed (1008).

Each flood is a raw client writing 1-byte masked frames as fast as it can: unsolicited pongs
(legal, RFC 6455 section 5.5.3, but not unbounded), pings whose pongs it never reads, or
continuation frames of one message that never ends, to a stream server (held 64 KiB at a time,
then forwarded: the flood can go on) or to a SOCK_SEQPACKET server (held until the message
would not fit the server's packet, then refused with 1009); or, compressed, 16 KiB messages that
each inflate to 16 MiB for a server that reads it all (inflating pays from the same turns).
Meanwhile an open session's round trip and a new session's handshake must stay quick: a stall
is seconds, so the bound is one second.

The fairness tests run with no frame budget (``max_frame_rate`` 0), so that the loop's sharing
is what they test; the budget tests run with the default one.
"""
from __future__ import annotations

import dataclasses
import os
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import pytest

from rawclient import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    SEQPACKET_ECHO,
    STREAM_ECHO,
    RawClient,
    build_frame,
)
from support import wait_until
from support.addresses import free_port
from support.clients import handshake_request, raw_request
from support.compression import deflate
from support.processes import gateway_cli, gunicorn
from support.unix_servers import UnixServer, echo_handler

#: A round trip or a handshake slower than this, while another client floods, is a stall.
BOUND_SECONDS = 1.0
FLOOD_SECONDS = 4.0
POLICY_VIOLATION, MESSAGE_TOO_BIG = 1008, 1009
OPEN_MESSAGE = build_frame(BINARY, b"f", fin=False)
FRAGMENT = build_frame(CONTINUATION, b"f", fin=False)
DISCARD = "/discard"
#: A compressed message of 16 KiB that inflates to 16 MiB of zeros (the default size limit).
INFLATING = build_frame(BINARY, deflate(bytes(16 * 1024 * 1024 - 1)), rsv=4)
OFFER = "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n"


@dataclass(frozen=True)
class Flood:
    """One kind of flood: where it goes and what it is made of."""

    path: str
    #: The frame written first, then the one written over and over.
    opening: bytes
    frame: bytes
    #: Whether the flooder reads what the gateway sends it.
    reads: bool = True
    #: How the gateway ends it whatever the frame budget (None: it does not).
    ends_with: int | None = None
    #: Extra handshake headers (the compression offer).
    headers: str = ""
    #: Frames per write (each write is one frame repeated).
    frames_per_write: int = 64 * 1024


FLOODS = {
    "pongs": Flood(SEQPACKET_ECHO, b"", build_frame(PONG, b"p")),
    "pings-unread": Flood(SEQPACKET_ECHO, b"", build_frame(PING, b"p"), reads=False),
    "fragments-stream": Flood(STREAM_ECHO, OPEN_MESSAGE, FRAGMENT),
    "fragments-seqpacket": Flood(SEQPACKET_ECHO, OPEN_MESSAGE, FRAGMENT, ends_with=MESSAGE_TOO_BIG),
    # every 16 KiB the client sends costs the gateway 16 MiB of inflating, to a server that reads it all
    "inflating": Flood(DISCARD, b"", INFLATING, headers=OFFER, frames_per_write=16),
}
#: The floods the frame budget ends (the last one ends sooner).
BUDGET_FLOODS = [kind for kind, flood in FLOODS.items() if flood.ends_with is None and not flood.headers]


@pytest.fixture
def echo_servers(docroot: str) -> Iterator[None]:
    servers = [UnixServer(docroot + SEQPACKET_ECHO, echo_handler, sock_type=socket.SOCK_SEQPACKET),
               UnixServer(docroot + STREAM_ECHO, echo_handler),
               UnixServer(docroot + DISCARD, lambda conn, server: read_and_discard(conn))]
    yield
    for server in servers:
        server.close()


class Flooder:
    """A raw client writing one frame over and over from a thread until stopped or cut off; if it
    reads, another thread records the close code the gateway ends it with."""

    def __init__(self, port: int, flood: Flood) -> None:
        self.flood = flood
        self.client = RawClient(port, self.flood.path, extra_headers=self.flood.headers)
        self.client.sock.settimeout(None)  # writes block while the gateway reads nothing: that is the point
        self.data = self.flood.frame * self.flood.frames_per_write
        self.stopped = threading.Event()
        self.close_code: int | None = None
        self.client.sock.sendall(self.flood.opening)
        self.writer = threading.Thread(target=self._write, daemon=True)
        self.writer.start()
        if self.flood.reads:
            threading.Thread(target=self._read, daemon=True).start()

    def _write(self) -> None:
        while not self.stopped.is_set():
            try:
                self.client.sock.sendall(self.data)
            except OSError:
                return

    def _read(self) -> None:
        try:
            while True:
                frame = self.client.recv_frame()
                if frame.opcode == CLOSE:
                    self.close_code = frame.close_code
                    self.stopped.set()
                    return
        except (AssertionError, OSError):
            return

    def stop(self) -> None:
        self.stopped.set()
        try:
            self.client.sock.shutdown(socket.SHUT_RDWR)  # unblocks a write the gateway does not read
        except OSError:
            pass  # the gateway has ended the connection already
        self.client.close()


def round_trip_seconds(client: RawClient, index: int) -> float:
    data = b"victim %d" % index
    started = time.monotonic()
    client.send(build_frame(BINARY, data))
    client.expect_message(data, text=True)  # the gateway sends valid UTF-8 back as text
    return time.monotonic() - started


def handshake_seconds(port: int) -> float:
    started = time.monotonic()
    client = RawClient(port, SEQPACKET_ECHO)
    elapsed = time.monotonic() - started
    client.close_cleanly()
    client.close()
    return elapsed


def slowest_while(port: int, victim: RawClient, stopped: threading.Event, seconds: float) -> tuple[float, float]:
    """The slowest round trip on ``victim`` and the slowest new handshake, measured for ``seconds``
    or until the flood has ``stopped``."""
    deadline = time.monotonic() + seconds
    round_trips, handshakes = [0.0], [0.0]
    while time.monotonic() < deadline and not stopped.is_set():
        round_trips.append(round_trip_seconds(victim, len(round_trips)))
        handshakes.append(handshake_seconds(port))
        time.sleep(0.05)
    return max(round_trips), max(handshakes)


@contextmanager
def flood(port: int, kind: str) -> Iterator[Flooder]:
    flooder = Flooder(port, FLOODS[kind])
    try:
        time.sleep(0.3)  # the gateway's buffers are full of it by now
        yield flooder
    finally:
        flooder.stop()


@pytest.mark.parametrize("kind", FLOODS)
def test_a_flood_of_tiny_frames_slows_only_the_flooder(docroot, echo_servers, kind):
    """With no frame budget at all, the loop is still shared: every session gets its turn."""
    with gateway_cli(docroot, "--max-frame-rate", "0") as gateway:
        victim = RawClient(gateway.port, SEQPACKET_ECHO)
        round_trip_seconds(victim, 0)
        with flood(gateway.port, kind) as flooder:
            round_trip, handshake = slowest_while(gateway.port, victim, flooder.stopped, FLOOD_SECONDS)
            if flooder.flood.ends_with:
                wait_until(lambda: flooder.close_code is not None, what="the flooder's close frame")
            assert flooder.close_code == flooder.flood.ends_with
        assert round_trip < BOUND_SECONDS, f"a round trip took {round_trip:.2f} s during a flood of {kind}"
        assert handshake < BOUND_SECONDS, f"a handshake took {handshake:.2f} s during a flood of {kind}"
        victim.close_cleanly()
        assert gateway.process.poll() is None


@pytest.mark.parametrize("kind", BUDGET_FLOODS)
def test_a_flooder_is_closed_with_1008_past_the_default_frame_budget(docroot, echo_servers, kind):
    with gateway_cli(docroot) as gateway:
        victim = RawClient(gateway.port, SEQPACKET_ECHO)
        with flood(gateway.port, kind) as flooder:
            round_trip, handshake = slowest_while(gateway.port, victim, flooder.stopped, 2.0)
            wait_until(lambda: "close=1008" in gateway.log(), timeout=15, what="the flooder's session closed with 1008")
            if flooder.flood.reads:
                wait_until(lambda: flooder.close_code is not None, what="the flooder's close frame")
                assert flooder.close_code == POLICY_VIOLATION
        assert round_trip < BOUND_SECONDS and handshake < BOUND_SECONDS
        round_trip_seconds(victim, 1)  # the other session is untouched
        victim.close_cleanly()
        log = gateway.log()
        assert log.count("frames/s (max_frame_rate)") == 1, log
        assert "Traceback" not in log


@pytest.mark.gunicorn
def test_gunicorn_worker_keeps_its_heartbeat_during_a_flood(docroot, echo_servers):
    """gunicorn kills a worker that has not notified it for --timeout seconds; a flood longer
    than that, unchecked by any frame budget, must not make the worker miss a beat."""
    port = free_port()
    env = {"OUISTITI_GW_DOCROOT": docroot, "OUISTITI_GW_MAX_FRAME_RATE": "0"}
    with gunicorn("ouistiti_gw.worker.GatewayWorker", port, env, "--timeout", "3", "--log-level", "info") as gateway:
        victim = RawClient(gateway.port, SEQPACKET_ECHO)
        with flood(gateway.port, "pongs") as flooder:
            round_trip, handshake = slowest_while(gateway.port, victim, flooder.stopped, 8.0)
            assert flooder.writer.is_alive()
        round_trip_seconds(victim, 1)  # the same session, on the same worker: it was not killed
        victim.close_cleanly()
        log = gateway.log()
        assert "WORKER TIMEOUT" not in log, log
        assert round_trip < BOUND_SECONDS and handshake < BOUND_SECONDS, (round_trip, handshake)


def send_tiny_packets(conn: socket.socket, server: UnixServer) -> None:
    """A SOCK_SEQPACKET server sending 1-byte packets as fast as it can, until the peer is gone."""
    while True:
        conn.send(b"s")


def read_and_discard(sock: socket.socket) -> None:
    while sock.recv(1 << 20):
        pass


def test_a_server_flooding_tiny_packets_slows_only_its_own_session(docroot, echo_servers):
    """The server -> client pump of a SOCK_SEQPACKET session takes turns too: gevent reads a
    socket that has data without waiting, and a client that reads as fast takes every write."""
    chatty = UnixServer(docroot + "/chatty", send_tiny_packets, sock_type=socket.SOCK_SEQPACKET)
    try:
        with gateway_cli(docroot) as gateway:
            victim = RawClient(gateway.port, SEQPACKET_ECHO)
            listener = RawClient(gateway.port, "/chatty")
            listener.sock.settimeout(None)
            reader = threading.Thread(target=read_and_discard, args=(listener.sock,), daemon=True)
            reader.start()
            time.sleep(0.3)
            round_trip, handshake = slowest_while(gateway.port, victim, threading.Event(), FLOOD_SECONDS)
            assert reader.is_alive(), "the flood must run all along"
            listener.sock.shutdown(socket.SHUT_RDWR)
            listener.close()
            assert round_trip < BOUND_SECONDS, f"a round trip took {round_trip:.2f} s"
            assert handshake < BOUND_SECONDS, f"a handshake took {handshake:.2f} s"
            victim.close_cleanly()
    finally:
        chatty.close()


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def test_tiny_fragments_of_an_unfinished_message_cost_a_byte_each(docroot, echo_servers):
    """A message to a SEQPACKET server in 1-byte fragments is held in one buffer: 200 000
    fragments (as many as fit the server's packet) grow the gateway by about 200 KB, not by an
    object per fragment (~40 bytes each: 8 MB)."""
    fragments = 200_000
    with gateway_cli(docroot, "--max-frame-rate", "0") as gateway:
        client = RawClient(gateway.port, SEQPACKET_ECHO)
        client.send(build_frame(BINARY, os.urandom(1), fin=False))
        client.send(build_frame(PING, b"before"))
        client.expect_frame(PONG, b"before")
        before = rss_kib(gateway.serving_pid)
        client.send(build_frame(CONTINUATION, b"f", fin=False) * fragments)
        client.send(build_frame(PING, b"after"))  # control frames may come between fragments
        client.expect_frame(PONG, b"after")  # answered once every fragment before it is read
        growth = rss_kib(gateway.serving_pid) - before
        assert growth < 2048, f"the gateway grew by {growth} KiB for {fragments} one-byte fragments"
        client.close_cleanly()


def protocol_flood_request(port: int, count: int = 6000) -> bytes:
    """A handshake for a name that does not exist with ``count`` subprotocols: 30 KiB of
    ``Sec-WebSocket-Protocol`` lines (each under the 8 KiB line limit; the server joins them)."""
    tokens = [f"{i:04x}" for i in range(count)]
    lines = "".join(f"Sec-WebSocket-Protocol: {','.join(tokens[i:i + 1500])}\r\n" for i in range(0, count, 1500))
    return handshake_request("/missing", port=port, extra=lines)


def send_protocol_floods(port: int, stopped: threading.Event, statuses: list[int]) -> None:
    request = protocol_flood_request(port)
    while not stopped.is_set():
        status, _, sock, _ = raw_request(port, request)
        sock.close()
        statuses.append(status)


def test_handshakes_with_thousands_of_subprotocols_slow_only_themselves(docroot, echo_servers):
    """Each such handshake once cost ~200 ms of filesystem lookups (one per subprotocol, before
    even the Host check), and a few clients sending them in a loop stalled every session."""
    with gateway_cli(docroot) as gateway:
        victim = RawClient(gateway.port, SEQPACKET_ECHO)
        stopped, statuses = threading.Event(), []
        attackers = [threading.Thread(target=send_protocol_floods, args=(gateway.port, stopped, statuses), daemon=True)
                     for _ in range(8)]
        for attacker in attackers:
            attacker.start()
        try:
            time.sleep(0.3)
            round_trip, handshake = slowest_while(gateway.port, victim, threading.Event(), FLOOD_SECONDS)
        finally:
            stopped.set()
            for attacker in attackers:
                attacker.join()
        victim.close_cleanly()
        assert statuses and set(statuses) == {404}
        assert round_trip < BOUND_SECONDS, f"a round trip took {round_trip:.2f} s ({len(statuses)} floods)"
        assert handshake < BOUND_SECONDS, f"a handshake took {handshake:.2f} s ({len(statuses)} floods)"


def test_max_byte_rate_bounds_what_an_inflating_client_costs_the_server(docroot, echo_servers):
    """Deflate bombs just under max_message_size (16 KiB on the wire, 16 MiB inflated) as fast as
    the client can send them: the server got x388 what the client sent (2.91 GB in 15 s). With
    ``max_byte_rate`` at 1 MiB/s the server receives at most the rate times the time plus the
    burst (one max_message_size) and one inflating step; the client is not closed (it is not
    read: backpressure), and another session's round trip stays quick."""
    received: list[int] = []

    def count(conn: socket.socket, server: UnixServer) -> None:
        while data := conn.recv(1 << 20):
            received.append(len(data))

    rate, burst = 1024 * 1024, 16 * 1024 * 1024
    counted = UnixServer(docroot + "/counted", count)
    try:
        with gateway_cli(docroot, "--max-byte-rate", str(rate)) as gateway:
            victim = RawClient(gateway.port, SEQPACKET_ECHO)
            round_trip_seconds(victim, 0)
            started = time.monotonic()
            flooder = Flooder(gateway.port, dataclasses.replace(FLOODS["inflating"], path="/counted"))
            try:
                round_trip, _ = slowest_while(gateway.port, victim, flooder.stopped, FLOOD_SECONDS)
                got, elapsed = sum(received), time.monotonic() - started
                assert flooder.writer.is_alive(), "the flooder must be held back, not cut off"
            finally:
                flooder.stop()
            victim.close_cleanly()
            log = gateway.log()
    finally:
        counted.close()
    assert got > burst, f"the server got {got} bytes: the flood did not run"
    assert got <= burst + rate * elapsed + 64 * 1024, f"{got} bytes in {elapsed:.1f} s at {rate} B/s"
    assert round_trip < BOUND_SECONDS, f"a round trip took {round_trip:.2f} s"
    assert "close=1008" not in log and "Traceback" not in log, log
