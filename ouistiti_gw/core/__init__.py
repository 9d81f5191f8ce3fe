"""The sans-I/O core: RFC 6455 frames and protocol, permessage-deflate, UTF-8, the rate limits,
the PROXY protocol codec, addresses and log-safe text. Pure: no socket, no gevent, no WSGI."""
