"""The paper's CLIP metrics (Table 1): text alignment, frame consistency and diversity.

The official repository has only helper functions for them (``lamp/util.py`` at 33cd87a, lines 88–160,
written for an OpenAI-CLIP object); this module computes the same numbers with a local transformers CLIP:

* **text alignment** of a video: the mean over its frames of ``s · cos(image feature, text feature)``;
* **frame consistency**: the mean over all frame pairs ``i > j`` of ``s · <f_i, f_j>``;
* **diversity** of one motion's videos: the mean over all video pairs ``i > j`` of ``s · <v_i, v_j>`` with
  ``v`` = the SUM of a video's normalised frame features divided by 16 (hard-coded in the official helper:
  the mean only for 16-frame videos, and not re-normalised). It is a similarity: lower = more diverse.

``s`` is the model's own ``logit_scale.exp()`` (100 for the released CLIP models), features are
L2-normalised in fp32. Frames go through CLIP's own preprocessing after the official ``uint8`` conversion
(``frame*255`` truncated): short side resized to the model's size (bicubic, Pillow), centre crop, CLIP
mean/std. The crop offset is torchvision's ``round((H - size) / 2)`` (what OpenAI CLIP's ``preprocess``
does; transformers floors it, one pixel off for some sizes), everything else is transformers'
``CLIPImageProcessor``.

``official_quirks=True`` (default) reproduces the helpers exactly, including two quirks: the ``/16``
of the diversity, and the value test ``frame.max() <= 1`` that decides whether a frame is scaled by 255
(so a nearly black ``uint8`` frame with values 0/1 is blown up to 0/255). ``official_quirks=False`` gives
the corrected variants: a video feature is the true mean over any frame count, re-normalised; ``uint8``
frames are taken as they are and float frames are rounded (not truncated) to ``uint8``, as the pack's
video writer does, so frames score the same in memory and after a lossless round trip through a file.

Everything here runs batched over frames on the CLIP model's device; :meth:`ClipBundle.to` moves it.
Nothing is ever downloaded: :func:`load_clip` reads a local folder only.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch

Frames = Union[torch.Tensor, np.ndarray, Sequence[Any]]
#: ``progress(done, total)``; may raise to cancel.
Progress = Callable[[int, int], None]

#: The diversity helper's hard-coded frame count (``video_features / 16.0``).
OFFICIAL_DIVERSITY_FRAMES = 16.0
_CLIP_FOLDER_HINT = ("a local transformers CLIP folder (config.json, model.safetensors, tokenizer files "
                     "vocab.json + merges.txt or tokenizer.json, preprocessor_config.json), e.g. a saved copy of "
                     "openai/clip-vit-large-patch14 or openai/clip-vit-base-patch32")


class MetricsError(ValueError):
    """Bad input to the metrics (missing CLIP folder, wrong frames…); the message names the fix."""


# ---------------------------------------------------------------------------------------------- the model
@dataclass
class ClipBundle:
    """A transformers ``CLIPModel`` with its tokenizer and image processor, read from ``path``."""

    model: Any
    tokenizer: Any
    image_processor: Any
    path: Path

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def logit_scale(self) -> float:
        """The model's own similarity scale ``logit_scale.exp()`` (100 for the released CLIP models)."""
        return float(self.model.logit_scale.detach().float().exp())

    @property
    def crop_size(self) -> tuple[int, int]:
        crop = self.image_processor.crop_size
        return int(crop["height"]), int(crop["width"])

    def to(self, device: Union[str, torch.device]) -> "ClipBundle":
        """Move the model (a no-op when it is already there); returns ``self``."""
        if torch.device(device) != self.device:
            self.model.to(device)
        return self


def _image_processor_class() -> Any:
    try:  # transformers >= 5: the Pillow backend by name (the default one needs torchvision)
        from transformers import CLIPImageProcessorPil
        return CLIPImageProcessorPil
    except ImportError:  # transformers 4: CLIPImageProcessor is the Pillow/NumPy one
        from transformers import CLIPImageProcessor
        return CLIPImageProcessor


def load_clip(path: Union[str, Path], device: Union[str, torch.device, None] = None,
              dtype: torch.dtype = torch.float32) -> ClipBundle:
    """Read a CLIP bundle from a LOCAL transformers folder (never downloads; weights from safetensors only).

    Without ``preprocessor_config.json`` the model's own image size and the CLIP mean/std are used.
    Raises :class:`MetricsError` naming what is missing.
    """
    try:
        from transformers import AutoTokenizer, CLIPConfig, CLIPModel
    except ImportError as err:
        raise MetricsError("the CLIP metrics need the package 'transformers' (pip install transformers)") from err
    folder = Path(path).expanduser()
    if folder.is_file():
        raise MetricsError(f"'{folder}' is a file; the CLIP must be a folder: give {_CLIP_FOLDER_HINT}")
    if not folder.is_dir():
        raise MetricsError(f"CLIP folder '{folder}' does not exist; give {_CLIP_FOLDER_HINT}")
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise MetricsError(f"'{folder}' has no config.json; give {_CLIP_FOLDER_HINT}")
    try:
        model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    except (OSError, json.JSONDecodeError) as err:
        raise MetricsError(f"{config_file} cannot be read ({err})") from err
    if model_type != "clip":
        raise MetricsError(f"'{folder}' holds a {model_type!r} model, not a full CLIP (model_type 'clip' with both "
                           "text and vision towers); ComfyUI's clip_vision files lack the text tower. Give "
                           + _CLIP_FOLDER_HINT)
    if not ((folder / "tokenizer.json").is_file() or
            ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file())):
        raise MetricsError(f"'{folder}' has no tokenizer (tokenizer.json, or vocab.json + merges.txt); copy the "
                           "tokenizer files of the same CLIP into it (text alignment needs them)")
    if not any(folder.glob("*.safetensors")):
        raise MetricsError(f"'{folder}' has no .safetensors weights (only safetensors are read); save the model "
                           "with save_pretrained(..., safe_serialization=True) or take the hub's model.safetensors")
    try:
        config = CLIPConfig.from_pretrained(str(folder), local_files_only=True)
        model = CLIPModel.from_pretrained(str(folder), config=config, local_files_only=True,
                                          use_safetensors=True).to(dtype)
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        processor_cls = _image_processor_class()
        if (folder / "preprocessor_config.json").is_file():
            image_processor = processor_cls.from_pretrained(str(folder), local_files_only=True)
        else:
            size = int(config.vision_config.image_size)
            image_processor = processor_cls(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    except (OSError, ValueError, KeyError) as err:
        raise MetricsError(f"cannot load the CLIP in '{folder}' ({type(err).__name__}: {str(err)[:300]}); give "
                           + _CLIP_FOLDER_HINT) from err
    model.eval().requires_grad_(False)
    bundle = ClipBundle(model, tokenizer, image_processor, folder)
    return bundle.to(device) if device is not None else bundle


# ---------------------------------------------------------------------------------------------- frames
def to_uint8_frames(frames: Frames, official_quirks: bool = True) -> np.ndarray:
    """``[F, H, W, 3]`` frames (uint8, or float in 0..1; a tensor, an array or a list of same-size frames)
    → uint8 NumPy ``[F, H, W, 3]``, converted as the official helpers do (see the module docstring)."""
    if isinstance(frames, (list, tuple)):
        if not frames:
            raise MetricsError("no frames given")
        arrays = [f.detach().cpu().numpy() if torch.is_tensor(f) else np.asarray(f) for f in frames]
        sizes = sorted({a.shape[:2] for a in arrays})
        if len(sizes) > 1:
            raise MetricsError(f"the frames of one video differ in size ({', '.join(f'{w}x{h}' for h, w in sizes)}); "
                               "resize them to one size first")
        arr = np.stack(arrays)
    else:
        arr = frames.detach().cpu().numpy() if torch.is_tensor(frames) else np.asarray(frames)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] not in (3, 4) or arr.shape[0] == 0 or min(arr.shape[1:3]) == 0:
        raise MetricsError(f"expected RGB frames [F, H, W, 3] (the ComfyUI IMAGE layout), got shape {arr.shape}")
    arr = arr[..., :3]
    if arr.dtype == np.uint8:
        if official_quirks:  # the helpers' `img.max() <= 1` test, per frame, also for uint8 frames
            low = arr.reshape(len(arr), -1).max(axis=1) <= 1
            arr = arr.copy()
            arr[low] = arr[low] * 255
        return np.ascontiguousarray(arr)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.number):
        raise MetricsError(f"frames must be uint8 or float in 0..1, got dtype {arr.dtype}")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise MetricsError("the frames hold NaN or inf values")
    if arr.min() < -1e-3 or arr.max() > 1 + 1e-3:
        raise MetricsError(f"float frames must lie in 0..1, these span {arr.min():.3g}..{arr.max():.3g}; "
                           "divide 0..255 frames by 255 (or pass them as uint8)")
    arr = np.clip(arr, 0.0, 1.0) * 255.0
    return (arr if official_quirks else arr + 0.5).astype(np.uint8)  # official: truncation


def preprocess(clip: ClipBundle, frames: np.ndarray) -> torch.Tensor:
    """uint8 ``[F, H, W, 3]`` → CLIP pixel values ``[F, 3, S, S]`` (float32, on the CPU): transformers'
    resize of the short side + rescale + normalise, then torchvision's centre crop (see module docstring)."""
    out = clip.image_processor(images=list(frames), do_center_crop=False, return_tensors="pt")["pixel_values"]
    crop_h, crop_w = clip.crop_size
    height, width = out.shape[-2:]
    if height < crop_h or width < crop_w:
        raise MetricsError(f"the CLIP preprocessing resizes to {height}x{width}, smaller than its crop "
                           f"{crop_h}x{crop_w}; fix size/crop_size in {clip.path}/preprocessor_config.json")
    top, left = int(round((height - crop_h) / 2.0)), int(round((width - crop_w) / 2.0))
    return out[:, :, top:top + crop_h, left:left + crop_w].float()


@torch.no_grad()
def image_features(clip: ClipBundle, frames: Frames, official_quirks: bool = True,
                   batch_size: int = 16) -> torch.Tensor:
    """L2-normalised fp32 CLIP image features ``[F, D]`` of the frames (on the model's device)."""
    pixels = preprocess(clip, to_uint8_frames(frames, official_quirks))
    model, feats = clip.model, []
    for start in range(0, len(pixels), batch_size):
        batch = pixels[start:start + batch_size].to(clip.device, clip.dtype)
        pooled = model.vision_model(pixel_values=batch).pooler_output
        feats.append(model.visual_projection(pooled).float())
    return _normalise(torch.cat(feats))


@torch.no_grad()
def text_features(clip: ClipBundle, prompts: Sequence[str]) -> torch.Tensor:
    """L2-normalised fp32 CLIP text features ``[N, D]`` (prompts longer than the model's context are cut)."""
    if isinstance(prompts, str) or not prompts or any(not isinstance(p, str) or not p.strip() for p in prompts):
        raise MetricsError(f"text alignment needs non-empty prompt strings, got {prompts!r}")
    limit = int(clip.model.config.text_config.max_position_embeddings)
    tokens = clip.tokenizer(list(prompts), padding=True, truncation=True, max_length=limit, return_tensors="pt")
    model = clip.model
    pooled = model.text_model(input_ids=tokens["input_ids"].to(clip.device),
                              attention_mask=tokens["attention_mask"].to(clip.device)).pooler_output
    return _normalise(model.text_projection(pooled).float())


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


# ---------------------------------------------------------------------------------------------- the metrics
def alignment_from_features(feats: torch.Tensor, text: torch.Tensor, scale: float) -> float:
    """Mean over frames of ``scale · <f, t>`` (``feats [F, D]``, ``text [D]``, both normalised)."""
    return float(scale * (feats @ text.to(feats)).mean())


def consistency_from_features(feats: torch.Tensor, scale: float) -> float:
    """Mean over all pairs ``i > j`` of ``scale · <f_i, f_j>``; needs at least 2 frames."""
    if len(feats) < 2:
        raise MetricsError(f"frame consistency needs a video of at least 2 frames, got {len(feats)}; a still "
                           "image is not a video: remove it or give the whole clip")
    sims = feats @ feats.T
    i, j = torch.tril_indices(len(feats), len(feats), offset=-1, device=feats.device)
    return float(scale * sims[i, j].mean())


def video_feature(feats: torch.Tensor, official_quirks: bool = True) -> torch.Tensor:
    """One video's CLIP feature: official = sum of the frame features / 16 (not re-normalised);
    corrected = the mean over its frames, re-normalised."""
    if official_quirks:
        return feats.sum(0) / OFFICIAL_DIVERSITY_FRAMES
    return _normalise(feats.mean(0))


def diversity_from_features(per_video: Sequence[torch.Tensor], scale: float, official_quirks: bool = True) -> float:
    """Mean over all video pairs ``i > j`` of ``scale · <v_i, v_j>`` (a similarity: lower = more diverse)."""
    if len(per_video) < 2:
        raise MetricsError(f"diversity compares the videos of one motion with each other and needs at least 2 "
                           f"videos, got {len(per_video)}")
    v = torch.stack([video_feature(f, official_quirks).to(per_video[0].device) for f in per_video])
    return consistency_from_features(v, scale)


def text_alignment(clip: ClipBundle, frames: Frames, prompt: str, official_quirks: bool = True) -> float:
    """The paper's text alignment (CLIP score) of one video ``[F, H, W, 3]`` with its prompt."""
    return alignment_from_features(image_features(clip, frames, official_quirks), text_features(clip, [prompt])[0],
                                   clip.logit_scale)


def frame_consistency(clip: ClipBundle, frames: Frames, official_quirks: bool = True) -> float:
    """The paper's frame consistency of one video ``[F, H, W, 3]`` (at least 2 frames)."""
    return consistency_from_features(image_features(clip, frames, official_quirks), clip.logit_scale)


def diversity(clip: ClipBundle, videos: Sequence[Frames], official_quirks: bool = True) -> float:
    """The paper's diversity score of one motion's videos (a list of ``[F, H, W, 3]``, at least 2)."""
    if isinstance(videos, (torch.Tensor, np.ndarray)) and np.ndim(videos) == 4:
        raise MetricsError("diversity takes a LIST of videos [F, H, W, 3], got a single video")
    if len(videos) < 2:
        raise MetricsError(f"diversity compares the videos of one motion with each other and needs at least 2 "
                           f"videos, got {len(videos)}")
    return diversity_from_features([image_features(clip, v, official_quirks) for v in videos], clip.logit_scale,
                                   official_quirks)


# ---------------------------------------------------------------------------------------------- the table
@dataclass
class EvalVideo:
    """One video to score: its motion (the group for diversity), a name, its prompt and its frames."""

    motion: str
    name: str
    prompt: str
    frames: Frames


@dataclass
class VideoScore:
    """One scored video: its alignment and consistency, and its frame features (kept for the diversity)."""

    motion: str
    name: str
    prompt: str
    frames: int
    alignment: float
    consistency: float
    features: torch.Tensor = field(repr=False)


def score_video(clip: ClipBundle, video: EvalVideo, official_quirks: bool = True) -> VideoScore:
    """Alignment and consistency of one video from one pass of the image tower."""
    feats = image_features(clip, video.frames, official_quirks)
    text = text_features(clip, [video.prompt])[0]
    return VideoScore(video.motion, video.name, video.prompt, len(feats),
                      alignment_from_features(feats, text, clip.logit_scale),
                      consistency_from_features(feats, clip.logit_scale), feats)


def _mean(values: Sequence[float]) -> Optional[float]:
    return float(sum(values) / len(values)) if values else None


def evaluate(clip: ClipBundle, videos: Sequence[EvalVideo], official_quirks: bool = True,
             progress: Optional[Progress] = None) -> dict[str, Any]:
    """Score every video and build the paper's table (see :func:`summarize`)."""
    if not videos:
        raise MetricsError("no videos to evaluate")
    scores = []
    for k, video in enumerate(videos):
        scores.append(score_named(clip, video, official_quirks))
        if progress is not None:
            progress(k + 1, len(videos))
    return summarize(clip, scores, official_quirks)


def score_named(clip: ClipBundle, video: EvalVideo, official_quirks: bool = True) -> VideoScore:
    """:func:`score_video`, with the video's motion and name in any error message."""
    try:
        return score_video(clip, video, official_quirks)
    except MetricsError as err:
        raise MetricsError(f"{video.motion}/{video.name}: {err}") from err


def summarize(clip: ClipBundle, scores: Sequence[VideoScore], official_quirks: bool = True) -> dict[str, Any]:
    """The paper's table as a JSON-ready dict, from scored videos.

    Per motion: the mean alignment and consistency of its videos, its diversity (``None`` with one video)
    and the number of videos. Overall: alignment and consistency averaged over all videos, diversity
    averaged over the motions that have one (the paper's Table 1 has 6 videos per motion, so these equal the
    means over motions).
    """
    if not scores:
        raise MetricsError("no videos to evaluate")
    motions: dict[str, list[VideoScore]] = {}
    for score in scores:
        motions.setdefault(score.motion, []).append(score)
    table = {}
    for motion, group in motions.items():
        div = diversity_from_features([s.features for s in group], clip.logit_scale, official_quirks) \
            if len(group) > 1 else None
        table[motion] = {"videos": len(group), "alignment": _mean([s.alignment for s in group]),
                         "consistency": _mean([s.consistency for s in group]), "diversity": div}
    divs = [row["diversity"] for row in table.values() if row["diversity"] is not None]
    return {
        "clip": str(clip.path), "logit_scale": clip.logit_scale, "official_quirks": official_quirks,
        "motions": table,
        "overall": {"videos": len(scores), "alignment": _mean([s.alignment for s in scores]),
                    "consistency": _mean([s.consistency for s in scores]), "diversity": _mean(divs)},
        "videos": [{"motion": s.motion, "name": s.name, "prompt": s.prompt, "frames": s.frames,
                    "alignment": s.alignment, "consistency": s.consistency} for s in scores],
    }


def _cell(value: Optional[float]) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


def format_table(report: dict[str, Any]) -> str:
    """The report as the paper's table in markdown (alignment ↑, consistency ↑, diversity ↓)."""
    lines = ["| motion | videos | alignment ↑ | consistency ↑ | diversity ↓ |", "|---|---|---|---|---|"]
    for motion, row in report["motions"].items():
        lines.append(f"| {motion} | {row['videos']} | {_cell(row['alignment'])} | {_cell(row['consistency'])} | "
                     f"{_cell(row['diversity'])} |")
    row = report["overall"]
    lines.append(f"| **overall** | {row['videos']} | **{_cell(row['alignment'])}** | **{_cell(row['consistency'])}** "
                 f"| **{_cell(row['diversity'])}** |")
    return "\n".join(lines)
