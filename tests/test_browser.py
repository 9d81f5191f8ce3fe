"""The demo page in a real browser: Debian's headless Chromium driven by Playwright, end to end.

``ouistiti-gw demo`` runs as the README says (temporary docroot, echo, chat -w, jsonrpc with
authrpc), and the page's JavaScript -- the seed manual's connection code with its two bugs
mended -- talks to the sample servers through the gateway.
"""
import pytest
from playwright.sync_api import expect, sync_playwright

from support import BIN, ServerProcess, free_port

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
    contexts = []

    def open_one():
        context = browser.new_context()
        contexts.append(context)
        page = context.new_page()
        page.goto(demo)
        for panel in ("echo", "chat", "rpc"):
            expect(page.locator(f"#{panel}-state")).to_have_text("open")
        return page

    yield open_one
    for context in contexts:
        context.close()


def test_echo_round_trip(open_page):
    page = open_page()
    page.fill("#echo-input", "héllo from Chromium 😀")
    page.click("#echo-send")
    expect(page.locator("#echo-log")).to_contain_text("< héllo from Chromium 😀")


def test_two_pages_chat_with_names(open_page):
    alice, bob = open_page(), open_page()
    alice.fill("#chat-name", "alice")
    alice.click("#chat-hello")
    expect(alice.locator("#chat-log")).to_contain_text("WSWelcome alice")
    bob.fill("#chat-name", "alice")  # taken: the server numbers the second one
    bob.click("#chat-hello")
    expect(bob.locator("#chat-log")).to_contain_text("WSWelcome alice001")
    alice.fill("#chat-input", "hello bob")
    alice.click("#chat-send")
    expect(bob.locator("#chat-log")).to_contain_text("hello bob")
    bob.fill("#chat-input", "WSPrivate alice just for you")
    bob.click("#chat-send")
    expect(alice.locator("#chat-log")).to_contain_text("just for you")


def test_auth_call_succeeds_and_fails(open_page):
    page = open_page()
    page.fill("#rpc-user", "demo")
    page.fill("#rpc-passwd", "demo")
    page.click("#rpc-auth")
    expect(page.locator("#rpc-log")).to_contain_text("welcome demo (group users)")
    page.fill("#rpc-passwd", "wrong")
    page.click("#rpc-auth")
    expect(page.locator("#rpc-log")).to_contain_text("error 1: user or password not found")
