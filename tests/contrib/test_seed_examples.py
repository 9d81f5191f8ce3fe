"""The seed manual's usage examples, run as written (paths adapted), behind the gateway.

    $ ./utils/websocket_chat -R /var/run/ouistiti/ -n auth -u apache -w
    $ ./utils/websocket_jsonrpc -R /var/run/ouistiti/ -n auth -u apache -L ./utils/authrpc.so -C /tmp/ouistiti.db

Adapted: our commands, a temporary docroot, user ``nobody`` for ``apache``, ``./contrib/authrpc.py``
for ``./utils/authrpc.so`` (run from the project's root), a temporary database.
"""
import json
import os
import subprocess
import tempfile

from websockets.sync.client import connect

from ouistiti_gw.cli import unix_accepts
from support import BIN, ROOT, wait_until


def run_seed_example(argv: list[str], socket_path: str) -> subprocess.Popen:
    server = subprocess.Popen(argv, cwd=ROOT)
    wait_until(lambda: server.poll() is not None or unix_accepts(socket_path), what=socket_path)
    assert server.poll() is None, f"{argv[0]} exited with {server.returncode}"
    return server


def stop(server: subprocess.Popen) -> None:
    server.terminate()
    assert server.wait(timeout=10) == 0


def test_chat_example(gateway, docroot):
    chat = run_seed_example([str(BIN / "websocket_chat"), "-R", f"{docroot}/", "-n", "auth", "-u", "nobody", "-w"],
                            f"{docroot}/auth")
    try:
        with connect(f"{gateway.url}/auth") as alice, connect(f"{gateway.url}/auth") as bob:
            alice.send("WSHello alice")
            assert alice.recv() == "WSWelcome alice"
            bob.send("hello")
            assert alice.recv() == "hello"
    finally:
        stop(chat)


def test_jsonrpc_example(gateway, docroot):
    database = tempfile.mktemp(prefix="ouistiti-", suffix=".db", dir="/tmp")  # as /tmp/ouistiti.db
    jsonrpc = run_seed_example([str(BIN / "websocket_jsonrpc"), "-R", f"{docroot}/", "-n", "auth", "-u", "nobody",
                                "-L", "./contrib/authrpc.py", "-C", database], f"{docroot}/auth")
    try:
        with connect(f"{gateway.url}/auth") as ws:
            ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "adduser",
                                "params": {"user": "bob", "passwd": "s3cret"}}))
            assert "result" in json.loads(ws.recv())
            ws.send(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "auth",
                                "params": {"user": "bob", "passwd": "s3cret"}}))
            assert json.loads(ws.recv())["result"]["user"] == "bob"
        assert os.stat(database).st_uid != 0  # created by the server after it became nobody
    finally:
        stop(jsonrpc)
        if os.path.exists(database):
            os.unlink(database)
