"""The platform's SQLite state: generations, status, recorded revisions, a reopened file."""

from __future__ import annotations

from pathlib import Path

from modelhost.control import BatcherPlan, LoggerPlan, ProcessSpec, Revision
from modelhost.local.store import Store, revision_from_json, revision_to_json

DOCUMENT = {
    "apiVersion": "serving.kserve.io/v1beta1",
    "kind": "InferenceService",
    "metadata": {"name": "iris"},
    "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}}}},
}


def test_generation_moves_only_when_the_spec_changes(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    first = store.put("InferenceService", "default", "iris", DOCUMENT)
    assert first.generation == 1
    assert first.document["metadata"]["uid"]
    labelled = {**DOCUMENT, "metadata": {"name": "iris", "labels": {"team": "a"}}}
    assert store.put("InferenceService", "default", "iris", labelled).generation == 1
    changed = {**DOCUMENT, "spec": {"predictor": {"minReplicas": 2}}}
    second = store.put("InferenceService", "default", "iris", changed)
    assert second.generation == 2
    assert second.document["metadata"]["uid"] == first.document["metadata"]["uid"]
    # apply replaces the whole object: the labels of the last document are what is kept.
    assert "labels" not in second.document["metadata"]
    store.set_status("InferenceService", "default", "iris", {"url": "http://iris"})
    store.close()
    reopened = Store(tmp_path / "state.db")
    found = reopened.get("InferenceService", "default", "iris")
    assert found is not None
    assert found.generation == 2
    assert found.status == {"url": "http://iris"}
    assert [o.name for o in reopened.list_objects("InferenceService")] == ["iris"]
    assert reopened.list_objects("InferenceService", "other") == []
    assert reopened.delete("InferenceService", "default", "iris")
    assert not reopened.delete("InferenceService", "default", "iris")
    assert reopened.get("InferenceService", "default", "iris") is None


def test_revisions_round_trip_and_prune(tmp_path: Path) -> None:
    revision = Revision(
        name="iris-predictor-abc",
        component="predictor",
        process=ProcessSpec(
            command=("modelhost", "serve"),
            args=("--http_port={http_port}",),
            env=(("A", "1"),),
            storage_uri="gs://bucket/model",
            resources=(("limits", "cpu", "1"),),
        ),
        protocol="v1",
        container_concurrency=4,
        timeout_s=60,
        logger=LoggerPlan("http://sink", "all", ("x-user",), (("team", "a"),)),
        batcher=BatcherPlan(32, 50, None),
    )
    assert revision_from_json(revision_to_json(revision)) == revision
    store = Store(tmp_path / "state.db")
    store.put_revision("default", "iris", revision)
    other = Revision("iris-predictor-def", "predictor", ProcessSpec((), ()), "v2", 0, 60)
    store.put_revision("default", "iris", other)
    assert store.get_revision("default", "iris", revision.name) == revision
    store.prune_revisions("default", "iris", keep={other.name})
    assert store.get_revision("default", "iris", revision.name) is None
    assert store.get_revision("default", "iris", other.name) == other
