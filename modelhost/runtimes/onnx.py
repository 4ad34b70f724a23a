"""The ONNX runtime: a ``.onnx`` graph run by onnxruntime on the CPU, tensors named as in it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from modelhost import errors
from modelhost.model.model import Model
from modelhost.protocol.infer_type import InferRequest
from modelhost.runtimes._common import (
    conform,
    import_framework,
    single_model_file,
    tensor_inputs,
    tensor_response,
)

__all__ = ["PATTERNS", "ONNXModel"]

PATTERNS = ("*.onnx",)

# ONNX element types the v2 protocol carries as numpy arrays. Others (bfloat16, float8,
# int4, complex) have no numpy form onnxruntime takes from Python.
_DATATYPES = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(float16)": "FP16",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(int16)": "INT16",
    "tensor(int8)": "INT8",
    "tensor(uint64)": "UINT64",
    "tensor(uint32)": "UINT32",
    "tensor(uint16)": "UINT16",
    "tensor(uint8)": "UINT8",
    "tensor(bool)": "BOOL",
    "tensor(string)": "BYTES",
}

# "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : " before every onnxruntime message.
_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ")
# A node that fails on the sizes it was given fails on the client's input: the graph loaded,
# and the declared shapes were checked before the run.
_SHAPE_PROBLEM = re.compile(r"shape|dimension|broadcast|rank", re.IGNORECASE)
# onnxruntime logs every failed node at ERROR as well as raising it; the raise is enough.
_LOG_FATAL_ONLY = 4


class ONNXModel(Model):
    """An ONNX graph served by onnxruntime's CPU provider, ``nthread`` threads per run.

    Inputs are matched by name (or by position, when the request uses none of the graph's
    names), checked against the graph's shapes and cast to its types where that loses
    nothing but float precision. The reply holds the graph's tensor outputs by their names,
    or only those the request asks for, which are then the only ones computed. Outputs that
    are sequences or maps (a ZipMap of class probabilities) have no v2 form and are left out.
    """

    def __init__(self, name: str, model_dir: str | Path, nthread: int = 1) -> None:
        super().__init__(name)
        self.model_dir = Path(model_dir)
        self.nthread = nthread
        self._session: Any = None
        self._inputs: list[dict[str, Any]] = []
        self._outputs: list[dict[str, Any]] = []
        self._input_errors: tuple[type[BaseException], ...] = ()

    def load(self) -> bool:
        path = single_model_file(self.model_dir, PATTERNS, "onnx")
        ort = import_framework("onnxruntime", "onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.nthread
        options.inter_op_num_threads = 1
        options.log_severity_level = _LOG_FATAL_ONLY
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise errors.ModelLoadError(f"Cannot load {path}: {_message(exc)}") from exc
        inputs = [_tensor_type(node) for node in session.get_inputs()]
        for node, spec in zip(session.get_inputs(), inputs, strict=True):
            if spec is None:
                raise errors.ModelLoadError(
                    f"{path}: input {node.name} is {node.type}, which the v2 protocol cannot carry."
                )
        self._inputs = [spec for spec in inputs if spec is not None]
        self._outputs = [
            spec for spec in map(_tensor_type, session.get_outputs()) if spec is not None
        ]
        state = import_framework("onnxruntime.capi.onnxruntime_pybind11_state", "onnx")
        self._input_errors = (state.InvalidArgument,)
        self._session = session
        self.ready = True
        return self.ready

    def unload(self) -> None:
        self._session = None
        super().unload()

    def predict(
        self,
        payload: Any,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> Any:
        session = self._session
        if session is None:
            raise errors.ModelNotReady(self.name)
        arrays = tensor_inputs(payload, [spec["name"] for spec in self._inputs], self.name)
        feed = {spec["name"]: _feedable(arrays[spec["name"]], spec) for spec in self._inputs}
        wanted = self._wanted_outputs(payload)
        try:
            results = session.run(wanted, feed)
        except Exception as exc:
            raise self._run_error(exc) from exc
        return tensor_response(payload, dict(zip(wanted, results, strict=True)), self.name)

    def _wanted_outputs(self, payload: Any) -> list[str]:
        served = [spec["name"] for spec in self._outputs]
        if not isinstance(payload, InferRequest) or not payload.request_outputs:
            return served
        wanted = [output.name for output in payload.request_outputs]
        for name in wanted:
            if name not in served:
                raise errors.InvalidInput(
                    f"Requested output {name!r} is not a tensor output of model {self.name}; "
                    f"its outputs are {served}."
                )
        return list(dict.fromkeys(wanted))

    def _run_error(self, exc: Exception) -> errors.ModelhostError:
        message = _message(exc)
        if isinstance(exc, self._input_errors) or _SHAPE_PROBLEM.search(message):
            return errors.InvalidInput(f"Model {self.name} cannot run on this input: {message}")
        return errors.InferenceError(f"Model {self.name} failed: {message}")

    def get_input_types(self) -> list[dict[str, Any]]:
        return [dict(spec) for spec in self._inputs] if self._session is not None else []

    def get_output_types(self) -> list[dict[str, Any]]:
        return [dict(spec) for spec in self._outputs] if self._session is not None else []

    @property
    def platform(self) -> str:
        return "onnxruntime_onnx"


def _tensor_type(node: Any) -> dict[str, Any] | None:
    """A graph input or output as v2 metadata; None for types the protocol cannot carry."""
    datatype = _DATATYPES.get(node.type)
    if datatype is None:
        return None
    # onnxruntime gives a symbolic dimension as its name and an unnamed one as None.
    shape = [dim if isinstance(dim, int) and dim >= 0 else -1 for dim in node.shape or ()]
    return {"name": node.name, "datatype": datatype, "shape": shape}


def _feedable(array: npt.NDArray[Any], spec: dict[str, Any]) -> npt.NDArray[Any]:
    # onnxruntime reports an unknown rank as []: a shape it cannot check, nor can we.
    shape = spec["shape"] or None
    conformed = conform(array, spec["name"], spec["datatype"], shape)
    if spec["datatype"] != "BYTES":
        return conformed
    # onnxruntime takes str elements; bytes it would store as their repr, "b'...'".
    text = np.empty(conformed.shape, dtype=np.object_)
    try:
        text.flat[:] = [_text(item) for item in conformed.flat]
    except UnicodeDecodeError as exc:
        raise errors.InvalidInput(f"Input {spec['name']} is not valid UTF-8 text: {exc}") from None
    return text


def _text(item: Any) -> str:
    if isinstance(item, (bytes, bytearray)):
        return bytes(item).decode("utf-8")
    return str(item)


def _message(exc: BaseException) -> str:
    return _ORT_PREFIX.sub("", str(exc).strip()) or type(exc).__name__
