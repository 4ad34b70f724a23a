"""Detectors as the OpenAI API's guardrails (``modelhost serve --detectors FILE``).

The server is real, on a loopback port, serving the OpenAI tests' ``FakeLLM`` (it echoes
the text after ``repeat:``); the client is the openai package's.
"""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
from serving import StartServer

from modelhost.cli import _extensions, build_parser
from modelhost.server.extensions import ServerExtensions
from modelhost.trust.guardrails import DetectorGuardrail, detector_guardrails, load_detectors
from tests.server.openai.openai_fakes import FakeLLM

DETECTORS = (
    "emails:\n  kind: pii\n  params: {entities: [EMAIL_ADDRESS], redact: true}\n"
    "ssn:\n  kind: regex\n  params: {regex: [ssn]}\n"
)


@pytest.fixture
def detectors_file(tmp_path: Path) -> Path:
    path = tmp_path / "guardrails.yaml"
    path.write_text(DETECTORS)
    return path


def test_the_serve_flag_builds_the_file_s_detectors(detectors_file: Path) -> None:
    args = build_parser().parse_args(["serve", "models", "--detectors", str(detectors_file)])
    built = _extensions(args).guardrails
    assert [g.name for g in built] == ["emails", "ssn"]
    assert all(isinstance(g, DetectorGuardrail) for g in built)
    assert _extensions(build_parser().parse_args(["serve", "models"])).guardrails == []


def test_the_openai_api_redacts_and_refuses_with_detectors(
    serve: StartServer, detectors_file: Path
) -> None:
    llm = FakeLLM()
    guardrails = detector_guardrails(load_detectors(detectors_file))
    running = serve([llm], enable_grpc=False, extensions=ServerExtensions(guardrails=guardrails))
    with openai.OpenAI(
        base_url=running.http_url + "/v1", api_key="unused", max_retries=0
    ) as client:
        answer = client.chat.completions.create(
            model="fake-llm",
            messages=[{"role": "user", "content": "repeat: mail jane.doe@example.com now"}],
            temperature=0,
        )
        assert answer.choices[0].message.content == "mail [REDACTED:EMAIL_ADDRESS] now"
        assert llm.templates[-1][0]["content"] == "repeat: mail [REDACTED:EMAIL_ADDRESS] now"
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(
                model="fake-llm",
                messages=[{"role": "user", "content": "my ssn is 536-22-8726"}],
            )
    assert refused.value.status_code == 400
    assert "detector 'ssn'" in str(refused.value)
    assert refused.value.code == "content_filter"
