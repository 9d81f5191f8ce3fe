"""wss://: the certificate loaded once at start, and a TLS handshake that cannot hold a connection.

Given ``certfile``, gevent's ``StreamServer`` builds an ``SSLContext`` per connection, reading the
certificate each time: a missing or bad one is a traceback per client instead of an error at start,
and a process out of descriptors cannot read it at all. :func:`server_context` loads it once.

Both gevent and gunicorn wrap an accepted socket with the handshake done on connect, under no
deadline: a client that sends nothing, or half a ClientHello, holds its descriptor for ever (the
request's ``header_timeout`` only starts once TLS is up), and one that aborts (a reset, garbage,
plain HTTP on the TLS port) leaves a traceback. :class:`TimedHandshake`, mixed into the CLI's server
and gunicorn's, whichever made the context, runs the handshake under the handler's
``header_timeout`` and ends a client that did not finish with one DEBUG line and a count in the
metrics (``ouistiti_gw_tls_handshake_failures_total{reason}``), never a traceback.

A connection still in its handshake is no session: ``max_connections`` does not count it; the
deadline bounds it, as it bounds one still sending its request headers.
"""
from __future__ import annotations

import logging
import re
import ssl
from functools import cache
from typing import Any, Callable

import gevent
from gevent import ssl as gevent_ssl

from ..config import ConfigurationError
from ..core.addresses import format_address
from ..errors import GatewayError

log = logging.getLogger(__name__)

#: Why a handshake did not finish: the ``reason`` label of the failures' count.
#: ``timeout``: not done within ``header_timeout``; ``closed``: the client closed or reset the
#: connection; ``protocol``: what it sent is no TLS this server speaks (garbage, plain HTTP).
FAILURE_REASONS = ("timeout", "closed", "protocol")


def server_context(certfile: str, keyfile: str = "") -> ssl.SSLContext:
    """A server-side context (gevent's, so its sockets cooperate) holding ``certfile`` and its key
    (in ``keyfile``, or in ``certfile`` too); :class:`ConfigurationError` if they cannot be loaded."""
    context = gevent_ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(certfile, keyfile or None)
    except ssl.SSLError as error:  # OpenSSL's text, without the place in _ssl.c
        why = "not a PEM certificate with its private key (" + re.sub(r" \(_ssl\.c:\d+\)$", "", str(error)) + ")"
    except OSError as error:
        why = error.strerror or str(error)
    else:
        return context
    files = f"{certfile} (key {keyfile})" if keyfile else certfile
    raise ConfigurationError(f"cannot load the TLS certificate {files}: {why}", "certfile")


class HandshakeFailed(GatewayError):
    """A TLS handshake that did not finish; ``reason`` is one of :data:`FAILURE_REASONS`."""

    def __init__(self, reason: str, why: str) -> None:
        super().__init__(why)
        self.reason = reason


def handshake(tls: ssl.SSLSocket, seconds: float) -> None:
    """The server side of ``tls``'s handshake, done within ``seconds``, or :class:`HandshakeFailed`."""
    deadline = gevent.Timeout(seconds)
    deadline.start()
    try:
        tls.do_handshake()
    except gevent.Timeout as expired:
        if expired is not deadline:
            raise
        raise HandshakeFailed("timeout", f"not finished after {seconds:g} s") from None
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionError) as error:
        raise HandshakeFailed("closed", f"the client closed the connection ({error})") from None
    except OSError as error:  # ssl.SSLError included
        raise HandshakeFailed("protocol" if isinstance(error, ssl.SSLError) else "closed", str(error)) from None
    finally:
        deadline.close()


class TimedHandshake:
    """Mixin for a gevent ``StreamServer`` with a ``handler_class`` that has ``header_timeout``
    (:class:`~ouistiti_gw.servers.handler.GatewayHandler`): the TLS handshake under that deadline."""

    handler_class: Any
    wrap_socket: Any
    ssl_args: dict[str, Any]

    def wrap_socket_and_handle(self, client_socket, address):
        try:  # wrapping only takes the descriptor over: it fails (and closes it) only if the peer is gone
            tls = self.wrap_socket(client_socket, **{**self.ssl_args, "do_handshake_on_connect": False})
        except OSError as error:
            return _failed(address, HandshakeFailed("closed", str(error)))
        with tls:  # closed however this ends
            try:
                handshake(tls, self.handler_class.header_timeout)
            except HandshakeFailed as failure:
                return _failed(address, failure)
            return self.handle(tls, address)


def _failed(address: Any, failure: HandshakeFailed) -> None:
    peer = format_address(address[:2]) if isinstance(address, tuple) else str(address) or "-"
    log.debug("TLS handshake from %s failed (%s): %s", peer, failure.reason, failure)
    count = _failure_counter()
    if count is not None:
        count(failure.reason)


@cache
def _failure_counter() -> Callable[[str], None] | None:
    """The metrics' count of failed handshakes (the process's: a server knows no gateway), or
    None without prometheus_client."""
    try:
        from ..gateway.metrics import tls_handshake_failed
    except ImportError:
        return None
    return tls_handshake_failed
