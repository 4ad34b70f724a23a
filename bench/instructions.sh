#!/usr/bin/env bash
# Instructions per request of bench/inprocess.py under callgrind: the slope between 2,000 and
# 6,000 requests (start-up cancels out). Unlike time, the count hardly moves with the host's
# noise (about 1% run to run), so a change to the hot path of a few percent shows.
#   bash bench/instructions.sh [v2|v1]      # needs valgrind (Debian's); ~3 minutes
# BASE=DIR counts a checkout in DIR instead (its modelhost package first on PYTHONPATH).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PY:-$HERE/../.venv/bin/python}
proto=${1:-v2}
count() {
  P=$proto R=1 N=$1 PYTHONPATH=${BASE:-} valgrind --tool=callgrind --callgrind-out-file=/dev/null \
    "$PY" "$HERE/inprocess.py" 2>&1 | awk '/Collected/ {print $4}'
}
low=$(count 2000)
high=$(count 6000)
echo "$proto: $(( (high - low) / 4000 )) instructions per request${BASE:+ ($BASE)}"
