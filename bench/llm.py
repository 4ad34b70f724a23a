"""LLM serving benchmark: continuous batching against one request at a time, same server.

Builds a random Llama (no download; weights random, so the text is gibberish but the cost is
real), serves it with ``modelhost serve`` pinned to core 0, and streams completions through
the official ``openai`` client from core 1:

- sequential: requests one after another; tokens per second and time to first token (idle);
- concurrent: 16 streams in a closed loop (each client starts its next completion when its
  last one ends); aggregate tokens per second and time to first token of requests arriving
  while the others decode.

Targets (issue 6): concurrent tokens/s >= 4x sequential, and TTFT p50 under that load
<= 3x the idle one. Results go to ``OUT/llm.md`` and ``OUT/llm.csv``.

    /tmp/peers/modelhost/bin/python bench/llm.py   # after bench/setup.sh: its venv has openai
"""

from __future__ import annotations

import asyncio
import csv
import os
import random
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEERS = Path(os.environ.get("PEERS", "/tmp/peers"))
PYTHON = str(PEERS / "modelhost" / "bin" / "python")
MODELHOST = str(PEERS / "modelhost" / "bin" / "modelhost")
SERVER_CPU, LOAD_CPU = os.environ.get("SERVER_CPU", "0"), os.environ.get("LOAD_CPU", "1")
STREAMS = int(os.environ.get("STREAMS", "16"))
MAX_TOKENS = int(os.environ.get("MAX_TOKENS", "64"))
SECONDS = float(os.environ.get("SECONDS", "30"))
WARMUP = float(os.environ.get("WARMUP", "5"))
PORT = 8080
PROMPTS = [
    "the quick brown fox jumps over the lazy dog",
    "a model server answers requests with tokens",
    "continuous batching lets requests join and leave",
    "one two three four five six seven eight nine ten",
]

MAKE_MODEL = """
import sys, torch
sys.path.insert(0, sys.argv[2])
from fixtures import build_tokenizer
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM
tokenizer = build_tokenizer()
config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=512, intermediate_size=1536,
    num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=4,
    max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
    eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
torch.manual_seed(0)
model = LlamaForCausalLM(config).eval()
model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id,
    eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
model.save_pretrained(sys.argv[1]); tokenizer.save_pretrained(sys.argv[1])
"""


async def one_stream(
    client: object, prompt: str, max_tokens: int = MAX_TOKENS
) -> tuple[float, int, float]:
    """(time to first token, completion tokens, total seconds) of one streamed completion."""
    started = time.perf_counter()
    first = 0.0
    tokens = 0
    stream = await client.completions.create(  # type: ignore[attr-defined]
        model="llm",
        prompt=prompt,
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].text and not first:
            first = time.perf_counter() - started
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return first, tokens, time.perf_counter() - started


async def measure() -> dict[str, float]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=f"http://127.0.0.1:{PORT}/v1", api_key="none", max_retries=0)
    await one_stream(client, PROMPTS[0])  # warm-up
    sequential_ttft: list[float] = []
    started = time.perf_counter()
    tokens = 0
    for index in range(STREAMS):
        first, count, _ = await one_stream(client, PROMPTS[index % len(PROMPTS)])
        sequential_ttft.append(first)
        tokens += count
    sequential_tps = tokens / (time.perf_counter() - started)
    # Closed loop: STREAMS clients, each starting a new completion as soon as its last one
    # ends, for SECONDS; the first WARMUP seconds (when every client starts at once) are
    # not counted, so TTFT is that of a request arriving while the others decode.
    concurrent_ttft: list[float] = []
    began = time.perf_counter()
    counted_from = began + WARMUP
    ends = counted_from + SECONDS

    async def generated_at(moment: float) -> float:
        """The server's own count of generated tokens (vllm:generation_tokens_total), then."""
        await asyncio.sleep(max(0.0, moment - time.perf_counter()))
        return await asyncio.to_thread(generated_tokens)

    async def client_loop(index: int) -> None:
        nonlocal tokens
        # Lengths vary (MAX_TOKENS/2 to 3*MAX_TOKENS/2, mean MAX_TOKENS), as real ones do;
        # equal lengths would keep the clients in lockstep, arriving as one burst each time.
        lengths = random.Random(index)
        while time.perf_counter() < ends:
            start = time.perf_counter()
            length = lengths.randint(MAX_TOKENS // 2, 3 * MAX_TOKENS // 2)
            first, _, _ = await one_stream(client, PROMPTS[index % len(PROMPTS)], length)
            if start >= counted_from and time.perf_counter() <= ends:
                concurrent_ttft.append(first)

    window = asyncio.gather(generated_at(counted_from), generated_at(ends))
    await asyncio.gather(*(client_loop(i) for i in range(STREAMS)))
    before, after = await window
    concurrent_tps = (after - before) / SECONDS
    await client.close()
    return {
        "sequential_tokens_per_s": sequential_tps,
        "concurrent_tokens_per_s": concurrent_tps,
        "throughput_ratio": concurrent_tps / sequential_tps,
        "ttft_idle_p50_ms": 1000 * statistics.median(sequential_ttft),
        "ttft_loaded_p50_ms": 1000 * statistics.median(concurrent_ttft),
        "ttft_ratio": statistics.median(concurrent_ttft) / statistics.median(sequential_ttft),
    }


def generated_tokens() -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("vllm:generation_tokens_total")
    )


def main() -> None:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = Path(os.environ.get("OUT", HERE / "results" / stamp))
    out.mkdir(parents=True, exist_ok=True)
    model = PEERS / "llm-bench-model"
    if not (model / "config.json").exists():
        fixtures = ROOT / "tests" / "runtimes" / "llm"
        subprocess.run([PYTHON, "-c", MAKE_MODEL, str(model), str(fixtures)], check=True)
    log = (out / "llm-server.log").open("wb")
    server = subprocess.Popen(
        [
            "taskset",
            "-c",
            SERVER_CPU,
            MODELHOST,
            "serve",
            str(model),
            "--name",
            "llm",
            "--host",
            "127.0.0.1",
            "--http_port",
            str(PORT),
            "--grpc_port",
            "8081",
            "--max_num_seqs",
            str(STREAMS),
            "--nthread",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/v2/health/ready", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    log_file = out / "llm-server.log"
                    raise SystemExit(f"the server did not start; see {log_file}") from None
                time.sleep(0.5)
        os.sched_setaffinity(0, {int(LOAD_CPU)})
        figures = asyncio.run(measure())
    finally:
        server.terminate()
        server.wait(30)
        log.close()
    with (out / "llm.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(figures))
        writer.writeheader()
        writer.writerow(figures)
    lines = [
        "# LLM serving: continuous batching vs one request at a time",
        "",
        f"Random Llama (hidden 512, 6 layers, vocab 384), {MAX_TOKENS} tokens per completion "
        f"(concurrent: {MAX_TOKENS // 2} to {3 * MAX_TOKENS // 2}, mean {MAX_TOKENS}), "
        f"greedy, EOS ignored; server pinned to core {SERVER_CPU} with one torch thread, the "
        f"openai client on core {LOAD_CPU}. {STREAMS} streams in a closed loop for "
        f"{SECONDS:.0f} s after {WARMUP:.0f} s of warm-up (tokens/s is "
        "the server's vllm:generation_tokens_total over the window).",
        "",
        "| figure | value | target | met |",
        "|---|---:|---:|:-:|",
        f"| tokens/s, one request at a time | {figures['sequential_tokens_per_s']:.0f} | | |",
        f"| tokens/s, {STREAMS} concurrent streams | "
        f"{figures['concurrent_tokens_per_s']:.0f} | | |",
        f"| concurrent / sequential | {figures['throughput_ratio']:.2f} | >= 4 | "
        f"{'yes' if figures['throughput_ratio'] >= 4 else 'no'} |",
        f"| TTFT p50 idle | {figures['ttft_idle_p50_ms']:.1f} ms | | |",
        f"| TTFT p50 under load | {figures['ttft_loaded_p50_ms']:.1f} ms | | |",
        f"| loaded / idle TTFT | {figures['ttft_ratio']:.2f} | <= 3 | "
        f"{'yes' if figures['ttft_ratio'] <= 3 else 'no'} |",
        "",
    ]
    (out / "llm.md").write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"results in {out}")


if __name__ == "__main__":
    sys.exit(main())
