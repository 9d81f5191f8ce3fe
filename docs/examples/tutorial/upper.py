"""A UNIX server: each client's bytes come back in capitals. Any language would do."""
import os
import socket
import sys
import threading

path = sys.argv[1]                    # the socket file: DOCROOT/NAME is ws://HOST/NAME
if os.path.exists(path):
    os.unlink(path)                   # a stale socket from an earlier run
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(path)
os.chmod(path, 0o777)                 # the gateway may run as another user
server.listen()


def serve(conn):
    with conn:
        while data := conn.recv(65536):   # one WebSocket message arrives as its payload
            conn.sendall(data.upper())    # each write goes back to the browser as a message


while True:
    conn, _ = server.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
