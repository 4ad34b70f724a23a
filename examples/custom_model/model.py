"""A custom model written exactly as for KServe; only the import line names modelhost.

Run it with `python examples/custom_model/model.py --http_port 8080 --grpc_port 8081`,
or serve it with `modelhost serve examples/custom_model --model-class model:WeightedSum`.
"""

import numpy as np

from modelhost import InferOutput, InferRequest, InferResponse, Model, ModelServer


class WeightedSum(Model):
    """Scores rows of four features with fixed weights; answers v1 and v2 alike."""

    def __init__(self, name: str):
        super().__init__(name)
        self.weights: np.ndarray | None = None
        self.load()

    def load(self) -> bool:
        self.weights = np.array([0.5, 1.0, 1.5, 2.0])
        self.ready = True
        return self.ready

    def predict(
        self, payload: dict | InferRequest, headers: dict[str, str] | None = None
    ) -> dict | InferResponse:
        if isinstance(payload, InferRequest):
            rows = payload.inputs[0].as_numpy().astype(np.float64)
            scores = rows @ self.weights
            output = InferOutput(name="score", shape=list(scores.shape), datatype="FP64")
            output.set_data_from_numpy(scores)
            return InferResponse(
                response_id=payload.id, model_name=self.name, infer_outputs=[output]
            )
        rows = np.asarray(payload["instances"], dtype=np.float64)
        return {"predictions": (rows @ self.weights).tolist()}


if __name__ == "__main__":
    model = WeightedSum("weighted-sum")
    ModelServer().start([model])
