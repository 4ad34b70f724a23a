"""Datatype names, numpy dtypes and the binary layout of every tensor type."""

from __future__ import annotations

import numpy as np
import pytest

from modelhost import errors
from modelhost.protocol import datatypes


@pytest.mark.parametrize(
    ("datatype", "values"),
    [
        ("BOOL", [True, False]),
        ("UINT8", [0, 255]),
        ("UINT16", [0, 65535]),
        ("UINT32", [0, 2**32 - 1]),
        ("UINT64", [0, 2**64 - 1]),
        ("INT8", [-128, 127]),
        ("INT16", [-(2**15), 2**15 - 1]),
        ("INT32", [-(2**31), 2**31 - 1]),
        ("INT64", [-(2**63), 2**63 - 1]),
        ("FP16", [0.5, -65504.0]),
        ("FP32", [1.25, -3.0e38]),
        ("FP64", [1e-300, -1e300]),
    ],
)
def test_numeric_round_trip(datatype: str, values: list[object]) -> None:
    array = np.array(values, dtype=datatypes.numpy_dtype(datatype))
    assert datatypes.datatype_of(array) == datatype
    raw = datatypes.to_bytes(datatype, array)
    assert len(raw) == array.size * array.dtype.itemsize
    np.testing.assert_array_equal(datatypes.from_bytes(datatype, [2], raw), array)


def test_big_endian_arrays_are_sent_little_endian() -> None:
    array = np.array([1, 256], dtype=">i4")
    assert datatypes.to_bytes("INT32", array) == b"\x01\x00\x00\x00\x00\x01\x00\x00"


def test_bytes_layout_is_length_prefixed() -> None:
    array = np.array([b"ab", "é", b""], dtype=object)
    raw = datatypes.to_bytes("BYTES", array)
    assert raw == b"\x02\x00\x00\x00ab\x02\x00\x00\x00\xc3\xa9\x00\x00\x00\x00"
    assert datatypes.from_bytes("BYTES", [3], raw).tolist() == [b"ab", "é".encode(), b""]


@pytest.mark.parametrize(
    "raw", [b"\x05\x00\x00\x00ab", b"\x02\x00", b"\x01\x00\x00\x00a\x01\x00\x00\x00b"]
)
def test_malformed_bytes_are_invalid_input(raw: bytes) -> None:
    with pytest.raises(errors.InvalidInput):
        datatypes.from_bytes("BYTES", [1], raw)


def test_bf16_truncates_float32() -> None:
    array = np.array([1.0, 1.00390625, -0.0], dtype=np.float32)
    raw = datatypes.to_bytes("BF16", array)
    assert len(raw) == 6
    # 1.00390625 needs more mantissa bits than bfloat16 keeps: it truncates to 1.0
    assert datatypes.from_bytes("BF16", [3], raw).tolist() == [1.0, 1.0, -0.0]


def test_wrong_size_and_unknown_type() -> None:
    with pytest.raises(errors.InvalidInput, match="needs 8 bytes, got 4"):
        datatypes.from_bytes("FP32", [2], b"\x00" * 4)
    with pytest.raises(errors.InvalidInput, match="Unsupported datatype"):
        datatypes.numpy_dtype("COMPLEX64")
    assert datatypes.datatype_of(np.array(["x"])) == "BYTES"
    with pytest.raises(errors.InferenceError):
        datatypes.datatype_of(np.array([1 + 2j]))


@pytest.mark.parametrize(
    ("sent", "declared", "converts"),
    [
        ("FP32", "FP64", True),  # the widening FP32 clients of FP64 models need
        ("FP64", "FP32", True),  # JSON numbers arrive as FP64 whatever the model's width
        ("FP16", "BF16", True),
        ("INT64", "INT8", True),  # values checked by convert
        ("UINT8", "INT64", True),
        ("INT32", "FP64", True),
        ("BOOL", "FP32", True),
        ("FP32", "INT64", False),
        ("FP64", "BOOL", False),
        ("INT8", "BOOL", False),
        ("BYTES", "FP64", False),
        ("FP64", "BYTES", False),
        ("BYTES", "BYTES", True),
    ],
)
def test_converts(sent: str, declared: str, converts: bool) -> None:
    assert datatypes.converts(sent, declared) is converts


def test_convert_refuses_values_that_do_not_fit() -> None:
    assert datatypes.convert(np.array([1, 2], np.int64), "INT8").dtype == np.int8
    with pytest.raises(errors.InvalidInput, match="range of INT8"):
        datatypes.convert(np.array([1, 300], np.int64), "INT8")
    with pytest.raises(errors.InvalidInput, match="range of UINT8"):
        datatypes.convert(np.array([-1], np.int64), "UINT8")
    with pytest.raises(errors.InvalidInput, match="range of FP16"):
        datatypes.convert(np.array([1e10]), "FP16")
    assert np.isinf(datatypes.convert(np.array([np.inf]), "FP32")).all()  # inf stays inf
    widened = datatypes.convert(np.array([0.1], np.float32), "FP64")
    assert widened.dtype == np.float64
    assert widened[0] == np.float64(np.float32(0.1))  # exact: nothing rounded
