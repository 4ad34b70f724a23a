"""How the orchestrator reaches the LLM: an :class:`LLMBackend`, and one over HTTP.

The platform's backend calls the InferenceService the request's ``model`` names, in the
gateway's process (:mod:`modelhost.local.guardrails_host`); :class:`HttpLLMBackend` posts
to any OpenAI-compatible base URL (a ``modelhost serve`` of an LLM, for one).
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import aiohttp

from modelhost import errors

__all__ = ["HttpLLMBackend", "LLMBackend"]


class LLMBackend(Protocol):
    """Answers an OpenAI chat completion request (a dict) with its completion (a dict)."""

    async def chat(self, request: dict[str, Any]) -> dict[str, Any]: ...

    async def close(self) -> None:
        """Release the backend's clients (the app's shutdown calls it)."""


class HttpLLMBackend:
    """Posts chat requests to ``{base_url}/chat/completions`` (``base_url`` ends in ``/v1``)."""

    def __init__(self, base_url: str, timeout_s: float = 300.0) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def chat(self, request: dict[str, Any]) -> dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.post(
                self.url, json=request, timeout=aiohttp.ClientTimeout(total=self.timeout_s)
            ) as response:
                answer = await response.json(content_type=None)
                status = response.status
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            raise errors.InferenceError(f"The LLM at {self.url} failed: {exc!r}") from None
        return checked_completion(status, answer, self.url)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def checked_completion(status: int, answer: Any, where: str) -> dict[str, Any]:
    """The LLM's answer as a completion, or its refusal passed on as a modelhost error."""
    if status != 200:
        message = answer.get("error", answer) if isinstance(answer, dict) else answer
        if isinstance(message, dict):
            message = message.get("message", message)
        error = errors.InvalidInput if 400 <= status < 500 else errors.InferenceError
        failure = error(f"The LLM at {where} answered {status}: {message}")
        failure.status_code = status
        raise failure
    if not isinstance(answer, dict) or not isinstance(answer.get("choices"), list):
        raise errors.InferenceError(f"The LLM at {where} answered no chat completion.")
    return answer
