"""Few-shot motion training: the LAMP loss, the training configuration and a resumable trainer.

The engine is model-agnostic: it works from already-encoded clip latents (a
:class:`~lamp_model.data.LatentClipSet`) and prompt embeddings, so the SD-1.x CLI, the ComfyUI nodes and
the toy world all drive the same code. Quick use::

    from lamp_model.data import LatentClipSet
    from lamp_model.train import MotionTrainer, TrainConfig

    clips = LatentClipSet.from_latents([lat0, lat1, ...])           # each [T, 4, h, w], scaled
    trainer = MotionTrainer(unet, clips, prompt_embeds,               # [1, L, D] (or one per clip)
                            TrainConfig(steps=500, n_frames=8, hflip=False), output_dir="run")
    trainer.train()                                                   # saves every save_every steps
    trainer.save_motion("motion.safetensors")                         # compact motion file (fp16)

One step, exactly as the official ``train_lamp.py``: take a clip's latents ``[B, C, F, h, w]``, draw
noise and ONE timestep per clip (shared by its frames), noise the clip, overwrite frame 0 with its clean
latent, and regress the noise with an fp32 MSE on frames 1.. only (see :func:`lamp_loss`). Only
:func:`~lamp_model.unet3d.trainable_parameters` are updated (AdamW, lr 3e-5, weight decay 1e-2, grad
norm 1.0, constant schedule); every other tensor stays bit-identical.

Resume is exact: each step's randomness (clip start, flip, posterior sample, noise, timestep) comes from
a generator seeded by ``(seed, process index, step)``, the clips are visited in a fixed order (the
official DataLoader does not shuffle), and :meth:`MotionTrainer.save` stores the fp32 trainable weights,
the optimizer, LR-schedule and grad-scaler state and the loss history in one safetensors file, written
atomically (temporary file + ``os.replace``).

The command line (``python -m lamp_model.train``) lives in :mod:`lamp_model.train_cli`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from .checks import finite
from .data import LatentClipSet
from .frames import RESIZE_MODES
from .unet3d import LampUNet3D, inflate_unet, trainable_parameters
from .weights import atomic_save, atomic_write, remove_stale_temp_files, save_motion

log = logging.getLogger("lamp_model.train")

STATE_FILE = "train_state.safetensors"
MOTION_FILE = "motion.safetensors"
LOSS_LOG = "loss.jsonl"
LOSS_PLOT = "loss.png"
_STATE_VERSION = 1
#: Config fields that may change between a run and its resumption without breaking exactness warnings.
_FREE_ON_RESUME = {"steps", "save_every", "validate_every", "keep_every"}


# ---------------------------------------------------------------------------------------------- loss
def default_noise_scheduler() -> Any:
    """The SD-1.x training noise schedule (DDPM, scaled-linear betas 0.00085–0.012, 1000 steps, epsilon),
    built offline. The CLI prefers the base model's own ``scheduler/`` config when it has one."""
    from diffusers import DDPMScheduler

    from .sampling import SD1_SCHEDULE

    return DDPMScheduler(**SD1_SCHEDULE, clip_sample=False, prediction_type="epsilon")


def lamp_loss(unet: Callable[..., Any], latents: torch.Tensor, encoder_hidden_states: torch.Tensor,
              noise_scheduler: Any, generator: torch.Generator | None = None, pin_first_frame: bool = True,
              noise: torch.Tensor | None = None, timesteps: torch.Tensor | None = None) -> torch.Tensor:
    """One official LAMP training loss (a scalar fp32 tensor with grad).

    ``latents`` ``[B, C, F, h, w]`` are clean, scaled clip latents; ``encoder_hidden_states`` ``[B, L, D]``.
    Noise (then one timestep per clip, shared by its frames) is drawn from ``generator`` on its device
    (CPU by default) unless given. The clip is noised with ``noise_scheduler.add_noise``, frame 0 is
    overwritten by its clean latent (the UNet still gets timestep t for the whole clip), and the loss is
    the MSE between prediction and target (the noise; the velocity for v-prediction schedulers) in fp32
    over frames 1.. only, so frame 0's prediction never enters it.

    ``pin_first_frame=False`` is the plain video-diffusion loss (frame 0 noised too, all frames in the
    loss), for ablations.
    """
    if latents.ndim != 5 or latents.shape[2] < 2:
        raise ValueError(f"latents must be [B, C, F>=2, h, w], got {tuple(latents.shape)}")
    latents = latents.float()
    b = latents.shape[0]
    draw_on = generator.device if generator is not None else torch.device("cpu")
    if noise is None:
        noise = torch.randn(latents.shape, generator=generator, device=draw_on, dtype=torch.float32)
    noise = noise.to(latents.device, torch.float32)
    if timesteps is None:
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (b,), generator=generator,
                                  device=draw_on)
    timesteps = timesteps.to(latents.device).long()
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    if pin_first_frame:
        noisy = torch.cat([latents[:, :, :1], noisy[:, :, 1:]], dim=2)
    pred = unet(noisy, timesteps, encoder_hidden_states)
    pred = getattr(pred, "sample", pred)
    if noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    first = 1 if pin_first_frame else 0
    return F.mse_loss(pred[:, :, first:].float(), target[:, :, first:].float(), reduction="mean")


def unet_for_training(config: Mapping[str, Any], base_state_2d: Mapping[str, torch.Tensor],
                      seed: int | None = None) -> LampUNet3D:
    """The LAMP UNet to train from an SD-1.x base ``(config, diffusers 2-D state dict)`` (what
    ``weights.load_base_unet2d`` returns): the base weights plus the motion layers at their official initial
    values (:func:`~lamp_model.unet3d.inflate_unet`; ``seed`` fixes the random init of ``attn_temp``). The
    2-D model is never initialised: it is built on the meta device and takes the base tensors as they are.
    dtype and device follow the base tensors."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet2d = UNet2DConditionModel.from_config(dict(config))
    unet2d.load_state_dict(dict(base_state_2d), strict=True, assign=True)
    if seed is not None:
        torch.manual_seed(seed)
    return inflate_unet(unet2d)


# ---------------------------------------------------------------------------------------------- config
#: Lower bounds (and the advice given with them) of the integer settings.
_INT_LIMITS: dict[str, tuple[int, str]] = {
    "n_frames": (2, "frame 0 is the condition and the loss is on the others; LAMP trains on 16"),
    "stride": (1, "1 takes every frame"), "width": (8, "512 is official"), "height": (8, "320 is official"),
    "max_clip_frames": (2, "leave it unset to decode whole clips"), "batch_size": (1, "official 1"),
    "steps": (1, "the author advises 10k-20k steps in total"), "lr_warmup_steps": (0, "0 = no warm-up"),
    "seed": (0, "any non-negative integer"), "save_every": (0, "0 saves only at the end (and on a stop)"),
    "keep_every": (0, "0 keeps no numbered copies"), "validate_every": (0, "0 never validates"),
}
#: (lo, hi, lo excluded, advice) of the real-valued settings.
_FLOAT_LIMITS: dict[str, tuple[float | None, float | None, bool, str]] = {
    "learning_rate": (0.0, None, True, "official 3e-5"), "adam_beta1": (0.0, None, False, "official 0.9"),
    "adam_beta2": (0.0, None, False, "official 0.999"), "adam_epsilon": (0.0, None, True, "official 1e-8"),
    "weight_decay": (0.0, None, False, "official 1e-2"), "max_grad_norm": (0.0, None, True, "official 1.0"),
}


def _lr_scheduler_names() -> list[str]:
    """The schedule names diffusers' ``get_scheduler`` accepts."""
    from diffusers.optimization import SchedulerType

    return [t.value for t in SchedulerType]


@dataclass
class TrainConfig:
    """Everything that defines a training run. Defaults follow the official config, except ``steps``
    (10k, the author's advice in issue #12, instead of 30k) and ``validate_every`` (500, not 50).

    Data: ``n_frames`` frames at ``stride`` from a random start, ``width``×``height`` pixels (latents /8),
    ``resize`` ``"stretch"`` (official), ``"center-crop"`` or ``"pad"``, ``hflip`` random mirror of the whole clip (p=0.5;
    it corrupts direction-specific motions such as "turn left": switch it off for those),
    ``max_clip_frames`` caps the frames decoded per clip.

    Optimisation: AdamW (``use_8bit_adam`` needs bitsandbytes), ``lr_scheduler`` any diffusers schedule
    name (``constant``, ``constant_with_warmup``, ``cosine``…), ``mixed_precision`` ``"no"``/``"fp16"``/
    ``"bf16"`` (autocast; fp32 master weights; fp16 adds a grad scaler), ``cast_frozen_weights`` keeps the
    frozen weights in the autocast dtype under mixed precision on CUDA (halves their memory), and
    ``gradient_checkpointing`` recomputes block activations in the backward pass.

    Schedule of side effects (0 = never): ``save_every`` overwrites the latest motion file and training
    state, ``keep_every`` also keeps a numbered motion file, ``validate_every`` calls the validator.
    """

    # data
    n_frames: int = 16
    stride: int = 1
    width: int = 512
    height: int = 320
    resize: str = "stretch"
    hflip: bool = True
    max_clip_frames: int | None = None
    # optimisation
    steps: int = 10_000
    learning_rate: float = 3e-5
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    batch_size: int = 1
    use_8bit_adam: bool = False
    # memory / precision
    mixed_precision: str = "no"
    cast_frozen_weights: bool = True
    gradient_checkpointing: bool = True
    # loss
    pin_first_frame: bool = True
    # run
    seed: int = 33
    save_every: int = 500
    keep_every: int = 0
    validate_every: int = 500

    def __post_init__(self) -> None:
        """Parse and check every field strictly (the one place for the CLI, YAML and the training nodes), so a
        bad setting fails here, before any clip is decoded or model loaded. Raises ``ValueError`` naming the
        field, the value and the fix."""
        from .checks import as_bool, as_float, as_int, one_of

        for field in dataclasses.fields(self):
            name, value, kind = field.name, getattr(self, field.name), field.type
            if kind == "bool":
                value = as_bool(name, value)
            elif kind in ("int", "int | None"):
                if value is not None or kind == "int":
                    lo, hint = _INT_LIMITS.get(name, (None, ""))
                    value = as_int(name, value, lo, hint=hint)
            elif kind == "float":
                lo, hi, lo_open, hint = _FLOAT_LIMITS[name]
                value = as_float(name, value, lo, hi, lo_open=lo_open, hint=hint)
            setattr(self, name, value)
        one_of("mixed_precision", self.mixed_precision, ("no", "fp16", "bf16"))
        one_of("resize", self.resize, RESIZE_MODES)
        one_of("lr_scheduler", self.lr_scheduler, _lr_scheduler_names())
        for name in ("adam_beta1", "adam_beta2"):
            if getattr(self, name) >= 1:
                raise ValueError(f"{name} must be below 1, got {getattr(self, name)} (official 0.9 and 0.999)")
        if self.max_clip_frames is not None and self.max_clip_frames < (self.n_frames - 1) * self.stride + 1:
            raise ValueError(f"max_clip_frames {self.max_clip_frames} is fewer than one training clip needs "
                             f"({(self.n_frames - 1) * self.stride + 1} for n_frames {self.n_frames} at stride "
                             f"{self.stride}); raise it or leave it unset")
        if self.use_8bit_adam and importlib.util.find_spec("bitsandbytes") is None:
            raise ValueError("use_8bit_adam is on but the optional package bitsandbytes is not installed (pip "
                             "install bitsandbytes, CUDA only); install it or turn use_8bit_adam off")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainConfig":
        """Build from a mapping (e.g. YAML); unknown keys raise ``ValueError`` listing the valid ones."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown training setting(s) {unknown}; valid: {sorted(names)}")
        return cls(**dict(values))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: Documented training presets (``python -m lamp_model train --preset NAME``; flags and YAML override them).
#: ``editing``: the official one-clip tuning for video editing (``configs/run-editing.yaml``): one video,
#: 24 frames at stride 2, 500 steps, a save (and validation, when first frames are given) every 50 steps.
PRESETS: dict[str, dict[str, Any]] = {
    "editing": {"n_frames": 24, "stride": 2, "steps": 500, "save_every": 50, "validate_every": 50},
}


# ---------------------------------------------------------------------------------------------- files
def _plot_font(size: int):
    """Pillow's bundled scalable font at ``size`` px (its fixed bitmap font where FreeType is missing)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ValueError, OSError):  # Pillow < 10.1 or no FreeType
        return ImageFont.load_default()


def loss_plot(losses: Sequence[float], size: tuple[int, int] = (640, 360), title: str = "LAMP training loss"):
    """Draw the loss curve with Pillow (raw values light, a moving average dark), with a title, the loss on
    the y axis and the step on the x axis; text scales with the image height. Returns a PIL image."""
    from PIL import Image, ImageDraw

    w, h = size
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    px = max(10, round(h / 24))  # ~15 px at the default 360 px height
    font, title_font = _plot_font(px), _plot_font(round(px * 1.2))
    values = [v for v in losses if math.isfinite(v)]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5 * abs(lo or 1), hi + 0.5 * abs(hi or 1)
    ticks = [hi, (hi + lo) / 2, lo]
    labels = [f"{v:.4g}" for v in ticks]
    label_w = max(draw.textlength(t, font=font) for t in labels)
    left, right = round(px * 1.8 + label_w + px * 0.6), w - px
    top, bottom = round(px * 2.6), h - round(px * 2.4)
    draw.text((left, round(px * 0.6)), title, fill="black", font=title_font)
    draw.rectangle([left, top, right, bottom], outline="black")
    axis = Image.new("RGB", (round(draw.textlength("loss", font=font)) + 4, px + 6), "white")
    ImageDraw.Draw(axis).text((2, 0), "loss", fill="black", font=font)
    img.paste(axis.rotate(90, expand=True), (round(px * 0.3), (top + bottom) // 2 - axis.width // 2))
    if not values:
        draw.text((left + px, top + px), "no steps yet", fill="gray", font=font)
        return img
    n = len(losses)

    def xy(i: int, v: float) -> tuple[float, float]:
        x = left + (right - left) * (i / max(n - 1, 1))
        return x, bottom - (bottom - top) * (v - lo) / (hi - lo)

    raw = [xy(i, v) for i, v in enumerate(losses) if math.isfinite(v)]
    if len(raw) > 1:
        draw.line(raw, fill=(170, 190, 230), width=max(1, px // 15))
    window = max(1, n // 20)
    cumsum = np.cumsum([0.0] + [v if math.isfinite(v) else 0.0 for v in losses])
    smooth = [xy(i, (cumsum[i + 1] - cumsum[max(0, i + 1 - window)]) / (i + 1 - max(0, i + 1 - window)))
              for i in range(n)]
    if len(smooth) > 1:
        draw.line(smooth, fill=(20, 60, 160), width=max(2, px // 7))
    for v, text in zip(ticks, labels):
        y = xy(0, v)[1]
        draw.line([(left - px // 3, y), (left, y)], fill="black")
        draw.text((left - px // 2 - draw.textlength(text, font=font), y - px * 0.6), text, fill="black", font=font)
    below = bottom + round(px * 0.4)
    draw.text((left, below), "1", fill="black", font=font)
    draw.text((right - draw.textlength(str(n), font=font), below), str(n), fill="black", font=font)
    draw.text(((left + right - draw.textlength("step", font=font)) / 2, below), "step", fill="black", font=font)
    return img


def _flatten_optimizer(state: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{idx}.{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for idx, entry in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(entry)
    return {"state": state, "param_groups": meta["param_groups"]}


def _step_seed(seed: int, process: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, process, step]).generate_state(1, np.uint64)[0])


def check_state_file(path: Path) -> dict[str, str]:
    """The metadata of a training state written by :meth:`MotionTrainer.save`; raises ``FileNotFoundError`` /
    ``ValueError`` saying what the file is instead (reads only the header)."""
    from safetensors import safe_open

    if not path.is_file():
        raise FileNotFoundError(f"no training state at '{path}' (written as {STATE_FILE} in the output folder)")
    try:
        with safe_open(str(path), "pt") as handle:
            meta = handle.metadata() or {}
    except Exception:  # safetensors raises its own error types for files that are not safetensors
        raise ValueError(f"'{path}' is not a LAMP training state (not even a safetensors file); resume from the "
                         f"{STATE_FILE} in the run's output folder") from None
    if "lamp_train_state" not in meta:
        raise ValueError(f"'{path}' is not a LAMP training state (a motion file cannot be resumed exactly: "
                         f"use the {STATE_FILE} next to it)")
    return meta


# ---------------------------------------------------------------------------------------------- trainer
class MotionTrainer:
    """Trains a LAMP UNet's motion layers on a video set. See the module docstring for an example.

    Args:
        unet: a LAMP UNet (:class:`~lamp_model.unet3d.LampUNet3D`), on the device to train on. Only its
            :func:`trainable_parameters` change; fp32 master weights are kept for them.
        clip_source: a :class:`~lamp_model.data.LatentClipSet` (cached, scaled clip latents).
        text_embeddings: prompt embeddings ``[1, L, D]`` (shared by every clip, the official case) or
            ``[N, L, D]`` (one per clip).
        config: a :class:`TrainConfig`.
        output_dir: where :meth:`checkpoint` writes the latest motion file (``motion.safetensors``),
            the training state (``train_state.safetensors``), ``loss.jsonl`` and ``loss.png``. ``None``:
            nothing is written unless you call :meth:`save` / :meth:`save_motion` yourself.
        noise_scheduler: a diffusers training scheduler (default :func:`default_noise_scheduler`).
        accelerator: an ``accelerate.Accelerator`` for several processes (DDP); ``None`` for one.
        validator: ``validator(trainer)`` called every ``config.validate_every`` steps (use
            :meth:`evaluating` inside it).
        motion_metadata: extra metadata written into the motion file (e.g. ``{"base": ...}``).
    """

    def __init__(self, unet: torch.nn.Module, clip_source: LatentClipSet, text_embeddings: torch.Tensor,
                 config: TrainConfig | None = None, output_dir: str | Path | None = None,
                 noise_scheduler: Any = None, accelerator: Any = None,
                 validator: Callable[["MotionTrainer"], None] | None = None,
                 motion_metadata: Mapping[str, Any] | None = None) -> None:
        self.config = config = config or TrainConfig()
        clip_source.check(config.n_frames, config.stride, config.hflip)
        if text_embeddings.ndim != 3 or text_embeddings.shape[0] not in (1, len(clip_source)):
            raise ValueError(f"text_embeddings must be [1, L, D] or [{len(clip_source)}, L, D] (one per clip), "
                             f"got {tuple(text_embeddings.shape)}")
        width = (getattr(unet, "config", None) or {}).get("cross_attention_dim")
        if width and text_embeddings.shape[-1] != width:
            raise ValueError(f"text_embeddings are {text_embeddings.shape[-1]} wide but the UNet's text context is "
                             f"{width} wide; encode the prompt with the base model's own text encoder (SD-1.x: "
                             "CLIP ViT-L, 768)")
        finite("text_embeddings", text_embeddings)
        self.unet = unet
        self.clips = clip_source
        self.noise_scheduler = noise_scheduler or default_noise_scheduler()
        self.accelerator = accelerator
        self.validator = validator
        self.motion_metadata = dict(motion_metadata or {})
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.process_index = accelerator.process_index if accelerator is not None else 0
        self.num_processes = accelerator.num_processes if accelerator is not None else 1
        self.global_step = 0
        self.loss_history: list[float] = []
        self.last_grad_norm = float("nan")
        if self.output_dir is not None and self.is_main_process:
            remove_stale_temp_files(self.output_dir)  # left by a save that was killed (logged)

        self.trainable = trainable_parameters(unet)
        if not self.trainable:
            raise ValueError("the UNet has no LAMP trainable parameters; is it a LAMP UNet (inflate_unet)?")
        chosen = {id(p) for _, p in self.trainable}
        autocast_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(config.mixed_precision)
        for p in unet.parameters():
            p.requires_grad_(id(p) in chosen)
        for _, p in self.trainable:  # fp32 master weights, as the official script keeps them
            if p.dtype != torch.float32:
                p.data = p.data.float()
        # Frozen weights: in the autocast dtype under mixed precision on CUDA (halves their memory; autocast
        # rounds them per op anyway), else fp32 (an exact up-cast of a half base). Not on CPU: CPU autocast
        # leaves GroupNorm out of its fp32 list, so half weights would meet fp32 activations there.
        device = accelerator.device if accelerator is not None else next(unet.parameters()).device
        frozen_dtype = torch.float32
        if autocast_dtype is not None and config.cast_frozen_weights and torch.device(device).type == "cuda":
            frozen_dtype = autocast_dtype
        for p in unet.parameters():
            if id(p) not in chosen and p.dtype != frozen_dtype:
                p.data = p.data.to(frozen_dtype)
        unet.enable_gradient_checkpointing(config.gradient_checkpointing)
        unet.train()
        self.autocast_dtype = autocast_dtype
        self.model = accelerator.prepare_model(unet) if accelerator is not None else unet
        self.device = next(p for _, p in self.trainable).device
        self.text_embeddings = text_embeddings.detach().to(self.device, torch.float32)
        self.optimizer = self._make_optimizer()
        from diffusers.optimization import get_scheduler

        self.lr_scheduler = get_scheduler(config.lr_scheduler, self.optimizer, num_warmup_steps=config.lr_warmup_steps,
                                          num_training_steps=config.steps)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.mixed_precision == "fp16")

    # ------------------------------------------------------------------ construction helpers
    def _make_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        params = [p for _, p in self.trainable]
        kwargs = dict(lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_epsilon,
                      weight_decay=cfg.weight_decay)
        if cfg.use_8bit_adam:
            try:
                import bitsandbytes as bnb
            except ImportError as err:
                raise RuntimeError("use_8bit_adam needs the optional package bitsandbytes (pip install bitsandbytes, "
                                   "CUDA only); install it or turn 8-bit Adam off.") from err
            return bnb.optim.AdamW8bit(params, **kwargs)
        return torch.optim.AdamW(params, **kwargs)

    @property
    def is_main_process(self) -> bool:
        return self.process_index == 0

    @property
    def learning_rate(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def to(self, device: str | torch.device) -> "MotionTrainer":
        """Move the UNet, the prompt embeddings and the optimizer state to ``device`` (e.g. to the CPU between
        training chunks, so the GPU memory is free for other work). Single-process trainers only."""
        device = torch.device(device)
        if device == self.device:
            return self
        if self.num_processes > 1:
            raise RuntimeError("a trainer running on several processes cannot be moved")
        self.unet.to(device)
        self.text_embeddings = self.text_embeddings.to(device)
        for entry in self.optimizer.state.values():
            for key, value in entry.items():
                if torch.is_tensor(value) and key != "step":  # AdamW keeps its step counter on the CPU
                    entry[key] = value.to(device)
        self.device = device
        return self

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[torch.nn.Module]:
        """Context for validation: the raw UNet in eval mode, no grad, the training autocast; restores
        training mode afterwards. Yields the UNet."""
        self.unet.eval()
        try:
            with torch.no_grad(), self._autocast():
                yield self.unet
        finally:
            self.unet.train()

    # ------------------------------------------------------------------ one step
    def batch(self, step: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents ``[B, C, F, h, w]`` and embeddings ``[B, L, D]`` of ``step`` (on the training device).
        Clips are visited in order (no shuffle, as the official DataLoader), split across processes."""
        cfg = self.config
        first = (step * self.num_processes + self.process_index) * cfg.batch_size
        indices = [(first + j) % len(self.clips) for j in range(cfg.batch_size)]
        latents = torch.stack([self.clips.sample(i, cfg.n_frames, cfg.stride, cfg.hflip, generator) for i in indices])
        emb = self.text_embeddings
        emb = emb.expand(len(indices), -1, -1) if emb.shape[0] == 1 else emb[indices]
        return latents.to(self.device), emb

    def step(self) -> float:
        """Run one optimisation step; returns its loss (averaged over processes)."""
        cfg = self.config
        generator = torch.Generator().manual_seed(_step_seed(cfg.seed, self.process_index, self.global_step))
        latents, emb = self.batch(self.global_step, generator)
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            loss = lamp_loss(self.model, latents, emb, self.noise_scheduler, generator=generator,
                             pin_first_frame=cfg.pin_first_frame)
        if not torch.isfinite(loss) and not self.scaler.is_enabled():  # (fp16: the scaler skips the update)
            raise FloatingPointError(
                f"LAMP training loss is {loss.item()} at step {self.global_step + 1}; the weights were not "
                "updated. Lower the learning rate, or train in fp32/bf16, then resume from the last save.")
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        params = [p for _, p in self.trainable]
        self.last_grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        value = loss.detach().float()
        if self.num_processes > 1:
            value = self.accelerator.reduce(value, reduction="mean")
        self.global_step += 1
        self.loss_history.append(float(value))
        return float(value)

    def train(self, n_steps: int | None = None,
              callback: Callable[["MotionTrainer", float], None] | None = None) -> list[float]:
        """Run ``n_steps`` steps (default: up to ``config.steps``), checkpointing every ``save_every`` steps
        (when ``output_dir`` is set) and validating every ``validate_every`` steps (when a validator is set).
        ``callback(trainer, loss)`` runs after each step, after any save, and may raise to stop (nothing
        done so far is lost from memory; call :meth:`checkpoint` to persist it). Returns the losses."""
        cfg = self.config
        n = max(0, cfg.steps - self.global_step) if n_steps is None else int(n_steps)
        losses = []
        for _ in range(n):
            losses.append(self.step())
            step = self.global_step
            if self.output_dir is not None:
                self._append_loss_log()
                if cfg.save_every and step % cfg.save_every == 0:
                    self.checkpoint()
            if self.validator is not None and cfg.validate_every and step % cfg.validate_every == 0:
                self.validate()
            if callback is not None:
                callback(self, losses[-1])
        return losses

    def validate(self) -> None:
        """Run the validator now (main process only; the others wait)."""
        if self.validator is not None and self.is_main_process:
            self.validator(self)
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()

    # ------------------------------------------------------------------ state
    def _metadata(self) -> dict[str, Any]:
        cfg = self.config
        return {"motion_prompt": self.clips.name.replace("_", " "), "n_frames": cfg.n_frames, "stride": cfg.stride,
                "width": cfg.width, "height": cfg.height, "training_steps": self.global_step, **self.motion_metadata}

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """``(tensors, info)``: fp32 trainable weights and optimizer tensors, and the JSON-able rest (step,
        config, loss history, LR-schedule and grad-scaler state)."""
        tensors = {f"param.{name}": p.detach().float() for name, p in self.trainable}
        opt_tensors, opt_meta = _flatten_optimizer(self.optimizer.state_dict())
        tensors.update(opt_tensors)
        info = {"version": _STATE_VERSION, "step": self.global_step, "config": self.config.to_dict(),
                "loss_history": self.loss_history, "optimizer": opt_meta,
                "lr_scheduler": self.lr_scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "num_processes": self.num_processes}
        return tensors, info

    def load_state_dict(self, tensors: Mapping[str, torch.Tensor], info: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (the trainer must be built the same way: same UNet config)."""
        if info.get("version") != _STATE_VERSION:
            raise ValueError(f"training state version {info.get('version')} is not supported (expected {_STATE_VERSION})")
        names = {name for name, _ in self.trainable}
        saved = {k[len("param."):] for k in tensors if k.startswith("param.")}
        if saved != names:
            raise ValueError(f"training state does not fit this UNet: {len(saved ^ names)} trainable tensors differ "
                             f"(e.g. {sorted(saved ^ names)[:3]}); resume with the same base model and settings")
        changed = {k: (v, getattr(self.config, k)) for k, v in info["config"].items()
                   if k not in _FREE_ON_RESUME and getattr(self.config, k, v) != v}
        if changed:
            log.warning("resuming with changed settings %s (saved, now): the run is no longer exactly "
                        "reproducible", changed)
        if info.get("num_processes", 1) != self.num_processes:
            log.warning("resuming on %d processes, saved with %d: the data order changes",
                        self.num_processes, info.get("num_processes", 1))
        with torch.no_grad():
            for name, p in self.trainable:
                value = tensors[f"param.{name}"]
                if value.shape != p.shape:
                    raise ValueError(f"training state: {name} has shape {tuple(value.shape)}, the UNet {tuple(p.shape)}")
                p.copy_(value)
        self.optimizer.load_state_dict(_unflatten_optimizer(tensors, info["optimizer"]))
        self.lr_scheduler.load_state_dict(info["lr_scheduler"])
        self.scaler.load_state_dict(info["scaler"])
        self.global_step = int(info["step"])
        self.loss_history = [float(v) for v in info["loss_history"]]

    def save(self, path: str | Path) -> Path:
        """Write the training state (see :meth:`state_dict`) atomically to ``path`` (.safetensors)."""

        tensors, info = self.state_dict()
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        return atomic_save(tensors, path, {"lamp_train_state": json.dumps(info)})

    def load(self, path: str | Path) -> None:
        """Resume from a file written by :meth:`save`."""
        path = Path(path)
        meta = check_state_file(path)
        # Read on the CPU: load_state_dict moves the moments next to their parameters and keeps AdamW's step
        # counters on the CPU, where a non-capturable AdamW needs them.
        self.load_state_dict(load_file(str(path), device="cpu"), json.loads(meta["lamp_train_state"]))
        if self.output_dir is not None and self.is_main_process:
            self._rewrite_loss_log()

    def save_motion(self, path: str | Path, dtype: torch.dtype = torch.float16) -> Path:
        """Write the compact motion file (LAMP layers + tuned ``attn1.to_q``) with training metadata."""
        save_motion(self.unet, path, metadata=self._metadata(), dtype=dtype)
        return Path(path)

    def checkpoint(self) -> None:
        """Save the latest motion file, training state and loss plot into ``output_dir`` (main process
        only; other processes wait). Also keeps ``motion-step<N>.safetensors`` every ``keep_every`` steps."""
        if self.output_dir is None:
            raise ValueError("checkpoint() needs an output_dir")
        if self.is_main_process:
            out = self.output_dir
            out.mkdir(parents=True, exist_ok=True)
            self.save(out / STATE_FILE)
            self.save_motion(out / MOTION_FILE)
            if self.config.keep_every and self.global_step % self.config.keep_every == 0:
                self.save_motion(out / f"motion-step{self.global_step:06d}.safetensors")
            loss_plot(self.loss_history).save(out / LOSS_PLOT)
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()

    # ------------------------------------------------------------------ loss log
    def _append_loss_log(self) -> None:
        if not self.is_main_process:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with open(self.output_dir / LOSS_LOG, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"step": self.global_step, "loss": self.loss_history[-1], "lr": self.learning_rate,
                                 "grad_norm": self.last_grad_norm, "time": round(time.time(), 3)}) + "\n")

    def _rewrite_loss_log(self) -> None:
        """After a resume: keep the log consistent with the restored state. Steps after the save are dropped;
        the records of the kept steps keep every field (lr, grad_norm, time) the log had for them."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        logged: dict[int, dict[str, Any]] = {}
        with contextlib.suppress(OSError):
            for line in (self.output_dir / LOSS_LOG).read_text(encoding="utf-8").splitlines():
                with contextlib.suppress(ValueError, TypeError, KeyError):
                    record = json.loads(line)
                    logged[int(record["step"])] = record
        lines = []
        for i, value in enumerate(self.loss_history):
            record = logged.get(i + 1, {})
            lines.append(json.dumps({**record, "step": i + 1, "loss": value}))
        text = "".join(line + "\n" for line in lines)
        atomic_write(self.output_dir / LOSS_LOG, lambda tmp: tmp.write_text(text, encoding="utf-8"))


# ---------------------------------------------------------------------------------------------- validation
def make_validator(first_frames: Sequence[torch.Tensor], conds: Sequence[torch.Tensor], uncond: torch.Tensor,
                   names: Sequence[str], decode: Callable[[torch.Tensor], torch.Tensor], out_dir: str | Path,
                   steps: int = 50, guidance_scale: float = 12.5, seed: int = 33, fps: float = 8,
                   video_format: str = "mp4", scheduler: Any = None) -> Callable[[MotionTrainer], list[Path]]:
    """A validator for :class:`MotionTrainer`: animates each first frame with the current weights.

    ``first_frames[i]``: a first-frame latent ``[1, C, 1, h, w]`` (scaled); ``conds[i]`` its prompt
    embedding ``[1, L, D]``; ``uncond`` the empty prompt's; ``names[i]`` a file stem; ``decode(latents
    [1, C, F, h, w]) -> frames [F, H, W, 3]`` in 0..1. Each call runs :func:`~lamp_model.sampling.sample_video`
    (official: 50 DDIM steps, guidance 12.5, shared noise 0.2, AdaIN) with noise drawn from ``seed`` (the
    same every time, so samples of different steps compare) and writes
    ``<out_dir>/step-<N>/<name>.<video_format>`` plus a ``<name>.png`` frame strip. Returns the video paths.
    """
    from .noise import make_raw_noise
    from .sampling import sample_video
    from .video_io import write_strip, write_video

    if not (len(first_frames) == len(conds) == len(names)):
        raise ValueError("make_validator needs as many first frames, prompt embeddings and names")

    def validate(trainer: MotionTrainer) -> list[Path]:
        folder = Path(out_dir) / f"step-{trainer.global_step:06d}"
        written = []
        with trainer.evaluating() as unet:
            for first, cond, name in zip(first_frames, conds, names):
                c, _, h, w = first.shape[1:]
                noise = make_raw_noise(seed, (1, c, trainer.config.n_frames, h, w))
                latents = sample_video(unet, first.to(trainer.device), cond.to(trainer.device),
                                       uncond.to(trainer.device), noise, steps=steps, guidance_scale=guidance_scale,
                                       scheduler=scheduler)
                frames = decode(latents.float())
                written.append(write_video(frames, folder / f"{name}.{video_format}", fps=fps))
                write_strip(frames, folder / f"{name}.png")
        log.info("validation at step %d: %s", trainer.global_step, ", ".join(str(p) for p in written))
        return written

    return validate


def main(argv: list[str] | None = None) -> int:
    """``python -m lamp_model.train``: see :mod:`lamp_model.train_cli`."""
    from .train_cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    import sys

    sys.exit(main())
