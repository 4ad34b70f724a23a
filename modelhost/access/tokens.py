"""Bearer tokens: made once and shown once, stored hashed in a SQLite file, read by the servers.

A token reads ``mh_<id>_<secret>``. The id finds the record; the secret is kept only as its
SHA-256, compared in constant time. A slow password hash would buy nothing here: the secret
is 256 random bits, not a word a person chose. The file is the one source of truth: the
``modelhost token`` commands write it, and every server that checks tokens reads it again
when it changes (:class:`TokenTable`), so a revoked token stops working in a fraction of a
second everywhere, with no server restarted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from modelhost import errors

__all__ = [
    "MAX_TOKEN_LENGTH",
    "Role",
    "Token",
    "TokenStore",
    "TokenTable",
    "parse_duration",
]

PREFIX = "mh_"
# Longer than any token this module makes (~60 characters); anything past it is refused
# before it is hashed or looked up.
MAX_TOKEN_LENGTH = 256
_ID_BYTES = 6
_SECRET_BYTES = 32
_SHAPE = re.compile(r"mh_([0-9a-f]{12})_([A-Za-z0-9_-]{16,200})")
# How often a table looks at the file for changes: revocation takes at most this long.
_RECHECK_S = 0.25

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    secret_sha256 TEXT NOT NULL,
    role TEXT NOT NULL,
    namespace TEXT,
    service TEXT,
    created_at REAL NOT NULL,
    expires_at REAL,
    rate REAL,
    burst INTEGER,
    concurrency INTEGER,
    revoked_at REAL
)
"""


class Role(str, enum.Enum):
    """What a token may do; each role may do all that the ones below it may."""

    ADMIN = "admin"  # anything, including objects that run code of the user's choosing
    DEPLOYER = "deployer"  # apply and delete services on the built-in runtimes; call them
    CALLER = "caller"  # inference only

    @property
    def rank(self) -> int:
        return _RANKS[self.value]


_RANKS = {"admin": 2, "deployer": 1, "caller": 0}


@dataclasses.dataclass(frozen=True)
class Token:
    """One token's record (never its secret): who it is, what it may reach, its limits."""

    id: str
    name: str
    role: Role
    namespace: str | None = None
    service: str | None = None
    created_at: float = 0.0
    expires_at: float | None = None
    # Requests per second, with a burst of ``burst``; None: no rate limit.
    rate: float | None = None
    burst: int | None = None
    # Requests running at once; None: no limit.
    concurrency: int | None = None
    revoked_at: float | None = None
    secret_sha256: str = dataclasses.field(default="", repr=False)

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def scope(self) -> str:
        """``namespace/service`` as far as the token is bound, ``*`` where it is not."""
        return f"{self.namespace or '*'}/{self.service or '*'}"

    def matches(self, secret: str) -> bool:
        digest = hashlib.sha256(secret.encode()).hexdigest()
        return hmac.compare_digest(digest, self.secret_sha256)


def parse_duration(text: str) -> float:
    """Seconds from ``90s``, ``15m``, ``12h``, ``30d`` or ``2w``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if match is None:
        raise errors.InvalidInput(f"not a duration: {text!r} (examples: 90s, 15m, 12h, 30d, 2w)")
    scale = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match[2]]
    return float(match[1]) * scale


def split_token(text: str) -> tuple[str, str] | None:
    """(id, secret) of a token's text, or None if it is not shaped like one of ours."""
    if len(text) > MAX_TOKEN_LENGTH:
        return None
    match = _SHAPE.fullmatch(text)
    return (match[1], match[2]) if match else None


class TokenStore:
    """The token file: create, list, revoke. Used by the ``modelhost token`` commands."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection for one transaction: committed (or rolled back), then closed."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self.path.exists()
        connection = sqlite3.connect(self.path, timeout=10)
        try:
            if fresh:
                os.chmod(self.path, 0o600)
            # A rollback journal (not WAL): every commit changes the file itself, which is
            # what the servers' TokenTable watches.
            connection.execute("PRAGMA journal_mode=DELETE")
            connection.execute(_SCHEMA)
            with connection:  # sqlite3's own: commit or roll back, but it does not close
                yield connection
        finally:
            connection.close()

    def create(
        self,
        role: Role,
        *,
        name: str | None = None,
        namespace: str | None = None,
        service: str | None = None,
        expires_in_s: float | None = None,
        rate: float | None = None,
        burst: int | None = None,
        concurrency: int | None = None,
        now: float | None = None,
    ) -> tuple[Token, str]:
        """A new token's record and its text, the only time the text exists."""
        if rate is not None and rate <= 0:
            raise errors.InvalidInput("--rate must be a positive number of requests per second")
        if burst is not None and burst < 1:
            raise errors.InvalidInput("--burst must be at least 1")
        if concurrency is not None and concurrency < 1:
            raise errors.InvalidInput("--concurrency must be at least 1")
        if burst is not None and rate is None:
            raise errors.InvalidInput("--burst needs --rate")
        created = time.time() if now is None else now
        token_id = secrets.token_hex(_ID_BYTES)
        secret = secrets.token_urlsafe(_SECRET_BYTES)
        token = Token(
            id=token_id,
            name=name or f"{role.value}-{token_id}",
            role=role,
            namespace=namespace or None,
            service=service or None,
            created_at=created,
            expires_at=created + expires_in_s if expires_in_s is not None else None,
            rate=rate,
            burst=(burst or max(1, int(rate))) if rate is not None else None,
            concurrency=concurrency,
            secret_sha256=hashlib.sha256(secret.encode()).hexdigest(),
        )
        with self._connect() as connection:
            try:
                connection.execute(
                    "INSERT INTO tokens VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        token.id,
                        token.name,
                        token.secret_sha256,
                        token.role.value,
                        token.namespace,
                        token.service,
                        token.created_at,
                        token.expires_at,
                        token.rate,
                        token.burst,
                        token.concurrency,
                        None,
                    ),
                )
            except sqlite3.IntegrityError:
                raise errors.InvalidInput(f"a token named {token.name!r} exists already") from None
        return token, f"{PREFIX}{token_id}_{secret}"

    def tokens(self) -> list[Token]:
        """Every record, revoked ones included, oldest first."""
        if not self.path.exists():
            return []
        with self._connect() as connection:
            rows = connection.execute(
                "SELECT id, name, secret_sha256, role, namespace, service, created_at,"
                " expires_at, rate, burst, concurrency, revoked_at"
                " FROM tokens ORDER BY created_at, id"
            ).fetchall()
        return [_token(row) for row in rows]

    def revoke(self, id_or_name: str, now: float | None = None) -> Token:
        """Revoke the token of that id or name; InvalidInput if there is none."""
        when = time.time() if now is None else now
        with self._connect() as connection:
            changed = connection.execute(
                "UPDATE tokens SET revoked_at = ? WHERE (id = ? OR name = ?)"
                " AND revoked_at IS NULL",
                (when, id_or_name, id_or_name),
            ).rowcount
        found = [t for t in self.tokens() if id_or_name in (t.id, t.name)]
        if not found:
            raise errors.InvalidInput(f"no token has the id or name {id_or_name!r}")
        if not changed and found[0].revoked_at is None:  # pragma: no cover - a race
            raise errors.InvalidInput(f"token {id_or_name!r} could not be revoked")
        return found[0]


def _token(row: Iterable[object]) -> Token:
    (tid, name, digest, role, namespace, service, created, expires, rate, burst, conc, revoked) = (
        tuple(row)
    )
    return Token(
        id=str(tid),
        name=str(name),
        role=Role(str(role)),
        namespace=namespace if isinstance(namespace, str) else None,
        service=service if isinstance(service, str) else None,
        created_at=float(created),  # type: ignore[arg-type]
        expires_at=float(expires) if expires is not None else None,  # type: ignore[arg-type]
        rate=float(rate) if rate is not None else None,  # type: ignore[arg-type]
        burst=int(burst) if burst is not None else None,  # type: ignore[call-overload]
        concurrency=int(conc) if conc is not None else None,  # type: ignore[call-overload]
        revoked_at=float(revoked) if revoked is not None else None,  # type: ignore[arg-type]
        secret_sha256=str(digest),
    )


class TokenTable:
    """A server's view of the token file: live tokens by id, read again when the file changes.

    The file is looked at (its first 28 bytes: SQLite's change counter) at most every 0.25 s,
    on the next lookup after that; no task and no thread. A missing file is an empty table:
    every token is refused.
    """

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = TokenStore(path)
        self._clock = clock
        self._by_id: dict[str, Token] = {}
        self._seen: tuple[int, int, int] | None = None
        self._checked = -_RECHECK_S

    def find(self, token_id: str) -> Token | None:
        now = self._clock()
        if now - self._checked >= _RECHECK_S:
            self._checked = now
            self._refresh()
        return self._by_id.get(token_id)

    def _refresh(self) -> None:
        try:
            with open(self.store.path, "rb") as file:
                info = os.fstat(file.fileno())
                header = file.read(28)
        except FileNotFoundError:
            self._by_id, self._seen = {}, None
            return
        # SQLite's file change counter (bytes 24-27) goes up on every commit in rollback
        # journal mode; a modification time alone can miss two commits in one clock tick.
        seen = (info.st_ino, int.from_bytes(header[24:28], "big"), info.st_size)
        if seen == self._seen:
            return
        try:
            tokens = self.store.tokens()
        except sqlite3.Error:
            return  # mid-write: keep the table we had, look again next time
        self._by_id = {t.id: t for t in tokens if t.revoked_at is None}
        self._seen = seen
