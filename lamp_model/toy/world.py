"""The toy world: coloured shapes on plain or gradient backgrounds, and the motions they make.

Everything is rendered with analytic anti-aliasing (coverage from a signed distance), so a shape that
moves by a fraction of a pixel moves its centroid by that fraction: tracked trajectories are smooth.
A scene is fully described by a :class:`Scene` (shape, colour, position, size, angle, background);
a clip applies one motion (a :class:`~lamp_model.toy.motions.MotionSpec`) to it over ``FRAMES`` frames.
Every random choice comes from a ``numpy`` generator seeded by the caller, so clips and first frames are
reproducible bit for bit.

Coordinates are pixels with the origin at the top-left corner, ``x`` to the right and ``y`` down; a
positive angle turns clockwise on screen.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from .motions import SHIPPED, MotionSpec, parse_motion, stream_of

#: Image side in pixels and frames per clip.
SIZE = 32
FRAMES = 16
#: Clips per motion that stage 2 learns from (the paper uses 8-16). With 8, a motion saw one or two bars,
#: and unseen bars at other angles broke into noise halfway through the video; 16 shows each shape 2-4 times.
TRAINING_CLIPS = 16

#: Object colours (saturated and bright, so they stand out from every background).
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.92, 0.12, 0.12), "green": (0.15, 0.85, 0.2), "blue": (0.2, 0.35, 1.0),
    "yellow": (0.95, 0.9, 0.1), "magenta": (0.9, 0.15, 0.9), "cyan": (0.1, 0.9, 0.95),
    "orange": (1.0, 0.55, 0.05), "white": (0.97, 0.97, 0.97),
}
SHAPES = ("circle", "square", "triangle", "cross", "bar")
#: Rotational symmetry order of each shape (0: none, a circle cannot be seen to turn).
SYMMETRY = {"circle": 0, "square": 4, "triangle": 3, "cross": 4, "bar": 2}

#: Background tones: dark and muted, far from every object colour.
BACKGROUNDS = ((0.12, 0.12, 0.14), (0.3, 0.3, 0.32), (0.1, 0.14, 0.3), (0.12, 0.26, 0.16),
               (0.32, 0.22, 0.14), (0.26, 0.12, 0.24), (0.05, 0.05, 0.05), (0.22, 0.28, 0.34))

#: The shipped motion patterns (:data:`lamp_model.toy.motions.SHIPPED`) and what each does over a clip;
#: any other :class:`~lamp_model.toy.motions.MotionSpec` (a ``--motion`` string) works the same way.
MOTIONS = {name: spec.description for name, spec in SHIPPED.items()}
SHIFT_PX = SHIPPED["right"].dx
GROW_FACTOR = SHIPPED["grow"].scale
TURN_DEG = SHIPPED["rotate"].rotate


@dataclass(frozen=True)
class Scene:
    """One still picture of the toy world. ``size`` is the shape's circumradius-like scale in pixels."""

    shape: str
    colour: str
    cx: float
    cy: float
    size: float
    angle: float  # degrees, clockwise
    bg_a: tuple[float, float, float]
    bg_b: tuple[float, float, float]  # equal to bg_a for a plain background
    bg_dir: float  # direction of the gradient (degrees)

    @property
    def caption(self) -> str:
        return caption(self.colour, self.shape)


def caption(colour: str, shape: str) -> str:
    """``"a red circle"`` / ``"an orange square"``: the toy world's prompts."""
    return f"{'an' if colour[0] in 'aeiou' else 'a'} {colour} {shape}"


def parse_caption(text: str) -> tuple[str, str]:
    """Colour and shape named in a prompt such as ``"a blue triangle"``; a clear error otherwise."""
    words = text.lower().replace(",", " ").split()
    colours = [w for w in words if w in COLOURS]
    shapes = [w for w in words if w in SHAPES]
    if len(colours) != 1 or len(shapes) != 1:
        raise ValueError(f"prompt {text!r} must name one colour ({', '.join(COLOURS)}) and one shape "
                         f"({', '.join(SHAPES)}), e.g. \"a blue triangle\"")
    return colours[0], shapes[0]


# ------------------------------------------------------------------------------------------- rendering
def _polygon_sdf(px: torch.Tensor, py: torch.Tensor, normals: list[tuple[float, float]], offset: float) -> torch.Tensor:
    """Signed distance (approximate outside corners) of a convex polygon given by edge normals."""
    return torch.stack([px * nx + py * ny - offset for nx, ny in normals]).amax(0)


def shape_sdf(shape: str, px: torch.Tensor, py: torch.Tensor, size: float) -> torch.Tensor:
    """Signed distance (pixels, negative inside) of ``shape`` centred at 0 in its own unrotated frame.

    Sizes are chosen so that every shape of the same ``size`` covers a similar area.
    """
    if shape == "circle":
        return torch.sqrt(px * px + py * py) - size
    if shape == "square":
        half = size * 0.88
        return torch.maximum(px.abs(), py.abs()) - half
    if shape == "triangle":  # equilateral, pointing up, centroid at 0
        r = size * 1.55  # circumradius
        normals = [(math.cos(math.radians(a)), math.sin(math.radians(a))) for a in (90.0, 210.0, 330.0)]
        return _polygon_sdf(px, py, normals, r / 2)
    if shape == "cross":
        arm, half = size * 1.15, size * 0.42
        bar_h = torch.maximum(px.abs() - arm, py.abs() - half)
        bar_v = torch.maximum(px.abs() - half, py.abs() - arm)
        return torch.minimum(bar_h, bar_v)
    if shape == "bar":
        return torch.maximum(px.abs() - size * 1.35, py.abs() - size * 0.55)
    raise ValueError(f"unknown shape {shape!r}; the toy world knows {', '.join(SHAPES)}")


def render(scenes: list[Scene], size: int = SIZE, width: int | None = None) -> torch.Tensor:
    """Render scenes to RGB images ``[N, 3, size, width]`` in 0..1 (float32, anti-aliased).

    ``width`` (default ``size``) widens the canvas to the right: the scene keeps its coordinates and its
    background gradient, so a 32 px scene on a wider canvas is the same picture with more room (long videos).
    """
    width = size if width is None else width
    ys = torch.arange(size, dtype=torch.float64) + 0.5
    gy, gx = torch.meshgrid(ys, torch.arange(width, dtype=torch.float64) + 0.5, indexing="ij")
    out = []
    for s in scenes:
        # Background: linear blend from bg_a to bg_b along bg_dir across the (size x size) scene.
        d = math.radians(s.bg_dir)
        u = ((gx - SIZE / 2) * math.cos(d) + (gy - SIZE / 2) * math.sin(d)) / SIZE + 0.5
        u = u.clamp(0, 1)[None]
        bg = torch.tensor(s.bg_a, dtype=torch.float64)[:, None, None] * (1 - u) + \
            torch.tensor(s.bg_b, dtype=torch.float64)[:, None, None] * u
        # Object: rotate the pixel grid into the shape's frame, coverage = clamp(0.5 - sdf).
        a = math.radians(s.angle)
        dx, dy = gx - s.cx, gy - s.cy
        px = dx * math.cos(a) + dy * math.sin(a)
        py = -dx * math.sin(a) + dy * math.cos(a)
        cover = (0.5 - shape_sdf(s.shape, px, py, s.size)).clamp(0, 1)[None]
        colour = torch.tensor(COLOURS[s.colour], dtype=torch.float64)[:, None, None]
        out.append(bg * (1 - cover) + colour * cover)
    return torch.stack(out).float()


# ------------------------------------------------------------------------------------------ sampling
def random_scene(rng: np.random.Generator, shape: str | None = None, colour: str | None = None,
                 margin: float = 3.0, size_range: tuple[float, float] = (4.5, 6.5)) -> Scene:
    """A random scene (position, size, angle, plain or gradient background) for a given or random content."""
    shape = shape or SHAPES[rng.integers(len(SHAPES))]
    colour = colour or list(COLOURS)[rng.integers(len(COLOURS))]
    size = float(rng.uniform(*size_range))
    reach = size * 1.55 + margin
    cx, cy = (float(v) for v in rng.uniform(reach, SIZE - reach, size=2))
    bg_a = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    bg_b = bg_a if rng.random() < 0.5 else BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    return Scene(shape, colour, cx, cy, size, float(rng.uniform(0, 360)), bg_a, bg_b, float(rng.uniform(0, 360)))


def start_scene(motion: str | MotionSpec, rng: np.random.Generator, shape: str, colour: str,
                spread: bool = False) -> Scene:
    """A first frame from which ``motion`` keeps the whole object inside the image for every frame.

    A translation starts on the side it moves away from (anywhere it still fits; the other axis 2 px in
    from the edge room, so on both sides of the centre), the axis that moves most drawn first; a motion
    without translation starts within 2 px of the centre, or with ``spread`` (evaluation first frames)
    anywhere the object at its largest fits, on both sides of the centre. Object sizes come from the spec
    (:func:`sizes_for`).
    """
    spec = motion_spec(motion)
    base = random_scene(rng, shape, colour, size_range=sizes_for(spec))
    reach = base.size * max(1.0, spec.scale) * 1.55 + 1.5
    lo, hi = reach, SIZE - reach
    if not spec.translates:
        mid = SIZE / 2
        a, b = (lo, hi) if spread else (mid - 2, mid + 2)
        return replace(base, cx=float(rng.uniform(a, b)), cy=float(rng.uniform(a, b)))
    place = {}
    for axis, shift in sorted((("cx", spec.dx), ("cy", spec.dy)), key=lambda a: -abs(a[1])):
        if shift > 0:  # the largest shapes start at the one position that still fits
            place[axis] = float(rng.uniform(lo, max(lo, hi - shift)))
        elif shift < 0:
            place[axis] = float(rng.uniform(min(hi, lo - shift), hi))
        else:
            place[axis] = float(rng.uniform(lo + 2, hi - 2))
    return replace(base, **place)


def sizes_for(spec: MotionSpec) -> tuple[float, float]:
    """Object sizes of first frames: the spec's own, else 4.5..5.5 px, shrunk for a growing motion so the
    object at its largest is no bigger than the shipped ``grow``'s."""
    if spec.sizes is not None:
        return spec.sizes
    if spec.scale <= 1:
        return (4.5, 5.5)
    top = (4.4 * SHIPPED["grow"].scale) / spec.scale
    return (max(2.5, top - 0.6), max(2.6, top))


def animate(scene: Scene, motion: str | MotionSpec, frames: int = FRAMES) -> list[Scene]:
    """The scenes of one clip: ``scene`` at frame 0, then ``motion`` applied (eased, linear by default) up
    to the last frame: position, size and angle change together for a combined motion."""
    spec = motion_spec(motion)
    out = []
    for t in range(frames):
        e = spec.progress(t / (frames - 1))
        change = {}
        if spec.dx:
            change["cx"] = scene.cx + spec.dx * e
        if spec.dy:
            change["cy"] = scene.cy + spec.dy * e
        if spec.scales:
            change["size"] = scene.size * (1 + (spec.scale - 1) * e)
        if spec.rotates:
            change["angle"] = scene.angle + spec.rotate * e
        out.append(replace(scene, **change))
    return out


def motion_spec(motion: str | MotionSpec) -> MotionSpec:
    """The spec of a motion (a shipped name, a ``--motion`` string, a YAML path or a spec), checked to fit
    the canvas: a clear one-line ``ValueError`` otherwise."""
    spec = parse_motion(motion)
    reach = min(sizes_for(spec)) * max(1.0, spec.scale) * 1.55 + 1.5
    room = SIZE - 2 * reach
    if spec.translates and max(abs(spec.dx), abs(spec.dy)) > room:
        raise ValueError(f"motion {spec.text!r}: a shift of {max(abs(spec.dx), abs(spec.dy)):g} px does not fit the "
                         f"{SIZE} px toy canvas (at most {room:.1f} px per axis at this scale)")
    if not spec.translates and reach > SIZE / 2 - 2:
        raise ValueError(f"motion {spec.text!r}: the object at its largest does not fit the {SIZE} px toy canvas "
                         "(use a smaller scale)")
    return spec


def motion_shapes(motion: str | MotionSpec) -> tuple[str, ...]:
    """Shapes whose motion is visible: a turning circle looks still, so a turn leaves circles out."""
    spec = motion_spec(motion)
    return tuple(s for s in SHAPES if not spec.rotates or SYMMETRY[s])


def combos(motion: str | MotionSpec) -> list[tuple[str, str]]:
    """Every (shape, colour) pair usable for ``motion``, in a fixed order."""
    return [(s, c) for s in motion_shapes(motion) for c in COLOURS]


@dataclass(frozen=True)
class Clip:
    """A training clip: RGB frames ``[F, 3, H, W]`` in 0..1, its caption and the scenes it shows."""

    frames: torch.Tensor
    caption: str
    scenes: tuple[Scene, ...]


def split_combos(motion: str | MotionSpec, seed: int = 0,
                 n_train: int = TRAINING_CLIPS) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Training and unseen (shape, colour) pairs for ``motion``: ``n_train`` pairs with distinct shapes
    where possible, the rest are never shown during motion training."""
    motion = motion_spec(motion)
    rng = np.random.default_rng([seed, 1, stream_of(motion)])
    all_pairs = combos(motion)
    order = rng.permutation(len(all_pairs))
    train: list[tuple[str, str]] = []
    for i in order:  # round-robin over shapes so the clips show several shapes and colours
        pair = all_pairs[i]
        if sum(p[0] == pair[0] for p in train) < math.ceil(n_train / len(motion_shapes(motion))) and \
                sum(p[1] == pair[1] for p in train) < 2:
            train.append(pair)
        if len(train) == n_train:
            break
    unseen = [p for p in all_pairs if p not in train]
    return train, unseen


def training_clips(motion: str | MotionSpec, n: int = TRAINING_CLIPS, seed: int = 0,
                   frames: int = FRAMES) -> list[Clip]:
    """The ``n`` clips of ONE motion that LAMP learns from (deterministic from ``seed``)."""
    motion = motion_spec(motion)
    train, _ = split_combos(motion, seed, n)
    rng = np.random.default_rng([seed, 2, stream_of(motion)])
    clips = []
    for shape, colour in train:
        scenes = animate(start_scene(motion, rng, shape, colour), motion, frames)
        clips.append(Clip(render(scenes), scenes[0].caption, tuple(scenes)))
    return clips


def unseen_first_frames(motion: str | MotionSpec, n: int = 24, seed: int = 0,
                        n_train: int = TRAINING_CLIPS) -> list[Scene]:
    """``n`` first frames whose (shape, colour) pair is not among ``motion``'s ``n_train`` training clips,
    spread over every position from which the motion still fits (``start_scene(spread=True)``), so that an
    object that stays near the centre does not look like a motion that keeps still."""
    motion = motion_spec(motion)
    _, unseen = split_combos(motion, seed, n_train)
    rng = np.random.default_rng([seed, 3, stream_of(motion)])
    order = rng.permutation(len(unseen))
    pairs = [unseen[order[i % len(unseen)]] for i in range(n)]
    return [start_scene(motion, rng, shape, colour, spread=True) for shape, colour in pairs]


def still_scenes(n: int, seed: int = 0) -> list[Scene]:
    """Random stills of every (shape, colour) pair: the stage-1 "text-to-image" training set."""
    rng = np.random.default_rng([seed, 4])
    return [random_scene(rng, margin=1.0, size_range=(3.5, 8.0)) for _ in range(n)]
