#!/usr/bin/env bash
# The main job on the built-in default: sets up .venv if needed, then renders the toy-world LAMP demo
# (shipped tiny weights, CPU, nothing downloaded). Extra arguments go to `python -m lamp_model demo`.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$root"
python -m lamp_model demo "$@"
