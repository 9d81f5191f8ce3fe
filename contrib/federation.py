"""Chat past one machine: the chat servers of one room share it over Redis.

``websocket_chat -w --redis redis://HOST:PORT/0 --room NAME``: every chat server
started with the same Redis and room serves one chat, whichever gateway (host)
its clients came through.  Without ``--redis`` this module is not even imported.

What crosses, and how
---------------------
* **Messages** (broadcasts and ``WSPrivate``) are published on the channel
  ``ouistiti-chat:ROOM`` as an envelope (below).  The sender's server has
  already delivered a broadcast to its own clients, so every server ignores
  its own publications: each client gets each message once.  A server
  publishes through one queue drained by one greenlet over one connection,
  and Redis hands one connection's publications to a subscriber in order, so
  a sender's messages arrive everywhere in the order sent.  A private message
  is published only when no local client has the name, and each server gives
  it to its clients of that name.
* **Names** (``WSHello``): the key ``ouistiti-chat:ROOM:name:NAME`` (NAME as
  the client's bytes) holds the holder's record, the JSON text
  ``{"server": ID, "client": N, "address": "1.2.3.4" | null}``.  A Lua script
  (:data:`CLAIM`) takes the key when it is free or refreshes it when the
  record is ours, atomically, so two servers never both get a name.  Keys
  expire after ``--name-ttl`` seconds (default 30) and a heartbeat refreshes
  the names of this server's clients three times per TTL: a crashed server's
  names are free again within the TTL.  A client that leaves or takes another
  name deletes its key (:data:`RELEASE`, compare-and-delete, so a key someone
  else took meanwhile stays).
* **Whois**: a name no local client holds is read from its key: the record
  carries the address as the holder's own server knows it (``null`` when
  unknown, answered ``network error`` as for a local client).

Envelope
--------
One JSON object (UTF-8) per publication::

    {"v": 1, "server": "HOST:PID:RANDOM", "kind": "say" | "private",
     "from": "bob" | null, "to": "alice", "data": "aGVsbG8="}

``server`` identifies the publishing process (ignored by itself); ``from`` is
the sender's name, if it said ``WSHello`` (for logs and future use); ``to``
only with ``private``; names are the client's bytes read as latin-1 (lossless
for any byte), ``data`` is the message in base64 (messages are any bytes).
An envelope of another version or an unknown kind is logged and ignored.

When Redis is away
------------------
The chat server keeps serving its local clients exactly as without
``--redis``: messages reach local clients only (they are not kept to be
published later: a chat line minutes late is worse than one lost), names are
unique on this server only, whois knows local clients only (others are
``undefined``).  Losing Redis is logged once (warning), getting it back once
(info); in between the subscriber reconnects with exponential backoff
(:data:`MIN_BACKOFF` doubling up to :data:`MAX_BACKOFF`).  Back, it
re-claims the names of its clients before it publishes anything (a name
another server gave meanwhile stays with both, and a warning says so); the
names of clients that left meanwhile expire with their TTL.  Only the
subscriber decides whether Redis is up: a failed publish or claim is just that
message or claim done locally, so two connections failing one after the other
cannot leave the state wrong.

Why a thread pool, not monkey-patching
--------------------------------------
redis-py does its I/O with the stdlib ``socket`` module, which would block the
whole gevent hub.  Patching ``socket`` and ``select`` alone is not enough:
redis-py holds real ``threading`` locks across socket I/O
(``PubSub.execute_command`` sends under an ``RLock``, the connection pool
disconnects under its lock), and a greenlet suspended inside that I/O would
leave the lock held, so a second greenlet taking it would block the hub for
good.  Patching ``threading`` too means a full ``patch_all()``, which must run
before anything imports ``threading`` -- too late once the options are parsed
-- and changes the rest of the server (and redis-py's own background threads
would become greenlets).  So every redis-py call runs in a small gevent
:class:`~gevent.threadpool.ThreadPool` (:meth:`Federation._call`): the calling
greenlet waits cooperatively, redis-py runs in real threads as it was written
for, and nothing else in the process changes.  The price is a thread hop per
call (tens of microseconds), negligible for a chat; publications are batched
into one pipeline per hop.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, Set, Tuple, TypeVar
from urllib.parse import urlsplit, urlunsplit

import gevent
import gevent.queue
import gevent.threadpool
import redis
from redis.backoff import NoBackoff
from redis.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from .threads import call_in_thread

log = logging.getLogger(__name__)

PREFIX = "ouistiti-chat"
VERSION = 1
SAY, PRIVATE = "say", "private"
KINDS = (SAY, PRIVATE)

DEFAULT_NAME_TTL = 30.0
#: Reconnection delays, seconds: doubled after each failure, reset once subscribed.
MIN_BACKOFF, MAX_BACKOFF = 0.1, 5.0
#: How long one subscriber read waits in its thread; bounds how long stop() waits for it.
POLL_SECONDS = 1.0
#: Timeouts of redis-py's sockets: a hung Redis delays a WSHello by this much at most.
SOCKET_TIMEOUT = 2.0
#: Publications queued at most while Redis is slow; past this they stay local.
MAX_BACKLOG = 10_000
#: Publications sent per pipeline (per thread hop).
BATCH = 256
#: Threads for redis-py calls: the subscriber holds one, the publisher one.
THREADS = 8
#: How long stop() gives the queue (names released on exit) to reach Redis.
FLUSH_SECONDS = 2.0

#: KEYS[1] name key; ARGV[1] our record, ARGV[2] TTL in ms.  1 when the name is
#: ours (taken now or refreshed), 0 when someone else holds it.
CLAIM = """
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if held then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

#: KEYS[1] name key; ARGV[1] our record.  Deletes the key only if it is still ours.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

#: Connection loss, as opposed to a command Redis refused.
LOST = (RedisConnectionError, RedisTimeoutError)

T = TypeVar("T")
#: Something to send in the next pipeline.
Job = Callable[[Pipeline], Any]
#: Queue items besides jobs: re-claim the names held now; drain and stop.
REFRESH, STOP = object(), object()


class Member(Protocol):
    """What the federation reads of a chat client."""

    name: Optional[bytes]
    serial: int
    address: Optional[str]


class Room(Protocol):
    """What the federation needs of the local chat room."""

    @property
    def clients(self) -> Sequence[Member]:
        """The local clients."""

    def relay(self, message: bytes) -> None:
        """Give *message* to every local client."""

    def tell(self, name: bytes, text: bytes) -> bool:
        """Give *text* to the local clients called *name*."""


@dataclass(frozen=True)
class Envelope:
    """One publication on the room's channel (format: see the module docstring)."""

    server: str
    kind: str
    sender: Optional[bytes]
    data: bytes
    to: Optional[bytes] = None

    def encode(self) -> bytes:
        """The JSON text published."""
        fields: Dict[str, Any] = {"v": VERSION, "server": self.server, "kind": self.kind,
                                  "from": _text(self.sender), "data": base64.b64encode(self.data).decode()}
        if self.to is not None:
            fields["to"] = _text(self.to)
        return json.dumps(fields, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> "Envelope":
        """Parse a publication; ValueError when it is not an envelope we know."""
        try:
            fields = json.loads(raw)
            if fields["v"] != VERSION or fields["kind"] not in KINDS:
                raise ValueError(f"version {fields['v']!r}, kind {fields['kind']!r}")
            to = _bytes(fields.get("to"))
            if fields["kind"] == PRIVATE and to is None:
                raise ValueError("private message without 'to'")
            return cls(str(fields["server"]), fields["kind"], _bytes(fields["from"]),
                       base64.b64decode(fields["data"], validate=True), to)
        except (KeyError, TypeError, AttributeError, UnicodeError, binascii.Error) as exc:
            raise ValueError(f"malformed envelope: {exc!r}") from None


def _text(name: Optional[bytes]) -> Optional[str]:
    return None if name is None else name.decode("latin-1")


def _bytes(name: Optional[str]) -> Optional[bytes]:
    return None if name is None else name.encode("latin-1")


def redacted(url: str) -> str:
    """*url* without its password, for the logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


class Federation:
    """This server's link to the other chat servers of the room, through Redis.

    The chat room calls :meth:`claim`, :meth:`release`, :meth:`say`,
    :meth:`private` and :meth:`whois` (from its clients' greenlets); three
    greenlets of its own subscribe (and reconnect), publish, and beat.
    """

    def __init__(self, url: str, room: str, name_ttl: float = DEFAULT_NAME_TTL) -> None:
        """Raises ValueError for a URL redis-py does not accept."""
        if name_ttl <= 0:
            raise ValueError("the name TTL must be positive")
        self.server_id = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"
        self.room_name = room
        self._where = redacted(url)
        self._redis = redis.Redis.from_url(
            url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT,
            # Our own reconnection policy decides; redis-py's retries would hide an outage.
            retry=Retry(NoBackoff(), 0), health_check_interval=max(1, int(name_ttl / 3)))
        self._channel = f"{PREFIX}:{room}".encode()
        self._ttl = name_ttl
        self._claim_script = self._redis.register_script(CLAIM)
        self._release_script = self._redis.register_script(RELEASE)
        self._pool = gevent.threadpool.ThreadPool(THREADS)
        self._outbox: gevent.queue.Queue = gevent.queue.Queue(MAX_BACKLOG)
        #: None until the first connection attempt ends; then whether subscribed.
        self._state: Optional[bool] = None
        self._overflowing = False
        self._conflicts: Set[bytes] = set()
        self._room: Optional[Room] = None
        self._greenlets: List[gevent.Greenlet] = []
        self._publisher: Optional[gevent.Greenlet] = None

    @property
    def up(self) -> bool:
        """Whether the room is federated right now."""
        return self._state is True

    # -- life cycle ---------------------------------------------------------

    def start(self, room: Room) -> None:
        """Federate *room*: connect (in the background) and keep connected."""
        self._room = room
        self._publisher = gevent.spawn(self._publish_loop)
        self._greenlets = [self._publisher, gevent.spawn(self._subscribe_loop),
                           gevent.spawn(self._heartbeat_loop)]

    def stop(self) -> None:
        """Send what is queued (the names of the clients just closed), then disconnect."""
        if self._publisher is not None:
            self._enqueue(STOP)
            self._publisher.join(FLUSH_SECONDS)
        gevent.killall(self._greenlets)
        self._pool.kill()
        self._redis.close()

    # -- what the chat room calls -------------------------------------------

    def claim(self, name: bytes, member: Member) -> bool:
        """Take *name* for *member* room-wide; False when another client holds it.

        True without Redis: then names are unique on this server only.
        """
        if not self.up:
            return True
        held = self._try(self._claim_script, [self._name_key(name)], [self._record(member), self._ttl_ms])
        return held is None or bool(held)

    def release(self, name: bytes, member: Member) -> None:
        """Free *name*, which *member* held (it left, or took another name)."""
        key, record = self._name_key(name), self._record(member)
        self._enqueue(lambda pipe: self._release_script(keys=[key], args=[record], client=pipe))

    def say(self, sender: Member, message: bytes) -> None:
        """Broadcast *message* to the clients of the other servers."""
        self._publish(Envelope(self.server_id, SAY, sender.name, message))

    def private(self, sender: Member, name: bytes, text: bytes) -> None:
        """Send *text* to the clients called *name* on the other servers."""
        self._publish(Envelope(self.server_id, PRIVATE, sender.name, text, to=name))

    def whois(self, name: bytes) -> Tuple[bool, Optional[str]]:
        """Whether a client of another server holds *name*, and its address if known."""
        raw = self._try(self._redis.get, self._name_key(name)) if self.up else None
        if raw is None:
            return False, None
        try:
            record = json.loads(raw)
            server, address = record["server"], record["address"]
        except (ValueError, TypeError, KeyError):
            log.warning("ignoring the malformed record of %r: %r", name, raw)
            return False, None
        if server == self.server_id:  # ours, but no local client has it: it just left
            return False, None
        return True, address

    # -- Redis calls --------------------------------------------------------

    def _call(self, function: Callable[..., T], *args: Any) -> T:
        """Run a blocking redis-py call in a pool thread while the other greenlets run."""
        return call_in_thread(function, *args, pool=self._pool)

    def _try(self, function: Callable[..., T], *args: Any) -> Optional[T]:
        """:meth:`_call`, None when it fails (the subscriber reports outages)."""
        try:
            return self._call(function, *args)
        except LOST as exc:
            log.debug("Redis call failed: %s", exc)
        except RedisError as exc:
            log.warning("Redis refused a command: %s", exc)
        return None

    def _name_key(self, name: bytes) -> bytes:
        return f"{PREFIX}:{self.room_name}:name:".encode() + name

    def _record(self, member: Member) -> str:
        """The value of a name key: who holds it, and where from (JSON, always the same text)."""
        return json.dumps({"server": self.server_id, "client": member.serial, "address": member.address})

    @property
    def _ttl_ms(self) -> int:
        return int(self._ttl * 1000)

    # -- publishing ---------------------------------------------------------

    def _publish(self, envelope: Envelope) -> None:
        if self.up:
            self._enqueue(lambda pipe: pipe.publish(self._channel, envelope.encode()))

    def _enqueue(self, item: object) -> None:
        try:
            self._outbox.put_nowait(item)
        except gevent.queue.Full:
            if not self._overflowing:
                log.warning("Redis does not keep up: %d publications queued, "
                            "further messages stay local", MAX_BACKLOG)
            self._overflowing = True

    def _publish_loop(self) -> None:
        """Send the queue in order, in batches; drop it while Redis is away."""
        while True:
            item = self._outbox.get()
            if item is STOP:
                return
            if item is REFRESH:
                self._refresh()
                continue
            batch: List[Job] = [item]  # type: ignore[list-item]
            while len(batch) < BATCH and not self._outbox.empty() \
                    and self._outbox.peek_nowait() not in (REFRESH, STOP):
                batch.append(self._outbox.get_nowait())
            if self._outbox.empty():
                self._overflowing = False
            if self.up:
                self._try(self._run_batch, batch)

    def _run_batch(self, batch: List[Job]) -> None:
        """In a pool thread: one pipeline for the whole batch."""
        pipe = self._redis.pipeline(transaction=False)
        for job in batch:
            job(pipe)
        pipe.execute()

    # -- names --------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        """Refresh our names before they expire (through the queue, to stay in
        order with the releases)."""
        while True:
            gevent.sleep(self._ttl / 3)
            if self.up:
                self._enqueue(REFRESH)

    def _refresh(self) -> None:
        """Claim again every name our clients hold; warn about names held twice."""
        assert self._room is not None
        held = [(client.name, self._record(client)) for client in self._room.clients if client.name is not None]
        results = self._try(self._claim_all, [(self._name_key(name), record) for name, record in held])
        if results is None:
            return
        for (name, _), ours in zip(held, results):
            if ours:
                self._conflicts.discard(name)
            elif name not in self._conflicts:
                self._conflicts.add(name)
                log.warning("name %r is also held on another server (given while Redis was away)", name)

    def _claim_all(self, keys_and_records: List[Tuple[bytes, str]]) -> List[int]:
        """In a pool thread: :data:`CLAIM` for each name, one pipeline."""
        pipe = self._redis.pipeline(transaction=False)
        for key, record in keys_and_records:
            self._claim_script(keys=[key], args=[record, self._ttl_ms], client=pipe)
        return pipe.execute()

    # -- subscribing --------------------------------------------------------

    def _subscribe_loop(self) -> None:
        """Stay subscribed to the room's channel, reconnecting with backoff."""
        delay = MIN_BACKOFF
        while True:
            pubsub = self._redis.pubsub()
            try:
                self._call(pubsub.subscribe, self._channel)
                while True:
                    message = self._call(pubsub.get_message, False, POLL_SECONDS)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        # Up, and our names first in the queue: claimed again
                        # before anything we publish, after any release queued.
                        self._gained()
                        self._enqueue(REFRESH)
                        delay = MIN_BACKOFF
                    elif message["type"] == "message":
                        self._receive(message["data"])
            except RedisError as exc:
                self._lost(exc)
            finally:
                try:
                    pubsub.close()
                except (RedisError, OSError):
                    pass
            gevent.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)

    def _gained(self) -> None:
        if self._state is not True:
            log.info("federating room %s through Redis at %s (server id %s)",
                     self.room_name, self._where, self.server_id)
        self._state = True

    def _lost(self, exc: Exception) -> None:
        if self._state is not False:
            log.warning("Redis at %s unreachable (%s): serving local clients only, reconnecting",
                        self._where, exc)
        self._state = False

    def _receive(self, raw: bytes) -> None:
        """Deliver another server's publication to our clients."""
        try:
            envelope = Envelope.decode(raw)
        except ValueError as exc:
            log.warning("ignoring a publication on %s: %s", self._channel.decode(errors="replace"), exc)
            return
        if envelope.server == self.server_id:
            return
        assert self._room is not None
        if envelope.kind == SAY:
            self._room.relay(envelope.data)
        elif envelope.to is not None:
            self._room.tell(envelope.to, envelope.data)
