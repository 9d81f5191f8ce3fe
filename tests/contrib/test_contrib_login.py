"""The samples learn the user the wrapped app's authorization let in (PROXY v2, ``-P``).

A real gateway with ``authorize = wrapped_app:authorize`` (``Authorization: Bearer NAME``, see
``tests/wrapped_app.py``) and ``proxy_protocol = v2`` in front of the samples run with ``-P``.
"""
import json
import os
import tempfile

import pytest
from websockets.sync.client import connect

from support import TESTS
from support.addresses import remove_tree
from support.processes import gateway_cli
from support.samples import admin_command

LOGIN = ("--authorize", "wrapped_app:authorize", "--proxy-protocol", "v2")


def bearer(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {user}"}


@pytest.fixture
def gateway(docroot):
    with gateway_cli(docroot, *LOGIN, env={"PYTHONPATH": str(TESTS)}) as process:
        yield process


def test_chat_names_a_logged_in_client_after_its_user(sample, gateway):
    sample("chat", "-w", "-P")
    with connect(f"{gateway.url}/chat", additional_headers=bearer("alice")) as alice:
        assert alice.recv(timeout=10) == "WSWelcome alice"  # no WSHello needed
        alice.send("WSHello bob")
        assert alice.recv(timeout=10) == "WSError WSHello a logged-in client's name is its user's"
        alice.send("WSHello alice")
        assert alice.recv(timeout=10) == "WSWelcome alice"
        with connect(f"{gateway.url}/chat", additional_headers=bearer("bob")) as bob:
            assert bob.recv(timeout=10) == "WSWelcome bob"
            bob.send("WSWhois alice")
            assert bob.recv(timeout=10) == "WSIs alice 127.0.0.1 alice"
            with connect(f"{gateway.url}/chat", additional_headers=bearer("alice")) as second_tab:
                assert second_tab.recv(timeout=10) == "WSWelcome alice001"
                bob.send("WSWhois alice001")
                assert bob.recv(timeout=10) == "WSIs alice001 127.0.0.1 alice"


def test_a_user_name_chat_refuses_leaves_the_client_unnamed(sample, gateway):
    sample("chat", "-w", "-P")
    with connect(f"{gateway.url}/chat", additional_headers=bearer("bob123")) as client:
        assert client.recv(timeout=10).startswith("WSError WSHello name may not end with 3 digits")
        client.send("WSHello bob")
        assert client.recv(timeout=10).startswith("WSError WSHello name may not end with 3 digits")


@pytest.fixture
def accounts():
    directory = tempfile.mkdtemp(prefix="ogc")
    database = os.path.join(directory, "users.db")
    assert admin_command(database, "adduser", "alice", "--group", "root", password="alice's").returncode == 0
    assert admin_command(database, "adduser", "carol", password="carol's").returncode == 0
    yield database
    remove_tree(directory)


def call(ws, method: str, **params) -> dict:
    ws.send(json.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}))
    return json.loads(ws.recv(timeout=30))


def test_authrpc_takes_the_web_login_as_the_sessions_account(sample, gateway, accounts):
    sample("jsonrpc", "-P", "-L", "ouistiti_gw_contrib.authrpc", "-C", accounts)
    with connect(f"{gateway.url}/jsonrpc", additional_headers=bearer("alice")) as alice:
        assert call(alice, "whoami")["result"] == {"user": "alice", "group": "root", "home": None}
        added = call(alice, "adduser", user="dave", passwd="x", group="root")  # root, no second password
        assert added["result"]["group"] == "root"
    with connect(f"{gateway.url}/jsonrpc", additional_headers=bearer("carol")) as carol:
        assert call(carol, "whoami")["result"]["group"] == "users"
        assert call(carol, "rmuser", user="alice")["error"]["code"] == 2  # permission denied: not root
    with connect(f"{gateway.url}/jsonrpc", additional_headers=bearer("erin")) as erin:  # no account
        assert call(erin, "whoami")["error"]["code"] == 1
