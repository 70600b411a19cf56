"""The LAMP video UNet: an SD-1.x UNet inflated with LAMP's motion layers.

Built from any SD-1.x-style diffusers ``UNet2DConditionModel`` config (SD-1.4/1.5, or a tiny one for
tests); the official 3-D config (``*3D`` block types, ``use_temp``) is accepted as well. Every conv of
the UNet is a :class:`~lamp_model.motion_layers.GatedCausalConv`, every transformer block has frame-0
self-attention and temporal attention, and the resnets' GroupNorm pools over frames. Parameter names are
those of the official checkpoints, so their state dicts load as they are.

The module is called as ``unet(sample[B,4,F,h,w], timestep, encoder_hidden_states[B,L,D])`` and returns
the noise prediction ``[B,4,F,h,w]`` (with ``return_dict=True``, an object with ``.sample``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import FirstFrameBank, LampTransformerBlock, Transformer3D
from .motion_layers import FramePooledGroupNorm, GatedCausalConv

_CROSS_ATTN_DOWN = {"CrossAttnDownBlock2D", "CrossAttnDownBlock3D"}
_PLAIN_DOWN = {"DownBlock2D", "DownBlock3D"}
_CROSS_ATTN_UP = {"CrossAttnUpBlock2D", "CrossAttnUpBlock3D"}
_PLAIN_UP = {"UpBlock2D", "UpBlock3D"}
_MID = {None, "UNetMidBlock2DCrossAttn", "UNetMidBlock3DCrossAttn"}

#: Config defaults of an SD-1.x UNet (what the SD-1.4 hub config leaves out).
SD1_DEFAULTS: dict[str, Any] = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "center_input_sample": False,
    "flip_sin_to_cos": True, "freq_shift": 0,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2, "downsample_padding": 1,
    "mid_block_scale_factor": 1, "act_fn": "silu", "norm_num_groups": 32, "norm_eps": 1e-5,
    "cross_attention_dim": 768, "attention_head_dim": 8,
}

# Config values other than these mean a model that is not SD-1.x-shaped (SD-2, SD-XL, class-conditioned…).
_MUST_BE = {
    "use_linear_projection": (False, None), "upcast_attention": (False, None),
    "class_embed_type": (None,), "addition_embed_type": (None,), "num_class_embeds": (None,),
    "only_cross_attention": (False, None), "dual_cross_attention": (False, None),
    "resnet_time_scale_shift": ("default", None), "transformer_layers_per_block": (1, None),
    "encoder_hid_dim": (None,), "time_embedding_type": ("positional", None),
    "act_fn": ("silu",), "center_input_sample": (False,),
}


class UnsupportedConfigError(ValueError):
    """The UNet config does not describe an SD-1.x-shaped model."""


@dataclass
class UNet3DOutput:
    sample: torch.Tensor


def lamp_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Normalise a 2-D (or official 3-D) SD-1.x UNet config into the dict the LAMP UNet is built from.

    Raises :class:`UnsupportedConfigError` naming the first setting that is not SD-1.x-shaped.
    """
    cfg = {k: v for k, v in dict(config).items() if not k.startswith("_")}
    for key, allowed in _MUST_BE.items():
        if key in cfg and cfg[key] not in allowed and not (isinstance(cfg[key], list) and key ==
                                                           "transformer_layers_per_block" and set(cfg[key]) == {1}):
            raise UnsupportedConfigError(
                f"UNet config has {key}={cfg[key]!r}; LAMP needs an SD-1.x UNet ({key}={allowed[0]!r}). "
                "SD-2, SD-XL and other families are not supported: load an SD-1.4/1.5 model.")
    out = {**SD1_DEFAULTS, **{k: cfg[k] for k in SD1_DEFAULTS if k in cfg}}
    if cfg.get("mid_block_type") not in _MID:
        raise UnsupportedConfigError(f"UNet config has mid_block_type={cfg['mid_block_type']!r}; LAMP needs "
                                     "an SD-1.x UNet with a cross-attention mid block.")
    down, up = list(out["down_block_types"]), list(out["up_block_types"])
    unknown = [t for t in down if t not in _CROSS_ATTN_DOWN | _PLAIN_DOWN] + \
              [t for t in up if t not in _CROSS_ATTN_UP | _PLAIN_UP]
    if unknown or len(down) != len(out["block_out_channels"]) or len(up) != len(down):
        raise UnsupportedConfigError(f"UNet config has block types {down} / {up}; LAMP needs SD-1.x blocks "
                                     "(CrossAttnDownBlock2D/DownBlock2D and their up counterparts).")
    out["down_block_types"] = [t.replace("2D", "3D") for t in down]
    out["up_block_types"] = [t.replace("2D", "3D") for t in up]
    out["block_out_channels"] = list(out["block_out_channels"])
    heads = out["attention_head_dim"]  # legacy diffusers naming: for SD-1.x this is the head COUNT
    out["attention_head_dim"] = list(heads) if isinstance(heads, (list, tuple)) else heads
    return out


def _heads(cfg: dict[str, Any], block: int) -> int:
    heads = cfg["attention_head_dim"]
    return heads[block] if isinstance(heads, list) else heads


class ResnetBlock3D(nn.Module):
    """SD's resnet with motion convs and frame-pooled GroupNorm; the time embedding is shared by frames."""

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, groups: int, eps: float,
                 output_scale_factor: float = 1.0) -> None:
        super().__init__()
        self.norm1 = FramePooledGroupNorm(groups, in_channels, eps=eps, affine=True)
        self.conv1 = GatedCausalConv(in_channels, out_channels, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = FramePooledGroupNorm(groups, out_channels, eps=eps, affine=True)
        self.conv2 = GatedCausalConv(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = GatedCausalConv(in_channels, out_channels, 1) if in_channels != out_channels else None
        self.output_scale_factor = output_scale_factor

    def forward(self, x: torch.Tensor, temb: torch.Tensor, num_frames: int) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x, num_frames)), num_frames)
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h, num_frames)), num_frames)
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x, num_frames)
        return (x + h) / self.output_scale_factor


class Downsample3D(nn.Module):
    """Stride-2 motion conv (the official sampler is named "op", so only ``.conv`` exists)."""

    def __init__(self, channels: int, padding: int) -> None:
        super().__init__()
        self.conv = GatedCausalConv(channels, channels, 3, stride=2, padding=padding)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        return self.conv(x, num_frames)


class Upsample3D(nn.Module):
    """Nearest 2x up-sampling per frame (or to an explicit size for odd latents), then a motion conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = GatedCausalConv(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, num_frames: int, size: tuple[int, int] | None = None) -> torch.Tensor:
        if size is None:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        else:
            x = F.interpolate(x, size=size, mode="nearest")
        return self.conv(x, num_frames)


class _Block(nn.Module):
    """Shared runner: resnets (each optionally followed by a transformer), with optional checkpointing."""

    gradient_checkpointing = False

    def _run(self, module: nn.Module, *args: Any) -> torch.Tensor:
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(module, *args, use_reentrant=False)
        return module(*args)


class DownBlock3D(_Block):
    def __init__(self, in_ch: int, out_ch: int, temb_ch: int, layers: int, groups: int, eps: float,
                 heads: int | None, context_dim: int, add_downsample: bool, downsample_padding: int) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock3D(in_ch if i == 0 else out_ch, out_ch, temb_ch, groups, eps) for i in range(layers))
        if heads is not None:
            self.attentions = nn.ModuleList(Transformer3D(out_ch, heads, context_dim, groups) for _ in range(layers))
        self.downsamplers = nn.ModuleList([Downsample3D(out_ch, downsample_padding)]) if add_downsample else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor, context: torch.Tensor,
                num_frames: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        states = []
        for i, resnet in enumerate(self.resnets):
            x = self._run(resnet, x, temb, num_frames)
            if hasattr(self, "attentions"):
                x = self._run(self.attentions[i], x, context, num_frames)
            states.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x, num_frames)
            states.append(x)
        return x, states


class UpBlock3D(_Block):
    def __init__(self, in_ch: int, prev_out_ch: int, out_ch: int, temb_ch: int, layers: int, groups: int,
                 eps: float, heads: int | None, context_dim: int, add_upsample: bool) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock3D((prev_out_ch if i == 0 else out_ch) + (in_ch if i == layers - 1 else out_ch),
                          out_ch, temb_ch, groups, eps) for i in range(layers))
        if heads is not None:
            self.attentions = nn.ModuleList(Transformer3D(out_ch, heads, context_dim, groups) for _ in range(layers))
        self.upsamplers = nn.ModuleList([Upsample3D(out_ch)]) if add_upsample else None

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor], temb: torch.Tensor, context: torch.Tensor,
                num_frames: int, upsample_size: tuple[int, int] | None) -> torch.Tensor:
        for i, resnet in enumerate(self.resnets):
            x = self._run(resnet, torch.cat([x, skips.pop()], dim=1), temb, num_frames)
            if hasattr(self, "attentions"):
                x = self._run(self.attentions[i], x, context, num_frames)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, num_frames, upsample_size)
        return x


class MidBlock3D(_Block):
    def __init__(self, ch: int, temb_ch: int, groups: int, eps: float, heads: int, context_dim: int,
                 scale: float) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(ResnetBlock3D(ch, ch, temb_ch, groups, eps, scale) for _ in range(2))
        self.attentions = nn.ModuleList([Transformer3D(ch, heads, context_dim, groups)])

    def forward(self, x: torch.Tensor, temb: torch.Tensor, context: torch.Tensor, num_frames: int) -> torch.Tensor:
        x = self.resnets[0](x, temb, num_frames)
        x = self.attentions[0](x, context, num_frames)
        return self.resnets[1](x, temb, num_frames)


class LampUNet3D(nn.Module):
    """The LAMP video UNet (see the module docstring). ``config`` is an SD-1.x UNet config."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        cfg = lamp_config(config)
        self.config = cfg
        ch = cfg["block_out_channels"]
        groups, eps, ctx = cfg["norm_num_groups"], cfg["norm_eps"], cfg["cross_attention_dim"]
        temb_ch = ch[0] * 4
        self.conv_in = GatedCausalConv(cfg["in_channels"], ch[0], 3, padding=1)
        self.time_proj = Timesteps(ch[0], cfg["flip_sin_to_cos"], cfg["freq_shift"])
        self.time_embedding = TimestepEmbedding(ch[0], temb_ch)

        self.down_blocks = nn.ModuleList()
        out_ch = ch[0]
        for i, kind in enumerate(cfg["down_block_types"]):
            in_ch, out_ch = out_ch, ch[i]
            heads = _heads(cfg, i) if kind in _CROSS_ATTN_DOWN else None
            self.down_blocks.append(DownBlock3D(in_ch, out_ch, temb_ch, cfg["layers_per_block"], groups, eps,
                                                heads, ctx, i < len(ch) - 1, cfg["downsample_padding"]))
        self.mid_block = MidBlock3D(ch[-1], temb_ch, groups, eps, _heads(cfg, -1), ctx, cfg["mid_block_scale_factor"])

        self.up_blocks = nn.ModuleList()
        rev = list(reversed(ch))
        rev_heads = list(reversed(cfg["attention_head_dim"])) if isinstance(cfg["attention_head_dim"], list) else None
        out_ch = rev[0]
        for i, kind in enumerate(cfg["up_block_types"]):
            prev, out_ch, in_ch = out_ch, rev[i], rev[min(i + 1, len(ch) - 1)]
            heads = (rev_heads[i] if rev_heads else cfg["attention_head_dim"]) if kind in _CROSS_ATTN_UP else None
            self.up_blocks.append(UpBlock3D(in_ch, prev, out_ch, temb_ch, cfg["layers_per_block"] + 1, groups, eps,
                                            heads, ctx, i < len(ch) - 1))
        self.conv_norm_out = FramePooledGroupNorm(groups, ch[0], eps=eps, affine=True)
        self.conv_out = GatedCausalConv(ch[0], cfg["out_channels"], 3, padding=1)

    # ------------------------------------------------------------------ conveniences
    @property
    def dtype(self) -> torch.dtype:
        return self.conv_in.conv2d.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.conv_in.conv2d.weight.device

    def enable_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute resnet and transformer activations in the backward pass (saves training memory)."""
        for block in (*self.down_blocks, *self.up_blocks):
            block.gradient_checkpointing = enabled

    def set_temporal_conv_mode(self, mode: str) -> None:
        """``"causal"`` (official), ``"centered"`` or ``"off"`` for every motion conv (ablations only)."""
        if mode not in {"causal", "centered", "off"}:
            raise ValueError(f"temporal conv mode must be causal, centered or off, not {mode!r}")
        for module in self.modules():
            if isinstance(module, GatedCausalConv):
                module.temporal_mode = mode

    def set_first_frame_kv_only(self, enabled: bool = True) -> None:
        """Frame-0 keys/values computed once per video (default) or for every frame (official way)."""
        for module in self.modules():
            if isinstance(module, LampTransformerBlock):
                module.first_frame_kv_only = enabled

    def set_frame0_bank(self, bank: "FirstFrameBank | None") -> None:
        """Content lock switch (long videos): frame-0 attention records into / reads from ``bank``
        (:class:`~lamp_model.attention.FirstFrameBank`); ``None`` (default) reads each video's own frame 0."""
        for module in self.modules():
            if isinstance(module, LampTransformerBlock):
                module.frame0_bank = bank

    # ------------------------------------------------------------------ forward
    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | float | int,
                encoder_hidden_states: torch.Tensor, return_dict: bool = False,
                down_block_additional_residuals: Sequence[torch.Tensor | None] | None = None,
                mid_block_additional_residual: torch.Tensor | None = None) -> torch.Tensor | UNet3DOutput:
        """Noise prediction for ``sample`` ``[B,C,F,h,w]``.

        ``down_block_additional_residuals`` / ``mid_block_additional_residual`` are ControlNet residuals in
        diffusers' convention (one per skip connection, in down order, added to the skips; one added to the
        mid-block output), but *folded*: ``[B*F, C, h', w']`` with the frames of a video next to each other,
        so each frame gets its own residual. ``None`` entries add nothing.
        """
        if sample.ndim != 5:
            raise ValueError(f"LAMP UNet expects a video latent [B, C, F, H, W], got shape {tuple(sample.shape)}")
        b, _, f, hgt, wid = sample.shape
        if not torch.is_tensor(timestep):
            timestep = torch.tensor([timestep], device=sample.device)
        timestep = timestep.to(sample.device).reshape(-1).expand(b) if timestep.numel() == 1 else timestep
        temb = self.time_embedding(self.time_proj(timestep).to(dtype=self.dtype))
        temb = temb.repeat_interleave(f, dim=0)
        context = encoder_hidden_states.to(self.dtype)

        n_up = sum(block.upsamplers is not None for block in self.up_blocks)
        odd = any(s % (2 ** n_up) for s in (hgt, wid))

        x = sample.to(self.dtype).permute(0, 2, 1, 3, 4).reshape(b * f, -1, hgt, wid)
        x = self.conv_in(x, f)
        skips = [x]
        for block in self.down_blocks:
            x, states = block(x, temb, context, f)
            skips.extend(states)
        if down_block_additional_residuals is not None:
            skips = add_residuals(skips, down_block_additional_residuals)
        x = self.mid_block(x, temb, context, f)
        if mid_block_additional_residual is not None:
            x = x + mid_block_additional_residual.to(x.dtype)
        for block in self.up_blocks:
            n = len(block.resnets)
            block_skips, skips = skips[-n:], skips[:-n]
            size = tuple(skips[-1].shape[-2:]) if odd and block.upsamplers is not None else None
            x = block(x, block_skips, temb, context, f, size)
        x = self.conv_out(F.silu(self.conv_norm_out(x, f)), f)
        out = x.view(b, f, -1, hgt, wid).permute(0, 2, 1, 3, 4)
        return UNet3DOutput(out) if return_dict else out


def add_residuals(skips: list[torch.Tensor], residuals: Sequence[torch.Tensor | None]) -> list[torch.Tensor]:
    """Skips plus ControlNet residuals (same order, ``None`` = nothing); a count mismatch is refused."""
    if len(residuals) != len(skips):
        raise ValueError(f"ControlNet gives {len(residuals)} skip residuals but this LAMP UNet has {len(skips)} "
                         "skip connections: the ControlNet was made for another model family (an SD-XL ControlNet "
                         "does not fit); LAMP needs an SD-1.x (SD-1.5) ControlNet.")
    wrong = [f"{tuple(r.shape)} for {tuple(s.shape)}" for s, r in zip(skips, residuals)
             if r is not None and r.shape != s.shape]
    if wrong:
        raise ValueError(f"ControlNet residuals do not fit this LAMP UNet ({wrong[0]}): the ControlNet was made for "
                         "another model family (e.g. SD-XL); LAMP needs an SD-1.x (SD-1.5) ControlNet.")
    return [s if r is None else s + r.to(s.dtype) for s, r in zip(skips, residuals)]


# ---------------------------------------------------------------------------------------------- inflation
#: Module-name suffixes of the official trainable set (the ``trainable_modules`` of the official configs).
TRAINABLE_MODULES = ("conv1d", "conv_gate", "attn_temp", "attn1.to_q")


def motion_conv_names(unet: nn.Module) -> list[str]:
    """Dotted names of every :class:`GatedCausalConv` (66 on SD-1.4)."""
    return [name for name, m in unet.named_modules() if isinstance(m, GatedCausalConv)]


def lamp_key(key_2d: str, conv_names: set[str]) -> str:
    """Name of a 2-D SD UNet parameter inside the LAMP UNet: convs gain ``.conv2d``, the rest is unchanged."""
    module, _, leaf = key_2d.rpartition(".")
    return f"{module}.conv2d.{leaf}" if module in conv_names else key_2d


def is_motion_key(key: str) -> bool:
    """True for tensors that LAMP adds (not present in the 2-D SD UNet)."""
    return any(part in key for part in (".conv1d.", ".conv_gate.", ".attn_temp.", ".norm_temp.")) or \
        key.startswith(("conv1d.", "conv_gate."))


def inflate_unet(unet2d: nn.Module) -> LampUNet3D:
    """Turn a diffusers SD-1.x ``UNet2DConditionModel`` into the LAMP UNet, as the official loader does.

    Every 2-D tensor is copied (conv weights under ``<conv>.conv2d.*``); the new layers get the official
    initial values: ``conv1d`` and ``conv_gate`` zero, ``attn_temp.to_out.0.weight`` zero (its bias and
    ``to_q/k/v`` keep PyTorch's default init), ``norm_temp`` the LayerNorm defaults. Works on the meta
    device too (then the result is on meta, for counting and planning). dtype and device follow ``unet2d``.
    """
    weight = next(unet2d.parameters())
    with torch.device(weight.device):
        unet = LampUNet3D(dict(unet2d.config)).to(weight.dtype)
    if weight.device.type == "meta":
        return unet
    names = set(motion_conv_names(unet))
    state = {lamp_key(k, names): v for k, v in unet2d.state_dict().items()}
    missing, unexpected = unet.load_state_dict(state, strict=False)
    missing = [k for k in missing if not is_motion_key(k)]
    if missing or unexpected:
        raise ValueError(f"2-D UNet does not fit the LAMP UNet: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return unet


def trainable_parameters(unet: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Exactly the official trainable set: every parameter of a module whose name ends with ``conv1d``,
    ``conv_gate``, ``attn_temp`` or ``attn1.to_q``. ``norm_temp`` (new, but frozen officially) is not in it."""
    chosen: dict[str, nn.Parameter] = {}
    for name, module in unet.named_modules():
        if name.endswith(TRAINABLE_MODULES):
            for pname, p in module.named_parameters():
                chosen[f"{name}.{pname}"] = p
    return list(chosen.items())


def randomize_motion_layers(unet: nn.Module, seed: int = 0, scale: float = 0.05) -> nn.Module:
    """Draw every LAMP layer at random (``norm_temp`` weight around 1), so that none is an identity.

    A freshly inflated UNet has zero temporal branches; tests, benchmarks and the smoke pipeline use this
    to exercise them with a deterministic, device-independent draw.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if is_motion_key(name):
                base = 1.0 if name.endswith("norm_temp.weight") else 0.0
                p.copy_(base + scale * torch.randn(p.shape, generator=generator))
    return unet
