"""A real server on loopback with the fake models, and OpenAI clients pointed at it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from openai_fakes import FakeEmbedder, FakeLLM, PlainModel
from openai_serving import LLMServer, Shared, StartLLMServer
from serving import StartServer, start_server, stop_server

from modelhost import Model
from modelhost.server import model_server
from modelhost.server.http.app import HttpApp
from modelhost.server.openai.guardrails import GuardrailChain
from modelhost.server.openai.routes import OpenAIRoutes


@pytest.fixture
def llm_server(serve: StartServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[StartLLMServer]:
    """``llm_server([models], guardrails=..., timeout_s=...)``: a ModelServer serving them.

    The timeout is the server's ``llm_request_timeout_s`` setting; guardrails objects
    (the settings name built-in ones only) reach the OpenAI routes through a wrapper of
    their class, and the app is kept through a wrapper of its own.
    """
    started: list[LLMServer] = []

    def start(
        models: Sequence[Model],
        guardrails: GuardrailChain | None = None,
        timeout_s: float | None = None,
        **settings: Any,
    ) -> LLMServer:
        built: list[HttpApp] = []

        def routes(
            dataplane: Any, metrics: Any, chain: GuardrailChain | None = None, **kwargs: Any
        ) -> OpenAIRoutes:
            chosen = guardrails if guardrails is not None else chain
            return OpenAIRoutes(dataplane, metrics, chosen, **kwargs)

        def build(*args: Any, **kwargs: Any) -> HttpApp:
            app = HttpApp(*args, **kwargs)
            built.append(app)
            return app

        monkeypatch.setattr(model_server, "OpenAIRoutes", routes)
        monkeypatch.setattr(model_server, "HttpApp", build)
        if timeout_s is not None:
            settings["llm_request_timeout_s"] = timeout_s
        running = serve(models, enable_grpc=False, **settings)
        started.append(LLMServer(running, built[-1]))
        return started[-1]

    yield start
    for server in started:
        server.close_clients()


@pytest.fixture(scope="module")
def shared() -> Iterator[Shared]:
    llm, embedder = FakeLLM(adapters=["sql-lora"]), FakeEmbedder()
    running = start_server([llm, embedder, PlainModel()], enable_grpc=False)
    server = LLMServer(running, None)
    try:
        yield Shared(server, llm, embedder)
    finally:
        server.close_clients()
        stop_server(running)
