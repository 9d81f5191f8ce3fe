"""The demo page in a real browser: Debian's headless Chromium driven by Playwright, end to end.

``ouistiti-gw demo`` runs as the README says (temporary docroot, echo, chat -w, jsonrpc with
authrpc), and the page's JavaScript -- the seed manual's connection code with its two bugs
mended -- talks to the sample servers through the gateway. Every page must load without a console
error or a failed request (the favicon included). The same page under ``example.ini``, which
starts only the echo server, tells which command starts each missing server.
"""
import os
import re
import shlex
import subprocess
import sys
import urllib.request
from dataclasses import dataclass

import pytest
from playwright.sync_api import expect, sync_playwright

from ouistiti_gw.cli import unix_accepts
from support import BIN, ROOT, wait_until
from support.addresses import free_port, remove_tree, short_tempdir
from support.processes import ServerProcess

pytestmark = pytest.mark.chromium

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
PANELS = ("echo", "chat", "rpc")
#: The demo's account (ouistiti_gw.cli.DEMO_USER, DEMO_PASSWORD), which the page names.
DEMO_PASSWORD = "demo"


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
def watched_page(browser):
    """``watched_page(url)``: the page loaded in a fresh browser context, and the list, growing, of
    what went wrong on it (console errors, HTTP errors)."""
    contexts = []

    def open_one(url):
        context = browser.new_context()
        contexts.append(context)
        page = context.new_page()
        problems = []
        page.on("console", lambda message: message.type == "error" and problems.append(message.text))
        page.on("response", lambda response: response.status >= 400
                and problems.append(f"{response.status} {response.url}"))
        page.goto(url)
        return page, problems

    yield open_one
    for context in contexts:
        context.close()


@pytest.fixture
def open_page(watched_page, demo):
    """Open the demo in a fresh browser context, its three WebSockets open; after the test, no page
    may have logged a console error or got an HTTP error."""
    problems = []

    def open_one():
        page, page_problems = watched_page(demo)
        problems.append(page_problems)
        for panel in PANELS:
            expect(page.locator(f"#{panel}-state")).to_have_text("open")
        return page

    yield open_one
    assert [problem for page_problems in problems for problem in page_problems] == []


def join(page, name: str, welcomed_as: str | None = None) -> None:
    """Join the chat as *name* with the Join button; the server welcomes it (numbered if taken)."""
    page.fill("#chat-name", name)
    page.click("#chat-hello")
    expect(page.locator("#chat-log")).to_contain_text(f"joined as {welcomed_as or name}")


def log_in(page, password: str = DEMO_PASSWORD) -> None:
    """Log in as the demo's user with the Log in button."""
    page.fill("#rpc-user", "demo")
    page.fill("#rpc-passwd", password)
    page.click("#rpc-auth")


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
    join(alice, "alice")
    join(bob, "alice", welcomed_as="alice001")  # taken: the server numbers the second one
    alice.fill("#chat-input", "hello bob")
    alice.click("#chat-send")
    expect(alice.locator("#chat-log")).to_contain_text("alice: hello bob")
    expect(bob.locator("#chat-log")).to_contain_text("alice: hello bob")
    bob.fill("#chat-input", "WSPrivate alice just for you")
    bob.click("#chat-send")
    expect(alice.locator("#chat-log")).to_contain_text("alice001 (private): just for you")


def test_auth_call_succeeds_and_fails(open_page):
    page = open_page()
    log_in(page)
    expect(page.locator("#rpc-log")).to_contain_text("welcome demo (group users)")
    log_in(page, "wrong")
    expect(page.locator("#rpc-log")).to_contain_text("error 1: user or password not found")


def test_the_pages_sockets_are_compressed_and_chat_works(open_page):
    """Chromium offers permessage-deflate on every WebSocket; the gateway accepts it (asking for
    client_no_context_takeover), and long chat lines, which it sends compressed, arrive intact."""
    alice, bob = open_page(), open_page()
    for page in (alice, bob):
        assert page.evaluate("[echo.extensions, chat.extensions, rpc.extensions]") == \
            ["permessage-deflate; client_no_context_takeover"] * 3
    join(alice, "alice")
    join(bob, "bob")
    line = "a long line, compressed both ways, with accents: é à ü 😀 " * 6
    alice.fill("#chat-input", line)
    alice.click("#chat-send")
    expect(bob.locator("#chat-log")).to_contain_text("alice: " + line.strip())
    alice.fill("#echo-input", line)
    alice.click("#echo-send")
    expect(alice.locator("#echo-log")).to_contain_text("< " + line.strip())


def test_enter_sends_in_every_field(open_page):
    """Enter in a field does what its row's button does: Send, Join, Log in (from either field)."""
    page = open_page()
    page.fill("#echo-input", "sent with Enter")
    page.press("#echo-input", "Enter")
    expect(page.locator("#echo-log")).to_contain_text("< sent with Enter")
    page.fill("#chat-name", "dave")
    page.press("#chat-name", "Enter")
    expect(page.locator("#chat-log")).to_have_text("joined as dave")
    page.fill("#chat-input", "hi, with Enter")
    page.press("#chat-input", "Enter")
    expect(page.locator("#chat-log")).to_contain_text("dave: hi, with Enter")
    for field in ("#rpc-passwd", "#rpc-user"):
        page.fill("#rpc-user", "demo")
        page.fill("#rpc-passwd", DEMO_PASSWORD)
        page.press(field, "Enter")
    expect(page.locator("#rpc-log > div")).to_have_text(["welcome demo (group users)"] * 2)


def test_send_empties_the_message_inputs(open_page):
    """After Send (or Log in) the message (the password) is gone from its input, ready for the next."""
    page = open_page()
    page.fill("#echo-input", "once")
    page.click("#echo-send")
    expect(page.locator("#echo-log")).to_contain_text("< once")
    expect(page.locator("#echo-input")).to_have_value("")
    join(page, "erin")
    page.fill("#chat-input", "only once")
    page.click("#chat-send")
    expect(page.locator("#chat-log")).to_contain_text("erin: only once")
    expect(page.locator("#chat-input")).to_have_value("")
    expect(page.locator("#chat-name")).to_have_value("erin")
    log_in(page)
    expect(page.locator("#rpc-log")).to_contain_text("welcome demo")
    expect(page.locator("#rpc-passwd")).to_have_value("")
    expect(page.locator("#rpc-user")).to_have_value("demo")


def test_an_empty_login_shows_what_the_server_says_is_wrong(open_page):
    """authrpc answers -32602 with its reason in the error's data: the page shows both."""
    page = open_page()
    page.click("#rpc-auth")
    expect(page.locator("#rpc-log")).to_have_text(
        "error -32602: Invalid params (user must be a non-empty string)")
    page.fill("#rpc-user", "demo")
    page.click("#rpc-auth")
    expect(page.locator("#rpc-log > div").last).to_have_text(
        "error -32602: Invalid params (passwd must be a non-empty string)")


@dataclass
class Example:
    """``ouistiti-gw serve example.ini`` and what runs beside it."""

    url: str
    docroot: str
    directory: str
    servers: list


@pytest.fixture
def example():
    """example.ini as its header says to run it: ``ouistiti-gw serve example.ini`` and
    ``websocket_echo -R /tmp/ouistiti-gw -n echo``, with a free port and a docroot of its own."""
    directory = short_tempdir()
    docroot = os.path.join(directory, "run")
    port = free_port()
    ini = (ROOT / "example.ini").read_text()
    for setting, value in (("docroot = /tmp/ouistiti-gw", f"docroot = {docroot}"), ("port = 8080", f"port = {port}")):
        assert ini.count(f"\n{setting}\n") == 1, setting
        ini = ini.replace(f"\n{setting}\n", f"\n{value}\n")
    path = os.path.join(directory, "example.ini")
    with open(path, "w") as file:
        file.write(ini)
    running = Example(f"http://127.0.0.1:{port}/", docroot, directory, [])
    try:
        start_server(running, [str(BIN / "websocket_echo"), "-R", docroot, "-n", "echo"], "echo")
        with ServerProcess([str(BIN / "ouistiti-gw"), "serve", path], port) as gateway:
            yield running
            assert "Traceback" not in gateway.log()
    finally:
        for server in running.servers:
            server.terminate()
            assert server.wait(10) == 0
        remove_tree(directory)


def start_server(example: Example, argv: list[str], name: str) -> None:
    """Start a sample server in the example's directory and wait until ``docroot/name`` accepts."""
    example.servers.append(subprocess.Popen(argv, cwd=example.directory))
    wait_until(lambda: unix_accepts(os.path.join(example.docroot, name)), what=name)


def run_hint(example: Example, command: str) -> None:
    """Run a command the page shows, as a user would in the example's directory: DOCROOT is
    example.ini's docroot, ``python`` this Python, the sample servers the installed commands;
    a command that asks for a password gets the demo's."""
    argv = [example.docroot if word == "DOCROOT" else word for word in shlex.split(command)]
    if argv[0] == "python":
        subprocess.run([sys.executable, *argv[1:]], input=DEMO_PASSWORD + "\n", text=True, check=True,
                       cwd=example.directory, timeout=30)
    else:
        start_server(example, [str(BIN / argv[0]), *argv[1:]], argv[argv.index("-n") + 1])


def test_a_panel_without_its_server_says_which_command_starts_it(example, watched_page):
    """Under example.ini only echo runs: the gateway answers /chat and /jsonrpc with 404, which
    the browser reports as 1006, and each of those panels shows the commands that start its
    server. Run as shown, they make the panels work once the page is reloaded."""
    page, problems = watched_page(example.url)
    expect(page.locator("#echo-state")).to_have_text("open")
    for panel in ("chat", "rpc"):
        expect(page.locator(f"#{panel}-state")).to_have_text("closed (1006)")
        expect(page.locator(f"#{panel}-hint")).to_be_visible()
    expect(page.locator("#echo-hint")).to_be_hidden()
    expect(page.locator("#chat-hint")).to_contain_text("websocket_chat -R DOCROOT -n chat -w")
    handshake_404 = re.compile(r"WebSocket connection to 'ws://[^/]+/(chat|jsonrpc)' failed: .*404")
    assert len(problems) == 2 and all(handshake_404.search(problem) for problem in problems), problems

    for command in page.locator("#chat-hint .command, #rpc-hint .command").all_inner_texts():
        run_hint(example, command)
    problems.clear()
    page.reload()
    for panel in PANELS:
        expect(page.locator(f"#{panel}-state")).to_have_text("open")
        expect(page.locator(f"#{panel}-hint")).to_be_hidden()
    join(page, "frank")
    log_in(page)
    expect(page.locator("#rpc-log")).to_have_text("welcome demo (group users)")
    assert problems == []
