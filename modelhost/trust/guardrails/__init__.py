"""Guardrails: TrustyAI's detector API, its built-in detectors and the orchestrator's chat.

Detectors (:mod:`.detection`) of four kinds: ``regex``, ``pii`` (presidio's recognisers),
``classifier`` (a scikit-learn text pipeline in a folder) and ``served`` (a model behind
KServe's v2 protocol). :class:`GuardrailsApp` serves the detector API and
``/api/v2/chat/completions-detection`` around an :class:`LLMBackend`;
:func:`detector_guardrails` makes detectors the data plane's OpenAI guardrails.
"""

from __future__ import annotations

from modelhost.trust.guardrails.app import GUARDRAILS_PATHS, GuardrailsApp, GuardrailsSettings
from modelhost.trust.guardrails.config import DETECTOR_KINDS, DetectorRegistry, load_detectors
from modelhost.trust.guardrails.detection import Detection, Detector, redact
from modelhost.trust.guardrails.failures import DetectorNotFound, RequestInvalid
from modelhost.trust.guardrails.guardrail import DetectorGuardrail, detector_guardrails
from modelhost.trust.guardrails.llm import HttpLLMBackend, LLMBackend, checked_completion

__all__ = [
    "DETECTOR_KINDS",
    "GUARDRAILS_PATHS",
    "Detection",
    "Detector",
    "DetectorGuardrail",
    "DetectorNotFound",
    "DetectorRegistry",
    "GuardrailsApp",
    "GuardrailsSettings",
    "HttpLLMBackend",
    "LLMBackend",
    "RequestInvalid",
    "checked_completion",
    "detector_guardrails",
    "load_detectors",
    "redact",
]
