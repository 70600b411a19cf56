#!/usr/bin/env bash
# Runs the test suite on CPU, setting up .venv first if needed. pytest's exit code is kept as is, so
# "no tests ran" (exit 5) fails too.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$root"
# Tiny test models run fastest single-threaded (and never oversubscribe a busy 2-core machine).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
python -m pytest -q "$@"
