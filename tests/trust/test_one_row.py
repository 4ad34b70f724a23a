"""The writer's one-row path: a logged v2 exchange of one row read straight into its stored row.

It must store exactly what the general path (tensors to columns) stores, and hand everything
else, errors included, to the general path: checked against it over generated bodies.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelhost import errors
from modelhost.trust.ingest import OneRow, exchange_batch, one_row, parse_exchange
from modelhost.trust.store import InferenceBatch, TrustStore
from modelhost.trust.writer import BatchWriter

_scalars = st.one_of(
    st.integers(-(2**53), 2**53),
    st.integers(-(2**70), 2**70),  # past 64 bits orjson reads a float: the general path decides
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.text(max_size=3),
)
_odd = st.one_of(
    st.none(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=1), st.integers(), max_size=1),
)
_names = st.sampled_from(["a", "b", "a-0", "x", "y", "z", "w", ""])


@st.composite
def tensors(draw: st.DrawFn) -> Any:
    """Tensors most often well formed and of one row, sometimes not, in every way that the
    general path looks at (shape, sizes, value count, value types, nesting, names). Each
    choice's first (and simplest, which hypothesis draws most) is the well-formed one."""
    count = draw(st.sampled_from([1, 1, 1, 2, 2, 3, 0]))
    result: list[Any] = []
    for _ in range(count):
        if draw(st.integers(0, 29)) == 29:
            result.append(draw(st.one_of(_odd, st.text(max_size=2))))
            continue
        rows = draw(st.sampled_from([1] * 8 + [2, 0]))
        inner = draw(st.lists(st.integers(0, 3), max_size=2))
        shape: list[Any] = [rows, *inner]
        width = 1
        for size in inner:
            width *= size
        values: list[Any] = draw(st.lists(_scalars, min_size=rows * width, max_size=rows * width))
        mutation = draw(st.integers(0, 40))
        if mutation == 1 and values:
            values = values[1:]
        elif mutation == 2:
            values.append(draw(_odd))
        elif mutation == 3 and width > 0 and rows > 0:
            values = [values[i : i + width] for i in range(0, len(values), width)]  # nested rows
        elif mutation == 4:
            shape = [*shape, -1]
        elif mutation == 5:
            shape = [True, *inner]
        elif mutation == 6:
            shape = []
        elif mutation == 7:
            shape = [float(rows), *inner]
        tensor: dict[str, Any] = {"name": draw(_names), "shape": shape, "data": values}
        if mutation == 8:
            del tensor["data"]
        elif mutation == 9:
            tensor["shape"] = "1"
        result.append(tensor)
    return result if draw(st.integers(0, 40)) < 40 else draw(_odd)


def general(request: bytes, response: bytes) -> InferenceBatch | str:
    try:
        request_data, response_data = parse_exchange("r-1", request, response)
        return exchange_batch("m", "r-1", request_data, response_data)
    except errors.InvalidInput as exc:
        return f"refused: {exc}"


def body(data: Any) -> bytes:
    """JSON as a client may write it (the standard library writes any integer, and escapes
    what is not ASCII)."""
    return json.dumps(data).encode()


def as_lists(batch: InferenceBatch) -> tuple[Any, ...]:
    """A batch's content, with exact value types (1 and 1.0 and True are not the same here)."""

    def typed(columns: Any) -> list[Any]:
        return [(name, [(type(v), v) for v in values]) for name, values in columns.items()]

    return (batch.model_id, typed(batch.inputs), typed(batch.outputs), list(batch.request_ids))


@settings(max_examples=600, deadline=None)
@given(inputs=tensors(), outputs=tensors(), request_key=st.sampled_from(["inputs", "instances"]))
def test_a_row_it_reads_is_the_one_the_general_path_stores(
    inputs: Any, outputs: Any, request_key: str
) -> None:
    request = body({request_key: inputs})
    response = body({"outputs": outputs})
    row = one_row("m", "r-1", request, response)
    expected = general(request, response)
    if row is None:
        return  # the general path decides (it refuses, or the exchange is not one v2 row)
    assert not isinstance(expected, str), expected
    assert as_lists(row.batch()) == as_lists(expected)


def row_body(key: str, *tensors: Any) -> dict[str, Any]:
    return {key: [{"name": n, "shape": s, "datatype": "FP64", "data": d} for n, s, d in tensors]}


def row_bytes(key: str, *tensors: Any) -> bytes:
    return body(row_body(key, *tensors))


def test_one_v2_row_is_read_whole_and_anything_else_left_to_the_general_path() -> None:
    request = row_bytes("inputs", ("x", [1, 3], [1.0, 2.0, 3.0]), ("flag", [1], [True]))
    response = row_bytes("outputs", ("y", [1], [0]))
    row = one_row("m", "r-1", request, response)
    assert row == OneRow(
        "m", "r-1", (("x-0", "x-1", "x-2", "flag"), ("y",)), [1.0, 2.0, 3.0, True, 0]
    )
    others = [
        row_bytes("inputs", ("x", [2, 1], [1.0, 2.0])),  # two rows
        row_bytes("inputs", ("x", [1, 2], [[1.0, 2.0]])),  # nested
        row_bytes("inputs", ("x", [1, 2], [1.0])),  # too few values
        row_bytes("inputs", ("x", [1], [1.0]), ("x", [1], [2.0])),  # a column twice
        row_bytes("inputs", ("x", [1, -2, -1], [1.0, 2.0])),  # a negative size
        row_bytes("inputs", ("x", [1], [2**63])),  # past a signed 64-bit integer
        row_bytes("inputs", ("x", [1], [None])),
        body({"instances": [[1.0, 2.0]]}),  # v1
        b'{"inputs": [{"name": "x", "shape": [1], "data": ["\\ud800"]}]}',  # a lone surrogate
        row_bytes("inputs", ("x", [1], [1.0])) + b" {}",  # more after the document
        b"\xef\xbb\xbf" + row_bytes("inputs", ("x", [1], [1.0])),  # a byte order mark
        b"[]",
    ]
    for other in others:
        assert one_row("m", "r-1", other, response) is None, other
    assert one_row("m", "r-1", request, body({"predictions": [0]})) is None


@pytest.mark.parametrize(
    ("request_body", "stored"),
    [
        # A key given twice: the last one counts, for both readers.
        (b'{"inputs": [{"name": "a", "name": "x", "shape": [1], "data": [1.0]}]}', [1.0, 0]),
        (b'{"inputs": [], "inputs": [{"name": "x", "shape": [1], "data": [2]}]}', [2, 0]),
        # The largest integers both read as integers.
        (
            b'{"inputs": [{"name": "x", "shape": [1], "data": [-9223372036854775808]}]}',
            [-(2**63), 0],
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [1, 3], "data": [1e2, -0, 0.5]}]}',
            [100.0, 0, 0.5, 0],
        ),
    ],
)
def test_where_both_readers_take_an_exchange_they_store_the_same_row(
    request_body: bytes, stored: list[Any]
) -> None:
    response = row_bytes("outputs", ("y", [1], [0]))
    row = one_row("m", "r-1", request_body, response)
    expected = general(request_body, response)
    assert row is not None
    assert [(type(v), v) for v in row.values] == [(type(v), v) for v in stored]
    assert not isinstance(expected, str), expected
    assert as_lists(row.batch()) == as_lists(expected)


async def test_the_writer_stores_rows_and_batches_in_arrival_order() -> None:
    """One-row exchanges, a two-row one between them, a refused one, and rows of a second
    layout: each stored as it came, the refused one alone refused."""
    store = TrustStore(":memory:")
    writer = BatchWriter(store, lambda models: None)

    def add(rid: str, request: Any, response: Any) -> None:
        writer.add_exchange("m", rid, orjson.dumps(request), orjson.dumps(response))

    one = row_body("outputs", ("y", [1], [1]))
    add("a", row_body("inputs", ("x", [1, 2], [1.0, 2.0])), one)
    add(
        "b",
        row_body("inputs", ("x", [2, 2], [3.0, 4.0, 5.0, 6.0])),
        row_body("outputs", ("y", [2], [0, 1])),
    )
    add("c", row_body("inputs", ("x", [1, 2], [7.0, 8.0])), one)
    add("bad", row_body("inputs", ("x", [1, 2], ["s", "t"])), one)  # strings in number columns
    add("d", row_body("inputs", ("x", [1, 2], [9.0, 10.0])), one)
    await writer.settled()
    assert (writer.written, writer.refused) == (5, 1)
    assert store.read("m", ["x-0", "x-1"])["x-0"].tolist() == [1.0, 3.0, 5.0, 7.0, 9.0]
    assert [rid for rid, _, _ in store.inference_ids("m", True)] == ["a", "b-0", "b-1", "c", "d"]


async def test_an_exchange_of_no_values_is_refused_alone() -> None:
    """A tensor of width 0 gives a row of no columns: refused, and the round's others kept."""
    store = TrustStore(":memory:")
    writer = BatchWriter(store, lambda models: None)
    empty = orjson.dumps(row_body("inputs", ("x", [1, 0], [])))
    nothing = orjson.dumps(row_body("outputs", ("y", [1, 0], [])))
    writer.add_exchange("e", "r-1", empty, nothing)
    writer.add_exchange(
        "m",
        "r-2",
        orjson.dumps(row_body("inputs", ("x", [1], [1.0]))),
        orjson.dumps(row_body("outputs", ("y", [1], [1]))),
    )
    await writer.settled()
    assert (writer.written, writer.refused) == (1, 1)
    assert store.count("m") == 1
