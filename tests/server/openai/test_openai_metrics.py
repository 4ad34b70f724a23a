"""Generation metrics on /metrics under vLLM's names, labelled by model_name."""

from __future__ import annotations

import re
import threading
import time

import httpx
from openai_fakes import FakeLLM
from openai_serving import StartLLMServer

USER = [{"role": "user", "content": "hi"}]


def scrape(url: str) -> dict[str, float]:
    """Samples of the vllm: metrics, keyed by name and labels as exposed."""
    text = httpx.get(f"{url}/metrics").text
    samples = {}
    for line in text.splitlines():
        match = re.match(r"^(vllm:\S+) (\S+)$", line)
        if match:
            samples[match.group(1)] = float(match.group(2))
    return samples


def test_latencies_and_token_counts_after_requests(llm_server: StartLLMServer) -> None:
    server = llm_server([FakeLLM(delay=0.001)])
    client = server.client()
    first = client.completions.create(model="fake-llm", prompt="abc", max_tokens=4)
    second = client.chat.completions.create(
        model="fake-llm",
        messages=USER,
        max_tokens=3,
        stream=True,
    )
    list(second)
    assert first.usage is not None
    m = scrape(server.url)
    label = '{model_name="fake-llm"}'
    assert m[f"vllm:time_to_first_token_seconds_count{label}"] == 2
    assert m[f"vllm:e2e_request_latency_seconds_count{label}"] == 2
    # Every token after a request's first is one inter-token gap.
    assert m[f"vllm:inter_token_latency_seconds_count{label}"] == (4 - 1) + (3 - 1)
    assert m[f"vllm:inter_token_latency_seconds_sum{label}"] > 0
    assert m[f"vllm:generation_tokens_total{label}"] == 7
    prompt_chat = len("<|user|>hi\n<|assistant|>")
    assert m[f"vllm:prompt_tokens_total{label}"] == first.usage.prompt_tokens + prompt_chat
    assert m['vllm:request_success_total{finished_reason="length",model_name="fake-llm"}'] == 2
    ttft_sum = m[f"vllm:time_to_first_token_seconds_sum{label}"]
    e2e_sum = m[f"vllm:e2e_request_latency_seconds_sum{label}"]
    assert 0 < ttft_sum < e2e_sum


def test_engine_gauges_are_read_from_the_model_at_scrape(llm_server: StartLLMServer) -> None:
    llm = FakeLLM(block_after=1, capacity=4)
    server = llm_server([llm])
    label = '{model_name="fake-llm"}'
    assert scrape(server.url)[f"vllm:num_requests_running{label}"] == 0
    client = server.client()
    holder = threading.Thread(
        target=lambda: client.completions.create(model="fake-llm", prompt="x", max_tokens=3)
    )
    holder.start()
    deadline = time.monotonic() + 5
    while llm.gate is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    m = scrape(server.url)
    assert m[f"vllm:num_requests_running{label}"] == 1
    assert m[f"vllm:num_requests_waiting{label}"] == 0
    assert m[f"vllm:kv_cache_usage_perc{label}"] == 0.25
    llm.release()
    holder.join(5)
    assert scrape(server.url)[f"vllm:num_requests_running{label}"] == 0
