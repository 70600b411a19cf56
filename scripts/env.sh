#!/usr/bin/env bash
# Creates (once) and activates the local virtual environment .venv with a CPU torch and the pack's
# requirements. Sourced by scripts/test.sh and scripts/demo.sh, so each of them works on a fresh machine.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.lamp-deps"
want="$(cat "$root/requirements.txt" "$root/scripts/requirements-dev.txt" | sha256sum | cut -c1-16)"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  # The CPU build of torch is pinned here (test/demo set-up only), never in the pack's requirements.
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "torch==2.13.0"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$root/requirements.txt" -r "$root/scripts/requirements-dev.txt"
  echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
