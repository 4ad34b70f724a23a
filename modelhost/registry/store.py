"""The registry's storage: one table of resources, on SQLite (one file) or on PostgreSQL.

Every resource kind lives in one table: its kind, its parent's id (0 for none), its name and
external id (the columns uniqueness is kept on), its times, and the rest of its fields as one
JSON document. Two unique indexes keep names unique among a parent's children of a kind
(registered models among themselves, versions within their model) and external ids unique
within a kind; so of two clients registering one name at once, whichever process they come
through, exactly one wins and the other is told of the conflict (409).

The same SQL runs on both databases; a small adapter per database opens the connection,
writes its placeholders and names its integrity error. Calls block: the app runs them in
worker threads, one at a time per store.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson

from modelhost import errors

__all__ = ["Record", "RegistryConflict", "RegistryStore", "ResourceNotFound"]


class RegistryConflict(errors.InvalidInput):
    """A name or external id already taken: the resource exists."""

    status_code = 409
    grpc_status = "ALREADY_EXISTS"


class ResourceNotFound(errors.ModelhostError):
    """No resource of that kind has that id (or matches that search)."""

    status_code = 404
    grpc_status = "NOT_FOUND"


_TABLE = """
CREATE TABLE IF NOT EXISTS registry_resource (
    id {id_column},
    kind TEXT NOT NULL,
    parent_id BIGINT NOT NULL DEFAULT 0,
    name TEXT,
    external_id TEXT,
    create_time BIGINT NOT NULL,
    update_time BIGINT NOT NULL,
    body TEXT NOT NULL
)
"""
_INDEXES = (
    "CREATE UNIQUE INDEX IF NOT EXISTS registry_resource_name"
    " ON registry_resource (kind, parent_id, name)",
    "CREATE UNIQUE INDEX IF NOT EXISTS registry_resource_external_id"
    " ON registry_resource (kind, external_id)",
    "CREATE INDEX IF NOT EXISTS registry_resource_parent ON registry_resource (kind, parent_id)",
    # Pages in creation order (newest first, most often) read the index, not every row.
    "CREATE INDEX IF NOT EXISTS registry_resource_created"
    " ON registry_resource (kind, parent_id, create_time, id)",
)
# The columns a page may be ordered by (the API's orderBy values).
_ORDER_COLUMNS = {"ID": "id", "CREATE_TIME": "create_time", "LAST_UPDATE_TIME": "update_time"}
_FIELD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")
_COLUMNS = "id, kind, parent_id, name, external_id, create_time, update_time, body"


@dataclass(frozen=True, slots=True)
class Record:
    """One stored resource."""

    id: int
    kind: str
    parent_id: int
    name: str | None
    external_id: str | None
    create_time: int
    update_time: int
    body: dict[str, Any]

    def resource(self) -> dict[str, Any]:
        """The resource as the API shows it: its fields, its id and times as strings."""
        shown = dict(self.body)
        shown["customProperties"] = shown.get("customProperties") or {}
        shown["id"] = str(self.id)
        shown["createTimeSinceEpoch"] = str(self.create_time)
        shown["lastUpdateTimeSinceEpoch"] = str(self.update_time)
        return shown


class _Connection(Protocol):
    @property
    def integrity_errors(self) -> tuple[type[Exception], ...]: ...

    def execute(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]: ...

    def json_text(self, field_name: str) -> str: ...

    def close(self) -> None: ...


class _SQLite:
    integrity_errors: tuple[type[Exception], ...] = (sqlite3.IntegrityError,)
    id_column = "INTEGER PRIMARY KEY AUTOINCREMENT"

    def __init__(self, path: str) -> None:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Autocommit: each statement is its own transaction; the store's lock orders them.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")

    def execute(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return self._db.execute(sql, tuple(params)).fetchall()

    def json_text(self, field_name: str) -> str:
        return f"json_extract(body, '$.{field_name}')"

    def close(self) -> None:
        self._db.close()


class _Postgres:
    id_column = "BIGSERIAL PRIMARY KEY"

    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError:
            raise errors.ServerNotReady(
                "The registry on PostgreSQL needs psycopg: pip install 'modelhost[postgres]'."
            ) from None
        self.integrity_errors = (psycopg.IntegrityError,)
        try:
            self._db = psycopg.connect(url, autocommit=True)
        except psycopg.OperationalError as exc:
            # The message names host and port, never the password.
            raise errors.ServerNotReady(f"The registry's database is unreachable: {exc}") from None

    def execute(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        cursor = self._db.execute(sql.replace("?", "%s"), tuple(params))
        return list(cursor.fetchall()) if cursor.description is not None else []

    def json_text(self, field_name: str) -> str:
        return f"(body::jsonb ->> '{field_name}')"

    def close(self) -> None:
        self._db.close()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class RegistryStore:
    """Resources of every kind, kept in SQLite or PostgreSQL (``url`` says which)."""

    def __init__(self, url: str) -> None:
        """``url``: ``postgresql://...`` for PostgreSQL; else an SQLite file (or ``sqlite:///``)."""
        self._lock = threading.Lock()
        connection: _SQLite | _Postgres
        if url.startswith(("postgresql://", "postgres://")):
            connection = _Postgres(url)
        else:
            connection = _SQLite(url.removeprefix("sqlite:///") if "://" in url else url)
        self._db: _Connection = connection
        with self._lock:
            self._db.execute(_TABLE.format(id_column=connection.id_column))
            for index in _INDEXES:
                self._db.execute(index)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def create(self, kind: str, parent_id: int, body: dict[str, Any]) -> Record:
        """A new resource of ``kind`` under ``parent_id``; :class:`RegistryConflict` if taken."""
        now = _now_ms()
        name, external_id = body.get("name"), body.get("externalId")
        sql = (
            "INSERT INTO registry_resource"
            " (kind, parent_id, name, external_id, create_time, update_time, body)"
            f" VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING {_COLUMNS}"
        )
        params = (kind, parent_id, name, external_id, now, now, orjson.dumps(body).decode())
        return self._write(sql, params, kind, name, external_id)

    def update(self, record: Record, body: dict[str, Any], parent_id: int | None = None) -> Record:
        """``record`` with ``body`` (whole, already merged) and, if given, a new parent."""
        now = max(_now_ms(), record.create_time)
        external_id = body.get("externalId")
        parent = record.parent_id if parent_id is None else parent_id
        sql = (
            "UPDATE registry_resource SET body = ?, external_id = ?, parent_id = ?,"
            f" update_time = ? WHERE id = ? RETURNING {_COLUMNS}"
        )
        params = (orjson.dumps(body).decode(), external_id, parent, now, record.id)
        return self._write(sql, params, record.kind, record.name, external_id)

    def get(self, kind: str, resource_id: int) -> Record | None:
        rows = self._read(
            f"SELECT {_COLUMNS} FROM registry_resource WHERE kind = ? AND id = ?",
            (kind, resource_id),
        )
        return rows[0] if rows else None

    def find(
        self,
        kind: str,
        *,
        name: str | None = None,
        external_id: str | None = None,
        parent_id: int | None = None,
    ) -> Record | None:
        """The first resource of ``kind`` (by id) with the given name, external id, parent."""
        clauses: list[str] = ["kind = ?"]
        params: list[object] = [kind]
        for column, value in (("name", name), ("external_id", external_id)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if parent_id is not None:
            clauses.append("parent_id = ?")
            params.append(parent_id)
        where = " AND ".join(clauses)
        sql = f"SELECT {_COLUMNS} FROM registry_resource WHERE {where} ORDER BY id LIMIT 1"
        rows = self._read(sql, params)
        return rows[0] if rows else None

    def select(self, kind: str, parent_id: int | None = None) -> list[Record]:
        """Every resource of ``kind`` (under ``parent_id`` when given), by id."""
        if parent_id is None:
            sql = f"SELECT {_COLUMNS} FROM registry_resource WHERE kind = ? ORDER BY id"
            return self._read(sql, (kind,))
        sql = (
            f"SELECT {_COLUMNS} FROM registry_resource WHERE kind = ? AND parent_id = ? ORDER BY id"
        )
        return self._read(sql, (kind, parent_id))

    def select_page(
        self,
        kind: str,
        parent_id: int | None,
        *,
        columns: Mapping[str, str],
        fields: Mapping[str, str],
        order: str,
        descending: bool,
        after: tuple[int, int] | None,
        limit: int,
    ) -> list[Record]:
        """Up to ``limit`` resources of ``kind``, filtered, ordered and cut in SQL.

        ``columns`` are equalities on the ``name``/``external_id`` columns, ``fields`` on
        string fields of the body; ``order`` is an orderBy of :data:`_ORDER_COLUMNS`,
        ``after`` the page token's (sort value, id) the page starts after.
        """
        column = _ORDER_COLUMNS[order]
        clauses: list[str] = ["kind = ?"]
        params: list[object] = [kind]
        if parent_id is not None:
            clauses.append("parent_id = ?")
            params.append(parent_id)
        for name, value in columns.items():
            if name not in ("name", "external_id"):
                raise ValueError(f"not a filter column: {name}")
            clauses.append(f"{name} = ?")
            params.append(value)
        for name, value in fields.items():
            if not _FIELD_NAME.match(name):
                raise ValueError(f"not a field name: {name}")
            clauses.append(f"{self._db.json_text(name)} = ?")
            params.append(value)
        if after is not None:
            clauses.append(f"({column}, id) {'<' if descending else '>'} (?, ?)")
            params.extend(after)
        direction = "DESC" if descending else "ASC"
        sql = (
            f"SELECT {_COLUMNS} FROM registry_resource WHERE {' AND '.join(clauses)}"
            f" ORDER BY {column} {direction}, id {direction} LIMIT ?"
        )
        params.append(limit)
        return self._read(sql, params)

    def _read(self, sql: str, params: Sequence[object]) -> list[Record]:
        with self._lock:
            rows = self._db.execute(sql, params)
        return [_record(row) for row in rows]

    def _write(
        self,
        sql: str,
        params: Sequence[object],
        kind: str,
        name: str | None,
        external_id: str | None,
    ) -> Record:
        with self._lock:
            try:
                rows = self._db.execute(sql, params)
            except self._db.integrity_errors:
                raise RegistryConflict(_conflict(kind, name, external_id)) from None
        return _record(rows[0])


def _record(row: Sequence[Any]) -> Record:
    body = orjson.loads(row[7])
    return Record(int(row[0]), row[1], int(row[2]), row[3], row[4], int(row[5]), int(row[6]), body)


def _conflict(kind: str, name: str | None, external_id: str | None) -> str:
    title = kind.replace("_", " ")
    if name is not None:
        return f"A {title} named {name!r} already exists (or its externalId is taken)."
    return f"A {title} with externalId {external_id!r} already exists."
