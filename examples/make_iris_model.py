"""Train a small iris classifier and save it as ``model.joblib``, for trying ``modelhost serve``.

Usage: python examples/make_iris_model.py [DIRECTORY]   (default: ./models/iris)
"""

from __future__ import annotations

import sys
from pathlib import Path

import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression


def main(argv: list[str]) -> int:
    folder = Path(argv[1] if len(argv) > 1 else "models/iris")
    folder.mkdir(parents=True, exist_ok=True)
    x, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=1000).fit(x, y)
    path = folder / "model.joblib"
    joblib.dump(model, path)
    print(f"saved {path} (accuracy on the training set: {model.score(x, y):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
