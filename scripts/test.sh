#!/usr/bin/env bash
# Installs modelhost with its test and lint tools into .venv, and the servers the storage
# tests start (scripts/install_test_services.sh), then runs every check CI runs: ruff,
# mypy (strict), import-linter layer contracts, generated-code freshness, and pytest.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k grpc`).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
bash scripts/install_test_services.sh
export PATH="$PWD/.venv/bin:$PATH"
export PYTHON="$PWD/.venv/bin/python"

echo "== ruff"
ruff check .
ruff format --check .
echo "== mypy (strict)"
mypy
echo "== import-linter"
lint-imports
echo "== generated gRPC code is fresh"
bash scripts/check_generated.sh
echo "== pytest"
pytest "$@"
