"""What every detector returns and takes: one interface for regex, PII, classifiers, models.

A :class:`Detector` looks at texts and returns, per text, its :class:`Detection` spans in the
shape of the detector API's ``ContentAnalysisResponse`` (``start``, ``end``, ``text``,
``detection``, ``detection_type``, ``score``, ``evidence``). Parameters come per request
(``detector_params``) over the detector's configured defaults; ``threshold`` (drop
detections scoring under it) is common to all, ``redact`` is read by the orchestrator and
the data plane's guardrail, never by the detector.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from modelhost import errors

__all__ = ["Detection", "Detector", "SyncDetector", "merged_params", "param_float", "redact"]


@dataclass(frozen=True, slots=True)
class Detection:
    """One finding in one text; ``start``/``end`` index characters of that text."""

    start: int
    end: int
    text: str
    detection: str
    detection_type: str
    score: float
    evidence: Sequence[Mapping[str, Any]] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "start": self.start,
            "end": self.end,
            "text": self.text,
            "detection": self.detection,
            "detection_type": self.detection_type,
            "score": self.score,
        }
        if self.evidence:
            answer["evidence"] = [dict(e) for e in self.evidence]
        return answer


class Detector:
    """A detector of one kind, configured once; ``detect`` is called per request."""

    kind = "detector"

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        self.params: dict[str, Any] = dict(params or {})

    async def detect(
        self, contents: Sequence[str], params: Mapping[str, Any] | None = None
    ) -> list[list[Detection]]:
        """Per text of ``contents``, its detections at or above the threshold."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release what the detector holds (a client session); most hold nothing."""


class SyncDetector(Detector):
    """A detector whose work is CPU-bound: it runs in a worker thread, off the loop."""

    async def detect(
        self, contents: Sequence[str], params: Mapping[str, Any] | None = None
    ) -> list[list[Detection]]:
        wanted = merged_params(self.params, params)
        threshold = param_float(wanted, "threshold", 0.0)
        found = await asyncio.to_thread(self.analyze_all, list(contents), wanted)
        return [[d for d in text if d.score >= threshold] for text in found]

    def analyze_all(self, contents: list[str], params: Mapping[str, Any]) -> list[list[Detection]]:
        return [self.analyze(text, params) for text in contents]

    def analyze(self, text: str, params: Mapping[str, Any]) -> list[Detection]:
        raise NotImplementedError


def merged_params(defaults: Mapping[str, Any], given: Mapping[str, Any] | None) -> dict[str, Any]:
    """A request's ``detector_params`` over the detector's configured ones."""
    merged = dict(defaults)
    if given:
        merged.update(given)
    return merged


def param_float(params: Mapping[str, Any], name: str, default: float) -> float:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise errors.InvalidInput(f"detector_params.{name} must be a number, not {value!r}.")
    return float(value)


def redact(text: str, detections: Sequence[Detection]) -> str:
    """``text`` with each detected span replaced by ``[REDACTED:<detection>]``.

    Overlapping spans keep the first one's label. A classifier's detection spans its whole
    text, which is then replaced whole.
    """
    spans = sorted(
        (d for d in detections if 0 <= d.start < d.end <= len(text)),
        key=lambda d: (d.start, -d.end),
    )
    pieces: list[str] = []
    at = 0
    for found in spans:
        if found.start < at:
            continue
        pieces.append(text[at : found.start])
        pieces.append(f"[REDACTED:{found.detection}]")
        at = found.end
    pieces.append(text[at:])
    return "".join(pieces)
