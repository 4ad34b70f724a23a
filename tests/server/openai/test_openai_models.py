"""Model listing, LoRA adapters (selection, load, unload) and embeddings."""

from __future__ import annotations

import base64
import struct

import httpx
import openai
import pytest
from openai_fakes import FakeEmbedder, FakeLLM, PlainModel, greedy_text, ids_of
from openai_serving import Shared, StartLLMServer


def test_models_lists_generative_and_embedding_models_and_adapters(shared: Shared) -> None:
    for prefix in ("/v1", "/openai/v1"):
        models = shared.server.client(prefix).models.list()
        cards = {m.id: m for m in models.data}
        assert set(cards) == {"fake-llm", "sql-lora", "fake-embedder"}
        assert all(m.object == "model" and m.owned_by == "modelhost" for m in models.data)
        assert cards["sql-lora"].parent == "fake-llm"
        assert cards["fake-llm"].parent is None
        assert cards["fake-llm"].max_model_len == 256


def test_v1_models_answers_kserve_and_openai_clients_at_once(shared: Shared) -> None:
    body = httpx.get(f"{shared.server.url}/v1/models").json()
    # KServe's v1 list names every model, the classifier too.
    assert body["models"] == ["classifier", "fake-embedder", "fake-llm"]
    assert body["object"] == "list"
    assert [card["id"] for card in body["data"]] == ["fake-embedder", "fake-llm", "sql-lora"]


def test_one_model_is_retrieved_by_id(shared: Shared) -> None:
    client = shared.server.client("/openai/v1")
    assert client.models.retrieve("sql-lora").id == "sql-lora"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_an_adapter_name_selects_its_base_model_with_the_adapter(shared: Shared) -> None:
    result = shared.server.client().completions.create(
        model="sql-lora", prompt="q", temperature=0, max_tokens=2
    )
    assert result.model == "sql-lora"
    assert shared.llm.calls[-1]["adapter"] == "sql-lora"
    assert result.choices[0].text == greedy_text(ids_of("q"), 2, adapter="sql-lora")
    shared.server.client().completions.create(model="fake-llm", prompt="q", max_tokens=1)
    assert shared.llm.calls[-1]["adapter"] is None


def test_adapters_load_and_unload_at_run_time(llm_server: StartLLMServer) -> None:
    llm = FakeLLM()
    server = llm_server([llm, FakeEmbedder()])
    url = server.url
    loaded = httpx.post(
        f"{url}/v1/load_lora_adapter", json={"lora_name": "poet", "lora_path": "/data/poet"}
    )
    assert loaded.status_code == 200, loaded.text
    assert "poet" in loaded.text
    assert llm.adapters == ["poet"]
    cards = {m.id: m for m in server.client().models.list().data}
    assert cards["poet"].parent == "fake-llm"
    server.client().completions.create(model="poet", prompt="x", max_tokens=1)
    assert llm.calls[-1]["adapter"] == "poet"
    again = httpx.post(
        f"{url}/openai/v1/load_lora_adapter", json={"lora_name": "poet", "lora_path": "/x"}
    )
    assert again.status_code == 400
    assert again.json()["error"]["param"] == "lora_name"
    unloaded = httpx.post(f"{url}/v1/unload_lora_adapter", json={"lora_name": "poet"})
    assert unloaded.status_code == 200
    assert llm.adapters == []
    with pytest.raises(openai.NotFoundError):
        server.client().completions.create(model="poet", prompt="x", max_tokens=1)
    gone = httpx.post(f"{url}/v1/unload_lora_adapter", json={"lora_name": "poet"})
    assert gone.status_code == 404


def test_adapter_requests_are_checked(llm_server: StartLLMServer) -> None:
    server = llm_server([FakeLLM("one"), FakeLLM("two"), PlainModel()])
    url = f"{server.url}/v1/load_lora_adapter"
    cases = [
        ({"lora_path": "/p"}, 400, "lora_name"),
        ({"lora_name": "a"}, 400, "lora_path"),
        ({"lora_name": " ", "lora_path": "/p"}, 400, "lora_name"),
        ({"lora_name": "one", "lora_path": "/p", "model": "two"}, 400, "lora_name"),
        # Two generative models: which one takes it must be said.
        ({"lora_name": "a", "lora_path": "/p"}, 400, "model"),
        ({"lora_name": "a", "lora_path": "/p", "model": "three"}, 404, "model"),
        ({"lora_name": "a", "lora_path": "/p", "model": "classifier"}, 400, "model"),
        ({"lora_name": "a", "lora_path": "/missing", "model": "two"}, 400, None),
    ]
    for body, status, param in cases:
        response = httpx.post(url, json=body)
        assert response.status_code == status, (body, response.text)
        assert response.json()["error"]["param"] == param, body
    ok = httpx.post(url, json={"lora_name": "a", "lora_path": "/p", "model": "two"})
    assert ok.status_code == 200


@pytest.mark.parametrize("prefix", ["/v1", "/openai/v1"])
def test_embeddings_in_float_and_base64(shared: Shared, prefix: str) -> None:
    client = shared.server.client(prefix)
    # The openai client asks for base64 unless told otherwise, and decodes it.
    result = client.embeddings.create(model="fake-embedder", input=["a b", "cde"])
    assert [e.index for e in result.data] == [0, 1]
    assert result.data[0].embedding == [3.0, float((97 + 32 + 98) % 97), 0.5, -1.0]
    assert result.usage.prompt_tokens == 3
    assert result.usage.total_tokens == 3
    assert result.model == "fake-embedder"
    floats = client.embeddings.create(model="fake-embedder", input="cde", encoding_format="float")
    assert floats.data[0].embedding == result.data[1].embedding
    raw = httpx.post(
        f"{shared.server.url}{prefix}/embeddings",
        json={"model": "fake-embedder", "input": "cde", "encoding_format": "base64"},
    ).json()
    packed = base64.b64decode(raw["data"][0]["embedding"])
    assert list(struct.unpack("<4f", packed)) == result.data[1].embedding
    assert raw["object"] == "list"
    assert raw["data"][0]["object"] == "embedding"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"input": []}, "input"),
        ({"input": ""}, "input"),
        ({"input": [1, 2, 3]}, "input"),
        ({"input": 5}, "input"),
        ({"encoding_format": "int8"}, "encoding_format"),
        ({"dimensions": 2}, "dimensions"),
    ],
)
def test_invalid_embedding_requests_are_a_400(
    shared: Shared, fields: dict[str, object], param: str
) -> None:
    body = {"model": "fake-embedder", "input": "x", **fields}
    response = httpx.post(f"{shared.server.url}/v1/embeddings", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_a_generative_model_refuses_predict_and_names_its_endpoints(shared: Shared) -> None:
    response = httpx.post(
        f"{shared.server.url}/v2/models/fake-llm/infer",
        json={"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": ["hi"]}]},
    )

    assert response.status_code == 501
    assert "/v1/completions" in response.json()["error"]
    assert "/v2/models/fake-llm/generate" in response.json()["error"]
