"""The upgrade contract: how a server hands a WebSocket handshake to the gateway.

Pure: environ keys, the checks of a handshake request (RFC 6455 section 4.2.1) and the interfaces
the middleware programs against. It imports nothing that does I/O, nothing of gevent or
gevent-websocket, so the middleware's decisions can be read (and tested) apart from any server.

Two servers fill the contract: the project's handler (:mod:`ouistiti_gw.servers.handler`) puts an
:class:`Upgrade` under :data:`UPGRADE_KEY` before the 101 is sent, so the app may still refuse
with an HTTP status; for gevent-websocket's stock handler, which sent the 101 before the app ran,
:mod:`ouistiti_gw.gateway.stock_handler` builds one over the WebSocket it opened (``already_accepted``).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

#: environ key of the request's :class:`Upgrade`, on a WebSocket request a server can upgrade.
UPGRADE_KEY = "ouistiti_gw.gateway.upgrade"
#: environ key of the client's socket on a WebSocket request, for its local address and TLS
#: version (the PROXY header's destination and SSL TLV). Not to be read or written: the HTTP
#: layer owns it until the upgrade.
SOCKET_KEY = "ouistiti_gw.socket"
#: environ key of the address every connection of the server's listener arrives at, ``(host,
#: port)``, where the server knows it: a listener bound to one address. Absent for a wildcard
#: listener (``0.0.0.0``, ``::``), whose connections each arrive at an address of their own.
LOCAL_ADDRESS_KEY = "ouistiti_gw.local_address"
#: RFC 6455 section 1.3.
WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SUPPORTED_VERSION = "13"


class ClientConnection(Protocol):
    """The client's connection once upgraded, taken from the HTTP server."""

    #: The client's socket (a gevent socket); frames are read from and written to it.
    sock: Any

    def take_buffered(self) -> bytes:
        """What the HTTP server read past the handshake (a client may send its first frames right
        behind it), without waiting; the server's reader is released."""

    def detach(self) -> None:
        """Take the connection from the HTTP server for good, and close our copy of it (direct
        mode, once the UNIX server holds the client's socket)."""


class Upgrade(Protocol):
    """What a server offers the app for one WebSocket request (``environ[UPGRADE_KEY]``)."""

    #: True when the server sent the 101 before the app ran (gevent-websocket's stock handler):
    #: a refusal can then only be a close frame, and the subprotocol is already chosen.
    already_accepted: bool

    def accept(self, protocol: str | None = None, extensions: str | None = None) -> ClientConnection:
        """Complete the handshake (``protocol``: the ``Sec-WebSocket-Protocol`` to answer;
        ``extensions``: the ``Sec-WebSocket-Extensions``, never given when ``already_accepted``)
        and hand the connection over; the HTTP layer does not write to it again."""

    def pending_input(self) -> bool:
        """True when the client has sent bytes behind its handshake (checked before the 101:
        afterwards its first message may be on its way)."""

    def still_open(self) -> bool:
        """True while a WebSocket the server opened before the app ran is neither taken nor
        closed (only ever under the stock handler)."""


def client_socket(environ: "WSGIEnvironment") -> Any:
    """The client connection's socket where the server shares it, else None."""
    # gunicorn: "gunicorn.sock" from its gevent workers, "gunicorn.socket" from the others
    return environ.get(SOCKET_KEY) or environ.get("gunicorn.sock") or environ.get("gunicorn.socket")


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value for a client's ``Sec-WebSocket-Key``."""
    digest = hashlib.sha1((key + WEBSOCKET_GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def _header_tokens(value: str) -> set[str]:
    return {token.strip().lower() for token in value.split(",")}


def is_websocket_request(environ: "WSGIEnvironment") -> bool:
    return "websocket" in _header_tokens(environ.get("HTTP_UPGRADE", ""))


def handshake_error(environ: "WSGIEnvironment",
                    request_version: str) -> tuple[str, list[tuple[str, str]], str] | None:
    """Check a request that asks for ``Upgrade: websocket``; return ``(status, headers, why)`` if invalid."""
    if environ.get("REQUEST_METHOD") != "GET":
        return "405 Method Not Allowed", [("Allow", "GET")], "WebSocket handshake must be a GET"
    if request_version != "HTTP/1.1":
        return "400 Bad Request", [], f"WebSocket handshake needs HTTP/1.1, not {request_version}"
    if "upgrade" not in _header_tokens(environ.get("HTTP_CONNECTION", "")):
        return "400 Bad Request", [], "Connection header lacks the upgrade token"
    if environ.get("HTTP_SEC_WEBSOCKET_VERSION", "").strip() != SUPPORTED_VERSION:
        return ("426 Upgrade Required", [("Sec-WebSocket-Version", SUPPORTED_VERSION)],
                "unsupported Sec-WebSocket-Version %r" % environ.get("HTTP_SEC_WEBSOCKET_VERSION"))
    if environ.get("CONTENT_LENGTH", "0").strip() != "0" or "HTTP_TRANSFER_ENCODING" in environ:
        # Nothing may follow the handshake but frames: a body would be read as the first one.
        return "400 Bad Request", [], "a WebSocket handshake has no body (Content-Length, Transfer-Encoding)"
    key = environ.get("HTTP_SEC_WEBSOCKET_KEY", "").strip()
    try:
        valid_key = len(base64.b64decode(key, validate=True)) == 16
    except binascii.Error:
        valid_key = False
    if not valid_key:
        return "400 Bad Request", [], "missing or invalid Sec-WebSocket-Key"
    return None
