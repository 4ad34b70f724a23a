"""Which detectors exist: the built-in ones and those a YAML file configures, by id.

``regex`` and ``pii`` are always there. A detectors file (the platform's
``guardrails.yaml``, ``modelhost serve --detectors FILE``) maps more ids to a kind and its
params; a relative ``path`` is taken from the file's folder::

    toxicity:
      kind: classifier          # regex | pii | classifier | served
      params: {path: toxicity-model, threshold: 0.7}
    strict-pii:
      kind: pii
      params: {threshold: 0.5, redact: true}
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from modelhost import errors
from modelhost.trust.guardrails.classifier import ClassifierDetector
from modelhost.trust.guardrails.detection import Detector
from modelhost.trust.guardrails.failures import DetectorNotFound
from modelhost.trust.guardrails.pii import PresidioDetector
from modelhost.trust.guardrails.regex import RegexDetector
from modelhost.trust.guardrails.served import ServedModelDetector

__all__ = ["DETECTOR_KINDS", "DetectorRegistry", "load_detectors", "parse_detectors"]

DETECTOR_KINDS: dict[str, type[Detector]] = {
    "regex": RegexDetector,
    "pii": PresidioDetector,
    "classifier": ClassifierDetector,
    "served": ServedModelDetector,
}


class DetectorRegistry:
    """Detectors by id; ``get`` raises :class:`DetectorNotFound` naming the known ids."""

    def __init__(self, detectors: Mapping[str, Detector]) -> None:
        self.detectors = dict(detectors)

    def get(self, detector_id: str) -> Detector:
        detector = self.detectors.get(detector_id)
        if detector is None:
            known = ", ".join(sorted(self.detectors))
            raise DetectorNotFound(f"Detector {detector_id!r} not found; known: {known}.")
        return detector

    async def close(self) -> None:
        for detector in self.detectors.values():
            await detector.close()


def load_detectors(path: Path | None = None) -> DetectorRegistry:
    """The built-in detectors plus those of the YAML file at ``path`` (when given)."""
    detectors: dict[str, Detector] = {"regex": RegexDetector(), "pii": PresidioDetector()}
    if path is not None:
        try:
            document = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise errors.InvalidInput(f"The detectors file {path} does not load: {exc}") from None
        detectors.update(parse_detectors(document, path.parent, str(path)))
    return DetectorRegistry(detectors)


def parse_detectors(document: Any, base: Path, source: str) -> dict[str, Detector]:
    """Detectors by id from a parsed detectors file; errors name the id and the field."""
    if not isinstance(document, dict):
        raise errors.InvalidInput(f"{source}: a mapping of detector id to kind and params.")
    detectors: dict[str, Detector] = {}
    for detector_id, entry in document.items():
        where = f"{source}: {detector_id}"
        if not isinstance(entry, dict):
            raise errors.InvalidInput(f"{where}: a mapping with kind and params.")
        kind = entry.get("kind")
        factory = DETECTOR_KINDS.get(kind) if isinstance(kind, str) else None
        if factory is None:
            known = ", ".join(sorted(DETECTOR_KINDS))
            raise errors.InvalidInput(f"{where}.kind: {kind!r} is not one of {known}.")
        params = entry.get("params") or {}
        if not isinstance(params, dict):
            raise errors.InvalidInput(f"{where}.params: a mapping.")
        if isinstance(params.get("path"), str):
            params = {**params, "path": str(base / params["path"])}
        try:
            detectors[str(detector_id)] = factory(params)
        except errors.InvalidInput as exc:
            raise errors.InvalidInput(f"{where}.params: {exc}") from None
    return detectors
