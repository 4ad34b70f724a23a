"""The in-memory form of an inference request and response, independent of the wire.

Names and signatures follow KServe's ``kserve.protocol.infer_type`` so that a KServe
custom model runs unchanged. Tensors are held as numpy arrays: a tensor decoded from
a binary payload stays a zero-copy view, and one from JSON is converted once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from modelhost import errors
from modelhost.protocol import datatypes

__all__ = ["InferInput", "InferOutput", "InferRequest", "InferResponse", "RequestedOutput"]

Parameters = dict[str, Any]

_T = TypeVar("_T", bound="_Tensor")


class _Tensor:
    """What an input and an output share: a named, typed, shaped block of data."""

    __slots__ = ("_array", "_data", "_shape", "datatype", "name", "parameters")

    def __init__(
        self,
        name: str,
        shape: Sequence[int],
        datatype: str,
        data: Any = None,
        parameters: Parameters | None = None,
    ) -> None:
        self.name = name
        self._shape = [int(d) for d in shape]
        self.datatype = datatype
        self.parameters: Parameters = dict(parameters) if parameters else {}
        self._array: npt.NDArray[Any] | None = None
        self._data: Any = None
        if isinstance(data, np.ndarray):
            self._array = data
        else:
            self._data = data

    @classmethod
    def wrap(
        cls: type[_T],
        name: str,
        datatype: str,
        array: npt.NDArray[Any],
        parameters: Parameters | None = None,
    ) -> _T:
        """A tensor over ``array`` as it is, of the array's shape, keeping ``parameters``.

        Nothing is copied or checked: for code that made ``array`` itself and has checked
        it (a decoder, the batcher's split), where the constructor's copies show per request.
        """
        tensor = cls.__new__(cls)
        tensor.name = name
        tensor._shape = list(array.shape)
        tensor.datatype = datatype
        tensor.parameters = parameters if parameters is not None else {}
        tensor._array = array
        tensor._data = None
        return tensor

    @property
    def shape(self) -> list[int]:
        return self._shape

    @shape.setter
    def shape(self, shape: Sequence[int]) -> None:
        self._shape = [int(d) for d in shape]

    def set_shape(self, shape: Sequence[int]) -> None:
        self.shape = shape

    @property
    def data(self) -> Any:
        """The tensor's elements as a flat list (KServe's ``.data``)."""
        if self._data is None and self._array is not None:
            flat = self._array.ravel()
            if self.datatype == "BYTES":
                return list(flat)
            return flat.tolist()
        return self._data

    @data.setter
    def data(self, value: Any) -> None:
        self._data, self._array = (None, value) if isinstance(value, np.ndarray) else (value, None)

    def as_numpy(self) -> npt.NDArray[Any]:
        """The tensor as a numpy array of its shape (converted once, then cached)."""
        if self._array is None:
            self._array = _to_array(self.name, self.datatype, self._shape, self._data)
        return self._array

    def as_string(self) -> list[Any]:
        """BYTES elements decoded as UTF-8, nested to the tensor's shape."""
        if self.datatype != "BYTES":
            raise errors.InvalidInput(f"Tensor {self.name} is {self.datatype}, not BYTES.")
        decoded = np.empty(len(self.as_numpy().ravel()), dtype=np.object_)
        decoded[:] = [
            item.decode("utf-8") if isinstance(item, bytes) else item
            for item in self.as_numpy().ravel()
        ]
        result: list[Any] = decoded.reshape(self._shape).tolist()
        return result

    def set_data_from_numpy(self, array: npt.NDArray[Any], binary_data: bool = True) -> None:
        """Set the tensor from ``array``; ``binary_data`` is accepted for KServe parity.

        Whether an output travels as binary is the client's choice (``binary_data``
        on a requested output, or ``binary_data_output``), never the model's.
        """
        if not isinstance(array, np.ndarray):
            raise errors.InferenceError(f"Tensor {self.name}: expected a numpy array.")
        expected = datatypes.datatype_of(array)
        if self.datatype != expected and not (self.datatype == "BF16" and expected == "FP32"):
            raise errors.InferenceError(
                f"Tensor {self.name} is declared {self.datatype} but the array is {expected}."
            )
        self._array = array
        self._data = None
        self._shape = list(array.shape)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, shape={self._shape}, "
            f"datatype={self.datatype!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Tensor) or type(self) is not type(other):
            return NotImplemented
        return (
            self.name == other.name
            and self._shape == other._shape
            and self.datatype == other.datatype
            and self.parameters == other.parameters
            and np.array_equal(self.as_numpy(), other.as_numpy())
        )

    __hash__ = None  # type: ignore[assignment]


class InferInput(_Tensor):
    """One named input tensor of a request."""


class InferOutput(_Tensor):
    """One named output tensor of a response."""


def _to_array(name: str, datatype: str, shape: list[int], data: Any) -> npt.NDArray[Any]:
    if data is None:
        raise errors.InvalidInput(f"Input {name} has no data.")
    dtype = datatypes.numpy_dtype(datatype)
    expected = datatypes.element_count(shape)
    try:
        if datatype == "BYTES":
            array = np.empty(expected, dtype=np.object_)
            flat = _flatten(data) if isinstance(data, list) else [data]
            if len(flat) != expected:
                raise _count_error(name, shape, expected, len(flat))
            array[:] = flat
            return datatypes.reshaped(array, shape)
        array = np.asarray(data, dtype=dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise errors.InvalidInput(
            f"Input {name}: data does not fit datatype {datatype} ({exc})."
        ) from None
    if array.size != expected:
        raise _count_error(name, shape, expected, array.size)
    return datatypes.reshaped(array, shape)


def _count_error(name: str, shape: list[int], expected: int, got: int) -> errors.InvalidInput:
    return errors.InvalidInput(
        f"Input {name}: shape {shape} needs {expected} elements, data holds {got}."
    )


def _flatten(data: list[Any]) -> list[Any]:
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


class RequestedOutput:
    """An output the client asked for by name, with its per-output parameters."""

    __slots__ = ("name", "parameters")

    def __init__(self, name: str, parameters: Parameters | None = None) -> None:
        self.name = name
        self.parameters: Parameters = dict(parameters) if parameters else {}

    @property
    def binary_data(self) -> bool | None:
        """The client's per-output choice of binary form, or None when it made none."""
        value = self.parameters.get("binary_data")
        return None if value is None else bool(value)

    def __repr__(self) -> str:
        return f"RequestedOutput(name={self.name!r}, parameters={self.parameters!r})"


class InferRequest:
    """A decoded Open Inference Protocol request."""

    def __init__(
        self,
        model_name: str,
        infer_inputs: list[InferInput],
        request_id: str | None = None,
        raw_inputs: list[bytes] | None = None,
        from_grpc: bool = False,
        parameters: Parameters | None = None,
        request_outputs: list[RequestedOutput] | None = None,
        model_version: str | None = None,
    ) -> None:
        self.id = request_id
        self.model_name = model_name
        self.model_version = model_version
        self.inputs = infer_inputs
        self.parameters: Parameters = dict(parameters) if parameters else {}
        self.request_outputs = request_outputs
        self.from_grpc = from_grpc
        # KServe's name: a request that sent raw contents gets raw contents back.
        self._use_raw_outputs = bool(raw_inputs)
        if raw_inputs:
            if len(raw_inputs) != len(infer_inputs):
                raise errors.InvalidInput(
                    f"{len(raw_inputs)} raw input contents for {len(infer_inputs)} inputs."
                )
            for tensor, raw in zip(infer_inputs, raw_inputs, strict=True):
                tensor.data = datatypes.from_bytes(tensor.datatype, tensor.shape, raw)
        # Set by the REST decoder for the raw binary body: every output goes back binary.
        self.raw_binary_body = False

    def get_input_by_name(self, name: str) -> InferInput | None:
        for tensor in self.inputs:
            if tensor.name == name:
                return tensor
        return None

    @property
    def use_binary_outputs(self) -> bool:
        return self.raw_binary_body or bool(self.parameters.get("binary_data_output", False))

    def as_dataframe(self) -> Any:
        """The inputs as a pandas DataFrame, one column per input (needs pandas)."""
        try:
            import pandas as pd
        except ImportError:  # pragma: no cover - depends on the environment
            raise errors.Unsupported("as_dataframe() needs pandas installed.") from None
        columns = {}
        for tensor in self.inputs:
            array = tensor.as_numpy()
            columns[tensor.name] = array.reshape(array.shape[0], -1)[:, 0] if array.ndim else array
        return pd.DataFrame(columns)

    def to_rest(self) -> dict[str, Any]:
        """The request as a v2 JSON object (KServe parity)."""
        from modelhost.protocol import v2_json

        return v2_json.request_to_dict(self)

    def __repr__(self) -> str:
        return f"InferRequest(model_name={self.model_name!r}, id={self.id!r}, inputs={self.inputs})"


class InferResponse:
    """The result of an inference, ready to be encoded for any protocol."""

    def __init__(
        self,
        response_id: str | None,
        model_name: str,
        infer_outputs: list[InferOutput],
        model_version: str | None = None,
        raw_outputs: list[bytes] | None = None,
        from_grpc: bool = False,
        parameters: Parameters | None = None,
        use_binary_outputs: bool = False,
        requested_outputs: list[RequestedOutput] | None = None,
    ) -> None:
        self.id = response_id
        self.model_name = model_name
        self.model_version = model_version
        self.outputs = infer_outputs
        self.parameters: Parameters = dict(parameters) if parameters else {}
        self.from_grpc = from_grpc
        self.use_binary_outputs = use_binary_outputs
        self.requested_outputs = requested_outputs
        if raw_outputs:
            if len(raw_outputs) != len(infer_outputs):
                raise errors.InvalidInput(
                    f"{len(raw_outputs)} raw output contents for {len(infer_outputs)} outputs."
                )
            for tensor, raw in zip(infer_outputs, raw_outputs, strict=True):
                tensor.data = datatypes.from_bytes(tensor.datatype, tensor.shape, raw)

    def get_output_by_name(self, name: str) -> InferOutput | None:
        for tensor in self.outputs:
            if tensor.name == name:
                return tensor
        return None

    def to_rest(self) -> dict[str, Any]:
        """The response as a v2 JSON object (KServe parity)."""
        from modelhost.protocol import v2_json

        return v2_json.response_to_dict(self)

    def __repr__(self) -> str:
        return (
            f"InferResponse(model_name={self.model_name!r}, id={self.id!r}, outputs={self.outputs})"
        )
