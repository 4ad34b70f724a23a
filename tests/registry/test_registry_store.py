"""The registry's store on SQLite and PostgreSQL: uniqueness kept by the database itself.

Two stores over one database stand for two registry processes: their locks do not see each
other, so only the unique indexes can keep one name from being registered twice.
"""

from __future__ import annotations

import socket
import threading

import pytest

from modelhost import errors
from modelhost.registry import RegistryConflict, RegistryStore


def test_two_stores_registering_one_name_at_once_leave_exactly_one(database_url: str) -> None:
    stores = [RegistryStore(database_url) for _ in range(2)]
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def register(store: RegistryStore) -> None:
        barrier.wait()
        try:
            store.create("registered_model", 0, {"name": "race", "state": "LIVE"})
            outcomes.append("created")
        except RegistryConflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=register, args=(stores[i % 2],)) for i in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
        assert sorted(outcomes) == ["conflict"] * 7 + ["created"]
        assert [r.name for r in stores[0].select("registered_model")] == ["race"]
    finally:
        for store in stores:
            store.close()


def test_names_are_unique_per_parent_and_external_ids_per_kind(database_url: str) -> None:
    store = RegistryStore(database_url)
    try:
        first = store.create("registered_model", 0, {"name": "a", "externalId": "ext-1"})
        second = store.create("registered_model", 0, {"name": "b"})
        store.create("model_version", first.id, {"name": "v1"})
        store.create("model_version", second.id, {"name": "v1"})
        with pytest.raises(RegistryConflict):
            store.create("model_version", first.id, {"name": "v1"})
        with pytest.raises(RegistryConflict):
            store.create("registered_model", 0, {"name": "c", "externalId": "ext-1"})
        with pytest.raises(RegistryConflict):
            store.update(second, {"name": "b", "externalId": "ext-1"})
        # Nameless resources (artifacts may have none) never collide.
        store.create("artifact", 0, {"uri": "s3://x"})
        store.create("artifact", 0, {"uri": "s3://y"})
        found = store.find("model_version", name="v1", parent_id=second.id)
        assert found is not None
        assert found.parent_id == second.id
        assert store.find("registered_model", external_id="ext-1") == first
    finally:
        store.close()


def test_the_sqlite_file_keeps_resources_across_stores(tmp_path: object) -> None:
    path = str(tmp_path) + "/registry.sqlite"
    store = RegistryStore(path)
    created = store.create("serving_environment", 0, {"name": "prod"})
    store.close()
    reopened = RegistryStore(f"sqlite:///{path}")
    try:
        assert reopened.get("serving_environment", created.id) == created
    finally:
        reopened.close()


def test_an_unreachable_postgresql_is_reported_without_its_password() -> None:
    pytest.importorskip("psycopg")
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        url = f"postgresql://registry:hunter2@127.0.0.1:{unused.getsockname()[1]}/registry"
        with pytest.raises(errors.ServerNotReady) as failed:
            RegistryStore(url)
    assert "unreachable" in str(failed.value)
    assert "hunter2" not in str(failed.value)
