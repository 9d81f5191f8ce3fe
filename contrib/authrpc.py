"""authrpc: user accounts for websocket_jsonrpc, kept in an SQLite database.

A sample RPC library (interface: :mod:`ouistiti_gw_contrib.rpc`), after
ouistiti's authrpc.c::

    websocket_jsonrpc -L ouistiti_gw_contrib.authrpc -C /var/lib/ouistiti/users.db

``-C`` is the database file; it is created (mode 0600) with its schema when
missing, and opened read-only when it is only readable.

Methods (params by name, as in authrpc.c; ``session`` is the connection's):

* ``auth {user, passwd}`` -> ``{user, group, home}``.  On success the session
  belongs to that user; a failed ``auth`` ends that login (not the web login, below).
* ``passwd {user, new, confirm, old?}`` -> ``{message}``.  With ``old``:
  anyone who knows the user's password.  Without ``old``: a root session only.
* ``adduser {user, passwd, home?, group?}`` -> ``{message, user, group,
  home}``.  ``group`` defaults to ``users`` and must exist (``root`` and
  ``users`` do).  Anybody may add an account (self sign-up, as in
  authrpc.c), but only a root session may add one to group ``root``.
* ``rmuser {user, passwd?}`` -> ``{message}``.  With the user's ``passwd``:
  anyone who knows it.  Without: a root session only.
* ``whoami`` -> ``{user, group, home}`` of the session's account (error 1 when
  it has none).

Sessions: a session belongs to the account of its last successful ``auth``;
before any, to the account named like the user the gateway's authorization
let in (``session.user``: the web app's login, with ``auth_request`` or
``authorize``, ``proxy_protocol = v2`` and ``-P``), so a user logged in to the
web app needs no second password.  A root session is one whose account is a
member of group ``root``.  It is checked against the database at each call, so
removing that account or moving it out of ``root`` ends its rights at once.
A session lasts as long as its connection; no other connection shares it.

The first root account: a fresh database has none, and no RPC call can
create one (letting the first ``adduser`` become root would hand the server to
whoever connects first).  The administrator, who can write the database file,
creates it from the command line; the password is read from stdin (or
prompted for on a terminal), never from the arguments::

    python -m ouistiti_gw_contrib.authrpc /var/lib/ouistiti/users.db \\
        adduser admin --group root [--home /home/admin]

Passwords are stored as ``$scrypt$ln=14,r=8,p=1$SALT$KEY`` (hashlib.scrypt,
16 random salt bytes, base64), compared in constant time.  An ``auth`` for an
unknown user costs the same scrypt as one for a known user.  scrypt takes
tens of milliseconds (and 16 MiB); it runs in gevent's thread pool (10
threads), so other clients are served meanwhile, and a batch of ``auth``
calls is bounded by the server's batch limit.

Errors are JSON-RPC error objects: -32602 for missing or ill-typed params,
and these codes, with a message saying what went wrong:

* 1: user or password not found (wrong user or password);
* 2: permission denied (a root session is needed);
* 3: user already exists;
* 4: the new password and its confirmation differ;
* 5: no such user (told to a root session only);
* 6: no such group;
* 7: database error (e.g. a read-only database).
"""
from __future__ import annotations

import argparse
import base64
import functools
import getpass
import hashlib
import hmac
import os
import sqlite3
import sys
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence

# An absolute import: this file is also loaded by path (-L ./contrib/authrpc.py),
# outside of its package.
from ouistiti_gw_contrib.rpc import INVALID_PARAMS, RPCError, Session, call_in_thread

ACCESS_DENIED = 1
PERMISSION_DENIED = 2
USER_EXISTS = 3
PASSWORD_MISMATCH = 4
UNKNOWN_USER = 5
UNKNOWN_GROUP = 6
DATABASE_ERROR = 7

SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P = 14, 8, 1
SALT_BYTES, KEY_BYTES = 16, 32
ROOT_GROUP, DEFAULT_GROUP = "root", "users"

SCHEMA = """
CREATE TABLE IF NOT EXISTS groups (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT UNIQUE NOT NULL
);
INSERT OR IGNORE INTO groups (name) VALUES ('root'), ('users');
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT UNIQUE NOT NULL,
    groupid INTEGER NOT NULL REFERENCES groups (id),
    passwd TEXT NOT NULL,
    home TEXT
);
"""


# --------------------------------------------------------------------------
# Passwords
# --------------------------------------------------------------------------

def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def scrypt(password: str, salt: bytes, log2_n: int, r: int, p: int, dklen: int) -> bytes:
    """hashlib.scrypt in gevent's thread pool: it takes tens of milliseconds
    and releases the GIL, so the server goes on serving the other clients."""
    return call_in_thread(functools.partial(hashlib.scrypt, password.encode("utf-8"), salt=salt,
                                            n=1 << log2_n, r=r, p=p, dklen=dklen, maxmem=1 << 26))


def hash_password(password: str) -> str:
    """A salted scrypt hash carrying its own parameters."""
    salt = os.urandom(SALT_BYTES)
    key = scrypt(password, salt, SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P, KEY_BYTES)
    return f"$scrypt$ln={SCRYPT_LOG2_N},r={SCRYPT_R},p={SCRYPT_P}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether *password* matches *stored* (constant-time comparison)."""
    try:
        _, scheme, params, salt, key = stored.split("$")
        settings = dict(item.split("=") for item in params.split(","))
        expected = base64.b64decode(key)
        computed = scrypt(password, base64.b64decode(salt), int(settings["ln"]), int(settings["r"]),
                          int(settings["p"]), len(expected))
    except (ValueError, KeyError):
        return False
    return scheme == "scrypt" and hmac.compare_digest(computed, expected)


# --------------------------------------------------------------------------
# Database
# --------------------------------------------------------------------------

@dataclass
class Account:
    """A row of the users table, with its group's name."""

    id: int
    name: str
    group: str
    home: Optional[str]
    passwd: str


class UserStore:
    """The users and groups tables."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        if not os.path.exists(self.path):
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        mode = "rw" if os.access(self.path, os.R_OK | os.W_OK) else "ro"
        self.db = sqlite3.connect(f"file:{self.path}?mode={mode}", uri=True, isolation_level=None)
        if mode == "rw":
            self.db.executescript(SCHEMA)
        self.db.execute("SELECT count(*) FROM users JOIN groups ON groups.id = users.groupid")

    @functools.cached_property
    def dummy_hash(self) -> str:
        """Verified when the user does not exist, so that failing takes as long."""
        return hash_password("")

    def close(self) -> None:
        """Close the database."""
        self.db.close()

    def find(self, name: str) -> Optional[Account]:
        """The account called *name*."""
        return self._one("users.name = ?", name)

    def get(self, account_id: int) -> Optional[Account]:
        """The account with this id (ids are never reused)."""
        return self._one("users.id = ?", account_id)

    def _one(self, condition: str, value: Any) -> Optional[Account]:
        row = self.db.execute(
            "SELECT users.id, users.name, groups.name, users.home, users.passwd FROM users"
            f" JOIN groups ON groups.id = users.groupid WHERE {condition}", (value,)).fetchone()
        return Account(*row) if row else None

    def check(self, name: str, password: str) -> Optional[Account]:
        """The account if *password* is its password."""
        account = self.find(name)
        matches = verify_password(password, account.passwd if account else self.dummy_hash)
        return account if account and matches else None

    def add(self, name: str, password: str, group: str, home: Optional[str]) -> None:
        """Add an account; *group* must exist."""
        row = self.db.execute("SELECT id FROM groups WHERE name = ?", (group,)).fetchone()
        if row is None:
            raise RPCError(UNKNOWN_GROUP, f"no such group: {group}")
        try:
            self.db.execute("INSERT INTO users (name, groupid, passwd, home) VALUES (?, ?, ?, ?)",
                            (name, row[0], hash_password(password), home))
        except sqlite3.IntegrityError:
            raise RPCError(USER_EXISTS, f"user already exists: {name}") from None

    def set_password(self, account: Account, password: str) -> None:
        """Replace the account's password."""
        self.db.execute("UPDATE users SET passwd = ? WHERE id = ?", (hash_password(password), account.id))

    def remove(self, account: Account) -> None:
        """Delete the account."""
        self.db.execute("DELETE FROM users WHERE id = ?", (account.id,))


# --------------------------------------------------------------------------
# Methods
# --------------------------------------------------------------------------

def _text(name: str, value: Any, optional: bool = False) -> Optional[str]:
    """Check that the param *name* is a non-empty string (or None if *optional*)."""
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise RPCError(INVALID_PARAMS, data=f"{name} must be a non-empty string")
    return value


def _store(session: Session) -> UserStore:
    return session.ctx


def _account(session: Session) -> Optional[Account]:
    """The session's account, now: its last ``auth``'s, else its web login's (``session.user``)."""
    account_id = session.data.get("authrpc.user")
    if account_id is not None:
        return _store(session).get(account_id)
    return _store(session).find(session.user) if session.user else None


def _is_root(session: Session) -> bool:
    """Whether the session's user exists and is in group root, now."""
    account = _account(session)
    return account is not None and account.group == ROOT_GROUP


def _target(session: Session, user: str, password: Optional[str]) -> Account:
    """The account a passwd/rmuser acts on: proven by its password, or
    named by a root session."""
    store = _store(session)
    if password is not None:
        account = store.check(user, password)
        if account is None:
            raise RPCError(ACCESS_DENIED, "user or password not found")
        return account
    if not _is_root(session):
        raise RPCError(PERMISSION_DENIED, "permission denied: password or root session required")
    account = store.find(user)
    if account is None:
        raise RPCError(UNKNOWN_USER, f"no such user: {user}")
    return account


def _database_errors(method: Any) -> Any:
    """Report SQLite failures as error objects (e.g. a read-only database)."""
    @functools.wraps(method)  # also gives the wrapper the method's signature
    def wrapper(session: Session, **params: Any) -> Any:
        try:
            return method(session, **params)
        except sqlite3.Error as exc:
            raise RPCError(DATABASE_ERROR, "database error", str(exc)) from None
    return wrapper


@_database_errors
def auth(session: Session, *, user: Any, passwd: Any) -> Dict[str, Any]:
    """Log the session in as *user*."""
    account = _store(session).check(_text("user", user), _text("passwd", passwd))
    if account is None:
        session.data.pop("authrpc.user", None)
        raise RPCError(ACCESS_DENIED, "user or password not found")
    session.data["authrpc.user"] = account.id
    return {"user": account.name, "group": account.group, "home": account.home}


@_database_errors
def passwd(session: Session, *, user: Any, new: Any, confirm: Any, old: Any = None) -> Dict[str, str]:
    """Change *user*'s password."""
    _text("user", user)
    if _text("new", new) != _text("confirm", confirm):
        raise RPCError(PASSWORD_MISMATCH, "confirm new password: the two passwords differ")
    account = _target(session, user, _text("old", old, optional=True))
    _store(session).set_password(account, new)
    return {"message": "password changed"}


@_database_errors
def adduser(session: Session, *, user: Any, passwd: Any, home: Any = None,
            group: Any = DEFAULT_GROUP) -> Dict[str, Any]:
    """Add an account; group root needs a root session."""
    _text("user", user)
    _text("passwd", passwd)
    _text("home", home, optional=True)
    if _text("group", group) == ROOT_GROUP and not _is_root(session):
        raise RPCError(PERMISSION_DENIED, "permission denied: only a root session may add a root user")
    _store(session).add(user, passwd, group, home)
    return {"message": "user added", "user": user, "group": group, "home": home}


@_database_errors
def rmuser(session: Session, *, user: Any, passwd: Any = None) -> Dict[str, str]:
    """Remove an account."""
    account = _target(session, _text("user", user), _text("passwd", passwd or None, optional=True))
    _store(session).remove(account)
    return {"message": "user removed"}


@_database_errors
def whoami(session: Session) -> Dict[str, Any]:
    """The session's account (:func:`_account`)."""
    account = _account(session)
    if account is None:
        raise RPCError(ACCESS_DENIED, "not logged in")
    return {"user": account.name, "group": account.group, "home": account.home}


METHODS = {"auth": auth, "passwd": passwd, "adduser": adduser, "rmuser": rmuser, "whoami": whoami}


def init(config: Optional[str]) -> UserStore:
    """Open (or create) the database named by ``-C``."""
    if not config:
        raise ValueError("-C DATABASE is required (the SQLite file of the accounts)")
    try:
        return UserStore(config)
    except sqlite3.Error as exc:
        raise ValueError(f"{config}: {exc}") from None


def release(store: UserStore) -> None:
    """Close the database."""
    store.close()


# --------------------------------------------------------------------------
# Administration
# --------------------------------------------------------------------------

def read_password(prompt: str = "password: ") -> str:
    """A password from the terminal, or the first line of stdin."""
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    return sys.stdin.readline().rstrip("\r\n")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m ouistiti_gw_contrib.authrpc DB adduser NAME``: add an
    account directly in the database, e.g. the first root account."""
    parser = argparse.ArgumentParser(prog="python -m ouistiti_gw_contrib.authrpc",
                                     description="Manage the accounts of authrpc's database.")
    parser.add_argument("database", help="the SQLite file (created if missing)")
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("adduser", help="add an account; the password is read from stdin")
    add.add_argument("user")
    add.add_argument("--group", default=DEFAULT_GROUP)
    add.add_argument("--home")
    args = parser.parse_args(argv)
    try:
        store = init(args.database)
        password = read_password()
        if not password:
            raise RPCError(INVALID_PARAMS, "empty password")
        store.add(args.user, password, args.group, args.home)
    except (ValueError, RPCError, sqlite3.Error, OSError) as exc:
        parser.exit(1, f"{parser.prog}: error: {exc}\n")
    store.close()
    print(f"user {args.user} added to group {args.group} in {args.database}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
