"""Toy motions as data: a motion is a small declarative :class:`MotionSpec`, parsed from a ``--motion`` string.

A spec says what happens to the object between the first and the last frame of a clip: a translation
``(dx, dy)`` in pixels (``x`` right, ``y`` down), a size factor ``scale`` (of the shape's linear size; the
area changes by ``scale**2``), a clockwise turn ``rotate`` in degrees, any combination of these at the
same time, and an ``ease`` (how the progress ``u = t / (F - 1)`` maps to the fraction of the motion done).
The toy world renders a spec (:func:`lamp_model.toy.world.animate`) and the tracker derives its pass
criterion from the spec's components (:func:`lamp_model.toy.tracking.motion_ok`), so a new motion needs
no new code. The four shipped motions are four specs (:data:`SHIPPED`).

Grammar of a ``--motion`` string (:func:`parse_motion`)::

    right | down | grow | rotate                       the shipped four
    translate:dx=PX,dy=PX                               either key may be left out (0)
    scale:FACTOR                                        e.g. scale:1.5 (grow), scale:0.6 (shrink)
    rotate:DEG                                          clockwise; negative turns anticlockwise
    ease:linear|in|out|in-out                           (default linear)
    COMPONENT+COMPONENT+...                             e.g. translate:dx=8+rotate:45
    PATH.yaml                                           keys: name, dx, dy, scale, rotate, ease

A spec equal to a shipped one (``translate:dx=12`` is ``right``) is that shipped motion, with its name,
its clips and its motion file.
"""
from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

#: Easing curves: fraction of the motion done at progress ``u`` in 0..1.
EASES = {
    "linear": lambda u: u,
    "in": lambda u: u * u,
    "out": lambda u: 1 - (1 - u) * (1 - u),
    "in-out": lambda u: u * u * (3 - 2 * u),
}

FORMS = ("right, down, grow, rotate, translate:dx=PX,dy=PX, scale:FACTOR, rotate:DEG, "
         "ease:linear|in|out|in-out, several joined with '+' (translate:dx=8+rotate:45), or a .yaml file")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


@dataclass(frozen=True)
class MotionSpec:
    """One motion pattern over a clip (see the module docstring).

    ``sizes`` is the range of object sizes of first frames (``None``: derived from ``scale`` so the object
    fits at its largest); ``stream`` numbers the motion's random streams (``None``: derived from the spec;
    the shipped four keep the numbers they always had, so their clips are unchanged bit for bit).
    """

    name: str
    dx: float = 0.0
    dy: float = 0.0
    scale: float = 1.0
    rotate: float = 0.0
    ease: str = "linear"
    sizes: tuple[float, float] | None = None
    stream: int | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"motion {self.name!r}: the name must be lower-case letters, digits, '_', '.' or '-' "
                             "(it names the motion file)")
        if self.ease not in EASES:
            raise ValueError(f"motion {self.name!r}: ease {self.ease!r} is not one of {', '.join(EASES)}")
        if not all(math.isfinite(v) for v in (self.dx, self.dy, self.scale, self.rotate)):
            raise ValueError(f"motion {self.name!r}: every amount must be a finite number")
        if not 0.4 <= self.scale <= 2.5:
            raise ValueError(f"motion {self.name!r}: scale {self.scale:g} is outside 0.4..2.5 (the object must stay "
                             "visible and inside the 32 px toy canvas)")
        if abs(self.rotate) > 360:
            raise ValueError(f"motion {self.name!r}: rotate {self.rotate:g} is outside -360..360 degrees")
        if not (self.translates or self.scales or self.rotates):
            raise ValueError(f"motion {self.name!r}: does nothing; give a translation, a scale other than 1 or a "
                             f"turn (valid forms: {FORMS})")

    @property
    def translates(self) -> bool:
        return self.dx != 0 or self.dy != 0

    @property
    def scales(self) -> bool:
        return self.scale != 1

    @property
    def rotates(self) -> bool:
        return self.rotate != 0

    @property
    def text(self) -> str:
        """The canonical ``--motion`` string of this spec (what :func:`parse_motion` reads back)."""
        parts = []
        if self.translates:
            parts.append(f"translate:dx={self.dx:g},dy={self.dy:g}")
        if self.scales:
            parts.append(f"scale:{self.scale:g}")
        if self.rotates:
            parts.append(f"rotate:{self.rotate:g}")
        if self.ease != "linear":
            parts.append(f"ease:{self.ease}")
        return "+".join(parts)

    @property
    def description(self) -> str:
        """In words, e.g. ``"moves right by 12 px"``."""
        parts = []
        if self.translates:
            if self.dy == 0:
                parts.append(f"moves {'right' if self.dx > 0 else 'left'} by {abs(self.dx):g} px")
            elif self.dx == 0:
                parts.append(f"moves {'down' if self.dy > 0 else 'up'} by {abs(self.dy):g} px")
            else:
                parts.append(f"moves by ({self.dx:g}, {self.dy:g}) px")
        if self.scales:
            parts.append(f"{'grows' if self.scale > 1 else 'shrinks'} to {self.scale:g}x its size "
                         f"({self.scale ** 2:.1f}x its area)")
        if self.rotates:
            parts.append(f"turns {'clockwise' if self.rotate > 0 else 'anticlockwise'} by {abs(self.rotate):g} "
                         "degrees")
        return " and ".join(parts) + ("" if self.ease == "linear" else f" (ease {self.ease})")

    def progress(self, u: float) -> float:
        """Fraction of the motion done at clip progress ``u`` in 0..1 (the easing curve)."""
        return EASES[self.ease](u)

    def peak_step(self, frames: int) -> float:
        """The largest fraction of the motion done between two consecutive frames of a ``frames``-frame clip
        (``1 / (frames - 1)`` for a linear motion, more where an easing speeds up)."""
        done = [self.progress(t / (frames - 1)) for t in range(frames)]
        return max(b - a for a, b in zip(done, done[1:]))

    def same_motion(self, other: MotionSpec) -> bool:
        """Same movement (name, sizes and stream aside)."""
        return (self.dx, self.dy, self.scale, self.rotate, self.ease) == \
            (other.dx, other.dy, other.scale, other.rotate, other.ease)


#: The shipped four (their motion files are in ``lamp_model/toy/weights``), in the order of their streams.
SHIPPED: dict[str, MotionSpec] = {
    "right": MotionSpec("right", dx=12.0, stream=0),
    "down": MotionSpec("down", dy=12.0, stream=1),
    "grow": MotionSpec("grow", scale=1.8, sizes=(3.8, 4.4), stream=2),
    "rotate": MotionSpec("rotate", rotate=90.0, stream=3),
}


def stream_of(spec: MotionSpec) -> int:
    """The number that seeds ``spec``'s random streams: its own, or one derived from its canonical text
    (>= 1000, so it never meets a shipped motion's)."""
    if spec.stream is not None:
        return spec.stream
    return 1000 + int(hashlib.sha256(spec.text.encode()).hexdigest()[:8], 16)


def _bad(text: str, part: str, why: str) -> ValueError:
    """One line: the motion text, its bad part (when there are several), why, and the valid forms."""
    where = f"--motion {text!r}" + (f": {part!r}" if part != text.strip() else "")
    return ValueError(f"{where} {why}; valid forms: {FORMS}")


def _number(text: str, part: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise _bad(text, part, f"needs a number, not {value!r}") from None
    if not math.isfinite(number):
        raise _bad(text, part, "needs a finite number")
    return number


def _parse_string(text: str) -> dict:
    """The spec fields named by a ``+``-joined component string (one-line errors naming the bad part)."""
    found: dict = {}
    for part in text.split("+"):
        part = part.strip()
        kind, sep, value = part.partition(":")
        kind = kind.strip().lower()
        if kind in found or (kind == "translate" and "dx" in found):
            raise _bad(text, part, "is given twice")
        if kind in SHIPPED and not sep:
            raise _bad(text, part, "is a shipped motion and cannot be combined; write its components instead")
        if not sep or not value.strip():
            raise _bad(text, part, "is not a component")
        if kind == "translate":
            found["dx"], found["dy"] = 0.0, 0.0
            for item in value.split(","):
                key, eq, amount = item.partition("=")
                key = key.strip().lower()
                if key not in ("dx", "dy") or not eq:
                    raise _bad(text, part, f"has {item.strip()!r}; translate takes dx=PX and/or dy=PX")
                found[key] = _number(text, part, amount)
        elif kind in ("scale", "rotate"):
            found[kind] = _number(text, part, value)
        elif kind == "ease":
            if value.strip().lower() not in EASES:
                raise _bad(text, part, f"names no easing ({', '.join(EASES)})")
            found["ease"] = value.strip().lower()
        else:
            raise _bad(text, part, "is not a component")
    return found


def _parse_yaml(path: Path) -> tuple[str | None, dict]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"--motion {path}: not a readable YAML file ({type(err).__name__})") from None
    allowed = {"name", "dx", "dy", "scale", "rotate", "ease"}
    if not isinstance(data, dict) or not set(data) <= allowed:
        extra = sorted(set(data) - allowed) if isinstance(data, dict) else "not a mapping"
        raise ValueError(f"--motion {path}: the YAML must be a mapping with keys {', '.join(sorted(allowed))} "
                         f"({extra})")
    found: dict = {}
    for key, value in data.items():
        if key in ("name", "ease"):
            found[key] = str(value)
        else:
            found[key] = _number(str(path), f"{key}: {value}", str(value))
    return found.pop("name", None), found


def parse_motion(motion: str | MotionSpec) -> MotionSpec:
    """A :class:`MotionSpec` from a ``--motion`` string (module docstring), a YAML path, or a spec.

    Raises ``ValueError`` with one line naming the bad part and the valid forms.
    """
    if isinstance(motion, MotionSpec):
        return motion
    text = str(motion).strip()
    if text.lower() in SHIPPED:
        return SHIPPED[text.lower()]
    if text.lower().endswith((".yaml", ".yml")):
        path = Path(text)
        if not path.is_file():
            raise ValueError(f"--motion {text}: YAML file not found")
        name, found = _parse_yaml(path)
    else:
        name, found = None, _parse_string(text)
    try:
        spec = MotionSpec(name or "custom", **found)
    except ValueError as err:  # name the user's text, not the placeholder
        raise ValueError(f"--motion {text!r}: {str(err).split(': ', 1)[1]}") from None
    for shipped in SHIPPED.values():
        if shipped.same_motion(spec) and name in (None, shipped.name):
            return shipped
    if name in SHIPPED:  # its motion file would replace the shipped one
        raise ValueError(f"--motion {text}: the name {name!r} belongs to a shipped motion ({SHIPPED[name].text}); "
                         "choose another name")
    return replace(spec, name=name or _slug(spec.text))


def _slug(text: str) -> str:
    """A file-name-safe name for a spec, e.g. ``translate_dx-12_dy0``."""
    return re.sub(r"[^a-z0-9.-]+", "_", text.replace("=", "")).strip("_")
