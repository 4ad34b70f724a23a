"""The scikit-learn runtime: a joblib or pickle estimator, served with predict or predict_proba."""

from __future__ import annotations

import logging
import pickle
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from modelhost import errors
from modelhost.model.payload import get_predict_response
from modelhost.protocol import datatypes
from modelhost.protocol.infer_type import InferResponse
from modelhost.runtimes._common import (
    PREDICT_PROBA,
    asks_for_proba,
    names_proba_output,
    single_model_file,
)
from modelhost.runtimes._framework import FrameworkModel
from modelhost.runtimes.sklearn_distilled import Distilled, agrees, cache_key, cached, distil, store

__all__ = ["PATTERNS", "PREDICT_PROBA", "SKLearnModel"]

PATTERNS = ("*.joblib", "*.pkl", "*.pickle")

logger = logging.getLogger(__name__)
# Fast-start folders a store failed in, this process: said once in the log.
_UNWRITABLE: set[Path] = set()


class SKLearnModel(FrameworkModel):
    """A scikit-learn estimator (or pipeline) saved with joblib or pickle.

    ``predict`` calls the estimator's ``predict``, or ``predict_proba`` when the model was
    built with ``predict_proba=True`` or when the request asks for it:

    - v1: a top-level key next to the instances,
      ``{"instances": [[6.8, 2.8, 4.8, 1.4]], "predict_proba": true}``;
    - v2: the request parameter ``"parameters": {"predict_proba": true}``, or (as in
      MLServer) a requested output named ``predict_proba``, which then names the output.

    A linear model (``LogisticRegression``, ``LinearRegression``, ``SGDClassifier``, ...) is
    also kept as its :class:`~modelhost.runtimes.sklearn_distilled.Distilled` form, which
    answers bit for bit as the estimator does without scikit-learn's per-call validation
    (``distil=False``: not). With ``fast_start_dir`` that form is cached there, keyed by the
    model file's bytes: a later load reads it and serves without unpickling the file or
    importing scikit-learn, which happens only if a request needs the estimator itself (an
    input the distilled form leaves to scikit-learn, an explainer).

    Loading unpickles the file, which runs code from it: serve only model files you trust.
    """

    platform_name = "sklearn"

    def __init__(
        self,
        name: str,
        model_dir: str | Path,
        predict_proba: bool = False,
        distil: bool = True,
        fast_start_dir: str | Path | None = None,
    ) -> None:
        super().__init__(name, model_dir)
        self.predict_proba = predict_proba
        self.distil = distil
        self.fast_start_dir = Path(fast_start_dir) if fast_start_dir else None
        self._distilled: Distilled | None = None
        self._model_file: Path | None = None
        self._unpickling = threading.Lock()

    def load(self) -> bool:
        path = single_model_file(self.model_dir, PATTERNS, "sklearn")
        self._model_file = path
        key = self._cache_key(path)
        form = cached(key, self.fast_start_dir) if key and self.fast_start_dir else None
        if form is not None:
            self._check_proba(form.has_proba, form.type_name, path)
            self._estimator, self._distilled = None, form
        else:
            model = self._unpickle(path)
            self._estimator = model
            self._distilled = distil(model) if self.distil else None
            if self._distilled is not None and key:
                self._keep(self._distilled, key)
        self.ready = True
        return self.ready

    def _unpickle(self, path: Path) -> Any:
        model = _unpickle(path)
        if not callable(getattr(model, "predict", None)):
            raise errors.ModelLoadError(f"{path} holds a {type(model).__name__}, not a model.")
        self._check_proba(hasattr(model, PREDICT_PROBA), type(model).__name__, path)
        return model

    def _check_proba(self, has_proba: bool, type_name: str, path: Path) -> None:
        if self.predict_proba and not has_proba:
            raise errors.ModelLoadError(
                f"predict_proba was asked for, but {type_name} in {path} has none."
            )

    def _cache_key(self, path: Path) -> str | None:
        if not (self.distil and self.fast_start_dir):
            return None
        try:
            return cache_key(path)
        except OSError:
            return None

    def _keep(self, form: Distilled, key: str) -> None:
        """Store ``form`` for later starts, and keep the file only if what reads back
        answers as ``form`` (checked against the estimator already) does."""
        assert self.fast_start_dir is not None
        try:
            if store(form, key, self.fast_start_dir) is None:
                return
            again = cached(key, self.fast_start_dir)
            if again is None or not agrees(again, form):
                (self.fast_start_dir / f"{key}.npz").unlink(missing_ok=True)
        except OSError as exc:  # a read-only or full cache: the model serves all the same
            if self.fast_start_dir not in _UNWRITABLE:  # once a folder, not once a model
                _UNWRITABLE.add(self.fast_start_dir)
                logger.info("Not keeping distilled forms in %s: %s", self.fast_start_dir, exc)

    @property
    def estimator(self) -> Any:
        """The scikit-learn estimator, unpickled now if the model was loaded from its
        distilled form."""
        if self._estimator is None and self._distilled is not None:
            with self._unpickling:
                path = self._model_file
                if self._estimator is None and self._distilled is not None and path:
                    self._estimator = self._unpickle(path)
        return self._estimator

    def unload(self) -> None:
        self._distilled = None
        super().unload()

    def _serving(self) -> Any:
        return self._distilled if self._distilled is not None else self._estimator

    def _compute(self, estimator: Any, x: Any, payload: Any) -> Any:
        proba = self.predict_proba or asks_for_proba(payload)
        if isinstance(estimator, Distilled):
            if proba and not estimator.has_proba:
                raise self._no_proba(estimator.type_name)
            result = estimator.predict_proba(x) if proba else estimator.predict(x)
            if result is not None:
                return result
            # An input scikit-learn validates (or refuses) its own way: its answer.
            estimator = self.estimator
            if estimator is None:
                raise errors.ModelNotReady(self.name)
        if proba:
            if not hasattr(estimator, PREDICT_PROBA):
                raise self._no_proba(type(estimator).__name__)
            return estimator.predict_proba(x)
        return estimator.predict(x)

    def _no_proba(self, type_name: str) -> errors.InvalidInput:
        return errors.InvalidInput(
            f"Model {self.name} ({type_name}) does not support predict_proba."
        )

    def _respond(self, payload: Any, result: Any) -> Any:
        response = get_predict_response(payload, result, self.name)
        if isinstance(response, InferResponse) and names_proba_output(payload):
            response.outputs[0].name = PREDICT_PROBA
        return response

    def get_input_types(self) -> list[dict[str, Any]]:
        n_features = getattr(self._serving(), "n_features_in_", None)
        if n_features is None:
            return []
        # scikit-learn computes in float64 whatever it is sent.
        return [{"name": "input-0", "datatype": "FP64", "shape": [-1, int(n_features)]}]

    def get_output_types(self) -> list[dict[str, Any]]:
        classes = getattr(self._serving(), "classes_", None)
        if classes is None:
            return []
        if self.predict_proba:
            return [{"name": "output-0", "datatype": "FP64", "shape": [-1, len(classes)]}]
        datatype = datatypes.datatype_of(np.asarray(classes))
        return [{"name": "output-0", "datatype": datatype, "shape": [-1]}]


def _unpickle(path: Path) -> Any:
    reader: Callable[[Path], Any]
    try:
        import joblib
    except ImportError:
        if path.suffix.lower() == ".joblib":
            raise errors.ModelLoadError(
                f"Loading {path} needs joblib: pip install 'modelhost[sklearn]'."
            ) from None
        reader = _pickle_load
    else:
        # joblib reads its own format and plain pickles alike, whatever the extension.
        reader = joblib.load
    try:
        return reader(path)
    except Exception as exc:
        raise _load_error(path, exc) from exc


def _pickle_load(path: Path) -> Any:
    with path.open("rb") as file:
        return pickle.load(file)


def _load_error(path: Path, exc: BaseException) -> errors.ModelLoadError:
    if isinstance(exc, ModuleNotFoundError):
        return errors.ModelLoadError(
            f"Cannot load {path}: it needs the module {exc.name!r}; "
            "pip install 'modelhost[sklearn]' or the package that provides it."
        )
    return errors.ModelLoadError(f"Cannot load {path}: {type(exc).__name__}: {exc}")
