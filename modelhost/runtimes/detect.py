"""Which runtime serves a model folder: a registry of runtimes and detection by file name."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelhost import errors
from modelhost.model.model import Model
from modelhost.runtimes import lightgbm, model_settings, onnx, pytorch, sklearn, xgboost
from modelhost.runtimes._common import listing, matches, truthy
from modelhost.runtimes.catboost import PATTERNS as CATBOOST_PATTERNS
from modelhost.runtimes.catboost import CatBoostModel
from modelhost.runtimes.custom import build_custom_model
from modelhost.runtimes.huggingface import WEIGHT_PATTERNS as HF_WEIGHTS
from modelhost.runtimes.huggingface import HuggingFaceModel
from modelhost.runtimes.huggingface import claim as hf_claim
from modelhost.runtimes.llm import runtime as llm
from modelhost.runtimes.mlflow import MLflowModel
from modelhost.runtimes.mlflow import claim as mlflow_claim

__all__ = [
    "RUNTIMES",
    "Runtime",
    "build_model",
    "detect_runtime",
    "get_runtime",
    "matching_runtimes",
]

Factory = Callable[[str, Path, Mapping[str, Any]], Model]
Claim = Callable[[list[Path]], list[str]]


@dataclass(frozen=True)
class Runtime:
    """A runtime: its name, the model files it serves, and how to build its ``Model``.

    ``patterns`` are file-name globs that identify the runtime's model files. A folder
    format (an MLflow ``MLmodel``, a Hugging Face ``config.json`` with weights) gives a
    ``claim`` that returns the names of the files that identify it (empty if none) and a
    higher ``priority``: when runtimes of several priorities match, the highest wins, so an
    MLflow folder holding a ``model.pkl`` is MLflow's, not scikit-learn's. ``aliases`` are
    other names users know it by (KServe's ``modelFormat`` names).
    """

    name: str
    patterns: tuple[str, ...]
    factory: Factory
    aliases: tuple[str, ...] = ()
    priority: int = 0
    claim: Claim | None = None

    def matching(self, files: list[Path]) -> list[str]:
        if self.claim is not None:
            return self.claim(files)
        return [p.name for p in files if matches(p, self.patterns)]


def _sklearn(name: str, path: Path, options: Mapping[str, Any]) -> Model:
    return sklearn.SKLearnModel(
        name,
        path,
        predict_proba=truthy(options.get("predict_proba")),
        distil=truthy(options.get("distil", True)),
        fast_start_dir=options.get("fast_start_dir") or None,
    )


def _xgboost(name: str, path: Path, options: Mapping[str, Any]) -> Model:
    return xgboost.XGBoostModel(name, path, nthread=int(options.get("nthread") or 1))


def _lightgbm(name: str, path: Path, options: Mapping[str, Any]) -> Model:
    return lightgbm.LightGBMModel(name, path, nthread=int(options.get("nthread") or 1))


def _onnx(name: str, path: Path, options: Mapping[str, Any]) -> Model:
    return onnx.ONNXModel(name, path, nthread=int(options.get("nthread") or 1))


def _pytorch(name: str, path: Path, options: Mapping[str, Any]) -> Model:
    device = str(options.get("device") or "cpu")
    return pytorch.PyTorchModel(name, path, device=device, nthread=int(options.get("nthread") or 1))


def _huggingface(name: str, path: Path, options: Mapping[str, Any]) -> Model:
    # KServe's Hugging Face server generates text too (--task text_generation, or a causal
    # LM's folder): the llm runtime does that here.
    task = options.get("task")
    if llm.is_generation_task(task) or (not task and path.is_dir() and llm.is_causal_lm(path)):
        return llm.build_llm_model(name, path, options)
    return HuggingFaceModel.from_options(name, path, options)


def _llm(name: str, path: Path, options: Mapping[str, Any]) -> Model:
    return llm.build_llm_model(name, path, options)


def _vllm(name: str, path: Path, options: Mapping[str, Any]) -> Model:
    return llm.build_llm_model(name, path, options, backend="vllm")


def _mlflow(name: str, path: Path, options: Mapping[str, Any]) -> Model:
    return MLflowModel(name, path)


def _catboost(name: str, path: Path, options: Mapping[str, Any]) -> Model:
    return CatBoostModel(
        name,
        path,
        predict_proba=truthy(options.get("predict_proba")),
        nthread=int(options.get("nthread") or 1),
    )


def _custom(name: str, path: Path, options: Mapping[str, Any]) -> Model:
    spec = options.get("model_class")
    if not spec:
        raise errors.ModelLoadError("The custom runtime needs --model-class pkg.module:Class.")
    return build_custom_model(name, path, str(spec), options)


_REGISTRY: dict[str, Runtime] = {
    runtime.name: runtime
    for runtime in (
        Runtime("sklearn", sklearn.PATTERNS, _sklearn),
        Runtime("xgboost", xgboost.PATTERNS, _xgboost),
        Runtime("lightgbm", lightgbm.PATTERNS, _lightgbm),
        Runtime("onnx", onnx.PATTERNS, _onnx, aliases=("onnxruntime",)),
        Runtime("pytorch", pytorch.PATTERNS, _pytorch, aliases=("torch", "torchscript")),
        Runtime(
            "huggingface",
            HF_WEIGHTS,
            _huggingface,
            aliases=("hf", "transformers"),
            priority=1,
            claim=hf_claim,
        ),
        Runtime("mlflow", (), _mlflow, priority=1, claim=mlflow_claim),
        Runtime("catboost", CATBOOST_PATTERNS, _catboost),
        Runtime("custom", (), _custom),
        # A causal LM's folder is a Hugging Face folder too: the llm runtime outranks it.
        Runtime("llm", HF_WEIGHTS, _llm, priority=2, claim=llm.claim),
        # Never detected: --runtime vllm asks for the vLLM backend by name.
        Runtime("vllm", (), _vllm),
    )
}

RUNTIMES: tuple[str, ...] = tuple(_REGISTRY)
_ALIASES = {alias: runtime for runtime in _REGISTRY.values() for alias in runtime.aliases}


def get_runtime(name: str) -> Runtime:
    key = name.strip().lower()
    runtime = _REGISTRY.get(key) or _ALIASES.get(key)
    if runtime is None:
        raise errors.ModelLoadError(
            f"Unknown runtime {name!r}: expected one of {', '.join(RUNTIMES)}."
        )
    return runtime


def matching_runtimes(files: list[Path]) -> dict[str, list[str]]:
    """Runtime name -> the files that identify it, for the highest priority that matches."""
    found: dict[str, list[str]] = {}
    best = 0
    for runtime in _REGISTRY.values():
        names = runtime.matching(files)
        if names:
            if found and runtime.priority < best:
                continue
            if runtime.priority > best:
                found, best = {}, runtime.priority
            found[runtime.name] = names
    return found


def detect_runtime(model_dir: str | Path) -> str:
    """The runtime whose file patterns the files in ``model_dir`` match; loads nothing.

    Raises :class:`ModelLoadError` when none or several runtimes match.
    """
    path = Path(model_dir).expanduser()
    files = listing(path)
    found = matching_runtimes(files)
    if len(found) == 1:
        return next(iter(found))
    choices = f"pass --runtime ({', '.join(RUNTIMES)})"
    if not found:
        seen = ", ".join(p.name for p in files) or "the directory is empty"
        raise errors.ModelLoadError(
            f"No model file found in {path} ({seen}); {choices} or --model-class."
        )
    detail = "; ".join(f"{name}: {', '.join(names)}" for name, names in found.items())
    raise errors.ModelLoadError(
        f"Several runtimes match the files in {path} ({detail}); {choices}."
    )


def build_model(
    model_dir: str | Path,
    name: str,
    runtime: str | None = None,
    model_class: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> Model:
    """The (unloaded) model serving ``model_dir``, a folder or a single model file.

    ``model_class`` (``"pkg.module:Class"``) selects the custom runtime; otherwise
    ``runtime`` names one, or it is detected from the files. ``options`` carries runtime
    settings (``predict_proba`` for sklearn, ``nthread`` for xgboost and lightgbm, any
    ``__init__`` parameter of a custom class); a runtime ignores the ones it has no use for.
    """
    path = Path(model_dir).expanduser()
    settings = dict(options or {})
    if model_class:
        if runtime and get_runtime(runtime).name != "custom":
            raise errors.ModelLoadError(
                f"--model-class {model_class} serves a custom model, not runtime {runtime!r}."
            )
        settings["model_class"] = model_class
        model = _custom(name, path, settings)
        return _with_settings_file(model, path) if path.exists() else model
    if not path.exists():
        raise errors.ModelLoadError(f"Model path {path} does not exist.")
    chosen = get_runtime(runtime) if runtime else get_runtime(detect_runtime(path))
    return _with_settings_file(chosen.factory(name, path, settings), path)


def _with_settings_file(model: Model, path: Path) -> Model:
    batching = model_settings.read_batching(path)
    if batching is not None:
        model.batching = batching
    return model
