"""The load client: raw WebSocket (or raw UNIX) connections driven by one epoll loop per process.

Why not a WebSocket library: the client must not be the bottleneck, and the same client must
drive every contender. So it does the least a client can do:

- every message it sends is one frame built (and masked) once, before the clock starts: sending
  is a ``send`` of a ready buffer, whatever the message size;
- what comes back is never copied nor decoded: a small state machine (:class:`FrameCounter`)
  walks the frame headers and counts payload bytes. A stream gateway may return one echo in
  several messages, text or binary: only the byte count matters;
- sending and receiving run in the same non-blocking loop, so a 16 MiB message can be echoed
  while it is still being sent (the raw UNIX echo needs that, or both ends would block);
- with ``deflate`` in the target it offers permessage-deflate, as browsers do: its message is
  compressed once, before the clock (a fresh context each, as the gateway asks), and a
  compressed echo (RSV1) is inflated to count its payload, as any client must. ``wire_bytes``
  counts what crossed the socket both ways, headers included.

Run by :mod:`clientpool` as a subprocess: ``python wsclient.py SPEC_JSON``. It connects (and
handshakes) everything, prints ``ready``, waits for a line on stdin, runs, prints one line of
JSON with its counts, and keeps its connections open until its stdin closes.
"""
from __future__ import annotations

import base64
import heapq
import json
import os
import random
import selectors
import socket
import struct
import sys
import time
import zlib
from collections import deque
from dataclasses import dataclass, field

from procinfo import raise_nofile_limit

#: Fixed client mask: servers must unmask whatever key is used, and a fixed key lets the frame be
#: built once.
MASK = b"\x37\xfa\x21\x3d"
RECV_SIZE = 1 << 20
#: No byte received on any connection for this long means a stuck contender (websockify
#: deadlocks on messages larger than its socket buffers: it blocks sending to the UNIX server
#: while the echo waits for its writes to be read).
STALL_SECONDS = float(os.environ.get("BENCH_STALL_SECONDS", "10"))
HANDSHAKE_BATCH = 64


class BenchmarkError(Exception):
    """The contender misbehaved (refused, closed, stalled): the figure is not measurable."""


def mask_bytes(payload: bytes, mask: bytes = MASK) -> bytes:
    """XOR with the repeated 4-byte mask, as one big-integer operation (done once per run)."""
    if not payload:
        return b""
    key = (mask * (len(payload) // 4 + 1))[:len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(len(payload), "big")


def client_frame(payload: bytes, *, text: bool = True, deflate: bool = False) -> bytes:
    """One masked, final client frame carrying ``payload`` (compressed, RSV1, with ``deflate``)."""
    first = 0x81 if text else 0x82
    if deflate:
        compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
        payload = (compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
        first |= 0x40
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", first, 0x80 | length)
    elif length <= 0xFFFF:
        header = struct.pack("!BBH", first, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, length)
    return header + MASK + mask_bytes(payload)


def payload_of(size: int, kind: str = "ascii") -> bytes:
    """ASCII payload: valid as text for every contender (ouistiti's C module only carries text);
    ``json``: chat-like JSON records (names, words, numbers from a seeded generator), which
    compresses as real traffic does, not as a repeated pattern does."""
    if kind == "json":
        return json_payload(size)
    pattern = b"0123456789abcdefghijklmnopqrstuvwxyz"
    return (pattern * (size // len(pattern) + 1))[:size]


def json_payload(size: int) -> bytes:
    """``size`` bytes of JSON chat messages, one record per line, cut to size (a space pads)."""
    rng = random.Random(size)
    words = ("hello", "meeting", "tomorrow", "at", "the", "office", "lunch", "deploy", "ok", "thanks",
             "review", "ticket", "build", "is", "green", "red", "again", "see", "you", "later")
    lines, total = [], 0
    while total < size:
        record = {"type": "message", "room": f"team-{rng.randrange(8)}", "from": f"user{rng.randrange(500)}",
                  "id": rng.randrange(10 ** 9), "sent": 1764547200 + rng.randrange(86400),
                  "text": " ".join(rng.choice(words) for _ in range(rng.randrange(3, 14)))}
        line = json.dumps(record).encode() + b"\n"
        lines.append(line)
        total += len(line)
    data = b"".join(lines)[:size]
    return data[:-1] + b"\n" if len(data) == size and size else data + b" " * (size - len(data))


class FrameCounter:
    """Count the payload bytes of data frames in a byte stream from a server, without copying it.

    A close frame sets :attr:`closed`; pings and pongs are skipped.
    """

    __slots__ = ("skip", "counting", "partial", "closed", "inflater", "compressed", "held")

    def __init__(self, deflate: bool = False) -> None:
        self.skip = 0
        self.counting = False
        self.partial = b""
        self.closed = False
        #: permessage-deflate: the server keeps its context, so one inflater for the connection
        self.inflater = zlib.decompressobj(-15) if deflate else None
        self.compressed = False
        self.held = bytearray()

    def _inflated(self) -> int:
        """The size of the compressed message just received (its payload is inflated)."""
        assert self.inflater is not None, "a compressed frame without permessage-deflate"
        size = len(self.inflater.decompress(bytes(self.held) + b"\x00\x00\xff\xff"))
        self.held.clear()
        return size

    def feed(self, data: memoryview) -> int:
        payload = 0
        pos = 0
        end = len(data)
        while pos < end:
            if self.skip:
                take = min(self.skip, end - pos)
                self.skip -= take
                if self.compressed:
                    self.held += data[pos:pos + take]
                    if not self.skip:
                        payload += self._inflated()
                elif self.counting:
                    payload += take
                pos += take
                continue
            if self.partial:
                head = self.partial + bytes(data[pos:pos + 14])
                back = len(self.partial)
            else:
                head = data[pos:pos + 14]
                back = 0
            if len(head) < 2:
                self.partial = bytes(head)
                return payload
            first, second = head[0], head[1]
            length = second & 0x7F
            size = 2 + (4 if second & 0x80 else 0) + (2 if length == 126 else 8 if length == 127 else 0)
            if len(head) < size:
                self.partial = bytes(head)
                return payload
            if length == 126:
                (length,) = struct.unpack_from("!H", head, 2)
            elif length == 127:
                (length,) = struct.unpack_from("!Q", head, 2)
            self.partial = b""
            pos += size - back
            opcode = first & 0x0F
            if opcode == 0x8:
                self.closed = True
            self.counting = opcode < 0x8
            self.compressed = self.counting and bool(first & 0x40)
            self.skip = length
        return payload


class RawCounter:
    """The raw UNIX echo has no framing: every byte is payload."""

    __slots__ = ("closed",)

    def __init__(self) -> None:
        self.closed = False

    @staticmethod
    def feed(data: memoryview) -> int:
        return len(data)


def handshake_request(host: str, port: int, path: str, deflate: bool = False) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" if deflate else ""
    return (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n").encode()


def read_response(sock: socket.socket) -> bytes:
    """Read up to the end of the 101's headers; return bytes that came after them."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise BenchmarkError(f"handshake: connection closed after {data[:80]!r}")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    if not head.startswith(b"HTTP/1.1 101"):
        raise BenchmarkError(f"handshake refused: {head.splitlines()[0]!r}")
    return rest


@dataclass
class Connection:
    sock: socket.socket
    counter: FrameCounter | RawCounter
    leftover: bytes = b""
    out: memoryview | None = None
    got: int = 0
    sent_at: float = 0.0
    writing: bool = False
    done: bool = False
    latencies: list[float] = field(default_factory=list)
    #: send times of the crowd's messages still waiting for their echo, oldest first
    outstanding: deque[float] = field(default_factory=deque)


def open_connections(target: dict, count: int) -> list[Connection]:
    """Connect ``count`` times (and handshake, for a WebSocket target), in batches."""
    connections: list[Connection] = []
    while len(connections) < count:
        batch = []
        for _ in range(min(HANDSHAKE_BATCH, count - len(connections))):
            if target["kind"] == "unix":
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(target["path"])
                batch.append(Connection(sock, RawCounter()))
                continue
            sock = socket.create_connection((target["host"], target["port"]), timeout=STALL_SECONDS)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if target["kind"] == "tcp":
                batch.append(Connection(sock, RawCounter()))
                continue
            deflate = target.get("deflate", False)
            sock.sendall(handshake_request(target["host"], target["port"], target["path"], deflate))
            batch.append(Connection(sock, FrameCounter(deflate)))
        if target["kind"] == "ws":
            for connection in batch:
                connection.leftover = read_response(connection.sock)
        for connection in batch:
            connection.sock.setblocking(False)
        connections.extend(batch)
    return connections


def flush(selector: selectors.BaseSelector, connection: Connection) -> None:
    """Send what ``connection.out`` holds; what the socket does not take waits for it to be writable."""
    out = connection.out
    try:
        sent = connection.sock.send(out)
    except BlockingIOError:
        sent = 0
    except OSError as error:
        raise BenchmarkError(f"send failed: {error}") from None
    if sent < len(out):
        connection.out = out[sent:]
        if not connection.writing:
            connection.writing = True
            selector.modify(connection.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, connection)
    else:
        connection.out = None
        if connection.writing:
            connection.writing = False
            selector.modify(connection.sock, selectors.EVENT_READ, connection)


def receive(connection: Connection, buffer: memoryview) -> int:
    """One read into ``buffer``, its payload bytes added to ``connection.got``; 0 if nothing was there.

    A closed connection, a failed read or a close frame raise :class:`BenchmarkError`.
    """
    try:
        received = connection.sock.recv_into(buffer)
    except BlockingIOError:
        return 0
    except OSError as error:
        raise BenchmarkError(f"receive failed: {error}") from None
    if not received:
        raise BenchmarkError("the server closed the connection")
    connection.got += connection.counter.feed(buffer[:received])
    if connection.counter.closed:
        raise BenchmarkError("the server sent a close frame")
    return received


def ping_pong(connections: list[Connection], frame: bytes, size: int, duration: float,
              *, latency: bool = False, max_messages: int = 0) -> dict:
    """Each connection sends one message, reads its whole echo back, and repeats until ``duration``.

    Returns the messages completed and the time from start to the last completion; messages
    started before the deadline are finished (and counted), so the time covers them.
    """
    selector = selectors.EpollSelector()
    view = memoryview(bytearray(RECV_SIZE))
    frame_view = memoryview(frame)
    perf = time.perf_counter
    completed = sends = wire = 0

    def start_send(connection: Connection, now: float) -> None:
        nonlocal sends
        sends += 1
        connection.sent_at = now
        connection.out = frame_view
        flush(selector, connection)

    for connection in connections:
        selector.register(connection.sock, selectors.EVENT_READ, connection)
    cpu_at_start = machine_cpu()
    start = perf()
    deadline = start + duration
    last = start
    active = len(connections)
    for connection in connections:
        if connection.leftover:
            connection.got += connection.counter.feed(memoryview(connection.leftover))
            connection.leftover = b""
        start_send(connection, perf())
    progress = start
    while active:
        events = selector.select(1.0)
        if not events:
            if perf() - progress > STALL_SECONDS:
                raise BenchmarkError(f"no byte received for {STALL_SECONDS:.0f} s ({completed} messages done)")
            continue
        for key, mask in events:
            connection = key.data
            if mask & selectors.EVENT_WRITE and connection.out is not None:
                flush(selector, connection)
            if not mask & selectors.EVENT_READ:
                continue
            received = receive(connection, view)
            if not received:
                continue
            wire += received
            progress = perf()
            if connection.got >= size and not connection.done:
                connection.got -= size
                now = perf()
                completed += 1
                last = now
                if latency:
                    connection.latencies.append(now - connection.sent_at)
                if now < deadline and not (max_messages and completed >= max_messages):
                    start_send(connection, now)
                else:
                    connection.done = True
                    active -= 1
    cpu_at_end = machine_cpu()
    selector.close()
    result = {"messages": completed, "bytes": completed * size, "seconds": last - start,
              "wire_bytes": sends * len(frame) + wire,
              "machine_cpu": [end - begin for begin, end in zip(cpu_at_start, cpu_at_end)]}
    if latency:
        result["latencies"] = [value for connection in connections for value in connection.latencies]
        # each connection's longest round trip: the pause it saw (a reload's, see measure.py)
        result["longest"] = [max(connection.latencies, default=0.0) for connection in connections]
    return result


def crowd(connections: list[Connection], frame: bytes, size: int, duration: float,
          *, interval: float = 1.0, jitter: float = 0.2, late: float = 5.0, timeline: bool = False) -> dict:
    """Every connection sends one message every ``interval`` (± ``jitter`` of it) for ``duration``.

    Each connection starts at a random point of the first interval, so the sends are spread
    evenly. An echo answers the oldest message of its connection still waiting (echoes come
    back in order). After the last send the loop waits up to ``late`` seconds for the echoes
    still missing: those are lost. A connection the server closes stops sending; what it was
    waiting for is lost. Returns the round trips in microseconds and the counts, with this
    process's own CPU time; with ``timeline``, also when each answered message was sent
    (``sent_at``, seconds of ``time.perf_counter``: the system's monotonic clock, which every
    process on the machine shares), in the order of ``latencies_us``.
    """
    selector = selectors.EpollSelector()
    view = memoryview(bytearray(RECV_SIZE))
    perf = time.perf_counter
    rng = random.Random()
    cpu_at_start = time.process_time()
    start = perf()
    stop_sending = start + duration
    due = [(start + rng.uniform(0, interval), index) for index in range(len(connections))]
    heapq.heapify(due)
    for connection in connections:
        selector.register(connection.sock, selectors.EVENT_READ, connection)
        if connection.leftover:
            connection.got += connection.counter.feed(memoryview(connection.leftover))
            connection.leftover = b""
    latencies: list[int] = []
    sent_at: list[float] = []
    sent = lost = closed = 0
    waiting = 0  # messages sent and not yet answered, on open connections

    def drop(connection: Connection) -> None:
        nonlocal lost, closed, waiting
        closed += 1
        lost += len(connection.outstanding)
        waiting -= len(connection.outstanding)
        connection.outstanding.clear()
        connection.done = True
        selector.unregister(connection.sock)

    last_send = start
    while True:
        now = perf()
        while due and due[0][0] <= now:
            at, index = heapq.heappop(due)
            connection = connections[index]
            if connection.done:
                continue
            connection.outstanding.append(now)
            # a frame still partly unsent (a server not reading) gets this one queued behind it
            connection.out = memoryview(frame if connection.out is None else bytes(connection.out) + frame)
            sent += 1
            waiting += 1
            last_send = now
            try:
                flush(selector, connection)
            except BenchmarkError:
                drop(connection)
                continue
            at += interval * rng.uniform(1 - jitter, 1 + jitter)
            if at < stop_sending:
                heapq.heappush(due, (at, index))
        if not due and (not waiting or now > last_send + late):
            break
        for key, mask in selector.select(max(0.0, (due[0][0] if due else last_send + late) - now)):
            connection = key.data
            try:
                if mask & selectors.EVENT_WRITE and connection.out is not None:
                    flush(selector, connection)
                if mask & selectors.EVENT_READ and receive(connection, view):
                    answered = perf()
                    while connection.got >= size and connection.outstanding:
                        connection.got -= size
                        when = connection.outstanding.popleft()
                        latencies.append(round((answered - when) * 1e6))
                        if timeline:
                            sent_at.append(round(when, 4))
                        waiting -= 1
            except BenchmarkError:
                drop(connection)
    selector.close()
    result = {"sent": sent, "answered": len(latencies), "lost": lost + waiting, "closed": closed,
              "late": sum(1 for value in latencies if value > late * 1e6), "latencies_us": latencies,
              "cpu_seconds": time.process_time() - cpu_at_start, "seconds": perf() - start}
    if timeline:
        result["sent_at"] = sent_at
    return result


def machine_cpu() -> tuple[float, float]:
    """Seconds the whole machine has spent busy and idle since boot (all cores, ``/proc/stat``).

    Read around a round, it tells what a message costs everything on the machine (client, server
    and echo together) and whether the machine still had room: a round that leaves cores idle
    is bound by a serial part (one process, or wake-up latency), not by the CPU.
    """
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]  # idle, iowait
    busy = sum(fields[:8]) - idle  # user nice system (idle iowait) irq softirq steal
    return busy / ticks, idle / ticks


def hold_idle(connections: list[Connection], probe: bytes, probe_size: int) -> None:
    """One echo on every connection (so the whole path is set up), then nothing: they stay open."""
    for connection in connections:
        connection.sock.setblocking(True)
        connection.sock.sendall(probe)
    for connection in connections:
        got = connection.counter.feed(memoryview(connection.leftover)) if connection.leftover else 0
        while got < probe_size:
            chunk = connection.sock.recv(65536)
            if not chunk:
                raise BenchmarkError("an idle connection was closed by the server")
            got += connection.counter.feed(memoryview(chunk))


def main(spec: dict) -> int:
    """Subprocess entry: connect, say ``ready``, wait for ``go``, run, print the result."""
    raise_nofile_limit()
    try:
        # a churning client opens its sessions once started, and only then (churn.py)
        connections = open_connections(spec["target"], 0 if spec["mode"] == "churn" else spec["connections"])
        raw = spec["target"]["kind"] in ("unix", "tcp")
        payload = payload_of(spec["size"], spec.get("payload", "ascii"))
        frame = payload if raw else client_frame(payload, text=spec["target"].get("text", False),
                                                 deflate=spec["target"].get("deflate", False))
        if spec["mode"] == "idle":
            hold_idle(connections, frame, spec["size"])
    except (OSError, BenchmarkError) as error:
        print(json.dumps({"error": f"connect: {error}"}), flush=True)
        return 1
    print("ready", flush=True)
    if not sys.stdin.readline():
        return 0
    if spec["mode"] == "idle":
        try:
            hold_idle(connections, frame, spec["size"])  # each one is still served (a reload moved them)
        except (OSError, BenchmarkError) as error:
            print(json.dumps({"error": f"idle connection lost: {error}"}), flush=True)
            return 1
        print(json.dumps({"connections": len(connections)}), flush=True)
        return 0
    try:
        if spec["mode"] == "crowd":
            result = crowd(connections, frame, spec["size"], spec["duration"], late=spec["late"],
                           interval=spec.get("interval", 1.0), timeline=spec.get("timeline", False))
        elif spec["mode"] == "churn":
            from churn import Churn  # it builds on this module

            result = Churn(spec["target"], spec["connections"], frame, spec["size"]).run(spec["duration"])
        else:
            result = ping_pong(connections, frame, spec["size"], spec["duration"],
                               latency=spec.get("latency", False), max_messages=spec.get("max_messages", 0))
    except BenchmarkError as error:
        result = {"error": str(error)}
    print(json.dumps(result), flush=True)
    sys.stdin.readline()  # end of input: every client has reported (see clientpool.collect)
    for connection in connections:
        connection.sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
