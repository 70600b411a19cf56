"""The toy world's models and weight files: a tiny SD-1.x-shaped UNet, its noise schedule, and I/O.

The UNet is a diffusers ``UNet2DConditionModel`` with SD-1.x block types (CrossAttnDownBlock2D /
DownBlock2D, cross-attention mid block, GEGLU transformers, 1x1 proj_in/out), only tiny: three levels
(16, 8 and 4 latent pixels) of 48/96/96 channels, one resnet per block, 4 heads, 32-wide text tokens. It is trained under
SD-1.x's noise schedule (the engine's ``default_noise_scheduler``: 1000 steps, scaled-linear betas, epsilon), so
the toy goes through exactly the trainer and sampler settings of the real model.

Weight files (safetensors, fp16 on disk, fp32 in memory), all in :data:`WEIGHTS_DIR`:

- ``base_unet.safetensors``: the stage-1 2-D UNet in plain diffusers naming, i.e. an "SD-1.x base" the
  engine's own loaders read (``lamp_model.load_unet(motion_file, base=this)``); its config is in the
  metadata (``unet_config``) because tensor shapes cannot tell the head and group counts;
- ``text_encoder.safetensors``: the toy text encoder's word table;
- ``motion_<name>.safetensors``: one motion, the engine's compact motion file (``lamp_model.weights.save_motion``).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DConditionModel
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..weights import load_base_unet2d
from .text import EMBED_DIM, ToyTextEncoder

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
BASE_FILE = "base_unet.safetensors"
TEXT_FILE = "text_encoder.safetensors"

TOY_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 16, "in_channels": 4, "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [48, 96, 96], "layers_per_block": 1, "attention_head_dim": 4,
    "cross_attention_dim": EMBED_DIM, "norm_num_groups": 8,
}
#: Stage-1 training steps (batch 32): 6000 steps of this 3.3M-parameter UNet take about 95 min on one CPU thread
#: (0.95 s/step beside another process) and draw the requested shape in 96 % of drawings (n = 160; the shipped
#: base); 3000 steps (the base shipped before) 75 %. The earlier 2-level 32/64 UNet (0.8M) drew it in
#: 46 % after 4000 steps, a 3-level 32/64/64 one (1.5M) in 44-50 % after 3600.
STAGE1_STEPS = 6000


def build_unet2d(config: dict[str, Any] | None = None, seed: int = 0) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(**(config or TOY_UNET_CONFIG))


def missing_weights_error(path: Path) -> FileNotFoundError:
    return FileNotFoundError(f"toy weights not found at {path}; regenerate them with "
                             "`python -m lamp_model.toy.build_weights`")


def save_base(weights_dir: Path, unet: UNet2DConditionModel, text_encoder: ToyTextEncoder, info: dict[str, Any]) -> None:
    """Write the stage-1 UNet and the text table (fp16), with the UNet config and training facts as metadata."""
    weights_dir.mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in dict(unet.config).items() if not k.startswith("_")}
    meta = {"unet_config": json.dumps(config), **{k: str(v) for k, v in info.items()}}
    save_file({k: v.detach().to(torch.float16).contiguous() for k, v in unet.state_dict().items()},
              str(weights_dir / BASE_FILE), metadata=meta)
    save_file({"embedding": text_encoder.embedding.to(torch.float16).contiguous()}, str(weights_dir / TEXT_FILE))


def load_base_parts(weights_dir: Path | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The stage-1 base as ``(config, 2-D state dict)``, read by the engine's SD-1.x base loader."""
    return load_base_file(Path(weights_dir or WEIGHTS_DIR) / BASE_FILE)


def load_base_file(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """A stage-1 base file as ``(config, 2-D state dict)``: the engine's SD-1.x base loader, given the head and
    group counts from the file's ``unet_config`` metadata (tensor shapes cannot tell them)."""
    path = Path(path)
    if not path.is_file():
        raise missing_weights_error(path)
    with safe_open(str(path), "pt") as f:
        hints = json.loads((f.metadata() or {}).get("unet_config", "{}"))
    return load_base_unet2d(path, hints=hints)


def load_base(weights_dir: Path | None = None) -> tuple[UNet2DConditionModel, ToyTextEncoder]:
    """Stage-1 weights -> (2-D UNet in fp32, eval mode; text encoder)."""
    config, state = load_base_parts(weights_dir)
    unet = UNet2DConditionModel.from_config(config)
    unet.load_state_dict(state, strict=True)
    return unet.eval(), load_text_encoder(weights_dir)


def load_text_encoder(weights_dir: Path | None = None) -> ToyTextEncoder:
    path = Path(weights_dir or WEIGHTS_DIR) / TEXT_FILE
    if not path.is_file():
        raise missing_weights_error(path)
    encoder = ToyTextEncoder()
    table = load_file(str(path))["embedding"].float()
    if table.shape != encoder.embedding.shape:
        raise ValueError(f"{path}: word table has shape {tuple(table.shape)}, this toy text encoder needs "
                         f"{tuple(encoder.embedding.shape)}; regenerate the weights (python -m lamp_model.toy.build_weights)")
    encoder.embedding.copy_(table)
    return encoder


class Stopwatch:
    """Wall-clock seconds since construction, for the runtimes every stage prints."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.start
