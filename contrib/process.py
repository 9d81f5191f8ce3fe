"""The process of a sample server: the user it runs as (``-u``) and the daemon (``-D``).

Steps 1, 4 and 5 of :func:`ouistiti_gw_contrib.server.run`'s start-up: the user is looked up
first, so a typo fails before anything is touched; with ``-D`` the process double-forks, the
original process waiting on a pipe to exit 0 only once the daemon is listening (1 if its start
failed); the rights are dropped for good (supplementary groups, gid, then uid) once gevent's hub
is set up.
"""
from __future__ import annotations

import logging
import logging.handlers
import os
import pwd
from typing import Callable, Optional

from .errors import StartupError

log = logging.getLogger(__name__)

#: Where a detached sample server sends its log lines (glibc's ``_PATH_LOG``).
SYSLOG_SOCKET = "/dev/log"


def lookup_user(name: Optional[str]) -> Optional[pwd.struct_passwd]:
    """The account to switch to, or None when there is nothing to switch."""
    if name is None:
        return None
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        raise StartupError(f"unknown user {name!r}") from None
    if os.getuid() != 0:
        log.warning("not started as root: ignoring -u %s", name)
        return None
    return user


def drop_privileges(user: pwd.struct_passwd) -> None:
    """Become *user* for good: groups first, while still allowed to."""
    try:
        os.initgroups(user.pw_name, user.pw_gid)
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)
    except OSError as exc:
        raise StartupError(f"cannot switch to user {user.pw_name}: {exc.strerror}") from None
    log.info("running as %s (uid %d, gid %d)", user.pw_name, user.pw_uid, user.pw_gid)


def daemonize() -> Callable[[], None]:
    """Double-fork and detach; returns, in the daemon, the "ready" callback.

    The original process waits until the daemon calls it (exit 0) or dies
    before that (exit 1).  Until then the daemon keeps stderr, so start-up
    errors still reach the caller, and its working directory, so relative
    paths given to the program still work while it starts; the callback sends
    the log lines to syslog, moves stdio to /dev/null and the working
    directory to /.
    """
    read_end, write_end = os.pipe()
    if os.fork():
        os.close(write_end)
        ready = os.read(read_end, 1) == b"1"
        os._exit(0 if ready else 1)
    os.close(read_end)
    os.setsid()
    if os.fork():
        os._exit(0)

    def ready() -> None:
        log_to_syslog()
        os.chdir("/")
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
        os.write(write_end, b"1")
        os.close(write_end)

    return ready


def log_to_syslog(address: str = SYSLOG_SOCKET) -> None:
    """Send the log lines to syslog (``daemon`` facility), as a daemon's: its stderr is about to
    go (a caller reading the daemon's stderr through a pipe would wait for ever otherwise).
    Without a syslog socket, say once, while stderr still reaches the caller, that the lines
    from now on are lost."""
    root = logging.getLogger()
    try:
        handler = logging.handlers.SysLogHandler(address, facility=logging.handlers.SysLogHandler.LOG_DAEMON)
    except OSError as exc:
        log.warning("no syslog at %s (%s): once detached, log lines go nowhere", address, exc.strerror)
        return
    for old in root.handlers[:]:  # the lines keep their format (``websocket_echo: INFO: ...``)
        handler.setFormatter(old.formatter)
        root.removeHandler(old)
    root.addHandler(handler)
