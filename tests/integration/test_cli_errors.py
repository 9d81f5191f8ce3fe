"""``ouistiti-gw`` given something wrong: one line on stderr naming file, section and key, no
traceback; exit status 2 for a usage or configuration error, 1 for a failure while running."""
import re
import socket
import subprocess
from contextlib import closing

import pytest

from support import BIN

GATEWAY_APP = "[app:main]\nuse = egg:ouistiti_gw#main\ndocroot = /tmp\n"
BAD_INI_FILES = {
    # name: (file contents, what stderr must say after the file's path)
    "syntax.ini": ("[app:main\nuse = egg:ouistiti_gw#main\n", ": line 1: '[app:main' before any [section]"),
    "app.py": ("import os\napplication = None\n", ": line 1: 'import os' before any [section] (is this an ini file?)"),
    "unclosed.ini": ("[pipeline:main]\npipeline = websocket static\n"
                     "[filter:websocket\nuse = egg:ouistiti_gw#websocket\n[app:static]\nuse = egg:ouistiti_gw#static\n",
                     ": line 3: '[filter:websocket' opens a [section] it does not close"),
    "garbage.ini": ("[app:main]\nuse = egg:ouistiti_gw#main\n[oops\n", ": line 3: cannot parse '[oops\\n'"),
    "entry.ini": ("[app:main]\nuse = egg:ouistiti_gw#nope\n",
                  " [app:main]: use = egg:ouistiti_gw#nope: no such entry point (ouistiti_gw has main, static here)"),
    "port.ini": (GATEWAY_APP + "[server:main]\nuse = egg:ouistiti_gw#gevent\nport = eighty\n",
                 " [server:main]: port = 'eighty' is not a valid int"),
    "value.ini": (GATEWAY_APP + "max_connections = lots\n", " [app:main]: max_connections = 'lots' is not a valid int"),
    "hostport.ini": (GATEWAY_APP + "allowed_hosts = ws.example.com:443\n",
                     " [app:main]: allowed_hosts = 'ws.example.com:443' has a port"),
    "proxies.ini": (GATEWAY_APP + "trusted_proxies = nginx\n",
                    " [app:main]: trusted_proxies = 'nginx' is not an IP address or network"),
    "unknown.ini": (GATEWAY_APP + "max_conections = 5\n",
                    " [app:main]: unknown setting max_conections: did you mean max_connections? (known: docroot,"),
    "serverkey.ini": (GATEWAY_APP + "[server:main]\nuse = egg:ouistiti_gw#gevent\nhots = 0.0.0.0\n",
                      " [server:main]: unknown setting hots: did you mean host? "
                      "(known: host, port, backlog, certfile, keyfile, header_timeout, max_header_size, "
                      "keepalive_timeout, drain_timeout)"),
    "statickey.ini": ("[app:main]\nuse = egg:ouistiti_gw#static\ndocument_roo = /srv\n",
                      " [app:main]: unknown setting document_roo: did you mean document_root? (known: document_root)"),
    "nodocroot.ini": ("[pipeline:main]\npipeline = websocket static\n[app:static]\nuse = egg:ouistiti_gw#static\n"
                      "[filter:websocket]\nuse = egg:ouistiti_gw#websocket\n",
                      " [filter:websocket]: no docroot: set docroot to the directory of the UNIX sockets"),
}


def run_cli(*arguments: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ouistiti-gw"), *arguments], capture_output=True, text=True, timeout=timeout)


def assert_one_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize("name", sorted(BAD_INI_FILES))
def test_bad_ini_file_is_one_line_naming_file_section_and_key(tmp_path, name):
    contents, expected = BAD_INI_FILES[name]
    (tmp_path / name).write_text(contents)
    result = run_cli("serve", str(tmp_path / name))
    assert result.returncode == 2
    line = assert_one_line(result.stderr)
    assert line.startswith(f"ouistiti-gw: {tmp_path / name}{expected}")
    assert "OUISTITI_GW_" not in line  # the environment does not configure an ini file


def test_missing_ini_file(tmp_path):
    result = run_cli("serve", str(tmp_path / "nowhere.ini"))
    assert result.returncode == 2
    assert assert_one_line(result.stderr) == f"ouistiti-gw: {tmp_path / 'nowhere.ini'}: no such file"


def test_serve_without_docroot_names_the_flag():
    result = run_cli("serve")
    assert result.returncode == 2
    assert (assert_one_line(result.stderr)
            == "ouistiti-gw: no docroot: set --docroot to the directory of the UNIX sockets")


@pytest.mark.parametrize("flag, value, expected", [
    ("--max-connections", "lots", "'lots' is not a valid int"),
    ("--port", "eighty", "'eighty' is not a valid int"),
    ("--ping-interval", "-1", "-1.0 is less than 0"),
    ("--keepalive-timeout", "soon", "'soon' is not a valid float"),
    # refused at start: every handshake would have been refused (a Host's port is not compared)
    ("--allowed-hosts", "localhost:40136", "'localhost:40136' has a port: list host names only "
                                           "(a Host's port is not compared)"),
    ("--allowed-hosts", "gw.example, [::1]:8080", "'[::1]:8080' has a port: list host names only "
                                                  "(a Host's port is not compared)"),
    # named as written on the command line, not as trusted_proxies
    ("--trusted-proxies", "notanip", "'notanip' is not an IP address or network "
                                     "('notanip' does not appear to be an IPv4 or IPv6 network)"),
    ("--metrics-allow", "10.0.0.0/33", "'10.0.0.0/33' is not an IP address or network "
                                       "('10.0.0.0/33' does not appear to be an IPv4 or IPv6 network)"),
])
def test_serve_with_a_bad_value_is_one_line_naming_the_flag(flag, value, expected):
    result = run_cli("serve", "--docroot", "/tmp", flag, value)
    assert result.returncode == 2
    assert assert_one_line(result.stderr) == f"ouistiti-gw: {flag} = {expected}"


@pytest.mark.parametrize("arguments, expected", [
    (["serve", "--docroot", "/tmp", "--max-conections", "5"],
     "ouistiti-gw: unrecognized arguments: --max-conections (did you mean --max-connections?); "
     "see ouistiti-gw --help"),
    (["serve", "--docroot", "/tmp", "--alowed-hosts=gw.example"],
     "ouistiti-gw: unrecognized arguments: --alowed-hosts=gw.example (did you mean --allowed-hosts?); "
     "see ouistiti-gw --help"),
    (["serve", "--docroot", "/tmp", "--mode", "bogus"],
     "ouistiti-gw serve: argument --mode: invalid choice: 'bogus' (choose from "),
])
def test_a_usage_error_is_one_line_with_a_guess(arguments, expected):
    """No 25-line usage before the reason; a misspelt flag gets the flag it most likely means."""
    result = run_cli(*arguments)
    assert result.returncode == 2
    assert assert_one_line(result.stderr).startswith(expected)


def test_option_flags_beside_an_ini_file_are_refused(tmp_path):
    """They were silently dropped: the ini's port was served, and even --max-connections abc passed."""
    (tmp_path / "gateway.ini").write_text(GATEWAY_APP)
    result = run_cli("serve", str(tmp_path / "gateway.ini"), "--port", "40110", "--docroot", str(tmp_path),
                     "--max-connections", "abc")
    assert result.returncode == 2
    assert assert_one_line(result.stderr) == (f"ouistiti-gw: --docroot, --max-connections, --port cannot go "
                                              f"with an ini file: set them in {tmp_path / 'gateway.ini'} instead")


def test_a_docroot_that_is_a_file_is_refused_at_start(tmp_path):
    """A missing docroot is a warning (its servers may create it later); a file never becomes one."""
    (tmp_path / "file").write_text("not a directory")
    result = run_cli("serve", "--docroot", str(tmp_path / "file"))
    assert result.returncode == 2
    assert assert_one_line(result.stderr) == f"ouistiti-gw: --docroot = '{tmp_path / 'file'}' is not a directory"


@pytest.fixture
def taken_port():
    with closing(socket.socket()) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def assert_port_taken(result: subprocess.CompletedProcess, port: int) -> None:
    assert result.returncode == 1
    line = assert_one_line(result.stderr)
    assert re.fullmatch(rf"ouistiti-gw: \[Errno \d+\] Address already in use: \('127\.0\.0\.1', {port}\) "
                        r"\(another server listens there: stop it, or choose another port\)", line), line


def test_serve_on_a_taken_port_says_so(taken_port):
    assert_port_taken(run_cli("serve", "--docroot", "/tmp", "--port", str(taken_port)), taken_port)


def test_serve_ini_on_a_taken_port_says_so(tmp_path, taken_port):
    ini = tmp_path / "taken.ini"
    ini.write_text(GATEWAY_APP + f"[server:main]\nuse = egg:ouistiti_gw#gevent\nport = {taken_port}\n")
    assert_port_taken(run_cli("serve", str(ini)), taken_port)


def test_demo_on_a_taken_port_starts_no_sample_server(taken_port):
    """The demo binds its port first: its one line is the refusal, no "started ..." line before it."""
    assert_port_taken(run_cli("demo", "--port", str(taken_port)), taken_port)


#: A certificate file's contents (None: no such file), and why it cannot be loaded.
BAD_CERTIFICATES = {
    "missing": (None, "No such file or directory"),
    "garbage": ("garbage\n", "not a PEM certificate with its private key ([SSL] PEM lib)"),
}


@pytest.mark.parametrize("how", ["flags", "ini"])
@pytest.mark.parametrize("name", sorted(BAD_CERTIFICATES))
def test_a_certificate_that_cannot_be_loaded_stops_serve_at_start(tmp_path, name, how):
    """It used to be read per connection: the gateway started, and every wss client got a traceback."""
    contents, why = BAD_CERTIFICATES[name]
    cert = tmp_path / "cert.pem"
    if contents is not None:
        cert.write_text(contents)
    if how == "flags":
        result = run_cli("serve", "--docroot", "/tmp", "--port", "0", "--certfile", str(cert), timeout=20)
        place = ""
    else:
        ini = tmp_path / "tls.ini"
        ini.write_text(GATEWAY_APP + f"[server:main]\nuse = egg:ouistiti_gw#gevent\nport = 0\ncertfile = {cert}\n")
        result = run_cli("serve", str(ini), timeout=20)
        place = f"{ini} [server:main]: "
    assert result.returncode == 2
    assert assert_one_line(result.stderr) == f"ouistiti-gw: {place}cannot load the TLS certificate {cert}: {why}"
