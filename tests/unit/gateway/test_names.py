"""The URL-to-socket rules: allow/deny globs and traversal-proof resolution (pure functions)."""
import os
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ouistiti_gw.gateway.names import (
    NameRefused,
    NameRules,
    check_destination,
    check_name,
    parse_protocols,
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


def test_c1_controls_and_line_separators_are_refused():
    for name in ("a\x85b", "a\u2028b", "a\u2029b", "a\x9bb"):
        with pytest.raises(NameRefused, match="control character"):
            check_name(name)


def test_check_destination_judges_the_resolved_name_when_it_differs():
    only_ws = NameRules.from_options("ws_*")
    check_destination(only_ws, "ws_same", "ws_echo")
    check_destination(only_ws, "ws_x", "ws_x")  # no link: the name asked for was judged already
    with pytest.raises(NameRefused, match="not served"):
        check_destination(only_ws, "ws_link", "internal/secret")


@settings(max_examples=300, deadline=None)
@given(header=st.text(st.sampled_from(list("ab ,\t\u3000-")), max_size=30), limit=st.integers(0, 5))
def test_protocol_tokens_are_the_comma_separated_words_in_order(header, limit):
    tokens = [token.strip() for token in header.split(",") if token.strip()]
    assert parse_protocols(header) == tokens
    assert parse_protocols(header, limit) == tokens[:limit]
