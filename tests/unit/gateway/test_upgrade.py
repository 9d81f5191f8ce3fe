"""The upgrade contract's request checks (RFC 6455 section 4.2.1), on plain environ dicts."""
from __future__ import annotations

import pytest

from ouistiti_gw.gateway.upgrade import SOCKET_KEY, accept_key, client_socket, handshake_error, is_websocket_request


def handshake(**changes: str) -> dict:
    environ = {"REQUEST_METHOD": "GET", "HTTP_UPGRADE": "websocket", "HTTP_CONNECTION": "Upgrade",
               "HTTP_SEC_WEBSOCKET_VERSION": "13", "HTTP_SEC_WEBSOCKET_KEY": "dGhlIHNhbXBsZSBub25jZQ=="}
    environ.update(changes)
    return environ


def test_accept_key_of_the_rfc_example():
    """Section 1.3's worked example."""
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize("upgrade, expected", [
    ("websocket", True), ("WebSocket", True), ("h2c, websocket", True), ("h2c", False), ("", False),
    ("websockets", False)])
def test_a_websocket_request_names_the_websocket_token(upgrade, expected):
    assert is_websocket_request({"HTTP_UPGRADE": upgrade}) is expected


def test_a_valid_handshake_passes():
    assert handshake_error(handshake(HTTP_CONNECTION="keep-alive, Upgrade"), "HTTP/1.1") is None


@pytest.mark.parametrize("changes, version, status, header", [
    ({"REQUEST_METHOD": "POST"}, "HTTP/1.1", "405 Method Not Allowed", ("Allow", "GET")),
    ({}, "HTTP/1.0", "400 Bad Request", None),
    ({"HTTP_CONNECTION": "keep-alive"}, "HTTP/1.1", "400 Bad Request", None),
    ({"HTTP_SEC_WEBSOCKET_VERSION": "8"}, "HTTP/1.1", "426 Upgrade Required", ("Sec-WebSocket-Version", "13")),
    ({"CONTENT_LENGTH": "5"}, "HTTP/1.1", "400 Bad Request", None),
    ({"HTTP_TRANSFER_ENCODING": "chunked"}, "HTTP/1.1", "400 Bad Request", None),
    ({"HTTP_SEC_WEBSOCKET_KEY": "not base64!"}, "HTTP/1.1", "400 Bad Request", None),
    ({"HTTP_SEC_WEBSOCKET_KEY": "AAAAAAAAAAAAAAAAAAAA"}, "HTTP/1.1", "400 Bad Request", None),  # 15 bytes
], ids=["post", "http-1.0", "no-upgrade-token", "version-8", "body", "chunked", "key-not-base64", "key-15-bytes"])
def test_an_invalid_handshake_gets_its_status(changes, version, status, header):
    error = handshake_error(handshake(**changes), version)
    assert error is not None
    got_status, headers, why = error
    assert got_status == status and why
    if header is not None:
        assert header in headers


def test_the_client_socket_is_ours_first_then_gunicorns():
    ours, gunicorns = object(), object()
    assert client_socket({SOCKET_KEY: ours, "gunicorn.sock": gunicorns}) is ours
    assert client_socket({"gunicorn.sock": gunicorns}) is gunicorns
    assert client_socket({"gunicorn.socket": gunicorns}) is gunicorns
    assert client_socket({}) is None
