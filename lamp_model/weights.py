"""Reading and writing LAMP weights.

Formats, told apart by their tensor names and shapes (never by file name), see :func:`detect_format`:

- ``lamp_full``: the whole LAMP UNet state dict, parameter names as in the official checkpoints. An
  official ``unet/`` folder (``config.json`` + ``diffusion_pytorch_model.bin`` or ``.safetensors``) or
  one ``.safetensors`` file.
- ``lamp_motion``: the compact motion file, only what LAMP changes on top of SD-1.x (every ``conv1d``,
  ``conv_gate``, ``attn_temp``, ``norm_temp`` tensor and the tuned ``attn1.to_q.weight``), with
  metadata. A LAMP model is an SD-1.x base plus one motion file.
- ``sd1_ldm`` / ``sd1_diffusers``: a 2-D SD-1.x UNet (the base) in the original LDM naming (single-file
  checkpoints, ComfyUI MODEL state dicts) or in diffusers naming. LDM names are converted with diffusers'
  own ``convert_ldm_unet_checkpoint``.

Pickles (``.bin``, ``.ckpt``, ``.pt``) are read only with ``torch.load(weights_only=True)``. Every
problem with the input raises :class:`WeightsFormatError` naming the file, what was found and what to do.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Union

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .checks import first_nonfinite
from .unet3d import LampUNet3D, UnsupportedConfigError, is_motion_key, lamp_config, lamp_key, motion_conv_names

MOTION_FORMAT, MOTION_VERSION = "lamp_motion", "1"
#: UNet settings stored in a motion file's metadata (``architecture``, JSON).
ARCH_KEYS = ("block_out_channels", "layers_per_block", "attention_head_dim", "cross_attention_dim", "norm_num_groups")
#: The settings tensor shapes cannot tell; without a config they default to SD-1.x (8 heads, 32 groups).
HINT_KEYS = ("attention_head_dim", "norm_num_groups")
CONFIG_DIR = Path(__file__).with_name("configs")
LDM_PREFIX = "model.diffusion_model."
_WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                 "diffusion_pytorch_model.bin", "diffusion_pytorch_model.fp16.bin")
_LDM_ROOTS = ("input_blocks.", "middle_block.", "output_blocks.")
_DIFFUSERS_ROOTS = ("down_blocks.", "mid_block.", "up_blocks.")
_OTHER_KINDS = (  # (name fragments, what the file is) for files that are not a UNet LAMP can use
    (("lora",), "a LoRA"),
    (("controlnet_", "input_hint_block", "zero_convs", "control_model."), "a ControlNet"),
    (("encoder.", "decoder.", "first_stage_model.", "quant_conv.", "post_quant_conv."), "a VAE"),
    (("text_model.", "cond_stage_model.", "conditioner.", "text_projection"), "a text encoder"),
)

Weights = Union[Mapping[str, Any], Iterable[str]]
PathLike = Union[str, "os.PathLike[str]"]


class WeightsFormatError(ValueError):
    """Weights that LAMP cannot use; the message names the file, what was found and what to do."""


def sd1_config() -> dict[str, Any]:
    """The SD-1.4/1.5 UNet config shipped in ``configs/sd1_unet.json`` (diffusers keys)."""
    cfg = json.loads((CONFIG_DIR / "sd1_unet.json").read_text())
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def is_motion_file_key(key: str) -> bool:
    """True for the tensors a compact motion file holds: the LAMP layers and the tuned ``attn1.to_q``."""
    return is_motion_key(key) or key.endswith(".attn1.to_q.weight")


def motion_state_dict(unet: torch.nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The compact motion tensors of a LAMP UNet (or of its state dict)."""
    state = unet.state_dict() if isinstance(unet, torch.nn.Module) else unet
    return {k: v for k, v in state.items() if is_motion_file_key(k)}


# ---------------------------------------------------------------------------------------------- detection
def _shapes(weights: Weights) -> dict[str, tuple[int, ...] | None]:
    """key -> shape (None when only names are known) of a state dict, a key->shape map or a key list."""
    if isinstance(weights, Mapping):
        return {k: tuple(v.shape) if hasattr(v, "shape") else (tuple(v) if v is not None else None)
                for k, v in weights.items()}
    return {k: None for k in weights}


def _unet_part(shapes: Mapping[str, Any]) -> dict[str, Any]:
    """The UNet entries of a state dict: those under ``model.diffusion_model.`` if there are any."""
    inner = {k[len(LDM_PREFIX):]: v for k, v in shapes.items() if k.startswith(LDM_PREFIX)}
    return inner or dict(shapes)


def _as_2d(shapes: Mapping[str, Any]) -> dict[str, Any]:
    """The 2-D SD view of a LAMP state dict: LAMP layers dropped, ``.conv2d`` removed from conv names."""
    return {k.replace(".conv2d.", "."): v for k, v in shapes.items() if not is_motion_key(k)}


def _levels(keys: Iterable[str]) -> int:
    """Number of resolution levels of a UNet in diffusers or LDM naming."""
    keys = list(keys)
    if any(k.startswith("input_blocks.") for k in keys):
        return 1 + sum(k.startswith("input_blocks.") and k.endswith(".0.op.weight") for k in keys)
    return len({k.split(".")[1] for k in keys if k.startswith("down_blocks.")})


def _check_family(unet: Mapping[str, tuple[int, ...] | None], source: str) -> None:
    """Raise for UNets of other families (SD-XL, SD-2, inpainting): LAMP is built on SD-1.x."""
    def fail(found: str) -> None:
        raise WeightsFormatError(f"{source}: {found}. LAMP is built on SD-1.x: use an SD-1.4/1.5 model "
                                 "(any SD-1.x fine-tune works; SD-XL can still make the first frame).")
    ctx = next((s[1] for k, s in unet.items() if k.endswith("attn2.to_k.weight") and s), None)
    conv_in = next((unet[k] for k in ("conv_in.weight", "conv_in.conv2d.weight", "input_blocks.0.0.weight")
                    if unet.get(k)), None)
    if any(k.startswith(("label_emb.", "add_embedding.")) for k in unet):
        fail("this is an SD-XL UNet (it has the label_emb/add_embedding size conditioning)")
    if ctx == 2048 or (_levels(unet) == 3 and conv_in and conv_in[0] == 320):
        fail(f"this is an SD-XL UNet (text context {ctx}, {_levels(unet)} resolution levels)")
    if any(".transformer_blocks.1." in k for k in unet):
        fail("this is an SD-XL-style UNet (several transformer layers per block)")
    if ctx == 1024 or any(k.endswith("proj_in.weight") and s and len(s) == 2 for k, s in unet.items()):
        fail(f"this is an SD-2.x UNet (text context {ctx}, linear proj_in)")
    if conv_in and conv_in[1] != 4:
        fail(f"this UNet takes {conv_in[1]} input channels (an inpainting or instruct model), not 4")


def detect_format(weights: Weights, source: str = "weights") -> str:
    """Say what a state dict is: ``lamp_full``, ``lamp_motion``, ``sd1_ldm`` or ``sd1_diffusers``.

    ``weights`` is a state dict, a key->shape map or a list of keys (then shape checks are skipped).
    Raises :class:`WeightsFormatError` for SD-XL, SD-2, AnimateDiff modules, LoRAs, VAEs, text encoders,
    ControlNets and anything else that is not a UNet LAMP can use.
    """
    shapes = _shapes(weights)
    if not shapes:
        raise WeightsFormatError(f"{source}: holds no tensors. Pick a LAMP motion file, an official LAMP "
                                 "checkpoint or an SD-1.x model.")
    if any("motion_modules." in k or "temporal_transformer" in k for k in shapes):
        raise WeightsFormatError(f"{source}: this is an AnimateDiff motion module (motion_modules / "
                                 "temporal_transformer tensors), not a LAMP motion file. Use it with an AnimateDiff "
                                 "node pack; for LAMP pick a motion file made by LAMP training or conversion.")
    for fragments, what in _OTHER_KINDS[:2]:
        if any(f in k for k in shapes for f in fragments):
            raise _unrelated(source, what, shapes)
    unet = _unet_part(shapes)
    keys = list(unet)
    if any(k.startswith(_LDM_ROOTS) for k in keys):
        _check_family(unet, source)
        return "sd1_ldm"
    if any(k.startswith(_DIFFUSERS_ROOTS) for k in keys) or "conv_in.weight" in unet:
        motion, inflated = any(map(is_motion_key, keys)), any(".conv2d." in k for k in keys)
        if motion and inflated:
            _check_family(unet, source)
            return "lamp_full"
        if motion and all(map(is_motion_file_key, keys)):
            return "lamp_motion"
        if not motion and not inflated:
            _check_family(unet, source)
            return "sd1_diffusers"
    what = next((w for fragments, w in _OTHER_KINDS[2:] if any(k.startswith(fragments) for k in keys)),
                "not a UNet that LAMP knows")
    raise _unrelated(source, what, shapes)


def detect_file_format(path: PathLike) -> str:
    """:func:`detect_format` of a weights file, from its header only (safetensors tensors are not read)."""
    return detect_format(_read_header(Path(path))[0], str(path))


def _unrelated(source: str, what: str, shapes: Mapping[str, Any]) -> WeightsFormatError:
    sample = ", ".join(list(shapes)[:3])
    return WeightsFormatError(f"{source}: this is {what} (tensors such as {sample}), unrelated to LAMP. Pick a LAMP "
                             "motion file or official LAMP checkpoint as the motion, and an SD-1.x checkpoint "
                             "as the base.")


# ---------------------------------------------------------------------------------------------- config inference
def _shape_config(weights: Weights, source: str) -> dict[str, Any]:
    """The config fields that tensor shapes tell, from a 2-D UNet in diffusers naming."""
    shapes = _shapes(weights)
    try:
        levels = _levels(shapes)
        def has_attn(prefix: str, i: int) -> bool:
            return any(k.startswith(f"{prefix}.{i}.attentions.") for k in shapes)
        return {
            "in_channels": shapes["conv_in.weight"][1], "out_channels": shapes["conv_out.weight"][0],
            "block_out_channels": [shapes[f"down_blocks.{i}.resnets.0.conv1.weight"][0] for i in range(levels)],
            "layers_per_block": len({k.split(".")[3] for k in shapes if k.startswith("down_blocks.0.resnets.")}),
            "cross_attention_dim": next(s[1] for k, s in shapes.items() if k.endswith("attn2.to_k.weight")),
            "down_block_types": ["CrossAttnDownBlock2D" if has_attn("down_blocks", i) else "DownBlock2D"
                                 for i in range(levels)],
            "up_block_types": ["CrossAttnUpBlock2D" if has_attn("up_blocks", i) else "UpBlock2D" for i in range(levels)],
        }
    except (KeyError, StopIteration, TypeError, IndexError) as e:
        raise WeightsFormatError(f"{source}: cannot tell the UNet layout from its tensors (missing {e}); the file "
                                 "is incomplete or not an SD-1.x-shaped UNet.") from None


def _same(a: Any, b: Any) -> bool:
    """Config values equal, reading a per-block list with one repeated value as that value, and the official
    3-D block type names (``CrossAttnDownBlock3D``) as their 2-D counterparts."""
    seqs = isinstance(a, (list, tuple)), isinstance(b, (list, tuple))
    if seqs[0] != seqs[1]:
        seq, one = (a, b) if seqs[0] else (b, a)
        return all(_same(x, one) for x in seq)
    return json.dumps(a).replace("3D", "2D") == json.dumps(b).replace("3D", "2D")


def infer_config(weights: Weights, overrides: Mapping[str, Any] | None = None, source: str = "weights") -> dict:
    """An SD-1.x UNet config for a 2-D (diffusers naming) or full LAMP state dict that came without one.

    Shapes give in/out channels, block_out_channels, layers_per_block, cross_attention_dim and the block
    types. The rest, which shapes cannot tell, is the SD-1.x default (``configs/sd1_unet.json``: 8 heads,
    32 groups) unless ``overrides`` (e.g. from metadata) say otherwise. ``overrides`` that contradict the
    shapes raise :class:`WeightsFormatError`.
    """
    shapes = _shapes(weights)
    derived = _shape_config(_as_2d(shapes) if any(".conv2d." in k for k in shapes) else shapes, source)
    overrides = dict(overrides or {})
    clash = [f"{k} {overrides[k]} vs {v}" for k, v in derived.items() if k in overrides and not _same(overrides[k], v)]
    if clash:
        raise WeightsFormatError(f"{source}: its stated config does not match its tensors ({'; '.join(clash)}).")
    return {**sd1_config(), **derived, **overrides}


def motion_architecture(metadata: Mapping[str, str] | None) -> dict[str, Any]:
    """The UNet settings a motion (or full LAMP) file's metadata records ({} when none)."""
    text = (metadata or {}).get("architecture")
    if not text:
        return {}
    try:
        arch = json.loads(text)
    except json.JSONDecodeError as e:
        raise WeightsFormatError(f"metadata 'architecture' is not valid JSON ({e}): the file is damaged.") from None
    if not isinstance(arch, dict):
        raise WeightsFormatError("metadata 'architecture' is not a JSON object: the file is damaged.")
    return arch


# ---------------------------------------------------------------------------------------------- file reading
def _file_kind(path: Path) -> str:
    """``safetensors``, ``zip`` (torch.save) or ``pickle`` (legacy torch.save), told by content: safetensors
    has its JSON header at byte 8."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
    except OSError as e:
        raise WeightsFormatError(f"{path}: cannot be read ({e}).") from None
    if head[8:9] == b"{":
        return "safetensors"
    if head[:2] == b"PK" or head[:1] == b"\x80":
        return "zip" if head[:2] == b"PK" else "pickle"
    raise WeightsFormatError(f"{path}: is neither a safetensors file nor a PyTorch checkpoint (it is empty, "
                             "truncated or corrupt). Download or copy it again.")


def _read_header(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """(key -> shape for safetensors, read without loading tensor data; key -> tensor for pickles), metadata."""
    kind = _file_kind(path)
    if kind == "safetensors":
        try:
            with safe_open(str(path), framework="pt") as f:
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}, dict(f.metadata() or {})
        except Exception as e:  # safetensors raises its own error types for damaged headers
            raise WeightsFormatError(f"{path}: corrupt or truncated safetensors file ({e}). Download or copy it "
                                     "again.") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=kind == "zip")
    except Exception as e:  # zip/pickle errors, or objects that weights_only refuses
        raise WeightsFormatError(
            f"{path}: cannot be loaded as plain weights ({type(e).__name__}: {str(e).splitlines()[0][:200]}). It is "
            "corrupt or truncated, or it holds more than tensors (only weights_only loading is allowed): "
            "download it again or convert it to .safetensors.") from None
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise WeightsFormatError(f"{path}: holds a {type(obj).__name__}, not a state dict of tensors.")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}, {}


def _read_tensors(path: Path, header: Mapping[str, Any], keys: Iterable[str]) -> dict[str, torch.Tensor]:
    """The tensors ``keys`` of a file whose header :func:`_read_header` gave."""
    keys = list(keys)
    if all(isinstance(header[k], torch.Tensor) for k in keys):
        return {k: header[k] for k in keys}
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in keys}
    except Exception as e:
        raise WeightsFormatError(f"{path}: corrupt or truncated safetensors file ({e}). Download or copy it "
                                 "again.") from None


def _read_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    header, metadata = _read_header(path)
    return _read_tensors(path, header, header), metadata


def read_weights(path: PathLike) -> dict[str, torch.Tensor]:
    """Every tensor of one weights file (``.safetensors``, or a pickle opened with ``weights_only``): the same
    reader, and the same clear :class:`WeightsFormatError` for an empty, corrupt or non-weights file, as the
    UNet loaders (used for VAE files, which have no loader of their own here)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    return _read_file(path)[0]


def _unet_folder(path: Path) -> Path:
    """The diffusers UNet folder at ``path``: ``path`` itself or its ``unet/`` subfolder."""
    for folder in (path / "unet", path):
        if (folder / "config.json").is_file():
            return folder
    raise WeightsFormatError(f"{path}: folder has neither config.json nor unet/config.json. Expected an official "
                             "LAMP checkpoint folder (unet/ with config.json and diffusion_pytorch_model.bin) or a "
                             "diffusers SD-1.x folder.")


def _read_folder(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], str]:
    """(config, state dict, source name) of a diffusers-style UNet folder."""
    folder = _unet_folder(path)
    weights = next((folder / n for n in _WEIGHT_FILES if (folder / n).is_file()), None)
    if weights is None:
        raise WeightsFormatError(f"{folder}: has no weights file (one of {', '.join(_WEIGHT_FILES)}); sharded "
                                 "checkpoints are not supported. Copy the checkpoint folder completely.")
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise WeightsFormatError(f"{folder / 'config.json'}: unreadable config ({e}).") from None
    state, _ = _read_file(weights)
    return config, state, str(weights)


def _sidecar_config(path: Path, shapes: Mapping[str, Any]) -> dict[str, Any]:
    """A config.json beside a full LAMP file (or in a ``unet/`` folder beside it) whose widths fit its tensors."""
    derived = _shape_config(_as_2d(shapes), str(path))
    for candidate in (path.parent / "config.json", path.parent / "unet" / "config.json"):
        with contextlib.suppress(OSError, json.JSONDecodeError, AttributeError):
            cfg = json.loads(candidate.read_text())
            if all(_same(cfg.get(k), derived[k]) for k in ("block_out_channels", "layers_per_block",
                                                              "cross_attention_dim")):
                return {k: v for k, v in cfg.items() if not k.startswith("_")}
    return {}


# ---------------------------------------------------------------------------------------------- building
def _lamp_config(config: Mapping[str, Any], source: str) -> dict[str, Any]:
    """:func:`lamp_config`, with its errors and an impossible group count as :class:`WeightsFormatError`."""
    try:
        cfg = lamp_config(config)
    except UnsupportedConfigError as e:
        raise WeightsFormatError(f"{source}: {e}") from None
    groups = cfg["norm_num_groups"]
    if any(w % groups for w in cfg["block_out_channels"]):
        raise WeightsFormatError(
            f"{source}: norm_num_groups={groups} does not divide block_out_channels {cfg['block_out_channels']}. "
            "Weights without a config get the SD-1.x default of 32 groups, so this is not an SD-1.x-sized model: "
            "keep its config.json beside the file (or its unet/config.json), or save it with its config in the "
            "metadata.")
    return cfg


def _empty_unet(config: Mapping[str, Any], source: str) -> LampUNet3D:
    """A LAMP UNet on the meta device (no memory, no random init); weights are assigned afterwards."""
    cfg = _lamp_config(config, source)
    try:
        with torch.device("meta"):
            return LampUNet3D(cfg)
    except (ValueError, TypeError, KeyError) as e:
        raise WeightsFormatError(f"{source}: its config cannot build a LAMP UNet ({e}).") from None


def _assign(unet: LampUNet3D, state: Mapping[str, torch.Tensor], dtype: torch.dtype, device: Any,
            source: str) -> LampUNet3D:
    """Put a complete state dict into a meta-device LAMP UNet, checking names and shapes first."""
    expected = unet.state_dict()
    missing = [k for k in expected if k not in state]
    if missing:
        raise WeightsFormatError(f"{source}: {len(missing)} tensors are missing, e.g. {missing[:4]}. The file is "
                                 "incomplete, or made for a different UNet layout.")
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        raise WeightsFormatError(f"{source}: {len(unexpected)} tensors do not belong to the LAMP UNet, e.g. "
                                 f"{unexpected[:4]}.")
    wrong = [f"{k} {tuple(state[k].shape)} (needs {tuple(v.shape)})" for k, v in expected.items()
             if state[k].shape != v.shape]
    if wrong:
        raise WeightsFormatError(f"{source}: {len(wrong)} tensors have the wrong shape, e.g. {wrong[:3]}; the "
                                 "weights were made for a different UNet config.")
    unet.load_state_dict({k: v.to(device=device, dtype=dtype) for k, v in state.items()}, strict=True, assign=True)
    return unet.eval()


def _motion_widths(motion: Mapping[str, torch.Tensor]) -> list[int] | None:
    """block_out_channels a motion state dict was made for, read from its first resnet convs."""
    widths, i = [], 0
    while f"down_blocks.{i}.resnets.0.conv1.conv1d.weight" in motion:
        weight = motion[f"down_blocks.{i}.resnets.0.conv1.conv1d.weight"]
        if weight.ndim != 3:  # not a [C, C, k] conv1d (e.g. flattened): the shape check names it
            return None
        widths.append(int(weight.shape[0]))
        i += 1
    return widths or None


def check_motion_fits(config: Mapping[str, Any], motion_state: Mapping[str, torch.Tensor],
                      metadata: Mapping[str, str] | None = None) -> None:
    """Raise :class:`WeightsFormatError` when a motion state dict was not made for the base ``config`` (a 2-D
    SD-1.x UNet config) or holds tensors that are not LAMP motion tensors. ``metadata`` (a motion file's) lets
    the check also compare the settings shapes cannot tell."""
    cfg = {**sd1_config(), **config}  # checked before building, so that a misfit is named as such
    made_for = {**motion_architecture(metadata)}
    widths = _motion_widths(motion_state)
    if widths:
        made_for["block_out_channels"] = widths
    clash = [k for k in ARCH_KEYS if k in made_for and not _same(made_for[k], cfg[k])]
    if clash:
        raise WeightsFormatError("the motion file was made for a different UNet: " + ", ".join(
            f"{k} {made_for[k]} (the base model has {cfg[k]})" for k in clash) +
            ". Use the SD-1.x base the motion was trained on (any SD-1.4/1.5 fine-tune fits an SD-1.x motion).")
    foreign = [k for k in motion_state if not is_motion_file_key(k)]
    if foreign:
        raise WeightsFormatError(f"motion state dict holds tensors that are not LAMP motion tensors, e.g. {foreign[:3]}.")


def unet_from_parts(config: Mapping[str, Any], base_state_2d: Mapping[str, torch.Tensor],
                    motion_state: Mapping[str, torch.Tensor], dtype: torch.dtype = torch.float32,
                    device: str | torch.device = "cpu", metadata: Mapping[str, str] | None = None) -> LampUNet3D:
    """Build the LAMP UNet from an SD-1.x base (config + diffusers 2-D state dict) and a motion state dict.

    The base tensors go in under the LAMP names (convs gain ``.conv2d``), then the motion tensors, which
    replace the base's ``attn1.to_q``. ``metadata`` (a motion file's) lets the fit check also compare the
    settings shapes cannot tell.
    """
    check_motion_fits(config, motion_state, metadata)
    unet = _empty_unet(config, "base model")
    names = set(motion_conv_names(unet))
    state = {lamp_key(k, names): v for k, v in base_state_2d.items()}
    state.update(motion_state)
    return _assign(unet, state, dtype, device, "base model + motion file")


# ---------------------------------------------------------------------------------------------- SD-1.x base
def _ldm_to_diffusers(unet: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """LDM-named UNet tensors (prefix already removed) -> diffusers names, with diffusers' converter."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    levels = _levels(unet)
    n_out = len({k.split(".")[1] for k in unet if k.startswith("output_blocks.")})
    if not n_out or n_out % levels:
        raise WeightsFormatError(f"{source}: the LDM UNet's output blocks are incomplete ({n_out} for {levels} "
                                 "levels); the checkpoint is damaged.")
    converted = convert_ldm_unet_checkpoint({LDM_PREFIX + k: v for k, v in unet.items()},
                                            {"layers_per_block": n_out // levels - 1})
    lost = [k for k, v in converted.items() if v is None]
    if lost or len(converted) != len(unet):
        taken = {id(v) for v in converted.values()}
        left = [k for k, v in unet.items() if id(v) not in taken]
        raise WeightsFormatError(f"{source}: the LDM UNet does not convert cleanly (missing {lost[:3]}, "
                                 f"unused {left[:3]}); the checkpoint is incomplete or not SD-1.x.")
    return converted


def load_base_unet2d(base: PathLike | Mapping[str, torch.Tensor], dtype: torch.dtype = torch.float32,
                     device: str | torch.device = "cpu", hints: Mapping[str, Any] | None = None,
                     ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """An SD-1.x base UNet as ``(config, state dict in diffusers 2-D naming)``, tensors in ``dtype`` on ``device``.

    ``base``: a diffusers SD-1.x folder (with ``unet/``, or the ``unet`` folder itself), a single-file
    SD-1.x checkpoint (``.safetensors``, or ``.ckpt``/``.pt`` read with ``weights_only``; keys prefixed
    ``model.diffusion_model.``), or an in-memory 2-D UNet state dict in LDM naming (with or without that
    prefix, e.g. ``model.model.diffusion_model.state_dict()`` of a ComfyUI MODEL) or diffusers naming.
    Without a config of its own the config is inferred (:func:`infer_config`); ``hints`` then supply
    ``attention_head_dim`` / ``norm_num_groups`` (e.g. from the motion file's metadata).
    """
    config = None
    if isinstance(base, Mapping):
        source, state = "base state dict", dict(base)
    else:
        path = Path(base)
        if not path.exists():
            raise FileNotFoundError(f"SD-1.x base model not found: {path}")
        if path.is_dir():
            config, state, source = _read_folder(path)
        else:
            source = str(path)
            header, _ = _read_header(path)
            detect_format(header, source)  # reject unrelated files before reading their tensors
            state = _read_tensors(path, header, _unet_keys(header))
    kind = detect_format(state, source)
    if kind in ("lamp_full", "lamp_motion"):
        raise _lamp_as_base(source, kind)
    state = _unet_part(state)
    if kind == "sd1_ldm":
        state = _ldm_to_diffusers(state, source)
    if config is None:
        config = infer_config(state, {k: hints[k] for k in HINT_KEYS if hints and k in hints}, source)
    else:
        config = {k: v for k, v in config.items() if not k.startswith("_")}
    _refuse_nonfinite(state, source)
    return config, {k: v.to(device=device, dtype=dtype) for k, v in state.items()}


def _refuse_nonfinite(tensors: Mapping[str, torch.Tensor], source: str) -> None:
    """Refuse weights holding NaN/inf (a damaged or diverged file), naming the first bad tensor."""
    bad = first_nonfinite(tensors)
    if bad is not None:
        raise WeightsFormatError(f"{source}: tensor {bad} holds NaN/inf values, so every video made with it would "
                                 "be garbage. The file is damaged or comes from a diverged training run: download, "
                                 "convert or train it again (a training run can be resumed from an earlier save).")


def base_context_width(base: PathLike) -> int:
    """Check an SD-1.x base from its header only (no tensor data is read from safetensors; a pickle is
    memory-mapped) and return its UNet's text-context width, so that a wrong base (SD-XL, SD-2, a LAMP file,
    a VAE…) is named before any expensive work."""
    path = Path(base)
    if not path.exists():
        raise FileNotFoundError(f"SD-1.x base model not found: {path}")
    if path.is_dir():
        folder = _unet_folder(path)
        weights = next((folder / n for n in _WEIGHT_FILES if (folder / n).is_file()), None)
        if weights is None:
            raise WeightsFormatError(f"{folder}: has no weights file (one of {', '.join(_WEIGHT_FILES)}).")
        header, source = _read_header(weights)[0], str(weights)
    else:
        header, source = _read_header(path)[0], str(path)
        header = {k: header[k] for k in _unet_keys(header)}
    kind = detect_format(header, source)
    if kind in ("lamp_full", "lamp_motion"):
        raise _lamp_as_base(source, kind)
    widths = [s[1] for k, s in _shapes(header).items() if k.endswith("attn2.to_k.weight") and s and len(s) == 2]
    if not widths:
        raise WeightsFormatError(f"{source}: no cross-attention found; this is not an SD-1.x UNet.")
    return int(widths[0])


def _lamp_as_base(source: str, kind: str) -> WeightsFormatError:
    return WeightsFormatError(f"{source}: this is a LAMP {'model' if kind == 'lamp_full' else 'motion file'}, "
                              "not an SD-1.x base. Give it as the motion (load_unet(path, base=...)) and an "
                              "SD-1.x checkpoint as the base.")


def _unet_keys(header: Mapping[str, Any]) -> list[str]:
    """Keys of the UNet part of a checkpoint (all keys when there is no ``model.diffusion_model.`` prefix)."""
    inner = [k for k in header if k.startswith(LDM_PREFIX)]
    return inner or list(header)


# ---------------------------------------------------------------------------------------------- public loaders
def load_unet(path: PathLike, base: PathLike | Mapping[str, torch.Tensor] | None = None,
              dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> LampUNet3D:
    """Load a LAMP UNet (eval mode).

    ``path``: an official ``unet/`` folder (or its parent), a full LAMP ``.safetensors`` (config from its
    metadata, a ``config.json`` / ``unet/config.json`` beside it, or inferred from the shapes), or a
    compact motion file, which needs ``base`` (see :func:`load_base_unet2d`).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"LAMP weights not found: {path}")
    if path.is_dir():
        config, state, source = _read_folder(path)
        kind = detect_format(state, source)
        if kind != "lamp_full":
            raise _not_lamp(source, kind)
        _refuse_nonfinite(state, source)
        return _assign(_empty_unet(config, source), state, dtype, device, source)
    header, metadata = _read_header(path)
    kind = detect_format(header, str(path))
    if kind == "lamp_full":
        overrides = motion_architecture(metadata) or _sidecar_config(path, header)
        config = infer_config(header, overrides, str(path))
        state = _read_tensors(path, header, header)
        _refuse_nonfinite(state, str(path))
        return _assign(_empty_unet(config, str(path)), state, dtype, device, str(path))
    if kind != "lamp_motion":
        raise _not_lamp(str(path), kind)
    if base is None:
        raise WeightsFormatError(f"{path}: is a LAMP motion file, which needs an SD-1.x base model: "
                                 "load_unet(motion_file, base=<SD-1.x checkpoint, diffusers folder or UNet state dict>).")
    motion, metadata = read_motion(path)
    config, base_state = load_base_unet2d(base, dtype, device, hints=motion_architecture(metadata))
    return unet_from_parts(config, base_state, motion, dtype, device, metadata=metadata)


def _not_lamp(source: str, kind: str) -> WeightsFormatError:
    return WeightsFormatError(f"{source}: is a plain SD-1.x UNet ({kind}) without LAMP motion layers. Give it as the "
                              "base, together with a LAMP motion file: load_unet(motion_file, base=this).")


def read_motion(path: PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata (all strings) of a compact motion file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LAMP motion file not found: {path}")
    header, metadata = _read_header(path)
    kind = detect_format(header, str(path))
    if kind != "lamp_motion":
        hint = ("convert it first: python -m lamp_model convert <it> <motion.safetensors>" if kind == "lamp_full"
                else "give it as the base model")
        raise WeightsFormatError(f"{path}: is {kind}, not a LAMP motion file; {hint}.")
    version = metadata.get("format_version", MOTION_VERSION)
    if not version.isdigit() or int(version) > int(MOTION_VERSION):
        raise WeightsFormatError(f"{path}: motion file format version {version!r} is newer than this ComfyUI-LAMP "
                                 f"understands ({MOTION_VERSION}). Update ComfyUI-LAMP.")
    tensors = _read_tensors(path, header, header)
    _refuse_nonfinite(tensors, str(path))
    return tensors, metadata


# ---------------------------------------------------------------------------------------------- writing
def _strings(metadata: Mapping[str, Any] | None) -> dict[str, str]:
    """safetensors metadata must be strings: non-string values are stored as JSON."""
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}


#: The temporary files of :func:`atomic_write`: ``.<name>.<pid>.<8 hex digits>.tmp`` (group 1 = the pid).
TEMP_FILE_PATTERN = re.compile(r"^\..+\.(\d+)\.[0-9a-f]{8}\.tmp$")
#: Where process ids cannot be probed safely (Windows), a temporary file this old (s) counts as stale.
_STALE_AFTER_S = 3600.0


def _umask() -> int:
    """The process umask (read from /proc where possible: setting it to read it races with other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: PathLike, write: Callable[[Path], Any]) -> Path:
    """Run ``write(tmp)`` on a temporary file in ``path``'s folder, then ``os.replace`` it onto ``path``, so a
    reader (or a crash) never sees a half-written file; the temporary file is removed if writing fails. The
    file gets the user's umask permissions (safetensors itself writes 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


def _writer_gone(pid: int, mtime: float) -> bool:
    if os.name != "posix":
        return time.time() - mtime > _STALE_AFTER_S
    if pid == os.getpid():
        return False  # possibly a save in progress in another thread of this process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists but belongs to someone else
        return False
    return False


def remove_stale_temp_files(folder: PathLike) -> list[Path]:
    """Delete the temporary files an interrupted :func:`atomic_write` left in ``folder`` (a SIGKILL or power
    loss during a save; at SD size 0.5-3 GB each). Only files of that exact naming pattern whose writing
    process no longer runs are removed; each removal is logged. Returns the removed paths."""
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = TEMP_FILE_PATTERN.match(entry.name)
        if not match or not entry.is_file() or entry.is_symlink():
            continue
        with contextlib.suppress(OSError):
            if _writer_gone(int(match.group(1)), entry.stat().st_mtime):
                size = entry.stat().st_size
                entry.unlink()
                removed.append(entry)
                logging.getLogger("lamp_model").info("removed %s (%.1f MB), left by an interrupted save", entry,
                                                     size / 1e6)
    return removed


def atomic_save(tensors: Mapping[str, torch.Tensor], path: PathLike, metadata: dict[str, str]) -> Path:
    """Write a safetensors file atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: save_file(dict(tensors), str(tmp), metadata=metadata))


def save_motion(unet: LampUNet3D, path: PathLike, metadata: Mapping[str, Any] | None = None,
                dtype: torch.dtype = torch.float16) -> Path:
    """Write the compact motion file of ``unet`` (atomically).

    Metadata (all strings): ``format`` = ``lamp_motion``, ``format_version``, ``base_family`` = ``sd1``,
    ``architecture`` (JSON of the UNet settings in :data:`ARCH_KEYS`), plus the user ``metadata`` (motion
    prompt, frames, resolution, steps…; non-strings stored as JSON; the reserved keys above win).
    """
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in motion_state_dict(unet).items()}
    if not tensors:
        raise ValueError(f"save_motion: the model has no LAMP motion layers ({type(unet).__name__}); give a LAMP UNet")
    bad = first_nonfinite(tensors)
    if bad is not None:
        raise ValueError(f"save_motion: tensor {bad} holds NaN/inf values (in {str(dtype).replace('torch.', '')}), "
                         f"so {Path(path).name} is not written: the training diverged (resume from an earlier save "
                         "with a lower learning rate), or the values overflow fp16 (save in fp32)")
    meta = {**_strings(metadata), "format": MOTION_FORMAT, "format_version": MOTION_VERSION, "base_family": "sd1",
            "architecture": json.dumps({k: unet.config[k] for k in ARCH_KEYS})}
    return atomic_save(tensors, path, meta)


def save_unet(unet: LampUNet3D, path: PathLike, metadata: Mapping[str, Any] | None = None,
              dtype: torch.dtype | None = None) -> Path:
    """Write the whole LAMP UNet as one ``.safetensors`` (``lamp_full``), its full config in the metadata."""
    tensors = {k: v.detach().to("cpu", dtype or v.dtype).contiguous() for k, v in unet.state_dict().items()}
    meta = {**_strings(metadata), "format": "lamp_full", "architecture": json.dumps(unet.config)}
    return atomic_save(tensors, path, meta)


def convert_official(src: PathLike, out_path: PathLike, dtype: torch.dtype = torch.float16,
                     metadata: Mapping[str, Any] | None = None) -> Path:
    """Official LAMP checkpoint (``unet/`` folder, its parent, or a full ``.safetensors``) -> compact motion file."""
    where = Path(src).resolve()
    if where.is_file() and detect_format(_read_header(where)[0], str(where)) == "lamp_motion":
        raise WeightsFormatError(f"{where}: is already a LAMP motion file; there is nothing to convert.")
    unet = load_unet(where)
    name = where.parent.name if where.name == "unet" else where.name  # the motion's folder, e.g. turn_to_smile
    meta = {"converted_from": f"official LAMP checkpoint {name}", **(metadata or {})}
    return save_motion(unet, out_path, meta, dtype)


def main(argv: list[str] | None = None) -> int:
    """``python -m lamp_model convert <official unet folder> <out.safetensors> [--fp32] [--meta KEY=VALUE]``."""
    from .cli import ArgumentParser, fail

    parser = ArgumentParser(prog="python -m lamp_model convert",
                            description="Official LAMP checkpoint -> compact LAMP motion file.")
    parser.add_argument("src", help="official checkpoint: the unet/ folder, its parent, or a full .safetensors")
    parser.add_argument("out", help="motion file to write (.safetensors)")
    parser.add_argument("--fp32", action="store_true", help="store float32 instead of float16 (twice the size)")
    parser.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE",
                        help="extra metadata, e.g. --meta prompt='a horse running'")
    args = parser.parse_args(argv)
    bad = [m for m in args.meta if "=" not in m]
    if bad:
        parser.error(f"--meta needs KEY=VALUE, got {bad[0]!r}")
    try:
        out = convert_official(args.src, args.out, torch.float32 if args.fp32 else torch.float16,
                               dict(m.split("=", 1) for m in args.meta))
    except (ValueError, OSError) as e:  # WeightsFormatError is a ValueError
        from .cli import describe

        return fail(describe(e))
    tensors, _ = read_motion(out)
    params = sum(t.numel() for t in tensors.values())
    print(f"wrote {out}: {len(tensors)} tensors, {params:,} parameters, {out.stat().st_size / 1e6:.1f} MB "
          f"({'fp32' if args.fp32 else 'fp16'})")
    return 0
