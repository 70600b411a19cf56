"""LAMP's official DDIM loop written in the sigma convention of k-diffusion samplers (ComfyUI's SAMPLER).

A k-diffusion host keeps ``x = x_t / sqrt(ᾱ_t)`` at noise level ``σ_t = sqrt((1-ᾱ_t)/ᾱ_t)`` and asks a model for
the clean estimate ``x̂0``. Deterministic DDIM (eta 0) is then exactly the Euler step ``x' = x̂0 + σ' (x - x̂0)/σ``,
so the loop below is :func:`lamp_model.sampling.sample_video` step for step, with the same pieces:

- :func:`official_sigmas`: the official 50 DDIM timesteps (981, 961, …, 1; "leading" spacing, offset 1) as sigmas,
  ending at the official final alpha ``ᾱ_0`` (not at 0: ``set_alpha_to_one=False``);
- the in-loop AdaIN schedule (:func:`~lamp_model.sampling.adain_schedule`, switched by
  :func:`~lamp_model.sampling.is_late_phase` on the step's timestep), with frame 0's statistics mapped into the
  sample space by ``sqrt(1+σ'²)`` (AdaIN is scale-equivariant, so this is the DDIM-space rule);
- the pinned clean frame 0 and the final AdaIN (:func:`~lamp_model.sampling.final_adain`).

The result is returned in DDIM space (``x_t`` at the last sigma), which equals ``x`` when the last sigma is 0.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from .sampling import adain_schedule, final_adain, is_late_phase, make_scheduler

#: ``denoise(x, sigma) -> x̂0``, both ``[B,C,F,h,w]``; frame 0 of ``x̂0`` must be the clean first frame.
Denoiser = Callable[[torch.Tensor, float], torch.Tensor]
#: ``callback(step, total, x, denoised)`` after each step.
SigmaCallback = Callable[[int, int, torch.Tensor, torch.Tensor], None]


def _alphas_cumprod() -> torch.Tensor:
    return make_scheduler("ddim").alphas_cumprod.double()


def sigma_of_alpha(alpha_cumprod: torch.Tensor) -> torch.Tensor:
    """``σ = sqrt((1-ᾱ)/ᾱ)``."""
    return ((1 - alpha_cumprod) / alpha_cumprod).sqrt()


def official_timesteps(steps: int = 50) -> torch.Tensor:
    """The official DDIM timesteps for ``steps`` steps (SD-1.x schedule, leading spacing, offset 1)."""
    scheduler = make_scheduler("ddim")
    scheduler.set_timesteps(int(steps))
    return scheduler.timesteps.clone()


def official_sigmas(steps: int = 50) -> torch.Tensor:
    """``steps + 1`` float32 sigmas of the official DDIM schedule, the last one the final alpha's (``ᾱ_0``)."""
    if not isinstance(steps, int) or not 1 <= steps <= 1000:
        raise ValueError(f"steps must be an integer in 1..1000, got {steps!r}")
    alphas = _alphas_cumprod()
    ts = official_timesteps(steps)
    return torch.cat([sigma_of_alpha(alphas[ts]), sigma_of_alpha(alphas[:1])]).float()


def timestep_of_sigma(sigma: float) -> int:
    """The SD-1.x training timestep whose sigma is nearest to ``sigma`` (in log space, as k-diffusion does)."""
    log_sigmas = sigma_of_alpha(_alphas_cumprod()).log()
    return int((log_sigmas - math.log(max(float(sigma), 1e-12))).abs().argmin())


@torch.no_grad()
def sample_on_sigmas(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, adain: bool = True,
                     callback: Optional[SigmaCallback] = None) -> torch.Tensor:
    """Run LAMP's loop from ``x`` ``[B,C,F,h,w]`` (frames 1.. at ``sigmas[0]`` in the k-diffusion scale, i.e. the
    official start ``shared_noise · sqrt(1+σ0²)``; frame 0 is ignored and replaced by the clean frame the
    denoiser returns) over ``sigmas`` (decreasing, last one ≥ 0). Returns the final latents in DDIM space
    (frame 0 = the clean frame), after the final AdaIN when ``adain``."""
    if x.ndim != 5 or x.shape[2] < 2:
        raise ValueError(f"LAMP DDIM: expects a video [B,C,F,h,w] with F >= 2, got {tuple(x.shape)}")
    sigmas = [float(s) for s in sigmas]
    if len(sigmas) < 2 or any(b > a for a, b in zip(sigmas, sigmas[1:])) or sigmas[-1] < 0:
        raise ValueError("LAMP DDIM: sigmas must be at least two decreasing values ending at >= 0 "
                         "(use LAMP DDIM Sigmas for the official schedule).")
    x = x.float()
    total = len(sigmas) - 1
    for i in range(total):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoise(x, sigma).float()
        first = denoised[:, :, :1]
        moving = x[:, :, 1:]
        moved = denoised[:, :, 1:] + (moving - denoised[:, :, 1:]) * (sigma_next / sigma)
        x = torch.cat([first, moved], dim=2)
        if adain:
            late = is_late_phase(timestep_of_sigma(sigma))
            x = adain_schedule(x, late, math.sqrt(1.0 + sigma_next ** 2) if late else 1.0)
        if callback is not None:
            callback(i, total, x, denoised)
    x = torch.cat([x[:, :, :1], x[:, :, 1:] / math.sqrt(1.0 + sigmas[-1] ** 2)], dim=2)
    return final_adain(x) if adain else x
