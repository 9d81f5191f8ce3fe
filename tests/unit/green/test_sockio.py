"""``sockio``: waiting before a read changes when the system call is made, never what it returns;
and a greenlet that never has to wait still lets the event loop serve the other sockets."""
from contextlib import contextmanager
from typing import Iterator

import gevent
import gevent.event
import pytest
from gevent import socket, ssl

from ouistiti_gw.green.sockio import READS_PER_TURN, Receiver, StreamEnded, recv_exactly, yield_to_loop
from support.clients import self_signed_certificate


def test_reads_after_the_socket_emptied_wait_for_data():
    left, right = socket.socketpair()
    receiver = Receiver(left)
    right.sendall(b"first")
    assert receiver.recv(100) == b"first"  # less than asked for: the socket is empty now
    later = gevent.spawn_later(0.1, right.sendall, b"second")
    assert receiver.recv(100) == b"second"
    later.join()
    right.close()
    assert receiver.recv(100) == b""  # the end of the stream still reads as b""
    left.close()


def test_the_socket_timeout_still_applies():
    left, right = socket.socketpair()
    left.settimeout(0.2)
    receiver = Receiver(left)
    right.sendall(b"x")
    assert receiver.recv(10) == b"x"
    with pytest.raises(socket.timeout):
        receiver.recv(10)
    left.close()
    right.close()


def test_full_reads_and_tls_sockets_are_read_at_once(tmp_path):
    left, right = socket.socketpair()
    receiver = Receiver(left)
    right.sendall(b"abcdef")
    assert receiver.recv(3) == b"abc"  # as much as asked for: more may be there, no wait
    assert receiver.recv(3) == b"def"
    left.close()
    right.close()
    # a TLS socket may hold decrypted bytes its descriptor does not show: never waited on
    certfile, keyfile = self_signed_certificate(str(tmp_path))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certfile, keyfile)
    raw, _ = socket.socketpair()
    wrapped = context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
    assert hasattr(wrapped, "_wait")  # gevent's SSLSocket is a gevent socket underneath
    assert Receiver(wrapped)._wait is None
    wrapped.close()


def turns_before(other_ran: gevent.event.Event, step, limit: int = 1000) -> int:
    """How many times ``step()`` runs before a greenlet waiting on a readable socket gets its turn."""
    for count in range(limit):
        if other_ran.is_set():
            return count
        step()
    return limit


@contextmanager
def reader_of_ready_data() -> Iterator[gevent.event.Event]:
    """A greenlet waiting to read a socket that has data now: it runs when the loop polls; the
    event is set once it has read."""
    left, right = socket.socketpair()
    ran = gevent.event.Event()

    def read() -> None:
        left.recv(10)
        ran.set()

    reader = gevent.spawn(read)
    gevent.sleep(0)  # the reader found nothing: it waits for its socket's event now
    right.sendall(b"ready")
    try:
        yield ran
    finally:
        reader.kill()
        left.close()
        right.close()


def test_yield_to_loop_lets_the_loop_poll_sockets_where_sleep_0_does_not():
    with reader_of_ready_data() as ran:
        assert turns_before(ran, lambda: gevent.sleep(0)) > 10  # callbacks run again and again first
    with reader_of_ready_data() as ran:
        assert turns_before(ran, yield_to_loop) == 1


def test_reads_that_never_wait_still_take_turns():
    """A peer that always has more to send must not keep the loop: after READS_PER_TURN reads in
    a row that did not wait, the receiver lets the loop serve the others."""
    left, right = socket.socketpair()
    right.sendall(b"x" * 1000)
    receiver = Receiver(left)
    with reader_of_ready_data() as ran:
        # the read after READS_PER_TURN of them lets the loop run first
        assert turns_before(ran, lambda: receiver.recv(1)) == READS_PER_TURN + 1
    left.close()
    right.close()


def test_recv_exactly_reads_across_pieces_and_says_when_the_stream_ends_short():
    left, right = socket.socketpair()
    later = gevent.spawn_later(0.05, right.sendall, b"lo, world")
    right.sendall(b"hel")
    assert recv_exactly(left, 12) == b"hello, world"
    later.join()
    right.sendall(b"abc")
    right.close()
    with pytest.raises(StreamEnded, match="5 bytes short"):
        recv_exactly(left, 8)
    left.close()
