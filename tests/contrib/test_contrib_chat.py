"""websocket_chat: messages go to every other client, one packet each; -w commands.

"Nothing else arrived" is checked without waiting: the client asks someone
to send a marker afterwards, and the marker must be the next message.
"""
import os
import signal
import subprocess
import sys
import threading

import pytest

from ouistiti_gw.green.unix import recv_packet
from ouistiti_gw_contrib.chatname import CHARACTERS, LENGTH, MIXED_SCRIPTS, NOT_PLAIN, NOT_UTF8, NUMBERED
from support import TIMEOUT, wait_until
from support.samples import join, next_after

CLIENTS, MESSAGES = 50, 20


@pytest.fixture(scope="module")
def chat(module_servers):
    return module_servers("chat", "-w")


@pytest.fixture(scope="module")
def plain_chat(module_servers):
    return module_servers("chat", name="plain")


def test_message_goes_to_all_others_not_the_sender(plain_chat):
    a, b, c = (plain_chat.connect() for _ in range(3))
    # Each one's message reaching the others proves all are registered.
    c.send(b"c is here")
    assert recv_packet(a) == recv_packet(b) == b"c is here"
    a.send(b"hello from a")
    assert recv_packet(b) == recv_packet(c) == b"hello from a"
    assert next_after(b, a) == []
    assert next_after(a, c) == [b"marker %d" % id(a)]  # b's marker came to c too
    for sock in (a, b, c):
        sock.close()


def test_without_w_commands_are_plain_messages(plain_chat):
    a, b = plain_chat.connect(), plain_chat.connect()
    b.send(b"b is here")
    assert recv_packet(a) == b"b is here"
    a.send(b"WSHello alice")
    assert recv_packet(b) == b"WSHello alice"
    assert next_after(b, a) == []  # no WSWelcome
    a.close()
    b.close()


def test_message_boundaries_and_bytes_are_kept(chat):
    a, b = join(chat, b"bound_a"), join(chat, b"bound_b")
    messages = [b"one", b"two\n", b"\0binary\xff\x00", os.urandom(100_000), b"x"]
    for message in messages:
        a.send(message)
    assert [recv_packet(b) for _ in messages] == messages
    a.close()
    b.close()


def test_fifty_clients_each_message_delivered_once_in_order(chat):
    clients = [join(chat, b"many%02d" % number) for number in range(CLIENTS)]
    received = [[] for _ in clients]
    expected = (CLIENTS - 1) * MESSAGES

    def read(number):
        while len(received[number]) < expected:
            received[number].append(recv_packet(clients[number]))

    readers = [threading.Thread(target=read, args=(number,)) for number in range(CLIENTS)]
    for reader in readers:
        reader.start()
    for sequence in range(MESSAGES):
        for number, sock in enumerate(clients):
            sock.send(b"%d:%d" % (number, sequence))
    for reader in readers:
        reader.join(TIMEOUT * 3)
        assert not reader.is_alive()
    for number, messages in enumerate(received):
        by_sender = {}
        for message in messages:
            sender, sequence = message.split(b":")
            by_sender.setdefault(int(sender), []).append(int(sequence))
        assert number not in by_sender
        assert by_sender == {sender: list(range(MESSAGES)) for sender in range(CLIENTS) if sender != number}
    # Nothing more than expected was delivered either: the next is a marker.
    clients[0].send(b"end")
    assert {recv_packet(sock) for sock in clients[1:]} == {b"end"}
    clients[1].send(b"end")
    assert recv_packet(clients[0]) == b"end"
    for sock in clients:
        sock.close()


def test_hello_gives_unique_names(chat):
    first = join(chat, b"bob")
    second, third = chat.connect(), chat.connect()
    second.send(b"WSHello bob")
    assert recv_packet(second) == b"WSWelcome bob001"
    third.send(b"WSHello bob\n")
    assert recv_packet(third) == b"WSWelcome bob002"
    first.send(b"WSHello bob")  # already its name: kept
    assert recv_packet(first) == b"WSWelcome bob"
    for sock in (first, second, third):
        sock.close()


@pytest.mark.parametrize("name, reason", [
    (b"two\nlines", CHARACTERS), (b"tab\tbed", CHARACTERS), (b"\x1b[31mred", CHARACTERS),
    (b"nul\0byte", CHARACTERS), ("zero\u200bwidth".encode(), CHARACTERS), ("soft\u00adhyphen".encode(), CHARACTERS),
    ("bidi\u202eevil".encode(), CHARACTERS), ("\u3164".encode(), CHARACTERS), ("\u0301accent".encode(), CHARACTERS),
    (b"semi;colon", CHARACTERS), (b"\xff\xfe", NOT_UTF8), (b"bad\xc3", NOT_UTF8), (b"x" * 33, LENGTH),
    (b"x" * 100_000, LENGTH), (b"", LENGTH), (b"bob001", NUMBERED), (b"agent007", NUMBERED), (b"1234", NUMBERED),
    ("b\u043eb".encode(), MIXED_SCRIPTS), ("\u0430lice".encode(), MIXED_SCRIPTS),  # Cyrillic o, a
    ("p\u03b1ypal".encode(), MIXED_SCRIPTS), ("\u5c71\ud55c\u3055".encode(), MIXED_SCRIPTS),  # Greek; Han+Hangul+kana
    ("\uff42\uff4f\uff42".encode(), NOT_PLAIN), ("\U0001d41b\U0001d428\U0001d41b".encode(), NOT_PLAIN),  # wide, bold
    ("\u0133sselmeer".encode(), NOT_PLAIN),  # the ligature ij
])
def test_hello_refuses_names_outside_the_rules(chat, name, reason):
    sock = join(chat, b"rules")
    sock.send(b"WSHello " + name)
    assert recv_packet(sock) == b"WSError WSHello " + reason.encode()
    sock.send(b"WSWhois rules")  # still known by the name it had
    assert recv_packet(sock) == b"WSIs rules network error"
    assert f"client rules: WSHello refused: {reason}" in chat.log()
    sock.close()


@pytest.mark.parametrize("name", [b"x" * 32, b"r2d2", b"bob12", b"a.b-c_d", "Zo\u00eb".encode(),
                                  "\u65e5\u672c\u8a9e".encode(), "\u0928\u092e\u0938\u094d\u0924\u0947".encode(),
                                  "\u0431\u043e\u0431".encode(),  # all Cyrillic: a name of its own
                                  "\u5c71\u7530\u3055\u3093_\u30ab\u30fc".encode(),  # Han, hiragana, katakana
                                  "Tanaka\u7530\u4e2d".encode(), "\ud55c\uae00\u5b57".encode(),  # Latin+Han, Hangul+Han
                                  "Stra\u00dfe".encode()])
def test_hello_accepts_names_within_the_rules(chat, name):
    sock = chat.connect()
    sock.send(b"WSHello " + name)
    assert recv_packet(sock) == b"WSWelcome " + name
    sock.close()


def test_a_look_alike_of_a_held_name_is_refused(chat):
    """The audit's case: ``bоb`` with a Cyrillic о showed exactly as ``bob``, held by another."""
    bob = join(chat, b"bob")
    impostor = chat.connect()
    impostor.send("WSHello b\u043eb".encode())
    assert recv_packet(impostor) == b"WSError WSHello " + MIXED_SCRIPTS.encode()
    impostor.send(b"WSHello bob")  # the real name is numbered, as any duplicate
    assert recv_packet(impostor) == b"WSWelcome bob001"
    bob.close()
    impostor.close()


def test_names_are_compared_in_nfc(chat):
    first, second = chat.connect(), chat.connect()
    first.send("WSHello ren\u00e9".encode())
    assert recv_packet(first) == "WSWelcome ren\u00e9".encode()
    second.send("WSHello rene\u0301".encode())  # the same name, decomposed
    assert recv_packet(second) == "WSWelcome ren\u00e9001".encode()
    second.send("WSWhois rene\u0301".encode())
    assert recv_packet(second) == "WSIs ren\u00e9 network error".encode()
    second.send("WSPrivate rene\u0301 hi".encode())
    assert recv_packet(first) == b"hi"
    first.close()
    second.close()


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\0", b""])
def test_command_line_endings_are_ignored(chat, ending):
    sock = chat.connect()
    sock.send(b"WSHello carol_%d" % len(ending) + ending)
    assert recv_packet(sock) == b"WSWelcome carol_%d" % len(ending)
    sock.send(b"WSWhois carol_%d" % len(ending) + ending)
    assert recv_packet(sock) == b"WSIs carol_%d network error" % len(ending)
    sock.close()


def test_private_goes_only_to_the_named_clients(chat):
    sender, dave, other = join(chat, b"priv_s"), join(chat, b"dave"), join(chat, b"priv_o")
    sender.send(b"WSPrivate dave meet me at noon\n")
    assert recv_packet(dave) == b"meet me at noon"
    assert next_after(dave, other) == []
    assert next_after(other, sender) == [b"marker %d" % id(other)]  # dave's marker only
    for sock in (sender, dave, other):
        sock.close()


def test_whois(chat):
    asker, erin = join(chat, b"asker"), join(chat, b"erin")
    asker.send(b"WSWhois erin")
    assert recv_packet(asker) == b"WSIs erin network error"
    asker.send(b"WSWhois nobody_here")
    assert recv_packet(asker) == b"WSIs nobody_here undefined"
    erin.close()
    wait_until(lambda: asker.send(b"WSWhois erin") and recv_packet(asker) == b"WSIs erin undefined",
               "erin to be gone")
    asker.close()


def test_commands_without_argument_are_relayed(chat):
    a, b = join(chat, b"noarg_a"), join(chat, b"noarg_b")
    for message in (b"WSHello", b"WSWhois", b"WSPrivate", b"WSPrivate noarg_b"):
        a.send(message)
        if message != b"WSPrivate noarg_b":
            assert recv_packet(b) == message
    assert next_after(b, a) == []
    a.close()
    b.close()


def test_killed_client_does_not_stall_the_chat(chat):
    victim = subprocess.Popen(
        [sys.executable, "-c", (
            "import socket, sys\n"
            "s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)\n"
            f"s.connect({chat.path!r})\n"
            "s.send(b'WSHello ghost')\n"
            "print(s.recv(100).decode(), flush=True)\n"
            "sys.stdin.read()\n")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert victim.stdout.readline().strip() == "WSWelcome ghost"
    a, b = join(chat, b"alive_a"), join(chat, b"alive_b")
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    for number in range(100):
        a.send(b"after %d" % number)
    assert [recv_packet(b) for _ in range(100)] == [b"after %d" % number for number in range(100)]
    wait_until(lambda: a.send(b"WSWhois ghost") and recv_packet(a) == b"WSIs ghost undefined",
               "the killed client to be removed")
    a.close()
    b.close()


def test_client_that_stops_reading_is_dropped_not_waited_for(chat):
    from ouistiti_gw_contrib.chat import MAX_PENDING_BYTES
    with open("/proc/sys/net/core/wmem_max") as limit:
        kernel_buffer = 2 * int(limit.read())  # the server's SO_SNDBUF at most
    idle, sender, reader = join(chat, b"idle"), join(chat, b"sender"), join(chat, b"reader")
    message = b"y" * 49152
    count = (kernel_buffer + MAX_PENDING_BYTES) // len(message) + 50
    # The reader keeps up (it gets each message before the next is sent), so
    # only the idle client falls behind, by more than the server keeps.
    for _ in range(count):
        sender.send(message)
        assert recv_packet(reader) == message
    # The idle client gets what was queued before it was dropped, then the end.
    idle_got = 0
    while recv_packet(idle):
        idle_got += 1
    assert idle_got < count
    for sock in (idle, sender, reader):
        sock.close()
