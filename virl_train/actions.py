"""Parse one model turn into an ``Action``; boxes leave here in canonical ORIGINAL-image pixels.

Formats (``fmt``):

- ``"tag"`` (default): ``<crop>[x1, y1, x2, y2]</crop>`` or ``<answer>…</answer>``. Brackets may be ``[]``, ``()``
  or absent; numbers may be signed decimals with exponents, separated by commas and/or spaces.
- ``"json"``: a tool call ``{"name": "crop", "arguments": {"bbox_2d": [x1, y1, x2, y2]}}`` (``bbox`` also
  accepted; Qwen's ``<tool_call>…</tool_call>`` wrapper is fine), or ``{"name": "answer", "arguments":
  {"answer": "…"}}``, or an ``<answer>…</answer>`` tag.

Rules (deterministic, tested in ``tests/train/test_actions.py``):

1. **The first complete action in the text wins**: several crops → the first; a crop and an answer → whichever
   comes first. This is what the rollout would have acted on had it stopped at the first closing tag, so a model
   cannot hedge by appending a second action. Closing tags are required: the rollout must keep its stop string in
   the text (HF ``stop_strings`` do; vLLM needs ``include_stop_str_in_output=True``).
2. Malformed text never raises: it gives ``Action(kind=INVALID, error=<code>)`` with a code from ``ERRORS``.
   (A wrong *convention name* or parameters is a configuration bug and raises ``ConfigError``.)
3. The box is checked in the model's convention (``x1 < x2``, ``y1 < y2``: every convention is increasing), then
   converted by ``virl_data.core.boxconv.to_canonical`` (``qwen25_abs_resized`` needs ``resized``, the ``(w, h)`` the
   model saw). A box sticking out of the image by more than ``oob_tol × max(W, H)`` pixels is ``out_of_image``;
   within that it is clipped (and a box clipped to nothing is ``out_of_image`` too).
4. **Box answers**: an answer whose text is a box (``<answer>[x1, y1, x2, y2]</answer>``, the crop syntax) is
   converted exactly like a crop (same convention, checks and clipping) into ``Action.box``; a record whose
   ``answer_type`` is ``"box"`` is scored on that box (``virl_data.core.answers``). An answer that is not a valid box
   keeps ``box=None`` (still a valid ANSWER: its text is scored for other answer types).
5. With ``frame=<Box>`` the model speaks in the coordinates of that crop (the crop is its "image": size
   ``frame.w × frame.h``, seen at ``resized``); the box is checked against the frame and mapped back with
   ``crop_of_crop``.

Example:
    >>> a = parse_turn("look <crop>[100, 200, 500, 600]</crop>", turn=0, convention="qwen2_norm1000",
    ...                image_size=(200, 100))
    >>> a.kind.value, a.box
    ('crop', Box(x1=20.0, y1=20.0, x2=100.0, y2=60.0))
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from virl_data.core import boxconv, boxes
from virl_data.core.errors import BoxConventionError, ConfigError
from virl_data.core.types import Box
from virl_train.types import Action, ActionKind

ABSOLUTE = "abs"
"""The model speaks canonical pixels of the original image already (no conversion)."""

MODEL_CONVENTIONS = (
    "qwen25_abs_resized",
    "qwen2_norm1000",
    "qwen3_norm1000",
    "rel_xyxy",
    "padded_square_rel",
    ABSOLUTE,
)
"""Box conventions a policy may speak (``model.box_convention``): boxconv's xyxy ones plus ``abs``."""

ERRORS: dict[str, str] = {
    "no_action": "no <crop>[x1, y1, x2, y2]</crop> or <answer>...</answer> was found",
    "nested_tags": "action tags must not be nested",
    "malformed_box": "the box must be four numbers [x1, y1, x2, y2]",
    "non_finite": "the box has a non-finite number",
    "inverted_box": "the box needs x1 < x2 and y1 < y2",
    "empty_box": "the box has zero width or height",
    "out_of_image": "the box lies outside the image",
    "empty_answer": "the answer is empty",
    "malformed_json": "the tool call is not valid JSON",
    "unknown_tool": "unknown tool; use crop or answer",
    # set by the environment (virl_train.env), listed here so that all codes live in one table
    "aspect_ratio": "the box is too thin (aspect ratio too large)",
    "action_limit": "no crops are left; answer now",
}
"""INVALID error code → the sentence the environment shows the model."""

_ACTION_TAG = re.compile(r"<(crop|answer)>(.*?)</\1\s*>", re.IGNORECASE | re.DOTALL)
_ANSWER_TAG = re.compile(r"<(answer)>(.*?)</answer\s*>", re.IGNORECASE | re.DOTALL)
_ANY_TAG = re.compile(r"</?\s*(?:crop|answer)\s*>", re.IGNORECASE)
_BRACKETS = re.compile(r"\A\s*[\[(]\s*(.*?)\s*[\])]\s*\Z", re.DOTALL)
_SEPARATOR = re.compile(r"\s*,\s*|\s+", re.ASCII)
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?", re.ASCII)
_BRACE = re.compile(r"\{", re.ASCII)
_MAX_JSON_STARTS = 64  # bound the JSON scan on adversarial text full of braces


def _invalid(turn: int, raw: str, code: str) -> Action:
    return Action(turn=turn, kind=ActionKind.INVALID, raw=raw, error=code)


def parse_numbers(content: str) -> list[float] | str:
    """``"[1, 2.5, 3e1, -4]"`` → ``[1.0, 2.5, 30.0, -4.0]``, or an error code (``malformed_box``, ``non_finite``)."""
    m = _BRACKETS.match(content)
    inner = (m.group(1) if m else content).strip()
    tokens = _SEPARATOR.split(inner)  # "1,, 2" gives an empty token: malformed
    if len(tokens) != 4 or not all(_NUMBER.fullmatch(t) for t in tokens):
        return "malformed_box"
    values = [float(t) for t in tokens]
    return values if all(math.isfinite(v) for v in values) else "non_finite"


def _json_numbers(value: Any) -> list[float] | str:
    if not isinstance(value, list) or len(value) != 4:
        return "malformed_box"
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return "malformed_box"
    values = [float(v) for v in value]
    return values if all(math.isfinite(v) for v in values) else "non_finite"


def crop_of_crop(box_in_crop: Box, crop: Box) -> Box:
    """A box in the pixel frame of a crop (origin at the crop's top-left, original scale) → original pixels.

    ``[x1 + c.x1, y1 + c.y1, x2 + c.x1, y2 + c.y1]`` for crop ``c``. The model's own convention is first converted
    with the crop as the image (``width=c.w, height=c.h``, ``resized`` = the crop as shown), which gives this frame.

    >>> crop_of_crop(Box(0, 0, 10, 10), Box(50, 20, 150, 120))
    Box(x1=50.0, y1=20.0, x2=60.0, y2=30.0)
    """
    offset = np.array([crop.x1, crop.y1, crop.x1, crop.y1], dtype=np.float64)
    return Box(*(boxes.as_array([box_in_crop])[0] + offset).tolist())


def _boxconv_kwargs(
    convention: str, size: tuple[float, float], resized: tuple[float, float] | None, params: Mapping[str, Any] | None
) -> dict[str, Any]:
    if convention not in MODEL_CONVENTIONS:
        raise ConfigError(
            f"unknown model box convention {convention!r}; known: {', '.join(MODEL_CONVENTIONS)}"
        )
    kw: dict[str, Any] = {"width": size[0], "height": size[1], **(params or {})}
    if convention == "qwen25_abs_resized":
        kw["resized"] = resized
    return kw


def to_pixels(
    values: list[float],
    convention: str,
    size: tuple[float, float],
    resized: tuple[float, float] | None = None,
    params: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """Four values in ``convention`` → canonical pixels ``(4,)`` of an image of ``size = (W, H)``, via boxconv."""
    kw = _boxconv_kwargs(convention, size, resized, params)
    if convention == ABSOLUTE:
        return np.asarray(values, dtype=np.float64)
    try:
        return boxconv.to_canonical(convention, values, **kw)
    except BoxConventionError as exc:
        raise ConfigError(f"box convention {convention!r}: {exc}") from None


def from_pixels(
    box: Sequence[float],
    convention: str,
    size: tuple[float, float],
    resized: tuple[float, float] | None = None,
    params: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """The inverse of ``to_pixels``: canonical pixels ``(x1, y1, x2, y2)`` → the four values the model writes.

    >>> from_pixels((10, 20, 30, 40), "qwen2_norm1000", (100, 200)).tolist()
    [100.0, 100.0, 300.0, 200.0]
    """
    kw = _boxconv_kwargs(convention, size, resized, params)
    if convention == ABSOLUTE:
        return np.asarray(box, dtype=np.float64)
    try:
        return np.asarray(boxconv.from_canonical(convention, list(box), **kw), dtype=np.float64)
    except BoxConventionError as exc:
        raise ConfigError(f"box convention {convention!r}: {exc}") from None


def _crop_action(
    values: list[float] | str, turn: int, raw: str, convention: str, image_size: tuple[float, float],
    resized: tuple[float, float] | None, frame: Box | None, oob_tol: float, params: Mapping[str, Any] | None,
) -> Action:  # fmt: skip
    if isinstance(values, str):
        return _invalid(turn, raw, values)
    x1, y1, x2, y2 = values
    if x1 > x2 or y1 > y2:
        return _invalid(turn, raw, "inverted_box")
    if x1 == x2 or y1 == y2:
        return _invalid(turn, raw, "empty_box")
    size = (frame.w, frame.h) if frame is not None else image_size
    arr = to_pixels(values, convention, size, resized, params)
    if not np.isfinite(arr).all():  # huge finite numbers can overflow in the scaling
        return _invalid(turn, raw, "non_finite")
    tol = oob_tol * max(size)
    if not bool(boxes.contains(np.array([0.0, 0.0, size[0], size[1]]), arr, tol)):
        return _invalid(turn, raw, "out_of_image")
    clipped = boxes.clip(arr, size[0], size[1])
    if float(boxes.area(clipped)) <= 0.0:
        return _invalid(turn, raw, "out_of_image")
    box = Box(*clipped.tolist())
    box = crop_of_crop(box, frame) if frame is not None else box
    return Action(turn=turn, kind=ActionKind.CROP, box=box, raw=raw)


def _answer_action(content: str, turn: int, raw: str, crop_args: tuple | None = None) -> Action:
    """An ANSWER; when its text is a box (four numbers, as a crop's) that converts like a valid crop, ``box`` holds
    it in original pixels (a box answer), else ``box`` is None (a text answer, or a box that is not one)."""
    answer = content.strip()
    if _ANY_TAG.search(answer):
        return _invalid(turn, raw, "nested_tags")
    if not answer:
        return _invalid(turn, raw, "empty_answer")
    box = None
    values = parse_numbers(answer)
    if crop_args is not None and not isinstance(values, str):
        as_crop = _crop_action(values, turn, raw, *crop_args[2:])
        box = as_crop.box if as_crop.kind is ActionKind.CROP else None
    return Action(turn=turn, kind=ActionKind.ANSWER, answer=answer, box=box, raw=raw)


def _first_tool_call(text: str) -> tuple[int, Any] | None:
    """The first ``{...}`` in ``text`` that decodes to a JSON object with a ``name``: (position, object)."""
    decoder = json.JSONDecoder()
    for i, m in enumerate(_BRACE.finditer(text)):
        if i >= _MAX_JSON_STARTS:
            break
        try:
            obj, _ = decoder.raw_decode(text, m.start())
        except ValueError:
            continue
        if isinstance(obj, dict) and "name" in obj:
            return m.start(), obj
    return None


def parse_turn(
    text: str,
    *,
    turn: int,
    convention: str,
    image_size: tuple[float, float],
    resized: tuple[float, float] | None = None,
    fmt: str = "tag",
    frame: Box | None = None,
    oob_tol: float = 0.02,
    params: Mapping[str, Any] | None = None,
) -> Action:
    """One model turn → ``Action`` (CROP with an original-pixel box, ANSWER, or INVALID with an error code).

    ``image_size = (W, H)`` of the original image; ``resized = (w, h)`` the image the model saw (needed for
    ``qwen25_abs_resized``); ``frame`` the crop the model speaks in (None = the original image); ``params`` extra
    convention parameters (e.g. ``{"scale": 999}`` for ``qwen3_norm1000``). See the module docstring for the rules.

    >>> parse_turn("<crop>[5, 5, 1, 9]</crop>", turn=1, convention="abs", image_size=(10, 10)).error
    'inverted_box'
    """
    if fmt not in ("tag", "json"):
        raise ConfigError(f"unknown action format {fmt!r}; use 'tag' or 'json'")
    text = text if isinstance(text, str) else str(text)
    # the json format crops by tool call only; its final answer may still be an <answer> tag
    tag = (_ACTION_TAG if fmt == "tag" else _ANSWER_TAG).search(text)
    call = _first_tool_call(text) if fmt == "json" else None
    crop_args = (turn, text, convention, image_size, resized, frame, oob_tol, params)
    if call is not None and (tag is None or call[0] < tag.start()):
        obj = call[1]
        args = obj.get("arguments")
        args = args if isinstance(args, dict) else {}
        if obj["name"] == "crop":
            return _crop_action(
                _json_numbers(args.get("bbox_2d", args.get("bbox"))), *crop_args
            )
        if obj["name"] == "answer":
            value = args.get("answer")
            return (
                _answer_action(value, turn, text, crop_args)
                if isinstance(value, str)
                else _invalid(turn, text, "empty_answer")
            )
        return _invalid(turn, text, "unknown_tool")
    if tag is not None:
        kind, content = tag.group(1).lower(), tag.group(2)
        if kind == "answer":
            return _answer_action(content, turn, text, crop_args)
        if _ANY_TAG.search(content):
            return _invalid(turn, text, "nested_tags")
        return _crop_action(parse_numbers(content), *crop_args)
    if fmt == "json" and _BRACE.search(text):
        return _invalid(turn, text, "malformed_json")
    return _invalid(turn, text, "no_action")


__all__ = [
    "ABSOLUTE",
    "ERRORS",
    "MODEL_CONVENTIONS",
    "crop_of_crop",
    "parse_numbers",
    "parse_turn",
    "from_pixels",
    "to_pixels",
]
