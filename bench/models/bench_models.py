"""The benchmark's extra models, for modelhost (``--model-class``) and for KServe.

``TensorMean`` takes a [N, 3, 224, 224] FP32 image batch and returns each image's mean:
the cost is in moving 600 KB per image, not in the model. ``MLP`` is a small torch
multi-layer perceptron on 64 features: a predict with a fixed, batch-friendly cost.
Both are written against the KServe Model API, so the same class serves under both
servers; ``modelhost`` or ``kserve`` is imported by whichever venv runs it.
"""

import numpy as np

try:
    from modelhost import InferOutput, InferResponse, Model
except ImportError:  # the KServe venv
    from kserve import InferOutput, InferResponse, Model

MLP_FEATURES = 64


class TensorMean(Model):
    def __init__(self, name: str, model_dir: str = ""):
        super().__init__(name)

    def load(self) -> bool:
        self.ready = True
        return True

    def predict(self, payload, headers=None):
        images = payload.inputs[0].as_numpy()
        means = images.reshape(images.shape[0], -1).mean(axis=1).astype(np.float32)
        output = InferOutput(name="mean", shape=list(means.shape), datatype="FP32")
        output.set_data_from_numpy(means, binary_data=False)
        return InferResponse(
            response_id=payload.id or "", model_name=self.name, infer_outputs=[output]
        )


class MLP(Model):
    def __init__(self, name: str, model_dir: str = ""):
        super().__init__(name)
        self.model_dir = model_dir

    def load(self) -> bool:
        import torch

        torch.set_num_threads(1)
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(MLP_FEATURES, 256),
            torch.nn.ReLU(),
            torch.nn.Linear(256, 256),
            torch.nn.ReLU(),
            torch.nn.Linear(256, 10),
        ).eval()
        self.torch = torch
        self.ready = True
        return True

    def predict(self, payload, headers=None):
        rows = payload.inputs[0].as_numpy().astype(np.float32, copy=False)
        with self.torch.inference_mode():
            scores = self.net(self.torch.from_numpy(rows)).numpy()
        output = InferOutput(name="scores", shape=list(scores.shape), datatype="FP32")
        output.set_data_from_numpy(scores, binary_data=False)
        return InferResponse(
            response_id=payload.id or "", model_name=self.name, infer_outputs=[output]
        )


if __name__ == "__main__":  # KServe: python bench_models.py --model_name NAME --kind tensor|mlp
    import argparse

    import kserve
    from kserve import model_server

    parser = argparse.ArgumentParser(parents=[model_server.parser])
    parser.add_argument("--kind", choices=["tensor", "mlp"], required=True)
    args, _ = parser.parse_known_args()
    model = (TensorMean if args.kind == "tensor" else MLP)(args.model_name)
    model.load()
    kserve.ModelServer().start([model])
