"""Writes the request bodies the benchmark sends: python make_bodies.py OUT_DIR."""

import json
import sys
from pathlib import Path

import numpy as np

out = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/peers/bodies")
out.mkdir(parents=True, exist_ok=True)
image = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
tensor = {"name": "image", "shape": [1, 3, 224, 224], "datatype": "FP32"}
(out / "tensor.json").write_text(
    json.dumps({"inputs": [{**tensor, "data": image.ravel().tolist()}]})
)
header = json.dumps(
    {"inputs": [{**tensor, "parameters": {"binary_data_size": image.nbytes}}]}
).encode()
(out / "tensor.bin").write_bytes(header + image.tobytes())
(out / "tensor.bin.header").write_text(str(len(header)))
rows = np.random.default_rng(1).random((1, 64), dtype=np.float32)
mlp = {
    "inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": rows.ravel().tolist()}]
}
(out / "mlp.json").write_text(json.dumps(mlp))
print(
    f"bodies in {out}: tensor.json {len((out / 'tensor.json').read_bytes())} B, "
    f"tensor.bin {len((out / 'tensor.bin').read_bytes())} B (header {len(header)} B)"
)
