"""The options and the start/stop behaviour all sample servers share.

Every test runs against echo, chat and jsonrpc alike, since each program
wires the shared start-up itself.
"""
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys

import pytest

from support.clients import peer_pid, unix_client
from support.processes import proc_status, wait_exit
from support.samples import PLUGIN, SOCK_TYPES, RPCClient, command, run

#: What each program needs besides the common options.
EXTRA = {"echo": [], "chat": ["-w"], "jsonrpc": ["-L", str(PLUGIN)]}
#: The options each --help must mention.
OWN_OPTIONS = {"echo": [], "chat": ["-w"], "jsonrpc": ["-L", "-C"]}

programs = pytest.mark.parametrize("program", sorted(EXTRA))


def assert_serves(program, path):
    """One exchange with the server on *path* works."""
    sock = unix_client(path, SOCK_TYPES[program])
    try:
        if program == "echo":
            sock.sendall(b"ping")
            assert sock.recv(4) == b"ping"
        elif program == "chat":
            sock.send(b"WSHello probe")
            assert sock.recv(100).startswith(b"WSWelcome probe")
        else:
            assert RPCClient(sock).result("echo", ["ping"]) == "ping"
    finally:
        sock.close()


@programs
def test_creates_the_docroot_and_the_name_subdirectories(servers, workdir, program):
    docroot = os.path.join(workdir, "missing", "root")
    server = servers(program, *EXTRA[program], docroot=docroot, name="sub/dir/sock")
    for directory in (docroot, f"{docroot}/sub", f"{docroot}/sub/dir"):
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o755
    mode = os.stat(server.path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o777
    assert_serves(program, server.path)
    server.stop()


@programs
def test_default_name_is_the_command_name(servers, program):
    server = servers(program, *EXTRA[program], name=None)
    assert server.path.endswith(f"/websocket_{program}")
    assert_serves(program, server.path)
    server.stop()


@programs
def test_default_name_follows_a_renamed_command(servers, workdir, program):
    script = os.path.join(os.path.dirname(sys.executable), f"websocket_{program}")
    renamed = os.path.join(workdir, "my_service")
    os.symlink(script, renamed)
    server = servers(program, *EXTRA[program], name=None, argv0=renamed)
    assert server.path.endswith("/my_service")
    assert_serves(program, server.path)
    server.stop()


@programs
def test_backlog_bounds_the_pending_connections(servers, program):
    server = servers(program, *EXTRA[program], "-m", "2")
    assert_serves(program, server.path)  # every earlier connection is accepted now
    server.process.send_signal(signal.SIGSTOP)
    pending = []
    try:
        for _ in range(100):
            sock = socket.socket(socket.AF_UNIX, SOCK_TYPES[program])
            sock.setblocking(False)
            pending.append(sock)
            try:
                sock.connect(server.path)
            except BlockingIOError:
                break
    finally:
        server.process.send_signal(signal.SIGCONT)
    # Linux queues backlog + 1 connections on a UNIX socket.
    assert len(pending) - 1 == 3
    for sock in pending:
        sock.close()
    assert_serves(program, server.path)
    server.stop()


@programs
def test_daemon_listens_before_the_command_returns(workdir, program):
    path = os.path.join(workdir, "run", "daemon")
    result = run(program, "-R", os.path.dirname(path), "-n", "daemon", "-D", *EXTRA[program])
    assert result.returncode == 0, result.stderr
    sock = unix_client(path, SOCK_TYPES[program])  # no waiting: it must listen already
    pid = peer_pid(sock)
    sock.close()
    try:
        assert os.getsid(pid) not in (os.getsid(0), pid)
        for fd in (0, 1, 2):
            assert os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/null"
        assert os.readlink(f"/proc/{pid}/cwd") == "/"
        assert_serves(program, path)
    finally:
        os.kill(pid, signal.SIGTERM)
    wait_exit(pid)
    assert not os.path.lexists(path)


#: Run as root in a mount namespace of its own: a tmpfs over /dev holding only ``null`` and a
#: syslog socket (a datagram receiver writing what it gets to $OUT), then the daemon.
SYSLOG_NAMESPACE = """
set -e
mount -t tmpfs tmpfs /dev
mknod -m 666 /dev/null c 1 3
"$PYTHON" -c '
import os, socket, sys
receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
receiver.bind("/dev/log")
out = open(os.environ["OUT"], "ab", 0)
open(os.environ["OUT"] + ".pid", "w").write(str(os.getpid()))
while True:
    out.write(receiver.recv(65536).rstrip(b"\\0") + b"\\n")
' </dev/null >/dev/null 2>&1 &
while [ ! -s "$OUT.pid" ]; do sleep 0.05; done
exec "$@"
"""


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                    reason="a private /dev/log needs root and unshare (util-linux)")
def test_the_daemon_logs_to_syslog(workdir):
    """Detached, its stderr is /dev/null (a caller reading it through a pipe would wait for ever):
    its lines go to syslog, as a daemon's, in the daemon facility (<3x>)."""
    path, out = os.path.join(workdir, "daemon"), os.path.join(workdir, "syslog")
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", SYSLOG_NAMESPACE, "sh",
                             *command("echo", "-R", workdir, "-n", "daemon", "-D")],
                            env=dict(os.environ, OUT=out, PYTHON=sys.executable), capture_output=True, text=True,
                            timeout=60)
    receiver = int(open(out + ".pid").read())
    try:
        assert result.returncode == 0, result.stderr
        sock = unix_client(path, socket.SOCK_STREAM)
        pid = peer_pid(sock)
        sock.close()
        os.kill(pid, signal.SIGTERM)
        wait_exit(pid)
        lines = open(out, "rb").read().decode().splitlines()
    finally:
        os.kill(receiver, signal.SIGTERM)
    # 30: daemon.info; the client just closed may not be counted out yet
    stop_line = re.compile(r"<30>websocket_echo: INFO: stopping: closing [01] client\(s\)")
    assert any(stop_line.fullmatch(line) for line in lines), lines


@programs
def test_user_option_drops_privileges(servers, program):
    nobody = pwd.getpwnam("nobody")
    server = servers(program, *EXTRA[program], "-u", "nobody")
    status = proc_status(server.process.pid)
    assert status["Uid"].split() == [str(nobody.pw_uid)] * 4
    assert status["Gid"].split() == [str(nobody.pw_gid)] * 4
    assert status["Groups"].split() in ([], [str(nobody.pw_gid)])
    assert_serves(program, server.path)
    server.stop()


@programs
def test_unknown_user_is_an_error(workdir, program):
    docroot = os.path.join(workdir, "run")
    result = run(program, "-R", docroot, "-n", "ws", "-u", "no_such_user_here", *EXTRA[program])
    assert result.returncode == 1
    assert "unknown user 'no_such_user_here'" in result.stderr
    assert not os.path.exists(docroot)


@programs
@pytest.mark.parametrize("option", ["-h", "--help"])
def test_help(program, option):
    result = run(program, option)
    assert result.returncode == 0
    for flag in ["-R", "-n", "-u", "-m", "-D"] + OWN_OPTIONS[program]:
        assert f"{flag} " in result.stdout
    assert f"websocket_{program}" in result.stdout


@programs
def test_stale_socket_is_replaced(servers, workdir, program):
    path = os.path.join(workdir, "run", "ws")
    os.mkdir(os.path.dirname(path))
    dead = socket.socket(socket.AF_UNIX, SOCK_TYPES[program])
    dead.bind(path)
    dead.close()
    server = servers(program, *EXTRA[program])
    assert_serves(program, server.path)
    server.stop()


@programs
def test_live_socket_is_not_taken_over(servers, program):
    first = servers(program, *EXTRA[program])
    second = servers(program, *EXTRA[program], ready=False)
    assert second.process.wait(10) == 1
    assert "in use" in second.log()
    assert_serves(program, first.path)
    first.stop()


def test_live_socket_of_another_type_is_not_taken_over(servers):
    echo = servers("echo")
    chat = servers("chat", ready=False)
    assert chat.process.wait(10) == 1
    assert "in use" in chat.log()
    assert_serves("echo", echo.path)
    echo.stop()


@programs
def test_regular_file_is_not_removed(workdir, program):
    path = os.path.join(workdir, "run", "ws")
    os.mkdir(os.path.dirname(path))
    with open(path, "w") as precious:
        precious.write("keep me")
    result = run(program, "-R", os.path.dirname(path), "-n", "ws", *EXTRA[program])
    assert result.returncode == 1
    assert "not a socket" in result.stderr
    with open(path) as precious:
        assert precious.read() == "keep me"


@programs
def test_a_file_that_replaced_the_socket_is_not_removed_at_exit(servers, program):
    server = servers(program, *EXTRA[program])
    os.unlink(server.path)
    with open(server.path, "w") as precious:
        precious.write("keep me")
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(10) == 0, server.log()
    with open(server.path) as precious:
        assert precious.read() == "keep me"
    assert "no longer the socket this server created" in server.log()


@programs
@pytest.mark.parametrize("name", ["../escape", "/absolute", "a//b"])
def test_names_leaving_the_docroot_are_refused(workdir, program, name):
    result = run(program, "-R", os.path.join(workdir, "run"), "-n", name, *EXTRA[program])
    assert result.returncode == 1
    assert "invalid socket name" in result.stderr


@programs
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_closes_clients_and_removes_the_socket(servers, program, signum):
    server = servers(program, *EXTRA[program])
    client = server.connect()
    assert_serves(program, server.path)  # the server has accepted by now
    server.stop(signum)
    assert client.recv(10) == b""
