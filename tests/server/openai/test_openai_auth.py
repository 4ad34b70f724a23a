"""The official openai client against ``--auth tokens``: its ``api_key`` is the bearer token."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
from openai_fakes import FakeLLM
from openai_serving import StartLLMServer

from modelhost.access import Role, TokenStore


def test_api_key_is_the_token(llm_server: StartLLMServer, tmp_path: Path) -> None:
    tokens = TokenStore(tmp_path / "tokens.db")
    server = llm_server(
        [FakeLLM("llm-a"), FakeLLM("llm-b")], auth="tokens", token_file=str(tokens.path)
    )
    _, for_a = tokens.create(Role.CALLER, service="llm-a")
    with (
        openai.OpenAI(base_url=server.url + "/v1", api_key=for_a, max_retries=0) as client,
        openai.OpenAI(base_url=server.url + "/v1", api_key="sk-wrong", max_retries=0) as wrong,
    ):
        result = client.completions.create(model="llm-a", prompt="hello", max_tokens=3)
        assert result.choices[0].text
        chat = client.chat.completions.create(
            model="llm-a", messages=[{"role": "user", "content": "hi"}], max_tokens=3
        )
        assert chat.choices[0].message.content is not None
        # The model is named in the body: a token for llm-a may not reach llm-b.
        with pytest.raises(openai.PermissionDeniedError) as denied:
            client.completions.create(model="llm-b", prompt="hello", max_tokens=3)
        assert "for service 'llm-a'" in denied.value.message
        with pytest.raises(openai.AuthenticationError) as refused:
            wrong.completions.create(model="llm-a", prompt="hello", max_tokens=3)
        assert refused.value.body["type"] == "authentication_error"  # type: ignore[index]
