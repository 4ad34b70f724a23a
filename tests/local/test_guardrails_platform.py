"""TrustyAI's guardrails on the embedded platform's gateway, before an LLM service.

A real platform runs an InferenceService whose predictor is an echo LLM
(``tests/local/apps/echo_llm.py``: the OpenAI tests' ``FakeLLM`` under ModelServer, a
replica process of its own); the orchestrator reaches it in the gateway's process. The
platform's home holds a ``guardrails.yaml`` with one more detector. Tokens are on.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from platform_fixtures import RunningPlatform, start_platform, stop_platform

from modelhost.access import Role, TokenStore

LLM = """
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: chat
spec:
  predictor:
    containers:
      - name: kserve-container
        image: example.com/echo-llm:latest
        command: ["python", "tests/local/apps/echo_llm.py"]
        # The platform puts the replica's ports in place of these (as KServe's PORT).
        args: ["--model_name", "chat", "--http_port", "0", "--grpc_port", "0"]
"""
GUARDRAILS = "emails:\n  kind: regex\n  params: {regex: [email], redact: true}\n"
ROUTE = "/api/v2/chat/completions-detection"


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[RunningPlatform]:
    home = tmp_path / "home"
    home.mkdir()
    (home / "guardrails.yaml").write_text(GUARDRAILS)
    running = start_platform(
        home,
        replica_env={"MODELHOST_AUTH": "tokens", "MODELHOST_HOST": "0.0.0.0"},
        access={"auth": "tokens"},
    )
    yield running
    stop_platform(running)


def test_chat_with_pii_is_flagged_and_redacted_on_the_gateway(guarded: RunningPlatform) -> None:
    store = TokenStore(guarded.home / "tokens.db")
    _, caller = store.create(Role.CALLER)
    _, scoped = store.create(Role.CALLER, namespace="other")
    guarded.apply(LLM)
    guarded.wait_ready("chat")
    auth = {"Authorization": f"Bearer {caller}"}
    chat = {
        "model": "chat",
        "messages": [
            {"role": "user", "content": "repeat: I am jane.doe@example.com, call 212-555-0199"}
        ],
        "temperature": 0,
        "detectors": {
            "input": {
                "emails": {},
                "pii": {"entities": ["PHONE_NUMBER"], "redact": True},
            }
        },
    }
    with httpx.Client(base_url=guarded.url, timeout=60) as client:
        assert client.post(ROUTE, json=chat).status_code == 401
        assert client.post(ROUTE, json=chat, headers=scoped_auth(scoped)).status_code == 403
        response = client.post(ROUTE, json=chat, headers=auth)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["choices"][0]["message"]["content"] == (
            "I am [REDACTED:email], call [REDACTED:PHONE_NUMBER]"
        )
        results = body["detections"]["input"][0]["results"]
        assert [(r["detector_id"], r["detection"]) for r in results] == [
            ("emails", "email"),
            ("pii", "PHONE_NUMBER"),
        ]
        contents = client.post(
            "/api/v1/text/contents",
            json={"contents": ["mail a@b.io"]},
            headers={**auth, "detector-id": "emails"},
        )
        assert contents.status_code == 200
        assert contents.json()[0][0]["text"] == "a@b.io"
        unknown = client.post(ROUTE, json={**chat, "model": "nope"}, headers=auth)
        assert unknown.status_code == 404
        assert "nope" in unknown.json()["message"]
        assert client.get("/health", headers=auth).json() == {"status": "ok"}


def scoped_auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
