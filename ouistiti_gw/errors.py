"""The root of every exception ouistiti-gw raises on purpose, and the map of its tree.

A caller catches the kind it means, or all of them with ``except GatewayError``. None of them is
also a ``ValueError``: a ``ValueError`` (or any of Python's own exceptions) leaving the package
is a bug's, and gets its traceback. Each kind is defined beside the code that raises it (shown
in brackets, below ``ouistiti_gw``), so a reader of that module sees what it raises and a caller imports it from there
(``from ouistiti_gw.green.unix import BackendUnavailable``)::

    GatewayError
        refusals at the handshake: the client gets an HTTP status, or (stock worker) a close
            NameRefused (gateway.names): a name that can never be a socket below docroot: 403
            BackendUnavailable (green.unix): the UNIX server cannot be reached: 404, 403 or 503
            HeaderTooLong (core.proxy_protocol): a PROXY header that cannot be built: 431
            RequestRefused (servers.request_head): a request head answered before any app sees it: 400, 431
            OfferDeclined (core.deflate): a permessage-deflate offer declined; the handshake goes on
            AuthorizationRefused (gateway.authorization): the app's authorization refuses: 401 or 403
            AuthorizationFailed (gateway.authorization): the app's authorization could not decide: 503
        protocol violations and closes
            ProtocolViolation (core.frames): the client broke RFC 6455: the close code to fail with
            WebSocketClosed (core.protocol): sending once the closing handshake has started
            ProxyProtocolError (core.proxy_protocol): a malformed PROXY header, read by a UNIX server
                IncompleteHeader (core.proxy_protocol): only the beginning of one so far
        configuration
            ConfigurationError (config): an option missing, unknown, malformed, or in conflict
        connections
            StreamEnded (green.sockio): the peer closed inside a read of a fixed size
            BackendWriteFailed (gateway.relay): a write to the UNIX server failed (out of the reader's callback)
        reload: sessions moving to a new process
            ReadPaused (green.sockio): a pump stopped before a read, so that its session can move
            NotMovable (core.protocol): a session that cannot move now (inside a message...)
            StateError (reload.session_state): a session state this code cannot take
            RecordError (reload.migration): a record on the takeover channel that does not hold
            SuccessorGone (reload.migration): the new process stopped taking sessions
        TLS
            HandshakeFailed (servers.tls): a TLS handshake that did not finish
        the admin endpoint
            AdminError (gateway.admin_page): a request it cannot do: 400, 404 or 405

One signal stays outside the tree: ``Keepalive.Interrupted`` (green.keepalive), a ``BaseException``
as ``gevent.Timeout`` is, thrown into the greenlet that reads a client to end its wait; the
session catches it, no caller sees it.

Host, Origin and the connection limits are decided, not raised: the gateway's admission
(:mod:`ouistiti_gw.gateway.admission`) returns why a request is refused. Under gunicorn,
``ConfigurationError`` is raised again as gunicorn's ``AppImportError`` where gunicorn loads
the app (the worker's ``load_wsgi``, ``make_app()``): gunicorn then prints one line and exits 4.

``tests/unit/test_errors.py`` holds this map to the package: every exception class it defines is
listed here, under its parent.
"""
from __future__ import annotations


class GatewayError(Exception):
    """Base of the exceptions ouistiti-gw raises on purpose (never a bug's own exception)."""
