"""TrustyAI's detector API on a real socket: its shapes, its refusals, the health probe."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from serving import serve_asgi

from modelhost.trust.guardrails import GuardrailsApp, HttpLLMBackend, load_detectors
from tests.trust.guardrails.guardrails_support import train_toxicity

EMAIL_TEXT = "Write to jane.doe@example.com today."


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """The guardrails app with the built-ins and a toxicity classifier; no LLM behind it."""
    home: Path = tmp_path_factory.mktemp("guardrails")
    train_toxicity(home / "tox")
    (home / "guardrails.yaml").write_text(
        "toxicity:\n  kind: classifier\n  params: {path: tox, detection_type: toxicity}\n"
    )
    app = GuardrailsApp(load_detectors(home / "guardrails.yaml"), HttpLLMBackend("http://unused"))
    with (
        serve_asgi(app) as port,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client,
    ):
        yield client


def test_contents_answers_a_list_of_detections_per_content(api: httpx.Client) -> None:
    response = api.post(
        "/api/v1/text/contents",
        headers={"detector-id": "regex"},
        json={"contents": [EMAIL_TEXT, "nothing"], "detector_params": {"regex": ["email"]}},
    )
    assert response.status_code == 200
    assert response.json() == [
        [
            {
                "start": 9,
                "end": 29,
                "text": "jane.doe@example.com",
                "detection": "email",
                "detection_type": "pii",
                "score": 1.0,
            }
        ],
        [],
    ]


def test_pii_contents_with_presidio_scores(api: httpx.Client) -> None:
    response = api.post(
        "/api/v1/text/contents",
        headers={"detector-id": "pii"},
        json={"contents": ["call 212-555-0199 or mail a@b.io"]},
    )
    assert response.status_code == 200
    [found] = response.json()
    by_kind = {d["detection"]: d for d in found}
    assert set(by_kind) == {"PHONE_NUMBER", "EMAIL_ADDRESS"}
    phone = by_kind["PHONE_NUMBER"]
    assert (phone["start"], phone["end"], phone["text"]) == (5, 17, "212-555-0199")
    assert isinstance(phone["score"], float)
    assert phone["detection_type"] == "pii"


def test_generation_and_chat_answer_unplaced_detections(api: httpx.Client) -> None:
    generation = api.post(
        "/api/v1/text/generation",
        headers={"detector-id": "toxicity"},
        json={"prompt": "say something", "generated_text": "you stupid idiot"},
    )
    assert generation.status_code == 200
    [hit] = generation.json()
    assert set(hit) == {"detection", "detection_type", "score"}
    assert (hit["detection"], hit["detection_type"]) == ("1", "toxicity")
    chat = api.post(
        "/api/v1/text/chat",
        headers={"detector-id": "regex"},
        json={
            "messages": [
                {"role": "system", "content": "be nice"},
                {"role": "user", "content": EMAIL_TEXT},
            ],
            "detector_params": {"regex": ["email"]},
        },
    )
    assert chat.status_code == 200
    assert chat.json() == [{"detection": "email", "detection_type": "pii", "score": 1.0}]


def test_health(api: httpx.Client) -> None:
    response = api.get("/health")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_unknown_detector_is_a_404_naming_the_known_ones(api: httpx.Client) -> None:
    response = api.post(
        "/api/v1/text/contents", headers={"detector-id": "nope"}, json={"contents": ["x"]}
    )
    assert response.status_code == 404
    body = response.json()
    assert body["code"] == 404
    assert "'nope' not found" in body["message"]
    assert "toxicity" in body["message"]


@pytest.mark.parametrize(
    ("headers", "body", "message"),
    [
        ({"detector-id": "regex"}, b"{not json", "not valid JSON"),
        ({"detector-id": "regex"}, b'{"contents": "x"}', "contents is required"),
        ({"detector-id": "regex"}, b'{"contents": [1]}', "list of strings"),
        ({}, b'{"contents": ["x"]}', "detector-id header"),
        ({"detector-id": "regex"}, b'{"contents": ["x"], "detector_params": []}', "object"),
        (
            {"detector-id": "regex"},
            b'{"contents": ["x"], "detector_params": {"regex": ["("]}}',
            "Bad regex",
        ),
    ],
)
def test_malformed_bodies_are_422s(
    api: httpx.Client, headers: dict[str, str], body: bytes, message: str
) -> None:
    response = api.post(
        "/api/v1/text/contents",
        headers={**headers, "content-type": "application/json"},
        content=body,
    )
    assert response.status_code == 422
    assert response.json()["code"] == 422
    assert message in response.json()["message"]


def test_wrong_method_and_path(api: httpx.Client) -> None:
    assert api.get("/api/v1/text/contents").status_code == 405
    assert api.post("/api/v1/text/elsewhere", json={}).status_code == 404
