"""Shared helpers of the guardrails tests: a tiny toxicity classifier saved in a folder."""

from __future__ import annotations

from pathlib import Path

import joblib
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

TOXIC = [
    "you are an idiot",
    "I hate you, idiot",
    "shut up you stupid fool",
    "you stupid idiot, go away",
    "what a stupid hateful fool",
    "idiot fool stupid",
]
KIND = [
    "thank you for your help",
    "have a lovely day",
    "what a nice answer, thanks",
    "please tell me about the weather",
    "I like this friendly reply",
    "good morning, how are you",
]


def train_toxicity(folder: Path) -> Path:
    """A TF-IDF + logistic regression toxicity classifier (classes 0/1) saved in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    pipeline = make_pipeline(TfidfVectorizer(), LogisticRegression(C=20.0))
    pipeline.fit(TOXIC + KIND, [1] * len(TOXIC) + [0] * len(KIND))
    joblib.dump(pipeline, folder / "model.joblib")
    return folder
