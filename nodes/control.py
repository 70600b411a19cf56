"""ComfyUI ControlNet output → the LAMP UNet's per-frame residuals (the one mapping both paths use).

ComfyUI's ControlNet (``comfy.controlnet.ControlNet.get_control``) returns ``{"output": [...], "middle": [...],
"input": [...]}`` with the frames of each video on the batch axis. Its UNet adds ``output[i]`` to the i-th skip
connection (in down order) and the last ``middle`` entry to the mid-block output — exactly diffusers'
``down_block_additional_residuals`` / ``mid_block_additional_residual``, which the LAMP UNet takes folded per
frame. Frame 0 gets no residual: it is the clean first frame, and LAMP's frame-0 attention reads it, so a
control on it would change the content every frame copies. (``input`` entries come from T2I-Adapters, which
LAMP does not support.)
"""
from __future__ import annotations

from typing import Any

import torch


def _per_frame(t: torch.Tensor, videos: int, frames: int, pos0: int, add_first: bool) -> torch.Tensor:
    """``[videos*frames, ...]`` residual with frame 0 zeroed (or a zero frame 0 put in front) → folded again."""
    t = t.reshape(videos, frames, *t.shape[1:])
    if add_first:
        t = torch.cat([torch.zeros_like(t[:, :1]), t], dim=1)
    else:
        t = t.clone()
        t[:, pos0] = 0
    return t.reshape(-1, *t.shape[2:])


def control_residuals(control: dict | None, videos: int, frames: int, pos0: int = 0, add_first: bool = False
                      ) -> tuple[list[torch.Tensor | None] | None, torch.Tensor | None]:
    """``(down residuals, mid residual)`` for the LAMP UNet from a ComfyUI control dict (``None``: no control).

    ``videos`` × ``frames`` is how the batch splits; ``pos0`` is where frame 0 sits in each video, or
    ``add_first`` says the caller puts the clean frame 0 in front (context windows without frame 0).
    """
    if not control:
        return None, None
    if any(t is not None for t in control.get("input") or []):
        raise ValueError("LAMP: a T2I-Adapter (or another control that adds to the UNet's input blocks) is on the "
                         "conditioning; LAMP supports SD-1.x ControlNets only. Remove it from the LAMP part.")
    output: list[Any] = list(control.get("output") or [])
    middle: list[Any] = list(control.get("middle") or [])
    down = [None if r is None else _per_frame(r, videos, frames, pos0, add_first) for r in output] or None
    mid = middle[-1] if middle else None
    mid = None if mid is None else _per_frame(mid, videos, frames, pos0, add_first)
    if down is not None and all(r is None for r in down):
        down = None
    return down, mid
