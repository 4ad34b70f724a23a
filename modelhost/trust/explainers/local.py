"""TrustyAI's local explainers: ``POST /explainers/local/shap`` and ``/explainers/local/lime``.

The body names a stored prediction and the model that made it::

    {"predictionId": "<the inference's id>",
     "config": {"model": {"target": "host:port", "name": "<model id>", "version": "v1"},
                "explainer": {"n_samples": 100}}}

The prediction's inputs come from the store (its row of ``config.model.name``); the model is
asked again through the :class:`ModelCaller` for the samples the explainer makes (these
calls are not logged, so they never join the stored data). The background is the model's
last 100 stored rows, as TrustyAI's. SHAP here is always Kernel SHAP (the model is remote):
``n_samples`` coalitions (TrustyAI's default, 100), ``link`` ``identity`` or ``logit``; LIME
draws ``n_samples`` samples (default 300). The answer is TrustyAI's::

    {"timestamp": "...", "type": "explanation", "explainer": "shap",
     "predictionId": "...", "modelId": "...",
     "saliencies": {"<output>": [{"name": "<feature>", "score": 0.12, "confidence": 0.0}]},
     "baselines": {"<output>": 0.3}}        # SHAP's expected value; LIME: the intercept

Unknown prediction or model: 404; a body that is not as above: 400.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import re
from typing import Any

import numpy as np

from modelhost import errors
from modelhost.trust.explainers.cache import ExplanationCache, row_digest
from modelhost.trust.explainers.caller import ModelCaller, ModelTarget
from modelhost.trust.explainers.lime_method import LimeMethod
from modelhost.trust.explainers.shap_method import ShapMethod
from modelhost.trust.explainers.target import ExplainedFunction, Rows
from modelhost.trust.store import ModelSchema, TrustStore

__all__ = ["LOCAL_EXPLAINERS", "LocalExplainers", "UnknownPrediction"]

LOCAL_EXPLAINERS = ("shap", "lime")
# TrustyAI's defaults: background rows, SHAP coalitions, LIME samples.
BACKGROUND_ROWS = 100
_DEFAULT_SAMPLES = {"shap": 100, "lime": 300}
_MAX_SAMPLES = 100_000
_LINKS = {"identity": "identity", "logit": "logit"}
_TENSOR_COLUMN = re.compile(r"^(?P<tensor>.+)-(?P<index>\d+)$")


class UnknownPrediction(errors.ModelhostError):
    """No stored row of the model has this prediction id."""

    status_code = 404
    grpc_status = "NOT_FOUND"


class LocalExplainers:
    """Explains stored predictions; one per trust app (its cache is shared by requests)."""

    def __init__(
        self, store: TrustStore, caller: ModelCaller | None, cache_size: int = 256
    ) -> None:
        self._store = store
        # Set later where the models are known only once the server runs (``serve --trust``).
        self.caller = caller
        self.cache = ExplanationCache(cache_size)

    async def explain(self, method: str, body: Any) -> dict[str, Any]:
        """The answer to ``POST /explainers/local/<method>`` with ``body``."""
        caller = self.caller
        if caller is None:
            raise errors.Unsupported("This trust service has no way to call models.")
        prediction_id, target, n_samples, link = _parse(method, body)
        row, background, schema = await asyncio.to_thread(self._read, target.name, prediction_id)
        target = _with_input_name(target, schema)
        key = (
            method,
            target,
            prediction_id,
            row_digest(row),
            hashlib.blake2b(background.tobytes(), digest_size=16).digest(),
            n_samples,
            link,
        )
        explanation: dict[str, Any] | None = self.cache.get(key)
        if explanation is None:
            function = _remote_function(caller, target, asyncio.get_running_loop())
            names = tuple(c.visible_name for c in schema.inputs)
            explanation = await asyncio.to_thread(
                _explain_row, method, function, row, background, names, n_samples, link
            )
            self.cache.put(key, explanation)
        outputs = [c.visible_name for c in schema.outputs]
        return _trustyai_answer(method, prediction_id, target.name, explanation, outputs)

    def _read(self, model_id: str, prediction_id: str) -> tuple[Rows, Rows, ModelSchema]:
        schema = self._store.schema(model_id)
        stored = self._store.row(model_id, prediction_id)
        if stored is None:
            raise UnknownPrediction(
                f"No prediction with id {prediction_id!r} is stored for model {model_id!r}."
            )
        inputs = schema.inputs
        if not inputs or any(c.dtype == "string" for c in inputs):
            raise errors.InvalidInput(
                f"Model {model_id!r} has non-numeric inputs; only numbers can be explained."
            )
        row = np.asarray(stored[: len(inputs)], dtype=np.float64)
        names = [c.name for c in inputs]
        columns = self._store.read(model_id, names, last=BACKGROUND_ROWS)
        background = np.column_stack([columns[n].astype(np.float64) for n in names])
        return row, background, schema


def _parse(method: str, body: Any) -> tuple[str, ModelTarget, int, str]:
    if not isinstance(body, dict):
        raise errors.InvalidInput("The body must be a JSON object.")
    prediction_id = body.get("predictionId")
    if not isinstance(prediction_id, str) or not prediction_id:
        raise errors.InvalidInput("predictionId is required: a non-empty string.")
    config = body.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise errors.InvalidInput("config.model is required: {target, name, version}.")
    model = config["model"]
    name, target, version = model.get("name"), model.get("target", ""), model.get("version")
    if not isinstance(name, str) or not name:
        raise errors.InvalidInput("config.model.name is required: the model's id.")
    if not isinstance(target, str) or not (version is None or isinstance(version, str)):
        raise errors.InvalidInput("config.model.target and .version must be strings.")
    settings = config.get("explainer") or {}
    if not isinstance(settings, dict):
        raise errors.InvalidInput("config.explainer must be an object.")
    n_samples = settings.get("n_samples", _DEFAULT_SAMPLES[method])
    if (
        not isinstance(n_samples, int)
        or isinstance(n_samples, bool)
        or not 0 < n_samples <= _MAX_SAMPLES
    ):
        raise errors.InvalidInput(
            f"config.explainer.n_samples must be a whole number from 1 to {_MAX_SAMPLES}."
        )
    link = str(settings.get("link", "identity")).lower()
    if method == "shap" and link not in _LINKS:
        raise errors.InvalidInput("config.explainer.link must be identity or logit.")
    return prediction_id, ModelTarget(name, target, version), n_samples, link


def _with_input_name(target: ModelTarget, schema: ModelSchema) -> ModelTarget:
    """The v2 tensor the inputs were logged from: ``x-0``, ``x-1``, ... came from ``x``."""
    names = [c.name for c in schema.inputs]
    if len(names) == 1:
        return ModelTarget(target.name, target.target, target.version, names[0])
    found = [_TENSOR_COLUMN.match(n) for n in names]
    tensors = {m["tensor"] for m in found if m is not None}
    if len(tensors) == 1 and all(m is not None for m in found):
        return ModelTarget(target.name, target.target, target.version, tensors.pop())
    return target


def _remote_function(
    caller: ModelCaller, target: ModelTarget, loop: asyncio.AbstractEventLoop
) -> ExplainedFunction:
    """The model, called from the explainer's thread through the loop's caller."""

    def predict(rows: Rows) -> Rows:
        future = asyncio.run_coroutine_threadsafe(caller(target, rows), loop)
        outputs = np.asarray(future.result(), dtype=np.float64)
        if outputs.ndim == 2 and outputs.shape[1] == 1:
            outputs = outputs[:, 0]
        return outputs

    return ExplainedFunction(predict, "predict")


def _explain_row(
    method: str,
    function: ExplainedFunction,
    row: Rows,
    background: Rows,
    names: tuple[str, ...],
    n_samples: int,
    link: str,
) -> dict[str, Any]:
    rows = row.reshape(1, -1)
    if method == "shap":
        shap = ShapMethod(function, background, names, n_samples=n_samples, link=_LINKS[link])
        return shap.explain(rows)[0]
    return LimeMethod(function, background, names, n_samples=n_samples).explain(rows)[0]


def _trustyai_answer(
    method: str,
    prediction_id: str,
    model_id: str,
    explanation: dict[str, Any],
    output_columns: list[str],
) -> dict[str, Any]:
    scores = np.asarray(
        explanation["shap_values" if method == "shap" else "feature_weights"], dtype=np.float64
    )
    baselines = np.atleast_1d(
        np.asarray(explanation["expected_value" if method == "shap" else "intercept"])
    )
    per_output = scores.reshape(-1, scores.shape[-1])
    if len(output_columns) == per_output.shape[0]:
        outputs = output_columns
    else:
        outputs = [f"output-{j}" for j in range(per_output.shape[0])]
    names = explanation["feature_names"]
    return {
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "type": "explanation",
        "explainer": method,
        "predictionId": prediction_id,
        "modelId": model_id,
        "saliencies": {
            output: [
                {"name": name, "score": float(score), "confidence": 0.0}
                for name, score in zip(names, per_output[j], strict=True)
            ]
            for j, output in enumerate(outputs)
        },
        "baselines": {output: float(baselines[j]) for j, output in enumerate(outputs)},
    }
