"""The PyTorch runtime: a TorchScript program or a ``torch.export`` program, run on a device."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from modelhost import errors
from modelhost.model.model import Model
from modelhost.runtimes._common import (
    conform,
    import_framework,
    single_model_file,
    tensor_inputs,
    tensor_response,
)

__all__ = ["PATTERNS", "PyTorchModel"]

# What the file holds decides how it loads, whatever its extension.
PATTERNS = ("*.pt", "*.pt2", "*.pth")

_TORCHSCRIPT = "torchscript"
_EXPORTED = "exported"

_DATATYPES = {
    "torch.float32": "FP32",
    "torch.float64": "FP64",
    "torch.float16": "FP16",
    "torch.bfloat16": "BF16",
    "torch.int64": "INT64",
    "torch.int32": "INT32",
    "torch.int16": "INT16",
    "torch.int8": "INT8",
    "torch.uint64": "UINT64",
    "torch.uint32": "UINT32",
    "torch.uint16": "UINT16",
    "torch.uint8": "UINT8",
    "torch.bool": "BOOL",
}

# Messages of torch errors that the input causes: a model that loaded fails on sizes and
# types only when it is sent ones it was not built for.
_INPUT_PROBLEM = re.compile(
    r"shape|size|dimension|\bdims?\b|dtype|scalar type|argument|Guard failed|must match"
    r"|out of (range|bounds)|expected .*(tensor|input)",
    re.IGNORECASE,
)
_TORCHSCRIPT_TRACE = "The following operation failed in the TorchScript interpreter"
_ERROR_LINE = re.compile(r"^[\w.]*(Error|Exception): ")


class PyTorchModel(Model):
    """A TorchScript program (``torch.jit.save``) or an exported one (``torch.export.save``).

    ``device`` is ``"cpu"`` (the default), ``"cuda"`` (``"cuda:1"``) or ``"auto"`` (CUDA
    when there is one). ``nthread`` sets torch's intra-op threads, which are per process:
    the server runs requests in parallel threads, so 1 (the default) is usually fastest.

    An exported program knows its inputs' names, types and shapes: requests are checked and
    cast against them, and the metadata reports them. A TorchScript program knows its
    inputs' names only; floating-point inputs are cast to the type of its floating-point
    weights (JSON numbers arrive as FP64). The model's result may be a tensor
    (``output-0``), a tuple or list of tensors (``output-0``, ``output-1``, ...) or a dict
    of tensors, named by their keys.

    A ``torch.save`` checkpoint (a state dict, usually ``.pth``) holds weights without the
    code that runs them and cannot be served: loading it says how to save a program instead.
    """

    def __init__(
        self, name: str, model_dir: str | Path, device: str = "cpu", nthread: int = 1
    ) -> None:
        super().__init__(name)
        self.model_dir = Path(model_dir)
        self.device = device
        self.nthread = nthread
        self._torch: Any = None
        self._module: Any = None
        self._kind = ""
        self._device: Any = None
        self._names: list[str] = []
        self._required = 0
        self._float_dtype: Any = None
        self._inputs: list[dict[str, Any]] = []
        self._outputs: list[dict[str, Any]] = []

    def load(self) -> bool:
        path = single_model_file(self.model_dir, PATTERNS, "pytorch")
        kind = _archive_kind(path)
        torch = import_framework("torch", "pytorch")
        device = _device(torch, self.device)
        torch.set_num_threads(self.nthread)
        try:
            if kind == _TORCHSCRIPT:
                module = torch.jit.load(str(path), map_location=device)
                module.eval()
                self._describe_script(module, path)
            else:
                with path.open("rb") as file:  # a file object: load() wants ".pt2" names
                    program = torch.export.load(file)
                module = program.module()
                if device.type != "cpu":
                    module = module.to(device)
                self._describe_program(program)
        except errors.ModelhostError:
            raise
        except Exception as exc:
            raise errors.ModelLoadError(f"Cannot load {path}: {_message(exc)}") from exc
        self._torch, self._module, self._kind, self._device = torch, module, kind, device
        self.ready = True
        return self.ready

    def _describe_script(self, module: Any, path: Path) -> None:
        self._names, self._required = [], 0
        for argument in module.forward.schema.arguments[1:]:  # [0] is self
            is_tensor = str(argument.type) in ("Tensor", "Optional[Tensor]")
            if argument.has_default_value():
                if is_tensor:
                    self._names.append(argument.name)
                continue
            if not is_tensor:
                raise errors.ModelLoadError(
                    f"{path}: forward's argument {argument.name} has type {argument.type}; only "
                    "tensor arguments can be sent in a request."
                )
            self._names.append(argument.name)
            self._required += 1
        weights = [*module.parameters(), *module.buffers()]
        floats = {w.dtype for w in weights if w.is_floating_point()}
        self._float_dtype = floats.pop() if len(floats) == 1 else None
        self._inputs, self._outputs = [], []

    def _describe_program(self, program: Any) -> None:
        nodes = {node.name: node for node in program.graph.nodes}
        self._inputs = []
        for name in program.graph_signature.user_inputs:
            spec = _tensor_type(name, nodes.get(name))
            if spec is None:
                raise errors.ModelLoadError(
                    f"Input {name} of the exported program is not a tensor of a type the v2 "
                    "protocol carries."
                )
            self._inputs.append(spec)
        self._names = [spec["name"] for spec in self._inputs]
        self._required = len(self._names)
        self._float_dtype = None
        # The metadata names outputs as predict does, from the result's structure.
        values = [nodes.get(name) for name in program.graph_signature.user_outputs]
        names = _output_names(program.call_spec.out_spec) or []
        outputs = [
            _tensor_type(name, node, output=True) for name, node in zip(names, values, strict=False)
        ]
        complete = len(names) == len(values) and None not in outputs
        self._outputs = [spec for spec in outputs if spec is not None] if complete else []

    def unload(self) -> None:
        self._module = None
        super().unload()

    def predict(
        self,
        payload: Any,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> Any:
        module, torch = self._module, self._torch
        if module is None:
            raise errors.ModelNotReady(self.name)
        arrays = tensor_inputs(payload, self._names, self.name, self._required)
        specs = {spec["name"]: spec for spec in self._inputs}
        tensors = {name: self._tensor(name, a, specs.get(name)) for name, a in arrays.items()}
        try:
            with torch.inference_mode():
                if self._kind == _TORCHSCRIPT:
                    result = module(**tensors)
                else:  # an exported program's inputs are positional, all of them sent
                    result = module(*tensors.values())
        except Exception as exc:
            raise self._run_error(exc) from exc
        return tensor_response(payload, self._named_outputs(result), self.name)

    def _tensor(self, name: str, array: npt.NDArray[Any], spec: dict[str, Any] | None) -> Any:
        torch = self._torch
        if array.dtype.kind in ("O", "U", "S"):
            raise errors.InvalidInput(f"Input {name} is BYTES; PyTorch models take numbers.")
        if spec is not None:
            array = conform(array, name, spec["datatype"], spec["shape"])
        # torch shares the array's memory, which must be writable and not run backwards.
        if not array.flags.writeable or any(stride < 0 for stride in array.strides):
            array = np.array(array)
        tensor = torch.from_numpy(array)
        if spec is not None and spec["datatype"] == "BF16":
            tensor = tensor.to(torch.bfloat16)
        elif self._float_dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(self._float_dtype)
        return tensor.to(self._device) if self._device.type != "cpu" else tensor

    def _named_outputs(self, result: Any) -> dict[str, npt.NDArray[Any]]:
        if isinstance(result, dict):
            items = [(str(key), value) for key, value in result.items()]
        elif isinstance(result, (tuple, list)):
            items = [(f"output-{index}", value) for index, value in enumerate(result)]
        else:
            items = [("output-0", result)]
        return {name: self._array(name, value) for name, value in items}

    def _array(self, name: str, value: Any) -> npt.NDArray[Any]:
        torch = self._torch
        if isinstance(value, torch.Tensor):
            tensor = value.detach()
            if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16
                tensor = tensor.float()
            array: npt.NDArray[Any] = tensor.cpu().numpy()
            return array
        if isinstance(value, (int, float, bool)):
            return np.asarray(value)
        raise errors.InferenceError(
            f"Model {self.name} returned a {type(value).__name__} as {name}; a served model "
            "returns a tensor, a tuple or list of tensors, or a dict of tensors."
        )

    def _run_error(self, exc: Exception) -> errors.ModelhostError:
        message = _message(exc)
        out_of_memory = isinstance(exc, getattr(self._torch, "OutOfMemoryError", ()))
        input_kinds = (RuntimeError, ValueError, TypeError, IndexError, AssertionError)
        if isinstance(exc, input_kinds) and not out_of_memory and _INPUT_PROBLEM.search(message):
            return errors.InvalidInput(f"Model {self.name} cannot run on this input: {message}")
        return errors.InferenceError(f"Model {self.name} failed: {message}")

    def get_input_types(self) -> list[dict[str, Any]]:
        return [dict(spec) for spec in self._inputs] if self._module is not None else []

    def get_output_types(self) -> list[dict[str, Any]]:
        return [dict(spec) for spec in self._outputs] if self._module is not None else []

    @property
    def platform(self) -> str:
        # Triton's name for TorchScript; "pytorch" alone until load tells which it is.
        return {_TORCHSCRIPT: "pytorch_libtorch", _EXPORTED: "pytorch_export"}.get(
            self._kind, "pytorch"
        )


def _archive_kind(path: Path) -> str:
    """TorchScript or exported program, told by the archive's entries; loads nothing."""
    how_to = (
        "Save the model as TorchScript (torch.jit.script(model).save('model.pt')) or as an "
        "exported program (torch.export.save(torch.export.export(model, example_inputs), "
        "'model.pt2')), or serve it with a custom model class."
    )
    import zipfile  # here, not at the top: importing a runtime stays cheap

    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        raise errors.ModelLoadError(
            f"{path} is neither a TorchScript program nor an exported program. {how_to}"
        ) from None
    # Entries sit under one top folder: "model/archive_format", "model/code/__torch__.py".
    inner = {entry.split("/", 1)[-1] for entry in entries}
    if "archive_format" in inner:
        return _EXPORTED
    if "constants.pkl" in inner and any(entry.startswith("code/") for entry in inner):
        return _TORCHSCRIPT
    raise errors.ModelLoadError(
        f"{path} is a torch.save checkpoint (a state dict or a pickled module): it holds "
        f"weights without the code that runs them. {how_to}"
    )


def _device(torch: Any, wanted: str) -> Any:
    name = wanted.strip().lower() or "cpu"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise errors.ModelLoadError(f"Unknown device {wanted!r}: {exc}") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index or 0) >= count:
            raise errors.ModelLoadError(
                f"Device {wanted!r} was asked for, but this machine has {count} CUDA "
                f"device(s) that torch {torch.__version__} can use; use device 'cpu' or 'auto'."
            )
    return device


def _tensor_type(name: str, node: Any, output: bool = False) -> dict[str, Any] | None:
    """An exported program's input or output as v2 metadata; None if it is no tensor."""
    value = node.meta.get("val") if node is not None else None
    datatype = _DATATYPES.get(str(getattr(value, "dtype", "")))
    if datatype is None:
        return None
    if output and datatype == "BF16":
        datatype = "FP32"  # outputs leave as float32: numpy has no bfloat16
    # A dynamic dimension is a SymInt, not an int.
    shape = [dim if isinstance(dim, int) else -1 for dim in getattr(value, "shape", ())]
    return {"name": name, "datatype": datatype, "shape": shape}


def _output_names(spec: Any) -> list[str] | None:
    """Output names by the result's structure, as predict names them; None if nested."""
    if spec.is_leaf():
        return ["output-0"]
    if not all(child.is_leaf() for child in spec.children()):
        return None
    if spec.type is dict:
        return [str(key) for key in spec.context]
    if spec.type in (tuple, list):
        return [f"output-{index}" for index in range(spec.num_children)]
    return None


def _message(exc: BaseException) -> str:
    text = str(exc).strip()
    if text.startswith(_TORCHSCRIPT_TRACE):
        # The TorchScript traceback ends with the error itself: "RuntimeError: ...".
        text = text.splitlines()[-1]
    return _ERROR_LINE.sub("", text) or type(exc).__name__
