#!/usr/bin/env bash
# The main job on the built-in default: sets up .venv if needed, then renders the toy-world LAMP demo
# (shipped tiny weights, CPU, nothing downloaded): one video per shipped motion. Arguments, if any, go to
# `python -m lamp_model demo` instead (e.g. --motion down --prompt "a red square").
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$root"
# Threads: torch takes every core by default, and on a busy machine its threads then wait for each other (2 threads
# on 2 cores busy with other work measured 6-10x slower than 1). Use the cores that are idle now, at least one;
# an OMP_NUM_THREADS you set wins.
if [ -z "${OMP_NUM_THREADS:-}" ]; then
  cores="$(nproc 2>/dev/null || echo 1)"
  busy="$(awk '{ printf "%d", $1 + 0.5 }' /proc/loadavg 2>/dev/null || echo 0)"  # 1-min load, rounded
  threads=$(( cores - busy ))
  if [ "$threads" -lt 1 ]; then threads=1; fi
  export OMP_NUM_THREADS="$threads"
fi
# Without arguments: every shipped motion (right, down, grow, rotate), one video each.
if [ "$#" -eq 0 ]; then
  set -- --motion all
fi
python -m lamp_model demo "$@"
