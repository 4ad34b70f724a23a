"""The router's one seam to the network: POST a body to a step's URL, get (status, headers, body).

:class:`StepCaller` is what the router calls for every service step; :class:`HttpStepCaller`
is the real one, on aiohttp (the client the gateway and the transformer's predictor calls use),
with a pooled, bounded set of keep-alive connections. Tests pass their own caller to exercise
the router's rules without sockets; the caller only moves bytes and reports transport failures
as :mod:`modelhost.graph.errors` (the router says which node and step they were).
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Protocol

from modelhost.graph.errors import StepAnswerInvalid, StepTimedOut, StepUnreachable

if TYPE_CHECKING:
    import aiohttp

__all__ = ["HttpCallerSettings", "HttpStepCaller", "StepAnswer", "StepCaller"]


class StepAnswer(NamedTuple):
    """What a step answered: its status, its headers (lower-case names) and its body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class StepCaller(Protocol):
    """POSTs ``body`` to ``url`` with ``headers``; ``timeout`` (seconds) bounds the whole call.

    Raises :class:`~modelhost.graph.errors.StepUnreachable`, ``StepTimedOut`` or
    ``StepAnswerInvalid`` (unlocated) when no answer comes back; any HTTP status is an answer.
    """

    async def __call__(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float | None
    ) -> StepAnswer: ...


@dataclass(frozen=True)
class HttpCallerSettings:
    """Connection pool and answer limits of :class:`HttpStepCaller`."""

    # Open connections in all (KServe's Go router has no cap; a cap keeps a stuck step from
    # taking every file descriptor) and to any one host (0: no per-host cap).
    max_connections: int = 512
    max_connections_per_host: int = 0
    # Idle keep-alive connections are closed after this many seconds.
    keepalive_seconds: float = 30.0
    # A step answer larger than this is refused (a 502 naming the step), not buffered.
    max_answer_bytes: int = 256 * 1024 * 1024


class HttpStepCaller:
    """The real :class:`StepCaller`: one aiohttp session per event loop, made on first use."""

    def __init__(self, settings: HttpCallerSettings | None = None) -> None:
        self.settings = settings or HttpCallerSettings()
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Imported here: the router process needs it, importing modelhost.graph does not.
        import aiohttp

        if self._session is None or self._session.closed:
            settings = self.settings
            connector = aiohttp.TCPConnector(
                limit=settings.max_connections,
                limit_per_host=settings.max_connections_per_host,
                keepalive_timeout=settings.keepalive_seconds,
            )
            # Bodies pass through as they are: no JSON, no cookies, no redirects followed.
            self._session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar()
            )
        return self._session

    async def __call__(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float | None
    ) -> StepAnswer:
        import aiohttp

        session = self._client()
        try:
            async with session.post(
                url,
                data=body,
                headers=dict(headers),
                timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=False,
            ) as response:
                content = await self._read(response)
                answer_headers = {name.lower(): value for name, value in response.headers.items()}
                return StepAnswer(response.status, answer_headers, content)
        except asyncio.TimeoutError:  # not yet the builtin TimeoutError on Python 3.10
            within = f" within {timeout:g}s" if timeout is not None else ""
            raise StepTimedOut(f"no answer from {url}{within}") from None
        except aiohttp.ClientConnectorError as exc:
            raise StepUnreachable(f"{url} unreachable: {_os_cause(exc.os_error)}") from None
        except aiohttp.ServerDisconnectedError:
            raise StepUnreachable(f"{url} closed the connection without an answer") from None
        except aiohttp.ClientConnectionError as exc:
            reason = str(exc) or type(exc).__name__
            raise StepUnreachable(f"{url} dropped the connection: {reason}") from None
        except aiohttp.InvalidURL:
            raise StepUnreachable(f"{url} is not a URL the router can call") from None
        except aiohttp.ClientError as exc:
            reason = str(exc) or type(exc).__name__
            raise StepAnswerInvalid(f"{url} answered a broken HTTP response: {reason}") from None

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        limit = self.settings.max_answer_bytes
        declared = response.content_length
        if declared is not None and declared > limit:
            raise StepAnswerInvalid(f"the answer is {declared} bytes, over the {limit} byte limit")
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_any():
            size += len(chunk)
            if size > limit:
                raise StepAnswerInvalid(f"the answer is over the {limit} byte limit")
            chunks.append(chunk)
        return b"".join(chunks)

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def _os_cause(error: OSError) -> str:
    if error.errno == errno.ECONNREFUSED:
        return "connection refused"
    return error.strerror or str(error) or type(error).__name__
