"""The ``Model`` base class: what a user subclasses to serve anything.

Its method names and signatures are KServe's (``load``, ``preprocess``, ``predict``,
``postprocess``, ``explain``; each may be sync or ``async``), so a KServe custom model
ports by changing its import line. Unlike KServe, the server never runs a synchronous
method on the event loop: see ``modelhost.server.inference``.
"""

from __future__ import annotations

from typing import Any

from modelhost.settings import BatchSettings

__all__ = ["Model", "PredictorConfig"]


class PredictorConfig:
    """Where a transformer's predictor lives (KServe's ``PredictorConfig``)."""

    def __init__(
        self,
        predictor_host: str | None = None,
        predictor_protocol: str = "v1",
        predictor_use_ssl: bool = False,
        predictor_request_timeout_seconds: float = 600,
    ) -> None:
        self.predictor_host = predictor_host
        self.predictor_protocol = predictor_protocol
        self.predictor_use_ssl = predictor_use_ssl
        self.predictor_request_timeout_seconds = predictor_request_timeout_seconds


class Model:
    """A servable model. Override ``load`` and ``predict``; the rest is optional.

    ``payload`` is a ``dict`` for v1 requests and an ``InferRequest`` for v2 (REST or
    gRPC). ``predict`` may return an ``InferResponse``, a numpy array, a list or a dict;
    the server turns it into the reply of whatever protocol the request came in on.
    """

    def __init__(
        self,
        name: str,
        predictor_config: PredictorConfig | None = None,
        return_response_headers: bool = False,
    ) -> None:
        self.name = name
        self.ready = False
        self.predictor_config = predictor_config
        self.return_response_headers = return_response_headers
        # Adaptive batching of predict; None takes the server's setting.
        self.batching: BatchSettings | None = None

    def load(self) -> bool:
        """Load weights; must leave ``self.ready`` True on success."""
        self.ready = True
        return self.ready

    def unload(self) -> None:
        """Release what ``load`` took (the repository's unload calls it)."""
        self.ready = False

    def stop(self) -> None:
        """KServe's name for :meth:`unload` at server shutdown."""

    async def healthy(self) -> bool:
        return self.ready

    def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        return payload

    def predict(
        self,
        payload: Any,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> Any:
        raise NotImplementedError(f"Model {self.name} does not implement predict.")

    def postprocess(
        self,
        result: Any,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> Any:
        return result

    def explain(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        raise NotImplementedError(f"Model {self.name} has no explainer.")

    def get_input_types(self) -> list[dict[str, Any]]:
        """v2 metadata of the inputs: ``[{"name", "datatype", "shape"}]`` (-1 = variable)."""
        return []

    def get_output_types(self) -> list[dict[str, Any]]:
        """v2 metadata of the outputs, as :meth:`get_input_types`."""
        return []

    @property
    def platform(self) -> str:
        """The v2 metadata ``platform`` string (``<project>_<format>``)."""
        return ""

    def has_explainer(self) -> bool:
        return type(self).explain is not Model.explain

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, ready={self.ready})"
