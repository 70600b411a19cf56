"""Measuring toy videos: find the object, track it, classify its colour and shape, judge its motion.

The object is separated from the background by image moments of a soft coverage map, never by a
learned model, so the measurement cannot share a blind spot with the model it measures:

1. The background of every frame is a plane per colour channel (``a + b*x + c*y``: plain and gradient
   backgrounds alike) fitted by least squares to the 2-pixel border ring, refitted once without outliers.
2. The object colour is the mean of the pixels farthest from that background (the object's core).
3. Coverage ``alpha`` of each pixel is the linear unmixing of background and object colour (exact for
   the renderer's anti-aliased edges), zero below a noise floor, and zero outside the largest 8-connected
   region of covered pixels: specks that post-processing scatters over the background (histogram
   matching of a gradient background does) are not the object, and far from it they would dominate the
   higher moments of step 4.
4. Area = sum of alpha, centroid = alpha-weighted mean position, orientation from the complex moment
   of the shape's symmetry order ``k`` (``arg(sum alpha * (z - c)^k) / k``), accumulated frame to frame.

Thresholds for "the motion matches" are fixed here, before any model is trained, and derived from the
motion's spec (:func:`motion_ok`, :func:`criterion`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from . import codec, world

try:  # exact labelling until convergence (kornia >= 0.9)
    from kornia.contrib import connected_components_union_find as _label_regions
except ImportError:  # older kornia: max-pool propagation, exact with as many steps as pixels (slower)
    from kornia.contrib import connected_components

    def _label_regions(mask: torch.Tensor) -> torch.Tensor:
        return connected_components(mask, num_iterations=mask.shape[-2] * mask.shape[-1])

BORDER = 2
NOISE_FLOOR = 0.12  # colour distance (0..1 RGB) below which a pixel is background
LOST_AREA = 0.3  # an object smaller than this fraction of its frame-0 area counts as lost

#: Pass criteria of motion accuracy are derived from the motion's spec (:func:`criterion` says them in
#: words), one test per component, all of which must hold: a translation ``(dx, dy)`` moves the centroid
#: along its direction by half to 1.5 times its length, at most :data:`MAX_SIDEWAYS_PX` across it; a
#: scale changes the area's log-ratio last/first by half to 1.5 times ``log(scale**2)``; a turn is half to
#: 1.5 times its angle (clockwise positive); a motion without translation drifts at most
#: :data:`MAX_SIDEWAYS_PX`. In every case the object must stay visible in every frame (at least
#: :data:`LOST_AREA` of its frame-0 area, times the expected area ratio when it shrinks). For the shipped
#: four: right / down (12 px) 6..18 px along, sideways <= 3 px; grow (x1.8, area x3.24) area ratio
#: 1.8..5.8, drift <= 3 px; rotate (90 deg) 45..135 deg clockwise, drift <= 3 px.
MAX_SIDEWAYS_PX = 3.0
#: Continuity, so that an object that flickers from place to place cannot pass by landing in the right
#: spot at the end: between any two consecutive frames the centroid moves at most :data:`STEP_FACTOR` times
#: the spec's fastest per-frame shift and at least :data:`MIN_STEP_PX`; a turn and a change of size likewise
#: (:data:`MIN_TURN_STEP_DEG`, :data:`MIN_LOG_AREA_STEP`). For the shipped four: 3.2 px per frame for
#: right / down (0.8 trained), 2 px for grow and rotate, 24 deg per frame for rotate (6 trained), an area
#: log-ratio of 0.31 per frame for grow (0.078 trained).
STEP_FACTOR = 4.0
MIN_STEP_PX = 2.0
MIN_TURN_STEP_DEG = 15.0
MIN_LOG_AREA_STEP = 0.15


@dataclass
class Track:
    """Per-frame measurements of one video (arrays of length F)."""

    cx: np.ndarray
    cy: np.ndarray
    area: np.ndarray
    turn: np.ndarray  # accumulated clockwise rotation since frame 0, degrees (nan without symmetry order)
    colour: np.ndarray  # [F, 3] object colour
    features: np.ndarray  # [F, n] shape features
    alpha: np.ndarray  # [F, H, W] coverage maps


def _background(img: np.ndarray) -> np.ndarray:
    """Least-squares plane per channel fitted to the border ring (with one outlier-rejecting refit)."""
    h, w, _ = img.shape
    yy, xx = np.mgrid[0:h, 0:w]
    ring = np.zeros((h, w), bool)
    ring[:BORDER], ring[-BORDER:], ring[:, :BORDER], ring[:, -BORDER:] = True, True, True, True
    design = np.stack([np.ones(ring.sum()), xx[ring] / w, yy[ring] / h], 1)
    values = img[ring]
    keep = np.ones(len(values), bool)
    for _ in range(2):
        coef, *_ = np.linalg.lstsq(design[keep], values[keep], rcond=None)
        resid = np.linalg.norm(values - design @ coef, axis=1)
        keep = resid <= max(0.05, 3 * float(np.median(resid)))
    full = np.stack([np.ones(h * w), xx.ravel() / w, yy.ravel() / h], 1)
    return (full @ coef).reshape(h, w, 3)


@dataclass
class FrameMeasure:
    """What :func:`measure_frame` reads from one frame."""

    cx: float
    cy: float
    area: float
    moment: complex  # complex moment of the shape's symmetry order (0 without one)
    colour: np.ndarray  # [3]
    features: np.ndarray  # rotation/scale-invariant shape features
    alpha: np.ndarray  # [H, W] coverage


def _largest_region(alpha: np.ndarray) -> np.ndarray:
    """``alpha`` with every 8-connected region of nonzero coverage but the one of largest total coverage
    set to zero."""
    labels = _label_regions(torch.from_numpy(alpha > 0)[None, None].float())[0, 0].numpy()
    ids, where = np.unique(labels, return_inverse=True)
    mass = np.bincount(where.ravel(), weights=alpha.ravel())
    mass[ids == 0] = -1.0  # the uncovered background is no region (an empty frame keeps its all-zero alpha)
    return np.where(labels == ids[int(np.argmax(mass))], alpha, 0.0)


def measure_frame(img: np.ndarray, order: int, all_regions: bool = False) -> FrameMeasure:
    """Measure the object in one ``[H, W, 3]`` frame in 0..1 (``order``: symmetry order for the angle).
    ``all_regions`` keeps every covered region instead of the largest (to count what lies elsewhere)."""
    bg = _background(img)
    diff = img - bg
    dist = np.linalg.norm(diff, axis=2)
    peak = dist.max()
    if peak < NOISE_FLOOR:
        return FrameMeasure(math.nan, math.nan, 0.0, 0j, np.full(3, np.nan), np.full(5, np.nan), np.zeros(dist.shape))
    core = dist >= 0.7 * peak
    colour = img[core].mean(0)
    contrast = colour[None, None] - bg
    alpha = (diff * contrast).sum(2) / np.maximum((contrast ** 2).sum(2), 1e-6)
    alpha = np.where(dist >= NOISE_FLOOR, alpha.clip(0, 1), 0.0)
    if not all_regions:
        alpha = _largest_region(alpha)
    area = float(alpha.sum())
    yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]] + 0.5
    cx, cy = float((alpha * xx).sum() / area), float((alpha * yy).sum() / area)
    z = (xx - cx) + 1j * (yy - cy)
    r = np.abs(z)
    feats = [float(np.abs((alpha * z ** k).sum()) / max((alpha * r ** k).sum(), 1e-9)) for k in (2, 3, 4)]
    feats.append(float((alpha * r ** 2).sum() / area ** 2 * 2 * math.pi))  # 1.0 for a disc
    feats.append(float((alpha * r ** 4).sum() / area ** 3 * 3 * math.pi ** 2))  # 1.0 for a disc
    moment = complex((alpha * z ** order).sum()) if order else 0j
    return FrameMeasure(cx, cy, area, moment, colour, np.array(feats), alpha)


def track(frames: torch.Tensor | np.ndarray, shape: str) -> Track:
    """Track the object through frames ``[F, 3, H, W]`` (or ``[F, H, W, 3]``) in 0..1."""
    arr = frames.detach().cpu().float().numpy() if torch.is_tensor(frames) else np.asarray(frames, np.float32)
    if arr.shape[1] == 3 and arr.shape[-1] != 3:
        arr = arr.transpose(0, 2, 3, 1)
    order = world.SYMMETRY[shape]
    rows = [measure_frame(f.astype(np.float64), order) for f in arr]
    turn = [0.0]
    for prev, cur in zip(rows, rows[1:]):
        if order and prev.moment != 0 and cur.moment != 0:
            step = math.remainder(math.atan2(cur.moment.imag, cur.moment.real) -
                                  math.atan2(prev.moment.imag, prev.moment.real), 2 * math.pi) / order
            turn.append(turn[-1] + math.degrees(step))
        else:
            turn.append(math.nan)
    return Track(np.array([r.cx for r in rows]), np.array([r.cy for r in rows]), np.array([r.area for r in rows]),
                 np.array(turn), np.stack([r.colour for r in rows]), np.stack([r.features for r in rows]),
                 np.stack([r.alpha for r in rows]))


# ------------------------------------------------------------------------------------------ judging
def _window(want: float) -> tuple[float, float]:
    """Half to 1.5 times ``want``, whatever its sign."""
    return min(0.5 * want, 1.5 * want), max(0.5 * want, 1.5 * want)


def motion_ok(tr: Track, motion: str | world.MotionSpec) -> bool:
    """Does the tracked motion match ``motion`` in direction and roughly in magnitude (module comment above
    :data:`MAX_SIDEWAYS_PX`)? The tests are derived from the spec's components."""
    spec = world.motion_spec(motion)
    floor = LOST_AREA * min(1.0, spec.scale ** 2) * max(tr.area[0], 1e-9)
    if not np.all(tr.area >= floor) or np.isnan(tr.cx).any():
        return False
    dx, dy = tr.cx[-1] - tr.cx[0], tr.cy[-1] - tr.cy[0]
    ok = True
    if spec.translates:
        length = math.hypot(spec.dx, spec.dy)
        ux, uy = spec.dx / length, spec.dy / length
        along, sideways = dx * ux + dy * uy, -dx * uy + dy * ux
        lo, hi = _window(length)
        ok = ok and lo <= along <= hi and abs(sideways) <= MAX_SIDEWAYS_PX
    else:
        ok = ok and math.hypot(dx, dy) <= MAX_SIDEWAYS_PX
    limits = step_limits(spec, len(tr.cx))
    ok = ok and bool(np.all(np.hypot(np.diff(tr.cx), np.diff(tr.cy)) <= limits["px"]))
    if spec.scales:
        ok = ok and bool(np.all(np.abs(np.diff(np.log(tr.area))) <= limits["log_area"]))
    if spec.rotates:
        ok = ok and bool(np.all(np.abs(np.diff(tr.turn)) <= limits["deg"]))
    if spec.scales:
        lo, hi = _window(math.log(spec.scale ** 2))
        ok = ok and lo <= math.log(tr.area[-1] / tr.area[0]) <= hi
    if spec.rotates:
        lo, hi = _window(spec.rotate)
        ok = ok and lo <= tr.turn[-1] <= hi
    return bool(ok)


def step_limits(motion: str | world.MotionSpec, frames: int) -> dict[str, float]:
    """The continuity limits of :func:`motion_ok` between consecutive frames: centroid step ``px``, turn
    ``deg`` and area log-ratio ``log_area`` (comment above :data:`STEP_FACTOR`)."""
    spec = world.motion_spec(motion)
    peak = spec.peak_step(frames)
    return {"px": max(MIN_STEP_PX, STEP_FACTOR * peak * math.hypot(spec.dx, spec.dy)),
            "deg": max(MIN_TURN_STEP_DEG, STEP_FACTOR * peak * abs(spec.rotate)),
            "log_area": max(MIN_LOG_AREA_STEP, STEP_FACTOR * peak * abs(math.log(spec.scale ** 2)))}


def criterion(motion: str | world.MotionSpec) -> str:
    """The pass criterion of ``motion`` in words (what :func:`motion_ok` tests)."""
    spec = world.motion_spec(motion)
    parts = []
    if spec.translates:
        lo, hi = _window(math.hypot(spec.dx, spec.dy))
        direction = {(1, 0): "x", (0, 1): "y"}.get((int(spec.dx != 0), int(spec.dy != 0)))
        if direction and (spec.dx if direction == "x" else spec.dy) > 0:
            other = "y" if direction == "x" else "x"
            parts.append(f"{direction} shift {lo:g}..{hi:g} px, |{other} shift| <= {MAX_SIDEWAYS_PX:g} px")
        else:
            parts.append(f"shift along ({spec.dx:g}, {spec.dy:g}) {lo:g}..{hi:g} px, "
                         f"sideways <= {MAX_SIDEWAYS_PX:g} px")
    if spec.scales:
        lo, hi = (math.exp(v) for v in _window(math.log(spec.scale ** 2)))
        parts.append(f"area ratio {lo:.1f}..{hi:.1f}")
    if spec.rotates:
        lo, hi = _window(spec.rotate)
        parts.append(f"{'clockwise' if spec.rotate > 0 else 'anticlockwise (negative)'} turn {lo:g}..{hi:g} deg")
    if not spec.translates:
        parts.append(f"drift <= {MAX_SIDEWAYS_PX:g} px")
    limits = step_limits(spec, world.FRAMES)
    steps = [f"{limits['px']:.2g} px"]
    if spec.scales:
        steps.append(f"area x{math.exp(limits['log_area']):.2f}")
    if spec.rotates:
        steps.append(f"{limits['deg']:.2g} deg")
    parts.append(f"no frame-to-frame jump over {' / '.join(steps)}")
    return ", ".join(parts)


def motion_amount(tr: Track, motion: str | world.MotionSpec) -> float:
    """The tracked amount of the motion's first component over the clip: px along the translation, else
    the area ratio, else degrees turned (:func:`amount_unit` names it)."""
    spec = world.motion_spec(motion)
    if spec.translates:
        length = math.hypot(spec.dx, spec.dy)
        return float(((tr.cx[-1] - tr.cx[0]) * spec.dx + (tr.cy[-1] - tr.cy[0]) * spec.dy) / length)
    if spec.scales:
        return float(tr.area[-1] / max(tr.area[0], 1e-9))
    return float(tr.turn[-1])


def amount_unit(motion: str | world.MotionSpec) -> str:
    """What :func:`motion_amount` measures, e.g. ``"px to the right"``, ``"x its area"``."""
    spec = world.motion_spec(motion)
    if spec.translates:
        named = {(1, 0): "to the right", (-1, 0): "to the left", (0, 1): "down", (0, -1): "up"}
        key = (int(math.copysign(1, spec.dx)) if spec.dx else 0, int(math.copysign(1, spec.dy)) if spec.dy else 0)
        return f"px {named.get(key, f'along ({spec.dx:g}, {spec.dy:g})')}"
    return "x its area" if spec.scales else "degrees clockwise"


def jitter(tr: Track) -> float:
    """Temporal smoothness: RMS second difference of the centroid track (px/frame^2; 0 = uniform motion)."""
    c = np.stack([tr.cx, tr.cy], 1)
    if np.isnan(c).any():
        return math.nan
    return float(np.sqrt((np.diff(c, n=2, axis=0) ** 2).sum(1).mean()))


def colour_name(rgb: np.ndarray) -> str:
    """Nearest toy colour to an RGB triple."""
    if np.isnan(rgb).any():
        return "?"
    names = list(world.COLOURS)
    table = np.array([world.COLOURS[n] for n in names])
    return names[int(np.argmin(((table - rgb) ** 2).sum(1)))]


@lru_cache(maxsize=1)
def _shape_prototypes() -> tuple[np.ndarray, np.ndarray]:
    """Mean and spread of the shape features of rendered (codec round-tripped) shapes, per shape."""
    rng = np.random.default_rng(1234)
    scenes = [world.random_scene(rng, shape=s, size_range=(3.8, 8.0)) for s in world.SHAPES for _ in range(40)]
    images = codec.decode(codec.encode(world.render(scenes))).permute(0, 2, 3, 1).double().numpy()
    feats = np.stack([measure_frame(img, 0).features for img in images]).reshape(len(world.SHAPES), 40, -1)
    return feats.mean(1), feats.std(1).mean(0) + 1e-3


def shape_name(features: np.ndarray) -> str:
    """Nearest shape prototype (features standardised by their within-shape spread)."""
    if np.isnan(features).any():
        return "?"
    means, spread = _shape_prototypes()
    return world.SHAPES[int(np.argmin((((means - features) / spread) ** 2).sum(1)))]


def registered_iou(tr: Track, t: int) -> float:
    """Soft IoU (sum of min / sum of max) of frame 0's object with frame ``t``'s object brought back to
    frame 0's pose (tracked centroid, size and rotation undone): 1.0 = the same shape, whatever it did."""
    a0, at = tr.alpha[0], tr.alpha[t]
    if not (tr.area[0] > 0 and tr.area[t] > 0) or math.isnan(tr.cx[t]):
        return 0.0
    h, w = a0.shape
    scale = math.sqrt(tr.area[t] / tr.area[0])
    angle = math.radians(tr.turn[t]) if math.isfinite(tr.turn[t]) else 0.0
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    px, py = (xx - tr.cx[0]) * scale, (yy - tr.cy[0]) * scale
    qx = tr.cx[t] + px * math.cos(angle) - py * math.sin(angle)
    qy = tr.cy[t] + px * math.sin(angle) + py * math.cos(angle)
    grid = torch.from_numpy(np.stack([2 * qx / w - 1, 2 * qy / h - 1], -1)[None]).float()
    back = torch.nn.functional.grid_sample(torch.from_numpy(at)[None, None].float(), grid, align_corners=False)[0, 0]
    back = back.double().numpy()
    return float(np.minimum(a0, back).sum() / max(np.maximum(a0, back).sum(), 1e-9))


def content_scores(tr: Track, shape: str, colour: str) -> dict[str, float]:
    """Content preservation over frames 1..: fraction of frames whose object has the requested colour,
    fraction classified as the requested shape, and the mean :func:`registered_iou` with frame 0."""
    frames = range(1, len(tr.cx))
    return {"colour": float(np.mean([colour_name(tr.colour[t]) == colour for t in frames])),
            "shape": float(np.mean([shape_name(tr.features[t]) == shape for t in frames])),
            "iou": float(np.mean([registered_iou(tr, t) for t in frames]))}
