"""Sends a transformer's preprocessed payload to its predictor, as KServe's default ``predict``.

A ``Model`` that keeps the base class's ``predict`` and names a ``predictor_host`` in its
``predictor_config`` is a transformer: the server runs its ``preprocess`` and
``postprocess`` here and the prediction over there, with REST v1, REST v2 or gRPC v2
(``predictor_protocol``). What the predictor refuses comes back to the client with the
predictor's status and message; a predictor that cannot be reached is a 503.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import grpc
import orjson

from modelhost import errors
from modelhost.model.model import Model, PredictorConfig
from modelhost.protocol import v2_grpc, v2_json
from modelhost.protocol._generated import grpc_predict_v2_pb2 as pb
from modelhost.protocol._generated import grpc_predict_v2_pb2_grpc as pb_grpc
from modelhost.protocol.infer_type import InferRequest, InferResponse

if TYPE_CHECKING:
    import aiohttp

__all__ = ["FORWARDED_HEADERS", "PROTOCOLS", "RemotePredictor", "RemotePredictors"]

PROTOCOLS = ("v1", "v2", "grpc-v2")

# Request id, tracing (B3 and W3C) and credentials: what lets the predictor's logs, traces
# and auth see the client's request. KServe forwards the id, x-b3-traceid and authorization.
FORWARDED_HEADERS = (
    "authorization",
    "b3",
    "traceparent",
    "tracestate",
    "x-b3-flags",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-spanid",
    "x-b3-traceid",
    "x-request-id",
)

# Longest part of a non-JSON error body quoted back to the client.
_QUOTE_LIMIT = 300


class RemotePredictors:
    """The predictor clients of one server loop: a pooled HTTP session, gRPC channels.

    Both are made on first use, on the loop that serves the requests, and closed by
    :meth:`close` at server shutdown.
    """

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._channels: dict[tuple[str, bool], grpc.aio.Channel] = {}
        self._stubs: dict[tuple[str, bool], Any] = {}

    def for_model(self, model: Model) -> RemotePredictor | None:
        """The forwarder for a transformer; None for a model without a ``predictor_host``."""
        config = model.predictor_config
        if config is None or not config.predictor_host:
            return None
        return RemotePredictor(self, model.name, config)

    def session(self) -> aiohttp.ClientSession:
        # Imported here: only a transformer needs aiohttp, and it is a tenth of a second.
        import aiohttp

        if self._session is None or self._session.closed:
            # No cap on connections: the transformer's own in-flight requests bound them.
            connector = aiohttp.TCPConnector(limit=0)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    def stub(self, address: str, use_ssl: bool) -> Any:
        key = (address, use_ssl)
        stub = self._stubs.get(key)
        if stub is None:
            # The predictor enforces its own message limit; gRPC's 4 MB default would
            # refuse tensors the predictor accepts.
            options = [
                ("grpc.max_send_message_length", -1),
                ("grpc.max_receive_message_length", -1),
            ]
            if use_ssl:
                credentials = grpc.ssl_channel_credentials()
                channel = grpc.aio.secure_channel(address, credentials, options=options)
            else:
                channel = grpc.aio.insecure_channel(address, options=options)
            self._channels[key] = channel
            stub = self._stubs[key] = pb_grpc.GRPCInferenceServiceStub(channel)
        return stub

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        channels = list(self._channels.values())
        self._channels.clear()
        self._stubs.clear()
        for channel in channels:
            await channel.close()


class RemotePredictor:
    """Forwards one transformer's payloads to ``predictor_host`` (KServe's URLs and names).

    REST v1 posts the payload dict to ``/v1/models/<name>:predict`` and returns the
    decoded JSON; REST v2 posts an ``InferRequest`` (or a v2 dict) to
    ``/v2/models/<name>/infer`` and gRPC v2 calls ``ModelInfer`` at ``predictor_host``
    (port 80, or 443 with SSL, when it names none); both return an ``InferResponse``.
    """

    def __init__(self, clients: RemotePredictors, name: str, config: PredictorConfig) -> None:
        protocol = config.predictor_protocol
        if protocol not in PROTOCOLS:
            raise errors.Unsupported(
                f"Model {name}: predictor_protocol {protocol!r} is not one of "
                f"{', '.join(PROTOCOLS)}."
            )
        host = str(config.predictor_host).rstrip("/")
        scheme, sep, rest = host.partition("://")
        use_ssl = scheme == "https" if sep else bool(config.predictor_use_ssl)
        self.address = rest if sep else host
        self.name = name
        self.protocol = protocol
        self.use_ssl = use_ssl
        self.timeout = float(config.predictor_request_timeout_seconds)
        base = f"{'https' if use_ssl else 'http'}://{self.address}"
        if protocol == "v1":
            self.url = f"{base}/v1/models/{name}:predict"
        elif protocol == "v2":
            self.url = f"{base}/v2/models/{name}/infer"
        else:
            self.url = _grpc_address(self.address, use_ssl)
        self._clients = clients

    async def predict(
        self,
        payload: Any,
        headers: Mapping[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> Any:
        """The predictor's answer to ``payload``: a dict (v1) or an ``InferResponse`` (v2)."""
        forwarded = _forwarded(headers)
        if self.protocol == "grpc-v2":
            return await self._grpc_predict(payload, forwarded)
        return await self._http_predict(payload, forwarded)

    # -- REST ------------------------------------------------------------------------

    async def _http_predict(self, payload: Any, forwarded: dict[str, str]) -> Any:
        import aiohttp

        forwarded["content-type"] = "application/json"
        if isinstance(payload, InferRequest):
            if self.protocol == "v1":
                raise errors.InvalidInput(
                    f"Model {self.name} forwards to a v1 predictor, which takes "
                    '{"instances": [...]}, not a v2 inference request.'
                )
            body, header_length = v2_json.encode_request(payload)
            if header_length is not None:
                forwarded[v2_json.HEADER_LENGTH] = str(header_length)
                forwarded["content-type"] = "application/octet-stream"
        else:
            body = self._json(payload)
        try:
            async with self._clients.session().post(
                self.url, data=body, headers=forwarded, timeout=aiohttp.ClientTimeout(self.timeout)
            ) as response:
                content = await response.read()
                status = response.status
                reason = response.reason or ""
                header_length_text = response.headers.get(v2_json.HEADER_LENGTH)
        except asyncio.TimeoutError:  # not yet the builtin TimeoutError on Python 3.10
            raise self._timed_out() from None
        except aiohttp.ClientConnectorError as exc:
            cause = _os_cause(exc.os_error) or str(exc)
            raise errors.ServerNotReady(
                f"Predictor at {self.address} unreachable: {cause}."
            ) from None
        except aiohttp.ClientConnectionError as exc:
            raise errors.ServerNotReady(
                f"Predictor at {self.address} dropped the connection: {exc or type(exc).__name__}."
            ) from None
        except aiohttp.ClientError as exc:
            raise errors.InferenceError(
                f"Request to predictor at {self.address} failed: {exc or type(exc).__name__}."
            ) from None
        if status >= 300:
            raise _status_error(status, _error_text(content, reason), self.address, self.name)
        if self.protocol == "v2":
            return self._v2_response(content, header_length_text)
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError as exc:
            raise errors.InferenceError(
                f"Predictor at {self.address} answered with a body that is not JSON: {exc}"
            ) from None

    def _json(self, payload: Any) -> bytes:
        try:
            return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
        except TypeError as exc:
            raise errors.InferenceError(
                f"Model {self.name}: the payload for the predictor cannot be sent as JSON: {exc}"
            ) from None

    def _v2_response(self, content: bytes, header_length_text: str | None) -> InferResponse:
        try:
            header_length = None if header_length_text is None else int(header_length_text)
            return v2_json.decode_response(content, header_length)
        except (ValueError, errors.InvalidInput) as exc:
            raise errors.InferenceError(
                f"Predictor at {self.address} answered with an invalid v2 response: {exc}"
            ) from None

    def _timed_out(self) -> errors.InferenceError:
        return errors.InferenceError(
            f"Predictor at {self.address} did not answer within {self.timeout:g} s "
            "(predictor_request_timeout_seconds)."
        )

    # -- gRPC ------------------------------------------------------------------------

    async def _grpc_predict(self, payload: Any, forwarded: dict[str, str]) -> InferResponse:
        if isinstance(payload, InferRequest):
            message = v2_grpc.request_to_proto(payload)
            message.model_name = self.name
        elif isinstance(payload, pb.ModelInferRequest):
            message = payload
        else:
            raise errors.InvalidInput(
                f"Model {self.name} forwards to a gRPC v2 predictor, which takes a v2 "
                f"inference request, not a {type(payload).__name__}."
            )
        stub = self._clients.stub(self.url, self.use_ssl)
        try:
            reply = await stub.ModelInfer(
                message, timeout=self.timeout, metadata=tuple(forwarded.items())
            )
        except grpc.aio.AioRpcError as exc:
            raise self._grpc_error(exc) from None
        try:
            return v2_grpc.response_from_proto(reply)
        except errors.InvalidInput as exc:
            raise errors.InferenceError(
                f"Predictor at {self.url} answered with an invalid v2 response: {exc}"
            ) from None

    def _grpc_error(self, exc: grpc.aio.AioRpcError) -> errors.ModelhostError:
        code = exc.code()
        details = exc.details() or code.name
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return self._timed_out()
        if code == grpc.StatusCode.UNAVAILABLE:
            # The same code for "connection refused" and "model not ready": say both.
            return errors.ServerNotReady(
                f"Predictor at {self.url} unreachable or not ready: {details}"
            )
        status = _GRPC_TO_HTTP.get(code.name, 500)
        return _status_error(status, details, self.url, self.name, code.name)


_GRPC_TO_HTTP = {
    "INVALID_ARGUMENT": 400,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 413,
    "UNIMPLEMENTED": 501,
}


class _PredictorModelNotFound(errors.ModelNotFound):
    """A 404 from the predictor, with the predictor's own words."""

    def __init__(self, name: str, reason: str) -> None:
        errors.ModelhostError.__init__(self, reason)
        self.name = name


def _status_error(
    status: int, message: str, address: str, name: str, code: str | None = None
) -> errors.ModelhostError:
    """The error a client of the transformer sees: the predictor's status and message."""
    text = f"Predictor at {address} answered {code or status}: {message}"
    if status == 404:
        return _PredictorModelNotFound(name, text)
    if status == 413:
        return errors.PayloadTooLarge(text)
    if status == 400:
        return errors.InvalidInput(text)
    if status == 501:
        return errors.Unsupported(text)
    if status == 503:
        return errors.ServerNotReady(text)
    return errors.InferenceError(text)


def _error_text(content: bytes, reason: str) -> str:
    """The ``{"error": ...}`` message of an error body, else its start, else the reason."""
    try:
        parsed = orjson.loads(content)
    except orjson.JSONDecodeError:
        text = content.decode("utf-8", "replace").strip()
        if len(text) > _QUOTE_LIMIT:
            text = text[:_QUOTE_LIMIT] + "..."
        return text or reason
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
        return str(parsed["error"])
    if isinstance(parsed, dict) and isinstance(parsed.get("detail"), str):
        return str(parsed["detail"])
    return orjson.dumps(parsed).decode()[:_QUOTE_LIMIT] or reason


def _forwarded(headers: Mapping[str, str] | None) -> dict[str, str]:
    if not headers:
        return {}
    forwarded = {}
    for name in FORWARDED_HEADERS:
        value = headers.get(name)
        if value is not None:
            forwarded[name] = value
    return forwarded


def _os_cause(error: OSError) -> str:
    # asyncio's strerror is "Connect call failed (...)"; the errno's own words say more.
    if isinstance(error, ConnectionError) and error.errno:
        return os.strerror(error.errno)
    return str(error.strerror or error)


def _grpc_address(address: str, use_ssl: bool) -> str:
    """``host:port``; KServe's default port when ``address`` names none."""
    host = address.split("/", 1)[0]
    if host.endswith("]") or ":" not in host:
        return f"{host}:{443 if use_ssl else 80}"
    return host
