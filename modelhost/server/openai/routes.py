"""The OpenAI-compatible endpoints, vLLM's LoRA endpoints, and the v2 generate extension.

Served under ``/openai/v1/...`` (KServe's prefix) and ``/v1/...`` (OpenAI's own paths);
:class:`OpenAIRoutes` is the HTTP app's ``RouteProvider``, passed in by whoever builds it.
A handler validates the body (every failure a 400 naming its parameter), resolves the
request's ``model`` (a model, or a LoRA adapter: its base model with that adapter), holds
the model, tokenizes off the event loop, and returns a ``StreamingResponse`` that generates
while it sends (``modelhost.server.http.streaming``), its errors in OpenAI's shape.
``/v1/models`` answers in KServe's v1 shape and OpenAI's at once (``models`` and
``data``), as both kinds of client call that path.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import time
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import orjson

from modelhost import errors
from modelhost.model.generation import (
    MAX_LOGPROBS,
    EmbeddingModel,
    GenerativeModel,
)
from modelhost.model.model import Model
from modelhost.server.dataplane import DataPlane
from modelhost.server.http.messages import HttpRequest, HttpResponse, Route
from modelhost.server.http.streaming import StreamingResponse
from modelhost.server.metrics import Metrics
from modelhost.server.openai import checks, completions, generate
from modelhost.server.openai.errors import InvalidParameter, error_payload, openai_error_response
from modelhost.server.openai.guardrails import GuardrailChain
from modelhost.server.openai.runs import Job, Run, request_id
from modelhost.server.openai.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    LoadLoraRequest,
    UnloadLoraRequest,
    decode,
)

__all__ = ["REQUEST_TIMEOUT_S", "OpenAIRoutes"]


# Longest a generation may run, queueing included, before it is stopped (a 504).
REQUEST_TIMEOUT_S = 600.0
PREFIXES = ("/openai/v1", "/v1")


class OpenAIRoutes:
    """The handlers, their routing table, and what they share (metrics, guardrails).

    The HTTP app's ``RouteProvider``: ``guardrails`` filter the text into and out of
    generative models (none by default); a generation running past ``request_timeout_s``,
    queueing included, is stopped with a 504.
    """

    # The label of the routes whose errors take OpenAI's shape (v2 generate keeps v2's).
    protocol = "openai"

    def __init__(
        self,
        dataplane: DataPlane,
        metrics: Metrics,
        guardrails: GuardrailChain | None = None,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> None:
        self.dataplane = dataplane
        self.metrics = metrics.llm
        self.guardrails = guardrails if guardrails is not None else GuardrailChain()
        self.request_timeout_s = request_timeout_s
        self.created = int(time.time())
        self.metrics.watch(self._engine_stats)
        table = {
            "completions": Route("POST", self.completions, "openai", "completions"),
            "chat/completions": Route("POST", self.chat, "openai", "chat_completions"),
            "embeddings": Route("POST", self.embeddings, "openai", "embeddings"),
            "load_lora_adapter": Route("POST", self.load_lora, "openai", "load_lora"),
            "unload_lora_adapter": Route("POST", self.unload_lora, "openai", "unload_lora"),
        }
        self._table = {f"{p}/{path}": route for p in PREFIXES for path, route in table.items()}
        # /v1/models is the app's (v1 and OpenAI in one answer); this is the prefixed one.
        self._table["/openai/v1/models"] = Route("GET", self.models, "openai", "models")
        self._retrieve = Route("GET", self.retrieve_model, "openai", "model")
        self._generate = {
            "generate": Route("POST", self.generate, "v2", "generate"),
            "generate_stream": Route("POST", self.generate_stream, "v2", "generate_stream"),
        }

    # -- routing ----------------------------------------------------------------------------

    def route(self, path: str) -> tuple[Route, str] | None:
        """The route for ``path`` and the model name in it, or None."""
        route = self._table.get(path)
        if route is not None:
            return route, ""
        if path.startswith("/openai/v1/models/"):
            name = path[len("/openai/v1/models/") :]
            if name:
                return self._retrieve, name
        return None

    def model_route(self, verb: str) -> Route | None:
        """The route of ``/v2/models/{name}/<verb>`` for the generate extension's verbs."""
        return self._generate.get(verb)

    def error_response(self, exc: BaseException) -> HttpResponse:
        return openai_error_response(exc)

    # -- completions ------------------------------------------------------------------------

    async def completions(self, request: HttpRequest) -> HttpResponse | StreamingResponse:
        started = time.perf_counter()
        body = decode(request.body, CompletionRequest)
        n = checks.choices(body.n)
        checks.refuse(
            "best_of", body.best_of is not None and body.best_of != n, "best_of other than n"
        )
        checks.refuse("suffix", bool(body.suffix), "suffix")
        checks.refuse("logit_bias", bool(body.logit_bias), "logit_bias")
        logprobs = body.logprobs
        if logprobs is not None and not 0 <= logprobs <= MAX_LOGPROBS:
            raise InvalidParameter(f"logprobs must be in [0, {MAX_LOGPROBS}].", "logprobs")
        if body.echo and logprobs is not None:
            raise InvalidParameter(
                "echo with logprobs needs the prompt's log probabilities, which this server "
                "does not compute.",
                "echo",
            )
        include_usage = checks.stream_options(body.stream, body.stream_options)
        prompts = checks.prompts(body.prompt)
        if len(prompts) * n > checks.MAX_CHOICES:
            raise InvalidParameter(f"At most {checks.MAX_CHOICES} choices (prompts times n).", "n")
        params = checks.sampling(body, 16 if body.max_tokens is None else body.max_tokens)
        if logprobs is not None:
            params = dataclasses.replace(params, logprobs=logprobs)
        model, adapter = await self._acquire(body.model)
        try:
            generative = checks.generative(model, body.model)
            encoded = await self._encode_prompts(generative, prompts, bool(body.echo))
            checks.check_length(
                generative, [ids for _, ids in encoded], params.max_tokens, "prompt"
            )
            jobs = [
                Job(p * n + j, ids, checks.seeded(params, j))
                for p, (_, ids) in enumerate(encoded)
                for j in range(n)
            ]
            run = self._run(generative, adapter, jobs, "cmpl", started, encoded)
            reply = completions.Reply(
                run.request_id,
                body.model,
                generative,
                logprobs=logprobs,
                include_usage=include_usage,
                echo=[encoded[i // n][0] for i in range(len(jobs))] if body.echo else None,
            )
            if body.stream:
                parts = completions.completion_stream(run, reply)
            else:
                parts = completions.completion_body(run, reply)
            return self._deferred(parts, bool(body.stream), model)
        except BaseException:
            self._release(model)
            raise

    async def chat(self, request: HttpRequest) -> HttpResponse | StreamingResponse:
        started = time.perf_counter()
        body = decode(request.body, ChatCompletionRequest)
        n = checks.choices(body.n)
        checks.refuse("logit_bias", bool(body.logit_bias), "logit_bias")
        checks.refuse("tools", bool(body.tools) or bool(body.functions), "tools")
        checks.refuse("tool_choice", body.tool_choice not in (None, "none", "auto"), "tool_choice")
        response_type = (body.response_format or {}).get("type", "text")
        checks.refuse(
            "response_format", response_type != "text", f"response_format {response_type}"
        )
        top = body.top_logprobs
        if top is not None:
            if not body.logprobs:
                raise InvalidParameter("top_logprobs needs logprobs set to true.", "top_logprobs")
            if not 0 <= top <= MAX_LOGPROBS:
                raise InvalidParameter(
                    f"top_logprobs must be in [0, {MAX_LOGPROBS}].", "top_logprobs"
                )
        logprobs = (top or 0) if body.logprobs else None
        include_usage = checks.stream_options(body.stream, body.stream_options)
        messages = checks.messages(body.messages)
        wanted = (
            body.max_completion_tokens
            if body.max_completion_tokens is not None
            else body.max_tokens
        )
        name = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
        # Checked before the model is looked up, as the other endpoints do.
        checks.sampling(body, 1 if wanted is None else wanted, name)
        model, adapter = await self._acquire(body.model)
        try:
            generative = checks.generative(model, body.model)
            if self.guardrails:
                for message in messages:
                    if isinstance(message.get("content"), str):
                        message["content"] = await self.guardrails.check_input(
                            message["content"], role=message["role"]
                        )

            def template() -> list[int]:
                # The template puts the special tokens (BOS, turn markers) in already.
                prompt = generative.apply_chat_template(messages)
                return generative.encode(prompt, add_special_tokens=False)

            ids: list[int] = await self.dataplane.runner.call(template)
            max_tokens = wanted if wanted is not None else max(1, checks.room(generative, len(ids)))
            checks.check_length(generative, [ids], max_tokens, "messages")
            params = checks.sampling(body, max_tokens, name)
            if logprobs is not None:
                params = dataclasses.replace(params, logprobs=logprobs)
            jobs = [Job(j, ids, checks.seeded(params, j)) for j in range(n)]
            run = self._run(generative, adapter, jobs, "chatcmpl", started, [("", ids)])
            reply = completions.Reply(
                run.request_id,
                body.model,
                generative,
                logprobs=logprobs,
                include_usage=include_usage,
            )
            if body.stream:
                parts = completions.chat_stream(run, reply)
            else:
                parts = completions.chat_body(run, reply)
            return self._deferred(parts, bool(body.stream), model)
        except BaseException:
            self._release(model)
            raise

    # -- embeddings and models --------------------------------------------------------------

    async def embeddings(self, request: HttpRequest) -> HttpResponse:
        body = decode(request.body, EmbeddingRequest)
        encoding = body.encoding_format or "float"
        if encoding not in ("float", "base64"):
            raise InvalidParameter("encoding_format must be float or base64.", "encoding_format")
        checks.refuse("dimensions", body.dimensions is not None, "dimensions")
        texts = checks.embedding_inputs(body.input)
        model, _ = await self._acquire(body.model)
        try:
            if not isinstance(model, EmbeddingModel):
                raise InvalidParameter(
                    f"The model `{body.model}` does not make embeddings.",
                    "model",
                    "model_not_supported",
                )
            if self.guardrails:
                texts = [await self.guardrails.check_input(t) for t in texts]
            vectors, tokens = await model.embed(texts)
        finally:
            self._release(model)
        if len(vectors) != len(texts):
            raise errors.InferenceError(
                f"Model {body.model} returned {len(vectors)} embeddings for {len(texts)} inputs."
            )
        data = []
        for index, vector in enumerate(vectors):
            embedding: Any = [float(v) for v in vector]
            if encoding == "base64":
                embedding = base64.b64encode(np.asarray(vector, "<f4").tobytes()).decode()
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        usage = {"prompt_tokens": int(tokens), "total_tokens": int(tokens)}
        return _json({"object": "list", "data": data, "model": body.model, "usage": usage})

    async def models(self, request: HttpRequest) -> HttpResponse:
        return _json({"object": "list", "data": self._cards()})

    async def v1_models(self, request: HttpRequest) -> HttpResponse:
        """``GET /v1/models`` for KServe's v1 clients (``models``) and OpenAI's (``data``)."""
        names = sorted(self.dataplane.repository.get_models())
        return _json({"models": names, "object": "list", "data": self._cards()})

    async def retrieve_model(self, request: HttpRequest) -> HttpResponse:
        for card in self._cards():
            if card["id"] == request.model:
                return _json(card)
        raise errors.ModelNotFound(request.model)

    def _cards(self) -> list[dict[str, Any]]:
        cards: list[dict[str, Any]] = []
        for name, model in sorted(self.dataplane.repository.get_models().items()):
            if not isinstance(model, (GenerativeModel, EmbeddingModel)):
                continue
            card = self._card(name, None)
            if isinstance(model, GenerativeModel):
                # A model not loaded yet may not know its context length.
                with contextlib.suppress(Exception):
                    card["max_model_len"] = int(model.max_model_len)
                cards.extend(self._card(a, name) for a in checks.adapters(model))
            cards.append(card)
        return sorted(cards, key=lambda c: (c["parent"] or c["id"], c["parent"] is not None))

    def _card(self, name: str, parent: str | None) -> dict[str, Any]:
        return {
            "id": name,
            "object": "model",
            "created": self.created,
            "owned_by": "modelhost",
            "root": name,
            "parent": parent,
        }

    # -- LoRA adapters (vLLM's endpoints) ---------------------------------------------------

    async def load_lora(self, request: HttpRequest) -> HttpResponse:
        body = decode(request.body, LoadLoraRequest)
        name, path = body.lora_name.strip(), body.lora_path.strip()
        if not name:
            raise InvalidParameter("lora_name must not be empty.", "lora_name")
        if not path:
            raise InvalidParameter("lora_path must not be empty.", "lora_path")
        if self.dataplane.repository.has_model(name) or self._adapter_owner(name) is not None:
            raise InvalidParameter(
                f"The LoRA adapter '{name}' has already been loaded (or a model has that name).",
                "lora_name",
            )
        await self._adapter_base(body.model).load_adapter(name, path)
        return _text(f"Success: LoRA adapter '{name}' added successfully.")

    async def unload_lora(self, request: HttpRequest) -> HttpResponse:
        body = decode(request.body, UnloadLoraRequest)
        owner = self._adapter_owner(body.lora_name)
        if owner is None:
            raise errors.ModelNotFound(body.lora_name)
        await owner.unload_adapter(body.lora_name)
        return _text(f"Success: LoRA adapter '{body.lora_name}' removed successfully.")

    def _adapter_base(self, name: str | None) -> GenerativeModel:
        models = self.dataplane.repository.get_models()
        if name is not None:
            model = models.get(name)
            if model is None:
                raise errors.ModelNotFound(name)
            return checks.generative(model, name)
        generative = [m for m in models.values() if isinstance(m, GenerativeModel)]
        if len(generative) != 1:
            raise InvalidParameter(
                "Name the base model in `model`: this server has "
                f"{len(generative)} generative models.",
                "model",
            )
        return generative[0]

    def _adapter_owner(self, name: str) -> GenerativeModel | None:
        for model in self.dataplane.repository.get_models().values():
            if isinstance(model, GenerativeModel) and name in checks.adapters(model):
                return model
        return None

    # -- generate extension -----------------------------------------------------------------

    async def generate(self, request: HttpRequest) -> StreamingResponse:
        return await self._generate_request(request, stream=False)

    async def generate_stream(self, request: HttpRequest) -> StreamingResponse:
        return await self._generate_request(request, stream=True)

    async def _generate_request(self, request: HttpRequest, stream: bool) -> StreamingResponse:
        started = time.perf_counter()
        body, params, include_input = generate.parse(request.body)
        model, adapter = await self._acquire(request.model)
        try:
            if request.version is not None:
                self.dataplane.model(model.name, request.version)
            generative = checks.generative(model, request.model)
            [(text, ids)] = await self._encode_prompts(generative, [body.text_input], False)
            checks.check_length(generative, [ids], params.max_tokens, "text_input")
            run = self._run(generative, adapter, [Job(0, ids, params)], "gen", started, [("", ids)])
            reply = generate.Reply(
                request.model,
                getattr(model, "version", None),
                text if include_input else "",
                body.id,
            )
            parts = generate.stream(run, reply) if stream else generate.body(run, reply)
            return self._deferred(parts, stream, model, openai=False)
        except BaseException:
            self._release(model)
            raise

    # -- shared -----------------------------------------------------------------------------

    async def _acquire(self, name: str) -> tuple[Model, str | None]:
        """The model ``name`` selects, held until released, and the adapter it names."""
        repository = self.dataplane.repository
        target, adapter = name, None
        if not repository.has_model(name):
            owner = self._adapter_owner(name)
            if owner is None:
                raise errors.ModelNotFound(name)
            target, adapter = owner.name, name
        try:
            return repository.acquire(target), adapter
        except (errors.ModelNotFound, errors.ModelNotReady):
            if not repository.is_deferred(target):
                raise
        model = await self.dataplane.runner.call(repository.acquire_loaded, target)
        return model, adapter

    def _release(self, model: Model) -> None:
        self.dataplane.repository.release(model)

    def _deferred(
        self, parts: Any, stream: bool, model: Model, *, openai: bool = True
    ) -> StreamingResponse:
        return StreamingResponse(
            parts,
            stream=stream,
            timeout_s=self.request_timeout_s,
            render_error=error_payload if openai else generate.error_payload,
            error_tail=completions.DONE if openai else b"",
            on_close=lambda: self._release(model),
        )

    def _run(
        self,
        model: GenerativeModel,
        adapter: str | None,
        jobs: list[Job],
        prefix: str,
        started: float,
        prompts: list[tuple[str, list[int]]],
    ) -> Run:
        return Run(
            model,
            adapter,
            jobs,
            request_id=request_id(prefix),
            metrics=self.metrics,
            started=started,
            guardrails=self.guardrails,
            prompt_tokens=sum(len(ids) for _, ids in prompts),
        )

    async def _encode_prompts(
        self, model: GenerativeModel, prompts: list[str | list[int]], need_text: bool
    ) -> list[tuple[str, list[int]]]:
        """Each prompt's text (empty unless echoed or filtered) and token ids, after the
        input guardrails; the tokenizer runs off the event loop."""
        chain = self.guardrails
        call = self.dataplane.runner.call
        pairs: list[tuple[str, list[int] | None]] = [
            (p, None) if isinstance(p, str) else ("", p) for p in prompts
        ]
        if (chain or need_text) and any(ids is not None for _, ids in pairs):

            def decode_all() -> list[tuple[str, list[int] | None]]:
                return [(model.decode(i) if i is not None else t, i) for t, i in pairs]

            pairs = await call(decode_all)
        if chain:
            checked: list[tuple[str, list[int] | None]] = []
            for text, ids in pairs:
                filtered = await chain.check_input(text)
                # A prompt the guardrails rewrote is tokenized again from its new text.
                checked.append((filtered, ids if filtered == text else None))
            pairs = checked

        def encode_all() -> list[tuple[str, list[int]]]:
            return [
                (t, i if i is not None else model.encode(t, add_special_tokens=True))
                for t, i in pairs
            ]

        if all(ids is not None for _, ids in pairs):
            return encode_all()
        encoded: list[tuple[str, list[int]]] = await call(encode_all)
        return encoded

    def _engine_stats(self) -> Iterator[tuple[str, Mapping[str, Any]]]:
        for name, model in self.dataplane.repository.get_models().items():
            if isinstance(model, GenerativeModel) and model.ready:
                try:
                    stats = model.stats
                except Exception:  # a scrape must not fail for one model's gauges
                    continue
                yield name, stats


def _json(content: Any) -> HttpResponse:
    return HttpResponse(200, orjson.dumps(content))


def _text(message: str) -> HttpResponse:
    return HttpResponse(200, message.encode(), "text/plain; charset=utf-8")
