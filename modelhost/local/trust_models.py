"""How the platform's trust service calls a model to explain it: :class:`PlatformModelCaller`.

TrustyAI's local explainers (``/explainers/local/shap``, ``/lime``) ask the explained model
for the rows they make up. On the platform the model is the InferenceService whose
``/v2/models/<name>/infer`` route takes the request's model name (the stored model id); the
rows go as one v2 ``FP64`` tensor straight to a replica the traffic split picks, not through
the forwarder, so that made-up rows are never logged back into the store as traffic (nor
counted among the service's requests).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from modelhost import errors
from modelhost.local.traffic import TrafficRouter
from modelhost.transport.http1_client import Http1Client, Http1ClientError
from modelhost.trust.explainers.caller import ModelTarget

__all__ = ["PlatformModelCaller"]


class PlatformModelCaller:
    """The trust service's :class:`~modelhost.trust.explainers.caller.ModelCaller`."""

    def __init__(self, traffic: TrafficRouter, timeout_s: float = 60.0) -> None:
        self._traffic = traffic
        self._timeout_s = timeout_s
        self._client = Http1Client()

    async def __call__(
        self, model: ModelTarget, inputs: np.ndarray[Any, Any]
    ) -> np.ndarray[Any, Any]:
        path = f"/v2/models/{model.name}/infer"
        component = self._traffic.routes.match("", path)
        if component is None or component.in_process is not None:
            raise errors.ModelNotFound(model.name)
        runner = component.choose()
        if runner is None:
            raise errors.ServerNotReady(f"{component.service}: no revision is ready")
        tensor = {
            "name": model.input_name,
            "shape": list(inputs.shape),
            "datatype": "FP64",
            "data": inputs.ravel().tolist(),
        }
        body = orjson.dumps({"inputs": [tensor]})
        replica = runner.try_acquire() or await runner.acquire(self._timeout_s)
        try:
            answer = await self._client.request(
                replica.http_address,
                b"POST",
                path.encode("latin-1"),
                [(b"content-type", b"application/json")],
                body,
                self._timeout_s,
            )
        except Http1ClientError as exc:
            raise errors.InferenceError(f"Model {model.name} did not answer: {exc}") from None
        finally:
            runner.release(replica)
        if answer.status != 200:
            raise errors.InferenceError(
                f"Model {model.name} answered {answer.status}: {answer.body[:200]!r}"
            )
        outputs = orjson.loads(answer.body).get("outputs") or []
        if not outputs:
            raise errors.InferenceError(f"Model {model.name} answered no outputs.")
        first = outputs[0]
        answered: np.ndarray[Any, Any] = np.asarray(first["data"], dtype=np.float64).reshape(
            first["shape"]
        )
        return answered

    async def close(self) -> None:
        await self._client.close()
