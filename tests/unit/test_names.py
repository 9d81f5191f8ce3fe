"""The URL-to-socket rules: allow/deny globs and traversal-proof resolution (pure functions)."""
import os
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ouistiti_gw.names import (
    NameRefused,
    NameRules,
    Target,
    check_name,
    find_target,
    resolve_inside,
    wsgi_path_to_name,
)


@pytest.mark.parametrize("allow, deny, name, permitted", [
    ("*", "", "echo", True),
    ("*", "", "chat/room1", True),
    ("ws_*", "", "ws_echo", True),
    ("ws_*", "", "echo", False),
    ("ws_*, chat", "", "chat", True),
    ("*", "internal/*", "internal/admin", False),
    ("*", "internal/*", "internal/a/b", False),
    ("*", "internal/*", "internals", True),
    ("*", "echo", "echo", False),
    ("", "", "echo", False),
    ("chat/*", "chat/secret", "chat/room1", True),
    ("chat/*", "chat/secret", "chat/secret", False),
    ("*", "*", "echo", False),
    ("ECHO", "", "echo", False),  # case-sensitive, as file names are
])
def test_allow_deny_table(allow, deny, name, permitted):
    assert NameRules.from_options(allow, deny).permits(name) is permitted


@pytest.mark.parametrize("path_info", [
    "/", "//etc/passwd", "/../secret", "/a/../../secret", "/a/..", "/./echo", "/a//b", "/a/",
    "/..\\secret", "/a\\b", "/echo\x00", "/ec\nho", "/ec\rho", "/\x7f",
    "/%2e%2e/secret", "/%2E%2E%2Fsecret", "/..%2fsecret", "/%252e%252e%252fsecret",
    "/%25252e%25252e/x", "/%2fetc%2fpasswd", "/a%5c..%5csecret", "/%00", "/\xff\xfe", "/%80", "/%c3",
])
def test_hostile_names_are_refused(path_info):
    with pytest.raises(NameRefused):
        wsgi_path_to_name(path_info)


@pytest.mark.parametrize("path_info, name", [
    ("/echo", "echo"),
    ("/chat/room1", "chat/room1"),
    ("/caf\xc3\xa9", "café"),  # PATH_INFO is latin-1 decoded UTF-8 bytes (PEP 3333)
    ("/a.b..c", "a.b..c"),
    ("/...", "..."),
])
def test_plain_names_are_accepted(path_info, name):
    assert wsgi_path_to_name(path_info) == name


def test_symlink_out_of_docroot_is_refused(tmp_path):
    docroot, outside = tmp_path / "docroot", tmp_path / "outside"
    docroot.mkdir()
    outside.mkdir()
    (docroot / "escape").symlink_to(outside / "secret")
    (docroot / "escape_dir").symlink_to(outside)
    (docroot / "inside").symlink_to(docroot / "echo")
    for name in ("escape", "escape_dir/secret"):
        with pytest.raises(NameRefused):
            resolve_inside(str(docroot), name)
    assert resolve_inside(str(docroot), "inside") == str(docroot / "echo")


def test_docroot_itself_is_not_a_socket(tmp_path):
    (tmp_path / "self").symlink_to(tmp_path)
    with pytest.raises(NameRefused):
        resolve_inside(str(tmp_path), "self")


def test_too_long_for_sockaddr_un(tmp_path):
    with pytest.raises(NameRefused, match="too long"):
        resolve_inside(str(tmp_path), "x" * 120)


def test_protocol_fallback_as_ouistiti(tmp_path):
    root = str(tmp_path)
    (tmp_path / "echo").touch()
    (tmp_path / "chat").mkdir()
    (tmp_path / "chat" / "room1").touch()
    rules = NameRules()
    # the name exists: it wins, the first requested protocol is echoed
    assert find_target(root, rules, "echo", ["x"]) == Target("echo", f"{root}/echo", "x")
    # the name does not exist: a protocol of that name in docroot
    assert find_target(root, rules, "anything", ["nope", "echo"]) == Target("echo", f"{root}/echo", "echo")
    # the name is a directory: the protocol inside it
    assert find_target(root, rules, "chat", ["room1"]) == Target("chat/room1", f"{root}/chat/room1", "room1")
    # a hostile protocol is skipped, never resolved
    assert find_target(root, rules, "anything", ["../etc"]).path == f"{root}/anything"
    # a denied protocol is not a way around deny
    deny_echo = NameRules.from_options("*", "echo")
    assert find_target(root, deny_echo, "anything", ["echo"]).path == f"{root}/anything"
    assert find_target(root, NameRules.from_options("ws_*"), "anything", []) is None


name_chars = st.sampled_from(list(string.ascii_letters + string.digits + "./\\%-_~:@ \x00\n")
                             + ["é", "\u2024", "\uff0f"])


@settings(max_examples=500, deadline=None)
@given(raw=st.text(name_chars, min_size=0, max_size=30))
def test_every_accepted_name_resolves_inside_docroot(tmp_path_factory, raw):
    docroot = str(tmp_path_factory.getbasetemp() / "root")
    os.makedirs(docroot, exist_ok=True)
    try:
        check_name(raw)
        path = resolve_inside(docroot, raw)
    except NameRefused:
        return
    real_root = os.path.realpath(docroot)
    assert os.path.commonpath([real_root, path]) == real_root and path != real_root
    assert ".." not in raw.split("/") and "\x00" not in raw


def test_allow_and_deny_judge_the_resolved_name_too(tmp_path):
    root = str(tmp_path)
    (tmp_path / "internal").mkdir()
    (tmp_path / "internal" / "secret").touch()
    (tmp_path / "ws_echo").touch()
    (tmp_path / "ws_link").symlink_to("internal/secret")
    (tmp_path / "ws_dir").symlink_to("internal")
    (tmp_path / "ws_same").symlink_to("ws_echo")
    only_ws = NameRules.from_options("ws_*")
    for name, protocols in (("ws_link", []), ("ws_dir/secret", []), ("ws_none", ["ws_link"]), ("ws_dir", ["secret"])):
        with pytest.raises(NameRefused, match="not served"):
            find_target(root, only_ws, name, protocols)
    assert find_target(root, only_ws, "ws_same", []) == Target("ws_same", f"{root}/ws_echo", None)
    assert find_target(root, only_ws, "internal/secret", []) is None  # not allowed as asked: not ours


def test_c1_controls_and_line_separators_are_refused():
    for name in ("a\x85b", "a\u2028b", "a\u2029b", "a\x9bb"):
        with pytest.raises(NameRefused, match="control character"):
            check_name(name)
