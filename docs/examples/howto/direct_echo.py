"""A UNIX server that takes the browser's socket itself in direct mode, and still serves the
gateway's piped connections (wss://, or a gateway in pipe mode)."""
import os
import sys

import gevent
from gevent import socket

from ouistiti_gw import backend

path = sys.argv[1]
if os.path.exists(path):
    os.unlink(path)
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(path)
os.chmod(path, 0o777)
listener.listen()


def serve(client):
    if isinstance(client, backend.DirectClient):       # direct mode: a WebSocket of our own
        print("direct client from", client.address, flush=True)   # ('203.0.113.7', 51234)
        while (message := client.receive()) is not None:          # a Message(data, is_text)
            client.send(message.data)                 # text if UTF-8, else binary; pings handled
        client.close()
    else:                                             # the gateway is piping: a plain connection
        while data := client.recv(65536):
            client.sendall(data)
        client.close()


while True:
    gevent.spawn(serve, backend.accept(listener))       # or backend.adopt(conn) after your own accept()
