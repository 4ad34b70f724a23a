"""Fuzzed requests to the detector API and the orchestrator: a clear 4xx or a 200, never a 5xx.

Over a real socket (uvicorn); the LLM behind the orchestrator is an address nothing listens
on, so a request that gets past its input detectors is answered 502 (the documented answer
for an LLM that cannot be reached), never a crash. ``pii`` is left out: it is presidio's
recognisers (tested in test_detectors.py), and its first call loads spaCy for seconds.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving import serve_asgi

from modelhost.trust.guardrails import GuardrailsApp, HttpLLMBackend, load_detectors

PATHS = [
    "/api/v1/text/contents",
    "/api/v1/text/generation",
    "/api/v1/text/chat",
    "/api/v2/chat/completions-detection",
    "/health",
]
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"contents": st.lists(st.text(max_size=60), max_size=3)},
        optional={"detector_params": json_values},
    ),
    st.fixed_dictionaries(
        {
            "messages": st.lists(
                st.fixed_dictionaries({"role": st.text(max_size=8), "content": json_values}),
                max_size=3,
            )
        },
        optional={"model": st.text(max_size=10), "detectors": json_values},
    ),
)


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # closed: nothing listens there


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    llm = HttpLLMBackend(f"http://127.0.0.1:{_dead_port()}", timeout_s=2)
    app = GuardrailsApp(load_detectors(None), llm)
    with (
        serve_asgi(app) as port,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c,
    ):
        yield c


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    path=st.sampled_from(PATHS),
    method=st.sampled_from(["POST", "GET", "PUT"]),
    detector=st.sampled_from(["regex", "nope", "", "r\u00e9gex"]),
    body=bodies,
)
def test_fuzzed_requests_never_answer_500(
    client: httpx.Client, path: str, method: str, detector: str, body: object
) -> None:
    headers = {"detector-id": detector} if detector.isascii() else {}
    answer = client.request(method, path, json=body, headers=headers)
    assert answer.status_code < 500 or answer.status_code == 502, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert client.get("/health").status_code == 200
