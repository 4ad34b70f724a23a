#!/usr/bin/env bash
# One-time setup for the benchmark: the peers (KServe 0.21.0, MLServer, the minimal ASGI
# and grpc.aio servers, wrk, h2load) through ../shared/bench/setup-peers.sh, then this
# checkout of modelhost in its own venv, torch (the local CPU build) in both, the iris
# model and the request bodies. Everything lives under $PEERS (default /tmp/peers).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SHARED=${SHARED:-$(cd "$ROOT/../shared/bench" && pwd)}
PEERS=${PEERS:-/tmp/peers}
export PEERS
bash "$SHARED/setup-peers.sh"
if [ ! -x "$PEERS/modelhost/bin/python" ]; then
  python3 -m venv "$PEERS/modelhost"
fi
"$PEERS/modelhost/bin/pip" install -q -e "$ROOT[sklearn,llm]" "torch==2.13.0" openai
"$PEERS/kserve/bin/pip" install -q "torch==2.13.0"
[ -f "$PEERS/models/iris/model.joblib" ] || "$PEERS/kserve/bin/python" "$SHARED/make_model.py"
"$PEERS/kserve/bin/python" "$SHARED/grpc_body.py" make "$PEERS/infer_body.bin" >/dev/null
"$PEERS/modelhost/bin/python" "$HERE/make_bodies.py" "$PEERS/bodies"
echo "setup done: $PEERS"
