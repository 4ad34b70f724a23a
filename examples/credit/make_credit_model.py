"""Train the credit example: a scikit-learn classifier of loan approvals, biased on purpose.

Writes ``<folder>/model.joblib`` (age, gender, income → approved) and ``background.npy``
(rows the explainers compare against). The training labels favour gender 1, so the
fairness metrics in the README have something to find.

    python examples/credit/make_credit_model.py models/credit
"""

from __future__ import annotations

import sys
from pathlib import Path

import joblib
import numpy as np
from sklearn.linear_model import LogisticRegression


def applicants(n: int, seed: int, income_shift: float = 0.0) -> np.ndarray:
    """``n`` rows of (age, gender 0/1, income in thousands)."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 80, n).astype(float)
    gender = rng.integers(0, 2, n).astype(float)
    income = np.round(rng.normal(50 + income_shift, 15, n), 1)
    return np.column_stack([age, gender, income])


def main(folder: str) -> None:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    x = applicants(2000, seed=1)
    rng = np.random.default_rng(2)
    score = 0.04 * (x[:, 2] - 50) + 1.2 * x[:, 1] - 0.5 + rng.normal(0, 0.5, len(x))
    model = LogisticRegression(max_iter=1000).fit(x, (score > 0).astype(int))
    joblib.dump(model, out / "model.joblib")
    np.save(out.parent / "credit-background.npy", x[:100])
    print(f"wrote {out / 'model.joblib'}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "models/credit")
