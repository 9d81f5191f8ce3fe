"""The demo page in a real browser: Debian's headless Chromium driven by Playwright, end to end.

``ouistiti-gw demo`` runs as the README says (temporary docroot, echo, chat -w, jsonrpc with
authrpc), and the page's JavaScript -- the seed manual's connection code with its two bugs
mended -- talks to the sample servers through the gateway. Every page must load without a console
error or a failed request (the favicon included).
"""
import urllib.request

import pytest
from playwright.sync_api import expect, sync_playwright

from support import BIN, ServerProcess, free_port

pytestmark = pytest.mark.chromium

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture(scope="module")
def demo():
    port = free_port()
    with ServerProcess([str(BIN / "ouistiti-gw"), "demo", "--port", str(port)], port) as process:
        yield f"http://127.0.0.1:{port}/"
        assert "Traceback" not in process.log()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def open_page(browser, demo):
    """Open the demo in a fresh browser context, its three WebSockets open; after the test, no page
    may have logged a console error or got an HTTP error."""
    contexts = []
    problems = []

    def open_one():
        context = browser.new_context()
        contexts.append(context)
        page = context.new_page()
        page.on("console", lambda message: message.type == "error" and problems.append(message.text))
        page.on("response", lambda response: response.status >= 400
                and problems.append(f"{response.status} {response.url}"))
        page.goto(demo)
        for panel in ("echo", "chat", "rpc"):
            expect(page.locator(f"#{panel}-state")).to_have_text("open")
        return page

    yield open_one
    for context in contexts:
        context.close()
    assert problems == []


def test_favicon_is_served(demo, open_page):
    """Where browsers look by default, and where the page's icon link points (Playwright shows the
    browser's own favicon request only as a console error when it fails, so the page fetches it)."""
    with urllib.request.urlopen(demo + "favicon.ico", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("image/")
        assert response.read(4) == b"\0\0\1\0"  # an ICO header
    page = open_page()
    assert page.evaluate("fetch(document.querySelector('link[rel=icon]').href).then(r => r.status)") == 200


def test_echo_round_trip(open_page):
    page = open_page()
    page.fill("#echo-input", "héllo from Chromium 😀")
    page.click("#echo-send")
    expect(page.locator("#echo-log")).to_contain_text("< héllo from Chromium 😀")


def test_chat_says_join_first(open_page):
    page = open_page()
    expect(page.locator("#chat")).to_contain_text("press Join first")
    expect(page.locator("#chat-send")).to_be_disabled()
    page.fill("#chat-name", "carol")
    page.click("#chat-hello")
    expect(page.locator("#chat-log")).to_have_text("joined as carol")
    expect(page.locator("#chat-send")).to_be_enabled()


def test_every_panel_says_what_it_does(open_page):
    page = open_page()
    for panel in ("echo", "chat", "jsonrpc"):
        expect(page.locator(f"#{panel} p.about")).not_to_be_empty()


def test_two_pages_chat_with_names(open_page):
    alice, bob = open_page(), open_page()
    alice.fill("#chat-name", "alice")
    alice.click("#chat-hello")
    expect(alice.locator("#chat-log")).to_contain_text("joined as alice")
    bob.fill("#chat-name", "alice")  # taken: the server numbers the second one
    bob.click("#chat-hello")
    expect(bob.locator("#chat-log")).to_contain_text("joined as alice001")
    alice.fill("#chat-input", "hello bob")
    alice.click("#chat-send")
    expect(alice.locator("#chat-log")).to_contain_text("alice: hello bob")
    expect(bob.locator("#chat-log")).to_contain_text("alice: hello bob")
    bob.fill("#chat-input", "WSPrivate alice just for you")
    bob.click("#chat-send")
    expect(alice.locator("#chat-log")).to_contain_text("alice001 (private): just for you")


def test_auth_call_succeeds_and_fails(open_page):
    page = open_page()
    page.fill("#rpc-user", "demo")
    page.fill("#rpc-passwd", "demo")
    page.click("#rpc-auth")
    expect(page.locator("#rpc-log")).to_contain_text("welcome demo (group users)")
    page.fill("#rpc-passwd", "wrong")
    page.click("#rpc-auth")
    expect(page.locator("#rpc-log")).to_contain_text("error 1: user or password not found")


def test_the_pages_sockets_are_compressed_and_chat_works(open_page):
    """Chromium offers permessage-deflate on every WebSocket; the gateway accepts it (asking for
    client_no_context_takeover), and long chat lines, which it sends compressed, arrive intact."""
    alice, bob = open_page(), open_page()
    for page in (alice, bob):
        assert page.evaluate("[echo.extensions, chat.extensions, rpc.extensions]") == \
            ["permessage-deflate; client_no_context_takeover"] * 3
    alice.fill("#chat-name", "alice")
    alice.click("#chat-hello")
    bob.fill("#chat-name", "bob")
    bob.click("#chat-hello")
    expect(bob.locator("#chat-log")).to_contain_text("joined as bob")
    line = "a long line, compressed both ways, with accents: é à ü 😀 " * 6
    alice.fill("#chat-input", line)
    alice.click("#chat-send")
    expect(bob.locator("#chat-log")).to_contain_text("alice: " + line.strip())
    alice.fill("#echo-input", line)
    alice.click("#echo-send")
    expect(alice.locator("#echo-log")).to_contain_text("< " + line.strip())
