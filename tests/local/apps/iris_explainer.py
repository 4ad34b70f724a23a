"""A KServe-style custom explainer for iris, run as its own process by the platform's tests.

Its ``explain`` asks the predictor (at ``--predictor_host``) for the prediction and returns
it with a trivial "explanation", so a test can tell the request passed through here:

    python tests/local/apps/iris_explainer.py --model_name iris --predictor_host HOST:PORT \\
        --http_port 8090 --grpc_port 8091
"""

from __future__ import annotations

import argparse
import json
import urllib.request
from typing import Any

from modelhost import Model, ModelServer, model_server


class IrisExplainer(Model):
    def __init__(self, name: str, predictor_host: str) -> None:
        super().__init__(name)
        self.predictor_host = predictor_host
        self.ready = True

    def explain(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        request = urllib.request.Request(
            f"http://{self.predictor_host}/v1/models/{self.name}:predict",
            data=json.dumps(payload).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            predictions = json.loads(response.read())["predictions"]
        return {"predictions": predictions, "explanations": ["petal length" for _ in predictions]}


def main() -> None:
    parser = argparse.ArgumentParser(parents=[model_server.parser])
    args, _ = parser.parse_known_args()
    ModelServer().start([IrisExplainer(args.model_name, args.predictor_host)])


if __name__ == "__main__":
    main()
