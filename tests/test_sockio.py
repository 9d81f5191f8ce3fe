"""``sockio.Receiver``: waiting before a read changes when the system call is made, never what it returns."""
import gevent
import pytest
from gevent import socket, ssl

from ouistiti_gw.sockio import Receiver
from support import self_signed_certificate


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
