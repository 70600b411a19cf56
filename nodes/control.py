"""ComfyUI ControlNet output → the LAMP UNet's per-frame residuals (the one mapping both paths use).

ComfyUI's ControlNet (``comfy.controlnet.ControlNet.get_control``) returns ``{"output": [...], "middle": [...],
"input": [...]}`` with the frames of each video on the batch axis. Its UNet adds ``output[i]`` to the i-th skip
connection (in down order) and the last ``middle`` entry to the mid-block output — exactly diffusers'
``down_block_additional_residuals`` / ``mid_block_additional_residual``, which the LAMP UNet takes folded per
frame. Frame 0 gets no residual: it is the clean first frame, and LAMP's frame-0 attention reads it, so a
control on it would change the content every frame copies. (``input`` entries come from T2I-Adapters, which
LAMP does not support.)

The LAMP Sampler runs its own loop, so :func:`controlled` evaluates the prompts' ControlNets there the way
ComfyUI's sampler does and feeds them through the same :func:`control_residuals`.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch


def _per_frame(t: torch.Tensor, videos: int, frames: int, pos0: int | None, add_first: bool) -> torch.Tensor:
    """``[videos*frames, ...]`` residual with frame 0 zeroed (or a zero frame 0 put in front) → folded again."""
    t = t.reshape(videos, frames, *t.shape[1:])
    if add_first:
        t = torch.cat([torch.zeros_like(t[:, :1]), t], dim=1)
    elif pos0 is not None:
        t = t.clone()
        t[:, pos0] = 0
    return t.reshape(-1, *t.shape[2:])


def control_residuals(control: dict | None, videos: int, frames: int, pos0: int | None = 0, add_first: bool = False
                      ) -> tuple[list[torch.Tensor | None] | None, torch.Tensor | None]:
    """``(down residuals, mid residual)`` for the LAMP UNet from a ComfyUI control dict (``None``: no control).

    ``videos`` × ``frames`` is how the batch splits; ``pos0`` is where the pinned clean frame 0 sits in each video
    (``None``: no pinned frame in this batch, every frame gets its residual), or ``add_first`` says the caller puts
    the clean frame 0 in front (context windows without frame 0).
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


# ---------------------------------------------------------------------------------------------- LAMP Sampler
def conditioning_control(conditioning: Any) -> Any:
    """The ComfyUI control chain on the first entry of a CONDITIONING (``None`` when there is none)."""
    try:
        extras = conditioning[0][1]
    except (TypeError, IndexError, KeyError):
        return None
    return extras.get("control") if isinstance(extras, dict) else None


def _merge_halves(outs: list[dict | None], like: dict) -> dict:
    """Per-video control dicts (``None`` = no control for that video) → one dict over the whole batch."""
    merged = {}
    for key in ("output", "middle"):
        length = len(like.get(key) or [])
        entries = []
        for i in range(length):
            parts = [None if o is None or i >= len(o.get(key) or []) else o[key][i] for o in outs]
            shape = next((p for p in parts if p is not None), None)
            entries.append(None if shape is None else
                           torch.cat([torch.zeros_like(shape) if p is None else p for p in parts]))
        merged[key] = entries
    return merged


class ControlledUNet(torch.nn.Module):
    """The LAMP Sampler's UNet with the ControlNets of its prompts, through :func:`control_residuals`.

    The engine calls it as ``unet(sample[n,C,F,h,w], t, encoder_hidden_states)`` with ``n = 2`` (``[uncond,
    cond]``, the CFG batch) or 1 (cond only). Each video's ControlNet runs as ComfyUI runs it (k-diffusion
    input scale, the step's sigma, its start/end percent, one hint per frame or one for all).
    """

    def __init__(self, unet: torch.nn.Module, cond_control: Any, uncond_control: Any, sampling: Any) -> None:
        super().__init__()
        self.unet, self.cond_control, self.uncond_control, self.sampling = unet, cond_control, uncond_control, sampling
        self.frames: list[int] | None = None

    def set_frame_indices(self, frames: list[int] | None) -> None:
        """Long videos: the frames of the whole video the next calls hold (``lamp_model.long_video.cover_frames``),
        so that a hint batch with one image per frame gives each segment / window its own frames' hints."""
        self.frames = None if frames is None else list(frames)

    def set_frame0_bank(self, bank: Any) -> None:
        """Long videos: the content lock of the wrapped UNet (see :meth:`LampUNet3D.set_frame0_bank`)."""
        self.unet.set_frame0_bank(bank)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                **kwargs: Any) -> torch.Tensor:
        from . import host

        n, c, f, h, w = sample.shape
        controls = [self.uncond_control, self.cond_control] if n == 2 else [self.cond_control] * n
        t = int(round(float(torch.as_tensor(timestep).reshape(-1)[0])))
        sigma = float(self.sampling.sigmas[min(max(t, 0), len(self.sampling.sigmas) - 1)])
        x = sample.transpose(1, 2).reshape(n * f, c, h, w).float() * (1 + sigma ** 2) ** 0.5
        ctx = encoder_hidden_states.float().repeat_interleave(f, dim=0)
        sigmas = x.new_full((n * f,), sigma)
        if self.frames is not None and len(self.frames) != f:
            raise ValueError(f"LAMP: the call holds {f} frames but was told frames {self.frames}")
        with host.hints_for_frames(controls, self.frames):
            if all(ctl is controls[0] for ctl in controls):
                out = host.control_output(controls[0], x, sigmas, ctx, n)
            else:
                outs = [None if ctl is None else host.control_output(ctl, x[i * f:(i + 1) * f], sigmas[:f],
                                                                     ctx[i * f:(i + 1) * f], 1)
                        for i, ctl in enumerate(controls)]
                like = next((o for o in outs if o is not None), None)
                out = None if like is None else _merge_halves(outs, like)
        down, mid = control_residuals(out, n, f)
        return self.unet(sample, timestep, encoder_hidden_states, down_block_additional_residuals=down,
                         mid_block_additional_residual=mid, **kwargs)


@contextlib.contextmanager
def controlled(unet: torch.nn.Module, positive: Any, negative: Any, device: torch.device,
               node: str = "LAMP Sampler") -> Iterator[torch.nn.Module]:
    """``unet`` itself when the prompts carry no ControlNet, else a :class:`ControlledUNet` for one run."""
    from . import host

    cond, uncond = conditioning_control(positive), conditioning_control(negative)
    if cond is None and uncond is None:
        yield unet
        return
    for ctl in (cond, uncond):
        host.check_sd1_control(ctl, node)
    with host.controls_ready([x for x in (cond, uncond) if x is not None], device) as sampling:
        yield ControlledUNet(unet, cond, uncond, sampling)
