"""A paused session as data: what an old process hands its successor on a reload.

A reload moves each live piped session to a process running the new code: the two sockets go
over SCM_RIGHTS (:mod:`ouistiti_gw.reload.migration`), everything the old process knew of the session
goes here, as JSON's types with a ``version`` (bytes in base64). The successor picks up where the old
process paused, byte for byte:

- the protocol core's own snapshot (:class:`~ouistiti_gw.core.protocol.ProtocolState`, from
  :meth:`Protocol.snapshot <ouistiti_gw.core.protocol.Protocol.snapshot>`): bytes read but not parsed
  yet, the frame whose payload is half read, the message in the middle of its fragments and its
  UTF-8 validator's pending bytes, the frame budget and the counters;
- the session (:class:`~ouistiti_gw.gateway.session.Session`): its name, client and start, the beginning
  of a client message not yet written to the server, the server's bytes held back because they
  end inside a UTF-8 character (:class:`~ouistiti_gw.core.utf8.Utf8Splitter`), the message-rate
  bucket, whether a PROXY header went out (it is never sent twice);
- what the session was admitted with (:class:`Admission`: the names, ``Origin`` and ``Host``),
  which the successor judges again by its own configuration;
- who the wrapped app's authorization let in, and the credentials it asked with (:class:`Login`),
  for the successor to judge the session by that user's rules and to go on rechecking it
  (:mod:`ouistiti_gw.gateway.recheck`).

Limits are not carried: the successor builds the session with its own (``max_message_size``,
the rates, ``ping_interval``, ``idle_timeout``...), which is how a reload applies a new
configuration to the sessions it moves.

Only a session whose closing handshake has not started moves (the core decides:
:meth:`Protocol.why_not_movable <ouistiti_gw.core.protocol.Protocol.why_not_movable>`); a closing one
ends where it is. A state of another :data:`VERSION` is refused
(:class:`StateError`), so a successor that cannot read it leaves the session where it was. A
field added within a version has a default (:attr:`SessionState.login`): a state from a process
that did not know it still restores, while a field this code does not know is refused.

Compression (permessage-deflate, :mod:`ouistiti_gw.core.deflate`): zlib's streams cannot be serialized, so a
compressed session moves only between messages both ways, with the negotiated parameters and no
zlib state: the compressor is dropped first (legal at a message boundary: the client's inflater
keeps working), and without client context takeover no inflater lives between messages. A
session that allowed the client's context takeover, or that is inside a compressed message when
it pauses, does not move (the core says why): it stays with the old process, as a wss://
one does.
"""
from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass
from typing import Any

from ..core.frames import Opcode
from ..core.protocol import ProtocolState
from ..errors import GatewayError

#: The format's version: a successor refuses any other (the session stays with the old process).
VERSION = 2
#: The longest ``Origin`` or ``Host`` an :class:`Admission` keeps, in characters: a DNS name has
#: at most 253, so no real one is longer; a longer value is kept as ``""`` (malformed).
MAX_ADMISSION_HEADER = 512
_OPCODES = frozenset(int(opcode) for opcode in Opcode)
#: The opcodes a data message may start with (a message in progress is one of them).
_MESSAGE_OPCODES = frozenset((int(Opcode.TEXT), int(Opcode.BINARY)))


class StateError(GatewayError):
    """A session state this code cannot take: another version, or malformed."""


@dataclass(frozen=True, slots=True)
class Admission:
    """What a session was let in with, for a successor to judge again by its configuration (a
    reload applies the new ``allow``/``deny``, ``origins`` and ``allowed_hosts`` to the sessions
    it moves). The values are the client's, as they came (never logged unescaped)."""

    #: The name asked for, the name of the socket found (another after the subprotocol
    #: fallback), and the name below docroot that socket's file was found at, links followed
    #: (allow/deny judge it too).
    requested: str
    target: str
    resolved: str
    #: The request's ``Origin`` (None: it had none) and ``Host``, at most
    #: :data:`MAX_ADMISSION_HEADER` characters (:func:`bounded`), and its URL scheme.
    origin: str | None
    host: str | None
    scheme: str


@dataclass(frozen=True, slots=True)
class Login:
    """What the wrapped app's authorization said of a session, in JSON's types: the user (None:
    an anonymous client the app let in), its groups and expiry, and the credentials of the
    upgrade request the decision read (its CGI variables and headers, strings only: the
    successor rebuilds the rest). Checked again on the way in, as the app's answer was
    (:meth:`~ouistiti_gw.gateway.authorization.Authorization.resumed`)."""

    user: str | None
    groups: tuple[str, ...]
    expires: int | None
    credentials: dict[str, str]


def bounded(value: str | None) -> str | None:
    """A header for an :class:`Admission`: ``""`` (malformed, refused by any check but ``*``)
    when longer than :data:`MAX_ADMISSION_HEADER`, so a session never keeps more."""
    return "" if value is not None and len(value) > MAX_ADMISSION_HEADER else value


@dataclass(frozen=True)
class SessionState:
    """One session, as the successor needs it (monotonic times: Linux's clock is one per machine)."""

    docroot: str
    name: str
    client: str
    started: float
    last_heard: float
    #: A client message's beginning not yet written to the server.
    held: bytes
    #: The server's bytes held back: the start of a UTF-8 character cut by a read.
    server_pending: bytes
    proxy_header_sent: bool
    message_tokens: float | None
    message_bucket_updated: float | None
    protocol: ProtocolState
    admission: Admission
    version: int = VERSION
    #: None: no authorization let the session in (or the old process did not carry it).
    login: Login | None = None


def as_fields(state: SessionState) -> dict[str, Any]:
    """``state`` in JSON's types (bytes as ``{"b64": ...}``), ``version`` included; without
    ``login`` when there is none, so that a successor that does not know the field (an older
    code) still takes the session."""
    fields = _plain(dataclasses.asdict(state))
    if fields["login"] is None:
        del fields["login"]
    return fields


def from_fields(fields: Any) -> SessionState:
    """The :class:`SessionState` of :func:`as_fields`' output; :class:`StateError` for anything else."""
    if not isinstance(fields, dict) or fields.get("version") != VERSION:
        version = fields.get("version") if isinstance(fields, dict) else None
        raise StateError(f"session state version {version} (this code reads version {VERSION})")
    try:
        protocol = _typed(ProtocolState, fields["protocol"])
        admission = _typed(Admission, fields["admission"])
        login = _typed(Login, fields["login"]) if fields.get("login") is not None else None
        state = _typed(SessionState, {**fields, "protocol": protocol, "admission": admission, "login": login})
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise StateError(f"malformed session state: {error}") from None
    _check_values(state.protocol)
    return state


def _check_values(state: ProtocolState) -> None:
    """Values a core can hold (a crafted state must not fail once its session is built)."""
    if state.frame is not None:
        _, opcode, length, mask = state.frame
        if opcode not in _OPCODES or length < 0 or len(mask) != 4:
            raise StateError(f"malformed session state: frame = {state.frame!r:.60}")
    if state.message_opcode is not None and state.message_opcode not in _MESSAGE_OPCODES:
        raise StateError(f"malformed session state: message_opcode = {state.message_opcode}")


def _plain(value: Any) -> Any:
    """JSON's types: bytes become ``{"b64": ...}`` wherever they are."""
    if isinstance(value, (bytes, bytearray)):
        return {"b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _unplain(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"], validate=True)
    if isinstance(value, list):
        return tuple(_unplain(item) for item in value)
    return value


#: What each annotation of the dataclasses accepts (ints are floats too, as JSON has them).
_KINDS: dict[str, tuple[type, ...]] = {"bytes": (bytes,), "int": (int,), "float": (int, float), "str": (str,),
                                       "bool": (bool,), "None": (type(None),), "ProtocolState": (ProtocolState,),
                                       "Admission": (Admission,), "Login": (Login,),
                                       "tuple[bool, int, int, bytes]": (tuple,), "tuple[bool, bool, int]": (tuple,),
                                       "tuple[str, ...]": (tuple,), "dict[str, str]": (dict,)}


def _typed(cls: type, fields: dict[str, Any]) -> Any:
    """``cls(**fields)`` with bytes restored, refusing unknown or missing fields and values of
    another type (a state is checked whole before a session is built from it)."""
    if not isinstance(fields, dict):
        raise StateError(f"malformed session state: {cls.__name__} is not an object")
    annotations = {field.name: str(field.type) for field in dataclasses.fields(cls)}
    if set(fields) - set(annotations):
        raise StateError(f"malformed session state: unknown fields {sorted(set(fields) - set(annotations))}")
    values = {key: _unplain(value) for key, value in fields.items()}
    for key, value in values.items():
        kinds = tuple(kind for name in annotations[key].split(" | ") for kind in _KINDS[name])
        if not isinstance(value, kinds) or (isinstance(value, (tuple, dict))
                                            and not _items_are(value, annotations[key])):
            shown = "an object (not shown: credentials)" if isinstance(value, dict) else f"{value!r:.40}"
            raise StateError(f"malformed session state: {key} = {shown}")
    return cls(**values)


def _items_are(value: tuple | dict, annotation: str) -> bool:
    """A tuple's items have the types ``annotation`` (``tuple[bool, int, int, bytes] | None``)
    lists, or all the one type of ``tuple[str, ...]``; a ``dict[str, str]`` holds strings only."""
    if isinstance(value, dict):
        return all(type(item) is str for pair in value.items() for item in pair)
    names = annotation.split(" | ")[0].removeprefix("tuple[").removesuffix("]").split(", ")
    if names[-1] == "...":
        return all(type(item).__name__ == names[0] for item in value)
    return [type(item).__name__ for item in value] == names
