"""Shared helpers of the guardrails tests: a tiny classifier folder and a served ASGI app."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import joblib
import uvicorn
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


@contextmanager
def serve_asgi(app: Any) -> Iterator[str]:
    """``app`` under uvicorn on a free loopback port; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    config = uvicorn.Config(app, lifespan="on", log_config=None, http="httptools")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        assert not thread.is_alive()
