"""Measure the toy LAMP: motion accuracy on unseen first frames, content kept, smoothness, ablations.

``python -m lamp_model.toy.evaluate [--motions right down grow rotate] [--n 24] [--work toy_runs] [--json F]``
(``--from-json F1 F2 ...`` prints one table merged from runs made in parallel, e.g. one per motion.)

For each motion, ``--n`` first frames whose (shape, colour) pair was NOT among its 16 training clips are
animated (same seeds and noise for every row) and tracked (:mod:`lamp_model.toy.tracking`):

* **motion accuracy**: fraction of videos whose motion matches the pattern in direction and roughly in
  magnitude (:func:`~lamp_model.toy.tracking.criterion`, derived from the motion's spec, fixed before training);
* **content kept**: over frames 1.., the fraction whose object keeps the requested colour, the fraction
  whose object the tracker's shape classifier still calls the requested shape, and the mean soft IoU of
  the object with frame 0's once its tracked position, size and turn are undone ("shape IoU"; the
  ground-truth row shows its ceiling at 32 px);
* **jitter**: RMS second difference of the tracked centroid (px/frame², 0 for uniform motion);
* **floor and gain**: the accuracy of the untrained row (the same first frames and noise through the
  inflated stage-1 UNet, motion layers untrained) is each motion's floor, what the criterion grants
  without any learned motion; the gain (accuracy minus floor, in points) is the evidence of learning.
  The first frames are spread over every start from which the motion fits, and the criterion rejects
  frame-to-frame jumps, so neither staying put nor flickering into place passes.

Rows: the shipped LAMP weights ("full"), the ablations (trained here into ``--work`` when missing, with
the same seeds and settings as the shipped weights except the one switch), the inflated stage-1 UNet
with untrained motion layers (no motion learned), and the ground-truth clips (what the tracker reads
from perfect videos).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..cli import ArgumentParser, run_command
from ..train import unet_for_training
from . import codec, tracking, world
from .models import WEIGHTS_DIR, Stopwatch, load_base_parts, load_text_encoder
from .stage2 import motion_arg, train_motion
from .stage3 import OFFICIAL_GUIDANCE, TOY_GUIDANCE, SamplingOptions, animate, load_motion_unet


@dataclass(frozen=True)
class Variant:
    """One row of the table: which weights, trained how, sampled how."""

    label: str
    train: dict = field(default_factory=dict)  # stage-2 switches; {} = the shipped weights
    sampling: dict = field(default_factory=dict)  # SamplingOptions overrides
    source: str = "motion"  # "motion" (a trained motion file), "untrained", "ground_truth"


VARIANTS = {
    "full": Variant("LAMP (full)"),
    "no_pin": Variant("no frame-0 pinning (train + sample)", {"pin_first_frame": False}, {"pin_first_frame": False}),
    "conv_off": Variant("no temporal conv", {"temporal_conv": "off"}),
    "conv_centered": Variant("centred (non-causal) temporal conv", {"temporal_conv": "centered"}),
    "no_shared_noise": Variant("no shared noise (alpha 0)", sampling={"shared_noise_alpha": 0.0}),
    "no_adain_hist": Variant("no AdaIN / histogram matching", sampling={"adain": False, "histogram": False}),
    "no_adain": Variant("no latent AdaIN (histogram matching kept)", sampling={"adain": False}),
    "no_hist": Variant("no histogram matching (AdaIN kept)", sampling={"histogram": False}),
    "static_color": Variant("colour consistency over static pixels (AdaIN + histogram)",
                            sampling={"color_consistency": "static"}),
    "official_cfg": Variant(f"the official guidance {OFFICIAL_GUIDANCE:g} instead of the toy's {TOY_GUIDANCE:g}",
                            sampling={"guidance_scale": OFFICIAL_GUIDANCE}),
    "untrained": Variant("untrained motion layers (stage-1 UNet inflated)", source="untrained"),
    "ground_truth": Variant("ground-truth clips (tracker check)", source="ground_truth"),
}


def _variant_file(work: Path, motion: str | world.MotionSpec, key: str) -> Path:
    return work / world.motion_spec(motion).name / f"{key}.safetensors"


def get_unet(motion: str | world.MotionSpec, key: str, weights_dir: Path, work: Path, log=print) -> torch.nn.Module:
    """The UNet of one row: shipped weights, an ablation (trained now if its file is missing), or untrained."""
    variant = VARIANTS[key]
    if variant.source == "untrained":
        config, state = load_base_parts(weights_dir)
        unet = unet_for_training(config, state, seed=0)
        return unet.eval()
    if not variant.train:
        return load_motion_unet(motion, weights_dir)
    path = _variant_file(work, motion, key)
    if not path.is_file():
        clock = Stopwatch()
        trainer = train_motion(motion, weights_dir, log=log, **variant.train)
        path.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_motion(path)
        log(f"  trained {key} for {world.motion_spec(motion).name} in {clock():.0f} s -> {path}")
    return load_motion_unet(path, weights_dir)


def score(videos: torch.Tensor, scenes: list[world.Scene], motion: str | world.MotionSpec) -> dict[str, float]:
    """Tracker metrics of videos ``[N, F, 3, H, W]`` showing ``scenes`` with ``motion``."""
    ok, kept, jit, amount = [], [], [], []
    for video, scene in zip(videos, scenes):
        tr = tracking.track(video, scene.shape)
        ok.append(tracking.motion_ok(tr, motion))
        kept.append(tracking.content_scores(tr, scene.shape, scene.colour))
        jit.append(tracking.jitter(tr))
        amount.append(tracking.motion_amount(tr, motion))
    return {"accuracy": float(np.mean(ok)), **{k: float(np.mean([c[k] for c in kept])) for k in kept[0]},
            "jitter": float(np.nanmean(jit)), "amount": float(np.nanmedian(amount)), "n": len(ok)}


def evaluate(motions: list[str | world.MotionSpec], keys: list[str], n: int = 24, weights_dir: Path | None = None,
             work: Path = Path("toy_runs"), seed: int = 0, steps: int | None = None, log=print) -> dict:
    """All (variant, motion) cells: ``{key: {motion name: metrics + seconds}}``; a motion is a shipped name
    or any spec (:mod:`lamp_model.toy.motions`; its ``full`` row needs its motion file, trained by stage 2)."""
    weights_dir = Path(weights_dir or WEIGHTS_DIR)
    text_encoder = load_text_encoder(weights_dir)
    results: dict[str, dict[str, dict]] = {k: {} for k in keys}
    for motion in map(world.motion_spec, motions):
        scenes = world.unseen_first_frames(motion, n, seed=seed)
        first = world.render(scenes)
        prompts = [s.caption for s in scenes]
        for key in keys:
            clock = Stopwatch()
            variant = VARIANTS[key]
            if variant.source == "ground_truth":
                videos = torch.stack([codec.decode(codec.encode(world.render(world.animate(s, motion)))) for s in scenes])
            else:
                unet = get_unet(motion, key, weights_dir, work, log=log)
                options = replace(SamplingOptions(), **variant.sampling)
                if steps is not None:
                    options = replace(options, steps=steps)
                videos = animate(unet, text_encoder, first, prompts, seed=seed, options=options)
            cell = score(videos, scenes, motion)
            cell["seconds"] = round(clock(), 1)
            results[key][motion.name] = cell
            log(f"  {motion.name:<6} {variant.label:<48} accuracy {cell['accuracy']:6.1%}  colour {cell['colour']:6.1%}  "
                f"shape {cell['shape']:6.1%}  IoU {cell['iou']:.2f}  jitter {cell['jitter']:.2f}  "
                f"median amount {cell['amount']:.2f}  ({cell['seconds']:.0f} s)")
    return results


def merge_results(parts: list[dict]) -> dict:
    """Merge the ``{key: {motion: cell}}`` results of several runs, rows in :data:`VARIANTS` order. A
    (variant, motion) cell found twice is an error: every number in the table must come from one run."""
    merged: dict[str, dict[str, dict]] = {}
    for part in parts:
        for key, cells in part.items():
            for motion, cell in cells.items():
                if motion in merged.setdefault(key, {}):
                    raise ValueError(f"{key} / {motion} appears in more than one results file")
                merged[key][motion] = cell
    return {key: merged[key] for key in VARIANTS if key in merged}


def _floor(results: dict, motion: str) -> float | None:
    """The untrained-motion-layers accuracy on ``motion`` (``None`` where that row was not run)."""
    cell = results.get("untrained", {}).get(motion)
    return None if cell is None else cell["accuracy"]


def _gain(results: dict, key: str, motion: str) -> float | None:
    """Accuracy of ``key`` on ``motion`` minus its floor (``None`` without a floor)."""
    floor = _floor(results, motion)
    return None if floor is None else results[key][motion]["accuracy"] - floor


def motion_table(results: dict, motions: list[str], key: str = "full") -> str:
    """One row per motion for the ``key`` variant (default full LAMP): accuracy, the floor (the same first
    frames through the inflated stage-1 UNet with untrained motion layers), the gain (accuracy - floor),
    colour kept, shape kept, shape IoU, jitter and the median tracked amount."""
    head = ["motion", "accuracy", "floor (untrained)", "gain", "colour kept", "shape kept", "shape IoU",
            "jitter (px)", "median amount"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for motion in (m for m in motions if m in results.get(key, {})):
        cell, floor, gain = results[key][motion], _floor(results, motion), _gain(results, key, motion)
        row = [motion, f"**{cell['accuracy']:.0%}**", "–" if floor is None else f"{floor:.0%}",
               "–" if gain is None else f"{gain * 100:+.0f}", f"{cell['colour']:.0%}", f"{cell['shape']:.0%}",
               f"{cell['iou']:.2f}", f"{cell['jitter']:.2f}", f"{cell.get('amount', float('nan')):.2f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def table(results: dict, motions: list[str]) -> str:
    """The markdown table of every row: motion accuracy per motion with its gain over that motion's
    untrained floor in brackets ("–" where a row was not run for a motion), then means over the motions
    it was run for of accuracy, gain, colour kept, shape kept, shape IoU and jitter."""
    head = ["variant", *[f"{m} acc. (gain)" for m in motions], "mean acc.", "mean gain", "colour kept",
            "shape kept", "shape IoU", "jitter (px)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, cells in results.items():
        ran = [m for m in motions if m in cells]
        gains = {m: _gain(results, key, m) for m in ran}
        acc = ["–" if m not in cells else f"{cells[m]['accuracy']:.0%}" +
               ("" if gains[m] is None else f" ({gains[m] * 100:+.0f})") for m in motions]
        mean = {k: np.nanmean([cells[m][k] for m in ran]) for k in ("accuracy", "colour", "shape", "iou", "jitter")}
        known = [g for g in gains.values() if g is not None]
        row = [VARIANTS[key].label, *acc, f"**{mean['accuracy']:.0%}**",
               f"{np.mean(known) * 100:+.0f}" if known else "–", f"{mean['colour']:.0%}",
               f"{mean['shape']:.0%}", f"{mean['iou']:.2f}", f"{mean['jitter']:.2f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python -m lamp_model.toy.evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--motions", nargs="+", default=list(world.MOTIONS), type=motion_arg,
                    help=f"shipped ({', '.join(world.MOTIONS)}) or specs trained with stage 2, e.g. "
                         "translate:dx=-12,dy=0 (README: Your own motion)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--n", type=int, default=24, help="unseen first frames per motion (>= 20)")
    ap.add_argument("--steps", type=int, default=None, help="sampling steps (default: the toy's 20)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--weights", type=Path, default=WEIGHTS_DIR)
    ap.add_argument("--work", type=Path, default=Path("toy_runs"), help="where ablation motion files are trained")
    ap.add_argument("--json", type=Path, default=None, help="also write the raw numbers here")
    ap.add_argument("--from-json", type=Path, nargs="+", default=None, metavar="JSON",
                    help="print one table merged from earlier --json files (e.g. runs per motion made in "
                         "parallel) and exit; samples nothing")
    args = ap.parse_args(argv)
    return run_command(lambda: _main(args))


def _main(args: argparse.Namespace) -> int:
    if args.from_json:
        merged = merge_results([json.loads(p.read_text())["results"] for p in args.from_json])
        motions = list(dict.fromkeys(m for cells in merged.values() for m in cells))
        print(motion_table(merged, motions) + "\n\n" + table(merged, motions))
        return 0
    clock = Stopwatch()
    results = evaluate(args.motions, args.variants, args.n, args.weights, args.work, args.seed, args.steps)
    print()
    motions = [world.motion_spec(m) for m in args.motions]
    names = [m.name for m in motions]
    print(motion_table(results, names) + "\n\n" + table(results, names))
    print(f"\n{args.n} unseen first frames per motion; criteria: " +
          "; ".join(f"{m.name}: {tracking.criterion(m)}" for m in motions))
    print(f"evaluate: total {clock():.0f} s")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"n": args.n, "seed": args.seed, "results": results,
                                         "seconds": round(clock())}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
