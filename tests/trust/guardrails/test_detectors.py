"""The detectors themselves: regex, presidio PII, a trained classifier, a served model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from serving import serve_asgi

from modelhost import errors
from modelhost.trust.guardrails import Detection, load_detectors, redact
from modelhost.trust.guardrails.classifier import ClassifierDetector
from modelhost.trust.guardrails.pii import PresidioDetector
from modelhost.trust.guardrails.regex import RegexDetector
from modelhost.trust.guardrails.served import ServedModelDetector
from tests.trust.guardrails.guardrails_support import train_toxicity

TEXT = "Mail jane.doe@example.com or call 212-555-0199; SSN 536-22-8726."


async def test_regex_named_and_custom_patterns() -> None:
    detector = RegexDetector()
    found = await detector.detect([TEXT, "nothing here"])
    assert [(d.detection, d.text) for d in found[0]] == [
        ("email", "jane.doe@example.com"),
        ("us-phone-number", "212-555-0199"),
        ("ssn", "536-22-8726"),
    ]
    assert found[1] == []
    assert all(d.detection_type == "pii" and d.score == 1.0 for d in found[0])
    email = found[0][0]
    assert TEXT[email.start : email.end] == email.text
    custom = await detector.detect([TEXT], {"regex": [r"\bcall\b", "ssn"]})
    assert [(d.detection, d.detection_type) for d in custom[0]] == [
        (r"\bcall\b", "custom"),
        ("ssn", "pii"),
    ]


async def test_regex_refuses_a_bad_pattern() -> None:
    with pytest.raises(errors.InvalidInput, match="Bad regex"):
        await RegexDetector().detect(["x"], {"regex": ["(unclosed"]})


async def test_presidio_finds_entities_with_scores_and_threshold() -> None:
    detector = PresidioDetector()
    text = TEXT + " Card 4111 1111 1111 1111 from 10.0.0.1."
    found = (await detector.detect([text]))[0]
    kinds = {d.detection: d for d in found}
    assert {"EMAIL_ADDRESS", "PHONE_NUMBER", "US_SSN", "CREDIT_CARD", "IP_ADDRESS"} <= set(kinds)
    assert kinds["EMAIL_ADDRESS"].text == "jane.doe@example.com"
    assert kinds["CREDIT_CARD"].score == 1.0
    assert 0 < kinds["PHONE_NUMBER"].score < 1
    strict = (await detector.detect([text], {"threshold": 0.9, "entities": ["PHONE_NUMBER"]}))[0]
    assert strict == []
    with pytest.raises(errors.InvalidInput, match="Unknown PII entities"):
        await detector.detect([text], {"entities": ["SHOE_SIZE"]})


async def test_classifier_detector_from_a_trained_folder(tmp_path: Path) -> None:
    folder = train_toxicity(tmp_path / "toxicity")
    detector = ClassifierDetector({"path": str(folder), "detection_type": "toxicity"})
    texts = ["you stupid idiot", "thank you, have a lovely day"]
    found = await detector.detect(texts)
    assert len(found[0]) == 1
    assert found[1] == []
    hit = found[0][0]
    assert (hit.start, hit.end, hit.text) == (0, len(texts[0]), texts[0])
    assert (hit.detection, hit.detection_type) == ("1", "toxicity")
    assert 0.5 <= hit.score <= 1.0
    # Above the score of the hit, nothing is flagged.
    assert await detector.detect(texts, {"threshold": hit.score + 1e-6}) == [[], []]


def test_classifier_needs_its_model_file(tmp_path: Path) -> None:
    with pytest.raises(errors.InvalidInput, match=r"No model\.joblib"):
        ClassifierDetector({"path": str(tmp_path)})


class _V2Scorer:
    """A v2 endpoint scoring each text by whether it contains "bad" (0.9, else 0.1)."""

    def __init__(self) -> None:
        self.bodies: list[Any] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        import orjson

        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                while True:
                    message = await receive()
                    await send({"type": message["type"] + ".complete"})
                    if message["type"] == "lifespan.shutdown":
                        return
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = orjson.loads(body)
        self.bodies.append(request)
        texts = request["inputs"][0]["data"]
        scores = [0.9 if "bad" in t else 0.1 for t in texts]
        out = {
            "outputs": [
                {"name": "score", "shape": [len(scores)], "datatype": "FP32", "data": scores}
            ]
        }
        payload = orjson.dumps(out)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": payload})


async def test_served_model_as_a_detector() -> None:
    scorer = _V2Scorer()
    with serve_asgi(scorer) as port:
        url = f"http://127.0.0.1:{port}/v2/models/judge/infer"
        detector = ServedModelDetector({"url": url, "label": "bad"})
        try:
            found = await detector.detect(["a bad thing", "a good thing"])
        finally:
            await detector.close()
    assert [[(d.detection, d.score) for d in text] for text in found] == [[("bad", 0.9)], []]
    sent = scorer.bodies[0]["inputs"][0]
    assert (sent["name"], sent["datatype"], sent["shape"]) == ("text", "BYTES", [2])


def test_detectors_file(tmp_path: Path) -> None:
    train_toxicity(tmp_path / "tox")
    path = tmp_path / "guardrails.yaml"
    path.write_text(
        "toxicity:\n  kind: classifier\n  params: {path: tox, threshold: 0.6}\n"
        "emails:\n  kind: regex\n  params: {regex: [email], redact: true}\n"
    )
    registry = load_detectors(path)
    assert set(registry.detectors) == {"regex", "pii", "toxicity", "emails"}
    assert isinstance(registry.get("toxicity"), ClassifierDetector)
    with pytest.raises(errors.ModelhostError, match="'nope' not found") as caught:
        registry.get("nope")
    assert errors.http_status(caught.value) == 404
    path.write_text("bad:\n  kind: magic\n")
    with pytest.raises(errors.InvalidInput, match=r"bad\.kind: 'magic' is not one of"):
        load_detectors(path)


def test_redact_replaces_spans_and_skips_overlaps() -> None:
    text = "a jane@x.org b"
    spans = [
        Detection(2, 12, "jane@x.org", "EMAIL_ADDRESS", "pii", 1.0),
        Detection(7, 12, "x.org", "URL", "pii", 0.5),
    ]
    assert redact(text, spans) == "a [REDACTED:EMAIL_ADDRESS] b"
