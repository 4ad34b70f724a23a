"""REST handlers of KServe's v1 protocol, CloudEvents included."""

from __future__ import annotations

from typing import Any

from modelhost import errors
from modelhost.protocol import cloudevents, v1_json
from modelhost.server.dataplane import DataPlane
from modelhost.server.http.messages import HttpRequest, HttpResponse, json_response

__all__ = ["V1Routes"]

# Content types whose body the server decodes as JSON: KServe's list, plus the form type
# that `curl -d` sends by default (nobody posts a real form to :predict). Any other type
# reaches the model as raw bytes, as in KServe.
_JSON_TYPES = (
    "application/json",
    "application/ld+json",
    "application/octet-stream",
    "application/x-www-form-urlencoded",
    "",
)


class V1Routes:
    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane

    async def root(self, request: HttpRequest) -> HttpResponse:
        return json_response({"status": "alive"})

    async def models(self, request: HttpRequest) -> HttpResponse:
        return json_response({"models": sorted(self.dataplane.repository.get_models())})

    async def model_ready(self, request: HttpRequest) -> HttpResponse:
        ready = self.dataplane.model_ready(request.model)
        return json_response({"name": request.model, "ready": ready}, 200 if ready else 503)

    async def predict(self, request: HttpRequest) -> HttpResponse:
        return await self._run(request, "predict")

    async def explain(self, request: HttpRequest) -> HttpResponse:
        return await self._run(request, "explain")

    async def _run(self, request: HttpRequest, verb: str) -> HttpResponse:
        headers = request.headers
        if cloudevents.is_cloudevent(headers):
            return await self._run_cloudevent(request, verb)
        content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        payload: Any
        if content_type in _JSON_TYPES:
            payload = v1_json.decode_request(request.body)
        else:
            payload = request.body
        result, response_headers = await self.dataplane.predict_v1(
            request.model, payload, headers, verb
        )
        if isinstance(result, (bytes, bytearray)):
            return HttpResponse(200, bytes(result), "application/octet-stream", response_headers)
        return HttpResponse(200, v1_json.encode_response(result), headers=response_headers)

    async def _run_cloudevent(self, request: HttpRequest, verb: str) -> HttpResponse:
        event, data = cloudevents.decode(request.headers, request.body)
        if isinstance(data, dict):
            data = v1_json.validate(data)
        result, _ = await self.dataplane.predict_v1(request.model, data, request.headers, verb)
        structured = request.headers.get("content-type", "").startswith(cloudevents.STRUCTURED_TYPE)
        try:
            predictions = v1_json.to_predictions(result)
        except TypeError as exc:
            raise errors.InferenceError(f"Model result cannot be sent as JSON: {exc}") from None
        out_headers, body = cloudevents.encode_response(
            event, request.model, predictions, structured
        )
        content_type = out_headers.pop("content-type", "application/json")
        return HttpResponse(200, body, content_type, out_headers)
