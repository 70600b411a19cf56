"""LAMP Video Metrics: the paper's CLIP text alignment, frame consistency and diversity of an IMAGE batch,
for A/B-ing settings inside ComfyUI (engine: :mod:`lamp_model.metrics`)."""
from __future__ import annotations

import json
import logging
import os
import uuid
from typing import Any

import torch

from . import host

log = logging.getLogger("ComfyUI-LAMP")

_NO_COMBO = "(use clip_path)"
_NODE = "LAMP Video Metrics"
#: The last CLIP loaded, kept on the offload device between runs: {"key": (path, mtime), "bundle": ClipBundle}.
_cache: dict[str, Any] = {}


def _clip(path: str):
    """The CLIP of ``path``, loaded once (again when its config.json changes), on the offload device."""
    from lamp_model.metrics import load_clip

    config = os.path.join(path, "config.json")
    key = (path, os.path.getmtime(config) if os.path.isfile(config) else None)
    if _cache.get("key") != key:
        _cache.clear()
        _cache.update(key=key, bundle=load_clip(path, device=host.offload_device()))
    return _cache["bundle"]


def _on_compute_device(clip):
    """Make room on the compute device (ComfyUI offloads other models if needed), then move the CLIP there."""
    size = sum(p.numel() * p.element_size() for p in clip.model.parameters())
    host.make_room(int(size * 1.3))
    return clip.to(host.torch_device())


def split_videos(images: torch.Tensor, frames_per_video: int) -> list[torch.Tensor]:
    """The IMAGE batch as one video (``frames_per_video`` 0) or as consecutive videos of that many frames."""
    if not torch.is_tensor(images) or images.ndim != 4 or images.shape[-1] not in (3, 4) or images.shape[0] < 1:
        shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
        raise ValueError(f"{_NODE}: 'images' must be a ComfyUI IMAGE batch [frames,H,W,3], got {shape}.")
    n = images.shape[0]
    if frames_per_video <= 0:
        return [images]
    if n % frames_per_video:
        raise ValueError(f"{_NODE}: the batch holds {n} frames, not a multiple of frames_per_video={frames_per_video}; "
                         "set frames_per_video to the length of each video (0 = the whole batch is one video).")
    return list(images.split(frames_per_video))


def _prompts(prompt: str, n_videos: int) -> list[str]:
    lines = [line.strip() for line in (prompt or "").splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{_NODE}: enter the prompt the video was made for (text alignment compares it to every frame).")
    if len(lines) == 1:
        return lines * n_videos
    if len(lines) != n_videos:
        raise ValueError(f"{_NODE}: {len(lines)} prompt lines for {n_videos} videos; give one prompt, or one line per video.")
    return lines


def render_table(report: dict[str, Any]) -> Any:
    """The per-video scores and the summary as a small PIL image (the node's preview)."""
    from PIL import Image, ImageDraw, ImageFont

    rows = [["video", "prompt", "alignment", "consistency"]]
    rows += [[v["name"], v["prompt"][:40], f"{v['alignment']:.2f}", f"{v['consistency']:.2f}"] for v in report["videos"]]
    overall = report["overall"]
    div = "–" if overall["diversity"] is None else f"{overall['diversity']:.2f}"
    rows.append(["all", f"diversity {div} ({'official' if report['official_quirks'] else 'corrected'})",
                 f"{overall['alignment']:.2f}", f"{overall['consistency']:.2f}"])
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    widths = [max(int(measure.textlength(r[c], font=font)) for r in rows) + 16 for c in range(4)]
    line = 18
    img = Image.new("RGB", (sum(widths) + 8, line * len(rows) + 8), (24, 24, 28))
    draw = ImageDraw.Draw(img)
    for i, row in enumerate(rows):
        x, colour = 4, (255, 220, 120) if i in (0, len(rows) - 1) else (230, 230, 230)
        for c, cell in enumerate(row):
            draw.text((x + 4, 4 + i * line), cell, fill=colour, font=font)
            x += widths[c]
    return img


class LampVideoMetrics:
    """LAMP Video Metrics node: IMAGE batch + prompt + CLIP folder → the paper's scores (JSON + table)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The video frames (after VAE Decode / LAMP Color Match); several "
                                                "videos of equal length may be batched, see frames_per_video."}),
                "prompt": ("STRING", {"multiline": True, "default": "",
                                      "tooltip": "The prompt the video was made for; one line per video when the batch "
                                                 "holds several videos with different prompts."}),
                "clip_model": ([_NO_COMBO] + host.list_clip_models(),
                               {"tooltip": f"A whole transformers CLIP folder (text AND vision towers, tokenizer, "
                                           f"preprocessor_config.json) in models/{host.CLIP_FOLDER_NAME}/, e.g. "
                                           "openai/clip-vit-large-patch14 saved there. ComfyUI's clip_vision files "
                                           "cannot give text alignment: they lack the text tower."}),
                "clip_path": ("STRING", {"default": "",
                                         "tooltip": "Instead of the list: the CLIP folder's absolute path, or a path "
                                                    f"relative to models/{host.CLIP_FOLDER_NAME}. Wins when not empty."}),
                "frames_per_video": ("INT", {"default": 0, "min": 0, "max": 4096,
                                             "tooltip": "0: the whole batch is one video. N: the batch is consecutive "
                                                        "videos of N frames each (diversity needs 2 or more)."}),
                "official_quirks": ("BOOLEAN", {"default": True,
                                                "tooltip": "On: exactly the official helpers (diversity divides by 16 "
                                                           "frames, truncating uint8 conversion). Off: true means and "
                                                           "re-normalised video features."}),
            },
        }

    RETURN_TYPES = ("STRING", "STRING")
    RETURN_NAMES = ("metrics_json", "table")
    OUTPUT_TOOLTIPS = ("Every score as JSON (per video, overall, CLIP used).",
                       "The paper's table in markdown (alignment ↑, consistency ↑, diversity ↓).")
    FUNCTION = "measure"
    CATEGORY = "LAMP"
    OUTPUT_NODE = True
    DESCRIPTION = ("The paper's CLIP metrics as the official helpers compute them: text alignment (CLIP score "
                   "with the prompt, mean over frames), frame consistency (mean similarity of all frame pairs) and, "
                   "for several videos, diversity (similarity of the videos' mean features; lower = more diverse).")

    def measure(self, images: torch.Tensor, prompt: str, clip_model: str = _NO_COMBO, clip_path: str = "",
                frames_per_video: int = 0, official_quirks: bool = True) -> dict:
        from lamp_model.metrics import EvalVideo, MetricsError, evaluate, format_table

        name = (clip_path or "").strip() or ("" if clip_model == _NO_COMBO else clip_model)
        if not name:
            raise ValueError(f"{_NODE}: choose a CLIP in clip_model or enter clip_path (a transformers CLIP folder "
                             f"in models/{host.CLIP_FOLDER_NAME}/).")
        videos = split_videos(images, int(frames_per_video))
        prompts = _prompts(prompt, len(videos))
        items = [EvalVideo("video", f"video {k + 1}", p, v[..., :3]) for k, (v, p) in enumerate(zip(videos, prompts))]
        bar = host.progress(len(items))
        try:
            clip = _on_compute_device(_clip(host.clip_model_path(name)))
            report = evaluate(clip, items, official_quirks=bool(official_quirks),
                              progress=lambda done, total: bar.update_absolute(done))
        except MetricsError as e:
            raise ValueError(f"{_NODE}: {e}") from None
        finally:
            if "bundle" in _cache:
                _cache["bundle"].to(host.offload_device())
        table = format_table(report)
        text = json.dumps(report, indent=2)
        return {"ui": {"text": [table], "images": [self._preview(report)]}, "result": (text, table)}

    @staticmethod
    def _preview(report: dict[str, Any]) -> dict[str, str]:
        folder = os.path.join(host.temp_dir(), "lamp_metrics")
        os.makedirs(folder, exist_ok=True)
        filename = f"metrics_{uuid.uuid4().hex[:8]}.png"
        render_table(report).save(os.path.join(folder, filename))
        return {"filename": filename, "subfolder": "lamp_metrics", "type": "temp"}


NODE_CLASS_MAPPINGS = {"LAMP_VideoMetrics": LampVideoMetrics}
NODE_DISPLAY_NAME_MAPPINGS = {"LAMP_VideoMetrics": "LAMP Video Metrics"}
