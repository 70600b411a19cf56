"""Regenerate the shipped toy weights: stage 1, then stage 2 for every motion.

``python -m lamp_model.toy.build_weights [--out DIR] [--motions right down grow rotate]``

Writes ``base_unet.safetensors``, ``text_encoder.safetensors`` and ``motion_<name>.safetensors`` (fp16)
into ``--out`` (default: ``lamp_model/toy/weights``, the folder the demo reads), printing each stage's
runtime and the total size (the shipped set must stay under 15 MB). Deterministic for a given seed and
torch build. CPU budget, one thread per process: stage 1 (3000 steps) about 40 min, stage 2 about
25 min per motion at 1500 steps (rotate 3000: about 50 min); about 3 h in one process, under 2 h when the
motions run as parallel processes (``python -m lamp_model.toy.stage2 --motion NAME``, one per core).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from . import stage1, stage2, world
from .models import STAGE1_STEPS, WEIGHTS_DIR, Stopwatch, load_base, save_base

MAX_TOTAL_BYTES = 15_000_000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lamp_model.toy.build_weights", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    ap.add_argument("--motions", nargs="+", default=list(world.MOTIONS), choices=list(world.MOTIONS))
    ap.add_argument("--stage1-steps", type=int, default=STAGE1_STEPS)
    ap.add_argument("--stage2-steps", type=int, default=None,
                    help="stage-2 steps for every motion (default: stage2.TOY_STEPS, per motion)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-stage1", action="store_true", help="keep the stage-1 weights already in --out")
    args = ap.parse_args(argv)
    total = Stopwatch()
    if not args.skip_stage1:
        clock = Stopwatch()
        unet, text_encoder = stage1.train_base(args.stage1_steps, seed=args.seed)
        save_base(args.out, unet, text_encoder, {"steps": args.stage1_steps, "seed": args.seed,
                                                 "train_seconds": round(clock())})
        print(f"stage 1: {clock():.0f} s")
        scores = stage1.evaluate_base(*load_base(args.out), seed=args.seed)
        print(f"stage 1: requested colour {scores['colour']:.0%}, shape {scores['shape']:.0%} (n={scores['n']})")
    for motion in args.motions:
        clock = Stopwatch()
        trainer = stage2.train_motion(motion, args.out, args.stage2_steps, seed=args.seed)
        trainer.save_motion(stage2.motion_file(motion, args.out))
        print(f"stage 2 [{motion}]: {clock():.0f} s")
    files = sorted(args.out.glob("*.safetensors"))
    size = sum(f.stat().st_size for f in files)
    for f in files:
        print(f"  {f.name:<32} {f.stat().st_size / 1e6:6.2f} MB")
    print(f"toy weights: {size / 1e6:.2f} MB in {args.out}, built in {total():.0f} s")
    if size > MAX_TOTAL_BYTES:
        print(f"error: the toy weights exceed {MAX_TOTAL_BYTES / 1e6:.1f} MB; shrink the model before shipping")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
