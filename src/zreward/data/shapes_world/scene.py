"""ShapesWorld scene schema: dataclasses, JSON (de)serialisation and validation.

Implements the "Scene (JSON)" section of the spec `docs/shapes-world.md`: a square canvas (32..256 px) with a
background colour, a horizontal ground line, objects (circle / square / triangle in a six-colour palette, given by
bounding-box centre and side) and global noise/blur. Validation errors name the offending field, e.g.
`scene.objects[2].size: expected a positive number, got -3`.

Geometry helpers (box edges) live here so that the oracle and the renderer read the same numbers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 200, 40),
    "purple": (150, 60, 180),
    "orange": (240, 130, 30),
}
COLORS: tuple[str, ...] = tuple(PALETTE)
DEFAULT_BACKGROUND: tuple[int, int, int] = (235, 230, 220)
CANVAS_MIN, CANVAS_MAX = 32, 256
NOISE_MAX, BLUR_MAX = 0.3, 2.0


class SceneError(ValueError):
    """A scene failed validation; the message reads `<where>.<field>: expected ..., got ...`."""


def luminance(rgb: tuple[int, int, int] | list[int]) -> float:
    """Spec luminance L(rgb) = (0.299 R + 0.587 G + 0.114 B) / 255, evaluated left to right."""
    r, g, b = rgb
    return (0.299 * r + 0.587 * g + 0.114 * b) / 255


@dataclass
class SceneObject:
    """One object. (x, y) is the bounding-box centre in px; `size` is the box side s."""

    shape: str
    color: str
    size: float
    x: float
    y: float
    warp: float = 0.0

    @property
    def left(self) -> float:
        return self.x - self.size / 2

    @property
    def right(self) -> float:
        return self.x + self.size / 2

    @property
    def top(self) -> float:
        return self.y - self.size / 2

    @property
    def bottom(self) -> float:
        return self.y + self.size / 2

    def to_json(self) -> dict:
        return {"shape": self.shape, "color": self.color, "size": self.size, "x": self.x, "y": self.y,
                "warp": self.warp}


@dataclass
class Scene:
    """A whole scene; `to_json()` gives the spec's JSON object."""

    canvas: int = 64
    background: tuple[int, int, int] = DEFAULT_BACKGROUND
    ground_y: float = 52
    objects: list[SceneObject] = field(default_factory=list)
    noise: float = 0.0
    blur: float = 0.0

    def to_json(self) -> dict:
        return {"canvas": self.canvas, "background": list(self.background), "ground_y": self.ground_y,
                "objects": [o.to_json() for o in self.objects], "noise": self.noise, "blur": self.blur}


def _err(where: str, expected: str, got: Any = ...) -> SceneError:
    return SceneError(f"{where}: expected {expected}" + ("" if got is ... else f", got {got!r}"))


def _num(obj: dict, key: str, where: str, *, lo: float | None = None, hi: float | None = None,
         default: Any = ..., positive: bool = False) -> float:
    if key not in obj:
        if default is ...:
            raise _err(f"{where}.{key}", "a number (field is missing)")
        return default
    v = obj[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _err(f"{where}.{key}", "a finite number", v)
    if positive and v <= 0:
        raise _err(f"{where}.{key}", "a positive number", v)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise _err(f"{where}.{key}", f"a number in [{lo}, {hi}]", v)
    return v


def parse_object(obj: Any, where: str) -> SceneObject:
    """Validate one object dict (`where` names it, e.g. `scene.objects[0]`)."""
    if not isinstance(obj, dict):
        raise _err(where, "an object with shape, color, size, x, y", obj)
    shape = obj.get("shape")
    if shape not in SHAPES:
        raise _err(f"{where}.shape", f"one of {list(SHAPES)}", shape)
    color = obj.get("color")
    if color not in PALETTE:
        raise _err(f"{where}.color", f"one of {list(COLORS)}", color)
    return SceneObject(shape=shape, color=color, size=_num(obj, "size", where, positive=True),
                       x=_num(obj, "x", where), y=_num(obj, "y", where),
                       warp=_num(obj, "warp", where, lo=0.0, hi=1.0, default=0.0))


def parse_scene(obj: Any, where: str = "scene") -> Scene:
    """Validate a scene dict and return a `Scene`. Unknown keys are ignored.

    Defaults when absent: canvas 64, background (235, 230, 220), ground_y = round(13/16 * canvas) (52 at 64 px, as
    in the spec's example), no objects, noise 0, blur 0.

    Raises:
        SceneError: naming the field and what was expected.
    """
    if isinstance(obj, Scene):
        return obj
    if not isinstance(obj, dict):
        raise _err(where, "a JSON object with canvas, objects, ...", obj)
    canvas = obj.get("canvas", 64)
    if isinstance(canvas, float) and canvas.is_integer():
        canvas = int(canvas)
    if isinstance(canvas, bool) or not isinstance(canvas, int) or not CANVAS_MIN <= canvas <= CANVAS_MAX:
        raise _err(f"{where}.canvas", f"an integer in [{CANVAS_MIN}, {CANVAS_MAX}]", canvas)
    bg = obj.get("background", list(DEFAULT_BACKGROUND))
    if (not isinstance(bg, (list, tuple)) or len(bg) != 3
            or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in bg)):
        raise _err(f"{where}.background", "a list of 3 integers in [0, 255]", bg)
    ground_y = _num(obj, "ground_y", where, default=round(canvas * 13 / 16))
    objs = obj.get("objects", [])
    if not isinstance(objs, list):
        raise _err(f"{where}.objects", "a list of objects", objs)
    objects = [parse_object(o, f"{where}.objects[{i}]") for i, o in enumerate(objs)]
    return Scene(canvas=canvas, background=(bg[0], bg[1], bg[2]), ground_y=ground_y, objects=objects,
                 noise=_num(obj, "noise", where, lo=0.0, hi=NOISE_MAX, default=0.0),
                 blur=_num(obj, "blur", where, lo=0.0, hi=BLUR_MAX, default=0.0))
