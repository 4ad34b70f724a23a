#!/usr/bin/env bash
# Fails (exit 1, printing a diff) when the committed generated gRPC modules are not what
# scripts/generate_protos.sh makes from the committed .proto: someone edited one by hand,
# or changed the .proto without regenerating.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GEN=modelhost/protocol/_generated
FILES=(grpc_predict_v2_pb2.py grpc_predict_v2_pb2.pyi grpc_predict_v2_pb2_grpc.py)

SCRATCH="$(mktemp -d)"
trap 'rm -rf "$SCRATCH"' EXIT
mkdir -p "$SCRATCH/$GEN"
cp "$ROOT/$GEN/grpc_predict_v2.proto" "$SCRATCH/$GEN/"

"$ROOT/scripts/generate_protos.sh" "$SCRATCH"

status=0
for file in "${FILES[@]}"; do
    if ! diff -u "$ROOT/$GEN/$file" "$SCRATCH/$GEN/$file"; then
        status=1
    fi
done
if [ "$status" -ne 0 ]; then
    echo "Generated gRPC code is stale: run scripts/generate_protos.sh and commit the result." >&2
fi
exit "$status"
