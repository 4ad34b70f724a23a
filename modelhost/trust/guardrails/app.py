"""The ASGI app serving TrustyAI's detector API and the orchestrator's chat detections.

Routes: ``POST /api/v1/text/contents`` (header ``detector-id``; ``{contents,
detector_params}`` → a list of detections per content), ``POST /api/v1/text/generation``
(``{prompt, generated_text, detector_params}``), ``POST /api/v1/text/chat`` (``{messages,
detector_params}``), ``POST /api/v2/chat/completions-detection`` (:mod:`.orchestrator`)
and ``GET /health``. Refusals are the detector API's ``{"code", "message"}``: 404 for an
unknown detector id, 422 for a body it cannot read. The platform mounts the app on its
gateway; ``modelhost serve`` and the tests may serve it with uvicorn.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from modelhost import errors
from modelhost.server.http.asgi import Receive, Scope, Send, send_answer, serve_lifespan
from modelhost.server.http.messages import read_body
from modelhost.trust.guardrails.config import DetectorRegistry
from modelhost.trust.guardrails.detection import Detection
from modelhost.trust.guardrails.failures import RequestInvalid
from modelhost.trust.guardrails.llm import LLMBackend
from modelhost.trust.guardrails.orchestrator import Orchestrator

__all__ = ["GUARDRAILS_PATHS", "GuardrailsApp", "GuardrailsSettings"]


logger = logging.getLogger("modelhost.trust.guardrails")

CONTENTS = "/api/v1/text/contents"
GENERATION = "/api/v1/text/generation"
CHAT = "/api/v1/text/chat"
CHAT_DETECTION = "/api/v2/chat/completions-detection"
HEALTH = "/health"
GUARDRAILS_PATHS = frozenset({CONTENTS, GENERATION, CHAT, CHAT_DETECTION, HEALTH})


@dataclass(frozen=True, slots=True)
class GuardrailsSettings:
    """Limits of the guardrails app; the caller builds it (no environment is read)."""

    max_body_bytes: int = 16 * 1024 * 1024


Handler = Callable[[dict[str, str], Any], Awaitable[Any]]


class GuardrailsApp:
    """ASGI app over one :class:`DetectorRegistry` and, for chat detections, one LLM."""

    def __init__(
        self,
        detectors: DetectorRegistry,
        llm: LLMBackend,
        settings: GuardrailsSettings | None = None,
    ) -> None:
        self.detectors = detectors
        self.orchestrator = Orchestrator(detectors, llm)
        self._settings = settings or GuardrailsSettings()
        self._routes: dict[str, Handler] = {
            CONTENTS: self._contents,
            GENERATION: self._generation,
            CHAT: self._chat,
            CHAT_DETECTION: self._chat_detection,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send, on_stop=self.close)
            return
        if scope["type"] != "http":
            return
        path = scope["path"].rstrip("/") or "/"
        method = scope["method"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        status, content = 200, None
        try:
            if path == HEALTH and method in ("GET", "HEAD"):
                content = {"status": "ok"}
            elif path == HEALTH or (path in self._routes and method != "POST"):
                status, content = 405, _error(405, f"{method} not allowed on {path}.")
            elif path not in self._routes:
                status, content = 404, _error(404, f"No route {path}.")
            else:
                body = await read_body(receive, headers, self._settings.max_body_bytes)
                content = await self._routes[path](headers, _parse(body))
        except errors.ModelhostError as exc:
            status = errors.http_status(exc)
            # The detector API's validation errors are 422s; a size limit keeps its own code.
            status = 422 if status == 400 else status
            content = _error(status, str(exc))
        except Exception:
            logger.exception("guardrails: %s %s failed", method, path)
            status, content = 500, _error(500, "Internal error.")
        await send_answer(send, status, orjson.dumps(content))

    async def close(self) -> None:
        """Close the detectors' and the LLM backend's clients."""
        await self.detectors.close()
        await self.orchestrator.llm.close()

    async def _contents(self, headers: dict[str, str], body: Any) -> Any:
        detector = self.detectors.get(_detector_id(headers))
        contents = _field(body, "contents", list)
        if not all(isinstance(text, str) for text in contents):
            raise RequestInvalid("contents must be a list of strings.")
        found = await detector.detect(contents, _params(body))
        return [[d.to_json() for d in text] for text in found]

    async def _generation(self, headers: dict[str, str], body: Any) -> Any:
        detector = self.detectors.get(_detector_id(headers))
        _field(body, "prompt", str)
        generated = _field(body, "generated_text", str)
        found = await detector.detect([generated], _params(body))
        return [_unplaced(d) for d in found[0]]

    async def _chat(self, headers: dict[str, str], body: Any) -> Any:
        detector = self.detectors.get(_detector_id(headers))
        messages = _field(body, "messages", list)
        texts = []
        for message in messages:
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise RequestInvalid("Each of messages must be an object with a role.")
            content = message.get("content")
            if isinstance(content, str):
                texts.append(content)
        found = await detector.detect(texts, _params(body))
        return [_unplaced(d) for text in found for d in text]

    async def _chat_detection(self, headers: dict[str, str], body: Any) -> Any:
        return await self.orchestrator.chat_completions_detection(body)


def _parse(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestInvalid(f"The body is not valid JSON: {exc}.") from None


def _detector_id(headers: dict[str, str]) -> str:
    detector_id = headers.get("detector-id", "").strip()
    if not detector_id:
        raise RequestInvalid("The detector-id header is required.")
    return detector_id


def _field(body: Any, name: str, kind: type) -> Any:
    if not isinstance(body, dict):
        raise RequestInvalid("The body must be a JSON object.")
    value = body.get(name)
    if not isinstance(value, kind):
        raise RequestInvalid(f"{name} is required and must be a {kind.__name__}.")
    return value


def _params(body: Any) -> dict[str, Any]:
    params = body.get("detector_params")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise RequestInvalid("detector_params must be an object.")
    return params


def _unplaced(detection: Detection) -> dict[str, Any]:
    """A detection as the generation and chat analyses answer it: no span."""
    answer = detection.to_json()
    for key in ("start", "end", "text"):
        answer.pop(key)
    return answer


def _error(code: int, message: str) -> dict[str, Any]:
    return {"code": code, "message": message}
