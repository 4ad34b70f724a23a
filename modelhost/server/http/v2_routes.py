"""REST handlers of the Open Inference Protocol v2 and its model repository extension."""

from __future__ import annotations

from modelhost import errors
from modelhost.protocol import v2_json
from modelhost.server.dataplane import DataPlane
from modelhost.server.http.messages import HttpRequest, HttpResponse, json_response

__all__ = ["V2Routes"]


class V2Routes:
    """One method per v2 endpoint; the router in ``app`` picks which."""

    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane

    async def server_metadata(self, request: HttpRequest) -> HttpResponse:
        return json_response(self.dataplane.server_metadata())

    async def live(self, request: HttpRequest) -> HttpResponse:
        return json_response({"live": self.dataplane.live()})

    async def ready(self, request: HttpRequest) -> HttpResponse:
        ready = self.dataplane.ready()
        return json_response({"ready": ready}, 200 if ready else 503)

    async def models(self, request: HttpRequest) -> HttpResponse:
        return json_response({"models": sorted(self.dataplane.repository.get_models())})

    async def model_metadata(self, request: HttpRequest) -> HttpResponse:
        return json_response(await self.dataplane.model_metadata(request.model, request.version))

    async def model_ready(self, request: HttpRequest) -> HttpResponse:
        ready = self.dataplane.model_ready(request.model, request.version)
        return json_response({"name": request.model, "ready": ready}, 200 if ready else 503)

    async def infer(self, request: HttpRequest) -> HttpResponse:
        # An unknown or unready model is reported before the body is looked at.
        self.dataplane.check_servable(request.model, request.version)
        header_length = _header_length(request.headers.get(v2_json.HEADER_LENGTH))
        if header_length == 0:
            _check_raw_content_type(request.headers.get("content-type", ""))
            model = await self.dataplane.loaded_model(request.model, request.version)
            infer_request = v2_json.decode_raw_request(
                request.body, model.get_input_types(), request.model
            )
            infer_request.model_version = request.version
        else:
            infer_request = v2_json.decode_request(
                request.body, header_length, request.model, request.version
            )
        response = await self.dataplane.infer(infer_request, request.headers)
        body, json_length = v2_json.encode_response(response, infer_request)
        if json_length is None:
            return HttpResponse(200, body)
        return HttpResponse(
            200,
            body,
            "application/octet-stream",
            {v2_json.HEADER_LENGTH: str(json_length)},
        )

    async def repository_index(self, request: HttpRequest) -> HttpResponse:
        ready_only = v2_json.decode_ready_only(request.body)
        return json_response(self.dataplane.repository_index(ready_only))

    async def repository_load(self, request: HttpRequest) -> HttpResponse:
        if v2_json.decode_load_parameters(request.body):
            raise errors.Unsupported(
                "Load parameters (config, file overrides) are not supported; load reads "
                "the model from the repository."
            )
        await self.dataplane.load(request.model)
        return json_response({"name": request.model, "load": True})

    async def repository_unload(self, request: HttpRequest) -> HttpResponse:
        # unload_dependents (Triton's) has nothing to do: a model here has no dependents.
        v2_json.decode_unload_parameters(request.body)
        await self.dataplane.unload(request.model)
        return json_response({"name": request.model, "unload": True})


def _header_length(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        raise errors.InvalidInput(
            f"Inference-Header-Content-Length must be an integer, got {value!r}."
        ) from None
    if length < 0:
        raise errors.InvalidInput("Inference-Header-Content-Length must not be negative.")
    return length


def _check_raw_content_type(content_type: str) -> None:
    """A raw binary body (header 0) may not say it is JSON: its bytes would be read as
    the input's values, and a JSON request answered with garbage."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        raise errors.InvalidInput(
            "Inference-Header-Content-Length: 0 says the whole body is the raw bytes of the "
            f"model's one input, but Content-Type says {media}. Send a JSON body without the "
            "header (or with the JSON's length), and a raw body as application/octet-stream."
        )
