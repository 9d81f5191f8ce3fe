"""The gateway: the WSGI middleware, the names it serves, admission, identity, metrics, and the
session that pumps between a WebSocket and a UNIX server."""
