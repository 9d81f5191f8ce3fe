"""The gateway process's own CPU per message, old against new: robust on a busy machine.

    python benchmarks/gateway_cpu.py OLD_TREE [--messages N] [--rounds R]

Throughput figures swing with whatever else the machine runs; the CPU time the gateway process
itself spends per message (its process tree's run time, from ``/proc``) does much less. Each round starts
the gateway from ``OLD_TREE`` (a checkout whose ``ouistiti_gw`` is put first on ``PYTHONPATH``)
and from this tree, alternately, in front of ``echo_server.py``, and sends ``N`` masked text
messages of 16 B and of 1 KiB over one connection, ``--window`` in flight (32 by default; 1 is
a ping-pong), reading every echo.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from contenders import free_port
from procinfo import cpu_spent, tree_cpu_seconds
from wsclient import handshake_request, read_response

HERE = os.path.dirname(os.path.abspath(__file__))
NEW_TREE = os.path.dirname(HERE)


def connect(port: int) -> socket.socket:
    """A blocking WebSocket connection to ``/echo`` (the handshake is the load client's)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", port))
            break
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    sock.sendall(handshake_request("127.0.0.1", port, "/echo"))
    read_response(sock)
    return sock


def ping_pong(sock: socket.socket, size: int, count: int, window: int) -> None:
    """``count`` messages of ``size`` bytes (masked, all-zero key: the payload goes as is), and
    their echo read back: as many payload bytes, in however many messages the gateway made of
    the echo server's reads."""
    frame = bytes([0x81, 0x80 | (size if size < 126 else 126)]) + (size.to_bytes(2, "big") if size >= 126 else b"")
    frame += bytes(4) + b"x" * size
    pending = b""
    for _ in range(count // window):
        sock.sendall(frame * window)
        left = size * window
        while left:
            pending += sock.recv(1 << 20)
            while len(pending) >= 4:
                length, start = pending[1] & 0x7F, 2
                if length == 126:
                    length, start = int.from_bytes(pending[2:4], "big"), 4
                if len(pending) < start + length:
                    break
                left -= length
                pending = pending[start + length:]


def one_round(tree: str, docroot: str, size: int, count: int, window: int) -> tuple[float, float]:
    """The gateway's CPU and the wall-clock time per message, in µs."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=tree)
    command = [sys.executable, "-m", "ouistiti_gw", "serve", "--docroot", docroot, "--port", str(port)]
    gateway = subprocess.Popen(command, cwd=tree, env=env, stderr=subprocess.DEVNULL)
    try:
        with connect(port) as sock:
            ping_pong(sock, size, window * 10, window)  # warm-up
            before, start = tree_cpu_seconds(gateway.pid), time.perf_counter()
            ping_pong(sock, size, count, window)
            wall = time.perf_counter() - start
            spent = cpu_spent(before, tree_cpu_seconds(gateway.pid))  # serve: a master and its worker
            return spent / count * 1e6, wall / count * 1e6
    finally:
        gateway.terminate()
        gateway.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("old_tree")
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=int, default=32, help="messages in flight")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gwcpu") as docroot:
        echo = subprocess.Popen([sys.executable, os.path.join(HERE, "echo_server.py"), os.path.join(docroot, "echo")],
                                stdout=subprocess.PIPE, text=True)
        try:
            echo.stdout.readline()
            for size in (16, 1024):
                figures: dict[str, list[tuple[float, float]]] = {"old": [], "new": []}
                for _ in range(args.rounds):
                    for name, tree in (("old", args.old_tree), ("new", NEW_TREE)):
                        figures[name].append(one_round(tree, docroot, size, args.messages, args.window))
                for name, values in figures.items():
                    cpu, wall = [value[0] for value in values], [value[1] for value in values]
                    print(f"{size:>5} B  {name}: CPU median {statistics.median(cpu):6.1f} us/message "
                          f"(rounds: {', '.join(f'{v:.1f}' for v in cpu)}); wall median "
                          f"{statistics.median(wall):6.1f} (rounds: {', '.join(f'{v:.1f}' for v in wall)})")
        finally:
            echo.terminate()
            echo.wait()


if __name__ == "__main__":
    main()
