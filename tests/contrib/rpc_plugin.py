"""RPC library for the jsonrpc tests: the methods used by the examples of the
JSON-RPC 2.0 specification, plus probes of the server's behaviour."""
from pathlib import Path

from ouistiti_gw_contrib.rpc import RPCError

#: Notifications received by this server process, in order.
NOTIFIED = []


def init(config):
    """``-C fail`` refuses to start; ``-C /path`` gets "released" at exit."""
    if config == "fail":
        raise RuntimeError("the test library refuses to start")
    return {"config": config}


def release(ctx):
    if ctx["config"] and ctx["config"].startswith("/"):
        Path(ctx["config"]).write_text("released")


def subtract(session, minuend, subtrahend):
    return minuend - subtrahend


def add_up(session, *numbers):
    return sum(numbers)


def update(session, *values):
    NOTIFIED.append(["update", list(values)])


def get_data(session):
    return ["hello", 5]


def notify_hello(session, value):
    NOTIFIED.append(["notify_hello", value])


def notify_sum(session, *numbers):
    NOTIFIED.append(["notify_sum", sum(numbers)])


def notified(session):
    return NOTIFIED


def config(session):
    return session.ctx["config"]


def echo(session, value):
    return value


def count(session):
    session.data["count"] = session.data.get("count", 0) + 1
    return session.data["count"]


def text_of_length(session, length):
    return "x" * length


def fail(session):
    raise ValueError("secret detail")


def refuse(session):
    raise RPCError(42, "refused", {"why": "testing"})


def not_json(session):
    return {1, 2}


METHODS = {
    "subtract": subtract, "sum": add_up, "update": update, "get_data": get_data,
    "notify_hello": notify_hello, "notify_sum": notify_sum, "notified": notified,
    "config": config, "echo": echo, "count": count, "text_of_length": text_of_length,
    "fail": fail, "refuse": refuse, "not_json": not_json,
}
