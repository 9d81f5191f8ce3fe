"""The data between the two sockets, by ouistiti's rules (plus what it gets wrong): what the
session's pumps run.

Client -> server: the payload of every message, text or binary alike, is written to the socket,
by the feed the client pump hands each piece to (:class:`ServerFeed`), one kind for each kind of
socket.

- On a stream socket (:class:`StreamFeed`), a message over :data:`STREAM_HOLD_SIZE` is written as
  it arrives (never held whole; one cut short by bad UTF-8 or a lost client has had its valid
  beginning written), smaller ones whole or not at all -- except a compressed one that is still
  coming: what it inflated to so far goes out before the client is read again, as it would cost
  the gateway far more than the client sent (and an unfinished message is kept compressed until
  16 KiB of it came: see :mod:`ouistiti_gw.core.deflate`). The whole messages one read of the
  client brought are gathered and written once every frame of that read is delivered: one
  system call for them all (what that saves: ``benchmarks/PROFILE.md``).
- On a ``SOCK_SEQPACKET`` socket (:class:`PacketFeed`) one message is one packet, so a message
  longer than the largest packet the socket can send
  (:func:`~ouistiti_gw.green.unix.largest_packet`) is refused with 1009 as soon as a frame header
  announces it, before its payload is read; a compressed message is kept as it came until its
  last frame, and only then inflated.

Server -> client (:func:`stream_to_client`, :func:`packets_to_client`): each read becomes one
message, text when it is valid UTF-8, binary otherwise. On a stream socket a character split
across two reads is held back until its end arrives (or for :data:`UTF8_HOLD_SECONDS` at most,
then sent as binary, so nothing waits forever).

Both stop before a read, raising :class:`~ouistiti_gw.green.sockio.ReadPaused`, once the
WebSocket is :attr:`~ouistiti_gw.green.websocket.WebSocket.pausing` (a reload).
"""
from __future__ import annotations

import logging
import socket as stdlib_socket
import typing

from gevent import socket

from ..core.protocol import Protocol
from ..core.utf8 import Utf8Splitter, is_utf8
from ..errors import GatewayError
from ..green.sockio import ReadPaused, Receiver, send_all, yield_to_loop
from ..green.unix import largest_packet, recv_packet
from ..green.websocket import WebSocket

log = logging.getLogger(__name__)

#: A client message up to this size reaches a stream socket whole or not at all; a bigger one is
#: written as it arrives, so the gateway never holds it whole and the server can start at once.
STREAM_HOLD_SIZE = 64 * 1024
#: Read size on stream sockets: one WebSocket message per read, at most this big.
STREAM_READ_SIZE = 64 * 1024
#: How long an incomplete UTF-8 sequence at the end of a read may wait for its continuation.
UTF8_HOLD_SECONDS = 0.25
#: Packets relayed from a SOCK_SEQPACKET server before the event loop serves the other connections.
PACKETS_PER_TURN = 64


class BackendWriteFailed(GatewayError):
    """Writing to the UNIX server failed; carries the OSError out of the WebSocket's reader,
    which would take a plain OSError for the client's connection ending."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class ServerFeed(typing.Protocol):
    """Where the client pump puts the client's messages, by the rules of the module's docstring
    (:func:`server_feed` picks the kind).

    :meth:`forward` and :meth:`before_read` are
    :meth:`~ouistiti_gw.green.websocket.WebSocket.receive_streaming`'s callbacks. The pump takes
    them once, as locals, and the feed does not keep them: an object holding its own bound
    methods is a reference cycle, which would keep the session's buffers and sockets after it
    ended, until the garbage collector's next full run (2 000 closed sessions kept ~14 MiB).
    Writes that fail raise :class:`BackendWriteFailed`.
    """

    #: A message's beginning, until it is whole (or big, on a stream): what a paused session
    #: carries to its successor. One growing buffer, so a message in a million 1-byte fragments
    #: costs a byte per byte, not an object each.
    held: bytearray

    def start(self) -> None:
        """Set what the protocol core must know of this socket, before the pump reads."""

    def forward(self, piece: bytes, is_text: bool, final: bool) -> None:
        """Take the next piece of a message (``final``: its last)."""

    def before_read(self) -> None:
        """Every frame read so far is delivered: write what must not wait for the next read."""

    def flush(self) -> None:
        """Write every whole message gathered (the pump stops reading)."""


def server_feed(backend: socket.socket, seqpacket: bool, protocol: Protocol) -> ServerFeed:
    """The feed for ``backend``, the UNIX server's socket (``protocol``: the client's core)."""
    return PacketFeed(backend, protocol) if seqpacket else StreamFeed(backend, protocol)


class StreamFeed:
    """A :class:`ServerFeed` for a stream socket: whole messages gathered and written together
    before the next read, a big piece written as it came, never copied."""

    __slots__ = ("backend", "held", "_protocol", "_ready")

    def __init__(self, backend: socket.socket, protocol: Protocol) -> None:
        self.backend = backend
        self.held = bytearray()
        self._protocol = protocol
        self._ready = bytearray()

    def start(self) -> None:
        pass  # a stream takes a message of any size

    def _write(self, data: bytes | bytearray) -> None:
        try:
            send_all(self.backend, data)
        except OSError as error:
            raise BackendWriteFailed(error) from None

    def flush(self) -> None:
        if self._ready:
            self._write(self._ready)
            self._ready.clear()

    def before_read(self) -> None:
        ready = self._ready
        if ready:  # flush(), without its call: once a message
            self._write(ready)
            ready.clear()
        if self.held and self._protocol.mid_compressed_message:
            self._write(self.held)  # the client sent a fraction of it: not held while it sends on
            self.held.clear()

    def forward(self, piece: bytes, is_text: bool, final: bool) -> None:
        held = self.held
        data: bytes | bytearray = piece
        if held or not (final or len(piece) >= STREAM_HOLD_SIZE):
            held.extend(piece)
            if not final and len(held) < STREAM_HOLD_SIZE:
                return
            data = held
        if len(data) >= STREAM_HOLD_SIZE:
            self.flush()
            self._write(data)
        else:
            self._ready.extend(data)
            if len(self._ready) >= STREAM_HOLD_SIZE:
                self.flush()
        held.clear()


class PacketFeed:
    """A :class:`ServerFeed` for a ``SOCK_SEQPACKET`` socket: one message, one packet."""

    __slots__ = ("backend", "held", "_protocol")

    def __init__(self, backend: socket.socket, protocol: Protocol) -> None:
        self.backend = backend
        self.held = bytearray()
        self._protocol = protocol

    def start(self) -> None:
        # A message that cannot be one packet is refused (1009) as soon as its length says so,
        # not after the gateway has held all of it.
        self._protocol.limit_message_size(largest_packet(self.backend), "message too big for the server's socket")
        if self._protocol.deflate is not None:  # held whole anyway: then kept as the client sent it
            self._protocol.deflate.gather_whole_messages()

    def flush(self) -> None:
        pass  # nothing is gathered: each message went out as its packet

    before_read = flush

    def forward(self, piece: bytes, is_text: bool, final: bool) -> None:
        held = self.held
        data: bytes | bytearray = piece
        if held or not final:
            held.extend(piece)
            if not final:
                return
            data = held
        if data:
            try:
                self.backend.send(data)  # one message, one packet
            except OSError as error:
                raise BackendWriteFailed(error) from None
        else:
            log.debug("empty message not forwarded: a zero-length packet reads as EOF")
        held.clear()


def stream_to_client(websocket: WebSocket, backend: socket.socket, splitter: Utf8Splitter) -> None:
    """Relay the stream socket ``backend`` to the client until it ends (``splitter`` holds back a
    character cut by a read)."""
    receiver = Receiver(backend)
    send = websocket.keepalive.sender(websocket)
    holding = False
    while True:
        if holding != bool(splitter.pending):  # only when it changes, not once per read
            holding = not holding
            backend.settimeout(UTF8_HOLD_SECONDS if holding else None)
        if websocket.pausing:
            raise ReadPaused()
        try:
            data = receiver.recv(STREAM_READ_SIZE)
        except stdlib_socket.timeout:
            send(splitter.flush(), text=False)
            continue
        if not data:
            if splitter.pending:
                send(splitter.flush(), text=False)
            return
        payload, is_text = splitter.feed(data)
        if payload:
            send(payload, text=is_text)


def packets_to_client(websocket: WebSocket, backend: socket.socket) -> None:
    """Relay the ``SOCK_SEQPACKET`` socket ``backend`` to the client until it ends."""
    send = websocket.keepalive.sender(websocket)
    left = PACKETS_PER_TURN
    while True:
        if websocket.pausing:
            raise ReadPaused()
        data = recv_packet(backend)
        if not data:
            return
        send(data, text=is_utf8(data))
        left -= 1
        if not left:  # gevent reads a socket that has data without waiting: take turns
            left = PACKETS_PER_TURN
            yield_to_loop()
