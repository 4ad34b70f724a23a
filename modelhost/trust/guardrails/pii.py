"""The ``pii`` detector: presidio's pattern recognisers, with no spaCy model to download.

presidio's recognisers for e-mail addresses, phone numbers, card numbers, US SSNs, IP
addresses, IBANs and more are patterns with checksums and context words; what they need of
an NLP engine is tokens. :class:`BlankSpacyEngine` gives them spaCy's blank English
tokenizer (no model package, nothing downloaded). presidio's own e-mail recogniser checks
domains against a public-suffix list it would fetch: the e-mail pattern runs here without
that check. ``detector_params.entities`` narrows the entity types; ``threshold`` drops
low scores (presidio scores a bare phone number 0.4).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from modelhost import errors
from modelhost.trust.guardrails.detection import Detection, SyncDetector

__all__ = ["ENTITIES", "PresidioDetector"]

ENTITIES = (
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "US_SSN",
    "IP_ADDRESS",
    "IBAN_CODE",
    "US_BANK_NUMBER",
)


class PresidioDetector(SyncDetector):
    """presidio's analyzer, built at first use (its import takes seconds) and then shared."""

    kind = "pii"

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        super().__init__(params)
        self._entities(self.params)
        self._analyzer: Any = None
        self._lock = threading.Lock()

    def analyze(self, text: str, params: Mapping[str, Any]) -> list[Detection]:
        analyzer = self._engine()
        results = analyzer.analyze(text, language="en", entities=self._entities(params))
        found = [
            Detection(r.start, r.end, text[r.start : r.end], r.entity_type, "pii", float(r.score))
            for r in results
        ]
        found.sort(key=lambda d: (d.start, d.end))
        return found

    def _entities(self, params: Mapping[str, Any]) -> list[str]:
        wanted = params.get("entities", list(ENTITIES))
        if not isinstance(wanted, list) or not all(isinstance(w, str) for w in wanted):
            raise errors.InvalidInput("detector_params.entities must be a list of strings.")
        unknown = sorted(set(wanted) - set(ENTITIES))
        if unknown:
            raise errors.InvalidInput(
                f"Unknown PII entities {unknown}; known: {', '.join(ENTITIES)}."
            )
        return list(wanted)

    def _engine(self) -> Any:
        with self._lock:
            if self._analyzer is None:
                self._analyzer = _build_analyzer()
            return self._analyzer


def _build_analyzer() -> Any:
    # presidio and spaCy load here, not at import: the detector costs nothing until used.
    import spacy
    from presidio_analyzer import AnalyzerEngine, PatternRecognizer, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NlpArtifacts, NlpEngine
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        PhoneRecognizer,
        UsBankRecognizer,
        UsSsnRecognizer,
    )

    class BlankSpacyEngine(NlpEngine):
        """Tokens from ``spacy.blank("en")``; no named entities, no lemmas beyond lowercase."""

        def __init__(self) -> None:
            self.nlp: Any = None

        def load(self) -> None:
            self.nlp = spacy.blank("en")

        def is_loaded(self) -> bool:
            return self.nlp is not None

        def process_text(self, text: str, language: str) -> NlpArtifacts:
            doc = self.nlp(text)
            return NlpArtifacts(
                entities=[],
                tokens=doc,
                tokens_indices=[token.idx for token in doc],
                lemmas=[token.lower_ for token in doc],
                nlp_engine=self,
                language=language,
            )

        def process_batch(
            self,
            texts: Iterable[str],
            language: str,
            batch_size: int = 1,
            n_process: int = 1,
            **kwargs: Any,
        ) -> Iterator[tuple[str, NlpArtifacts]]:
            for text in texts:
                yield text, self.process_text(text, language)

        def is_stopword(self, word: str, language: str) -> bool:
            return bool(self.nlp.vocab[word].is_stop)

        def is_punct(self, word: str, language: str) -> bool:
            return bool(self.nlp.vocab[word].is_punct)

        def get_supported_entities(self) -> list[str]:
            return []

        def get_supported_languages(self) -> list[str]:
            return ["en"]

    registry = RecognizerRegistry(supported_languages=["en"])
    # E-mail by presidio's pattern alone: its validation would fetch a public-suffix list.
    registry.add_recognizer(
        PatternRecognizer(
            supported_entity="EMAIL_ADDRESS",
            patterns=list(EmailRecognizer.PATTERNS),
            context=list(EmailRecognizer.CONTEXT),
        )
    )
    for recognizer in (
        PhoneRecognizer(),
        CreditCardRecognizer(),
        UsSsnRecognizer(),
        IpRecognizer(),
        IbanRecognizer(),
        UsBankRecognizer(),
    ):
        registry.add_recognizer(recognizer)
    return AnalyzerEngine(
        registry=registry, nlp_engine=BlankSpacyEngine(), supported_languages=["en"]
    )
