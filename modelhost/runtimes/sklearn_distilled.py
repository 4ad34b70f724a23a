"""A fitted linear scikit-learn model as numpy arrays: served without importing scikit-learn.

Importing scikit-learn costs ~0.7-1 s of CPU (scipy, pandas), more than the rest of a model
server's start, and its ``predict`` spends ~100 µs validating a one-row input. A linear
model's prediction is one matrix product, so for the estimators whose methods are exactly
scikit-learn's linear ones (``LinearClassifierMixin``'s ``decision_function`` and ``predict``,
``LogisticRegression.predict_proba``, ``LinearModel``'s ``predict``) the runtime keeps a
:class:`Distilled` form that runs the same numpy expressions on the same array:

- :func:`distil` makes it from a loaded estimator, and keeps it only if its answers to probe
  inputs are bit-identical to the estimator's (same values, same dtype);
- :func:`store` writes it to a cache folder as an ``.npz`` (no pickle: loading it runs no
  code), keyed by the model file's SHA-256 and the installed scikit-learn and numpy, and
  :func:`cached` reads it back, so a later start serves without importing scikit-learn.

``predict`` and ``predict_proba`` answer ``None`` for any input whose validation scikit-learn
would do differently or fail (not a 2-D float or integer ndarray, the wrong width, empty,
non-finite values): the runtime then asks the estimator itself, which gives scikit-learn's
own answer or error.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "BINARY_EXPIT",
    "SOFTMAX",
    "Distilled",
    "agrees",
    "cache_key",
    "cached",
    "distil",
    "store",
]

# Bumped when the stored layout or the arithmetic below changes: older files are not read.
FORMAT = 1
# The dtypes scikit-learn's check_array("numeric") passes through unchanged, so that the
# product below sees the very array scikit-learn's would.
_PASSED_THROUGH = frozenset(np.dtype(t) for t in ("float64", "float32", "int64", "int32"))
# LinearModel.predict and the overrides that only call it (no identity to check those by:
# the probes in agrees() do).
_LINEAR_PREDICTS = frozenset(
    {"LinearModel.predict", "MultiOutputLinearModel.predict", "Ridge.predict"}
)
# Proba kinds: LogisticRegression's softmax (more than two classes) or its binary expit.
SOFTMAX, BINARY_EXPIT = "softmax", "binary-expit"


class Distilled:
    """A linear model's arrays and its predict/predict_proba (see the module's docstring)."""

    def __init__(
        self,
        type_name: str,
        coef: np.ndarray,
        intercept: Any,
        classes: np.ndarray | None,
        proba: str,
        has_proba: bool,
        n_features: int,
    ) -> None:
        self.type_name = type_name
        self.coef = coef
        # What scikit-learn multiplies by: coef_.T for a 2-D coef_, coef_ itself when 1-D.
        self._coef_t = coef.T if coef.ndim == 2 else coef
        self.intercept = intercept
        self.classes_ = classes
        self.proba = proba
        # Whether the estimator itself has predict_proba (whether or not it is distilled).
        self.has_proba = has_proba
        self.n_features_in_ = n_features

    def _valid(self, x: Any) -> bool:
        return (
            type(x) is np.ndarray
            and x.ndim == 2
            and x.shape[1] == self.n_features_in_
            and x.shape[0] > 0
            and x.dtype in _PASSED_THROUGH
            and (x.dtype.kind == "i" or bool(np.isfinite(x).all()))
        )

    def _scores(self, x: np.ndarray) -> np.ndarray:
        scores: np.ndarray = x @ self._coef_t + self.intercept
        if self.classes_ is not None and scores.ndim > 1 and scores.shape[1] == 1:
            scores = scores.reshape((-1,))
        return scores

    def predict(self, x: Any) -> np.ndarray | None:
        """The estimator's ``predict(x)``, or None to ask the estimator."""
        if not self._valid(x):
            return None
        scores = self._scores(x)
        if self.classes_ is None:
            return scores
        indices = (scores > 0).astype(np.intp) if scores.ndim == 1 else np.argmax(scores, axis=1)
        result: np.ndarray = self.classes_.take(indices, axis=0)
        return result

    def predict_proba(self, x: Any) -> np.ndarray | None:
        """The estimator's ``predict_proba(x)``, or None to ask the estimator."""
        if not self.proba or not self._valid(x):
            return None
        scores = self._scores(x)
        if self.proba == SOFTMAX:
            scores -= np.max(scores, axis=1).reshape((-1, 1))
            np.exp(scores, out=scores)
            scores /= np.sum(scores, axis=1).reshape((-1, 1))
            return scores
        # Only when asked: scipy.special costs ~0.1 s to import.
        from scipy.special import expit

        prob = expit(scores, out=scores)
        return np.stack([1 - prob, prob], axis=1)


def distil(estimator: Any) -> Distilled | None:
    """The distilled form of ``estimator``, or None where it is not one of the linear
    models above or its answers to probe inputs differ from the estimator's in any bit."""
    try:
        form = _form_of(estimator)
    except Exception:  # an estimator unlike the ones this knows, however it differs
        return None
    return form if form is not None and agrees(form, estimator) else None


def agrees(form: Distilled, estimator: Any, seed: int = 0) -> bool:
    """Whether ``form`` answers probe inputs (float64, float32 in Fortran order, integers)
    exactly as ``estimator`` does, bit for bit. The methods were matched by identity before
    (``_form_of``): these catch an estimator whose attributes say something else than the
    arithmetic assumes. Few and small, as each costs a validated scikit-learn call (~0.1 ms)
    at every first load of a model file."""
    rng = np.random.default_rng(seed)
    n = form.n_features_in_
    probes: list[np.ndarray] = [
        rng.standard_normal((3, n)) * 10,
        np.asfortranarray(rng.standard_normal((3, n)).astype(np.float32)),
        rng.integers(-5, 5, (2, n)),
    ]
    methods = ["predict", "predict_proba"] if form.proba else ["predict"]
    try:
        for probe in probes:
            for method in methods:
                ours = getattr(form, method)(probe.copy(order="K"))
                theirs = getattr(estimator, method)(probe.copy(order="K"))
                if not _same(ours, theirs):
                    return False
    except Exception:
        return False
    return True


def _same(ours: np.ndarray | None, theirs: Any) -> bool:
    return (
        ours is not None
        and isinstance(theirs, np.ndarray)
        and ours.dtype == theirs.dtype
        and ours.shape == theirs.shape
        and ours.tobytes() == theirs.tobytes()
    )


def _form_of(estimator: Any) -> Distilled | None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.linear_model._base import LinearClassifierMixin, LinearModel

    kind = type(estimator)
    coef = getattr(estimator, "coef_", None)
    intercept = getattr(estimator, "intercept_", None)
    n_features = getattr(estimator, "n_features_in_", None)
    if not isinstance(coef, np.ndarray) or coef.dtype.kind != "f" or n_features is None:
        return None
    if getattr(estimator, "feature_names_in_", None) is not None:
        return None  # scikit-learn checks a DataFrame's column names: leave it to it
    has_proba = hasattr(estimator, "predict_proba")
    if (
        getattr(kind, "decision_function", None) is LinearClassifierMixin.decision_function
        and kind.predict is LinearClassifierMixin.predict
    ):
        classes = np.asarray(estimator.classes_)
        proba = ""
        if getattr(kind, "predict_proba", None) is LogisticRegression.predict_proba:
            proba = BINARY_EXPIT if classes.size <= 2 else SOFTMAX
    elif (
        getattr(kind, "_decision_function", None) is LinearModel._decision_function
        and kind.predict.__qualname__ in _LINEAR_PREDICTS
    ):
        classes, proba = None, ""
    else:
        return None
    return Distilled(kind.__name__, coef, intercept, classes, proba, has_proba, int(n_features))


# -- the cache -------------------------------------------------------------------------


def cache_key(model_file: Path) -> str | None:
    """What names a model file's distilled form: its bytes and the installed scikit-learn
    and numpy (found without importing scikit-learn); None where scikit-learn is not there."""
    environment = _environment()
    if environment is None:
        return None
    digest = hashlib.sha256(environment)
    with model_file.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def _environment() -> bytes | None:
    """This format's, numpy's and scikit-learn's versions, as bytes; read once a process."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        return None
    with open(spec.origin, "rb") as init:  # holds scikit-learn's version
        sklearn = hashlib.sha256(init.read()).hexdigest()
    return f"modelhost-distilled-{FORMAT} numpy-{np.__version__} sklearn-{sklearn}\n".encode()


def store(form: Distilled, key: str, folder: Path) -> Path | None:
    """Write ``form`` to ``folder`` under ``key`` (atomically); None where it cannot be
    stored without pickling (labels of object dtype)."""
    arrays: dict[str, Any] = {"coef": form.coef, "intercept": np.asarray(form.intercept)}
    if form.classes_ is not None:
        if form.classes_.dtype.hasobject:
            return None
        arrays["classes"] = form.classes_
    meta = {
        "type_name": form.type_name,
        "proba": form.proba,
        "has_proba": form.has_proba,
        "n_features": form.n_features_in_,
        # X @ coef_ + intercept_ keeps its dtype by the intercept's kind (NEP 50: a Python
        # float adapts to the array, a numpy scalar does not): kept as it was.
        "intercept_kind": _kind_of(form.intercept),
    }
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{key}.npz"
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, meta=np.asarray(json.dumps(meta)), **arrays)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return target


def _kind_of(intercept: Any) -> str:
    if isinstance(intercept, np.ndarray):
        return "array"
    return "scalar" if isinstance(intercept, np.generic) else "python"


def _restore(stored: np.ndarray, kind: str) -> Any:
    if kind == "array":
        return stored
    if kind == "scalar":
        return stored[()]
    return float(stored.item())


def cached(key: str, folder: Path) -> Distilled | None:
    """The form stored under ``key`` in ``folder``, or None (absent, unreadable, or not
    in this format)."""
    path = folder / f"{key}.npz"
    try:
        # Opened here: np.load leaves its own handle open when the file is no zip.
        with path.open("rb") as file, np.load(file, allow_pickle=False) as stored:
            meta = json.loads(str(stored["meta"]))
            intercept = stored["intercept"]
            classes = stored["classes"] if "classes" in stored.files else None
            return Distilled(
                str(meta["type_name"]),
                stored["coef"],
                _restore(intercept, str(meta["intercept_kind"])),
                classes,
                str(meta["proba"]),
                bool(meta["has_proba"]),
                int(meta["n_features"]),
            )
    except Exception:  # a damaged or foreign file (zipfile, numpy, JSON errors): not read
        return None
