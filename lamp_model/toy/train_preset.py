"""``python -m lamp_model train --preset toy``: the generic training command on the toy world.

The preset (:func:`preset_settings`) makes the generic path train exactly as toy stage 2
(:func:`lamp_model.toy.stage2.toy_train_settings`: 16 frames at stride 1, 32x32, no flip, 1500 steps, lr 1e-3,
batch 2, cosine with ``steps // 20`` warm-up steps, seed 0, fp32) from the shipped stage-1 base, and chooses
the ``toy`` model family (:data:`TOY_FAMILY`): the fixed toy codec (:mod:`lamp_model.toy.codec`, no weights)
instead of a VAE, the toy text encoder (``text_encoder.safetensors`` beside the base, or in
``--text-encoder FOLDER``) and the SD-1.x noise schedule. Each clip is trained with its own caption, read
from its file name (``--prompt-from-filenames``; ``python -m lamp_model.toy.clips`` writes such names), as
stage 2 trains each clip with its caption. Flags and YAML override every setting.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..checks import as_int
from ..train import default_noise_scheduler
from ..train_cli import Codec, ModelFamily, TextEncoder, TrainSetupError
from . import codec
from .models import BASE_FILE, WEIGHTS_DIR, load_base_file, load_text_encoder
from .stage2 import DEFAULT_STEPS, toy_train_settings


def preset_settings(given: Mapping[str, Any]) -> dict[str, Any]:
    """The preset's settings; the warm-up follows the ``steps`` given (``steps // 20``, as stage 2)."""
    steps = as_int("steps", given.get("steps", DEFAULT_STEPS), 1, hint=f"toy stage 2 trains {DEFAULT_STEPS}")
    return {**toy_train_settings(steps), "seed": 0, "mixed_precision": "no", "model_family": "toy",
            "base": str(WEIGHTS_DIR / BASE_FILE), "prompt_from_filenames": True}


def _text_encoder(settings: dict[str, Any], device: torch.device) -> TextEncoder:
    folder = Path(settings["text_encoder"]) if settings["text_encoder"] else Path(settings["base"]).parent
    encoder = load_text_encoder(folder)

    def encode(prompts: Sequence[str]) -> torch.Tensor:
        return encoder.encode(list(prompts))

    return encode


def _check(settings: dict[str, Any]) -> None:
    """Refuse, before any clip is read, what the toy family cannot use: a VAE."""
    if settings["vae"]:
        raise TrainSetupError("--vae does not apply to the toy model family: its codec (lamp_model.toy.codec) is a "
                              "fixed projection without weights; leave --vae out")


def _codec(settings: dict[str, Any], device: torch.device) -> Codec:
    def encode(pixels: torch.Tensor) -> torch.Tensor:  # [-1, 1] pixels, as the generic loader gives them
        return codec.encode((pixels.cpu() + 1) / 2)

    def decode(latents: torch.Tensor) -> torch.Tensor:
        return codec.decode_video(latents.float().cpu())[0].permute(0, 2, 3, 1)

    return encode, decode


#: The toy world's models for the generic trainer (``--model-family toy``).
TOY_FAMILY = ModelFamily(text_encoder=_text_encoder, codec=_codec, base_unet=load_base_file,
                         noise_scheduler=lambda base: default_noise_scheduler(), check=_check)
