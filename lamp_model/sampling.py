"""LAMP's denoising loop (Algorithm 1, as the official pipeline runs it).

One run of :func:`sample_video`:

1. **Shared noise.** Frames f ≥ 1 start from ``alpha·raw_0 + (1-alpha)·raw_f`` (:func:`~lamp_model.noise.shared_noise`),
   scaled by the scheduler's ``init_noise_sigma``.
2. **Pinned first frame.** Frame 0 is replaced by the clean first-frame latent. It goes into the UNet clean at
   every step (as in training, where frame 0 is never noised) and is never stepped, so it comes out bit-identical.
3. **Each step** (timestep t, one 0-dim tensor for the whole video): the UNet runs once on
   ``cat([latents]*2)`` with the embeddings ``[uncond, cond]`` (uncond first); classifier-free guidance
   ``ε̂ = ε_u + s·(ε_c − ε_u)``; the scheduler steps frames 1.. only; then the in-loop AdaIN schedule.
4. **AdaIN schedule** (per sample, per channel over H×W, see :func:`~lamp_model.postprocess.adain_latent`):

   * early phase (``t ≥ LATE_PHASE_TIMESTEP``): frames 2.. take frame 1's statistics, frame 1 is free;
   * late phase (``t < LATE_PHASE_TIMESTEP``): frame 1 takes frame 0's statistics, then frames 2.. take the
     updated frame 1's.

   The official code switches at loop index ``i > 30`` of its hard-coded 50 DDIM steps, i.e. between t = 381
   (last early step) and t = 361 (first late step). Expressing the switch as a timestep threshold (371) keeps it
   at the same noise level for any step count and scheduler, and equals the official rule at 50 DDIM steps.
5. **Final AdaIN.** After the loop every frame f ≥ 1 takes frame 0's statistics once more.

``color_consistency="static"`` (not in the paper) runs the same schedule with statistics over each frame's
static pixels only (:func:`~lamp_model.postprocess.static_mask`: those that changed least from the frame's
reference), so a change of size is not pulled back to the reference's statistics; ``"none"`` (= ``adain=False``)
skips both passes.

Not in the paper (engineering additions, defaults reproduce the official code): other schedulers
(``"dpmpp_2m"``, ``"euler"``, or any diffusers scheduler instance), ``pin_first_frame=False`` and the per-step
``callback``. For sigma-scaled schedulers (Euler) the UNet still sees the *clean* frame-0 latent next to the
``scale_model_input``-scaled frames 1.., only frames 1.. are scaled by ``init_noise_sigma``, and the late-phase
AdaIN maps frame 0's statistics into the scheduler's sample space (×``1/c_in``), so the schedule acts on what the
UNet sees exactly as in the DDIM case.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Optional

import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from . import checks
from .noise import DEFAULT_ALPHA, shared_noise
from .postprocess import adain_latent, static_mask

#: Late-phase AdaIN when the step's timestep is below this (official: steps i > 30 of 50 DDIM steps, t ≤ 361).
LATE_PHASE_TIMESTEP = 371

#: The SD-1.x noise schedule (SD-1.4 ``scheduler_config.json``), shared by every scheduler offered here.
SD1_SCHEDULE: dict[str, Any] = {
    "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "steps_offset": 1, "timestep_spacing": "leading",
}

_SCHEDULERS: dict[str, Callable[[], SchedulerMixin]] = {
    # Official: DDIM, eta 0, no clipping, final alpha = alphas_cumprod[0].
    "ddim": lambda: DDIMScheduler(**SD1_SCHEDULE, clip_sample=False, set_alpha_to_one=False),
    # Not in the paper: DPM-Solver++ (2M) and Euler, with the same betas.
    "dpmpp_2m": lambda: DPMSolverMultistepScheduler(**SD1_SCHEDULE, algorithm_type="dpmsolver++", solver_order=2),
    "euler": lambda: EulerDiscreteScheduler(**SD1_SCHEDULE),
}
SCHEDULER_NAMES = tuple(_SCHEDULERS)

#: Where the AdaIN statistics come from: "official" (the whole frame), "static" (the pixels that did not change,
#: for motions that change size) or "none" (no AdaIN).
COLOR_CONSISTENCY = ("official", "static", "none")

#: ``callback(step, total, latents)``: ``step`` is the 0-based index of the step just finished.
Callback = Callable[[int, int, torch.Tensor], Any]


def make_scheduler(scheduler: str | SchedulerMixin | None = None) -> SchedulerMixin:
    """A fresh scheduler: ``None``/``"ddim"`` (official), ``"dpmpp_2m"``, ``"euler"``, or a copy of an instance."""
    if scheduler is None:
        return _SCHEDULERS["ddim"]()
    if isinstance(scheduler, str):
        key = scheduler.strip().lower()
        if key not in _SCHEDULERS:
            raise ValueError(f"unknown scheduler {scheduler!r}; choose one of {', '.join(SCHEDULER_NAMES)} "
                             "or pass a diffusers scheduler instance")
        return _SCHEDULERS[key]()
    if not all(hasattr(scheduler, a) for a in ("set_timesteps", "step", "scale_model_input")):
        raise TypeError(f"scheduler must be a name ({', '.join(SCHEDULER_NAMES)}) or a diffusers scheduler, "
                        f"got {type(scheduler).__name__}")
    return copy.deepcopy(scheduler)  # never mutate the caller's scheduler state


def is_late_phase(timestep: torch.Tensor | float) -> bool:
    """Whether the AdaIN schedule is in its late phase at ``timestep`` (see the module docstring)."""
    return float(timestep) < LATE_PHASE_TIMESTEP


def color_mode(adain: bool, color_consistency: str) -> str:
    """The effective :data:`COLOR_CONSISTENCY` mode: ``"none"`` when ``adain`` is off, else ``color_consistency``."""
    if color_consistency not in COLOR_CONSISTENCY:
        raise ValueError(f"color_consistency must be one of {', '.join(COLOR_CONSISTENCY)}, got {color_consistency!r}")
    return color_consistency if adain else "none"


def _adain(x: torch.Tensor, ref: torch.Tensor, static: bool) -> torch.Tensor:
    """:func:`~lamp_model.postprocess.adain_latent`, over the static pixels of ``x`` against ``ref`` if ``static``."""
    return adain_latent(x, ref, static_mask(x, ref) if static else None)


def adain_schedule(latents: torch.Tensor, late: bool, frame0_scale: float = 1.0, static: bool = False) -> torch.Tensor:
    """The in-loop AdaIN of one step, with the official per-frame semantics.

    Early: frames 2.. take frame 1's statistics. Late: frame 1 takes the statistics of
    ``frame0_scale · frame 0`` (1 unless frame 0 lives in a different space than the sample, see
    :class:`DenoiseLoop`), then frames 2.. take the *updated* frame 1's. (The official loop clones the latents
    before each frame, so frame f ≥ 2 is always normalised from its own pre-AdaIN value to the current frame 1.)
    ``static``: the statistics of each frame and its reference are taken over the frame's static pixels.
    """
    out = latents.clone()
    if late:
        out[:, :, 1] = _adain(latents[:, :, 1], latents[:, :, 0] * frame0_scale, static)
    if latents.shape[2] > 2:
        out[:, :, 2:] = _adain(latents[:, :, 2:], out[:, :, 1], static)
    return out


def final_adain(latents: torch.Tensor, reference: Optional[torch.Tensor] = None, static: bool = False) -> torch.Tensor:
    """The post-loop AdaIN: frames 1.. take frame 0's statistics (official), or, with a ``reference`` frame
    ``[B, C, 1, h, w]``, every frame takes the reference's statistics (used when frame 0 is not pinned).
    ``static``: statistics over each frame's static pixels (see :func:`adain_schedule`)."""
    if reference is not None:
        return _adain(latents, reference, static)
    out = latents.clone()
    out[:, :, 1:] = _adain(latents[:, :, 1:], latents[:, :, :1], static)
    return out


def _unet_dtype_device(unet: Any, fallback: torch.device) -> tuple[torch.dtype, torch.device]:
    param = next(unet.parameters(), None) if isinstance(unet, torch.nn.Module) else None
    return (param.dtype, param.device) if param is not None else (torch.float32, fallback)


class DenoiseLoop:
    """The per-step logic of :func:`sample_video` for one run (the scheduler must have its timesteps set).

    ``step(latents, i)`` performs loop iteration ``i`` (UNet + guidance + scheduler step + AdaIN schedule) and
    ``run(latents)`` iterates it over the schedule. Exposed so a run can start from given latents at a given
    step (teacher-forced checks, resuming); :func:`sample_video` is the normal entry point.
    """

    def __init__(self, unet: Callable[..., Any], scheduler: SchedulerMixin, cond: torch.Tensor,
                 uncond: Optional[torch.Tensor], guidance_scale: float, *, adain: bool = True,
                 pin_first_frame: bool = True, color_consistency: str = "official") -> None:
        self.unet, self.scheduler = unet, scheduler
        self.guidance_scale = float(guidance_scale)
        self.color = color_mode(bool(adain), color_consistency)
        self.adain, self.pin = self.color != "none", bool(pin_first_frame)
        self.dtype, self.device = _unet_dtype_device(unet, cond.device)
        self.cfg = self.guidance_scale > 1.0  # official: no CFG pass at all for scales <= 1
        if self.cfg and uncond is None:
            raise ValueError("guidance_scale > 1 needs negative (uncond) embeddings")
        self.cond = cond.to(self.device, self.dtype)
        self.uncond = uncond.to(self.device, self.dtype) if self.cfg else None

    @property
    def timesteps(self) -> torch.Tensor:
        return self.scheduler.timesteps

    def _predict_noise(self, model_in: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """UNet noise prediction with classifier-free guidance, returned in fp32."""
        def call(x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
            out = self.unet(x.to(self.dtype), t, encoder_hidden_states=ctx)
            return (out.sample if hasattr(out, "sample") else out).float()

        if not self.cfg:
            return call(model_in, self.cond)
        if self.uncond.shape == self.cond.shape:  # one batched pass, batch = [uncond, cond] as officially
            eps_u, eps_c = call(torch.cat([model_in] * 2), torch.cat([self.uncond, self.cond])).chunk(2)
        else:  # different token lengths cannot share a batch; each sample is independent anyway
            eps_u, eps_c = call(model_in, self.uncond), call(model_in, self.cond)
        return eps_u + self.guidance_scale * (eps_c - eps_u)

    def _frame0_scale(self, i: int) -> float:
        """1 / c_in of the sample after step ``i``: maps the clean frame 0 into the scheduler's sample space."""
        if not self.pin:
            return 1.0  # frame 0 is stepped with the rest and already lives in the same space
        ts = self.timesteps
        t_next = ts[min(i + 1, len(ts) - 1)]
        probe = torch.ones((), dtype=torch.float32)
        c_in = float(self.scheduler.scale_model_input(probe, t_next))
        return 1.0 / c_in

    @torch.no_grad()
    def step(self, latents: torch.Tensor, i: int) -> torch.Tensor:
        """Loop iteration ``i`` from ``latents`` ``[B, C, F, h, w]`` (fp32); returns the new latents."""
        t = self.timesteps[i].to(self.device)
        latents = latents.to(self.device, torch.float32)
        if self.pin:
            first, moving = latents[:, :, :1], latents[:, :, 1:]
            model_in = torch.cat([first, self.scheduler.scale_model_input(moving, t)], dim=2)
        else:
            first, moving = None, latents
            model_in = self.scheduler.scale_model_input(moving, t)
        eps = self._predict_noise(model_in, t)
        moved = self.scheduler.step(eps[:, :, 1:] if self.pin else eps, t, moving).prev_sample.float()
        if not bool(torch.isfinite(moved).all()):
            raise FloatingPointError(f"sampling produced NaN/inf at step {i + 1} of {len(self.timesteps)} "
                                     f"(timestep {int(t)}): {checks.nan_advice(self.device, self.dtype)}")
        latents = torch.cat([first, moved], dim=2) if self.pin else moved
        if self.adain:
            late = is_late_phase(t)
            latents = adain_schedule(latents, late, self._frame0_scale(i) if late else 1.0, self.color == "static")
        return latents

    def run(self, latents: torch.Tensor, start: int = 0, callback: Optional[Callback] = None) -> torch.Tensor:
        """Iterations ``start..`` of the schedule; ``callback(i, total, latents)`` after each one."""
        total = len(self.timesteps)
        for i in range(start, total):
            latents = self.step(latents, i)
            if callback is not None:
                callback(i, total, latents.clone())
        return latents


def _check_inputs(first: Optional[torch.Tensor], cond: torch.Tensor, uncond: Optional[torch.Tensor],
                  noise: torch.Tensor, steps: int, pin: bool, *, unet: Any = None,
                  guidance_scale: float = 12.5, alpha: float = DEFAULT_ALPHA) -> Optional[torch.Tensor]:
    """Refuse bad arguments of :func:`sample_video` before any UNet call (``ValueError`` naming the argument
    and the expected shape or range); returns the first-frame latent as ``[B, C, 1, h, w]``. With ``unet``,
    the noise channels and the embedding width are checked against its config."""
    config = getattr(unet, "config", None) or {}
    channels, width = config.get("in_channels"), config.get("cross_attention_dim")
    c_text = channels or "C"
    expected = f"raw video noise [B, {c_text}, F, h, w] with F >= 2 frames"
    checks.tensor("noise", noise, 5, expected)
    b, c, f, h, w = noise.shape
    if f < 2 or (channels and c != channels):
        raise ValueError(f"noise must be {expected}, got {tuple(noise.shape)}" +
                         (f" (this UNet takes {channels}-channel latents)" if channels and c != channels else ""))
    if first is None:
        if pin:
            raise ValueError("first_frame_latent is required unless pin_first_frame=False")
    else:
        checks.tensor("first_frame_latent", first, (4, 5), f"one frame [B, {c}, 1, {h}, {w}]")
        if first.ndim == 4:
            first = first.unsqueeze(2)
        if first.shape[2] != 1 or first.shape[1] != c or first.shape[-2:] != (h, w) or first.shape[0] not in (1, b):
            raise ValueError(f"first_frame_latent must be one frame [B, {c}, 1, {h}, {w}] matching the noise "
                             f"{tuple(noise.shape)}, got {tuple(first.shape)}; encode the first frame at the "
                             "video's size (latent = image / 8, scaled by 0.18215)")
        first = first.expand(b, -1, -1, -1, -1)
    guidance_scale = checks.as_float("guidance_scale", guidance_scale, 0.0, hint="official 12.5; <= 1 turns "
                                     "classifier-free guidance off")
    checks.as_float("shared_noise_alpha", alpha, 0.0, 1.0, hint="official 0.2")
    for name, emb in (("cond", cond), ("uncond", uncond if guidance_scale > 1 else None)):
        if emb is None:
            continue
        checks.tensor(name, emb, 3, f"text embeddings [B, tokens, {width or 'D'}]")
        if emb.shape[0] not in (1, b) or (width and emb.shape[-1] != width):
            raise ValueError(f"{name} embeddings must be [B, tokens, {width or 'D'}] with B = 1 or {b}, got "
                             f"{tuple(emb.shape)}" + (f"; this UNet's text context is {width} wide: encode the "
                                                      "prompts with its own (SD-1.x) text encoder" if width else ""))
    if uncond is not None and guidance_scale > 1 and uncond.shape[-1] != cond.shape[-1]:
        raise ValueError(f"cond and uncond embeddings differ in width ({cond.shape[-1]} vs {uncond.shape[-1]}); "
                         "encode both with the same text encoder")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 1000:
        raise ValueError(f"steps must be an integer in 1..1000, got {steps!r}")
    return first


def prepare_latents(noise: torch.Tensor, first: Optional[torch.Tensor], scheduler: SchedulerMixin,
                    alpha: float = DEFAULT_ALPHA, pin_first_frame: bool = True) -> torch.Tensor:
    """Latents entering the loop: shared-noise mix × ``init_noise_sigma``, frame 0 = the clean latent if pinned."""
    mixed = shared_noise(noise.float(), alpha) * float(scheduler.init_noise_sigma)
    if not pin_first_frame:
        return mixed
    return torch.cat([first.to(mixed.device, torch.float32), mixed[:, :, 1:]], dim=2)


def sample_video(unet: Callable[..., Any], first_frame_latent: Optional[torch.Tensor], cond: torch.Tensor,
                 uncond: Optional[torch.Tensor], noise: torch.Tensor, steps: int = 50, guidance_scale: float = 12.5,
                 shared_noise_alpha: float = DEFAULT_ALPHA, adain: bool = True,
                 scheduler: str | SchedulerMixin | None = None, callback: Optional[Callback] = None, *,
                 pin_first_frame: bool = True, color_consistency: str = "official") -> torch.Tensor:
    """Generate a LAMP video latent from a first-frame latent (official Algorithm 1, see the module docstring).

    Args:
        unet: the LAMP UNet (or any callable ``unet(sample, timestep, encoder_hidden_states=...)`` returning a
            tensor or an object with ``.sample``). It runs under ``torch.no_grad`` in its own dtype and device.
        first_frame_latent: ``[B, 4, 1, h, w]`` (or ``[B, 4, h, w]``), already scaled by 0.18215.
        cond, uncond: text embeddings ``[B, L, D]`` (B may be 1). ``uncond`` is unused when
            ``guidance_scale <= 1`` (official: no CFG then).
        noise: RAW noise ``[B, 4, F, h, w]`` before the shared-noise mix (e.g. ``noise.make_raw_noise``).
        steps, guidance_scale: 50 and 12.5 officially.
        shared_noise_alpha: weight of frame 0's noise in frames 1.. (official 0.2).
        adain: False skips both the in-loop AdaIN schedule and the final AdaIN pass (ablation).
        scheduler: ``None``/``"ddim"`` (official), ``"dpmpp_2m"``, ``"euler"`` or a diffusers scheduler instance
            (copied, never mutated). Non-DDIM schedulers are not in the paper.
        callback: ``callback(step, total, latents)`` after every step, ``step`` = 0-based index of the finished
            step; ``latents`` is a copy. An exception raised in it stops sampling and propagates (cancel).
        pin_first_frame: False (ablation, not official) noises frame 0 like the others (its raw noise is the
            shared component) and steps it; the UNet then never sees the clean image. The first-frame latent, if
            given, only serves the final AdaIN, which then gives *every* frame its statistics (colour reference);
            with ``first_frame_latent=None`` frames 1.. are matched to the generated frame 0.
        color_consistency: the statistics of both AdaIN passes: ``"official"`` (whole frame), ``"static"``
            (not in the paper: each frame's pixels that changed least from its reference, so a motion that
            changes size is not undone; see the module docstring) or ``"none"`` (same as ``adain=False``).

    Returns the final latents ``[B, 4, F, h, w]`` in fp32 on the UNet's device, after the final AdaIN pass and
    before VAE decoding. With ``pin_first_frame`` frame 0 is bit-identical to ``first_frame_latent``.
    """
    first = _check_inputs(first_frame_latent, cond, uncond, noise, steps, pin_first_frame, unet=unet,
                          guidance_scale=guidance_scale, alpha=shared_noise_alpha)
    b = noise.shape[0]
    cond = cond.expand(b, -1, -1)
    uncond = uncond.expand(b, -1, -1) if uncond is not None else None
    loop = DenoiseLoop(unet, make_scheduler(scheduler), cond, uncond, guidance_scale, adain=adain,
                       pin_first_frame=pin_first_frame, color_consistency=color_consistency)
    loop.scheduler.set_timesteps(steps, device=loop.device)
    latents = prepare_latents(noise.to(loop.device), first, loop.scheduler, shared_noise_alpha, pin_first_frame)
    latents = loop.run(latents, callback=callback)
    if loop.color == "none":
        return latents
    static = loop.color == "static"
    if pin_first_frame:
        return final_adain(latents, static=static)
    return final_adain(latents, first.to(latents) if first is not None else None, static)
