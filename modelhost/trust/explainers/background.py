"""The reference rows explanations are measured against (``--explainer-background``).

SHAP's values are relative to the model's mean output over these rows, and LIME samples
around the explained row with their spread. Without a file the reference is one row of
zeros: SHAP values then say how each feature moves the output away from the model's output
at the origin, LIME perturbs each feature by one unit, and each row's explanation depends
on that row alone (so it can be cached by its content). Give a sample of training data for
baselines that mean something in the model's domain.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelhost import errors

__all__ = ["MAX_BACKGROUND_ROWS", "Background", "load_background", "zero_background"]

# KernelExplainer's cost grows with every background row; past this the rows are sampled.
MAX_BACKGROUND_ROWS = 100


@dataclass(frozen=True, slots=True)
class Background:
    """Reference rows (2-D, float64), and the feature names a CSV header gave, if any."""

    rows: np.ndarray[Any, Any]
    feature_names: tuple[str, ...] | None = None

    @property
    def width(self) -> int:
        return int(self.rows.shape[1])


def zero_background(width: int) -> Background:
    """The default reference: a single row of zeros."""
    return Background(np.zeros((1, width)))


def load_background(path: str | Path) -> Background:
    """Rows from a ``.npy`` array or a ``.csv`` file (a header of names is optional)."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".npy":
            rows, names = np.load(path, allow_pickle=False), None
        elif path.suffix.lower() == ".csv":
            rows, names = _read_csv(path)
        else:
            raise errors.InvalidInput(f"--explainer-background {path}: give a .npy or a .csv file.")
    except OSError as exc:
        raise errors.InvalidInput(f"--explainer-background {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise errors.InvalidInput(f"--explainer-background {path}: {exc}") from None
    rows = np.asarray(rows, dtype=np.float64)
    if rows.ndim == 1:
        rows = rows.reshape(1, -1)
    if rows.ndim != 2 or rows.shape[0] == 0 or rows.shape[1] == 0:
        raise errors.InvalidInput(
            f"--explainer-background {path}: expected rows of features, got shape "
            f"{list(rows.shape)}."
        )
    if rows.shape[0] > MAX_BACKGROUND_ROWS:
        # A fixed seed: the same file gives the same baseline in every process.
        chosen = np.random.default_rng(0).choice(rows.shape[0], MAX_BACKGROUND_ROWS, False)
        rows = rows[np.sort(chosen)]
    return Background(rows, names)


def _read_csv(path: Path) -> tuple[list[list[float]], tuple[str, ...] | None]:
    with path.open(newline="") as file:
        lines = [line for line in csv.reader(file) if line]
    if not lines:
        raise ValueError("the file is empty")
    names: tuple[str, ...] | None = None
    try:
        [float(cell) for cell in lines[0]]
    except ValueError:
        names = tuple(cell.strip() for cell in lines[0])
        lines = lines[1:]
    return [[float(cell) for cell in line] for line in lines], names
