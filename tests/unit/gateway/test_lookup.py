"""From a name to the socket file, held open: ouistiti's subprotocol fallback and its bound, links
judged where they lead, hard links refused, and the file connected is the file looked up."""
import os
import socket
from pathlib import Path

import pytest

from ouistiti_gw.gateway.lookup import MAX_PROTOCOL_CANDIDATES, Target, open_target
from ouistiti_gw.gateway.names import NameRefused, NameRules
from ouistiti_gw.green.unix import BackendUnavailable

ALL = NameRules()


def socket_file(path: Path, listen: bool = False) -> socket.socket:
    """A UNIX socket bound at ``path`` (listening, if asked: connections wait in its backlog)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    if listen:
        sock.listen(8)
    return sock


def lookup(root: Path, name: str, protocols: list[str] = (), rules: NameRules = ALL) -> tuple[Target, int | None]:
    """The target and the inode of the file held open for it (None: nothing there)."""
    target, opened = open_target(str(root), rules, name, list(protocols))
    with opened:
        return target, os.fstat(opened.fd).st_ino if opened.exists else None


def inode(path: Path) -> int:
    return os.lstat(path).st_ino


def test_protocol_fallback_as_ouistiti(tmp_path):
    (tmp_path / "echo").touch()
    (tmp_path / "chat").mkdir()
    (tmp_path / "chat" / "room1").touch()
    # the name exists: it wins, the first requested protocol is answered
    assert lookup(tmp_path, "echo", ["x"]) == (Target("echo", "x"), inode(tmp_path / "echo"))
    # the name does not exist: a protocol of that name in docroot
    assert lookup(tmp_path, "anything", ["nope", "echo"]) == (Target("echo", "echo"), inode(tmp_path / "echo"))
    # the name is a directory: the protocol inside it
    assert lookup(tmp_path, "chat", ["room1"]) == (Target("chat/room1", "room1"), inode(tmp_path / "chat/room1"))
    # a hostile protocol is skipped, never looked up; so is a denied one
    assert lookup(tmp_path, "anything", ["../etc"]) == (Target("anything", "../etc"), None)
    deny_echo = NameRules.from_options("*", "echo")
    assert lookup(tmp_path, "anything", ["echo"], deny_echo) == (Target("anything", "echo"), None)
    # nothing found: the name asked for, which connect() refuses (404, or 403 for a directory)
    for name, status in (("anything", 404), ("chat", 403)):
        with pytest.raises(BackendUnavailable) as refused:
            open_target(str(tmp_path), ALL, name, ["nope"])[1].connect()
        assert refused.value.status == status


def test_only_the_first_candidates_are_tried(tmp_path):
    protocols = [f"p{i}" for i in range(6000)]
    (tmp_path / protocols[MAX_PROTOCOL_CANDIDATES]).touch()
    assert lookup(tmp_path, "missing", protocols) == (Target("missing", "p0"), None)
    (tmp_path / protocols[MAX_PROTOCOL_CANDIDATES - 1]).touch()
    last = protocols[MAX_PROTOCOL_CANDIDATES - 1]
    assert lookup(tmp_path, "missing", protocols) == (Target(last, last), inode(tmp_path / last))


def test_allow_and_deny_judge_the_resolved_name_too(tmp_path):
    (tmp_path / "internal").mkdir()
    (tmp_path / "internal" / "secret").touch()
    (tmp_path / "ws_echo").touch()
    (tmp_path / "ws_link").symlink_to("internal/secret")
    (tmp_path / "ws_dir").symlink_to("internal")
    (tmp_path / "ws_same").symlink_to("ws_echo")
    (tmp_path / "ws_abs").symlink_to(tmp_path / "ws_echo")
    only_ws = NameRules.from_options("ws_*")
    for name, protocols in (("ws_link", []), ("ws_dir/secret", []), ("ws_dir/missing", []),
                            ("ws_none", ["ws_link"]), ("ws_dir", ["secret"])):
        with pytest.raises(NameRefused, match="not served"):
            open_target(str(tmp_path), only_ws, name, protocols)
    for name in ("ws_same", "ws_abs"):
        assert lookup(tmp_path, name, rules=only_ws) == (Target(name, None), inode(tmp_path / "ws_echo"))
    # a missing candidate through a link is skipped, not judged
    assert lookup(tmp_path, "ws_none", ["ws_dir/missing"], only_ws) == (Target("ws_none", "ws_dir/missing"), None)


def test_links_out_of_docroot_and_link_loops(tmp_path):
    docroot, outside = tmp_path / "docroot", tmp_path / "outside"
    docroot.mkdir()
    outside.mkdir()
    (outside / "secret").touch()
    (docroot / "escape").symlink_to(outside / "secret")
    (docroot / "escape_dir").symlink_to(outside)
    (docroot / "self").symlink_to(".")
    (docroot / "loop").symlink_to("loop")
    for name in ("escape", "escape_dir/secret", "self"):
        with pytest.raises(NameRefused, match="outside docroot"):
            open_target(str(docroot), ALL, name, [])
    with pytest.raises(BackendUnavailable, match="loops") as refused:
        open_target(str(docroot), ALL, "loop", [])
    assert refused.value.status == 404


def test_a_socket_with_more_than_one_name_is_refused(tmp_path):
    bound = socket_file(tmp_path / "internal" / "secret")
    os.link(tmp_path / "internal" / "secret", tmp_path / "hard")
    try:
        for name, protocols in (("hard", []), ("internal/secret", []), ("missing", ["hard"])):
            with pytest.raises(NameRefused, match="2 names"):
                open_target(str(tmp_path), ALL, name, protocols)
        (tmp_path / "hard").unlink()
        assert lookup(tmp_path, "internal/secret")[1] == inode(tmp_path / "internal" / "secret")
    finally:
        bound.close()


def test_the_file_connected_is_the_file_looked_up(tmp_path):
    """``pub`` becomes a link to ``internal`` between the lookup and the connect: the connection
    still goes to the socket that was ``pub/secret`` when it was looked up."""
    served = socket_file(tmp_path / "pub" / "secret", listen=True)
    denied = socket_file(tmp_path / "internal" / "secret", listen=True)
    try:
        target, opened = open_target(str(tmp_path), NameRules.from_options("*", "internal/*"), "pub/secret", [])
        (tmp_path / "pub").rename(tmp_path / "elsewhere")
        (tmp_path / "pub").symlink_to("internal")
        with opened, opened.connect() as connected:
            served.settimeout(5)
            accepted, _ = served.accept()
            accepted.close()
            denied.setblocking(False)
            with pytest.raises(BlockingIOError):
                denied.accept()
            assert connected.getpeername() == str(tmp_path / "pub" / "secret")
    finally:
        served.close()
        denied.close()


def test_no_descriptor_is_left_open_whatever_the_outcome(tmp_path):
    (tmp_path / "dir" / "deeper").mkdir(parents=True)
    (tmp_path / "file").touch()
    (tmp_path / "link").symlink_to("dir")
    (tmp_path / "loop").symlink_to("loop")
    (tmp_path / "out").symlink_to("/")
    bound = socket_file(tmp_path / "dir" / "sock")
    os.link(tmp_path / "dir" / "sock", tmp_path / "twin")
    rules = NameRules.from_options("*", "dir/deeper")
    open_target(str(tmp_path), rules, "file", [])[1].close()  # docroot is held open from here on
    before = os.listdir("/proc/self/fd")
    try:
        for name, protocols in (("file", []), ("missing", ["file"]), ("dir", ["deeper", "sock"]), ("dir/deeper/x", []),
                                ("link/deeper", []), ("link", ["missing", "deeper"]), ("loop", []), ("out/etc", []),
                                ("twin", []), ("missing", ["missing", "twin"]), ("file/x", []), ("dir/sock", [])):
            try:
                open_target(str(tmp_path), rules, name, protocols)[1].close()
            except (NameRefused, BackendUnavailable):
                pass
        assert os.listdir("/proc/self/fd") == before
    finally:
        bound.close()


def test_a_docroot_replaced_is_looked_into_anew(tmp_path):
    """Docroot is held open between lookups; once the path names another directory (replaced,
    or a link on it pointed elsewhere), the next lookup uses that one, and the old one is let go."""
    docroot = tmp_path / "docroot"
    docroot.mkdir()
    first = socket_file(docroot / "sock")
    rules = NameRules.from_options("*", "")
    target, found = open_target(str(docroot), rules, "sock", [])
    first_inode = os.fstat(found.fd).st_ino
    found.close()
    descriptors = len(os.listdir("/proc/self/fd"))
    docroot.rename(tmp_path / "old")
    docroot.mkdir()
    second = socket_file(docroot / "sock")
    try:
        target, found = open_target(str(docroot), rules, "sock", [])
        with found:
            assert os.fstat(found.fd).st_ino == os.stat(docroot / "sock").st_ino != first_inode
        assert len(os.listdir("/proc/self/fd")) == descriptors + 1  # the new listening socket only
    finally:
        first.close()
        second.close()
