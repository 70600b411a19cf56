"""Regenerate the shipped toy weights: stage 1, then stage 2 for every motion.

``python -m lamp_model.toy.build_weights [--out DIR] [--motions right down grow rotate] [--jobs 2]``

Writes ``base_unet.safetensors``, ``text_encoder.safetensors`` and ``motion_<name>.safetensors`` (fp16)
into ``--out`` (default: ``lamp_model/toy/weights``, the folder the demo reads), printing each stage's
runtime and the total size (the shipped set must stay under 15 MB). Deterministic for a given seed and
torch build and thread count. ``--jobs N`` trains up to N motions at once as separate
``python -m lamp_model.toy.stage2`` processes on one torch thread each (one per core; more processes than
cores only slow each other down). The CPU budget is in the README's toy runtimes.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import stage1, stage2, world
from .models import STAGE1_STEPS, WEIGHTS_DIR, Stopwatch, load_base

MAX_TOTAL_BYTES = 15_000_000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lamp_model.toy.build_weights", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    ap.add_argument("--motions", nargs="+", default=list(world.MOTIONS), choices=list(world.MOTIONS))
    ap.add_argument("--stage1-steps", type=int, default=STAGE1_STEPS)
    ap.add_argument("--stage2-steps", type=int, default=None,
                    help="stage-2 steps for every motion (default: stage2.TOY_STEPS, per motion)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=1, help="stage-2 motions trained at once, one process each")
    ap.add_argument("--skip-stage1", action="store_true", help="keep the stage-1 weights already in --out")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        ap.error(f"--jobs must be 1 or more, got {args.jobs}")
    total = Stopwatch()
    if not args.skip_stage1:
        print(f"stage 1: {stage1.train_and_save(args.out, args.stage1_steps, seed=args.seed):.0f} s")
        scores = stage1.evaluate_base(*load_base(args.out), seed=args.seed)
        print(f"stage 1: requested colour {scores['colour']:.0%}, shape {scores['shape']:.0%} (n={scores['n']})")
    failed = _train_motions(args.motions, args.out, args.stage2_steps, args.seed, args.jobs)
    if failed:
        print(f"error: stage 2 failed for {', '.join(failed)} (its log is above); rerun it with "
              f"python -m lamp_model.toy.build_weights --skip-stage1 --motions {' '.join(failed)}")
        return 1
    files = sorted(args.out.glob("*.safetensors"))
    size = sum(f.stat().st_size for f in files)
    for f in files:
        print(f"  {f.name:<32} {f.stat().st_size / 1e6:6.2f} MB")
    print(f"toy weights: {size / 1e6:.2f} MB in {args.out}, built in {total():.0f} s")
    if size > MAX_TOTAL_BYTES:
        print(f"error: the toy weights exceed {MAX_TOTAL_BYTES / 1e6:.1f} MB; shrink the model before shipping")
        return 1
    return 0


def _train_motions(motions: list[str], out: Path, steps: int | None, seed: int, jobs: int) -> list[str]:
    """Stage 2 for each motion: in this process when ``jobs`` is 1, else as up to ``jobs`` stage-2 processes at
    once (each on one torch thread, their logs interleaved); returns the motions whose process failed."""
    if jobs == 1:
        for motion in motions:
            clock = Stopwatch()
            trainer = stage2.train_motion(motion, out, steps, seed=seed)
            trainer.save_motion(stage2.motion_file(motion, out))
            print(f"stage 2 [{motion}]: {clock():.0f} s")
        return []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    root = Path(__file__).resolve().parents[2]  # the folder that holds lamp_model/, for ``-m``

    def run(motion: str) -> int:
        cmd = [sys.executable, "-u", "-m", "lamp_model.toy.stage2", "--motion", motion,
               "--base", str(out.resolve()), "--seed", str(seed), *(["--steps", str(steps)] if steps else [])]
        clock = Stopwatch()
        print(f"stage 2 [{motion}]: started as its own process", flush=True)
        code = subprocess.run(cmd, env=env, cwd=root).returncode
        print(f"stage 2 [{motion}]: {'done' if code == 0 else 'FAILED'} in {clock():.0f} s", flush=True)
        return code

    with ThreadPoolExecutor(jobs) as pool:
        codes = list(pool.map(run, motions))
    return [m for m, code in zip(motions, codes) if code]


if __name__ == "__main__":
    raise SystemExit(main())
