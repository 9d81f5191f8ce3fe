"""The servers accept a few connections per turn of the event loop, so that a storm of new
connections leaves the open sessions their share (issue 22; the effect on an established
session's round trip is measured by ``benchmarks/run.py --storm``).

A real listening socket on loopback in this process, clients connected before the loop runs (the
kernel completes their TCP handshakes into the listen backlog); the loop's turns are counted by
a prepare watcher, which libev runs once before each poll.
"""
from __future__ import annotations

import socket

import gevent
from gevent.server import StreamServer

from ouistiti_gw.servers.accept_pacing import ACCEPTS_PER_TURN, PacedAccept

WAITING = 40


class PacedServer(PacedAccept, StreamServer):
    pass


def accepts_per_turn(server_class: type[StreamServer]) -> list[int]:
    """How many of :data:`WAITING` connections already in the backlog each turn accepted."""
    turn = 0

    def next_turn() -> None:
        nonlocal turn
        turn += 1

    counts: dict[int, int] = {}

    def handle(conn, address) -> None:
        counts[turn] = counts.get(turn, 0) + 1
        conn.close()

    server = server_class(("127.0.0.1", 0), handle)
    server.init_socket()
    clients = [socket.create_connection(server.address) for _ in range(WAITING)]
    turns = gevent.get_hub().loop.prepare()
    turns.start(next_turn)
    try:
        server.start()
        with gevent.Timeout(10):
            while sum(counts.values()) < WAITING:
                gevent.sleep(0.01)
    finally:
        turns.stop()
        server.stop()
        for client in clients:
            client.close()
    return list(counts.values())


def test_each_turn_accepts_a_few_connections_and_all_are_accepted():
    counts = accepts_per_turn(PacedServer)
    assert sum(counts) == WAITING
    assert max(counts) == ACCEPTS_PER_TURN


def test_gevents_own_server_would_take_them_all_at_once():
    """The reference that makes the test above mean something: gevent accepts up to 100 a turn."""
    assert max(accepts_per_turn(StreamServer)) > ACCEPTS_PER_TURN
