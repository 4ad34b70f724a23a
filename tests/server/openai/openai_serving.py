"""The OpenAI tests' server handles: the running server, its app, and OpenAI clients."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import openai
from openai_fakes import FakeEmbedder, FakeLLM
from serving import RunningServer

from modelhost.server.http.app import HttpApp


@dataclass
class LLMServer:
    running: RunningServer
    app: HttpApp | None
    # The sync clients handed out, closed by the fixture: an unclosed one leaves sockets for
    # the garbage collector, whose ResourceWarning then fails whichever test it lands in.
    clients: list[openai.OpenAI] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.running.http_url

    def client(self, prefix: str = "/v1") -> openai.OpenAI:
        made = openai.OpenAI(base_url=self.url + prefix, api_key="unused", max_retries=0)
        self.clients.append(made)
        return made

    def close_clients(self) -> None:
        for made in self.clients:
            made.close()
        self.clients.clear()

    def async_client(self, prefix: str = "/v1") -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.url + prefix, api_key="unused", max_retries=0)


@dataclass
class Shared:
    """One server for a test module: a fake LLM with an adapter, an embedder, a classifier."""

    server: LLMServer
    llm: FakeLLM
    embedder: FakeEmbedder


StartLLMServer = Callable[..., LLMServer]
