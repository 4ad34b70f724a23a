"""A protocol plugs into the HTTP app as a ``RouteProvider``, and streams through it.

The provider here is a toy ("echo"), not OpenAI's: what it proves is that the app routes,
admits, shapes errors and streams for any protocol passed in, with that protocol's error
shape, and serves v1 and v2 alone without one.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
import orjson
import pytest
from serving import serve_asgi

from modelhost import errors
from modelhost.model.repository import ModelRepository
from modelhost.server.dataplane import DataPlane
from modelhost.server.http.app import HttpApp
from modelhost.server.http.extension import RouteProvider
from modelhost.server.http.messages import HttpRequest, HttpResponse, Route, json_response
from modelhost.server.http.streaming import StreamingResponse, sse
from modelhost.server.inference import StepRunner
from modelhost.server.metrics import Metrics
from modelhost.settings import ServerSettings

TAIL = b"data: end\n\n"


def render(exc: BaseException) -> tuple[int, Any]:
    return errors.http_status(exc), {"echo_error": errors.error_message(exc)}


class EchoRoutes:
    """A protocol of its own: paths under /echo, a v2 verb, and errors as ``echo_error``."""

    protocol = "echo"

    def __init__(self) -> None:
        self.closed = threading.Event()
        self._table = {
            "/echo/fail": Route("POST", self.fail, "echo", "fail"),
            "/echo/stream": Route("POST", self.stream, "echo", "stream"),
            "/echo/early": Route("POST", self.early, "echo", "early"),
            "/echo/slow": Route("POST", self.slow, "echo", "slow"),
        }
        self._shout = Route("POST", self.shout, "v2", "shout")

    def route(self, path: str) -> tuple[Route, str] | None:
        route = self._table.get(path)
        return (route, "") if route is not None else None

    def model_route(self, verb: str) -> Route | None:
        return self._shout if verb == "shout" else None

    async def v1_models(self, request: HttpRequest) -> HttpResponse:
        return json_response({"models": [], "echo": True})

    def error_response(self, exc: BaseException) -> HttpResponse:
        status, payload = render(exc)
        return HttpResponse(status, orjson.dumps(payload))

    async def fail(self, request: HttpRequest) -> HttpResponse:
        raise errors.InvalidInput("not an echo")

    async def shout(self, request: HttpRequest) -> HttpResponse:
        return json_response({"model": request.model, "version": request.version})

    async def stream(self, request: HttpRequest) -> StreamingResponse:
        async def parts() -> AsyncGenerator[bytes, None]:
            yield sse({"n": 1})
            yield sse({"n": 2})
            raise errors.InferenceError("broke mid-stream")

        return self._streaming(parts(), timeout_s=30)

    async def early(self, request: HttpRequest) -> StreamingResponse:
        async def parts() -> AsyncGenerator[bytes, None]:
            raise errors.ModelNotReady("echo")
            yield b""  # a generator all the same

        return self._streaming(parts(), timeout_s=30)

    async def slow(self, request: HttpRequest) -> StreamingResponse:
        async def parts() -> AsyncGenerator[bytes, None]:
            await asyncio.Event().wait()  # never set: only the deadline ends it
            yield b""

        return self._streaming(parts(), timeout_s=0.2)

    def _streaming(self, parts: AsyncGenerator[bytes, None], timeout_s: float) -> StreamingResponse:
        return StreamingResponse(
            parts,
            stream=True,
            timeout_s=timeout_s,
            render_error=render,
            error_tail=TAIL,
            on_close=self.closed.set,
        )


@contextmanager
def serving(routes: RouteProvider | None) -> Iterator[str]:
    """An ``HttpApp`` built with ``routes``, under uvicorn on a free loopback port."""
    metrics = Metrics()
    with ThreadPoolExecutor(1) as pool:
        dataplane = DataPlane(ModelRepository(), StepRunner(pool, metrics), "modelhost")
        app = HttpApp(dataplane, metrics, ServerSettings(), routes)
        with serve_asgi(app, lifespan="off") as port:
            yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def echo() -> Iterator[tuple[str, EchoRoutes]]:
    routes = EchoRoutes()
    with serving(routes) as url:
        yield url, routes


def test_its_routes_are_served_and_its_errors_take_its_shape(
    echo: tuple[str, EchoRoutes],
) -> None:
    url, _ = echo
    response = httpx.post(f"{url}/echo/fail", content=b"{}", timeout=10)
    assert response.status_code == 400
    assert response.json() == {"echo_error": "not an echo"}
    # v2's own routes keep KServe's shape beside it.
    response = httpx.get(f"{url}/v2/models/missing", timeout=10)
    assert response.status_code == 404
    assert set(response.json()) == {"error"}


def test_its_v2_verbs_get_the_model_and_version_from_the_path(
    echo: tuple[str, EchoRoutes],
) -> None:
    url, _ = echo
    response = httpx.post(f"{url}/v2/models/iris/versions/3/shout", content=b"{}", timeout=10)
    assert response.status_code == 200
    assert response.json() == {"model": "iris", "version": "3"}
    assert httpx.post(f"{url}/v2/models/iris/whisper", timeout=10).status_code == 404


def test_it_answers_v1s_model_list(echo: tuple[str, EchoRoutes]) -> None:
    url, _ = echo
    assert httpx.get(f"{url}/v1/models", timeout=10).json() == {"models": [], "echo": True}


def test_an_error_mid_stream_is_an_event_in_its_shape_then_its_tail(
    echo: tuple[str, EchoRoutes],
) -> None:
    url, routes = echo
    routes.closed.clear()
    response = httpx.post(f"{url}/echo/stream", content=b"{}", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    expected = sse({"n": 1}) + sse({"n": 2}) + sse({"echo_error": "broke mid-stream"}) + TAIL
    assert response.content == expected
    assert routes.closed.wait(5)


def test_an_error_before_the_first_part_keeps_its_status(echo: tuple[str, EchoRoutes]) -> None:
    url, routes = echo
    routes.closed.clear()
    response = httpx.post(f"{url}/echo/early", content=b"{}", timeout=10)
    assert response.status_code == 503
    assert response.json() == {"echo_error": errors.error_message(errors.ModelNotReady("echo"))}
    assert routes.closed.wait(5)


def test_a_stream_past_its_deadline_is_stopped_with_a_504_in_its_shape(
    echo: tuple[str, EchoRoutes],
) -> None:
    url, routes = echo
    routes.closed.clear()
    response = httpx.post(f"{url}/echo/slow", content=b"{}", timeout=10)
    assert response.status_code == 504
    assert response.json() == {"echo_error": "The request took longer than 0.2 s."}
    assert routes.closed.wait(5)


def test_without_a_provider_the_app_serves_v1_and_v2_alone() -> None:
    with serving(None) as url:
        assert httpx.get(f"{url}/v1/models", timeout=10).json() == {"models": []}
        assert httpx.get(f"{url}/v2/health/live", timeout=10).status_code == 200
        for path in ("/v1/completions", "/openai/v1/models", "/v2/models/iris/generate"):
            method = "GET" if path.endswith("models") else "POST"
            assert httpx.request(method, f"{url}{path}", timeout=10).status_code == 404, path
