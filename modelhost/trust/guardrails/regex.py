"""The ``regex`` detector: named patterns (e-mail, SSN, card, phone, IP) and custom regexes.

``detector_params.regex`` lists what to look for: a known name (:data:`NAMED_PATTERNS`) or a
regular expression of the caller's own (reported with ``detection_type`` "custom" and the
pattern as ``detection``); without it every named pattern runs. Matches score 1.0.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from modelhost import errors
from modelhost.trust.guardrails.detection import Detection, SyncDetector

__all__ = ["NAMED_PATTERNS", "RegexDetector"]

NAMED_PATTERNS: dict[str, str] = {
    "email": r"[A-Za-z0-9._%+\-]{1,64}@(?:[A-Za-z0-9\-]{1,63}\.){1,6}[A-Za-z]{2,24}\b",
    "ssn": r"\b\d{3}-\d{2}-\d{4}\b",
    "credit-card": r"\b(?:\d[ \-]?){12,18}\d\b",
    "us-phone-number": (
        r"(?<![\w+])(?:\+1[ .\-]?)?(?:\(\d{3}\)|\d{3})[ .\-]?\d{3}[ .\-]?\d{4}(?!\w)"
    ),
    "ipv4": r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b",
}
# Longest custom pattern taken: a bound on what one request makes the detector compile.
_MAX_PATTERN = 1000


class RegexDetector(SyncDetector):
    """Regular expressions over text; compiled patterns are cached per detector."""

    kind = "regex"

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        super().__init__(params)
        self._compiled: dict[str, re.Pattern[str]] = {}
        self._patterns(self.params)  # a bad configured pattern fails at configuration

    def analyze(self, text: str, params: Mapping[str, Any]) -> list[Detection]:
        found: list[Detection] = []
        for name, custom, pattern in self._patterns(params):
            for match in pattern.finditer(text):
                if match.end() == match.start():
                    continue
                found.append(
                    Detection(
                        match.start(),
                        match.end(),
                        match.group(),
                        name,
                        "custom" if custom else "pii",
                        1.0,
                    )
                )
        found.sort(key=lambda d: (d.start, d.end))
        return found

    def _patterns(self, params: Mapping[str, Any]) -> list[tuple[str, bool, re.Pattern[str]]]:
        wanted = params.get("regex", list(NAMED_PATTERNS))
        if isinstance(wanted, str):
            wanted = [wanted]
        if not isinstance(wanted, list) or not all(isinstance(w, str) for w in wanted):
            raise errors.InvalidInput("detector_params.regex must be a list of strings.")
        chosen = []
        for entry in wanted:
            custom = entry not in NAMED_PATTERNS
            chosen.append((entry, custom, self._compile(entry)))
        return chosen

    def _compile(self, entry: str) -> re.Pattern[str]:
        pattern = self._compiled.get(entry)
        if pattern is None:
            if len(entry) > _MAX_PATTERN:
                raise errors.InvalidInput(f"A regex is longer than {_MAX_PATTERN} characters.")
            source = NAMED_PATTERNS.get(entry, entry)
            try:
                pattern = re.compile(source)
            except re.error as exc:
                raise errors.InvalidInput(
                    f"Bad regex {entry!r} in detector_params: {exc}."
                ) from None
            self._compiled[entry] = pattern
        return pattern
