"""websocket_chat: send what a client sends to every other connected client.

Socket type: SOCK_SEQPACKET.  The gateway turns one WebSocket message into one
packet and one packet into one WebSocket message on such sockets, so a chat
line arrives as the very message that was sent.  ouistiti's chat.c uses a
SOCK_STREAM socket, where several lines sent close together are read as one
chunk (or one line as two) and relayed merged or split.  An empty read means
the client left (SEQPACKET cannot tell an empty packet from EOF, so none is
ever sent).

Slow clients: every client has an outbox drained by its own writer greenlet.
A client whose outbox already holds :data:`MAX_PENDING_MESSAGES` messages or
:data:`MAX_PENDING_BYTES` bytes (so it stopped reading long enough to also fill
the kernel's socket buffer) is disconnected; nobody ever waits for it.

With ``-w`` a message may be a command, as in ouistiti's chat.c (a trailing
"\\n", "\\r\\n" or NUL is ignored when parsing one):

* ``WSHello NAME``: take NAME; if another client holds it, a 3-digit number is
  appended (``bob001``, ``bob002``...).  Answer ``WSWelcome NAME`` (the name
  now held) to the sender only.
* ``WSPrivate NAME TEXT``: send TEXT only to the client(s) called NAME.
* ``WSWhois NAME``: answer ``WSIs NAME ADDRESS``, ``WSIs NAME network error``
  when the client's address is unknown, or ``WSIs NAME undefined``.
* anything else is relayed to the others unchanged.

Usage: ``websocket_chat [-R DIR] [-n NAME] [-u USER] [-m N] [-D] [-w]``
"""
from __future__ import annotations

import collections
import errno
import logging
import socket
import sys
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import gevent
import gevent.event
import gevent.socket

from .server import (Connection, Handler, adopted, build_parser, enlarge_send_buffer, peer_address, program_name,
                     recv_packet, run, setup_logging)

log = logging.getLogger(__name__)

MAX_PENDING_MESSAGES = 1024
MAX_PENDING_BYTES = 1 << 20


class Client:
    """One connected client: its socket, chat name, address and outbox."""

    def __init__(self, conn: gevent.socket.socket) -> None:
        self.conn = conn
        self.name: Optional[bytes] = None
        #: The client's network address as text, when known (in direct mode).
        self.address: Optional[str] = None
        self.dropped = False
        self._outbox: collections.deque[bytes] = collections.deque()
        self._outbox_bytes = 0
        self._wake = gevent.event.Event()

    def attach(self, conn: Connection) -> None:
        """Serve through *conn* from now on: the browser's own socket in direct mode."""
        self.conn = conn
        self.address = peer_address(conn)

    def post(self, message: bytes) -> None:
        """Queue *message*; disconnect the client if it cannot keep up."""
        if self.dropped:
            return
        if self._outbox and (len(self._outbox) >= MAX_PENDING_MESSAGES
                             or self._outbox_bytes + len(message) > MAX_PENDING_BYTES):
            log.warning("client %s does not read: disconnecting it", self.label)
            self.drop()
            return
        self._outbox.append(message)
        self._outbox_bytes += len(message)
        self._wake.set()

    def drop(self) -> None:
        """Disconnect: the reader sees the end of the stream and cleans up."""
        self.dropped = True
        self._outbox.clear()
        try:
            self.conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def write_loop(self) -> None:
        """Send the outbox, one packet per message, as the client reads."""
        while not self.dropped:
            self._wake.wait()
            self._wake.clear()
            while self._outbox:
                message = self._outbox.popleft()
                self._outbox_bytes -= len(message)
                try:
                    self.conn.send(message)
                except OSError as exc:
                    if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                        self.drop()
                        return
                    log.warning("message of %d bytes too large for %s", len(message), self.label)

    @property
    def label(self) -> str:
        """How the logs name the client."""
        if self.name is not None:
            return self.name.decode("utf-8", "replace")
        return f"#{self.conn.fileno()}"


def first_word(text: bytes) -> bytes:
    """The text up to the first space."""
    return text.split(b" ", 1)[0]


class ChatRoom:
    """The connected clients and what happens to their messages."""

    def __init__(self, commands: bool) -> None:
        self.commands = commands
        self.clients: List[Client] = []
        self._verbs: Dict[bytes, Callable[[Client, bytes], None]] = {
            b"WSHello": self.hello,
            b"WSPrivate": self.private,
            b"WSWhois": self.whois,
        }

    def handle(self, conn: gevent.socket.socket) -> None:
        """Serve one client until it leaves (a :data:`Handler`).

        The client joins the room at once: what others say meanwhile queues in
        its outbox while :func:`adopted` tells a direct client from a piped one.
        """
        client = Client(conn)
        self.clients.append(client)
        writer = None
        try:
            with adopted(conn) as conn:
                client.attach(conn)
                enlarge_send_buffer(conn)
                writer = gevent.spawn(client.write_loop)
                while True:
                    message = recv_packet(conn)
                    if not message:
                        return
                    self.receive(client, message)
        finally:
            self.clients.remove(client)
            if writer is not None:
                writer.kill()

    def receive(self, sender: Client, message: bytes) -> None:
        """Run a command (with ``-w``) or relay *message* to the others."""
        if self.commands:
            verb, space, argument = message.rstrip(b"\r\n\0").partition(b" ")
            command = self._verbs.get(verb)
            if command is not None and space:
                command(sender, argument)
                return
        for client in list(self.clients):
            if client is not sender:
                client.post(message)

    def named(self, name: bytes) -> Iterator[Client]:
        """The clients currently called *name*."""
        return (client for client in self.clients if client.name == name)

    def hello(self, sender: Client, argument: bytes) -> None:
        """``WSHello NAME``: take a unique name, answer ``WSWelcome NAME``."""
        wanted = first_word(argument)
        if not wanted:
            return
        taken = {client.name for client in self.clients if client is not sender}
        name, number = wanted, 0
        while name in taken:
            number += 1
            name = b"%s%03d" % (wanted, number)
        sender.name = name
        sender.post(b"WSWelcome " + name)

    def private(self, sender: Client, argument: bytes) -> None:
        """``WSPrivate NAME TEXT``: send TEXT to the clients called NAME."""
        name, space, text = argument.partition(b" ")
        if not space or not text:
            return
        for client in self.named(name):
            client.post(text)

    def whois(self, sender: Client, argument: bytes) -> None:
        """``WSWhois NAME``: answer with the address of the client NAME."""
        name = first_word(argument)
        if not name:
            return
        client = next(self.named(name), None)
        if client is None:
            where = b"undefined"
        elif client.address is None:
            where = b"network error"
        else:
            where = client.address.encode()
        sender.post(b"WSIs %s %s" % (name, where))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse the options and serve until SIGTERM or SIGINT."""
    prog = program_name("websocket_chat")
    parser = build_parser(prog, "Chat server for the ouistiti WebSocket gateway.")
    parser.add_argument("-w", dest="commands", action="store_true",
                        help="interpret ouistiti's chat commands (WSHello, WSPrivate, WSWhois)")
    args = parser.parse_args(argv)
    setup_logging(prog)

    def start() -> Handler:
        return ChatRoom(args.commands).handle

    return run(args, socket.SOCK_SEQPACKET, start)


if __name__ == "__main__":
    sys.exit(main())
