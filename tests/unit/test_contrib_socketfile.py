"""contrib's socket file on real sockets: what a start-up removes, and what it refuses to."""
from __future__ import annotations

import os
import socket

import pytest

from ouistiti_gw_contrib.errors import StartupError
from ouistiti_gw_contrib.socketfile import bind_socket, remove_stale_socket, socket_path


def test_a_stale_socket_is_removed(docroot):
    path = os.path.join(docroot, "stale")
    socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).bind(path)  # its server is gone, the file stays
    remove_stale_socket(path)
    assert not os.path.exists(path)


@pytest.mark.parametrize("sock_type", [socket.SOCK_STREAM, socket.SOCK_SEQPACKET], ids=["stream", "seqpacket"])
def test_a_live_socket_of_either_type_is_kept(docroot, sock_type):
    path = os.path.join(docroot, "live")
    with socket.socket(socket.AF_UNIX, sock_type) as server:
        server.bind(path)
        server.listen(1)
        with pytest.raises(StartupError, match="in use"):
            remove_stale_socket(path)
    assert os.path.exists(path)


def test_a_file_that_is_not_a_socket_is_kept(docroot):
    path = os.path.join(docroot, "data")
    with open(path, "w") as file:
        file.write("precious")
    with pytest.raises(StartupError, match="not a socket"):
        remove_stale_socket(path)
    assert open(path).read() == "precious"


def test_a_path_too_long_for_sun_path_is_refused_before_binding(docroot):
    name = "n" * (108 - len(docroot) - 1)  # DIR/NAME: 108 bytes, one over the limit
    with pytest.raises(StartupError, match="too long"):
        socket_path(docroot, name)
    assert socket_path(docroot, name[1:]) == os.path.join(docroot, name[1:])


@pytest.mark.parametrize("name", ["", "/abs", "a/../b", "a//b"])
def test_a_name_that_leaves_the_directory_is_refused(docroot, name):
    with pytest.raises(StartupError, match="invalid socket name"):
        socket_path(docroot, name)


def test_only_the_socket_bound_is_removed_at_exit(docroot):
    path = os.path.join(docroot, "sub", "mine")
    bound = bind_socket(path, socket.SOCK_SEQPACKET, owner=None)
    try:
        assert oct(os.stat(path).st_mode & 0o777) == oct(0o777)
        os.unlink(path)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
            other.bind(path)  # another server's socket took the path
            bound.unlink()
            assert os.path.exists(path)
    finally:
        bound.sock.close()
        os.close(bound.dir_fd)
