"""The SQLite inference store: schema, reads per column, name mapping, tags, persistence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelhost import errors
from modelhost.trust.store import (
    UNLABELED_TAG,
    InferenceBatch,
    TrustStore,
    UnknownColumn,
    UnknownModel,
)


def _batch(n: int, start: int = 0, tag: str = UNLABELED_TAG) -> InferenceBatch:
    return InferenceBatch(
        "m",
        {"x": [float(start + i) for i in range(n)], "city": [f"c{i % 2}" for i in range(n)]},
        {"ok": [i % 2 == 0 for i in range(n)]},
        [f"id-{start + i}" for i in range(n)],
        tag,
    )


def test_rows_persist_in_the_file_and_read_back_as_typed_columns(tmp_path: Path) -> None:
    path = str(tmp_path / "store.sqlite")
    store = TrustStore(path)
    assert store.write([_batch(3), _batch(2, start=3)]) == 5
    store.close()
    store = TrustStore(path)
    columns = store.read("m", ["x", "city", "ok"])
    np.testing.assert_array_equal(columns["x"], [0.0, 1.0, 2.0, 3.0, 4.0])
    assert columns["x"].dtype == np.float64
    assert columns["city"].tolist() == ["c0", "c1", "c0", "c0", "c1"]
    assert columns["ok"].dtype == np.bool_
    assert store.read("m", ["x"], last=2)["x"].tolist() == [3.0, 4.0]
    assert [c.dtype for c in store.schema("m").columns] == ["number", "string", "bool"]
    assert store.count("m") == 5


def test_a_batch_with_other_columns_is_refused_and_nothing_of_its_transaction_kept() -> None:
    store = TrustStore(":memory:")
    store.write([_batch(2)])
    other = InferenceBatch("m", {"y": [1.0]}, {"ok": [True]}, ["z"])
    with pytest.raises(errors.InvalidInput, match="stores columns"):
        store.write([_batch(1, start=2), other])
    assert store.count("m") == 2
    short = InferenceBatch("m", {"x": [1.0], "city": []}, {"ok": [True]}, ["z"])
    with pytest.raises(errors.InvalidInput, match="'city' of model 'm' has 0 values"):
        store.write([short])


def test_name_mapping_renames_columns_for_reads_and_clears() -> None:
    store = TrustStore(":memory:")
    store.write([_batch(2)])
    store.set_name_mapping("m", {"x": "age"}, {"ok": "approved"})
    assert store.read("m", ["age", "approved"])["age"].tolist() == [0.0, 1.0]
    with pytest.raises(UnknownColumn, match="no input column 'nope'"):
        store.set_name_mapping("m", {"nope": "a"}, {})
    store.clear_name_mapping("m")
    with pytest.raises(UnknownColumn, match="'age'"):
        store.read("m", ["age"])


def test_tags_slice_rows_and_reads_filter_by_tag() -> None:
    store = TrustStore(":memory:")
    store.write([_batch(10)])
    assert store.tag_rows("m", "TRAINING", [(0, 3), (8, 9)]) == 4
    assert store.tag_counts("m") == {"TRAINING": 4, UNLABELED_TAG: 6}
    assert store.read("m", ["x"], tag="TRAINING")["x"].tolist() == [0.0, 1.0, 2.0, 8.0]
    with pytest.raises(errors.InvalidInput, match="outside"):
        store.tag_rows("m", "TRAINING", [(5, 11)])


def test_unknown_models_are_404s() -> None:
    store = TrustStore(":memory:")
    with pytest.raises(UnknownModel, match="'ghost'") as caught:
        store.read("ghost", ["x"])
    assert errors.http_status(caught.value) == 404


def test_a_column_s_type_is_bool_number_or_string_by_all_its_values() -> None:
    store = TrustStore(":memory:")
    batch = InferenceBatch(
        "types",
        {"flags": [True, False], "ints": [1, 2], "mixed": [1, 2.5], "bool_and_int": [True, 1]},
        {"none": [None, 1.0], "text": ["a", 1]},
        ["a", "b"],
    )
    store.write([batch])
    assert [(c.name, c.dtype) for c in store.schema("types").columns] == [
        ("flags", "bool"),
        ("ints", "number"),
        ("mixed", "number"),
        ("bool_and_int", "string"),
        ("none", "string"),
        ("text", "string"),
    ]
    # A number column refuses bools later: a bool is not a number here.
    with pytest.raises(errors.InvalidInput, match="holds number values"):
        store.write(
            [
                InferenceBatch(
                    "types", {**batch.inputs, "ints": [True, False]}, batch.outputs, ["c", "d"]
                )
            ]
        )
