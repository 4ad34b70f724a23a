"""The ``served`` detector: a model served by KServe's v2 protocol, used as a detector.

Each text is sent to ``params.url`` (a v2 ``.../v2/models/<name>/infer`` URL) as one BYTES
input (``params.input``, default "text") and the first output read as one score per text:
the probability of the flagged class. A score at or above ``threshold`` (default 0.5) is a
detection spanning the text, labelled ``params.label`` (default "flagged").
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

from modelhost import errors
from modelhost.trust.guardrails.detection import Detection, Detector, merged_params, param_float

__all__ = ["ServedModelDetector"]


class ServedModelDetector(Detector):
    """An HTTP client of one v2 endpoint; the session opens at first use."""

    kind = "served"

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        super().__init__(params)
        url = self.params.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise errors.InvalidInput("A served detector needs params.url: a v2 infer URL.")
        self.url = url
        self.timeout_s = param_float(self.params, "timeout_s", 30.0)
        self._session: aiohttp.ClientSession | None = None

    async def detect(
        self, contents: Sequence[str], params: Mapping[str, Any] | None = None
    ) -> list[list[Detection]]:
        wanted = merged_params(self.params, params)
        threshold = param_float(wanted, "threshold", 0.5)
        label = str(wanted.get("label", "flagged"))
        detection_type = str(wanted.get("detection_type", "sequence_classification"))
        if not contents:
            return []
        scores = await self._scores(list(contents), str(wanted.get("input", "text")))
        return [
            [Detection(0, len(text), text, label, detection_type, score)]
            if score >= threshold
            else []
            for text, score in zip(contents, scores, strict=True)
        ]

    async def _scores(self, contents: list[str], input_name: str) -> list[float]:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        body = {
            "inputs": [
                {
                    "name": input_name,
                    "shape": [len(contents)],
                    "datatype": "BYTES",
                    "data": contents,
                }
            ]
        }
        try:
            async with self._session.post(
                self.url, json=body, timeout=aiohttp.ClientTimeout(total=self.timeout_s)
            ) as response:
                answer = await response.json(content_type=None)
                status = response.status
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            raise errors.InferenceError(
                f"The detector model at {self.url} failed: {exc!r}"
            ) from None
        if status != 200:
            raise errors.InferenceError(f"The detector model at {self.url} answered {status}.")
        try:
            data = answer["outputs"][0]["data"]
            scores = [float(x) for x in data]
        except (KeyError, IndexError, TypeError, ValueError):
            raise errors.InferenceError(
                f"The detector model at {self.url} answered no v2 output of scores."
            ) from None
        if len(scores) != len(contents):
            raise errors.InferenceError(
                f"The detector model at {self.url} scored {len(scores)} of {len(contents)} texts."
            )
        return scores

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
