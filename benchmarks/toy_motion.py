"""Toy motion benchmark: does LAMP learn a motion from 16 clips, and what do its parts contribute?

    python benchmarks/toy_motion.py [--n 24] [--motions right down grow rotate] [--work toy_runs]

Animates >= 20 first frames per motion whose shape/colour pair was never in that motion's 8 training
clips, with the shipped toy weights and with each ablation (trained into ``--work`` on first use, same
seeds), tracks the object and prints the metrics table (motion accuracy, content kept, jitter) with the
runtime of every cell. Same as ``python -m lamp_model.toy.evaluate``; see the README (Toy motion world) for the numbers.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lamp_model.toy.evaluate import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
