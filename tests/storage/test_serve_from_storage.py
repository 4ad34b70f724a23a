"""``modelhost serve s3://...``: two servers started at once share one fetched copy."""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path

import httpx
from serving import ServeProcess, serve_command
from storage_servers import S3Server

ROW = [6.8, 2.8, 4.8, 1.4]


def _iris_model() -> tuple[bytes, list[int]]:
    """A joblib-saved iris classifier and its answer for ``ROW``."""
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    estimator = LogisticRegression(max_iter=1000).fit(x, y)
    buffer = io.BytesIO()
    joblib.dump(estimator, buffer)
    return buffer.getvalue(), [int(v) for v in estimator.predict([ROW])]


def _wait_for(check: object, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_two_servers_fetching_one_uri_at_once_serve_one_cached_copy(
    s3: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    model_bytes, expected = _iris_model()
    s3.upload(s3_bucket, {"model.joblib": model_bytes}, prefix="iris/")
    cache = tmp_path / "cache"
    env = {**os.environ, **s3.env(), "MODELHOST_CACHE_DIR": str(cache)}
    command = serve_command(f"s3://{s3_bucket}/iris", "--workers", "1")
    s3.slow_reads(60)  # object reads wait until both servers have asked for the model
    servers: list[ServeProcess] = []
    failures: list[BaseException] = []

    def start() -> None:
        try:
            servers.append(ServeProcess(command, cwd=tmp_path, env=env))
        except BaseException as exc:  # reported below
            failures.append(exc)

    starters = [threading.Thread(target=start) for _ in range(2)]
    for starter in starters:
        starter.start()
    try:
        listings = f"/{s3_bucket}"
        _wait_for(
            lambda: sum(r.path == listings and "list-type" in r.query for r in s3.requests) >= 2,
            "both servers to resolve the URI",
        )
        s3.fast_reads()
        for starter in starters:
            starter.join(90)
        assert failures == []
        assert len(servers) == 2
        for server in servers:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                body = {"instances": [ROW]}
                response = client.post("/v1/models/iris:predict", json=body)
                assert response.status_code == 200, response.text
                assert response.json() == {"predictions": expected}
    finally:
        s3.fast_reads()
        for server in servers:
            server.stop()
    # The model was read from the store once, and one copy sits in the cache.
    assert s3.object_gets(s3_bucket) == ["iris/model.joblib"]
    entries = [p for p in (cache / "models").iterdir() if p.is_dir()]
    assert len(entries) == 1
    assert (entries[0] / "model" / "model.joblib").read_bytes() == model_bytes
