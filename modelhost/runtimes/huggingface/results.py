"""The wire side of the runtime: texts out of a request, a task's outputs back into a reply.

Replies follow KServe's Hugging Face server; see the package docstring for each task's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from modelhost import errors
from modelhost.protocol.infer_type import InferRequest, InferResponse
from modelhost.runtimes._common import tensor_response
from modelhost.runtimes.huggingface.folder import Pooling

__all__ = [
    "LABEL_IDS",
    "OUTPUT_NAME",
    "PROBABILITIES",
    "RAW_LOGITS",
    "check_masks",
    "class_scores",
    "fill_masks",
    "pool",
    "reply",
    "request_texts",
]

OUTPUT_NAME = "output-0"
# What a classification answers: KServe's default, --return_probabilities, --return_raw_logits.
LABEL_IDS = "label_ids"
PROBABILITIES = "probabilities"
RAW_LOGITS = "raw_logits"


def request_texts(payload: Any) -> list[str]:
    """The texts to run: v1 ``instances`` (or ``inputs``), or a v2 request's one BYTES input."""
    if isinstance(payload, InferRequest):
        values = _v2_values(payload)
    elif isinstance(payload, dict):
        instances = payload.get("instances", payload.get("inputs"))
        if not isinstance(instances, list):
            raise errors.InvalidInput('Expected a list of texts under "instances" or "inputs".')
        values = instances
    else:
        raise errors.InvalidInput(f"Unsupported payload type {type(payload).__name__}.")
    if not values:
        raise errors.InvalidInput("The request holds no texts: send at least one.")
    return [_text(value, index) for index, value in enumerate(values)]


def _v2_values(request: InferRequest) -> list[Any]:
    if len(request.inputs) != 1:
        raise errors.InvalidInput(
            f"The model takes one BYTES input of texts; the request sends {len(request.inputs)}."
        )
    tensor = request.inputs[0]
    if tensor.datatype != "BYTES":
        raise errors.InvalidInput(
            f"Input {tensor.name} is {tensor.datatype}; the model takes texts, as BYTES."
        )
    shape = tensor.shape
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
        raise errors.InvalidInput(
            f"Input {tensor.name} has shape {shape}; send the texts with shape [n] (or [n, 1])."
        )
    values: list[Any] = tensor.as_numpy().ravel().tolist()
    return values


def _text(value: Any, index: int) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise errors.InvalidInput(f"Text {index} is not valid UTF-8.") from None
    raise errors.InvalidInput(f"Instance {index} is a {type(value).__name__}, not a text.")


def class_scores(logits: Any, scores: str, torch: Any) -> npt.NDArray[Any]:
    """Per-class logits ``[..., classes]`` as label ids, probabilities or the logits."""
    if scores == LABEL_IDS:
        ids: npt.NDArray[Any] = logits.argmax(dim=-1).cpu().numpy().astype(np.int64)
        return ids
    values = logits.float()
    if scores == PROBABILITIES:
        values = torch.softmax(values, dim=-1)
    array: npt.NDArray[Any] = values.cpu().numpy()
    return array


def fill_masks(
    logits: Any, input_ids: Any, mask_id: int, decode: Callable[[list[int]], str]
) -> npt.NDArray[Any]:
    """Per text, the best token for each of its masks, decoded to one string."""
    filled = np.empty(len(input_ids), dtype=np.object_)
    best = logits.argmax(dim=-1).cpu().numpy()
    masks = (input_ids == mask_id).cpu().numpy()
    for row in range(len(filled)):
        filled[row] = decode(best[row][masks[row]].tolist())
    return filled


def check_masks(input_ids: Any, mask_id: int, mask_token: str) -> None:
    """Every text must keep a mask token after truncation, or there is nothing to fill."""
    present = (input_ids == mask_id).any(dim=-1).cpu().tolist()
    missing = [index for index, found in enumerate(present) if not found]
    if missing:
        raise errors.InvalidInput(
            f"Text {missing[0]} has no {mask_token} token to fill (after truncation to the "
            "model's maximum length)."
        )


def pool(hidden: Any, attention_mask: Any, pooling: Pooling, torch: Any) -> npt.NDArray[Any]:
    """Token embeddings ``[n, tokens, dim]`` pooled to ``[n, dim * modes]`` (FP32)."""
    hidden = hidden.float()
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    counts = mask.sum(dim=1).clamp(min=1e-9)
    pooled = []
    for mode in pooling.modes:
        if mode == "cls":
            pooled.append(hidden[:, 0])
        elif mode == "max":
            # Padding must never win the maximum.
            pooled.append(hidden.masked_fill(mask == 0, torch.finfo(hidden.dtype).min).max(1)[0])
        elif mode == "lasttoken":
            last = attention_mask.sum(dim=1) - 1
            pooled.append(hidden[torch.arange(hidden.shape[0]), last])
        else:
            total = (hidden * mask).sum(dim=1)
            pooled.append(total / (counts if mode == "mean" else counts.sqrt()))
    embeddings = torch.cat(pooled, dim=-1)
    if pooling.normalize:
        embeddings = torch.nn.functional.normalize(embeddings, p=2, dim=-1)
    array: npt.NDArray[Any] = embeddings.cpu().numpy()
    return array


def reply(
    payload: Any, result: npt.NDArray[Any], model_name: str, per_class: bool
) -> InferResponse | dict[str, Any]:
    """The reply in the request's protocol; v1 per-class scores are KServe's dicts."""
    if per_class and not isinstance(payload, InferRequest):
        return {"predictions": _class_dicts(result.tolist())}
    return tensor_response(payload, {OUTPUT_NAME: result}, model_name)


def _class_dicts(values: Sequence[Any]) -> Any:
    """Each innermost list of per-class scores as ``{"0": score, "1": score, ...}``."""
    if values and isinstance(values[0], list):
        return [_class_dicts(inner) for inner in values]
    return {str(index): score for index, score in enumerate(values)}
