"""A request's inputs checked against the inputs a model declares in its metadata.

The Open Inference Protocol has a model name its inputs, their datatypes and shapes;
Triton refuses a request that strays from them. The rules here, the same for REST and
gRPC (the data plane applies them before any model step runs):

- An input name sent twice is a 400, whatever the model declares.
- A model that declares no inputs, or a request with ``content_type: "pd"`` (KServe's
  DataFrame form, whose inputs are columns of any name), is not checked further.
- If any sent name is declared, every sent name must be: an unknown one is a 400.
- If no sent name is declared, the inputs are taken by position (KServe's runtimes read
  the first input whatever its name): more inputs than declared is a 400, and with as
  many as declared, each is checked against the declared input in its place.
- A checked input must have the declared datatype or one that converts to it without
  changing its meaning (:func:`datatypes.converts`: a float of another width, an integer
  of another width whose values fit, an integer to a float, a boolean to a number). Such
  an input is converted here, so the model receives the datatype it declared. Anything
  else (BYTES for a number, a float for an integer, a number for BOOL) is a 400.

Shapes are left to the model: a declared -1 is any size, and runtimes check ranks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from modelhost import errors
from modelhost.protocol import datatypes
from modelhost.protocol.infer_type import InferInput, InferRequest

__all__ = ["DeclaredInputs", "check_unique_names"]


def check_unique_names(inputs: Sequence[InferInput]) -> None:
    """A 400 for an input name sent twice (a model would see only one of them)."""
    if len(inputs) < 2:
        return
    seen: set[str] = set()
    for tensor in inputs:
        if tensor.name in seen:
            raise errors.InvalidInput(
                f"Input {tensor.name!r} is sent twice; each input is sent once."
            )
        seen.add(tensor.name)


class DeclaredInputs:
    """One model's declared inputs, read once from its metadata, checked per request."""

    __slots__ = ("datatypes", "model", "names")

    def __init__(self, model: str, metadata: Sequence[dict[str, Any]]) -> None:
        self.model = model
        self.names = [str(entry["name"]) for entry in metadata]
        # A datatype outside the protocol's (a model's own word) is not checked.
        self.datatypes = {str(entry["name"]): str(entry.get("datatype", "")) for entry in metadata}

    def check(self, request: InferRequest) -> None:
        """Raise ``InvalidInput`` for inputs the model cannot take; convert widened ones."""
        inputs = request.inputs
        check_unique_names(inputs)
        if not self.names or request.parameters.get("content_type") == "pd":
            return
        declared = self.datatypes
        if len(inputs) == 1:  # the usual request, without the general case's lists
            tensor = inputs[0]
            expected = declared.get(tensor.name)
            if expected is not None:
                _conform(tensor, expected)
                return
        if any(tensor.name in declared for tensor in inputs):
            unknown = [tensor.name for tensor in inputs if tensor.name not in declared]
            if unknown:
                # The words of the runtimes' own check (runtimes._common), which this precedes.
                sent = [tensor.name for tensor in inputs]
                raise errors.InvalidInput(
                    f"Model {self.model} takes the inputs {self.names}; the request sends "
                    f"{sent} (unknown {unknown})."
                )
            for tensor in inputs:
                _conform(tensor, declared[tensor.name])
            return
        if len(inputs) > len(self.names):
            raise errors.InvalidInput(self._too_many(len(inputs)))
        if len(inputs) == len(self.names):
            for tensor, name in zip(inputs, self.names, strict=True):
                _conform(tensor, declared[name])

    def _too_many(self, sent: int) -> str:
        if len(self.names) == 1:
            name = self.names[0]
            takes = f"one {self.datatypes[name]} input, {name!r}"
        else:
            takes = f"{len(self.names)} inputs, {self.names}"
        return f"Model {self.model} takes {takes}; the request sends {sent}."


def _conform(tensor: InferInput, declared: str) -> None:
    sent = tensor.datatype
    if sent == declared or declared not in datatypes.DATATYPES:
        return
    if not datatypes.converts(sent, declared):
        raise errors.InvalidInput(
            f"Input {tensor.name} is {sent}; the model expects {declared}, and {sent} "
            "values do not convert to it."
        )
    try:
        tensor.data = datatypes.convert(tensor.as_numpy(), declared)
    except errors.InvalidInput as exc:
        raise errors.InvalidInput(f"Input {tensor.name}: {exc}") from None
    tensor.datatype = declared
