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
  now held) to the sender only.  A name must follow the rules of
  :mod:`.chatname` (1-32 letters, digits, ``_ - .``, not ending with 3
  digits, letters of one script); any other is answered ``WSError WSHello REASON`` and the client
  keeps the name it had.
* ``WSPrivate NAME TEXT``: send TEXT only to the client(s) called NAME.
* ``WSWhois NAME``: answer ``WSIs NAME ADDRESS``, ``WSIs NAME network error``
  when the client's address is unknown, or ``WSIs NAME undefined``; when the
  client NAME logged in (below), ``WSIs NAME ADDRESS USER``.
* anything else is relayed to the others unchanged.

Logged-in users: behind a gateway with ``auth_request`` or ``authorize`` and
``proxy_protocol = v2``, a server started with ``-P`` learns each client's user
(:func:`.server.peer_user`). With ``-w`` such a client is named after its user
as it joins (``WSWelcome NAME``, numbered as any duplicate: the same user in two
tabs is ``alice`` and ``alice001``) without a ``WSHello``; a ``WSHello`` for
that same name is answered ``WSWelcome``, one for any other name
``WSError WSHello ...``: a logged-in user cannot pass for another. A user name
the rules below refuse leaves the client unnamed (``WSError WSHello REASON``).
Across servers (``--redis``), ``WSIs`` carries no user.

With ``--redis URL`` the room spans every chat server started with the same
Redis and ``--room`` (see :mod:`.federation`): broadcasts, private messages,
names and whois cross servers.  The room only talks to its :class:`Peers`, so
without ``--redis`` (:class:`Alone`) nothing else changes, and redis-py is not
imported.

Usage: ``websocket_chat [-R DIR] [-n NAME] [-u USER] [-m N] [-D] [-w]
[--redis URL [--room NAME] [--name-ttl SECONDS]]``
"""
from __future__ import annotations

import argparse
import collections
import errno
import itertools
import logging
import socket
import sys
from typing import TYPE_CHECKING, Callable, Dict, Iterator, List, Optional, Protocol, Sequence, Tuple

import gevent
import gevent.event
import gevent.socket

from .chatname import NameRefused, as_compared, check_name, numbered
from .server import (
    Connection,
    Handler,
    StartupError,
    adopted,
    build_parser,
    enlarge_send_buffer,
    peer_address,
    peer_user,
    program_name,
    recv_packet,
    run,
    setup_logging,
)

if TYPE_CHECKING:
    from .federation import Federation

log = logging.getLogger(__name__)

MAX_PENDING_MESSAGES = 1024
MAX_PENDING_BYTES = 1 << 20

#: Client numbers, unique in this process: a name's owner across servers is (server, number).
_serials = itertools.count(1)


class Client:
    """One connected client: its socket, chat name, address and outbox."""

    def __init__(self, conn: gevent.socket.socket) -> None:
        self.conn = conn
        self.serial = next(_serials)
        self.name: Optional[bytes] = None
        #: The client's network address as text, when known (in direct mode, or with -P).
        self.address: Optional[str] = None
        #: The user the gateway's authorization let in (with -P), whose name the client takes.
        self.user: Optional[str] = None
        self.dropped = False
        self._outbox: collections.deque[bytes] = collections.deque()
        self._outbox_bytes = 0
        self._wake = gevent.event.Event()

    def attach(self, conn: Connection) -> None:
        """Serve through *conn* from now on: the browser's own socket in direct mode."""
        self.conn = conn
        self.address = peer_address(conn)
        self.user = peer_user(conn)

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


class Peers(Protocol):
    """The chat servers sharing this room (:class:`.federation.Federation`)."""

    def claim(self, name: bytes, client: Client) -> bool:
        """Take *name* for *client* on every server; False when another holds it."""

    def release(self, name: bytes, client: Client) -> None:
        """Free *name*, held by *client* until now."""

    def say(self, sender: Client, message: bytes) -> None:
        """Relay a broadcast to the other servers' clients."""

    def private(self, sender: Client, name: bytes, text: bytes) -> None:
        """Send *text* to the clients called *name* on the other servers."""

    def whois(self, name: bytes) -> Tuple[bool, Optional[str]]:
        """Whether another server's client holds *name*, and its address if known."""


class Alone:
    """No other server: the room is this server's clients (no ``--redis``)."""

    def claim(self, name: bytes, client: Client) -> bool:
        return True

    def release(self, name: bytes, client: Client) -> None:
        pass

    def say(self, sender: Client, message: bytes) -> None:
        pass

    def private(self, sender: Client, name: bytes, text: bytes) -> None:
        pass

    def whois(self, name: bytes) -> Tuple[bool, Optional[str]]:
        return False, None


class ChatRoom:
    """The connected clients and what happens to their messages."""

    def __init__(self, commands: bool, peers: Optional[Peers] = None, expect_proxy_header: bool = False) -> None:
        self.commands = commands
        #: ``-P``: a piped connection starts with a PROXY header.
        self.expect_proxy_header = expect_proxy_header
        self.peers: Peers = peers or Alone()
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
            with adopted(conn, self.expect_proxy_header) as conn:
                client.attach(conn)
                enlarge_send_buffer(conn)
                writer = gevent.spawn(client.write_loop)
                if self.commands and client.user is not None:
                    self.hello(client, client.user.encode("utf-8"))
                while True:
                    message = recv_packet(conn)
                    if not message:
                        return
                    self.receive(client, message)
        finally:
            self.clients.remove(client)
            if client.name is not None:
                self.peers.release(client.name, client)
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
        self.relay(message, sender)
        self.peers.say(sender, message)

    def relay(self, message: bytes, sender: Optional[Client] = None) -> None:
        """Give *message* to every local client but its *sender*."""
        for client in list(self.clients):
            if client is not sender:
                client.post(message)

    def tell(self, name: bytes, text: bytes) -> bool:
        """Give *text* to the local clients called *name*; whether there was one."""
        told = False
        for client in list(self.named(name)):
            client.post(text)
            told = True
        return told

    def named(self, name: bytes) -> Iterator[Client]:
        """The clients currently called *name*."""
        return (client for client in self.clients if client.name == name)

    def hello(self, sender: Client, argument: bytes) -> None:
        """``WSHello NAME``: take a unique name, answer ``WSWelcome NAME``,
        or ``WSError WSHello REASON`` for a name the rules refuse, or (a logged-in
        client) for another name than its user's."""
        try:
            wanted = check_name(first_word(argument))
            if sender.user is not None and wanted != check_name(sender.user.encode("utf-8")):
                raise NameRefused("a logged-in client's name is its user's")
        except NameRefused as refused:
            log.info("client %s: WSHello refused: %s", sender.label, refused)
            sender.post(b"WSError WSHello " + str(refused).encode())
            return
        if sender.name is not None and sender.user is not None:
            sender.post(b"WSWelcome " + sender.name)  # the name it holds already
            return
        taken = {client.name for client in self.clients if client is not sender}
        name, number = wanted, 0
        while name in taken or not self.peers.claim(name, sender):
            number += 1
            name = numbered(wanted, number)
        if sender.name is not None and sender.name != name:
            self.peers.release(sender.name, sender)
        sender.name = name
        sender.post(b"WSWelcome " + name)

    def private(self, sender: Client, argument: bytes) -> None:
        """``WSPrivate NAME TEXT``: send TEXT to the clients called NAME."""
        name, space, text = argument.partition(b" ")
        if not space or not text:
            return
        name = as_compared(name)
        if not self.tell(name, text):
            self.peers.private(sender, name, text)

    def whois(self, sender: Client, argument: bytes) -> None:
        """``WSWhois NAME``: answer with the address of the client NAME."""
        name = as_compared(first_word(argument))
        if not name:
            return
        client = next(self.named(name), None)
        held, address = (True, client.address) if client is not None else self.peers.whois(name)
        if not held:
            where = b"undefined"
        elif address is None:
            where = b"network error"
        else:
            where = address.encode()
        if client is not None and client.user is not None:
            where += b" " + client.user.encode("utf-8")
        sender.post(b"WSIs %s %s" % (name, where))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse the options and serve until SIGTERM or SIGINT."""
    prog = program_name("websocket_chat")
    parser = build_parser(prog, "Chat server for the ouistiti WebSocket gateway.")
    parser.add_argument("-w", dest="commands", action="store_true",
                        help="interpret ouistiti's chat commands (WSHello, WSPrivate, WSWhois)")
    group = parser.add_argument_group("federation", "one room across chat servers, through Redis")
    group.add_argument("--redis", metavar="URL",
                            help="share the room through this Redis (redis://HOST:PORT/DB, unix://PATH)")
    group.add_argument("--room", metavar="NAME",
                            help="the room's name in Redis (default: the socket name, -n)")
    group.add_argument("--name-ttl", metavar="SECONDS", type=float, default=30.0,
                            help="a crashed server's names are free after this long (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.redis is None and args.room is not None:
        parser.error("--room needs --redis")
    setup_logging(prog)
    stops: List[Callable[[], None]] = []

    def start() -> Handler:
        room = ChatRoom(args.commands, expect_proxy_header=args.proxy_header)
        if args.redis is not None:
            federation = federate(args, room)
            room.peers = federation
            stops.append(federation.stop)
        return room.handle

    def release() -> None:
        for stop in stops:
            stop()

    return run(args, socket.SOCK_SEQPACKET, start, release=release)


def federate(args: argparse.Namespace, room: ChatRoom) -> "Federation":
    """Start sharing *room* through Redis (imported only here: without
    ``--redis``, redis-py need not even be installed)."""
    try:
        from .federation import Federation
    except ImportError as exc:
        raise StartupError(f"--redis needs the redis package (pip install redis): {exc}") from None
    try:
        federation = Federation(args.redis, args.room or args.name, args.name_ttl)
    except ValueError as exc:
        raise StartupError(f"--redis: {exc}") from None
    federation.start(room)
    return federation


if __name__ == "__main__":
    sys.exit(main())
