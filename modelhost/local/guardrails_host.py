"""TrustyAI's guardrails on the platform's gateway: the detector API and chat detections.

The guardrails app (:mod:`modelhost.trust.guardrails`) runs inside the gateway's process.
The gateway hands it the detector API's paths and the orchestrator's
``/api/v2/chat/completions-detection`` (:func:`is_guardrails_request`); they are inference,
so any platform-wide caller token may use them. The orchestrator's LLM is the
InferenceService whose model the chat request names, reached as the gateway reaches it
(:class:`PlatformLLMBackend`). The detectors are the built-in ``regex`` and ``pii`` and
those of ``guardrails.yaml`` in the platform's home, read at start.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, cast

import orjson

from modelhost import errors
from modelhost.local.component import ComponentState
from modelhost.local.forwarder import Forwarder
from modelhost.local.traffic import TrafficRouter
from modelhost.transport.http1_client import Http1Client, Http1ClientError
from modelhost.transport.http1_proxy import InProcess, ProxiedRequest
from modelhost.trust.guardrails import (
    GUARDRAILS_PATHS,
    GuardrailsApp,
    checked_completion,
    load_detectors,
)

__all__ = [
    "GUARDRAILS_FILE",
    "GUARDRAILS_OWNER",
    "GuardrailsHost",
    "PlatformLLMBackend",
    "is_guardrails_request",
]

# The owner of the guardrails' requests at the gateway: tokens are checked by role.
GUARDRAILS_OWNER = "guardrails"
# The detectors file in the platform's home (detector id -> kind and params).
GUARDRAILS_FILE = "guardrails.yaml"
# Where a served LLM answers OpenAI chat requests (KServe's path rule for /openai/...).
_CHAT_PATH = "/openai/v1/chat/completions"


def is_guardrails_request(request: ProxiedRequest) -> bool:
    """Whether a request to the gateway (not to a service's host) is for the guardrails."""
    return (request.path.rstrip("/") or "/") in GUARDRAILS_PATHS


class PlatformLLMBackend:
    """Chat requests to the InferenceService serving the request's ``model``, in-process."""

    def __init__(self, traffic: TrafficRouter, forwarder: Forwarder, timeout_s: float) -> None:
        self._traffic = traffic
        self._forwarder = forwarder
        self._client = Http1Client()
        self.timeout_s = timeout_s

    async def chat(self, request: dict[str, Any]) -> dict[str, Any]:
        model = request.get("model")
        if not isinstance(model, str) or not model:
            raise errors.InvalidInput("model is required: the LLM's InferenceService model.")
        component = self._traffic.routes.match("", _CHAT_PATH, model)
        if not isinstance(component, ComponentState) or component.in_process is not None:
            raise errors.ModelNotFound(model)
        body = orjson.dumps(request)
        headers = [(b"content-type", b"application/json")]
        proxied = ProxiedRequest(b"POST", _CHAT_PATH.encode(), headers, body, True)
        call = self._forwarder.forward(proxied, component)
        started = time.perf_counter()
        try:
            chosen = call.target_now() or await call.target()
        except errors.ModelhostError as exc:
            call.failed(errors.http_status(exc))
            raise
        remaining = max(0.0, self.timeout_s - (time.perf_counter() - started))
        ok = False
        try:
            answer = await self._client.request(
                chosen.address, b"POST", _CHAT_PATH.encode(), proxied.headers, body, remaining
            )
            ok = True
        except (Http1ClientError, OSError) as exc:
            call.failed(502)
            raise errors.InferenceError(f"The LLM {model} did not answer: {exc}") from None
        finally:
            chosen.release(ok)
        call.answered(answer.status, answer.body)
        try:
            decoded = orjson.loads(answer.body)
        except orjson.JSONDecodeError:
            decoded = answer.body.decode("utf-8", "replace")
        return checked_completion(answer.status, decoded, model)

    async def close(self) -> None:
        await self._client.close()


class GuardrailsHost:
    """The guardrails of one platform: its detectors, its app and its LLM backend."""

    def __init__(
        self, home: Path, traffic: TrafficRouter, forwarder: Forwarder, timeout_s: float = 600.0
    ) -> None:
        configured = home / GUARDRAILS_FILE
        detectors = load_detectors(configured if configured.is_file() else None)
        self.app = GuardrailsApp(detectors, PlatformLLMBackend(traffic, forwarder, timeout_s))
        self.destination = InProcess(cast(Any, self.app), GUARDRAILS_OWNER)

    async def stop(self) -> None:
        await self.app.close()
