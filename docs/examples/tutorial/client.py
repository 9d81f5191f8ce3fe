# The same round trip without a browser (pip install websockets)
from websockets.sync.client import connect

with connect("ws://127.0.0.1:8080/upper") as ws:
    ws.send("hello from Python")
    print(ws.recv())                  # HELLO FROM PYTHON
