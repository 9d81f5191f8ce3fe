"""The gevent shells over the core: socket reads and writes, descriptors passed over UNIX
sockets, UNIX connections, the client connection a pywsgi handler holds, the WebSocket endpoint."""
