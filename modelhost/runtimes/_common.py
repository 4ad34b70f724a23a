"""What the framework runtimes share: finding model files, matching tensors, mapping errors."""

from __future__ import annotations

import fnmatch
import importlib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from modelhost import errors
from modelhost.protocol import datatypes
from modelhost.protocol.infer_type import InferOutput, InferRequest, InferResponse

__all__ = [
    "IGNORED_NAMES",
    "PREDICT_PROBA",
    "asks_for_proba",
    "conform",
    "import_framework",
    "input_error",
    "listing",
    "matches",
    "model_files",
    "names_proba_output",
    "native_message",
    "single_model_file",
    "tensor_inputs",
    "tensor_response",
    "truthy",
]

# Files that sit next to models without being one; they match a pattern only by accident.
IGNORED_NAMES = frozenset(
    {
        "config.json",
        "model-settings.json",
        "settings.json",
        "requirements.txt",
        "readme.txt",
        "license.txt",
    }
)

# XGBoost prefixes its messages with "[time] /source/file.h:20: " and appends a C++ stack.
_NATIVE_PREFIX = re.compile(r"^\[[0-9:]+\] \S+:\d+: ")


def matches(path: Path, patterns: Sequence[str]) -> bool:
    name = path.name.lower()
    if name in IGNORED_NAMES:
        return False
    return any(fnmatch.fnmatch(name, pattern) for pattern in patterns)


def listing(path: Path) -> list[Path]:
    """The visible files of a model directory, sorted; raises if it does not exist."""
    if not path.exists():
        raise errors.ModelLoadError(f"Model path {path} does not exist.")
    if path.is_file():
        return [path]
    return sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))


def model_files(path: Path, patterns: Sequence[str]) -> list[Path]:
    return [p for p in listing(path) if matches(p, patterns)]


def single_model_file(path: Path, patterns: Sequence[str], runtime: str) -> Path:
    """The one model file a runtime loads: ``path`` itself if it is a file."""
    if path.is_file():
        return path
    found = model_files(path, patterns)
    if len(found) == 1:
        return found[0]
    wanted = ", ".join(patterns)
    if not found:
        raise errors.ModelLoadError(f"No {runtime} model file ({wanted}) in {path}.")
    names = ", ".join(p.name for p in found)
    raise errors.ModelLoadError(
        f"Several {runtime} model files in {path}: {names}. "
        "Keep one, or pass the model file itself as the path."
    )


def import_framework(module: str, extra: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise errors.ModelLoadError(
            f"The {extra} runtime needs {module}: pip install 'modelhost[{extra}]' ({exc})"
        ) from exc


def native_message(exc: BaseException) -> str:
    """A framework's error message without the native source location and stack trace."""
    text = str(exc).split("\nStack trace:", 1)[0].strip()
    return _NATIVE_PREFIX.sub("", text) or type(exc).__name__


def input_error(exc: BaseException) -> errors.InvalidInput:
    """The framework's complaint about the input, as a 400 with its message."""
    return errors.InvalidInput(native_message(exc))


def truthy(value: Any) -> bool:
    """A flag from JSON, a gRPC parameter or the command line: ``true``, ``"true"``, ``"1"``."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return value is True


# -- tensor models (ONNX, PyTorch): named input arrays in, named output arrays out ------------


def tensor_inputs(
    payload: Any, names: Sequence[str], model_name: str, required: int | None = None
) -> dict[str, npt.NDArray[Any]]:
    """The request's input arrays keyed by the model's input ``names``, in the model's order.

    v2 inputs are matched by name. A request none of whose names is the model's, sending as
    many inputs as the model takes, is matched by position: a client that calls the one
    input ``input-0`` is served, as is a v1 request the batcher turned into v2. v1
    ``instances`` feed a one-input model; instances that are objects (``[{"a": ..., "b":
    ...}]``, TensorFlow Serving's row format) feed the inputs their keys name. The first
    ``required`` names (all by default) must be sent; the others may be.
    """
    needed = len(names) if required is None else required
    if isinstance(payload, InferRequest):
        return _v2_inputs(payload, names, needed, model_name)
    if isinstance(payload, dict):
        return _v1_inputs(payload, names, needed, model_name)
    raise errors.InvalidInput(f"Unsupported payload type {type(payload).__name__}.")


def _v2_inputs(
    request: InferRequest, names: Sequence[str], needed: int, model_name: str
) -> dict[str, npt.NDArray[Any]]:
    sent = {tensor.name: tensor for tensor in request.inputs}
    if len(sent) != len(request.inputs):
        raise errors.InvalidInput("The request sends two inputs of the same name.")
    if names and not sent.keys() & set(names) and needed <= len(sent) <= len(names):
        return {name: t.as_numpy() for name, t in zip(names, request.inputs, strict=False)}
    _check_names(list(sent), names, needed, model_name)
    return {name: sent[name].as_numpy() for name in names if name in sent}


def _v1_inputs(
    payload: dict[str, Any], names: Sequence[str], needed: int, model_name: str
) -> dict[str, npt.NDArray[Any]]:
    instances = payload.get("instances", payload.get("inputs"))
    if not isinstance(instances, list):
        raise errors.InvalidInput('Expected a list under "instances" or "inputs".')
    if instances and all(isinstance(row, dict) for row in instances):
        keys = list(dict.fromkeys(key for row in instances for key in row))
        _check_names(keys, names, needed, model_name)
        columns = {}
        for name in (n for n in names if n in keys):
            if not all(name in row for row in instances):
                raise errors.InvalidInput(f"Only some instances carry the input {name!r}.")
            columns[name] = _instances_array([row[name] for row in instances], name)
        return columns
    if not names or needed > 1:
        raise errors.InvalidInput(
            f"Model {model_name} takes the inputs {list(names)}: send each instance as an "
            "object with those keys, or send a v2 request."
        )
    return {names[0]: _instances_array(instances, names[0])}


def _check_names(sent: list[str], names: Sequence[str], needed: int, model_name: str) -> None:
    missing = [name for name in names[:needed] if name not in sent]
    unknown = [name for name in sent if name not in names]
    if missing or unknown:
        problems = [f"missing {missing}"] if missing else []
        problems += [f"unknown {unknown}"] if unknown else []
        raise errors.InvalidInput(
            f"Model {model_name} takes the inputs {list(names)}; the request sends {sent} "
            f"({', '.join(problems)})."
        )


def _instances_array(values: list[Any], name: str) -> npt.NDArray[Any]:
    try:
        array = np.asarray(values)
    except ValueError as exc:
        raise errors.InvalidInput(
            f"Input {name}: the instances do not form an array ({exc})."
        ) from None
    if array.dtype.kind in ("U", "S"):
        return array.astype(np.object_)
    if array.dtype.kind == "O":
        raise errors.InvalidInput(f"Input {name}: the instances are neither numbers nor strings.")
    return array


def conform(
    array: npt.NDArray[Any],
    name: str,
    datatype: str | None = None,
    shape: Sequence[int] | None = None,
) -> npt.NDArray[Any]:
    """``array`` checked against an input's ``shape`` (-1: any size) and cast to its datatype.

    Numbers are cast within their kind, and up from booleans and from integers to floats
    (JSON sends every number as INT64 or FP64); an integer cast to a narrower integer must
    keep its values. Any other mismatch is a 400 that says what the model expects.
    """
    if shape is not None and not _fits(array.shape, shape):
        raise errors.InvalidInput(
            f"Input {name} has shape {list(array.shape)}; the model expects {list(shape)} "
            "(-1: any size)."
        )
    if datatype is None:
        return array
    sent = "BYTES" if array.dtype.kind in ("O", "U", "S") else datatypes.datatype_of(array)
    if datatype == "BYTES" or sent == "BYTES":
        if sent != datatype:
            raise errors.InvalidInput(f"Input {name} is {sent}; the model expects {datatype}.")
        return array
    target = datatypes.numpy_dtype(datatype)
    if array.dtype == target:
        return array
    integers = array.dtype.kind in ("i", "u") and target.kind in ("i", "u")
    if not (integers or np.can_cast(array.dtype, target, "same_kind")):
        raise errors.InvalidInput(
            f"Input {name} is {sent}; the model expects {datatype}, and {sent} values do not "
            "convert to it."
        )
    if integers and array.size:
        limits = np.iinfo(target)
        if array.min() < limits.min or array.max() > limits.max:
            raise errors.InvalidInput(
                f"Input {name} holds values outside the range of {datatype}, the model's type."
            )
    return array.astype(target)


def _fits(actual: tuple[int, ...], declared: Sequence[int]) -> bool:
    if len(actual) != len(declared):
        return False
    return all(want < 0 or want == have for have, want in zip(actual, declared, strict=True))


def tensor_response(
    payload: Any, outputs: Mapping[str, npt.NDArray[Any]], model_name: str
) -> InferResponse | dict[str, Any]:
    """Named output arrays as the reply to ``payload``: a v2 response, or v1 predictions.

    v1 predictions are the one output's values, or the values of each output by name.
    """
    if isinstance(payload, InferRequest):
        tensors = []
        for name, array in outputs.items():
            value = array.astype(np.object_) if array.dtype.kind in ("U", "S") else array
            tensor = InferOutput(name, list(value.shape), datatypes.datatype_of(value))
            tensor.set_data_from_numpy(value)
            tensors.append(tensor)
        return InferResponse(
            payload.id, model_name, tensors, use_binary_outputs=payload.use_binary_outputs
        )
    # Numbers stay arrays (the JSON encoder writes them natively); text becomes a list.
    values = {
        name: array.tolist() if array.dtype.kind in ("O", "U", "S") else array
        for name, array in outputs.items()
    }
    if len(values) == 1:
        return {"predictions": next(iter(values.values()))}
    return {"predictions": values}


# The option, v1 key, v2 parameter and requested-output name that ask a classifier for
# class probabilities (MLServer's and KServe's spelling), in the runtimes that offer it.
PREDICT_PROBA = "predict_proba"


def names_proba_output(payload: Any) -> bool:
    """Whether a v2 request asks for an output named ``predict_proba``."""
    if not isinstance(payload, InferRequest):
        return False
    return any(out.name == PREDICT_PROBA for out in payload.request_outputs or ())


def asks_for_proba(payload: Any) -> bool:
    """Whether the request asks for probabilities: v1 key, v2 parameter or output name."""
    if isinstance(payload, InferRequest):
        return truthy(payload.parameters.get(PREDICT_PROBA)) or names_proba_output(payload)
    if isinstance(payload, dict):
        return truthy(payload.get(PREDICT_PROBA))
    return False
