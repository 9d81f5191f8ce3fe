"""``WebSocketGateway`` called as a WSGI server calls it, for what no server process shows: what
is the wrapped app's, and a WebSocket request on a server that cannot upgrade it."""
import logging

import pytest

from ouistiti_gw import WebSocketGateway


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"app: {environ['PATH_INFO']}".encode()]


def request(path: str, **headers: str) -> dict:
    """The environ of ``GET path`` as a WSGI server without WebSocket support builds it."""
    return {"REQUEST_METHOD": "GET", "PATH_INFO": path, "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8080",
            "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "40000", "wsgi.url_scheme": "http",
            "HTTP_HOST": "127.0.0.1:8080", **{f"HTTP_{name.upper()}": value for name, value in headers.items()}}


def call(gateway: WebSocketGateway, environ: dict) -> tuple[list[str], bytes]:
    statuses = []
    body = b"".join(gateway(environ, lambda status, headers: statuses.append(status)))
    return statuses, body


@pytest.mark.parametrize("path", ["/metrics", "", "/"])
def test_without_metrics_every_plain_request_is_the_apps(tmp_path, path):
    """No ``metrics_path``: no page of the gateway's, not even at an empty path."""
    assert call(WebSocketGateway(app, str(tmp_path)), request(path)) == (["200 OK"], f"app: {path}".encode())


def test_a_websocket_request_on_a_server_that_cannot_upgrade_it_goes_to_the_app(tmp_path, caplog):
    gateway = WebSocketGateway(app, str(tmp_path))
    environ = request("/echo", upgrade="websocket", connection="Upgrade", sec_websocket_version="13",
                      sec_websocket_key="dGhlIHNhbXBsZSBub25jZQ==")
    with caplog.at_level(logging.INFO, logger="ouistiti_gw"):
        assert call(gateway, environ) == (["200 OK"], b"app: /echo")
    assert [(record.name, record.levelno, record.getMessage()) for record in caplog.records] == [
        ("ouistiti_gw.gateway.middleware", logging.WARNING,
         "WebSocket request for /echo on a server that cannot upgrade it (use "
         "ouistiti_gw.worker.GatewayWorker or GeventWebSocketWorker)")]
