#!/usr/bin/env bash
# Regenerates the Python gRPC modules from modelhost/protocol/_generated/grpc_predict_v2.proto.
# protoc runs at the repository root so that the generated grpc module imports its messages
# as modelhost.protocol._generated.grpc_predict_v2_pb2. Uses $PYTHON (default: python),
# which needs grpcio-tools (pinned in the dev extra).
#
# Usage: scripts/generate_protos.sh [TREE]   (TREE defaults to this repository; the
# check script points it at a scratch copy holding only the .proto)
set -euo pipefail

PYTHON="${PYTHON:-python}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TREE="${1:-$ROOT}"
PB2=modelhost/protocol/_generated/grpc_predict_v2_pb2.py

cd "$TREE"
"$PYTHON" -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. \
    modelhost/protocol/_generated/grpc_predict_v2.proto

# The messages go into a private descriptor pool, not protobuf's default one: tritonclient
# (and any other Open Inference Protocol client) registers the same `inference.*` names in
# the default pool, and two files defining one name there cannot both be imported. The wire
# only carries field numbers and the service path, so the pool changes nothing for clients.
DEFAULT_LINE='DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile('
if [ "$(grep -cF "$DEFAULT_LINE" "$PB2")" != 1 ]; then
    echo "generate_protos.sh: protoc output changed shape; cannot move it to a private pool" >&2
    exit 1
fi
"$PYTHON" - "$PB2" <<'PY'
import sys

path = sys.argv[1]
with open(path, encoding="utf-8") as f:
    text = f.read()
text = text.replace(
    "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile(",
    "# modelhost: a private pool, so that tritonclient's identical `inference.*` names in the\n"
    "# default pool do not collide with these (see scripts/generate_protos.sh).\n"
    "POOL = _descriptor_pool.DescriptorPool()\n"
    "DESCRIPTOR = POOL.AddSerializedFile(",
    1,
)
with open(path, "w", encoding="utf-8") as f:
    f.write(text)
PY
