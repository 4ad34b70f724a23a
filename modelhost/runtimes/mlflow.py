"""The MLflow runtime: any pyfunc model folder (one with an ``MLmodel`` file), by its signature.

A folder holding ``MLmodel`` is this runtime's (priority 1: an MLflow folder with a
``model.pkl`` is not scikit-learn's); it loads with ``mlflow.pyfunc.load_model``. The
signature gives the v2 metadata as in MLServer: a column-based one a ``[-1]`` input per
column (``long`` INT64, ``integer`` INT32, ``double`` FP64, ``float`` FP32, ``boolean``
BOOL, ``string``, ``binary`` and ``datetime`` BYTES), a tensor-based one its tensors;
unnamed entries are ``input-<i>`` / ``output-<i>``.

Requests to a column-based signature: v2, one 1-D (or ``[n, 1]``) input per column by
name, or one ``[n, columns]`` input under another name; v1, rows of values in the
signature's order, or objects keyed by column. Numbers are cast to the column's type (JSON
sends INT64 and FP64; MLflow refuses FP64 for a ``float`` column) and BYTES become text
for ``string`` columns. A tensor-based signature takes its tensors as the ONNX runtime
does; without a signature, the one v2 input is sent as an array, several (or
``content_type: "pd"``) as a DataFrame. Parameters the signature declares pass to
``predict`` (v2 request parameters, v1 ``params``).

The answer: an array or Series is one output (named by a one-entry output signature), a
DataFrame or dict one output per column or key; v1 gets a DataFrame as records, as from
MLflow's scoring server. MLflow's schema errors (a missing column, a value that does not
convert) are 400s. Loading runs the code the flavour unpickles: serve models you trust.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from modelhost import errors
from modelhost.model.model import Model
from modelhost.model.payload import get_predict_input
from modelhost.protocol import datatypes
from modelhost.protocol.infer_type import InferInput, InferRequest
from modelhost.runtimes._common import (
    conform,
    import_framework,
    input_error,
    tensor_inputs,
    tensor_response,
)

__all__ = ["MLMODEL_FILE", "MLflowModel", "claim"]

MLMODEL_FILE = "MLmodel"

# MLflow column types as v2 datatypes (MLServer's table); any other type travels as BYTES.
_COLUMN_DATATYPES = {
    "boolean": "BOOL",
    "integer": "INT32",
    "long": "INT64",
    "float": "FP32",
    "double": "FP64",
    "string": "BYTES",
    "binary": "BYTES",
    "datetime": "BYTES",
}
_NUMBER_KINDS = "biuf"
_COLUMNS, _TENSORS, _FREE = "columns", "tensors", "free"
_SCHEMA_ERROR_PREFIX = "Failed to enforce schema"
_SCHEMA_ERROR_DETAIL = ". Error: "


def claim(files: list[Path]) -> list[str]:
    """The ``MLmodel`` file that makes a folder an MLflow model, if it holds one."""
    return [path.name for path in files if path.name == MLMODEL_FILE]


@dataclass(frozen=True)
class _Spec:
    """One input or output of the signature, in v2 terms."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    # The column's MLflow type ("double", "string", ...), or "tensor".
    kind: str
    # For a tensor of strings: whether the model takes bytes (dtype "S") rather than text.
    takes_bytes: bool = False

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    @property
    def numeric(self) -> bool:
        return self.datatype != "BYTES"


class MLflowModel(Model):
    """An MLflow model folder served through its pyfunc flavour (see the module's notes)."""

    def __init__(self, name: str, model_dir: str | Path) -> None:
        super().__init__(name)
        self.model_dir = Path(model_dir)
        self._pyfunc: Any = None
        self._mlflow_error: type[Exception] = Exception
        self._inputs: list[_Spec] = []
        self._outputs: list[_Spec] = []
        # How requests reach the model: named columns (a DataFrame), the signature's
        # tensors, or as sent (no signature, or one of unnamed columns).
        self._mode = _FREE
        self._params: frozenset[str] = frozenset()

    @property
    def platform(self) -> str:
        return "mlflow"

    def load(self) -> bool:
        folder = self.model_dir.parent if self.model_dir.is_file() else self.model_dir
        if not (folder / MLMODEL_FILE).is_file():
            raise errors.ModelLoadError(f"No {MLMODEL_FILE} file in {folder}: not an MLflow model.")
        pyfunc = import_framework("mlflow.pyfunc", "mlflow")
        exceptions = import_framework("mlflow.exceptions", "mlflow")
        try:
            model = pyfunc.load_model(str(folder))
        except ModuleNotFoundError as exc:
            raise errors.ModelLoadError(
                f"Cannot load the MLflow model in {folder}: its flavour needs the module "
                f"{exc.name!r}; install the package that provides it."
            ) from exc
        except Exception as exc:
            raise errors.ModelLoadError(
                f"Cannot load the MLflow model in {folder}: {type(exc).__name__}: {exc}"
            ) from exc
        input_schema = model.metadata.get_input_schema()
        params_schema = model.metadata.get_params_schema()
        self._inputs = _specs(input_schema, "input-")
        self._outputs = _specs(model.metadata.get_output_schema(), "output-")
        self._mode = _input_mode(input_schema)
        self._params = (
            frozenset(p.name for p in params_schema.params) if params_schema else frozenset()
        )
        self._mlflow_error = exceptions.MlflowException
        self._pyfunc = model
        self.ready = True
        return self.ready

    def unload(self) -> None:
        self._pyfunc = None
        super().unload()

    def get_input_types(self) -> list[dict[str, Any]]:
        return [spec.metadata() for spec in self._inputs] if self._pyfunc is not None else []

    def get_output_types(self) -> list[dict[str, Any]]:
        return [spec.metadata() for spec in self._outputs] if self._pyfunc is not None else []

    def predict(
        self,
        payload: Any,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> Any:
        model = self._pyfunc
        if model is None:
            raise errors.ModelNotReady(self.name)
        if isinstance(payload, InferRequest):
            data = self._v2_input(payload)
        elif isinstance(payload, dict):
            data = self._v1_input(payload)
        else:
            raise errors.InvalidInput(f"Unsupported payload type {type(payload).__name__}.")
        params = self._request_params(payload)
        try:
            result = model.predict(data, params=params) if params else model.predict(data)
        except self._mlflow_error as exc:
            raise _mlflow_failure(exc) from exc
        except (ValueError, TypeError) as exc:
            raise input_error(exc) from exc
        return self._reply(payload, result)

    # -- requests ----------------------------------------------------------------------------

    def _v2_input(self, request: InferRequest) -> Any:
        if not request.inputs:
            raise errors.InvalidInput("The request has no inputs.")
        if self._mode == _COLUMNS:
            return self._frame(self._v2_columns(request.inputs))
        if self._mode == _TENSORS:
            names = [spec.name for spec in self._inputs]
            return self._tensors(tensor_inputs(request, names, self.name))
        if len(request.inputs) > 1 or request.parameters.get("content_type") == "pd":
            return self._frame(self._v2_columns(request.inputs))
        return _untyped(request.inputs[0].as_numpy())

    def _v2_columns(self, inputs: list[InferInput]) -> dict[str, npt.NDArray[Any]]:
        sent = [tensor.name for tensor in inputs]
        if len(set(sent)) != len(sent):
            raise errors.InvalidInput("The request sends two inputs of the same name.")
        if self._mode != _COLUMNS:
            return {tensor.name: _column(tensor.as_numpy(), tensor.name) for tensor in inputs}
        known = {spec.name for spec in self._inputs}
        if len(inputs) == 1 and sent[0] not in known:
            return self._columns_by_position(inputs[0].as_numpy())
        unknown = [name for name in sent if name not in known]
        if unknown:
            raise errors.InvalidInput(
                f"Model {self.name} takes the columns {sorted(known)}; the request sends "
                f"unknown inputs {unknown}."
            )
        return {tensor.name: _column(tensor.as_numpy(), tensor.name) for tensor in inputs}

    def _columns_by_position(self, array: npt.NDArray[Any]) -> dict[str, npt.NDArray[Any]]:
        names = [spec.name for spec in self._inputs]
        if array.ndim == 1 and len(names) == 1:
            return {names[0]: array}
        if array.ndim != 2 or array.shape[1] != len(names):
            raise errors.InvalidInput(
                f"Model {self.name} takes the columns {names}: send one input per column, or "
                f"rows of {len(names)} values; the request sends shape {list(array.shape)}."
            )
        return {name: array[:, index] for index, name in enumerate(names)}

    def _row_columns(self, rows: list[Any]) -> dict[str, npt.NDArray[Any]]:
        """v1 rows as columns, each of its own type (a row may mix numbers and text)."""
        names = [spec.name for spec in self._inputs]
        if len(names) == 1 and not any(isinstance(row, list) for row in rows):
            return {names[0]: _instances_array(rows)}
        if not all(isinstance(row, list) and len(row) == len(names) for row in rows):
            raise errors.InvalidInput(
                f"Model {self.name} takes the columns {names}: send each instance as a list "
                f"of {len(names)} values, or as an object with those keys."
            )
        return {name: _instances_array([row[i] for row in rows]) for i, name in enumerate(names)}

    def _v1_input(self, payload: dict[str, Any]) -> Any:
        instances = payload.get("instances", payload.get("inputs"))
        if not isinstance(instances, list):
            raise errors.InvalidInput('Expected a list under "instances" or "inputs".')
        if self._mode == _COLUMNS:
            if instances and all(isinstance(row, dict) for row in instances):
                return self._frame(_record_columns(instances))
            return self._frame(self._row_columns(instances))
        if self._mode == _TENSORS:
            names = [spec.name for spec in self._inputs]
            return self._tensors(tensor_inputs(payload, names, self.name))
        data = get_predict_input(payload)
        return _untyped(np.asarray(data, dtype=np.object_)) if isinstance(data, list) else data

    def _frame(self, columns: Mapping[str, npt.NDArray[Any]]) -> Any:
        """The columns, each cast to its signature type, as a DataFrame."""
        import pandas as pd

        rows = {name: len(values) for name, values in columns.items()}
        if len(set(rows.values())) > 1:
            raise errors.InvalidInput(f"The columns have different numbers of rows: {rows}.")
        specs = {spec.name: spec for spec in self._inputs}
        typed = {
            name: _typed_column(values, name, specs.get(name)) for name, values in columns.items()
        }
        return pd.DataFrame(typed)

    def _tensors(self, arrays: dict[str, npt.NDArray[Any]]) -> Any:
        """The tensors checked against the signature: one array, or a dict of them."""
        typed = {}
        for spec in self._inputs:
            array = arrays[spec.name]
            if spec.numeric:
                typed[spec.name] = conform(array, spec.name, spec.datatype, spec.shape)
            else:
                array = conform(array, spec.name, shape=spec.shape)
                typed[spec.name] = array if spec.takes_bytes else _texts(array, spec.name)
        if len(self._inputs) == 1:
            return next(iter(typed.values()))
        return typed

    def _request_params(self, payload: Any) -> dict[str, Any] | None:
        if not self._params:
            return None
        if isinstance(payload, InferRequest):
            source: Any = payload.parameters
        else:
            source = payload.get("params")
        if not isinstance(source, dict):
            return None
        chosen = {key: value for key, value in source.items() if key in self._params}
        return chosen or None

    # -- replies -----------------------------------------------------------------------------

    def _reply(self, payload: Any, result: Any) -> Any:
        if isinstance(payload, dict) and _is_frame(result):
            return {"predictions": result.to_dict(orient="records")}
        outputs = self._output_arrays(result)
        if isinstance(payload, InferRequest) and payload.request_outputs:
            wanted = [output.name for output in payload.request_outputs]
            missing = [name for name in wanted if name not in outputs]
            if missing:
                raise errors.InvalidInput(
                    f"Model {self.name} has no output {missing[0]!r}; its outputs are "
                    f"{list(outputs)}."
                )
            outputs = {name: outputs[name] for name in wanted}
        return tensor_response(payload, outputs, self.name)

    def _output_arrays(self, result: Any) -> dict[str, npt.NDArray[Any]]:
        if _is_frame(result):
            return {str(col): _output_array(result[col].to_numpy(), col) for col in result.columns}
        if isinstance(result, dict):
            return {str(key): _output_array(value, key) for key, value in result.items()}
        name = self._outputs[0].name if len(self._outputs) == 1 else "output-0"
        if hasattr(result, "to_numpy"):  # a Series
            result = result.to_numpy()
        return {name: _output_array(result, name)}


def _specs(schema: Any, prefix: str) -> list[_Spec]:
    if schema is None:
        return []
    from mlflow.types import DataType

    specs = []
    for index, item in enumerate(schema.inputs):
        name = item.name or f"{prefix}{index}"
        if schema.is_tensor_spec():
            dtype = np.dtype(item.type)
            specs.append(
                _Spec(name, _tensor_datatype(dtype), tuple(item.shape), "tensor", dtype.kind == "S")
            )
        else:
            kind = item.type.name if isinstance(item.type, DataType) else type(item.type).__name__
            specs.append(_Spec(name, _COLUMN_DATATYPES.get(kind, "BYTES"), (-1,), kind))
    return specs


def _input_mode(schema: Any) -> str:
    if schema is None:
        return _FREE
    if schema.is_tensor_spec():
        return _TENSORS
    return _COLUMNS if schema.has_input_names() else _FREE


def _tensor_datatype(dtype: np.dtype[Any]) -> str:
    try:
        return datatypes.datatype_of(np.empty(0, dtype=dtype))
    except errors.ModelhostError:
        return "BYTES"


def _record_columns(records: list[dict[str, Any]]) -> dict[str, npt.NDArray[Any]]:
    import pandas as pd

    try:
        frame = pd.DataFrame(records)
    except (ValueError, TypeError) as exc:
        raise errors.InvalidInput(f"The instances do not form a table: {exc}") from None
    return {str(col): frame[col].to_numpy() for col in frame.columns}


def _instances_array(values: list[Any]) -> npt.NDArray[Any]:
    try:
        array = np.asarray(values)
    except ValueError as exc:
        raise errors.InvalidInput(f"The instances do not form an array ({exc}).") from None
    return array.astype(np.object_) if array.dtype.kind in ("U", "S") else array


def _column(array: npt.NDArray[Any], name: str) -> npt.NDArray[Any]:
    if array.ndim == 2 and array.shape[1] == 1:
        return array[:, 0]
    if array.ndim != 1:
        raise errors.InvalidInput(
            f"Input {name} has shape {list(array.shape)}: a column takes one value per row, "
            "shape [n] or [n, 1]."
        )
    return array


def _typed_column(values: npt.NDArray[Any], name: str, spec: _Spec | None) -> npt.NDArray[Any]:
    if spec is None:
        return _untyped(values)
    if spec.kind == "string":
        return _texts(values, name)
    if spec.numeric and values.dtype.kind in _NUMBER_KINDS:
        return conform(values, name, spec.datatype)
    # Left as sent: MLflow's schema check names what does not fit.
    return values


def _untyped(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Without a signature, BYTES are taken as text where they are UTF-8."""
    if array.dtype.kind != "O":
        return array
    try:
        return _texts(array, "")
    except errors.InvalidInput:
        return array


def _texts(array: npt.NDArray[Any], name: str) -> npt.NDArray[Any]:
    if array.dtype.kind == "U":
        return array.astype(np.object_)
    if array.dtype.kind not in ("O", "S") or not any(isinstance(v, bytes) for v in array.flat):
        return array
    decoded = np.empty(array.shape, dtype=np.object_)
    try:
        decoded.flat[:] = [v.decode("utf-8") if isinstance(v, bytes) else v for v in array.flat]
    except UnicodeDecodeError:
        raise errors.InvalidInput(f"Input {name} holds bytes that are not UTF-8 text.") from None
    return decoded


def _is_frame(result: Any) -> bool:
    # A pandas DataFrame, recognised without importing pandas.
    return hasattr(result, "columns") and hasattr(result, "to_dict")


def _output_array(value: Any, name: Any) -> npt.NDArray[Any]:
    try:
        array = np.asarray(value)
    except ValueError as exc:
        raise errors.InferenceError(f"Output {name} is not an array: {exc}") from None
    if array.dtype.kind in ("U", "S"):
        return array.astype(np.object_)
    if array.dtype.kind in ("M", "m"):
        return array.astype(str).astype(np.object_)
    return array


def _mlflow_failure(exc: Exception) -> errors.ModelhostError:
    """An ``MlflowException``: MLflow's complaint about the input is a 400, with its reason."""
    message = str(getattr(exc, "message", exc))
    if getattr(exc, "error_code", None) != "INVALID_PARAMETER_VALUE":
        return errors.InferenceError(f"The MLflow model failed: {message}")
    # MLflow's schema errors start with a repr of all the data; keep what went wrong.
    if message.startswith(_SCHEMA_ERROR_PREFIX) and _SCHEMA_ERROR_DETAIL in message:
        message = (
            "The input does not fit the model's signature: "
            + message.rsplit(_SCHEMA_ERROR_DETAIL, 1)[1]
        )
    return errors.InvalidInput(message)
