"""The ``inference.GRPCInferenceService`` handlers: gRPC calls onto the ``DataPlane``.

Each RPC decodes its message, asks the data plane, and encodes the answer; errors are
mapped to gRPC status codes in one place (:func:`abort_with`) through
``modelhost.errors``, and every call is counted in the same metrics as REST calls,
with protocol ``grpc``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc

from modelhost import errors
from modelhost.access import OPEN, Admission, Guard
from modelhost.protocol import v2_grpc
from modelhost.protocol._generated import grpc_predict_v2_pb2 as pb
from modelhost.server.dataplane import DataPlane
from modelhost.server.endpoint_roles import OPEN_ENDPOINTS, role_for
from modelhost.server.metrics import Metrics

__all__ = ["InferenceServicer", "abort_with", "log_unexpected"]

logger = logging.getLogger("modelhost.server")

PROTOCOL = "grpc"

# Not checked on entry: the probes, as on REST, and ``infer``, checked per message in
# ``infer_message``.
_UNCHECKED = OPEN_ENDPOINTS | {"infer"}

_Self = TypeVar("_Self", bound="InferenceServicer")
_Handler = Callable[[_Self, Any, Any], Awaitable[Any]]


async def abort_with(context: Any, exc: BaseException, rpc: str) -> NoReturn:
    """End the RPC with the status ``modelhost.errors`` gives ``exc``; log the unexpected."""
    log_unexpected(exc, rpc)
    await context.abort(grpc.StatusCode[errors.grpc_status_name(exc)], errors.error_message(exc))
    raise AssertionError("context.abort returned")  # pragma: no cover - abort always raises


def log_unexpected(exc: BaseException, rpc: str) -> None:
    """Log ``exc`` with its traceback unless it is one of ours (a status the client gets)."""
    if not isinstance(exc, (errors.ModelhostError, NotImplementedError)):
        logger.error("Unhandled error in gRPC %s", rpc, exc_info=exc)


def _model_of(message: Any) -> str:
    """The model a request is about, for the metrics' ``model`` label ("" for none)."""
    for field in ("model_name", "name"):
        value = getattr(message, field, None)
        if isinstance(value, str):
            return value
    return ""


def _unary(endpoint: str) -> Callable[[_Handler[_Self]], _Handler[_Self]]:
    """Wrap a unary handler: metrics, in-flight gauge and error mapping, the same for all."""

    def wrap(handler: _Handler[_Self]) -> _Handler[_Self]:
        rpc = handler.__name__

        @functools.wraps(handler)
        async def call(self: _Self, request: Any, context: Any) -> Any:
            started = time.perf_counter()
            self.in_flight.inc()
            status = "OK"
            admission = OPEN
            try:
                if self.guard is not None and endpoint not in _UNCHECKED:
                    admission = self.admit(_authorization(context), _model_of(request), endpoint)
                return await handler(self, request, context)
            except asyncio.CancelledError:
                status = "CANCELLED"
                raise
            except Exception as exc:
                status = errors.grpc_status_name(exc)
                await abort_with(context, exc, rpc)
            finally:
                admission.release()
                self.in_flight.dec()
                self.observe(_model_of(request), endpoint, status, started)

        return call

    return wrap


class InferenceServicer:
    """Handlers for ``add_GRPCInferenceServiceServicer_to_server`` (found by name)."""

    def __init__(self, dataplane: DataPlane, metrics: Metrics, guard: Guard | None = None) -> None:
        self.dataplane = dataplane
        self.metrics = metrics
        self.in_flight = metrics.in_flight(PROTOCOL)
        # Bearer tokens in the ``authorization`` metadata (None: no checks).
        self.guard = guard

    def admit(self, authorization: str | None, model: str, endpoint: str) -> Admission:
        """The token check of one call about ``model`` ("" for none); raises to refuse."""
        if self.guard is None:
            return OPEN
        return self.guard.admit(authorization, None, model or None, role_for(endpoint))

    def observe(self, model: str, endpoint: str, status: str, started: float) -> None:
        if model and not self.dataplane.repository.has_model(model):
            model = ""  # an unknown name from a client must not grow the label set
        self.metrics.observe_request(
            model, PROTOCOL, endpoint, status, time.perf_counter() - started
        )

    # -- health and metadata -------------------------------------------------------

    @_unary("live")
    async def ServerLive(self, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=self.dataplane.live())

    @_unary("ready")
    async def ServerReady(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self.dataplane.ready())

    @_unary("model_ready")
    async def ModelReady(self, request: Any, context: Any) -> Any:
        ready = self.dataplane.model_ready(request.name, request.version or None)
        return pb.ModelReadyResponse(ready=ready)

    @_unary("server_metadata")
    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        metadata = self.dataplane.server_metadata()
        return pb.ServerMetadataResponse(
            name=metadata["name"], version=metadata["version"], extensions=metadata["extensions"]
        )

    @_unary("model_metadata")
    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        metadata = await self.dataplane.model_metadata(request.name, request.version or None)
        return pb.ModelMetadataResponse(
            name=metadata["name"],
            versions=metadata.get("versions", []),
            platform=metadata.get("platform", ""),
            inputs=[_tensor_metadata(t) for t in metadata.get("inputs", [])],
            outputs=[_tensor_metadata(t) for t in metadata.get("outputs", [])],
        )

    # -- inference -----------------------------------------------------------------

    @_unary("infer")
    async def ModelInfer(self, request: Any, context: Any) -> Any:
        return await self.infer_message(request, _headers(context))

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[Any]:
        """One answer per request, in order; a failed request answers with its error."""
        if self.guard is not None:
            try:
                self.guard.authenticate(_authorization(context))
            except errors.ModelhostError as exc:
                await abort_with(context, exc, "ModelStreamInfer")
        async for request in request_iterator:
            started = time.perf_counter()
            self.in_flight.inc()
            status = "OK"
            try:
                response = await self.infer_message(request, _headers(context))
            except Exception as exc:
                status = errors.grpc_status_name(exc)
                log_unexpected(exc, "ModelStreamInfer")
                answer = pb.ModelStreamInferResponse(error_message=errors.error_message(exc))
            else:
                answer = pb.ModelStreamInferResponse(infer_response=response)
            finally:
                self.in_flight.dec()
                self.observe(request.model_name, "stream_infer", status, started)
            yield answer

    async def infer_message(self, message: Any, headers: dict[str, str]) -> Any:
        """One ``ModelInferRequest`` onto the data plane: its ``ModelInferResponse``."""
        admission = OPEN
        if self.guard is not None:
            # The model never sees the caller's token.
            headers = dict(headers)
            admission = self.admit(headers.pop("authorization", None), message.model_name, "infer")
        try:
            # Unknown or unready models are reported before the tensors are decoded.
            self.dataplane.check_servable(message.model_name, message.model_version or None)
            request = v2_grpc.request_from_proto(message)
            response = await self.dataplane.infer(request, headers)
            return v2_grpc.response_to_proto(response, request)
        finally:
            admission.release()

    # -- repository extension ------------------------------------------------------

    @_unary("repository_index")
    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
        entries = self.dataplane.repository_index(ready_only=request.ready)
        return pb.RepositoryIndexResponse(
            models=[
                pb.RepositoryIndexResponse.ModelIndex(
                    name=e["name"], state=e["state"], reason=e.get("reason") or ""
                )
                for e in entries
            ]
        )

    @_unary("repository_load")
    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        if request.parameters:
            raise errors.Unsupported(
                "Load parameters (config, file overrides) are not supported; load reads "
                "the model from the repository."
            )
        await self.dataplane.load(request.model_name)
        return pb.RepositoryModelLoadResponse()

    @_unary("repository_unload")
    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        await self.dataplane.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()


def _tensor_metadata(tensor: dict[str, Any]) -> Any:
    return pb.ModelMetadataResponse.TensorMetadata(
        name=str(tensor["name"]),
        datatype=str(tensor["datatype"]),
        shape=[int(d) for d in tensor.get("shape", [])],
    )


def _authorization(context: Any) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            return value
    return None


def _headers(context: Any) -> dict[str, str]:
    """The call's metadata as headers for the model (binary ``-bin`` entries left out)."""
    metadata = context.invocation_metadata()
    if not metadata:
        return {}
    return {key: value for key, value in metadata if isinstance(value, str)}
