"""DDIM inversion of a source clip (video editing, paper §5.2), as the official code computes it.

The official ``ddim_inversion`` (``lamp/util.py``) walks a *clean* clip latent up the DDIM schedule: for
i = 0 … steps-1 it takes the DDIM timesteps in ascending order (1, 21, …, 981 at 50 steps), predicts the noise
with the LAMP UNet on the current latent at the *target* timestep ``t`` (one pass, the empty prompt's
embedding, no classifier-free guidance) and moves the latent from ᾱ[t - 1000/steps] to ᾱ[t]::

    x ← sqrt(ᾱ_t) · (x − sqrt(1 − ᾱ_from) · ε) / sqrt(ᾱ_from) + sqrt(1 − ᾱ_t) · ε

with ᾱ_from = ᾱ[0] (not 1) at the first step (``set_alpha_to_one=False``). Every frame is inverted, frame 0
included. That is exactly diffusers' :class:`~diffusers.DDIMInverseScheduler` on the SD-1.x schedule, so this
module uses it instead of hand-written schedule code.

The last latent (t = 981 at 50 steps) replaces the shared noise of the editing run
(:func:`lamp_model.editing.edit_video`).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from diffusers import DDIMInverseScheduler

from .sampling import SD1_SCHEDULE, Callback, _unet_dtype_device


def inverse_scheduler(steps: int) -> DDIMInverseScheduler:
    """The official inversion schedule: SD-1.x betas, ᾱ_from = ᾱ[0] at the first step, ``steps`` ascending
    timesteps (1, 21, …, 981 for 50)."""
    scheduler = DDIMInverseScheduler(**SD1_SCHEDULE, clip_sample=False, set_alpha_to_one=False)
    scheduler.set_timesteps(steps)
    return scheduler


def check_unet_layout(unet: Any, latents: torch.Tensor, encoder_hidden_states: torch.Tensor, who: str) -> None:
    """Raise a ``ValueError`` naming the mismatch when ``unet`` is not a video UNet for these inputs.

    Checks what the UNet's ``config`` tells (a callable without one is trusted): that it is a LAMP video
    UNet (not a 2-D image UNet), that its input channels equal the latent channels and that its
    cross-attention width equals the text embedding width.
    """
    config = getattr(unet, "config", None)
    if config is None:
        return
    get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
    kinds = " ".join(str(k) for k in (get("down_block_types") or []))
    if "2D" in kinds or type(unet).__name__ == "UNet2DConditionModel":
        raise ValueError(f"{who}: the model is a 2-D image UNet ({type(unet).__name__}); give the LAMP video UNet "
                         "(lamp_model.load_unet / inflate_unet)")
    channels, width = get("in_channels"), get("cross_attention_dim")
    if channels is not None and latents.shape[1] != channels:
        raise ValueError(f"{who}: the latents have {latents.shape[1]} channels but this model takes {channels}; "
                         "encode the clip with the VAE of the model's own base (SD-1.x: 4 channels)")
    if width is not None and encoder_hidden_states.shape[-1] != width:
        raise ValueError(f"{who}: the text embedding is {encoder_hidden_states.shape[-1]} wide but this model's "
                         f"cross-attention takes {width}; encode the prompt with the text encoder of its base")


@torch.no_grad()
def ddim_invert(unet: Callable[..., Any], latents: torch.Tensor, encoder_hidden_states: torch.Tensor,
                steps: int = 50, return_all: bool = False, callback: Optional[Callback] = None) -> torch.Tensor:
    """Official DDIM inversion of a clean clip latent (see the module docstring).

    Args:
        unet: the LAMP UNet (called as ``unet(sample, timestep, encoder_hidden_states=...)``, returning a tensor
            or an object with ``.sample``); it runs in its own dtype and device, the latents are kept in fp32.
        latents: the clean clip ``[B, 4, F, h, w]``, already scaled by 0.18215 (every frame is inverted).
        encoder_hidden_states: ``[B or 1, L, D]``, officially the empty prompt's embedding.
        steps: inversion steps (official 50); the editing run should sample with the same count, so its first
            timestep is the one the inversion ends at.
        return_all: return every latent of the walk, stacked: ``[steps + 1, B, 4, F, h, w]``, index 0 = the input.
        callback: ``callback(step, total, latents)`` after each step (``step`` 0-based); raising in it stops.

    Returns the inverted latent ``[B, 4, F, h, w]`` (fp32, on the UNet's device), or all of them.
    """
    if not torch.is_tensor(latents) or latents.ndim != 5:
        got = tuple(latents.shape) if torch.is_tensor(latents) else type(latents).__name__
        raise ValueError(f"ddim_invert: latents must be a clip [B, 4, F, h, w] (frames on dim 2), got {got}")
    if not torch.is_tensor(encoder_hidden_states) or encoder_hidden_states.ndim != 3 \
            or encoder_hidden_states.shape[0] not in (1, latents.shape[0]):
        got = tuple(encoder_hidden_states.shape) if torch.is_tensor(encoder_hidden_states) else None
        raise ValueError(f"ddim_invert: encoder_hidden_states must be [B, tokens, dim] with B = 1 or "
                         f"{latents.shape[0]}, got {got}")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 1000:
        raise ValueError(f"ddim_invert: steps must be an integer in 1..1000 (official 50), got {steps!r}")
    check_unet_layout(unet, latents, encoder_hidden_states, "ddim_invert")
    dtype, device = _unet_dtype_device(unet, latents.device)
    scheduler = inverse_scheduler(steps)
    context = encoder_hidden_states.to(device, dtype).expand(latents.shape[0], -1, -1)
    x = latents.to(device, torch.float32)
    walk = [x] if return_all else None
    for i, t in enumerate(scheduler.timesteps):
        out = unet(x.to(dtype), t.to(device), encoder_hidden_states=context)
        eps = (out.sample if hasattr(out, "sample") else out).float()
        x = scheduler.step(eps, t, x).prev_sample.float()
        if walk is not None:
            walk.append(x)
        if callback is not None:
            callback(i, steps, x.clone())
    return torch.stack(walk) if walk is not None else x
