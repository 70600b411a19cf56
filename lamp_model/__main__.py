"""``python -m lamp_model <command>``: the engine's command line (no ComfyUI needed).

Each command lives in its own module and exposes ``main(argv)``; this file only dispatches.
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "smoke": ("lamp_model.smoke", "whole pipeline on a tiny random model, writes a video file"),
    "convert": ("lamp_model.weights", "official unet/ folder -> compact motion file (.safetensors)"),
    "train": ("lamp_model.train", "few-shot motion training (also: python -m lamp_model.train)"),
    "edit": ("lamp_model.edit_cli", "video editing: invert a clip, sample it with an edited first frame"),
    "demo": ("lamp_model.toy.demo", "toy-world demo with the shipped tiny weights (CPU, seconds)"),
    "evaluate-videos": ("lamp_model.evaluate_videos", "the paper's CLIP metrics table for a folder of videos"),
    "paper-eval": ("lamp_model.paper_eval", "the paper's protocol: generate the benchmark videos, then score them"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"} or argv[0] not in COMMANDS:
        if argv and argv[0] not in {"-h", "--help"}:
            print(f"error: unknown command {argv[0]!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
            return 2
        print("usage: python -m lamp_model <command> [options]\n\ncommands:")
        for name, (_, help_text) in COMMANDS.items():
            print(f"  {name:<16} {help_text}")
        return 0
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
