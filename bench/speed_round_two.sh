#!/bin/bash
# Issue 19's benchmarks in one command: iris (the run-7 targets, REST tails and the REST
# limit, with the peers), cold start, density. One OUT folder; run by hand, never in CI.
#   bash bench/speed_round_two.sh              # ~35 minutes
#   PASSES=2 bash bench/speed_round_two.sh     # iris twice, as RESULTS.md's runs are made
set -euo pipefail
cd "$(dirname "$0")/.."
export OUT="${OUT:-bench/results/$(date -u +%Y%m%dT%H%M%SZ)-round-two}"
mkdir -p "$OUT"
python3 bench/run.py iris
.venv/bin/python bench/coldstart_scenario.py
.venv/bin/python bench/density_scenario.py
echo "results in $OUT: results.md, coldstart.md, density.md"
