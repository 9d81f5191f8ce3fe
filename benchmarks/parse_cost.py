"""Per-message CPU of parsing client frames: the protocol core against a reference, no sockets.

    python benchmarks/parse_cost.py [--old FILE] [--count N]

Feeds ``N`` masked text frames of 16 B and of 1 KiB, arriving as 256 KiB reads, through:

- ``core``: :class:`ouistiti_gw.core.protocol.Protocol` alone (``receive_data`` / ``next_event``);
- ``shell``: :class:`ouistiti_gw.green.websocket.WebSocket` over a socket that has nothing more to
  give (every frame comes from the buffered bytes), as the gateway's pump drives it;
- ``old``: the same through a former ``websocket.py`` given with ``--old`` (e.g.
  ``git show main:ouistiti_gw/green/websocket.py > /tmp/old_websocket.py``);
- ``websockets``: ``websockets.protocol.Protocol`` (its sans-I/O core) in the server role.

Prints microseconds per message, best of 5 runs. No frame budget (it is paid per 256 frames).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time

import gevent  # noqa: F401  (the shells yield to its loop)

from ouistiti_gw.core.frames import Opcode, encode_frame
from ouistiti_gw.core.protocol import DataPiece, Protocol
from ouistiti_gw.green import websocket

READ_SIZE = 256 * 1024


class _Drained:
    """A socket whose peer has sent nothing more (every frame came buffered)."""

    def recv(self, size: int) -> bytes:
        return b""


def frames(size: int, count: int) -> list[bytes]:
    """``count`` masked text frames of ``size`` bytes, as reads of :data:`READ_SIZE`."""
    frame = encode_frame(Opcode.TEXT, b"x" * size, mask=os.urandom(4))
    stream = frame * count
    return [stream[i:i + READ_SIZE] for i in range(0, len(stream), READ_SIZE)]


def run_core(reads: list[bytes], count: int) -> None:
    protocol = Protocol(max_frame_rate=0)
    got = 0
    for data in reads:
        protocol.receive_data(data)
        while (event := protocol.next_event()) is not None:
            if type(event) is DataPiece and event.final:
                got += 1
    assert got == count, got


def run_shell(module, reads: list[bytes], count: int) -> None:
    ws = module.WebSocket(_Drained(), b"".join(reads), max_frame_rate=0)
    got = 0

    def deliver(piece: bytes, is_text: bool, final: bool) -> None:
        nonlocal got
        got += final

    while ws.receive_streaming(deliver):
        pass
    assert got == count, got


def run_websockets(reads: list[bytes], count: int) -> None:
    from websockets.protocol import Protocol as WsProtocol
    from websockets.protocol import Side
    protocol = WsProtocol(Side.SERVER, max_size=None)
    got = 0
    for data in reads:
        protocol.receive_data(data)
        for event in protocol.events_received():
            if event.fin:
                got += 1
    assert got == count, got


def best_of(function, *args, rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        function(*args)
        best = min(best, time.process_time() - start)
    return best


def load_old(path: str):
    spec = importlib.util.spec_from_file_location("ouistiti_gw._old_websocket", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old", help="a former ouistiti_gw/green/websocket.py to compare with")
    parser.add_argument("--count", type=int, default=100_000)
    args = parser.parse_args()
    contenders = {"core": lambda r, n: run_core(r, n), "shell": lambda r, n: run_shell(websocket, r, n),
                  "websockets": run_websockets}
    if args.old:
        old = load_old(args.old)
        contenders["old"] = lambda r, n: run_shell(old, r, n)
    for size in (16, 1024):
        reads = frames(size, args.count)
        for name, function in contenders.items():
            seconds = best_of(function, reads, args.count)
            print(f"{size:>5} B  {name:<11} {seconds / args.count * 1e6:6.2f} us/message")


if __name__ == "__main__":
    main()
