"""The writer's one-row path: a logged v2 exchange of one row read straight into its stored row.

It must store exactly what the general path (tensors to columns) stores, and hand everything
else, errors included, to the general path: checked against it over generated bodies.
"""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from modelhost import errors
from modelhost.trust.ingest import OneRow, exchange_batch, one_row
from modelhost.trust.store import InferenceBatch, TrustStore
from modelhost.trust.writer import BatchWriter

_scalars = st.one_of(
    st.integers(-(2**53), 2**53),
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


def general(request: Any, response: Any) -> InferenceBatch | str:
    try:
        return exchange_batch("m", "r-1", request, response)
    except errors.InvalidInput as exc:
        return f"refused: {exc}"


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
    request = {request_key: inputs}
    response = {"outputs": outputs}
    row = one_row("m", "r-1", request, response)
    expected = general(request, response)
    if row is None:
        return  # the general path decides (it refuses, or the exchange is not one v2 row)
    assert not isinstance(expected, str), expected
    assert as_lists(row.batch()) == as_lists(expected)


def row_body(key: str, *tensors: Any) -> dict[str, Any]:
    return {key: [{"name": n, "shape": s, "datatype": "FP64", "data": d} for n, s, d in tensors]}


def test_one_v2_row_is_read_whole_and_anything_else_left_to_the_general_path() -> None:
    request = row_body("inputs", ("x", [1, 3], [1.0, 2.0, 3.0]), ("flag", [1], [True]))
    response = row_body("outputs", ("y", [1], [0]))
    row = one_row("m", "r-1", request, response)
    assert row == OneRow(
        "m", "r-1", (("x-0", "x-1", "x-2", "flag"), ("y",)), [1.0, 2.0, 3.0, True, 0]
    )
    assert request["inputs"][0]["data"] == [1.0, 2.0, 3.0]  # the parsed body is left as it was
    others = [
        row_body("inputs", ("x", [2, 1], [1.0, 2.0])),  # two rows
        row_body("inputs", ("x", [1, 2], [[1.0, 2.0]])),  # nested
        row_body("inputs", ("x", [1, 2], [1.0])),  # too few values
        row_body("inputs", ("x", [1], [1.0]), ("x", [1], [2.0])),  # a column twice
        row_body("inputs", ("x", [1, -2, -1], [1.0, 2.0])),  # a negative size
        {"instances": [[1.0, 2.0]]},  # v1
    ]
    for other in others:
        assert one_row("m", "r-1", other, response) is None
    assert one_row("m", "r-1", request, {"predictions": [0]}) is None


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
