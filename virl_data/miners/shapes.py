"""The embedded demo world: coloured shapes on a plain background, compositional questions, exact box chains.

Scene ``i`` of a seed is built from its own RNG (seeded by ``(seed, i)``), so any slice of the stream can be
generated alone and nothing depends on how many scenes came before. A scene holds 3–6 shapes (circle, square,
triangle; six well-separated colours; three sizes whose sides differ by ≥ 1.6x) placed by rejection sampling so
that no two boxes come closer than ``min_gap`` pixels. Each shape's box is the exact pixel extent of what is drawn
(``x2 = last drawn column + 1``), taken from the rasterised sprite itself.

Each scene yields ``questions_per_image`` distinct questions; the answer is fixed by the scene and every referent is
unique (a template whose referent would be ambiguous is skipped). Families (``question_type``):

=======================  =====  ==============================================================  ============
family                   looks  example                                                         answer_type
=======================  =====  ==============================================================  ============
``color_of``             1      What colour is the small triangle?                              color
``shape_of``             1      What shape is the red object?                                   shape
``count``                1*     How many squares are there?  (one step, all squares, by x)      number
``nearest_color``        2      What colour is the shape nearest to the large circle?           color
``compare_size``         2      Is the blue square larger than the green circle?                yes/no
``closer_to``            3      Which is closer to the red triangle: the blue circle or the     choice
                                green square?
``same_color_nearest``   3      What shape is nearest to the other object that has the same     shape
                                colour as the large square?
``neighbour_color``      2      What colour is the shape right of the red triangle?             color
                                (opt-in: not in the default ``families``)
=======================  =====  ==============================================================  ============

"Nearest"/"closer" use box-centre distance, and a question is kept only when the winner is clear: the runner-up is
at least ``nearest_margin`` times farther, and the edge-to-edge gap ranks the same shape first. "Right of" / "left of" /
"above" / "below" (``neighbour_color``, a two-hop chain: the named shape, then its neighbour) name the one shape on
that side whose box overlaps the named one's rows (columns for above / below); asked only when exactly one does, so on
a ``grid`` it is the shape in the next cell. "Larger" compares
size classes (the box side), so the two shapes of a size question always differ in class. Answers come from a small
vocabulary (colour, shape and size words, yes/no, digits).

The module is a little over 500 lines because the seven question families are kept beside the scene they query
(one module per source, as for every miner); each family is one short function in ``FAMILY_BUILDERS``.

Example:
    >>> recs = list(generate(4, seed=0, image_dir=None, config=ShapesConfig(image_size=(128, 128))))
    >>> len(recs), recs[0].image.path, recs[0].image.sha1, recs[0].provenance.miner
    (4, 'shapes/seed0/000000.png', None, 'shapes@1')
    >>> scene = make_scene(0, seed=0, config=ShapesConfig(image_size=(128, 128)))
    >>> render_scene(scene).size
    (128, 128)
    >>> all(1 <= len(r.chain) <= 3 for r in recs)
    True
"""

from __future__ import annotations

import hashlib
import io
import math
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw

from virl_data.core.errors import ConfigError
from virl_data.core.types import (
    Box,
    ImageRef,
    Provenance,
    RationaleRecord,
    RationaleStep,
    Status,
    record_id,
)

SOURCE = "shapes"
MINER = "shapes@1"

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 90, 230),
    "yellow": (240, 200, 20),
    "purple": (140, 60, 190),
    "orange": (245, 130, 20),
}
KINDS: tuple[str, ...] = ("circle", "square", "triangle")
SIZES: tuple[str, ...] = ("small", "medium", "large")
FAMILIES: tuple[str, ...] = (
    "color_of",
    "shape_of",
    "count",
    "nearest_color",
    "compare_size",
    "closer_to",
    "same_color_nearest",
)
"""The default families (``ShapesConfig.families``)."""
OPT_IN_FAMILIES: tuple[str, ...] = ("neighbour_color",)
"""Families a config must name to get (added later: the default stream of records stays what it was)."""
_MIN_SIDE = 6  # below this a circle and a triangle rasterise to nearly the same blob
_PLACE_TRIES = 100  # rejection-sampling attempts per shape before the scene stops growing
_KEEP_COUNT_ONE = 0.3
_SCENE_TRIES = 200  # fresh layouts per scene before giving up (only an over-restricted config gets there)


@dataclass(frozen=True)
class ShapesConfig:
    """Parameters of the shapes world; validated on construction (``ConfigError`` naming the bad value).

    ``size_fractions``: side of a small/medium/large shape's box as a fraction of the shorter image side.
    ``min_gap``: pixels kept free between any two shape boxes. ``nearest_margin``: how much farther (ratio of centre
    distances) the runner-up must be for a "nearest"/"closer" question to be asked. ``grid``: 0 places shapes anywhere
    (rejection sampling); ``g > 0`` centres each shape in its own cell of a ``g x g`` lattice, so the positions a
    model must learn are few (the learnable task of ``benchmarks/learning.py``).

    >>> ShapesConfig(image_size=(128, 128)).sides()
    (12, 19, 32)
    """

    image_size: tuple[int, int] = (224, 224)
    min_shapes: int = 3
    max_shapes: int = 6
    questions_per_image: int = 4
    background: tuple[int, int, int] = (245, 245, 245)
    families: tuple[str, ...] = FAMILIES
    min_gap: int = 4
    nearest_margin: float = 1.3
    size_fractions: tuple[float, float, float] = (0.09, 0.15, 0.25)
    grid: int = 0

    def __post_init__(self) -> None:
        for name in ("image_size", "background", "families", "size_fractions"):
            value = getattr(self, name)
            if isinstance(value, str) or not hasattr(value, "__len__"):
                raise ConfigError(f"{name} must be a list, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        w, h = self.image_size if len(self.image_size) == 2 else (0, 0)
        if not (isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0):
            raise ConfigError(f"image_size must be two positive ints (width, height), got {self.image_size!r}")
        if not 1 <= self.min_shapes <= self.max_shapes:
            raise ConfigError(f"need 1 <= min_shapes <= max_shapes, got {self.min_shapes}, {self.max_shapes}")
        if self.questions_per_image < 1:
            raise ConfigError(f"questions_per_image must be >= 1, got {self.questions_per_image}")
        unknown = [f for f in self.families if f not in FAMILIES + OPT_IN_FAMILIES]
        if unknown or not self.families:
            raise ConfigError(f"unknown or no question family {unknown!r}; valid families: "
                              f"{', '.join(FAMILIES + OPT_IN_FAMILIES)}")
        if self.background in COLORS.values() or len(self.background) != 3:
            raise ConfigError(f"background must be an RGB triple unlike every shape colour, got {self.background!r}")
        if self.min_gap < 0 or not self.nearest_margin >= 1:
            raise ConfigError(f"need min_gap >= 0 and nearest_margin >= 1, got {self.min_gap}, {self.nearest_margin}")
        sides = self.sides()
        if len(sides) != 3 or sides[0] < _MIN_SIDE or not sides[0] < sides[1] < sides[2]:
            raise ConfigError(f"image_size {w}x{h} with size_fractions {self.size_fractions} gives shape sides "
                              f"{sides} px; need 3 increasing sides >= {_MIN_SIDE} px (use a larger image)")
        if self.grid < 0 or (self.grid and self.max_shapes > self.grid**2):
            raise ConfigError(f"grid must be 0 or a g with g*g >= max_shapes={self.max_shapes}, got {self.grid}")
        if self.grid and sides[2] + self.min_gap > min(w, h) // self.grid:
            raise ConfigError(f"a large shape ({sides[2]} px + min_gap {self.min_gap}) does not fit a grid cell of "
                              f"{min(w, h) // self.grid} px (use a smaller grid or smaller size_fractions)")
        if self.min_shapes * (sides[2] + self.min_gap) ** 2 > 0.5 * w * h:
            raise ConfigError(f"image_size {w}x{h} too small for min_shapes={self.min_shapes} large shapes")

    def sides(self) -> tuple[int, ...]:
        """Box side in pixels of each size class, ``round(fraction * min(width, height))``."""
        short = min(self.image_size)
        return tuple(int(round(f * short)) for f in self.size_fractions)


# --- scene objects ---------------------------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def _sprite(kind: str, side: int) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """The shape's binary mask (``L`` image, 255 = drawn) and its pixel bbox ``(x0, y0, x1+1, y1+1)``."""
    mask = Image.new("L", (side, side), 0)
    draw, last = ImageDraw.Draw(mask), side - 1
    if kind == "square":
        draw.rectangle((0, 0, last, last), fill=255)
    elif kind == "circle":
        draw.ellipse((0, 0, last, last), fill=255)
    else:  # upright isosceles triangle, apex at the top centre
        draw.polygon([(0, last), (last, last), (last / 2, 0)], fill=255)
    return mask, mask.getbbox()


@dataclass(frozen=True, slots=True)
class Shape:
    """One drawn shape: its kind, colour and size class, the sprite's top-left ``(x, y)`` and side in pixels.

    ``box`` is computed from the rasterised sprite, so it is the exact extent of the drawn pixels.

    >>> Shape("square", "red", "small", x=10, y=20, side=12).box
    Box(x1=10.0, y1=20.0, x2=22.0, y2=32.0)
    """

    kind: str
    color: str
    size: str
    x: int
    y: int
    side: int
    box: Box = field(init=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS or self.color not in COLORS or self.size not in SIZES:
            raise ValueError(f"unknown shape {self.size!r} {self.color!r} {self.kind!r}")
        x0, y0, x1, y1 = _sprite(self.kind, self.side)[1]
        object.__setattr__(self, "box", Box(self.x + x0, self.y + y0, self.x + x1, self.y + y1))

    def phrase(self, attrs: tuple[str, ...] = ("size", "color", "kind")) -> str:
        """Words for the given attributes in English order, e.g. ``"large red square"``, ``"red object"``."""
        words = [getattr(self, a) for a in attrs]
        return " ".join(words if "kind" in attrs else [*words, "object"])


@dataclass(frozen=True, slots=True)
class Scene:
    """A rendered-on-demand scene: image size, background and non-overlapping shapes (index = ``source_ref``)."""

    index: int
    seed: int
    width: int
    height: int
    background: tuple[int, int, int]
    shapes: tuple[Shape, ...]


def render_scene(scene: Scene) -> Image.Image:
    """Draw the scene: an RGB image of the background with each shape's sprite filled in its colour (no antialias)."""
    img = Image.new("RGB", (scene.width, scene.height), scene.background)
    for s in scene.shapes:
        img.paste(COLORS[s.color], (s.x, s.y), _sprite(s.kind, s.side)[0])
    return img


def _place_shapes(rng: random.Random, index: int, seed: int, cfg: ShapesConfig) -> Scene | None:
    """Rejection-sample a layout: each new box must stay ``min_gap`` px clear of the others; None if too few fit."""
    w, h = cfg.image_size
    sides, gap = cfg.sides(), cfg.min_gap
    # A per-scene palette of 3-6 colours makes shared colours (needed by same_color_nearest) common enough.
    palette = rng.sample(tuple(COLORS), rng.randint(3, len(COLORS)))
    if cfg.grid:
        return _place_on_grid(rng, index, seed, cfg, palette)
    shapes: list[Shape] = []
    for _ in range(rng.randint(cfg.min_shapes, cfg.max_shapes)):
        kind, color, size = rng.choice(KINDS), rng.choice(palette), rng.randrange(3)
        side = sides[size]
        for _ in range(_PLACE_TRIES):
            x, y = rng.randint(0, w - side), rng.randint(0, h - side)
            if all(x >= o.x + o.side + gap or o.x >= x + side + gap or y >= o.y + o.side + gap
                   or o.y >= y + side + gap for o in shapes):
                shapes.append(Shape(kind, color, SIZES[size], x, y, side))
                break
        else:
            break  # the image is full: keep what fits
    if len(shapes) < cfg.min_shapes:
        return None
    return Scene(index, seed, w, h, cfg.background, tuple(shapes))


def _place_on_grid(rng: random.Random, index: int, seed: int, cfg: ShapesConfig, palette: list[str]) -> Scene:
    """One shape centred in each of ``n`` distinct random cells of the ``grid x grid`` lattice."""
    w, h = cfg.image_size
    cw, ch, sides = w // cfg.grid, h // cfg.grid, cfg.sides()
    cells = rng.sample(range(cfg.grid * cfg.grid), rng.randint(cfg.min_shapes, cfg.max_shapes))
    shapes = []
    for cell in cells:
        kind, color, size = rng.choice(KINDS), rng.choice(palette), rng.randrange(3)
        row, col = divmod(cell, cfg.grid)
        side = sides[size]
        shapes.append(Shape(kind, color, SIZES[size], col * cw + (cw - side) // 2, row * ch + (ch - side) // 2, side))
    return Scene(index, seed, w, h, cfg.background, tuple(shapes))


# --- geometry: which shape is nearest, and is the winner clear? ------------------------------------------------------
def centre_distance(a: Box, b: Box) -> float:
    """Distance between box centres, ``hypot((a.x1+a.x2-b.x1-b.x2)/2, (a.y1+a.y2-b.y1-b.y2)/2)``."""
    return math.hypot((a.x1 + a.x2 - b.x1 - b.x2) / 2, (a.y1 + a.y2 - b.y1 - b.y2) / 2)


def gap_distance(a: Box, b: Box) -> float:
    """Edge-to-edge distance between two boxes (0 when they touch or overlap)."""
    dx = max(a.x1 - b.x2, b.x1 - a.x2, 0.0)
    dy = max(a.y1 - b.y2, b.y1 - a.y2, 0.0)
    return math.hypot(dx, dy)


def clear_winner(scene: Scene, anchor: int, candidates: list[int], margin: float) -> int | None:
    """The candidate nearest to ``anchor`` when unambiguous, else None.

    Unambiguous = the runner-up's centre distance is ≥ ``margin`` x the winner's, and the winner also has the
    strictly smallest edge gap (so a viewer judging by edges or by centres agrees).
    """
    if not candidates:
        return None
    a = scene.shapes[anchor].box
    by_centre = sorted(candidates, key=lambda j: centre_distance(a, scene.shapes[j].box))
    best = by_centre[0]
    if len(by_centre) > 1:
        d1, d2 = (centre_distance(a, scene.shapes[j].box) for j in by_centre[:2])
        gaps = sorted(gap_distance(a, scene.shapes[j].box) for j in candidates if j != best)
        if d2 < margin * d1 or gaps[0] <= gap_distance(a, scene.shapes[best].box):
            return None
    return best


# --- question families -----------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Question:
    """A question before it becomes a record: ``steps`` are ``(shape indices, phrase, role)`` in look order."""

    family: str
    text: str
    answer: str
    answer_type: str
    steps: tuple[tuple[tuple[int, ...], str, str], ...]


ANY = (("kind",), ("color", "kind"), ("size", "kind"), ("size", "color", "kind"))
NO_COLOR = (("kind",), ("size", "kind"))
NO_KIND = (("color",), ("size",), ("size", "color"))
NO_SIZE = (("kind",), ("color", "kind"))


def _describe(scene: Scene, i: int, options: tuple[tuple[str, ...], ...], rng: random.Random) -> str | None:
    """A random phrase for shape ``i`` built from one attribute set of ``options`` that no other shape shares."""
    me = scene.shapes[i]
    unique = [attrs for attrs in options
              if sum(all(getattr(s, a) == getattr(me, a) for a in attrs) for s in scene.shapes) == 1]
    return me.phrase(rng.choice(unique)) if unique else None


def _color_of(scene: Scene, rng: random.Random, cfg: ShapesConfig) -> list[Question]:
    out = []
    for i, s in enumerate(scene.shapes):
        if d := _describe(scene, i, NO_COLOR, rng):
            out.append(Question("color_of", f"What colour is the {d}?", s.color, "color", (((i,), d, "target"),)))
    return out


def _shape_of(scene: Scene, rng: random.Random, cfg: ShapesConfig) -> list[Question]:
    out = []
    for i, s in enumerate(scene.shapes):
        if d := _describe(scene, i, NO_KIND, rng):
            out.append(Question("shape_of", f"What shape is the {d}?", s.kind, "shape", (((i,), d, "target"),)))
    return out


def _count(scene: Scene, rng: random.Random, cfg: ShapesConfig) -> list[Question]:
    """One question per kind and per colour present; the one step lists the matching boxes left to right.

    A count of 1 is kept with probability ``_KEEP_COUNT_ONE`` only, or "1" would answer most count questions.
    """
    out = []
    groups = [("kind", k, f"{k}s") for k in KINDS] + [("color", c, f"{c} objects") for c in COLORS]
    for attr, value, noun in groups:
        idx = [i for i, s in enumerate(scene.shapes) if getattr(s, attr) == value]
        idx.sort(key=lambda i: (scene.shapes[i].box.x1, scene.shapes[i].box.y1))
        if len(idx) > 1 or (idx and rng.random() < _KEEP_COUNT_ONE):
            out.append(Question("count", f"How many {noun} are there?", str(len(idx)), "number",
                                ((tuple(idx), noun, "target"),)))
    return out


def _nearest_color(scene: Scene, rng: random.Random, cfg: ShapesConfig) -> list[Question]:
    out, n = [], len(scene.shapes)
    for a in range(n):
        d = _describe(scene, a, ANY, rng)
        t = clear_winner(scene, a, [j for j in range(n) if j != a], cfg.nearest_margin)
        if d and t is not None:
            steps = (((a,), d, "context"), ((t,), f"shape nearest to the {d}", "target"))
            out.append(Question("nearest_color", f"What colour is the shape nearest to the {d}?",
                                scene.shapes[t].color, "color", steps))
    return out


def _compare_size(scene: Scene, rng: random.Random, cfg: ShapesConfig) -> list[Question]:
    """Ordered pairs of shapes in different size classes, described without size words (else the text gives it)."""
    shapes, out = scene.shapes, []
    desc = [_describe(scene, i, NO_SIZE, rng) for i in range(len(shapes))]
    for a, b in ((a, b) for a in range(len(shapes)) for b in range(len(shapes)) if a != b):
        if desc[a] and desc[b] and shapes[a].size != shapes[b].size:
            yes = SIZES.index(shapes[a].size) > SIZES.index(shapes[b].size)
            steps = (((a,), desc[a], "target"), ((b,), desc[b], "target"))
            out.append(Question("compare_size", f"Is the {desc[a]} larger than the {desc[b]}?",
                                "yes" if yes else "no", "yes/no", steps))
    return out


def _closer_to(scene: Scene, rng: random.Random, cfg: ShapesConfig) -> list[Question]:
    """Anchor + two options; the answer is the closer option's phrase (size/colour/shape words only)."""
    n, out = len(scene.shapes), []
    desc = [_describe(scene, i, ANY, rng) for i in range(n)]
    for a in range(n):
        for b, c in ((b, c) for b in range(n) for c in range(b + 1, n) if a not in (b, c)):
            win = clear_winner(scene, a, [b, c], cfg.nearest_margin)
            if not (desc[a] and desc[b] and desc[c]) or win is None:
                continue
            first, second = (b, c) if rng.random() < 0.5 else (c, b)
            steps = (((a,), desc[a], "context"),
                     *(((o,), desc[o], "target" if o == win else "context") for o in (first, second)))
            text = f"Which is closer to the {desc[a]}: the {desc[first]} or the {desc[second]}?"
            out.append(Question("closer_to", text, desc[win], "choice", steps))
    return out


def _same_color_nearest(scene: Scene, rng: random.Random, cfg: ShapesConfig) -> list[Question]:
    """Ref (no colour word) → the one other shape of its colour → the shape nearest to that one (not the ref)."""
    n, out = len(scene.shapes), []
    for r in range(n):
        same = [m for m in range(n) if m != r and scene.shapes[m].color == scene.shapes[r].color]
        d = _describe(scene, r, NO_COLOR, rng)
        if len(same) != 1 or not d:
            continue
        m = same[0]
        t = clear_winner(scene, m, [j for j in range(n) if j != m], cfg.nearest_margin)
        if t is None or t == r:
            continue
        mid = f"other object that has the same colour as the {d}"
        steps = (((r,), d, "context"), ((m,), mid, "context"), ((t,), f"shape nearest to the {mid}", "target"))
        out.append(Question("same_color_nearest", f"What shape is nearest to the {mid}?",
                            scene.shapes[t].kind, "shape", steps))
    return out


DIRECTIONS: dict[str, tuple[int, int]] = {"right of": (1, 0), "left of": (-1, 0), "above": (0, -1), "below": (0, 1)}
"""Direction phrase → unit step ``(dx, dy)`` in image coordinates (y grows downwards)."""


def neighbour(scene: Scene, i: int, direction: str) -> int | None:
    """The one shape ``direction`` of shape ``i`` (``DIRECTIONS``) whose box overlaps shape ``i``'s rows (for left /
    right) or columns (above / below); None when no shape or several do.

    >>> s = Scene(0, 0, 112, 112, (245, 245, 245), (Shape("square", "red", "large", 8, 8, 40),
    ...           Shape("circle", "blue", "large", 64, 8, 40), Shape("triangle", "red", "large", 8, 64, 40)))
    >>> neighbour(s, 0, "right of"), neighbour(s, 0, "below"), neighbour(s, 1, "below"), neighbour(s, 1, "left of")
    (1, 2, None, 0)
    """
    dx, dy = DIRECTIONS[direction]
    a = scene.shapes[i].box
    hits = []
    for j, s in enumerate(scene.shapes):
        b = s.box
        if j == i:
            continue
        if dx and min(a.y2, b.y2) > max(a.y1, b.y1) and (b.x1 >= a.x2 if dx > 0 else b.x2 <= a.x1):
            hits.append(j)
        if dy and min(a.x2, b.x2) > max(a.x1, b.x1) and (b.y1 >= a.y2 if dy > 0 else b.y2 <= a.y1):
            hits.append(j)
    return hits[0] if len(hits) == 1 else None


def _neighbour_color(scene: Scene, rng: random.Random, cfg: ShapesConfig) -> list[Question]:
    """Named shape → its neighbour on one side (``neighbour``): an ordered two-box chain, the colour of the second."""
    out = []
    for a in range(len(scene.shapes)):
        d = _describe(scene, a, ANY, rng)
        for direction in DIRECTIONS:
            t = neighbour(scene, a, direction)
            if d and t is not None:
                steps = (((a,), d, "context"), ((t,), f"shape {direction} the {d}", "target"))
                out.append(Question("neighbour_color", f"What colour is the shape {direction} the {d}?",
                                    scene.shapes[t].color, "color", steps))
    return out


FAMILY_BUILDERS: dict[str, Callable[[Scene, random.Random, ShapesConfig], list[Question]]] = {
    "color_of": _color_of,
    "shape_of": _shape_of,
    "count": _count,
    "nearest_color": _nearest_color,
    "compare_size": _compare_size,
    "closer_to": _closer_to,
    "same_color_nearest": _same_color_nearest,
    "neighbour_color": _neighbour_color,
}
"""Family name → ``fn(scene, rng, config) -> every valid question of that family in the scene``."""


def _pick_questions(scene: Scene, rng: random.Random, cfg: ShapesConfig) -> list[Question] | None:
    """Draw ``questions_per_image`` distinct questions: a uniform family among those with candidates left, then a
    uniform candidate of it. Families are enumerated lazily (only when first drawn). None if too few exist."""
    pools: dict[str, list[Question]] = {}
    families, chosen, seen = list(cfg.families), [], set()
    while len(chosen) < cfg.questions_per_image and families:
        fam = rng.choice(families)
        if fam not in pools:
            pools[fam] = FAMILY_BUILDERS[fam](scene, rng, cfg)
        pool = [q for q in pools[fam] if q.text not in seen]
        if not pool:
            families.remove(fam)
            continue
        q = pool[rng.randrange(len(pool))]
        chosen.append(q)
        seen.add(q.text)
    return chosen if len(chosen) == cfg.questions_per_image else None


def _scene_and_questions(index: int, seed: int, cfg: ShapesConfig) -> tuple[Scene, list[Question]]:
    # A string seed is hashed with SHA-512 by `random`, so it is stable across runs and PYTHONHASHSEED.
    rng = random.Random(f"virl-shapes:{seed}:{index}")
    for _ in range(_SCENE_TRIES):
        scene = _place_shapes(rng, index, seed, cfg)
        questions = _pick_questions(scene, rng, cfg) if scene else None
        if questions:
            return scene, questions
    raise ConfigError(f"scene {index}: no layout gave {cfg.questions_per_image} questions from families "
                      f"{', '.join(cfg.families)}; enable more families or lower questions_per_image")


def make_scene(index: int, *, seed: int = 0, config: ShapesConfig = ShapesConfig()) -> Scene:
    """Scene ``index`` of world ``seed``: the same scene ``generate`` renders and asks about.

    >>> make_scene(3, seed=1) == make_scene(3, seed=1)
    True
    """
    return _scene_and_questions(index, seed, config)[0]


def scene_questions(index: int, *, seed: int = 0, config: ShapesConfig = ShapesConfig()) -> list[Question]:
    """The questions ``generate`` asks about scene ``index`` (record ``index * questions_per_image + j``)."""
    return _scene_and_questions(index, seed, config)[1]


# --- records and images ----------------------------------------------------------------------------------------------
def image_path(index: int, seed: int = 0) -> str:
    """Path of scene ``index``'s PNG relative to the image root, e.g. ``shapes/seed0/000123.png``."""
    return f"shapes/seed{seed}/{index:06d}.png"


def _image_ref(scene: Scene, image_dir: Path | None) -> ImageRef:
    """Render and write the PNG when ``image_dir`` is given (sha1 of the file bytes); otherwise only the path."""
    rel = image_path(scene.index, scene.seed)
    if image_dir is None:
        return ImageRef(rel, scene.width, scene.height, None)
    buf = io.BytesIO()
    render_scene(scene).save(buf, format="PNG", compress_level=1)  # flat colours: level 1 is small enough, fast
    data = buf.getvalue()
    (image_dir / rel).write_bytes(data)
    return ImageRef(rel, scene.width, scene.height, hashlib.sha1(data).hexdigest())


def _record(scene: Scene, j: int, q: Question, image: ImageRef) -> RationaleRecord:
    chain = tuple(
        RationaleStep(boxes=tuple(scene.shapes[k].box for k in idx), phrase=phrase, role=role,
                      source_ref=",".join(map(str, idx)))
        for idx, phrase, role in q.steps
    )
    native = (("scene", str(scene.index)), ("question", str(j)))
    return RationaleRecord(
        id=record_id(SOURCE, f"{scene.seed}", str(scene.index), str(j)),
        image=image,
        question=q.text,
        answer=q.answer,
        chain=chain,
        provenance=Provenance(source=SOURCE, source_split=None, native_ids=native, miner=MINER),
        answer_type=q.answer_type,
        question_type=q.family,
        status=Status.MINED,
    )


def _records(n_records: int, start: int, seed: int, image_dir: Path | None,
             cfg: ShapesConfig) -> Iterator[RationaleRecord]:
    per = cfg.questions_per_image
    current, scene, questions, image = -1, None, [], None
    for k in range(start, start + n_records):
        i, j = divmod(k, per)
        if i != current:
            scene, questions = _scene_and_questions(i, seed, cfg)
            image, current = _image_ref(scene, image_dir), i
        yield _record(scene, j, questions[j], image)


def generate(
    n_records: int,
    *,
    seed: int = 0,
    image_dir: str | Path | None = None,
    config: ShapesConfig = ShapesConfig(),
    progress: bool = False,
    start: int = 0,
) -> Iterator[RationaleRecord]:
    """Iterate over exactly ``n_records`` records: records ``start .. start+n_records-1`` of world ``seed``.

    Record ``k`` is question ``k % questions_per_image`` of scene ``k // questions_per_image``. With ``image_dir``
    each scene is rendered once to ``image_dir / image_path(scene, seed)``; without it no file is written and the
    ``ImageRef`` carries the would-be path and ``sha1=None``.

    >>> [r.provenance.native_ids for r in generate(2, seed=0, start=3)]
    [(('scene', '0'), ('question', '3')), (('scene', '1'), ('question', '0'))]
    """
    if not isinstance(n_records, int) or n_records < 0 or not isinstance(start, int) or start < 0:
        raise ConfigError(f"n_records and start must be ints >= 0, got {n_records!r}, {start!r}")
    root = None if image_dir is None else Path(image_dir)
    if root is not None:
        (root / image_path(0, seed)).parent.mkdir(parents=True, exist_ok=True)
    records = _records(n_records, start, seed, root, config)
    return _with_progress(records, n_records) if progress else records


def scene_objects(record: RationaleRecord, config: ShapesConfig | None = None) -> tuple[Box, ...] | None:
    """Every object's box in the scene a shapes record asks about, or None when the scene cannot be rebuilt.

    The scene is regenerated from the record's ``scene`` / ``question`` native ids and the seed in its image path,
    with ``config`` (default: ``ShapesConfig`` at the record's image size); it is trusted only when the regenerated
    question text is the record's, so a record made with another config gives None, never the wrong objects. The
    chain is not consulted: a corrupted chain still gets its scene's true objects.

    >>> rec = next(generate(1, seed=0, config=ShapesConfig(image_size=(128, 128))))
    >>> set(rec.boxes) <= set(scene_objects(rec))
    True
    """
    scene_id, question = record.provenance.native_id("scene"), record.provenance.native_id("question")
    seed = re.fullmatch(r"shapes/seed(\d+)/\d+\.png", record.image.path)
    if record.provenance.source != SOURCE or scene_id is None or question is None or seed is None:
        return None
    cfg = config or ShapesConfig(image_size=(int(record.image.width), int(record.image.height)))
    try:
        scene, questions = _scene_and_questions(int(scene_id), int(seed.group(1)), cfg)
    except (ConfigError, ValueError):
        return None
    j = int(question)
    if j >= len(questions) or questions[j].text != record.question:
        return None
    return tuple(s.box for s in scene.shapes)


def _with_progress(records: Iterator[RationaleRecord], total: int) -> Iterator[RationaleRecord]:
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task("shapes", total=total)
        for rec in records:
            yield rec
            bar.advance(task)


def mine(src_dir: str | Path | None, *, limit: int | None = None, seed: int = 0) -> Iterator[RationaleRecord]:
    """Miner interface: render ``limit`` records (default 200) of world ``seed`` into the image root ``src_dir``."""
    return generate(200 if limit is None else limit, seed=seed, image_dir=src_dir)


__all__ = [
    "COLORS",
    "FAMILIES",
    "FAMILY_BUILDERS",
    "KINDS",
    "MINER",
    "OPT_IN_FAMILIES",
    "SIZES",
    "Question",
    "Scene",
    "Shape",
    "ShapesConfig",
    "centre_distance",
    "clear_winner",
    "gap_distance",
    "generate",
    "image_path",
    "make_scene",
    "mine",
    "neighbour",
    "render_scene",
    "scene_objects",
    "scene_questions",
]
