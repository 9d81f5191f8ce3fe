"""JSON-RPC 2.0 for websocket_jsonrpc, and the interface of its RPC libraries.

This module knows nothing of sockets: :class:`Dispatcher` turns one JSON text
into the reply text (https://www.jsonrpc.org/specification: requests,
notifications, batches and the standard errors), and :func:`load_library`
loads the library given with ``-L``.  It lives apart from the server module so
a library imports the very :class:`RPCError` class the server catches, even
when the server runs as ``python -m ouistiti_gw_contrib.jsonrpc``.

RPC library interface
---------------------

A library is a Python module, given to ``-L`` as a file path
(``-L ./contrib/authrpc.py``) or as a dotted module name
(``-L ouistiti_gw_contrib.authrpc``).  It is imported before the server
switches user (``-u``).  It defines:

``METHODS``
    Required.  A dict mapping each method name to a function.  The function
    is called as ``function(session, *params)`` when the request's params are
    an array, ``function(session, **params)`` when they are an object and
    ``function(session)`` when there are none: its signature says what it
    accepts, and params that do not fit it are answered with -32602 Invalid
    params without calling it.  What it returns (anything ``json.dumps``
    accepts) is the result.  Names starting with ``rpc.`` are reserved by
    the specification and refused.

``init(config)``
    Optional.  Called once, after the server switched to its final user and
    before it accepts any client, with the ``-C`` string (None without
    ``-C``).  What it returns is the library's context, ``session.ctx``.  An
    exception stops the server at start (exit 1, with the exception's text).

``release(ctx)``
    Optional.  Called once when the server stops.

``session``
    One :class:`Session` per connection, created when the client connects and
    dropped when it leaves: ``session.ctx`` is what ``init`` returned (shared
    by all connections), ``session.data`` a dict the library is free to use
    for what one connection has established (e.g. who authenticated on it),
    ``session.peer`` the client's IP address when the gateway gave it
    (direct mode, or a PROXY header with ``-P``), else None; ``session.user``
    the user the gateway's authorization let in (``auth_request`` or
    ``authorize``, told in a PROXY v2 header with ``-P``), else None: the web
    app's login, which a library may take as its own (authrpc does).

Errors
    ``raise RPCError(code, message, data=None)`` (``from
    ouistiti_gw_contrib.rpc import RPCError``) answers an error object with
    that code, message and data.  Codes from -32768 to -32000 are reserved by
    the specification (-32602 Invalid params is fine for a parameter the
    method itself finds wrong); choose others for the library's own errors.
    Any other exception answers -32603 Internal error; it is logged with its
    traceback and its text is not sent to the client.

Methods of one connection run one after the other (a batch too), in the
server's gevent loop: a method that blocks (computation, disk) holds every
client while it runs, one that waits on gevent-aware I/O does not.  Hand
CPU-heavy work that releases the GIL (``hashlib.scrypt``, zlib) to
``call_in_thread(function, *args)`` (``from ouistiti_gw_contrib.rpc import
call_in_thread``): it runs in gevent's thread pool while the other clients
are served.

Batches hold at most :data:`MAX_BATCH` requests: a longer one is answered
with one error object, -32600 with the message ``Invalid Request: batch too
large`` and data ``"N requests, at most 100"``, and none of it runs.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional

from .threads import call_in_thread  # noqa: F401 -- part of the library interface

log = logging.getLogger(__name__)

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

#: The most requests one batch may hold (each may cost a method call: a
#: bound on the work one message can ask for).
MAX_BATCH = 100

MESSAGES = {
    PARSE_ERROR: "Parse error",
    INVALID_REQUEST: "Invalid Request",
    METHOD_NOT_FOUND: "Method not found",
    INVALID_PARAMS: "Invalid params",
    INTERNAL_ERROR: "Internal error",
}


class RPCError(Exception):
    """Raised by a method to answer a JSON-RPC error object."""

    def __init__(self, code: int, message: Optional[str] = None, data: Any = None) -> None:
        self.code = code
        self.message = message if message is not None else MESSAGES.get(code, "Server error")
        self.data = data
        super().__init__(self.message)

    def to_json(self) -> Dict[str, Any]:
        """The ``error`` member of a response."""
        error: Dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


class LibraryError(Exception):
    """The RPC library cannot be loaded or initialised."""


@dataclass
class Session:
    """What one connection carries from one request to the next."""

    ctx: Any = None
    data: Dict[str, Any] = field(default_factory=dict)
    peer: Optional[str] = None
    user: Optional[str] = None


def error_response(request_id: Any, error: RPCError) -> Dict[str, Any]:
    """A response object carrying *error*."""
    return {"jsonrpc": "2.0", "error": error.to_json(), "id": request_id}


def is_valid_id(value: Any) -> bool:
    """An id is a string, a number or null (a JSON boolean is not a number)."""
    return value is None or isinstance(value, (str, int, float)) and not isinstance(value, bool)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


class Dispatcher:
    """Answers JSON-RPC texts by calling a library's methods."""

    def __init__(self, methods: Mapping[str, Callable[..., Any]], ctx: Any = None) -> None:
        self.methods = dict(methods)
        self.signatures = {name: inspect.signature(function) for name, function in self.methods.items()}
        self.ctx = ctx

    def new_session(self) -> Session:
        """The state of a new connection."""
        return Session(ctx=self.ctx)

    def handle(self, text: bytes, session: Session, limit: int) -> Optional[bytes]:
        """The reply to one message, a whole JSON text (a request or a batch),
        or None when there is nothing to answer.  A reply longer than *limit*
        bytes is replaced by -32603 errors that say so."""
        try:
            message = json.loads(text.decode("utf-8"), parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            return self.encode(error_response(None, RPCError(PARSE_ERROR)))
        if not isinstance(message, list):
            response = self.call(message, session)
            return None if response is None else self.encode_within([response], limit, batch=False)
        if not message:
            return self.encode(error_response(None, RPCError(INVALID_REQUEST)))
        if len(message) > MAX_BATCH:
            log.warning("refusing a batch of %d requests (at most %d)", len(message), MAX_BATCH)
            error = RPCError(INVALID_REQUEST, "Invalid Request: batch too large",
                             data=f"{len(message)} requests, at most {MAX_BATCH}")
            return self.encode(error_response(None, error))
        responses = [response for response in (self.call(item, session) for item in message)
                     if response is not None]
        return self.encode_within(responses, limit, batch=True) if responses else None

    def call(self, request: Any, session: Session) -> Optional[Dict[str, Any]]:
        """The response object to one request; None for a notification."""
        if not isinstance(request, dict):
            return error_response(None, RPCError(INVALID_REQUEST))
        request_id = request.get("id")
        has_id = "id" in request
        method = request.get("method")
        params = request.get("params", [])
        if (request.get("jsonrpc") != "2.0" or not isinstance(method, str)
                or not isinstance(params, (list, dict)) or not is_valid_id(request_id)):
            reply_id = request_id if is_valid_id(request_id) else None
            return error_response(reply_id, RPCError(INVALID_REQUEST))
        try:
            response = {"jsonrpc": "2.0", "result": self.invoke(method, params, session), "id": request_id}
        except RPCError as error:
            response = error_response(request_id, error)
        return response if has_id else None

    def invoke(self, method: str, params: Any, session: Session) -> Any:
        """Call *method* with *params*, turning failures into :class:`RPCError`."""
        function = self.methods.get(method)
        if function is None:
            raise RPCError(METHOD_NOT_FOUND)
        args, kwargs = ((), params) if isinstance(params, dict) else (params, {})
        try:
            self.signatures[method].bind(session, *args, **kwargs)
        except TypeError as exc:
            raise RPCError(INVALID_PARAMS, data=str(exc)) from None
        try:
            return function(session, *args, **kwargs)
        except RPCError:
            raise
        except Exception:
            log.exception("method %s failed", method)
            raise RPCError(INTERNAL_ERROR) from None

    def encode(self, response: Dict[str, Any]) -> bytes:
        """One response as compact ASCII JSON (so no NUL and no broken UTF-8)."""
        try:
            return json.dumps(response, separators=(",", ":"), allow_nan=False).encode("ascii")
        except (TypeError, ValueError, RecursionError) as exc:
            log.error("result of request %r is not JSON: %s", response.get("id"), exc)
            error = RPCError(INTERNAL_ERROR, data="the result is not JSON-serializable")
            return self.encode(error_response(response.get("id"), error))

    def encode_within(self, responses: List[Dict[str, Any]], limit: int, batch: bool) -> bytes:
        """Encode *responses* (a batch or a single one) in at most *limit* bytes."""
        reply = self.join([self.encode(response) for response in responses], batch)
        if len(reply) <= limit:
            return reply
        log.warning("reply of %d bytes exceeds the %d-byte packet limit", len(reply), limit)
        error = RPCError(INTERNAL_ERROR, data=f"reply too large: {len(reply)} bytes, "
                                              f"at most {limit} fit in one packet")
        reply = self.join([self.encode(error_response(response.get("id"), error))
                           for response in responses], batch)
        if len(reply) <= limit:
            return reply
        return self.encode(error_response(None, error))

    @staticmethod
    def join(parts: List[bytes], batch: bool) -> bytes:
        """A batch reply is an array; a single reply is the object alone."""
        return b"[" + b",".join(parts) + b"]" if batch else parts[0]


# --------------------------------------------------------------------------
# Libraries
# --------------------------------------------------------------------------

@dataclass
class Library:
    """A loaded RPC library."""

    name: str
    methods: Dict[str, Callable[..., Any]]
    init: Callable[[Optional[str]], Any]
    release: Callable[[Any], None]


def import_library(spec: str) -> Any:
    """Import a module given by file path (with a '/' or ending in .py) or by
    dotted name."""
    if "/" not in spec and not spec.endswith(".py"):
        return importlib.import_module(spec)
    path = os.path.abspath(spec)
    if not os.path.isfile(path):
        raise LibraryError(f"{spec}: no such file")
    name = "ouistiti_rpc_library_" + os.path.splitext(os.path.basename(path))[0]
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise LibraryError(f"{spec}: not a Python module")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_library(spec: str) -> Library:
    """Import and check the library *spec*; :class:`LibraryError` says why not."""
    try:
        module = import_library(spec)
    except LibraryError:
        raise
    except Exception as exc:
        raise LibraryError(f"cannot load {spec}: {type(exc).__name__}: {exc}") from exc
    methods = getattr(module, "METHODS", None)
    if not isinstance(methods, Mapping) or not methods:
        raise LibraryError(f"{spec} defines no METHODS dict")
    for name, function in methods.items():
        if not isinstance(name, str) or name.startswith("rpc."):
            raise LibraryError(f"{spec}: invalid method name {name!r}")
        if not callable(function):
            raise LibraryError(f"{spec}: method {name!r} is not callable")
        try:
            inspect.signature(function)
        except (TypeError, ValueError) as exc:
            raise LibraryError(f"{spec}: method {name!r} has no usable signature: {exc}") from None
    return Library(
        name=spec,
        methods=dict(methods),
        init=getattr(module, "init", lambda config: None),
        release=getattr(module, "release", lambda ctx: None),
    )
