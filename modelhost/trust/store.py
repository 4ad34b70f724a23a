"""The inference data store: what each model was asked and answered, kept in one SQLite file.

Rows are per model, with the model's input and output columns in a fixed order (the first
batch a model sends fixes its schema), a request id, a timestamp and one tag per row (as in
TrustyAI: organic traffic is ``_trustyai_unlabeled``, reference uploads carry their own tag,
e.g. ``TRAINING``). Every method blocks: the app calls them off the event loop.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from modelhost import errors

__all__ = [
    "SYNTHETIC_TAG",
    "UNLABELED_TAG",
    "Column",
    "InferenceBatch",
    "ModelSchema",
    "TrustStore",
    "UnknownColumn",
    "UnknownModel",
]

# TrustyAI's tags for organic (logged) rows and for rows an explainer made up.
UNLABELED_TAG = "_trustyai_unlabeled"
SYNTHETIC_TAG = "_trustyai_synthetic"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS columns (
    model TEXT NOT NULL, position INTEGER NOT NULL, name TEXT NOT NULL,
    role TEXT NOT NULL, dtype TEXT NOT NULL, mapped TEXT,
    PRIMARY KEY (model, position)
);
CREATE TABLE IF NOT EXISTS rows (
    id INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL, request_id TEXT NOT NULL,
    ts REAL NOT NULL, tag TEXT NOT NULL, vals BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS rows_by_model ON rows (model, id);
CREATE TABLE IF NOT EXISTS metric_requests (
    id TEXT PRIMARY KEY, model TEXT NOT NULL, metric TEXT NOT NULL, body BLOB NOT NULL
);
"""


class UnknownModel(errors.ModelhostError):
    """No rows were ever stored for this model id."""

    status_code = 404
    grpc_status = "NOT_FOUND"

    def __init__(self, model_id: str) -> None:
        super().__init__(f"No data stored for model id {model_id!r}.")
        self.model_id = model_id


class UnknownColumn(errors.InvalidInput):
    """A request names a column the model's data does not have."""


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a model's data: its name as logged, its mapped name, and its kind."""

    name: str
    role: str  # "input" or "output"
    dtype: str  # "number", "string" or "bool"
    mapped: str | None = None

    @property
    def visible_name(self) -> str:
        """The name requests use: the mapped one where a name mapping gives one."""
        return self.mapped or self.name


@dataclass(frozen=True, slots=True)
class ModelSchema:
    """A model's columns in storage order: inputs first, then outputs."""

    model_id: str
    columns: tuple[Column, ...]

    @property
    def inputs(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.role == "input")

    @property
    def outputs(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.role == "output")

    def position(self, name: str) -> int:
        """Where the column named ``name`` (mapped or original) sits in a stored row."""
        for index, column in enumerate(self.columns):
            if name in (column.name, column.mapped):
                return index
        known = ", ".join(c.visible_name for c in self.columns)
        raise UnknownColumn(
            f"Model {self.model_id!r} has no column {name!r} (its columns: {known})."
        )


@dataclass(frozen=True, slots=True)
class InferenceBatch:
    """Rows to store for one model: columns of equal length, one request id per row."""

    model_id: str
    inputs: Mapping[str, Sequence[Any]]
    outputs: Mapping[str, Sequence[Any]]
    request_ids: Sequence[str]
    tag: str = UNLABELED_TAG

    def __len__(self) -> int:
        return len(self.request_ids)


def _dtype_of(values: Sequence[Any]) -> str:
    # The values' types as one set, in C: a round writes thousands of values. Decoded JSON
    # holds exact types (a bool is not an int here, as isinstance would have it).
    kinds = set(map(type, values))
    if kinds <= _BOOL:
        return "bool"
    if kinds <= _NUMBERS:
        return "number"
    return "string"


_BOOL = frozenset({bool})
_NUMBERS = frozenset({int, float})


class TrustStore:
    """The SQLite store; one connection, serialised by a lock (SQLite writes one at a time)."""

    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        # Each model's columns, read once (every write checks against them); dropped on change.
        self._schemas: dict[str, ModelSchema] = {}
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            # WAL's usual durability: a commit survives a crash of the process, not of the
            # machine; no fsync per commit (the payload logger commits many times a second).
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- writes -------------------------------------------------------------------------

    def write(self, batches: Iterable[InferenceBatch]) -> int:
        """Store every batch in one transaction; a batch that does not fit raises first."""
        with self._lock:
            return self._write_locked(batches)

    def try_write(self, batches: Iterable[InferenceBatch]) -> int | None:
        """:meth:`write`, or None at once when another thread holds the store (a long read)."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            return self._write_locked(batches)
        finally:
            self._lock.release()

    def _write_locked(self, batches: Iterable[InferenceBatch]) -> int:
        now = time.time()
        written = 0
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for batch in batches:
                written += self._write_one(batch, now)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            self._schemas.clear()  # it may hold columns this transaction made
            raise
        return written

    def _write_one(self, batch: InferenceBatch, now: float) -> int:
        named = [("input", n, v) for n, v in batch.inputs.items()]
        named += [("output", n, v) for n, v in batch.outputs.items()]
        for _, name, values in named:
            if len(values) != len(batch):
                raise errors.InvalidInput(
                    f"Column {name!r} of model {batch.model_id!r} has {len(values)} values "
                    f"for {len(batch)} rows."
                )
        if len(batch) == 0:
            return 0  # an empty batch neither stores rows nor fixes a schema
        if not named:
            # (tensors of width 0): a row of nothing would fix an empty schema for good.
            raise errors.InvalidInput(f"An inference of model {batch.model_id!r} holds no values.")
        schema = self._schema_locked(batch.model_id)
        if schema is None:
            self._db.executemany(
                "INSERT INTO columns (model, position, name, role, dtype) VALUES (?,?,?,?,?)",
                [
                    (batch.model_id, i, name, role, _dtype_of(values))
                    for i, (role, name, values) in enumerate(named)
                ],
            )
        else:
            expected = [(c.role, c.name) for c in schema.columns]
            got = [(role, name) for role, name, _ in named]
            if expected != got:
                raise errors.InvalidInput(
                    f"Model {batch.model_id!r} stores columns {[n for _, n in expected]}; "
                    f"this payload has {[n for _, n in got]}."
                )
            for column, (_, name, values) in zip(schema.columns, named, strict=True):
                if column.dtype != "string" and _dtype_of(values) != column.dtype:
                    raise errors.InvalidInput(
                        f"Column {name!r} of model {batch.model_id!r} holds {column.dtype} "
                        f"values; this payload sends {_dtype_of(values)}."
                    )
        # One statement for every row: sqlite3 lets go of the GIL on each step, so a row at a
        # time would hand the GIL to and from the serving loop once per row.
        by_row = zip(*(column for _, _, column in named), strict=True)
        rows = list(zip(batch.request_ids, by_row, strict=True))
        self._db.execute(
            "INSERT INTO rows (model, request_id, ts, tag, vals) SELECT ?, "
            "json_extract(value, '$[0]'), ?, ?, json_extract(value, '$[1]') FROM json_each(?)",
            (batch.model_id, now, batch.tag, orjson.dumps(rows)),
        )
        return len(batch)

    def set_name_mapping(
        self, model_id: str, inputs: Mapping[str, str], outputs: Mapping[str, str]
    ) -> None:
        """Give columns the names requests will use (TrustyAI's ``/info/names``)."""
        with self._lock:
            schema = self._require_schema(model_id)
            for role, mapping in (("input", inputs), ("output", outputs)):
                names = {c.name for c in schema.columns if c.role == role}
                for original in mapping:
                    if original not in names:
                        raise UnknownColumn(
                            f"Model {model_id!r} has no {role} column {original!r} "
                            f"(its {role}s: {', '.join(sorted(names))})."
                        )
            self._db.execute("BEGIN IMMEDIATE")
            for role, mapping in (("input", inputs), ("output", outputs)):
                self._db.executemany(
                    "UPDATE columns SET mapped = ? WHERE model = ? AND role = ? AND name = ?",
                    [(new, model_id, role, old) for old, new in mapping.items()],
                )
            self._db.execute("COMMIT")
            self._schemas.pop(model_id, None)

    def clear_name_mapping(self, model_id: str) -> None:
        with self._lock:
            self._require_schema(model_id)
            self._db.execute("UPDATE columns SET mapped = NULL WHERE model = ?", (model_id,))
            self._schemas.pop(model_id, None)

    def tag_rows(self, model_id: str, tag: str, slices: Sequence[tuple[int, int]]) -> int:
        """Tag the rows at ``[start, end)`` positions (in arrival order); returns how many."""
        with self._lock:
            self._require_schema(model_id)
            total = self._count_locked(model_id)
            ids: list[int] = []
            for start, end in slices:
                if not 0 <= start < end <= total:
                    raise errors.InvalidInput(
                        f"Row slice [{start}, {end}) is outside model {model_id!r}'s {total} rows."
                    )
                ids += [
                    row[0]
                    for row in self._db.execute(
                        "SELECT id FROM rows WHERE model = ? ORDER BY id LIMIT ? OFFSET ?",
                        (model_id, end - start, start),
                    )
                ]
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("UPDATE rows SET tag = ? WHERE id = ?", [(tag, i) for i in ids])
            self._db.execute("COMMIT")
            return len(ids)

    # -- reads --------------------------------------------------------------------------

    def models(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT DISTINCT model FROM columns")]

    def schema(self, model_id: str) -> ModelSchema:
        with self._lock:
            return self._require_schema(model_id)

    def count(self, model_id: str) -> int:
        with self._lock:
            self._require_schema(model_id)
            return self._count_locked(model_id)

    def tag_counts(self, model_id: str) -> dict[str, int]:
        with self._lock:
            self._require_schema(model_id)
            cursor = self._db.execute(
                "SELECT tag, COUNT(*) FROM rows WHERE model = ? GROUP BY tag ORDER BY tag",
                (model_id,),
            )
            return {tag: count for tag, count in cursor}

    def read(
        self,
        model_id: str,
        names: Sequence[str],
        *,
        last: int | None = None,
        tag: str | None = None,
        exclude_tag: str | None = SYNTHETIC_TAG,
    ) -> dict[str, np.ndarray[Any, Any]]:
        """The named columns, oldest row first: the ``last`` rows, of one ``tag`` if given."""
        with self._lock:
            schema = self._require_schema(model_id)
            positions = [schema.position(name) for name in names]
            where, params = "model = ?", [model_id]
            if tag is not None:
                where += " AND tag = ?"
                params.append(tag)
            if exclude_tag is not None:
                where += " AND tag != ?"
                params.append(exclude_tag)
            sql = f"SELECT vals FROM rows WHERE {where} ORDER BY id DESC"
            if last is not None:
                sql += f" LIMIT {int(last)}"
            blobs = [r[0] for r in self._db.execute(sql, params)]
        blobs.reverse()
        rows = [orjson.loads(blob) for blob in blobs]
        result: dict[str, np.ndarray[Any, Any]] = {}
        for name, position in zip(names, positions, strict=True):
            dtype = schema.columns[position].dtype
            values = [row[position] for row in rows]
            kind: Any = {"number": np.float64, "bool": np.bool_}.get(dtype, object)
            result[name] = np.array(values, dtype=kind)
        return result

    def row(self, model_id: str, request_id: str) -> list[Any] | None:
        """The stored values (inputs, then outputs) of one prediction; None if none has that id."""
        with self._lock:
            self._require_schema(model_id)
            found = self._db.execute(
                "SELECT vals FROM rows WHERE model = ? AND request_id = ? ORDER BY id DESC LIMIT 1",
                (model_id, request_id),
            ).fetchone()
        return None if found is None else list(orjson.loads(found[0]))

    def inference_ids(self, model_id: str, organic_only: bool) -> list[tuple[str, float, str]]:
        """Every stored row's (request id, time, tag), oldest first; ``organic_only``: not
        the synthetic rows TrustyAI marks as such."""
        with self._lock:
            self._require_schema(model_id)
            sql = "SELECT request_id, ts, tag FROM rows WHERE model = ?"
            if organic_only:
                sql += f" AND tag != '{SYNTHETIC_TAG}'"
            return [
                (str(r), float(t), str(g))
                for r, t, g in self._db.execute(sql + " ORDER BY id", (model_id,))
            ]

    # -- scheduled metric requests --------------------------------------------------------

    def save_request(self, request_id: str, model_id: str, metric: str, body: Any) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO metric_requests (id, model, metric, body) VALUES (?,?,?,?)",
                (request_id, model_id, metric, orjson.dumps(body)),
            )

    def delete_request(self, request_id: str) -> bool:
        with self._lock:
            cursor = self._db.execute("DELETE FROM metric_requests WHERE id = ?", (request_id,))
            return cursor.rowcount > 0

    def requests(self) -> list[tuple[str, str, str, Any]]:
        """Every saved request as ``(id, model id, metric, body)``, oldest first."""
        with self._lock:
            cursor = self._db.execute(
                "SELECT id, model, metric, body FROM metric_requests ORDER BY rowid"
            )
            return [(i, m, metric, orjson.loads(b)) for i, m, metric, b in cursor]

    # -- helpers (lock held) --------------------------------------------------------------

    def _schema_locked(self, model_id: str) -> ModelSchema | None:
        cached = self._schemas.get(model_id)
        if cached is not None:
            return cached
        cursor = self._db.execute(
            "SELECT name, role, dtype, mapped FROM columns WHERE model = ? ORDER BY position",
            (model_id,),
        )
        columns = tuple(Column(name, role, dtype, mapped) for name, role, dtype, mapped in cursor)
        if not columns:
            return None
        self._schemas[model_id] = ModelSchema(model_id, columns)
        return self._schemas[model_id]

    def _require_schema(self, model_id: str) -> ModelSchema:
        schema = self._schema_locked(model_id)
        if schema is None:
            raise UnknownModel(model_id)
        return schema

    def _count_locked(self, model_id: str) -> int:
        cursor = self._db.execute("SELECT COUNT(*) FROM rows WHERE model = ?", (model_id,))
        return int(cursor.fetchone()[0])
