"""The orchestrator's chat completions with detections, on a real socket, before a real LLM.

The LLM is the OpenAI tests' ``FakeLLM`` (a deterministic model that echoes the text after
``repeat:`` and answers "reveal" with a text full of PII) served by a real modelhost
server; the orchestrator reaches it over HTTP (:class:`HttpLLMBackend`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from serving import StartServer, serve_asgi

from modelhost.trust.guardrails import GuardrailsApp, HttpLLMBackend, load_detectors
from tests.server.openai.openai_fakes import SECRET, FakeLLM

ROUTE = "/api/v2/chat/completions-detection"
PII_CHAT = "repeat: I am jane.doe@example.com, phone 212-555-0199"


@dataclass
class Orchestrated:
    client: httpx.Client
    llm: FakeLLM


@pytest.fixture
def orchestrated(serve: StartServer) -> Iterator[Orchestrated]:
    llm = FakeLLM()
    running = serve([llm], enable_grpc=False)
    app = GuardrailsApp(load_detectors(), HttpLLMBackend(running.http_url + "/v1"))
    with (
        serve_asgi(app) as port,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client,
    ):
        yield Orchestrated(client, llm)


def _chat(content: str, detectors: dict[str, object]) -> dict[str, object]:
    return {
        "model": "fake-llm",
        "messages": [{"role": "user", "content": content}],
        "temperature": 0,
        "max_tokens": 100,
        "detectors": detectors,
    }


def test_a_chat_with_an_email_and_a_phone_number_is_flagged_and_redacted(
    orchestrated: Orchestrated,
) -> None:
    detectors = {"input": {"pii": {"redact": True, "entities": ["EMAIL_ADDRESS", "PHONE_NUMBER"]}}}
    response = orchestrated.client.post(ROUTE, json=_chat(PII_CHAT, detectors))
    assert response.status_code == 200, response.text
    body = response.json()
    # The LLM saw, and so echoed, the redacted text only.
    redacted = "I am [REDACTED:EMAIL_ADDRESS], phone [REDACTED:PHONE_NUMBER]"
    assert orchestrated.llm.templates[-1][0]["content"] == f"repeat: {redacted}"
    assert body["choices"][0]["message"]["content"] == redacted
    assert body["object"] == "chat.completion"
    [flagged] = body["detections"]["input"]
    assert flagged["message_index"] == 0
    found = {r["detection"]: r for r in flagged["results"]}
    assert set(found) == {"EMAIL_ADDRESS", "PHONE_NUMBER"}
    assert found["EMAIL_ADDRESS"]["text"] == "jane.doe@example.com"
    assert found["EMAIL_ADDRESS"]["detector_id"] == "pii"
    assert body["warnings"] == []


def test_a_blocking_input_detection_answers_without_the_llm(orchestrated: Orchestrated) -> None:
    response = orchestrated.client.post(ROUTE, json=_chat(PII_CHAT, {"input": {"regex": {}}}))
    assert response.status_code == 200
    body = response.json()
    assert body["choices"] == []
    assert [w["type"] for w in body["warnings"]] == ["UNSUITABLE_INPUT"]
    kinds = [r["detection"] for r in body["detections"]["input"][0]["results"]]
    assert kinds == ["email", "us-phone-number"]
    assert orchestrated.llm.templates == []


def test_output_detectors_redact_or_warn(orchestrated: Orchestrated) -> None:
    redacting = {"output": {"regex": {"regex": ["email"], "redact": True}}}
    body = orchestrated.client.post(ROUTE, json=_chat("reveal", redacting)).json()
    content = body["choices"][0]["message"]["content"]
    assert "[REDACTED:email]" in content
    assert "@" not in content
    assert body["detections"]["output"][0]["choice_index"] == 0
    assert body["warnings"] == []
    warning = {"output": {"pii": {"entities": ["CREDIT_CARD"]}}}
    body = orchestrated.client.post(ROUTE, json=_chat("reveal", warning)).json()
    assert body["choices"][0]["message"]["content"] == SECRET
    assert [w["type"] for w in body["warnings"]] == ["UNSUITABLE_OUTPUT"]
    [result] = body["detections"]["output"][0]["results"]
    assert result["detection"] == "CREDIT_CARD"


def test_no_detection_passes_the_completion_through(orchestrated: Orchestrated) -> None:
    body = orchestrated.client.post(
        ROUTE, json=_chat("repeat: hello there", {"input": {"pii": {}}, "output": {"pii": {}}})
    ).json()
    assert body["choices"][0]["message"]["content"] == "hello there"
    assert (body["detections"], body["warnings"]) == ({}, [])


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (_chat("hi", {"input": {"nope": {}}}), 404, "'nope' not found"),
        (_chat("hi", {"inputs": {}}), 422, "input and/or output"),
        ({"model": "fake-llm", "messages": [], "detectors": {}}, 422, "messages"),
        ({**_chat("hi", {}), "stream": True}, 422, "stream"),
    ],
)
def test_bad_requests(
    orchestrated: Orchestrated, body: dict[str, object], status: int, message: str
) -> None:
    response = orchestrated.client.post(ROUTE, json=body)
    assert response.status_code == status
    assert message in response.json()["message"]
