# hello_rpc.py: websocket_jsonrpc -R /tmp/ws -n hello -L ./hello_rpc.py -C "Hello"
from ouistiti_gw_contrib.rpc import RPCError


def init(config):
    return config or "Hi"


def greet(session, name):
    if not name:
        raise RPCError(1, "who?")
    return f"{session.ctx}, {name}!"


METHODS = {"greet": greet}
