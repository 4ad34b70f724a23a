"""The ``classifier`` detector: a text classifier from a model folder (toxicity, injection).

The folder holds ``model.joblib``: a scikit-learn pipeline over raw strings with
``predict_proba`` and ``classes_`` (a ``TfidfVectorizer`` and a ``LogisticRegression``
is enough). A text is detected when a flagged label's probability reaches ``threshold``
(default 0.5); the detection spans the whole text, ``detection`` is the label and
``detection_type`` the configured one (default "sequence_classification"). Flagged labels
are ``labels`` when given, else every class but the first (for 0/1 classes: 1).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelhost import errors
from modelhost.trust.guardrails.detection import Detection, SyncDetector, param_float

__all__ = ["MODEL_FILE", "ClassifierDetector"]

MODEL_FILE = "model.joblib"


class ClassifierDetector(SyncDetector):
    """One joblib pipeline, loaded at first use and shared by every request."""

    kind = "classifier"

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        super().__init__(params)
        path = self.params.get("path")
        if not isinstance(path, str) or not path:
            raise errors.InvalidInput("A classifier detector needs params.path: its folder.")
        self.path = Path(path)
        if not (self.path / MODEL_FILE).is_file():
            raise errors.InvalidInput(f"No {MODEL_FILE} in the classifier folder {self.path}.")
        self._model: Any = None
        self._lock = threading.Lock()

    def analyze_all(self, contents: list[str], params: Mapping[str, Any]) -> list[list[Detection]]:
        if not contents:
            return []
        model = self._load()
        classes = [str(c) for c in model.classes_]
        flagged = params.get("labels", classes[1:])
        if not isinstance(flagged, list):
            raise errors.InvalidInput("detector_params.labels must be a list of labels.")
        flagged = [str(label) for label in flagged]
        detection_type = str(params.get("detection_type", "sequence_classification"))
        threshold = param_float(params, "threshold", 0.5)
        found: list[list[Detection]] = []
        for text, probabilities in zip(contents, model.predict_proba(contents), strict=True):
            scored = [
                (float(p), label)
                for label, p in zip(classes, probabilities, strict=True)
                if label in flagged
            ]
            best = max(scored, default=None)
            if best is None or best[0] < threshold:
                found.append([])
                continue
            found.append([Detection(0, len(text), text, best[1], detection_type, best[0])])
        return found

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                import joblib

                try:
                    self._model = joblib.load(self.path / MODEL_FILE)
                except Exception as exc:
                    raise errors.ModelLoadError(
                        f"The classifier in {self.path} did not load: {exc}"
                    ) from None
            return self._model
