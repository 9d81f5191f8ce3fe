"""websocket_jsonrpc: JSON-RPC 2.0 as specified, one reply per message, and its library loading.

The conformance cases are the examples of https://www.jsonrpc.org/specification
("Examples" section), written exactly as the specification gives them; the
methods they call live in tests/contrib/rpc_plugin.py.  "No reply" is checked
without waiting: a request sent afterwards must get the next reply.
"""
import json
import os

import pytest
from websockets.sync.client import connect as ws_connect

from ouistiti_gw.green.unix import recv_packet
from support import ROOT
from support.processes import gateway_cli
from support.samples import PLUGIN, RPCClient, run


@pytest.fixture(scope="module")
def rpc_server(module_servers):
    return module_servers("jsonrpc", "-L", str(PLUGIN), "-C", "example config")


@pytest.fixture
def client(rpc_server):
    client = RPCClient(rpc_server.connect())
    yield client
    client.close()


def nothing_came_back(client):
    """True if no reply is pending: the next reply is the probe's."""
    client.send({"jsonrpc": "2.0", "method": "echo", "params": ["probe"], "id": "probe"})
    return client.receive() == {"jsonrpc": "2.0", "result": "probe", "id": "probe"}


def as_set(responses):
    """A batch reply may come in any order (specification, "Batch")."""
    return sorted(json.dumps(response, sort_keys=True) for response in responses)


# The examples of the specification: (request as sent, expected reply or None).
SPEC_EXAMPLES = {
    "positional parameters 1": (
        '{"jsonrpc": "2.0", "method": "subtract", "params": [42, 23], "id": 1}',
        {"jsonrpc": "2.0", "result": 19, "id": 1}),
    "positional parameters 2": (
        '{"jsonrpc": "2.0", "method": "subtract", "params": [23, 42], "id": 2}',
        {"jsonrpc": "2.0", "result": -19, "id": 2}),
    "named parameters 1": (
        '{"jsonrpc": "2.0", "method": "subtract", "params": {"subtrahend": 23, "minuend": 42}, "id": 3}',
        {"jsonrpc": "2.0", "result": 19, "id": 3}),
    "named parameters 2": (
        '{"jsonrpc": "2.0", "method": "subtract", "params": {"minuend": 42, "subtrahend": 23}, "id": 4}',
        {"jsonrpc": "2.0", "result": 19, "id": 4}),
    "notification 1": (
        '{"jsonrpc": "2.0", "method": "update", "params": [1,2,3,4,5]}',
        None),
    "notification 2": (
        '{"jsonrpc": "2.0", "method": "foobar"}',
        None),
    "non-existent method": (
        '{"jsonrpc": "2.0", "method": "foobar", "id": "1"}',
        {"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"}, "id": "1"}),
    "invalid JSON": (
        '{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]',
        {"jsonrpc": "2.0", "error": {"code": -32700, "message": "Parse error"}, "id": None}),
    "invalid Request object": (
        '{"jsonrpc": "2.0", "method": 1, "params": "bar"}',
        {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": None}),
    "batch, invalid JSON": (
        '[\n  {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},\n'
        '  {"jsonrpc": "2.0", "method"\n]',
        {"jsonrpc": "2.0", "error": {"code": -32700, "message": "Parse error"}, "id": None}),
    "empty Array": (
        "[]",
        {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": None}),
    "invalid Batch (but not empty)": (
        "[1]",
        [{"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": None}]),
    "invalid Batch": (
        "[1,2,3]",
        [{"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": None}] * 3),
    "Batch": (
        """[
        {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},
        {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]},
        {"jsonrpc": "2.0", "method": "subtract", "params": [42,23], "id": "2"},
        {"foo": "boo"},
        {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},
        {"jsonrpc": "2.0", "method": "get_data", "id": "9"}
    ]""",
        [{"jsonrpc": "2.0", "result": 7, "id": "1"},
         {"jsonrpc": "2.0", "result": 19, "id": "2"},
         {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": None},
         {"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"}, "id": "5"},
         {"jsonrpc": "2.0", "result": ["hello", 5], "id": "9"}]),
    "Batch (all notifications)": (
        """[
        {"jsonrpc": "2.0", "method": "notify_sum", "params": [1,2,4]},
        {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]}
    ]""",
        None),
}


@pytest.mark.parametrize("example", sorted(SPEC_EXAMPLES))
def test_specification_example(client, example):
    request, expected = SPEC_EXAMPLES[example]
    client.send(request.encode())
    if expected is None:
        assert nothing_came_back(client)
    elif isinstance(expected, list):
        reply = client.receive()
        assert isinstance(reply, list) and as_set(reply) == as_set(expected)
        assert nothing_came_back(client)
    else:
        assert client.receive() == expected
        assert nothing_came_back(client)


def test_notifications_are_run(client):
    client.send({"jsonrpc": "2.0", "method": "update", "params": [1, 2, 3, 4, 5]})
    client.send(b'[{"jsonrpc": "2.0", "method": "notify_sum", "params": [1,2,4]},'
                b'{"jsonrpc": "2.0", "method": "notify_hello", "params": [7]}]')
    assert client.result("notified")[-3:] == [["update", [1, 2, 3, 4, 5]], ["notify_sum", 7],
                                              ["notify_hello", 7]]


@pytest.mark.parametrize("request_id", ["text", 7, -1.5, None])
def test_ids_are_echoed(client, request_id):
    client.send({"jsonrpc": "2.0", "method": "echo", "params": [1], "id": request_id})
    assert client.receive() == {"jsonrpc": "2.0", "result": 1, "id": request_id}


@pytest.mark.parametrize("message, reply_id", [
    ({"jsonrpc": "2.0", "method": "echo", "params": [1], "id": True}, None),
    ({"jsonrpc": "2.0", "method": "echo", "params": [1], "id": [1]}, None),
    ({"jsonrpc": "1.0", "method": "echo", "params": [1], "id": 5}, 5),
    ({"method": "echo", "params": [1], "id": 6}, 6),
    ({"jsonrpc": "2.0", "method": "echo", "params": 1, "id": 7}, 7),
    ({"jsonrpc": "2.0", "method": "echo", "params": None, "id": 8}, 8),
    ({"jsonrpc": "2.0", "params": [1], "id": 9}, 9),
    ("a string", None),
    (12, None),
])
def test_invalid_requests(client, message, reply_id):
    client.send(message)
    assert client.receive() == {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"},
                                "id": reply_id}


@pytest.mark.parametrize("params", [[1], [1, 2, 3], {"minuend": 1}, {"minuend": 1, "subtrahend": 2, "x": 3}])
def test_params_that_do_not_fit_are_invalid_params(client, params):
    error = client.error("subtract", params)
    assert error["code"] == -32602 and error["message"] == "Invalid params"


@pytest.mark.parametrize("text", [b"NaN", b"[1, Infinity]", b"{\"a\": 1,}", b"nul", b"\xff\xfe"])
def test_invalid_json_is_a_parse_error(client, text):
    client.send(text)
    assert client.receive() == {"jsonrpc": "2.0", "error": {"code": -32700, "message": "Parse error"}, "id": None}
    assert nothing_came_back(client)


def test_library_errors_become_error_objects(client):
    assert client.error("refuse") == {"code": 42, "message": "refused", "data": {"why": "testing"}}


def test_internal_errors_do_not_leak_details(client):
    client.send({"jsonrpc": "2.0", "method": "fail", "id": 1})
    packet = recv_packet(client.sock)
    assert json.loads(packet)["error"] == {"code": -32603, "message": "Internal error"}
    assert b"secret" not in packet
    assert client.error("not_json")["code"] == -32603


def test_config_reaches_init(client):
    assert client.result("config") == "example config"


def test_each_connection_has_its_own_session(rpc_server, client):
    assert [client.result("count") for _ in range(3)] == [1, 2, 3]
    other = RPCClient(rpc_server.connect())
    assert other.result("count") == 1
    assert client.result("count") == 4
    other.close()


# --------------------------------------------------------------------------
# One message, one reply
# --------------------------------------------------------------------------

#: Messages that are not one JSON text, each answered with exactly one -32700.
NOT_ONE_JSON_TEXT = [b"not json", b"{bad json", b"[1,2", b'"x', b'{"a":1} junk', b"]",
                     b'{"jsonrpc": "2.0", "method": "echo", "params": [1], "id": 1} '
                     b'{"jsonrpc": "2.0", "method": "echo", "params": [2], "id": 2}']
PARSE_ERROR_REPLY = {"jsonrpc": "2.0", "error": {"code": -32700, "message": "Parse error"}, "id": None}


@pytest.mark.parametrize("message", NOT_ONE_JSON_TEXT)
def test_a_message_that_is_not_one_json_text_gets_one_parse_error(client, message):
    client.send(message)
    assert client.receive() == PARSE_ERROR_REPLY
    assert nothing_came_back(client)


def test_a_request_cut_in_two_is_two_parse_errors(client):
    request = json.dumps({"jsonrpc": "2.0", "method": "echo", "params": ["h\u00e9llo"], "id": 1}).encode()
    client.send(request[:10])
    client.send(request[10:])
    assert [client.receive(), client.receive()] == [PARSE_ERROR_REPLY] * 2
    assert nothing_came_back(client)


def test_non_ascii_request(client):
    client.send(json.dumps({"jsonrpc": "2.0", "method": "echo", "params": ["h\u00e9llo \u20ac"], "id": 1},
                           ensure_ascii=False).encode())
    assert client.receive() == {"jsonrpc": "2.0", "result": "h\u00e9llo \u20ac", "id": 1}


def test_nul_terminated_requests_are_accepted(client):
    client.send(b'{"jsonrpc": "2.0", "method": "echo", "params": [1], "id": 1}\0')
    assert client.receive()["result"] == 1
    assert nothing_came_back(client)


@pytest.mark.parametrize("mode", ["pipe", "direct"])
def test_bad_messages_through_a_gateway_keep_replies_in_step(docroot, sample, mode):
    """Each bad message gets one -32700, and the request after it its own answer."""
    sample("jsonrpc", "-L", str(PLUGIN))
    options = ("--mode", "direct") if mode == "direct" else ()
    with gateway_cli(docroot, *options) as gateway, ws_connect(f"{gateway.url}/jsonrpc") as ws:
        for number, message in enumerate(NOT_ONE_JSON_TEXT):
            ws.send(message.decode())
            assert json.loads(ws.recv(timeout=10)) == PARSE_ERROR_REPLY, message
            ws.send(json.dumps({"jsonrpc": "2.0", "method": "echo", "params": [number], "id": number}))
            assert json.loads(ws.recv(timeout=10)) == {"jsonrpc": "2.0", "result": number, "id": number}


def test_batch_limit(client):
    from ouistiti_gw_contrib.rpc import MAX_BATCH
    batch = [{"jsonrpc": "2.0", "method": "echo", "params": [number], "id": number} for number in range(MAX_BATCH)]
    client.send(batch)
    assert sorted(response["result"] for response in client.receive()) == list(range(MAX_BATCH))
    client.send(batch + [{"jsonrpc": "2.0", "method": "update", "params": ["over the limit"]}])
    assert client.receive() == {"jsonrpc": "2.0", "id": None, "error": {
        "code": -32600, "message": "Invalid Request: batch too large",
        "data": f"{MAX_BATCH + 1} requests, at most {MAX_BATCH}"}}
    assert ["update", ["over the limit"]] not in client.result("notified")  # none of it ran


def test_replies_never_contain_a_nul(client):
    client.send({"jsonrpc": "2.0", "method": "echo", "params": ["a\0b"], "id": 1})
    packet = recv_packet(client.sock)
    assert b"\0" not in packet and json.loads(packet)["result"] == "a\0b"


def reply_length(length):
    return len(json.dumps({"jsonrpc": "2.0", "result": "x" * length, "id": 1}, separators=(",", ":")))


def test_largest_reply_fits_one_packet_and_a_larger_one_is_an_error(client):
    from ouistiti_gw_contrib.server import max_packet_size
    limit = max_packet_size()
    overhead = reply_length(0)
    packet = None
    client.send({"jsonrpc": "2.0", "method": "text_of_length", "params": [limit - overhead], "id": 1})
    packet = recv_packet(client.sock)
    assert len(packet) == limit and json.loads(packet)["result"] == "x" * (limit - overhead)
    error = client.error("text_of_length", [limit - overhead + 1])
    assert error["code"] == -32603
    assert f"{limit + 1} bytes" in error["data"] and str(limit) in error["data"]


def test_too_large_batch_reply_keeps_the_ids(client):
    client.send([{"jsonrpc": "2.0", "method": "text_of_length", "params": [3 << 20], "id": number}
                 for number in range(3)])
    reply = client.receive()
    assert sorted(response["id"] for response in reply) == [0, 1, 2]
    assert {response["error"]["code"] for response in reply} == {-32603}


# --------------------------------------------------------------------------
# Library loading
# --------------------------------------------------------------------------

def test_library_by_dotted_name(servers):
    env = dict(os.environ, PYTHONPATH=str(PLUGIN.parent))
    server = servers("jsonrpc", "-L", "rpc_plugin", env=env)
    client = RPCClient(server.connect())
    assert client.result("subtract", [42, 23]) == 19
    client.close()
    server.stop()


def test_library_by_relative_path(servers):
    server = servers("jsonrpc", "-L", os.path.relpath(PLUGIN, ROOT))
    client = RPCClient(server.connect())
    assert client.result("get_data") == ["hello", 5]
    client.close()
    server.stop()


def test_release_is_called_at_exit(servers, workdir):
    marker = os.path.join(workdir, "released")
    server = servers("jsonrpc", "-L", str(PLUGIN), "-C", marker)
    assert not os.path.exists(marker)
    server.stop()
    with open(marker) as released:
        assert released.read() == "released"


def write_library(directory, text):
    path = os.path.join(directory, "library.py")
    with open(path, "w") as library:
        library.write(text)
    return path


@pytest.mark.parametrize("source, message", [
    ("def broken(:\n", "SyntaxError"),
    ("raise ImportError('missing dependency xyz')\n", "missing dependency xyz"),
    ("VALUE = 1\n", "defines no METHODS"),
    ("METHODS = {'m': 42}\n", "'m' is not callable"),
    ("METHODS = {'rpc.m': print}\n", "invalid method name 'rpc.m'"),
])
def test_bad_library_stops_the_start(workdir, source, message):
    path = write_library(workdir, source)
    result = run("jsonrpc", "-R", os.path.join(workdir, "run"), "-n", "ws", "-L", path)
    assert result.returncode == 1
    assert message in result.stderr
    assert not os.path.lexists(os.path.join(workdir, "run", "ws"))


@pytest.mark.parametrize("library", ["no_such_module_xyz", "./no/such/file.py"])
def test_missing_library_stops_the_start(workdir, library):
    result = run("jsonrpc", "-R", os.path.join(workdir, "run"), "-n", "ws", "-L", library)
    assert result.returncode == 1
    assert "no_such_module_xyz" in result.stderr or "no such file" in result.stderr


@pytest.mark.parametrize("daemon", [[], ["-D"]])
def test_failing_init_stops_the_start(workdir, daemon):
    result = run("jsonrpc", "-R", os.path.join(workdir, "run"), "-n", "ws", "-L", str(PLUGIN),
                 "-C", "fail", *daemon)
    assert result.returncode == 1
    assert "init failed" in result.stderr and "the test library refuses to start" in result.stderr
    assert not os.path.lexists(os.path.join(workdir, "run", "ws"))


def test_library_is_required(workdir):
    result = run("jsonrpc", "-R", os.path.join(workdir, "run"))
    assert result.returncode == 2
    assert "-L" in result.stderr
