"""A request's inputs against a model's declared ones: names, datatypes, conversions."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from modelhost import errors
from modelhost.protocol.declared_inputs import DeclaredInputs
from modelhost.protocol.infer_type import InferInput, InferRequest

IRIS = [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
TWO = [
    {"name": "a", "datatype": "INT64", "shape": [-1]},
    {"name": "b", "datatype": "FP32", "shape": [-1]},
]


def request(*inputs: tuple[str, str, list[Any]], **parameters: Any) -> InferRequest:
    tensors = [InferInput(name, [len(data)], datatype, data) for name, datatype, data in inputs]
    return InferRequest("m", tensors, parameters=parameters)


def refused(metadata: list[dict[str, Any]], sent: InferRequest) -> str:
    with pytest.raises(errors.InvalidInput) as exc:
        DeclaredInputs("m", metadata).check(sent)
    return str(exc.value)


def test_an_fp32_input_widens_to_the_declared_fp64() -> None:
    sent = request(("input-0", "FP32", [0.1, 2.0]))
    DeclaredInputs("m", IRIS).check(sent)
    tensor = sent.inputs[0]
    assert tensor.datatype == "FP64"
    assert tensor.as_numpy().dtype == np.float64  # the model gets what it declared
    assert tensor.as_numpy()[0] == np.float64(np.float32(0.1))


@pytest.mark.parametrize(
    ("sent", "fragment"),
    [
        (("input-0", "BYTES", [b"a"]), "Input input-0 is BYTES; the model expects FP64"),
        (("input-0", "BOOL", [True]), None),  # a boolean is a number: accepted
    ],
)
def test_datatypes_that_do_not_convert_are_refused(
    sent: tuple[str, str, list[Any]], fragment: str | None
) -> None:
    if fragment is None:
        DeclaredInputs("m", IRIS).check(request(sent))
    else:
        assert fragment in refused(IRIS, request(sent))


def test_an_integer_out_of_the_declared_range_is_refused() -> None:
    metadata = [{"name": "x", "datatype": "INT8", "shape": [-1]}]
    DeclaredInputs("m", metadata).check(request(("x", "INT64", [1, -128])))
    assert "Input x: values outside the range of INT8" in refused(
        metadata, request(("x", "INT64", [1, 300]))
    )


def test_an_unknown_name_among_declared_ones_is_refused() -> None:
    message = refused(TWO, request(("a", "INT64", [1]), ("c", "FP32", [1.0])))
    assert (
        message
        == "Model m takes the inputs ['a', 'b']; the request sends ['a', 'c'] (unknown ['c'])."
    )


def test_a_name_sent_twice_is_refused_even_without_declared_inputs() -> None:
    twice = request(("a", "INT64", [1]), ("a", "INT64", [2]))
    assert "'a' is sent twice" in refused([], twice)
    assert "'a' is sent twice" in refused(TWO, twice)


def test_undeclared_names_go_by_position() -> None:
    # KServe's runtimes read the first input whatever its name.
    sent = request(("x", "FP32", [1.0, 2.0]))
    DeclaredInputs("m", IRIS).check(sent)
    assert sent.inputs[0].datatype == "FP64"
    assert "Input y is FP64; the model expects INT64" in refused(
        TWO, request(("y", "FP64", [1.0]), ("z", "FP32", [1.0]))
    )
    fewer = request(("y", "BYTES", [b"a"]))  # fewer than declared: the model decides
    DeclaredInputs("m", TWO).check(fewer)


def test_more_inputs_than_declared_is_refused() -> None:
    message = refused(IRIS, request(("x", "FP64", [1.0]), ("y", "FP64", [1.0])))
    assert message == "Model m takes one FP64 input, 'input-0'; the request sends 2."
    three = request(("x", "INT64", [1]), ("y", "FP32", [1.0]), ("z", "FP32", [1.0]))
    assert "takes 2 inputs, ['a', 'b']; the request sends 3" in refused(TWO, three)


def test_dataframe_requests_and_undeclared_models_are_not_checked() -> None:
    columns = request(("sepal", "FP64", [1.0]), ("kind", "BYTES", [b"x"]), content_type="pd")
    DeclaredInputs("m", IRIS).check(columns)
    DeclaredInputs("m", []).check(request(("anything", "BYTES", [b"x"])))
    custom = [{"name": "x", "datatype": "IMAGE", "shape": [-1]}]  # not a protocol datatype
    DeclaredInputs("m", custom).check(request(("x", "BYTES", [b"x"])))
