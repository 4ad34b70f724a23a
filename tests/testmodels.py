"""Small models the tests serve: each exercises one part of the model contract."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import numpy as np

from modelhost import InferOutput, InferRequest, InferResponse, Model, errors


class EchoModel(Model):
    """Returns every input as an output of the same name, datatype and shape."""

    def __init__(self, name: str = "echo") -> None:
        super().__init__(name)
        self.ready = True

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        if isinstance(payload, dict):
            return {"predictions": payload.get("instances", payload.get("inputs"))}
        outputs = []
        for tensor in payload.inputs:
            out = InferOutput(tensor.name, tensor.shape, tensor.datatype)
            out.set_data_from_numpy(tensor.as_numpy())
            outputs.append(out)
        return InferResponse(payload.id, self.name, outputs)


class SumModel(Model):
    """Declares one FP32 input [-1, 4]; returns the row sums as ``sum`` and doubled rows."""

    def __init__(self, name: str = "sum") -> None:
        super().__init__(name)
        self.ready = True

    def get_input_types(self) -> list[dict[str, Any]]:
        return [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [
            {"name": "sum", "datatype": "FP32", "shape": [-1]},
            {"name": "double", "datatype": "FP32", "shape": [-1, 4]},
        ]

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        x = (
            payload.inputs[0].as_numpy()
            if isinstance(payload, InferRequest)
            else np.asarray(payload["instances"], dtype=np.float32)
        )
        if x.ndim != 2 or x.shape[1] != 4:
            raise errors.InvalidInput(f"expected rows of 4 values, got shape {list(x.shape)}")
        total = InferOutput("sum", [x.shape[0]], "FP32")
        total.set_data_from_numpy(x.sum(axis=1).astype(np.float32))
        double = InferOutput("double", list(x.shape), "FP32")
        double.set_data_from_numpy((x * 2).astype(np.float32))
        request_id = payload.id if isinstance(payload, InferRequest) else None
        return InferResponse(request_id, self.name, [total, double])


class SlowModel(Model):
    """A synchronous predict that holds its thread for ``delay`` seconds."""

    def __init__(self, name: str = "slow", delay: float = 1.0) -> None:
        super().__init__(name)
        self.ready = True
        self.delay = delay
        self.started = threading.Event()

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        self.started.set()
        time.sleep(self.delay)
        return {"predictions": [1]}


class AsyncModel(Model):
    """Every step async, each leaving a mark, to check the pipeline order."""

    def __init__(self, name: str = "async") -> None:
        super().__init__(name)
        self.ready = True

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        await asyncio.sleep(0)
        return {"instances": [[v + 1 for v in row] for row in payload["instances"]]}

    async def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        return {"predictions": [sum(row) for row in payload["instances"]]}

    async def postprocess(
        self,
        result: Any,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> Any:
        return {"predictions": result["predictions"], "post": True}


class FailingModel(Model):
    """A predict that fails as a bug in model code would."""

    def __init__(self, name: str = "failing") -> None:
        super().__init__(name)
        self.ready = True

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        raise RuntimeError("boom")


class UnreadyModel(Model):
    """Registered but never loaded."""

    def load(self) -> bool:
        return False


class ExplainModel(EchoModel):
    def explain(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        return {"explanations": ["because"]}


class BatchRecordingModel(Model):
    """Doubles rows and sums them; records every predict's row count; rejects negatives."""

    def __init__(self, name: str = "batched", delay: float = 0.01) -> None:
        super().__init__(name)
        self.ready = True
        self.delay = delay
        self.calls: list[int] = []

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        x = payload.inputs[0].as_numpy()
        self.calls.append(x.shape[0])
        time.sleep(self.delay)  # long enough for concurrent requests to queue up
        if (x < 0).any():
            raise errors.InvalidInput("negative values are not allowed")
        double = InferOutput("double", list(x.shape), payload.inputs[0].datatype)
        double.set_data_from_numpy(x * 2)
        total = InferOutput("sum", [x.shape[0]], "FP64")
        total.set_data_from_numpy(x.sum(axis=1).astype(np.float64))
        return InferResponse(payload.id, self.name, [double, total])
