"""Detectors as the data plane's guardrails: ``modelhost serve --detectors FILE``.

Each detector of the file runs on every prompt and every output of the OpenAI API as a
:class:`~modelhost.server.openai.guardrails.Guardrail`: with ``redact: true`` in its params
it replaces what it finds (``[REDACTED:EMAIL_ADDRESS]``), otherwise a detection refuses the
text (a 400 ``content_filter`` on input, ``finish_reason`` "content_filter" on output).
Streamed output is checked in whole words (the held-back tail is the current word).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from modelhost.server.openai.guardrails import MAX_HOLDBACK, ContentFiltered, Guardrail
from modelhost.trust.guardrails.config import DetectorRegistry
from modelhost.trust.guardrails.detection import Detector, redact

__all__ = ["DetectorGuardrail", "detector_guardrails"]

_WORD_BREAK = re.compile(r"\s")


class DetectorGuardrail(Guardrail):
    """One detector, with its configured params, on the data plane's texts."""

    def __init__(self, detector_id: str, detector: Detector) -> None:
        self.name = detector_id
        self.detector = detector
        self.redacts = detector.params.get("redact") is True

    async def check_input(self, text: str, *, role: str | None = None) -> str:
        return await self._check(text, "input")

    async def check_output(self, text: str) -> str:
        return await self._check(text, "output")

    def holdback(self, text: str) -> int:
        tail = 0
        for match in _WORD_BREAK.finditer(text, max(0, len(text) - MAX_HOLDBACK)):
            tail = match.end()
        return min(len(text) - tail, MAX_HOLDBACK)

    async def _check(self, text: str, where: str) -> str:
        if not text:
            return text
        found = (await self.detector.detect([text]))[0]
        if not found:
            return text
        if self.redacts:
            return redact(text, found)
        kinds = ", ".join(sorted({d.detection for d in found}))
        raise ContentFiltered(f"The {where} was refused by detector {self.name!r} ({kinds}).")


def detector_guardrails(
    registry: DetectorRegistry, only: Sequence[str] | None = None
) -> list[DetectorGuardrail]:
    """Guardrails of the registry's detectors: ``only`` those ids, else all but built-ins."""
    ids = (
        list(only)
        if only is not None
        else [i for i in registry.detectors if i not in ("regex", "pii")]
    )
    return [DetectorGuardrail(i, registry.get(i)) for i in ids]
