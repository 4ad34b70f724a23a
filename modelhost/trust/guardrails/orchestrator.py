"""The orchestrator's chat completions with detections (``/api/v2/chat/completions-detection``).

The request is an OpenAI chat request plus ``detectors: {input: {<id>: {params}}, output:
{<id>: {params}}}``. Input detectors run on every message's text; a detection of a detector
without ``redact`` answers at once, without calling the LLM: no choices, the detections and
an ``UNSUITABLE_INPUT`` warning. A detector with ``"redact": true`` in its params does not
block: the spans it finds are replaced (``[REDACTED:EMAIL_ADDRESS]``) before the LLM sees
the text. Output detectors run on each choice's message; ``redact`` rewrites it, otherwise
a detection adds an ``UNSUITABLE_OUTPUT`` warning. The answer is the LLM's completion plus
``detections: {input: [{message_index, results}], output: [{choice_index, results}]}`` and
``warnings``; each result is a detection with its ``detector_id``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelhost import errors
from modelhost.trust.guardrails.config import DetectorRegistry
from modelhost.trust.guardrails.detection import Detection, Detector, redact
from modelhost.trust.guardrails.failures import RequestInvalid
from modelhost.trust.guardrails.llm import LLMBackend

__all__ = ["UNSUITABLE_INPUT", "UNSUITABLE_OUTPUT", "ChatDetection", "Orchestrator"]

UNSUITABLE_INPUT = {
    "type": "UNSUITABLE_INPUT",
    "message": "Unsuitable input detected. Please check the detected entities on your input "
    "and try again with the unsuitable input removed.",
}
UNSUITABLE_OUTPUT = {
    "type": "UNSUITABLE_OUTPUT",
    "message": "Unsuitable output detected.",
}


@dataclass(frozen=True, slots=True)
class _Chosen:
    detector_id: str
    detector: Detector
    params: dict[str, Any]

    @property
    def redacts(self) -> bool:
        return self.params.get("redact") is True


@dataclass(slots=True)
class ChatDetection:
    """One text's findings: detections that block and those that were redacted."""

    text: str
    blocking: list[dict[str, Any]]
    results: list[dict[str, Any]]


class Orchestrator:
    """Runs a chat request's detectors around one call to the LLM backend."""

    def __init__(self, detectors: DetectorRegistry, llm: LLMBackend) -> None:
        self.detectors = detectors
        self.llm = llm

    async def chat_completions_detection(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise RequestInvalid("The body must be a JSON object (an OpenAI chat request).")
        request = dict(body)
        wanted = request.pop("detectors", None)
        wanted = {} if wanted is None else wanted
        if not isinstance(wanted, dict) or set(wanted) - {"input", "output"}:
            raise RequestInvalid("detectors must be an object with input and/or output.")
        inputs = self._chosen(wanted.get("input"), "detectors.input")
        outputs = self._chosen(wanted.get("output"), "detectors.output")
        messages = request.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestInvalid("messages must be a non-empty list.")
        if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
            raise RequestInvalid("Each of messages must be an object with a role.")
        if request.get("stream"):
            raise RequestInvalid("stream is not supported with detections.")
        warnings: list[dict[str, str]] = []
        input_detections: list[dict[str, Any]] = []
        blocked = False
        checked_messages = []
        for index, message in enumerate(messages):
            content = message.get("content")
            if not isinstance(content, str) or not inputs:
                checked_messages.append(message)
                continue
            found = await _check(content, inputs)
            if found.results:
                input_detections.append({"message_index": index, "results": found.results})
            blocked = blocked or bool(found.blocking)
            checked_messages.append({**message, "content": found.text})
        if blocked:
            warnings.append(UNSUITABLE_INPUT)
            return _refusal(request, input_detections, warnings)
        request["messages"] = checked_messages
        completion = await self.llm.chat(request)
        output_detections: list[dict[str, Any]] = []
        for index, choice in enumerate(completion.get("choices") or []):
            message = choice.get("message") if isinstance(choice, dict) else None
            content = message.get("content") if isinstance(message, dict) else None
            if not isinstance(content, str) or not outputs or not isinstance(message, dict):
                continue
            found = await _check(content, outputs)
            if found.results:
                output_detections.append(
                    {"choice_index": choice.get("index", index), "results": found.results}
                )
            message["content"] = found.text
            if found.blocking and UNSUITABLE_OUTPUT not in warnings:
                warnings.append(UNSUITABLE_OUTPUT)
        detections: dict[str, Any] = {}
        if input_detections:
            detections["input"] = input_detections
        if output_detections:
            detections["output"] = output_detections
        return {**completion, "detections": detections, "warnings": warnings}

    def _chosen(self, wanted: Any, field: str) -> list[_Chosen]:
        if wanted is None:
            return []
        if not isinstance(wanted, dict):
            raise RequestInvalid(f"{field} must map detector ids to their params.")
        chosen = []
        for detector_id, params in wanted.items():
            if params is None:
                params = {}
            if not isinstance(params, dict):
                raise RequestInvalid(f"{field}.{detector_id} must be an object of params.")
            detector = self.detectors.get(detector_id)
            chosen.append(_Chosen(detector_id, detector, {**detector.params, **params}))
        return chosen


async def _check(text: str, chosen: list[_Chosen]) -> ChatDetection:
    """Every chosen detector on ``text``; redacting ones rewrite it for those after them."""
    found = ChatDetection(text, [], [])
    for entry in chosen:
        detections = (await entry.detector.detect([found.text], entry.params))[0]
        if not detections:
            continue
        found.results.extend(_result(d, entry.detector_id) for d in detections)
        if entry.redacts:
            found.text = redact(found.text, detections)
        else:
            found.blocking.extend(_result(d, entry.detector_id) for d in detections)
    return found


def _result(detection: Detection, detector_id: str) -> dict[str, Any]:
    return {**detection.to_json(), "detector_id": detector_id}


def _refusal(
    request: Mapping[str, Any], detections: list[dict[str, Any]], warnings: list[dict[str, str]]
) -> dict[str, Any]:
    model = request.get("model")
    if model is not None and not isinstance(model, str):
        raise errors.InvalidInput("model must be a string.")
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model or "",
        "choices": [],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        "detections": {"input": detections},
        "warnings": warnings,
    }
