"""Users and password checks: a plain password, a passlib hash, or an htpasswd file.

Hashes are checked with passlib (the maintained `libpass` distribution; passlib 1.7.4
breaks with bcrypt 5). A hash check costs tens of milliseconds by design, so a successful
check is remembered, keyed by an HMAC of the credentials under a per-process secret; a
failed one never is, and an unknown user costs the same as a wrong password.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from collections import OrderedDict
from pathlib import Path

from passlib.context import CryptContext

from sts.errors import ConfigError

logger = logging.getLogger("sts.auth")

SCHEMES = ("argon2", "bcrypt", "sha512_crypt")
_DECOY_PASSWORD = "a password every scheme takes"  # noqa: S105 (checked against the decoy only)
CONTEXT = CryptContext(schemes=list(SCHEMES), default="argon2")
# How often an htpasswd file is looked at for changes, at most.
RELOAD_SECONDS = 1.0
CACHE_SIZE = 1024


def hash_password(password: str, scheme: str = "argon2") -> str:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; schemes: {', '.join(SCHEMES)}")
    return str(CONTEXT.handler(scheme).hash(password))


def check_hash(value: str, what: str) -> str:
    """A hash passlib can verify with one of SCHEMES, or ConfigError naming `what`."""
    value = value.strip()
    scheme = CONTEXT.identify(value, required=False)
    if scheme is None:
        raise ConfigError(
            f"{what}: not an argon2, bcrypt or SHA-512 crypt hash; make one with "
            "`sts hash-password`"
        )
    return value


def read_htpasswd(path: Path) -> dict[str, str]:
    """`user:hash` lines (blank lines and `#` comments skipped)."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the htpasswd file {path}: {exc}") from None
    users: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not user:
            raise ConfigError(f"{path} line {number}: expected user:hash")
        users[user] = check_hash(hashed, f"{path} line {number} (user {user!r})")
    if not users:
        raise ConfigError(f"the htpasswd file {path} has no users")
    return users


class Authenticator:
    """Checks a user name and password against one of the three sources."""

    def __init__(
        self,
        *,
        username: str = "admin",
        password: str | None = None,
        password_hash: str | None = None,
        htpasswd_file: Path | None = None,
    ) -> None:
        self._plain: tuple[str, bytes] | None = None
        self._users: dict[str, str] = {}
        self._htpasswd = htpasswd_file
        self._htpasswd_stamp: tuple[int, int] | None = None
        self._checked_at = 0.0
        if htpasswd_file is not None:
            self._users = read_htpasswd(htpasswd_file)
            self._htpasswd_stamp = _stamp(htpasswd_file)
        elif password_hash is not None:
            self._users = {username: check_hash(password_hash, "--auth_password_hash")}
        elif password is not None:
            self._plain = (username, _digest(password))
        else:
            raise ConfigError("auth needs a password, a password hash or an htpasswd file")
        self._secret = secrets.token_bytes(32)
        self._known: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()
        # Checked against when the user does not exist, so that costs what a real check does.
        self._decoy = CONTEXT.hash(secrets.token_hex(16))

    def remembered(self, username: str, password: str) -> bool:
        """True when these credentials passed a check before (cheap: no hashing)."""
        self._maybe_reload()
        key = self._key(username, password)
        with self._lock:
            if key in self._known:
                self._known.move_to_end(key)
                return True
        return False

    def verify(self, username: str, password: str) -> bool:
        """The full check (slow for hashes: run it off the event loop)."""
        if self._plain is not None:
            user, digest = self._plain
            # Both compared, in constant time, whatever the first result.
            ok = hmac.compare_digest(_digest(username), _digest(user))
            ok &= hmac.compare_digest(_digest(password), digest)
        else:
            hashed = self._users.get(username)
            try:
                ok = bool(CONTEXT.verify(password, hashed if hashed is not None else self._decoy))
            except ValueError:
                # A password this user's scheme cannot take (passlib's PasswordValueError:
                # a NUL byte for SHA-512 crypt, over 72 bytes for bcrypt, over 4096 bytes for
                # any) is a wrong password. It raises before any hashing, so a decoy check
                # spends what a check costs: the answer and its time do not tell whether
                # the user exists or which scheme its hash uses.
                CONTEXT.verify(_DECOY_PASSWORD, self._decoy)
                ok = False
            ok = ok and hashed is not None
        if ok:
            with self._lock:
                self._known[self._key(username, password)] = time.monotonic()
                while len(self._known) > CACHE_SIZE:
                    self._known.popitem(last=False)
        return ok

    def _key(self, username: str, password: str) -> bytes:
        message = username.encode() + b"\0" + password.encode()
        # Keyed BLAKE2b, a MAC by design (RFC 7693 2.9): the cache never holds a password
        # or its plain hash, at a fraction of an HMAC object's cost per request.
        return hashlib.blake2b(message, key=self._secret, digest_size=32).digest()

    def _maybe_reload(self) -> None:
        path = self._htpasswd
        if path is None or time.monotonic() - self._checked_at < RELOAD_SECONDS:
            return
        self._checked_at = time.monotonic()
        stamp = _stamp(path)
        if stamp == self._htpasswd_stamp:
            return
        try:
            users = read_htpasswd(path)
        except ConfigError as exc:
            logger.error("%s; keeping the users read before", exc)
            self._htpasswd_stamp = stamp
            return
        with self._lock:
            self._users = users
            self._known.clear()  # a removed user or a changed password stops working now
        self._htpasswd_stamp = stamp
        logger.info("re-read %s: %d users", path, len(users))


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()
