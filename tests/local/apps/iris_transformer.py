"""A KServe-style transformer in front of an iris predictor, run as its own process.

It is written the way KServe's transformer samples are (a parser with the server's
flags as parent, ``ModelServer().start([model])``), so that it shows what porting one
takes. ``preprocess`` accepts ``{"rows": [...]}`` as well as ``{"instances": [...]}``
and ``postprocess`` marks the answer, so a client can tell it went through here:

    python tests/local/apps/iris_transformer.py --model_name iris \\
        --predictor_host 127.0.0.1:8080 --http_port 8090 --grpc_port 8091 \\
        [--predictor_protocol v1|v2|grpc-v2]
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from modelhost import (
    InferInput,
    InferRequest,
    InferResponse,
    Model,
    ModelServer,
    PredictorConfig,
    model_server,
)


class IrisTransformer(Model):
    """Renames ``rows`` to ``instances``; the predictor does the predicting."""

    def __init__(self, name: str, predictor_config: PredictorConfig) -> None:
        super().__init__(name, predictor_config=predictor_config)
        self.protocol = predictor_config.predictor_protocol
        self.ready = True

    def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        if isinstance(payload, InferRequest):
            if self.protocol != "v1":
                return payload
            return {"instances": payload.inputs[0].as_numpy().tolist()}
        rows = payload["rows"] if "rows" in payload else payload["instances"]
        if self.protocol == "v1":
            return {"instances": rows}
        tensor = InferInput("input-0", [len(rows), len(rows[0]) if rows else 0], "FP32")
        tensor.set_data_from_numpy(np.asarray(rows, dtype=np.float32))
        return InferRequest(self.name, [tensor])

    def postprocess(
        self,
        result: Any,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> Any:
        if isinstance(result, InferResponse):
            result.parameters["transformed"] = True
            return result
        return {**result, "transformed": True}


def main() -> None:
    parser = argparse.ArgumentParser(parents=[model_server.parser])
    args, _ = parser.parse_known_args()
    model = IrisTransformer(
        args.model_name,
        PredictorConfig(
            args.predictor_host,
            args.predictor_protocol,
            args.predictor_use_ssl,
            args.predictor_request_timeout_seconds,
        ),
    )
    # As in KServe, ModelServer reads its own flags (--http_port, --grpc_port, ...).
    ModelServer().start([model])


if __name__ == "__main__":
    main()
