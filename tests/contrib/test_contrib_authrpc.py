"""authrpc behind websocket_jsonrpc: accounts on a fresh SQLite database.

The tests share one server on a database that started empty and whose root
account was made with the administration command, as the module's
documentation says to (scrypt makes each password check cost, so one server
for all keeps the suite fast).  Each test uses user names of its own.
"""
import itertools
import os
import select
import sqlite3
import stat
import subprocess
import tempfile
import time

import pytest

from support import ROOT
from support.samples import RPCClient, admin_command, run

_numbers = itertools.count()

ADMIN, ADMIN_PASSWORD = "admin", "admin secret"


@pytest.fixture(scope="module")
def database():
    directory = tempfile.mkdtemp(prefix="ogc")
    path = os.path.join(directory, "users.db")
    result = admin_command(path, "adduser", ADMIN, "--group", "root", "--home", "/root",
                           password=ADMIN_PASSWORD)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"user {ADMIN} added to group root in {path}\n"  # not silent
    yield path
    subprocess.run(["rm", "-rf", directory], check=False)


@pytest.fixture(scope="module")
def auth_server(module_servers, database):
    return module_servers("jsonrpc", "-L", "ouistiti_gw_contrib.authrpc", "-C", database)


@pytest.fixture
def name():
    """Makes user names no other test uses: ``name("alice")``."""
    number = next(_numbers)
    return lambda base: f"{base}{number}"


@pytest.fixture
def connect(auth_server):
    clients = []

    def connect():
        clients.append(RPCClient(auth_server.connect()))
        return clients[-1]

    yield connect
    for client in clients:
        client.close()


def add_users(client, name, *bases):
    """Add an account (password "pw") per base name; return their names."""
    users = [name(base) for base in bases]
    for user in users:
        client.result("adduser", {"user": user, "passwd": "pw"})
    return users


def as_root(connect):
    client = connect()
    client.result("auth", {"user": ADMIN, "passwd": ADMIN_PASSWORD})
    return client


def test_fresh_database_is_created_private(servers, workdir):
    path = os.path.join(workdir, "new.db")
    server = servers("jsonrpc", "-L", "ouistiti_gw_contrib.authrpc", "-C", path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    client = RPCClient(server.connect())
    assert client.result("adduser", {"user": "first", "passwd": "pw"})["group"] == "users"
    assert client.result("auth", {"user": "first", "passwd": "pw"}) == \
        {"user": "first", "group": "users", "home": None}
    client.close()
    server.stop()


def test_adduser_then_auth(connect, name):
    client = connect()
    alice = name("alice")
    added = client.result("adduser", {"user": alice, "passwd": "wonderland", "home": "/home/alice"})
    assert added == {"message": "user added", "user": alice, "group": "users", "home": "/home/alice"}
    assert client.result("auth", {"user": alice, "passwd": "wonderland"}) == \
        {"user": alice, "group": "users", "home": "/home/alice"}
    assert client.result("auth", {"user": ADMIN, "passwd": ADMIN_PASSWORD}) == \
        {"user": ADMIN, "group": "root", "home": "/root"}


@pytest.mark.parametrize("who, password", [("alice", "wrong"), ("unknown", "wonderland"),
                                           ("admin", "wonderland")])
def test_auth_with_a_wrong_password_or_user_fails(connect, name, who, password):
    client = connect()
    alice = name("alice")
    client.result("adduser", {"user": alice, "passwd": "wonderland"})
    user = {"alice": alice, "unknown": name("unknown"), "admin": ADMIN}[who]
    assert client.error("auth", {"user": user, "passwd": password}) == \
        {"code": 1, "message": "user or password not found"}


def test_passwords_are_not_stored_in_clear(connect, database, name):
    connect().result("adduser", {"user": name("bob"), "passwd": "VeryVisiblePassword"})
    with open(database, "rb") as db:
        content = db.read()
    assert b"VeryVisiblePassword" not in content and ADMIN_PASSWORD.encode() not in content
    with sqlite3.connect(database) as db:
        stored = [row[0] for row in db.execute("SELECT passwd FROM users")]
    assert len(stored) > 1 and all(value.startswith("$scrypt$ln=14,r=8,p=1$") for value in stored)
    assert len(set(value.split("$")[3] for value in stored)) == len(stored)  # one salt each


def test_passwd_with_the_old_password(connect, name):
    client = connect()
    carol = name("carol")
    client.result("adduser", {"user": carol, "passwd": "old"})
    assert client.error("passwd", {"user": carol, "old": "bad", "new": "n", "confirm": "n"})["code"] == 1
    assert client.error("passwd", {"user": carol, "old": "old", "new": "n1", "confirm": "n2"})["code"] == 4
    assert client.result("passwd", {"user": carol, "old": "old", "new": "new", "confirm": "new"}) == \
        {"message": "password changed"}
    assert client.error("auth", {"user": carol, "passwd": "old"})["code"] == 1
    assert client.result("auth", {"user": carol, "passwd": "new"})["user"] == carol


def test_only_root_changes_a_password_without_the_old_one(connect, name):
    user = connect()
    dan, erin = add_users(user, name, "dan", "erin")
    user.result("auth", {"user": dan, "passwd": "pw"})
    assert user.error("passwd", {"user": erin, "new": "x", "confirm": "x"})["code"] == 2
    root = as_root(connect)
    assert root.result("passwd", {"user": erin, "new": "x", "confirm": "x"}) == {"message": "password changed"}
    assert user.result("auth", {"user": erin, "passwd": "x"})["user"] == erin


def test_rmuser(connect, name):
    client = connect()
    frank, grace = add_users(client, name, "frank", "grace")
    assert client.error("rmuser", {"user": frank, "passwd": "bad"})["code"] == 1
    assert client.result("rmuser", {"user": frank, "passwd": "pw"}) == {"message": "user removed"}
    assert client.error("auth", {"user": frank, "passwd": "pw"})["code"] == 1
    assert client.error("rmuser", {"user": grace})["code"] == 2
    root = as_root(connect)
    assert root.error("rmuser", {"user": name("unknown")})["code"] == 5
    assert root.result("rmuser", {"user": grace}) == {"message": "user removed"}
    assert client.error("auth", {"user": grace, "passwd": "pw"})["code"] == 1


def test_only_a_root_session_adds_a_root_user(connect, name):
    client = connect()
    mallory, = add_users(client, name, "mallory")
    client.result("auth", {"user": mallory, "passwd": "pw"})
    evil = {"user": name("evil"), "passwd": "pw", "group": "root"}
    assert client.error("adduser", evil)["code"] == 2
    root = as_root(connect)
    assert root.result("adduser", {"user": name("ops"), "passwd": "pw", "group": "root"})["group"] == "root"
    # The root session belongs to that connection only.
    assert client.error("adduser", evil)["code"] == 2


def test_failed_auth_ends_the_root_session(connect, name):
    root = as_root(connect)
    assert root.error("auth", {"user": ADMIN, "passwd": "wrong"})["code"] == 1
    assert root.error("adduser", {"user": name("late"), "passwd": "pw", "group": "root"})["code"] == 2


def test_root_rights_end_when_the_account_goes(connect, name):
    first = as_root(connect)
    second_root = name("second_root")
    first.result("adduser", {"user": second_root, "passwd": "pw", "group": "root"})
    second = connect()
    second.result("auth", {"user": second_root, "passwd": "pw"})
    first.result("rmuser", {"user": second_root})
    assert second.error("adduser", {"user": name("x"), "passwd": "pw", "group": "root"})["code"] == 2


@pytest.mark.parametrize("method, params, code", [
    ("adduser", {"user": "DUP", "passwd": "pw"}, 3),
    ("adduser", {"user": "new", "passwd": "pw", "group": "staff"}, 6),
    ("adduser", {"user": "", "passwd": "pw"}, -32602),
    ("adduser", {"user": 5, "passwd": "pw"}, -32602),
    ("auth", {"user": "DUP"}, -32602),
    ("auth", ["DUP", "pw"], -32602),
    ("passwd", {"user": "DUP", "old": "pw", "new": "", "confirm": ""}, -32602),
])
def test_errors(connect, name, method, params, code):
    client = connect()
    dup, = add_users(client, name, "dup")
    if isinstance(params, dict):
        params = {key: dup if value == "DUP" else value for key, value in params.items()}
    error = client.error(method, params)
    assert error["code"] == code and error["message"]


def test_library_by_path_with_a_relative_database(servers, workdir):
    database = os.path.relpath(os.path.join(workdir, "rel.db"), ROOT)
    server = servers("jsonrpc", "-L", "./contrib/authrpc.py", "-C", database)
    client = RPCClient(server.connect())
    client.result("adduser", {"user": "henry", "passwd": "pw"})
    assert client.result("auth", {"user": "henry", "passwd": "pw"})["user"] == "henry"
    client.close()
    server.stop()
    assert os.path.exists(os.path.join(workdir, "rel.db"))


def test_missing_or_bad_database_stops_the_start(workdir):
    result = run("jsonrpc", "-R", os.path.join(workdir, "run"), "-L", "ouistiti_gw_contrib.authrpc")
    assert result.returncode == 1 and "-C DATABASE is required" in result.stderr
    garbage = os.path.join(workdir, "garbage.db")
    with open(garbage, "wb") as bad:
        bad.write(b"this is not a database" * 100)
    result = run("jsonrpc", "-R", os.path.join(workdir, "run"), "-L", "ouistiti_gw_contrib.authrpc",
                 "-C", garbage)
    assert result.returncode == 1 and "not a database" in result.stderr


def test_admin_command_errors(workdir):
    path = os.path.join(workdir, "admin.db")
    assert admin_command(path, "adduser", "root1", "--group", "root", password="pw").returncode == 0
    result = admin_command(path, "adduser", "root1", password="again")
    assert result.returncode == 1 and "user already exists" in result.stderr
    result = admin_command(path, "adduser", "nopass", password="")
    assert result.returncode == 1 and "empty password" in result.stderr


def test_a_batch_of_auth_calls_does_not_hold_the_other_clients(connect, name):
    """scrypt runs off the server's loop: while one client's batch of logins
    runs (seconds of scrypt), another client is answered at once."""
    from ouistiti_gw_contrib.rpc import MAX_BATCH
    batcher, other = connect(), connect()
    user, = add_users(batcher, name, "batch")
    batcher.send([{"jsonrpc": "2.0", "method": "auth", "params": {"user": user, "passwd": "pw"}, "id": number}
                  for number in range(MAX_BATCH)])
    time.sleep(0.2)  # the batch is running
    for request in ({"user": user}, {"user": user, "passwd": "pw"}):  # -32602 at once; one scrypt
        started = time.monotonic()
        other.call("auth", request)
        assert time.monotonic() - started < 1.0
    assert not select.select([batcher.sock], [], [], 0)[0], "the batch ended first: nothing was shown"
    batcher.sock.settimeout(60)  # its scrypts run one after another: seconds, more on a busy machine
    replies = batcher.receive()
    assert sorted(reply["id"] for reply in replies) == list(range(MAX_BATCH))
    assert all(reply["result"]["user"] == user for reply in replies)


def test_a_batch_over_the_limit_is_refused_whole(connect, name):
    from ouistiti_gw_contrib.rpc import MAX_BATCH
    client = connect()
    newcomer = name("newcomer")
    client.send([{"jsonrpc": "2.0", "method": "adduser", "params": {"user": newcomer, "passwd": "pw"}, "id": 0}] +
                [{"jsonrpc": "2.0", "method": "auth", "params": {"user": ADMIN, "passwd": "x"}, "id": number}
                 for number in range(1, MAX_BATCH + 1)])
    error = client.receive()
    assert error["id"] is None and error["error"]["code"] == -32600
    assert error["error"]["message"] == "Invalid Request: batch too large"
    assert client.error("auth", {"user": newcomer, "passwd": "pw"})["code"] == 1  # the adduser did not run
