"""``CropEnv``: the multi-turn crop environment. Text in, ``Action`` + next observation out; no model, no tokenizer.

One episode::

    env = CropEnv("qwen2_norm1000", max_actions=4)
    obs = env.reset(image, question)          # obs.image = the original, obs.text = the question
    while True:
        result = env.step(model_turn_text)    # parse (virl_train.actions) → crop → resize
        if result.done: break
        # the rollout inserts result.observation.text (+ .image when not None) as environment tokens (loss mask 0)

Rules:

- **CROP**: the box (original pixels, from ``parse_turn``) is grown around its centre to at least ``min_crop`` px
  per side, moved back inside the image if growing pushed it out (so a small box at the border keeps its size),
  clipped to the image and snapped outwards to whole pixels. An aspect ratio above ``max_aspect`` is INVALID
  ``aspect_ratio``. The region is cut from the ORIGINAL image (never from a previous crop: no compounding blur) and
  resized to ``smart_resize`` of its size: sides multiples of ``factor``, pixel count within
  ``[min_pixels, max_pixels]``, aspect ratio kept up to that rounding (exception, as in the processor itself: a
  region thinner than ``max_pixels / factor²`` : 1 keeps a one-``factor`` short side and may exceed ``max_pixels``). So the processor will not resize it again,
  and ``Observation.resized`` is exactly what the model sees.
- **INVALID** actions count against ``max_actions`` and return an observation without an image whose text is
  ``<crop_error>…</crop_error>`` with the reason (``actions.ERRORS``).
- **ANSWER** ends the episode (``done``, no observation).
- **Region transform** (the illusion probe, ``virl_train.eval``): when ``region_transform`` is set, the region
  actually cut is ``region_transform(region, (W, H))`` of the region above: the pixels shown change, the ACTION keeps
  the model's box (rewards and metrics judge what the model asked for).
- **Budget**: the observation of the ``max_actions``-th visual action tells the model to answer now. The turn after
  it must answer: any other turn ends the episode (``done``) as a visual action, a crop becoming INVALID
  ``action_limit`` (not executed). So an episode has at most ``max_actions + 1`` turns and ``max_actions + 1``
  visual actions, the last of them INVALID.

Tool texts (``CROP_TEXT``, ``ERROR_TEXT``, ``LAST_TEXT``) are module constants so that the rollout, the tests and the
prompt agree.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from virl_data.core import boxconv
from virl_data.core.boxanswer import BOX
from virl_data.core.errors import BoxConventionError, ConfigError
from virl_data.core.types import Box
from virl_train.actions import ABSOLUTE, ERRORS, MODEL_CONVENTIONS, parse_turn
from virl_train.types import Action, ActionKind

CROP_TEXT = "<crop_result>Crop {index} of {limit}: the region you asked for is shown below.</crop_result>"
ERROR_TEXT = "<crop_error>Action {index} of {limit} was invalid: {reason}.</crop_error>"
_SNAP_EPS = 1e-6
LAST_TEXT = " No crops are left: give your final answer now as <answer>...</answer>."
BOX_ANSWER_TEXT = " Answer with the box of what is asked for, <answer>[x1, y1, x2, y2]</answer>, in the coordinates of a crop."
"""Appended to the question of a box-answer record (``answer_type="box"``): the answer is a box, not a word."""


@dataclass(frozen=True, slots=True)
class Observation:
    """What the environment hands the model next.

    ``image``: the original image (reset) or the resized crop, None after an INVALID action; ``text``: the question
    (reset) or the tool text; ``frame``: the region of the original image (pixels) the current view shows;
    ``resized``: ``(w, h)`` of the view as the model sees it; ``index``: visual actions used so far.
    """

    image: Image.Image | None
    text: str
    frame: Box
    resized: tuple[int, int]
    index: int = 0


@dataclass(frozen=True, slots=True)
class StepResult:
    """One step: the parsed action, the next observation (None when done), and whether the episode ended."""

    action: Action
    observation: Observation | None
    done: bool


def crop_region(
    box: Box, image_size: tuple[int, int], min_crop: int, max_aspect: float
) -> Box | str:
    """The whole-pixel region actually cropped for ``box``, or the error code ``"aspect_ratio"``.

    Each side becomes ``max(side, min(min_crop, image side))`` around the centre ``c``: ``[c - s/2, c + s/2]``,
    shifted by the overhang if it leaves ``[0, W]``, then ``floor`` / ``ceil`` to pixels and clipped.

    >>> crop_region(Box(0, 40, 10, 50), (100, 100), 28, 100)
    Box(x1=0.0, y1=31.0, x2=28.0, y2=59.0)
    """
    lo, hi = np.array([box.x1, box.y1]), np.array([box.x2, box.y2])
    limit = np.array(image_size, dtype=np.float64)
    side = np.maximum(hi - lo, np.minimum(float(min_crop), limit))
    start = (lo + hi) / 2 - side / 2
    start = np.clip(
        start, 0.0, limit - side
    )  # move back inside rather than shrink at the border
    # snap outwards to whole pixels, ignoring float noise (0-1000 → pixels gives 42.000000000000004, not 43)
    x1, y1 = np.clip(np.floor(start + _SNAP_EPS), 0, limit)
    x2, y2 = np.clip(np.ceil(start + side - _SNAP_EPS), 0, limit)
    w, h = x2 - x1, y2 - y1
    if min(w, h) <= 0 or max(w, h) / min(w, h) > max_aspect:
        return "aspect_ratio"
    return Box(x1, y1, x2, y2)


class CropEnv:
    """The crop environment of one episode at a time (see the module docstring for the rules).

    ``convention``: the box convention the model speaks (``actions.MODEL_CONVENTIONS``); ``min_pixels`` /
    ``max_pixels`` / ``factor``: the processor's (they size the crops and give the ``resized`` view of the original
    for ``qwen25_abs_resized``); ``fmt``: ``"tag"`` or ``"json"``; ``oob_tol``: see ``actions.parse_turn``;
    ``frame``: ``"original"`` (boxes refer to the original image) or ``"last_crop"`` (to the view last shown);
    ``scale``: the 0–scale range of ``qwen3_norm1000``; ``region_transform``: ``(region, (W, H)) -> Box``, applied to
    the whole-pixel region a crop cuts (after ``crop_region``); it must return a non-empty box inside the image.
    """

    def __init__(
        self,
        convention: str,
        *,
        max_actions: int = 4,
        min_crop: int = 28,
        max_aspect: float = 100.0,
        min_pixels: int = boxconv.QWEN_MIN_PIXELS,
        max_pixels: int = boxconv.QWEN_MAX_PIXELS,
        factor: int = boxconv.QWEN_FACTOR,
        fmt: str = "tag",
        oob_tol: float = 0.02,
        frame: str = "original",
        scale: float = 1000.0,
        region_transform: Callable[[Box, tuple[int, int]], Box] | None = None,
    ) -> None:
        if convention not in MODEL_CONVENTIONS:
            raise ConfigError(
                f"unknown model box convention {convention!r}; known: {', '.join(MODEL_CONVENTIONS)}"
            )
        if fmt not in ("tag", "json") or frame not in ("original", "last_crop"):
            raise ConfigError(
                f"CropEnv: fmt must be tag|json and frame original|last_crop, got {fmt!r}, {frame!r}"
            )
        if max_actions < 0 or min_crop < 1 or max_aspect < 1:
            raise ConfigError(
                "CropEnv: need max_actions >= 0, min_crop >= 1 and max_aspect >= 1"
            )
        self.convention, self.fmt, self.frame_mode = convention, fmt, frame
        self.max_actions, self.min_crop, self.max_aspect = (
            max_actions,
            min_crop,
            max_aspect,
        )
        self.min_pixels, self.max_pixels, self.factor = min_pixels, max_pixels, factor
        self.oob_tol = oob_tol
        self.region_transform = region_transform
        self.params = {"scale": scale} if convention == "qwen3_norm1000" else {}
        self._image: Image.Image | None = None
        self._view: Observation | None = None
        self._origin: Observation | None = (
            None  # the reset view: boxes in "original" mode refer to it
        )
        self._actions: list[Action] = []
        self._turn = 0
        self._done = True

    # --- state -------------------------------------------------------------------------------------------------------
    @property
    def actions(self) -> tuple[Action, ...]:
        """The visual actions (CROP / INVALID) of the current episode, in order."""
        return tuple(a for a in self._actions if a.kind is not ActionKind.ANSWER)

    @property
    def done(self) -> bool:
        return self._done

    def view_size(self, width: int, height: int) -> tuple[int, int]:
        """``(w, h)`` an image of ``width x height`` is shown at: ``smart_resize`` with this env's limits."""
        try:
            h, w = boxconv.smart_resize(
                height, width, self.factor, self.min_pixels, self.max_pixels
            )
        except BoxConventionError as exc:
            raise ConfigError(f"CropEnv: {exc}") from None
        return w, h

    # --- episode -----------------------------------------------------------------------------------------------------
    def reset(self, image: Image.Image, question: str) -> Observation:
        """Start an episode on ``image`` (the ORIGINAL image) and ``question``; returns the first observation."""
        self._image = image if image.mode == "RGB" else image.convert("RGB")
        self._actions, self._turn, self._done = [], 0, False
        full = Box(0, 0, image.width, image.height)
        self._view = self._origin = Observation(
            self._image, question, full, self.view_size(*image.size), 0
        )
        return self._view

    def step(self, text: str) -> StepResult:
        """Parse one model turn and act on it (see the module docstring)."""
        if self._done or self._image is None or self._view is None:
            raise RuntimeError(
                "CropEnv.step called before reset() or after the episode ended"
            )
        action = self._parse(text)
        self._turn += 1
        used = len(self.actions)
        if action.kind is ActionKind.ANSWER or used >= self.max_actions:
            if action.kind is ActionKind.CROP:
                action = dataclasses.replace(
                    action, kind=ActionKind.INVALID, box=None, error="action_limit"
                )
            self._actions.append(action)
            self._done = True
            return StepResult(action, None, True)
        if action.kind is ActionKind.CROP:
            action, obs = self._crop(action, used + 1)
        else:
            obs = self._error(action, used + 1)
        self._actions.append(action)
        self._view = (
            obs
            if obs.image is not None
            else dataclasses.replace(self._view, index=used + 1)
        )
        return StepResult(action, obs, False)

    def _parse(self, text: str) -> Action:
        last_crop = self.frame_mode == "last_crop"
        view = self._view if last_crop else self._origin
        assert view is not None and self._image is not None
        return parse_turn(
            text,
            turn=self._turn,
            convention=self.convention,
            image_size=self._image.size,
            resized=view.resized,
            fmt=self.fmt,
            frame=view.frame if last_crop else None,
            oob_tol=self.oob_tol,
            params=self.params,
        )

    def _suffix(self, index: int) -> str:
        return LAST_TEXT if index >= self.max_actions else ""

    def crop_view(self, box: Box, image_size: tuple[int, int]) -> tuple[Box, tuple[int, int]] | None:
        """The whole-pixel region of the original a crop of ``box`` cuts (``crop_region``) and the ``(w, h)`` it is
        shown at, or None when its aspect ratio is refused (the action becomes INVALID ``aspect_ratio``). No pixels
        are touched: scoring a logged crop (``virl_train.interop.verl``) judges it exactly as ``step`` did."""
        region = crop_region(box, image_size, self.min_crop, self.max_aspect)
        size = None if isinstance(region, str) else self._crop_size(region)
        return None if isinstance(region, str) or size is None else (region, size)

    def _crop(self, action: Action, index: int) -> tuple[Action, Observation]:
        assert action.box is not None and self._image is not None
        view = self.crop_view(action.box, self._image.size)
        if view is None:
            action = dataclasses.replace(
                action, kind=ActionKind.INVALID, box=None, error="aspect_ratio"
            )
            return action, self._error(action, index)
        region, size = view
        if self.region_transform is not None:
            region = self._transformed(region)
            size = self._crop_size(region) or size  # a transform may change the size (e.g. the full image)
        pixels = tuple(int(v) for v in region.as_tuple())
        image = self._image.crop(pixels).resize(size, Image.Resampling.BICUBIC)
        text = CROP_TEXT.format(index=index, limit=self.max_actions) + self._suffix(
            index
        )
        return action, Observation(image, text, region, size, index)

    def _transformed(self, region: Box) -> Box:
        """``region_transform(region, (W, H))``, checked to be a non-empty whole-pixel box inside the image."""
        assert self.region_transform is not None and self._image is not None
        new = self.region_transform(region, self._image.size)
        w, h = self._image.size
        inside = 0 <= new.x1 < new.x2 <= w and 0 <= new.y1 < new.y2 <= h
        if not inside or any(v != int(v) for v in new.as_tuple()):
            raise ConfigError(f"CropEnv: region_transform returned {new}, not a whole-pixel box inside {w}x{h}")
        return new

    def _crop_size(self, region: Box) -> tuple[int, int] | None:
        try:
            return self.view_size(int(region.w), int(region.h))
        except (
            ConfigError
        ):  # smart_resize refuses aspect ratios over 200 even if max_aspect allows them
            return None

    def _error(self, action: Action, index: int) -> Observation:
        assert self._view is not None
        reason = ERRORS.get(action.error or "", action.error or "invalid action")
        text = ERROR_TEXT.format(
            index=index, limit=self.max_actions, reason=reason
        ) + self._suffix(index)
        return Observation(None, text, self._view.frame, self._view.resized, index)


_CONVENTION_TEXT = {
    "qwen2_norm1000": "integers from 0 to 1000, relative to the image width and height (0 = left/top edge, "
    "1000 = right/bottom edge)",
    "qwen3_norm1000": "integers from 0 to {scale}, relative to the image width and height (0 = left/top edge, "
    "{scale} = right/bottom edge)",
    "qwen25_abs_resized": "absolute pixel coordinates on the image as you see it, which is {rw} x {rh} pixels",
    "rel_xyxy": "fractions from 0 to 1 of the image width and height",
    "padded_square_rel": "fractions from 0 to 1 of the image padded to a square (centred)",
    ABSOLUTE: "absolute pixel coordinates on the image, which is {w} x {h} pixels",
}


def question_text(question: str, answer_type: str | None) -> str:
    """The question as the model reads it: a box-answer record's question asks for the box in the crop syntax.

    >>> question_text('Where is "man on right"?', "box").endswith("in the coordinates of a crop.")
    True
    >>> question_text("What colour?", "color")
    'What colour?'
    """
    return question + BOX_ANSWER_TEXT if answer_type == BOX else question


def system_prompt(
    convention: str,
    image_size: tuple[int, int],
    *,
    resized: tuple[int, int] | None = None,
    max_actions: int = 4,
    fmt: str = "tag",
    frame: str = "original",
    scale: float = 1000.0,
) -> str:
    """The system prompt: how to crop and answer, and the coordinate convention spelled out for this image.

    ``resized`` is the ``(w, h)`` the model sees the original at (``CropEnv.view_size``); needed for
    ``qwen25_abs_resized`` (computed with the default Qwen limits when None).

    >>> "0 to 1000" in system_prompt("qwen2_norm1000", (640, 480))
    True
    """
    if convention not in _CONVENTION_TEXT:
        raise ConfigError(
            f"unknown model box convention {convention!r}; known: {', '.join(_CONVENTION_TEXT)}"
        )
    w, h = image_size
    if resized is None:
        h_r, w_r = boxconv.smart_resize(h, w)
        resized = (w_r, h_r)
    coords = _CONVENTION_TEXT[convention].format(
        w=w, h=h, rw=resized[0], rh=resized[1], scale=f"{scale:g}"
    )
    if fmt == "json":
        how = 'call the crop tool: {"name": "crop", "arguments": {"bbox_2d": [x1, y1, x2, y2]}}'
    else:
        how = "write <crop>[x1, y1, x2, y2]</crop>"
    where = (
        "the original image"
        if frame == "original"
        else "the image or crop you are currently looking at"
    )
    return (
        "Answer the question about the image. Look closely at the regions that matter before answering.\n"
        f"To zoom into a region, {how}, with (x1, y1) its top-left and (x2, y2) its bottom-right corner, in "
        f"{coords}; the box always refers to {where}. Use one action per turn; the crop is shown to you next.\n"
        f"You may crop at most {max_actions} time{'s' if max_actions != 1 else ''}. Think step by step, then give "
        "the final answer as <answer>...</answer>."
    )


__all__ = [
    "BOX_ANSWER_TEXT",
    "CROP_TEXT",
    "ERROR_TEXT",
    "LAST_TEXT",
    "CropEnv",
    "Observation",
    "StepResult",
    "crop_region",
    "question_text",
    "system_prompt",
]
