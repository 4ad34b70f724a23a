"""The platform's state in SQLite, so that applied objects and their revisions outlive a restart.

Four things are kept: the objects as applied (InferenceServices, ServingRuntimes and
ClusterServingRuntimes, with a generation bumped whenever the spec changes, as Kubernetes
does), each InferenceService's last written status (the planner reads its rolled-out
revisions to split canary traffic), and every revision that was planned, because a canary
or a rollback must start an *older* revision again after a restart, and only its recorded
plan says what it ran; and the replicas that run now, so that a platform that was killed
can have what it left running killed by the next one (:mod:`modelhost.local.reaper`).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from modelhost.control import BatcherPlan, LoggerPlan, ProcessSpec, Revision

__all__ = ["ReplicaRecord", "Store", "StoredObject", "revision_from_json", "revision_to_json"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    kind TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    generation INTEGER NOT NULL,
    uid TEXT NOT NULL,
    created TEXT NOT NULL,
    document TEXT NOT NULL,
    status TEXT,
    PRIMARY KEY (kind, namespace, name)
);
CREATE TABLE IF NOT EXISTS revisions (
    namespace TEXT NOT NULL,
    service TEXT NOT NULL,
    name TEXT NOT NULL,
    created TEXT NOT NULL,
    revision TEXT NOT NULL,
    PRIMARY KEY (namespace, service, name)
);
CREATE TABLE IF NOT EXISTS replicas (
    id TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    owner INTEGER NOT NULL,
    owner_ticks INTEGER NOT NULL,
    started TEXT NOT NULL
);
"""


@dataclasses.dataclass(frozen=True)
class StoredObject:
    """An applied object: its document (metadata filled in) and its last status."""

    kind: str
    namespace: str
    name: str
    generation: int
    document: dict[str, Any]
    status: dict[str, Any] | None


@dataclasses.dataclass(frozen=True)
class ReplicaRecord:
    """A replica process some platform started: its id (in its environment), its pid, and
    the platform's pid and start time (clock ticks since boot), which tell whether it lives."""

    id: str
    pid: int
    owner: int
    owner_ticks: int


class Store:
    """One SQLite file; every call is a short transaction (safe from any thread)."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def put(self, kind: str, namespace: str, name: str, document: dict[str, Any]) -> StoredObject:
        """Create or replace an object; the generation goes up only when ``spec`` changes.

        ``metadata.generation``, ``uid`` and ``creationTimestamp`` are the store's to fill; any
        ``status`` in the document is ignored, as the API server ignores it on apply.
        """
        document = {key: value for key, value in document.items() if key != "status"}
        with self._transaction() as db:
            row = db.execute(
                "SELECT generation, uid, created, document, status FROM objects "
                "WHERE kind=? AND namespace=? AND name=?",
                (kind, namespace, name),
            ).fetchone()
            if row is None:
                generation, uid, created, status = 1, str(uuid.uuid4()), _now(), None
            else:
                old = json.loads(row[3])
                changed = old.get("spec") != document.get("spec")
                generation = row[0] + 1 if changed else row[0]
                uid, created, status = row[1], row[2], row[4]
            metadata = dict(document.get("metadata") or {})
            metadata.update(
                name=name,
                namespace=namespace,
                generation=generation,
                uid=uid,
                creationTimestamp=created,
            )
            document["metadata"] = metadata
            db.execute(
                "INSERT OR REPLACE INTO objects VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (kind, namespace, name, generation, uid, created, json.dumps(document), status),
            )
        return StoredObject(
            kind, namespace, name, generation, document, json.loads(status) if status else None
        )

    def get(self, kind: str, namespace: str, name: str) -> StoredObject | None:
        with self._lock:
            row = self._db.execute(
                "SELECT kind, namespace, name, generation, document, status FROM objects "
                "WHERE kind=? AND namespace=? AND name=?",
                (kind, namespace, name),
            ).fetchone()
        return _stored(row) if row else None

    def list_objects(
        self, kind: str | None = None, namespace: str | None = None
    ) -> list[StoredObject]:
        query = "SELECT kind, namespace, name, generation, document, status FROM objects"
        clauses, values = [], []
        if kind is not None:
            clauses.append("kind=?")
            values.append(kind)
        if namespace is not None:
            clauses.append("namespace=?")
            values.append(namespace)
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY created, name", values).fetchall()
        return [_stored(row) for row in rows]

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        with self._transaction() as db:
            cursor = db.execute(
                "DELETE FROM objects WHERE kind=? AND namespace=? AND name=?",
                (kind, namespace, name),
            )
            if kind == "InferenceService":
                db.execute(
                    "DELETE FROM revisions WHERE namespace=? AND service=?", (namespace, name)
                )
        return cursor.rowcount > 0

    def set_status(self, kind: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE objects SET status=? WHERE kind=? AND namespace=? AND name=?",
                (json.dumps(status), kind, namespace, name),
            )

    def put_revision(self, namespace: str, service: str, revision: Revision) -> None:
        """Record a planned revision (unchanged if it is already recorded)."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO revisions VALUES (?, ?, ?, ?, ?)",
                (namespace, service, revision.name, _now(), revision_to_json(revision)),
            )

    def get_revision(self, namespace: str, service: str, name: str) -> Revision | None:
        with self._lock:
            row = self._db.execute(
                "SELECT revision FROM revisions WHERE namespace=? AND service=? AND name=?",
                (namespace, service, name),
            ).fetchone()
        return revision_from_json(row[0]) if row else None

    def prune_revisions(self, namespace: str, service: str, keep: set[str]) -> None:
        """Forget the revisions of a service that neither run nor may be rolled back to."""
        with self._transaction() as db:
            names = [
                row[0]
                for row in db.execute(
                    "SELECT name FROM revisions WHERE namespace=? AND service=?",
                    (namespace, service),
                )
            ]
            for name in names:
                if name not in keep:
                    db.execute(
                        "DELETE FROM revisions WHERE namespace=? AND service=? AND name=?",
                        (namespace, service, name),
                    )

    def record_replica(self, replica_id: str, pid: int, owner: int, owner_ticks: int) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO replicas VALUES (?, ?, ?, ?, ?)",
                (replica_id, pid, owner, owner_ticks, _now()),
            )

    def forget_replica(self, replica_id: str) -> None:
        self.forget_replicas([replica_id])

    def forget_replicas(self, replica_ids: list[str]) -> None:
        with self._transaction() as db:
            db.executemany("DELETE FROM replicas WHERE id=?", [(i,) for i in replica_ids])

    def replica_records(self) -> list[ReplicaRecord]:
        with self._lock:
            rows = self._db.execute("SELECT id, pid, owner, owner_ticks FROM replicas").fetchall()
        return [ReplicaRecord(*row) for row in rows]


def revision_to_json(revision: Revision) -> str:
    return json.dumps(dataclasses.asdict(revision))


def revision_from_json(text: str) -> Revision:
    data = json.loads(text)
    process = data["process"]
    logger = data.get("logger")
    batcher = data.get("batcher")
    return Revision(
        name=data["name"],
        component=data["component"],
        process=ProcessSpec(
            command=tuple(process["command"]),
            args=tuple(process["args"]),
            env=tuple((name, value) for name, value in process["env"]),
            image=process.get("image"),
            working_dir=process.get("working_dir"),
            storage_uri=process.get("storage_uri"),
            resources=tuple(
                (kind, name, quantity) for kind, name, quantity in process.get("resources", ())
            ),
        ),
        protocol=data["protocol"],
        container_concurrency=data["container_concurrency"],
        timeout_s=data["timeout_s"],
        logger=LoggerPlan(
            url=logger["url"],
            mode=logger["mode"],
            metadata_headers=tuple(logger["metadata_headers"]),
            metadata_annotations=tuple((k, v) for k, v in logger["metadata_annotations"]),
        )
        if logger
        else None,
        batcher=BatcherPlan(**batcher) if batcher else None,
    )


def _stored(row: tuple[Any, ...]) -> StoredObject:
    return StoredObject(
        kind=row[0],
        namespace=row[1],
        name=row[2],
        generation=row[3],
        document=json.loads(row[4]),
        status=json.loads(row[5]) if row[5] else None,
    )


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
