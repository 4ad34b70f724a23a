"""The OpenAI tests' server handles: the running server, its app, and OpenAI clients."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import openai
from openai_fakes import FakeEmbedder, FakeLLM
from serving import RunningServer

from modelhost.server.http.app import HttpApp


@dataclass
class LLMServer:
    running: RunningServer
    app: HttpApp | None

    @property
    def url(self) -> str:
        return self.running.http_url

    def client(self, prefix: str = "/v1") -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + prefix, api_key="unused", max_retries=0)

    def async_client(self, prefix: str = "/v1") -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.url + prefix, api_key="unused", max_retries=0)


@dataclass
class Shared:
    """One server for a test module: a fake LLM with an adapter, an embedder, a classifier."""

    server: LLMServer
    llm: FakeLLM
    embedder: FakeEmbedder


StartLLMServer = Callable[..., LLMServer]
