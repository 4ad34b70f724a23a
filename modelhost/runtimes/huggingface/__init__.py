"""The Hugging Face runtime: a transformers encoder folder served for a predictive task.

A folder is this runtime's when it holds ``config.json`` and PyTorch weights
(``model.safetensors``, ``pytorch_model.bin``, or their shards); it wins over the other
runtimes' matches (priority 1). The task is ``--task`` (KServe's names:
``sequence_classification``, ``token_classification``, ``fill_mask``, ``text_embedding``;
or a pipeline's: ``text-classification``, ``ner``, ``fill-mask``, ``feature-extraction``),
or is inferred from ``config.json``'s ``architectures``: ``*ForSequenceClassification``,
``*ForTokenClassification``, ``*ForMaskedLM``, and a bare ``*Model`` (or a
sentence-transformers folder, one with ``modules.json``) for ``text_embedding``.
Causal LMs are the ``llm`` runtime's (``modelhost.runtimes.llm``), which takes their
folders, and ``--task text_generation``, from this runtime.

Requests carry texts: v1 ``{"instances": ["text", ...]}``, or v2 one BYTES input of shape
``[n]`` under any name (the metadata calls it ``input-0``). The texts of a request are
tokenized together, padded to the longest and truncated to ``max_length`` (default: the
model's limit, or a sentence-transformers folder's ``max_seq_length``). Replies are
KServe's Hugging Face server's, one output named ``output-0``:

- ``sequence_classification``: the predicted class id per text, INT64 ``[n]`` (v1
  ``[1, 0]``); class ids, not ``id2label`` names, as KServe answers.
- ``token_classification``: the class id of every token, ``[CLS]``, ``[SEP]`` and padding
  included, INT64 ``[n, 1, tokens]`` (KServe's shape, with its middle axis of 1).
- ``fill_mask``: per text, the best token for each mask, decoded to one string (masks
  joined by spaces), BYTES ``[n]`` (v1 ``["paris", "france"]``). A text without a mask
  token is a 400 (KServe would answer for its first token).
- ``text_embedding``: FP32 ``[n, dim]``. A sentence-transformers folder's pooling modes
  (mean, cls, max, mean_sqrt_len_tokens, lasttoken) and ``Normalize`` module are
  followed; any other folder gets KServe's L2-normalized mean over the attention mask.

With ``return_probabilities`` (softmax) or ``return_raw_logits``, the two classification
tasks answer per-class scores instead of ids: v2 FP32 ``[n, classes]`` or
``[n, tokens, classes]``; v1, as KServe, a ``{"0": score, "1": score, ...}`` object per text
(per token), scores unrounded where KServe rounds to four places. ``fill_mask`` and
``text_embedding`` ignore them (KServe's vocabulary-sized mask scores are not offered).
"""

from __future__ import annotations

from modelhost.runtimes.huggingface.folder import TASKS, WEIGHT_PATTERNS, claim
from modelhost.runtimes.huggingface.model import HuggingFaceEmbeddingModel, HuggingFaceModel

__all__ = ["TASKS", "WEIGHT_PATTERNS", "HuggingFaceEmbeddingModel", "HuggingFaceModel", "claim"]
