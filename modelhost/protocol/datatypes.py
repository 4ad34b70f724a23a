"""Tensor datatypes of the Open Inference Protocol and their numpy and byte forms.

Binary forms are little-endian and row-major, as the protocol's binary tensor
extension and gRPC raw contents require. BYTES elements are a 4-byte little-endian
length followed by the bytes. BF16 has no numpy dtype: it is held as float32 in
memory and truncated to its upper 16 bits on the wire, as Triton's clients do.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from modelhost import errors

__all__ = [
    "DATATYPES",
    "convert",
    "converts",
    "datatype_of",
    "from_bytes",
    "numpy_dtype",
    "reshaped",
    "to_bytes",
]

_NUMPY: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BF16": np.dtype("<f4"),
    "BYTES": np.dtype(np.object_),
}

DATATYPES: frozenset[str] = frozenset(_NUMPY)

_BY_KIND: dict[tuple[str, int], str] = {
    ("b", 1): "BOOL",
    ("u", 1): "UINT8",
    ("u", 2): "UINT16",
    ("u", 4): "UINT32",
    ("u", 8): "UINT64",
    ("i", 1): "INT8",
    ("i", 2): "INT16",
    ("i", 4): "INT32",
    ("i", 8): "INT64",
    ("f", 2): "FP16",
    ("f", 4): "FP32",
    ("f", 8): "FP64",
}


# Each numeric datatype's kind: a value converts within its kind, and up the list.
_KIND = {
    "BOOL": 0,
    **{t: 1 for t in ("UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64")},
    **{t: 2 for t in ("FP16", "FP32", "FP64", "BF16")},
}


def converts(sent: str, declared: str) -> bool:
    """Whether a ``sent`` tensor may stand for a ``declared`` one, converted.

    Within a kind (a float of another width; an integer of another width, its values
    checked by :func:`convert`) and up from booleans to integers and floats and from
    integers to floats; never to or from BYTES, to BOOL, or from a float to an integer.
    JSON clients send every number as INT64 or FP64 whatever the model's width, and an
    FP32 client meets FP64 models (scikit-learn's): both convert.
    """
    sent_kind = _KIND.get(sent)
    declared_kind = _KIND.get(declared)
    if sent_kind is None or declared_kind is None or declared_kind == 0:
        return sent == declared
    return sent_kind <= declared_kind


def convert(array: npt.NDArray[Any], declared: str) -> npt.NDArray[Any]:
    """``array`` as ``declared`` (see :func:`converts`); refuses values that do not fit."""
    target = numpy_dtype(declared)
    if array.dtype == target:
        return array
    if _widens(array.dtype, target):
        return array.astype(target)  # exact, and the hot path (FP32 clients of FP64 models)
    if array.size and target.kind in ("i", "u") and array.dtype.kind in ("i", "u"):
        limits = np.iinfo(target)
        if array.min() < limits.min or array.max() > limits.max:
            raise errors.InvalidInput(f"values outside the range of {declared}.")
    with np.errstate(over="ignore"):
        converted = array.astype(target)
    # A narrower float turns what it cannot hold into infinity: refused, not guessed.
    narrowed = target.kind == "f" and array.dtype.kind == "f" and target.itemsize < array.itemsize
    if narrowed and np.isinf(converted).any() and not np.isinf(array).any():
        raise errors.InvalidInput(f"values outside the range of {declared}.")
    return converted


_WIDENS: dict[tuple[np.dtype[Any], np.dtype[Any]], bool] = {}


def _widens(source: np.dtype[Any], target: np.dtype[Any]) -> bool:
    # Remembered: np.can_cast costs a microsecond, more than the cast of a small tensor.
    key = (source, target)
    known = _WIDENS.get(key)
    if known is None:
        known = _WIDENS[key] = bool(np.can_cast(source, target))
    return known


def numpy_dtype(datatype: str) -> np.dtype[Any]:
    """The numpy dtype that holds ``datatype`` in memory."""
    try:
        return _NUMPY[datatype]
    except KeyError:
        raise errors.InvalidInput(
            f"Unsupported datatype {datatype!r}; expected one of {sorted(DATATYPES)}."
        ) from None


def datatype_of(array: npt.NDArray[Any]) -> str:
    """The protocol datatype for a numpy array (strings and objects are BYTES)."""
    kind = array.dtype.kind
    if kind in ("O", "U", "S", "M", "m"):
        return "BYTES"
    name = _BY_KIND.get((kind, array.dtype.itemsize))
    if name is None:
        raise errors.InferenceError(f"Cannot send numpy dtype {array.dtype} as a tensor.")
    return name


def element_count(shape: Sequence[int]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def reshaped(array: npt.NDArray[Any], shape: Sequence[int]) -> npt.NDArray[Any]:
    """``array`` in ``shape``: one numpy cannot hold (65 dimensions, 2**63 elements) is a 400."""
    try:
        return array.reshape(shape)
    except ValueError as exc:
        raise errors.InvalidInput(
            f"Shape {list(shape)} is not a valid tensor shape: {exc}"
        ) from None


def from_bytes(datatype: str, shape: Sequence[int], buffer: bytes | memoryview) -> npt.NDArray[Any]:
    """Decode one tensor's binary form; numeric types are a zero-copy view of ``buffer``."""
    count = element_count(shape)
    if datatype == "BYTES":
        items = _split_bytes(buffer)
        if len(items) != count:
            raise errors.InvalidInput(
                f"BYTES tensor holds {len(items)} elements but shape {list(shape)} needs {count}."
            )
        array = np.empty(count, dtype=np.object_)
        array[:] = items
        return reshaped(array, shape)
    dtype = numpy_dtype(datatype)
    wire_size = 2 if datatype == "BF16" else dtype.itemsize
    if len(buffer) != count * wire_size:
        raise errors.InvalidInput(
            f"Tensor of shape {list(shape)} and datatype {datatype} needs "
            f"{count * wire_size} bytes, got {len(buffer)}."
        )
    if datatype == "BF16":
        upper = np.frombuffer(buffer, dtype="<u2").astype("<u4") << 16
        return reshaped(upper.view("<f4"), shape)
    return reshaped(np.frombuffer(buffer, dtype=dtype), shape)


def to_bytes(datatype: str, array: npt.NDArray[Any]) -> bytes:
    """Encode one tensor in its binary form."""
    if datatype == "BYTES":
        return _join_bytes(array)
    if datatype == "BF16":
        as_f32 = np.ascontiguousarray(array, dtype="<f4")
        return (as_f32.view("<u4") >> 16).astype("<u2").tobytes()
    dtype = numpy_dtype(datatype)
    return np.ascontiguousarray(array, dtype=dtype).tobytes()


def _split_bytes(buffer: bytes | memoryview) -> list[bytes]:
    view = memoryview(buffer)
    items: list[bytes] = []
    offset, end = 0, len(view)
    while offset < end:
        if offset + 4 > end:
            raise errors.InvalidInput("BYTES tensor is truncated inside a length prefix.")
        (length,) = struct.unpack_from("<I", view, offset)
        offset += 4
        if offset + length > end:
            raise errors.InvalidInput("BYTES tensor is truncated inside an element.")
        items.append(bytes(view[offset : offset + length]))
        offset += length
    return items


def _join_bytes(array: npt.NDArray[Any]) -> bytes:
    parts: list[bytes] = []
    for item in np.asarray(array, dtype=np.object_).ravel():
        data = as_bytes(item)
        parts.append(struct.pack("<I", len(data)))
        parts.append(data)
    return b"".join(parts)


def as_bytes(item: Any) -> bytes:
    """One BYTES element as bytes (str is UTF-8 encoded)."""
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode("utf-8")
    if isinstance(item, (bytearray, memoryview, np.bytes_)):
        return bytes(item)
    return str(item).encode("utf-8")
