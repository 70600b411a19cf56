"""Tiny random models for the CLIP evaluation, saved in the formats the real ones come in.

``python -m lamp_model.tiny_eval OUT`` writes into ``OUT``: ``clip/`` (a transformers CLIP with a tiny
byte-level BPE tokenizer), ``sd/`` (an SD-1.x-shaped diffusers base: UNet, VAE, CLIP text encoder, tokenizer,
scheduler), ``motions/<name>.safetensors`` (compact motion files) and ``benchmark/<name>/<prompt>.png`` (first
frames named like the official ``benchmark/`` folder), then runs ``paper-eval`` on them (64x48 px, 16 frames, 4 DDIM
steps; further options such as ``--no-official-quirks`` are passed on) and prints the table.
The numbers mean nothing (random weights); they show that the whole protocol runs, and the tests use the same
models. Nothing is downloaded: every model is built from a config in code.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

#: Motions and prompts of the example (two motions, three prompts each; the paper has 8 x 6).
EXAMPLE_PROMPTS = {
    "horse_run": ["a horse runs on the grass", "a horse runs in the universe", "a red horse runs in the sky"],
    "firework": ["fireworks in the night sky", "fireworks in winter", "fireworks over the mountains"],
}
_CLIP_SIZE = 32


def _byte_chars() -> list[str]:
    """The 256 printable stand-ins for bytes that CLIP's byte-level BPE works on (GPT-2's table)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    extra = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + k) for k in range(len(extra))]


def write_tiny_tokenizer(folder: Path) -> Path:
    """A CLIP tokenizer (``vocab.json`` + ``merges.txt``) with every byte, word-final bytes and a few merges."""
    from transformers import CLIPTokenizer

    chars = _byte_chars()
    merges = [("r", "s</w>"), ("h", "o"), ("i", "n</w>"), ("t", "h"), ("th", "e</w>")]
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n",
                                       encoding="utf-8")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)
    tokenizer.save_pretrained(str(folder))
    return folder


def _text_config(tokenizer_folder: Path, hidden: int) -> dict:
    vocab = json.loads((tokenizer_folder / "vocab.json").read_text(encoding="utf-8"))
    return {"vocab_size": len(vocab), "hidden_size": hidden, "intermediate_size": 2 * hidden, "num_hidden_layers": 2,
            "num_attention_heads": 2, "max_position_embeddings": 77, "projection_dim": hidden,
            "bos_token_id": vocab["<|startoftext|>"], "eos_token_id": vocab["<|endoftext|>"],
            "pad_token_id": vocab["<|endoftext|>"]}


def write_tiny_clip(folder: Path, seed: int = 0, image_size: int = _CLIP_SIZE) -> Path:
    """A random transformers ``CLIPModel`` (2+2 layers, 32 wide) with tokenizer and image processor."""
    from transformers import CLIPConfig, CLIPModel

    from .metrics import _image_processor_class

    folder = Path(folder)
    write_tiny_tokenizer(folder)
    config = CLIPConfig(text_config=_text_config(folder, 32), projection_dim=16, logit_scale_init_value=math.log(100.0),
                        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                       "num_attention_heads": 2, "image_size": image_size, "patch_size": 8,
                                       "projection_dim": 16})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config).eval()
    model.save_pretrained(str(folder), safe_serialization=True)
    _image_processor_class()(size={"shortest_edge": image_size},
                       crop_size={"height": image_size, "width": image_size}).save_pretrained(str(folder))
    return folder


def write_tiny_sd(folder: Path, seed: int = 0) -> Path:
    """An SD-1.x-shaped diffusers folder: ``unet/ vae/ text_encoder/ tokenizer/ scheduler/`` (tiny, random)."""
    from diffusers import DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from .sampling import SD1_SCHEDULE
    from .smoke import TINY_UNET, tiny_models

    folder = Path(folder)
    tokenizer = write_tiny_tokenizer(folder / "tokenizer")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        UNet2DConditionModel(**TINY_UNET).save_pretrained(str(folder / "unet"))
        text = CLIPTextModel(CLIPTextConfig(**_text_config(tokenizer, TINY_UNET["cross_attention_dim"])))
        text.save_pretrained(str(folder / "text_encoder"))
    tiny_models(seed)[1].save_pretrained(str(folder / "vae"))
    DDIMScheduler(**SD1_SCHEDULE, clip_sample=False, set_alpha_to_one=False).save_pretrained(str(folder / "scheduler"))
    return folder


def write_tiny_motion(path: Path, seed: int) -> Path:
    """A compact motion file with random (non-identity) motion layers for the tiny UNet."""
    from .smoke import tiny_models
    from .weights import save_motion

    return save_motion(tiny_models(seed)[0], path, metadata={"motion_prompt": path.stem.replace("_", " ")})


def write_first_frames(folder: Path, prompts: dict[str, Sequence[str]], size: tuple[int, int] = (96, 64),
                       seed: int = 0) -> Path:
    """Benchmark-style first frames ``<motion>/<prompt with _>.png`` (smooth random colour fields)."""
    rng = np.random.default_rng(seed)
    for motion, texts in prompts.items():
        for text in texts:
            corners = rng.uniform(0, 255, size=(2, 2, 3)).astype(np.float32)
            img = Image.fromarray(corners.astype(np.uint8)).resize(size, Image.BILINEAR)
            path = folder / motion / f"{text.replace(' ', '_')}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            img.save(path)
    return folder


def write_all(out: Path, prompts: dict[str, Sequence[str]] = EXAMPLE_PROMPTS) -> dict[str, Path]:
    """Every tiny model and first frame the example needs, under ``out``; returns their paths."""
    out = Path(out)
    paths = {"clip": write_tiny_clip(out / "clip"), "base": write_tiny_sd(out / "sd"),
             "first_frames": write_first_frames(out / "benchmark", prompts), "motions": out / "motions"}
    for k, motion in enumerate(prompts):
        write_tiny_motion(out / "motions" / f"{motion}.safetensors", seed=10 + k)
    return paths


def main(argv: list[str] | None = None) -> int:
    """``python -m lamp_model.tiny_eval OUT``: write the tiny models, run ``paper-eval`` on them."""
    from . import paper_eval
    from .checks import writable_dir
    from .cli import ArgumentParser, run_command

    ap = ArgumentParser(prog="python -m lamp_model.tiny_eval", description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="folder for the tiny models, the videos and the report")
    ap.add_argument("--steps", type=int, default=4, help="DDIM steps (the protocol's 50 work too, slower)")
    ap.add_argument("--frames", type=int, default=16)
    args, extra = ap.parse_known_args(argv)  # anything else goes to paper-eval, e.g. --no-official-quirks

    def check_out() -> int:
        writable_dir(args.out, "OUT")
        return 0

    refused = run_command(check_out)  # one error line, as every command
    if refused:
        return refused
    paths = write_all(args.out)
    return paper_eval.main(["--motions", str(paths["motions"]), "--base", str(paths["base"]),
                            "--first-frames", str(paths["first_frames"]), "--clip", str(paths["clip"]),
                            "--out", str(args.out / "paper_eval"), "--width", "64", "--height", "48",
                            "--frames", str(args.frames), "--steps", str(args.steps), "--device", "cpu", *extra])


if __name__ == "__main__":
    raise SystemExit(main())
