"""``fdpass``: descriptors over real UNIX socketpairs, both ways; every descriptor that arrives is
returned or closed (the process's ``/proc/self/fd`` is the judge)."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import gevent
import pytest
from gevent import socket as gsocket

import ouistiti_gw
from ouistiti_gw.green.fdpass import close_fds, receive_fds, send_fds


def open_fds() -> list[str]:
    return sorted(os.listdir("/proc/self/fd"))


def same_file(a: int, b: int) -> bool:
    return os.fstat(a)[:2] == os.fstat(b)[:2]  # (mode, inode)


@pytest.mark.parametrize("kind", [socket.SOCK_STREAM, socket.SOCK_SEQPACKET])
def test_descriptors_go_both_ways(kind):
    before = open_fds()
    left, right = socket.socketpair(socket.AF_UNIX, kind)
    pipe_read, pipe_write = os.pipe()
    ours, theirs = socket.socketpair()
    with left, right, ours, theirs:
        send_fds(left, b"a pipe", [pipe_read])
        data, fds, truncated = receive_fds(right, 100, 1)
        assert (data, len(fds), truncated) == (b"a pipe", 1, False)
        os.write(pipe_write, b"through the copy")
        assert os.read(fds[0], 100) == b"through the copy"
        close_fds(fds)
        send_fds(right, b"a socket back", [theirs.fileno()])  # the other way
        data, fds, truncated = receive_fds(left, 100, 2)
        assert (data, len(fds), truncated) == (b"a socket back", 1, False)
        with socket.socket(fileno=fds[0]) as copy:
            copy.sendall(b"hello")
            assert ours.recv(100) == b"hello"
    os.close(pipe_read)
    os.close(pipe_write)
    assert open_fds() == before


def test_a_message_without_descriptors():
    left, right = socket.socketpair()
    with left, right:
        send_fds(left, b"plain")
        assert receive_fds(right, 100, 2) == (b"plain", [], False)
        left.close()
        assert receive_fds(right, 100, 2) == (b"", [], False)  # the end of the stream


@pytest.mark.parametrize("kind", [socket.SOCK_STREAM, socket.SOCK_SEQPACKET])
def test_more_descriptors_than_allowed_are_all_closed(kind):
    """The kernel closes those that do not fit (MSG_CTRUNC); the ones that did are closed too:
    the caller gets none, and is told."""
    before = open_fds()
    files = [os.open(os.devnull, os.O_RDONLY) for _ in range(5)]
    left, right = socket.socketpair(socket.AF_UNIX, kind)
    with left, right:
        send_fds(left, b"too many", files)
        close_fds(files)
        assert receive_fds(right, 100, 2) == (b"too many", [], True)
    assert open_fds() == before


def test_peeking_leaves_the_message_queued():
    before = open_fds()
    left, right = socket.socketpair()
    with left, right:
        send_fds(left, b"peek at me", [left.fileno()])
        data, copies, _ = receive_fds(right, 100, 1, socket.MSG_PEEK)
        assert data == b"peek at me" and len(copies) == 1 and same_file(copies[0], left.fileno())
        close_fds(copies)
        data, fds, _ = receive_fds(right, 100, 1)
        assert data == b"peek at me" and len(fds) == 1 and same_file(fds[0], left.fileno())
        close_fds(fds)
    assert open_fds() == before


def test_a_stream_gets_all_the_data_with_the_descriptors_on_its_first_byte():
    """More than the socket buffer takes at once: the rest follows without a descriptor."""
    left, right = gsocket.socketpair()
    data = os.urandom(4 * 1024 * 1024)
    sender = gevent.spawn(send_fds, left, data, [left.fileno()])
    head, fds, truncated = receive_fds(right, 16, 1)
    assert len(fds) == 1 and not truncated
    close_fds(fds)
    received = [head]
    while sum(map(len, received)) < len(data):
        chunk, more, _ = receive_fds(right, 65536, 1)
        assert chunk and not more
        received.append(chunk)
    sender.get(timeout=10)
    assert b"".join(received) == data
    left.close()
    right.close()


def test_a_gevent_socket_waits_without_blocking_the_loop():
    left, right = gsocket.socketpair()
    ticks = []
    ticker = gevent.spawn(lambda: [ticks.append(gevent.sleep(0.01)) for _ in range(5)])
    gevent.spawn_later(0.1, send_fds, left, b"later", [left.fileno()])
    data, fds, _ = receive_fds(right, 100, 1)
    assert data == b"later" and len(ticks) == 5  # the loop ran the others meanwhile
    close_fds(fds)
    ticker.join()
    left.close()
    right.close()


def test_the_supervisors_master_loads_it_without_the_package():
    """The master runs ``reload/supervisor.py`` as a script in isolated mode: fdpass comes from its
    file (``green/fdpass.py``), and neither the package nor gevent is imported."""
    path = Path(ouistiti_gw.__file__).parent / "reload" / "supervisor.py"
    check = (f"import runpy, sys; found = runpy.run_path({str(path)!r}, run_name='master'); "
             "assert found['receive_fds'].__module__ == 'fdpass', found['receive_fds'].__module__; "
             "loaded = [m for m in sys.modules if m.startswith(('gevent', 'ouistiti_gw'))]; "
             "assert not loaded, loaded; assert sys.path[0] != " + repr(str(path.parent.parent / "green")))
    subprocess.run([sys.executable, "-I", "-c", check], check=True, timeout=30)
