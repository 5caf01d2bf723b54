"""Rule-based answer correctness (no LLM judge): normalized exact match, multiple choice, numeric.

``score_answer(pred, gold, answer_type=None, options=None, rel_tol=1e-6) -> 1.0 | 0.0 | None``:

- **exact** (default): ``normalize_answer(pred) == normalize_answer(gold)``. Normalizing lowercases, replaces
  number words (``"two"`` → ``"2"``), strips markup tags, punctuation (a decimal point between digits survives) and
  the articles a/an/the, and collapses whitespace: ``"The Red."`` == ``"red"``.
- **numeric** (``answer_type`` in ``NUMERIC_TYPES``, or automatically when the gold is a bare number and no options
  are given): the prediction must contain exactly one distinct number ``p`` (after number words and thousands
  separators), correct iff ``|p − g| ≤ rel_tol·max(|g|, 1)`` → ``"about 2"`` == ``"2.0"``.
- **multiple choice** (``options`` given, or ``answer_type`` in ``CHOICE_TYPES``): the gold is a letter (``"B"``,
  ``"(B)"``, ``"B."``) or an option text; the prediction may be a letter in any of those forms, an option text, or
  both (``"B. cat"``); correct iff it names exactly one option and that is the gold's.

- **box** (``answer_type == "box"``, a grounding record): the gold is the target box in canonical pixels
  (``virl_data.core.boxanswer``: ``"[x1, y1, x2, y2]"``); the prediction is a ``Box`` in the same pixels (the rollout
  converts the policy's ``<answer>[...]</answer>`` from its convention, as it converts crops) or such a string.
  Correct iff ``IoU(pred, gold) ≥ iou_threshold`` (``RewardConfig.answer_iou``, 0.5): ``box_iou`` gives the IoU. A
  prediction that is not a box (a word, an inverted box) scores 0.0; an unreadable gold box gives None.

Hedged answers are wrong: several distinct numbers (``"2 or 3"``), several options (``"A or B"``), or hedge words
(``either``, ``or``, ``maybe``, ``and/or``) around a mismatching candidate. ``None`` means *not applicable*: the gold
cannot be parsed for the type (numeric type with gold ``"red"``, a choice gold that names no option, an empty gold).
An empty or missing prediction scores 0.0.

Example:
    >>> score_answer("Two", "2"), score_answer("(B)", "cat", options=["dog", "cat"]), score_answer("A or B", "A")
    (1.0, 1.0, 0.0)
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Mapping, Sequence

import numpy as np

from virl_data.core import boxes
from virl_data.core.boxanswer import BOX, parse_box
from virl_data.core.types import Box

NUMERIC_TYPES = frozenset({"numeric", "number", "count", "counting", "integer", "float"})
CHOICE_TYPES = frozenset({"multiple_choice", "multiple-choice", "mc", "choice", "option"})
EXACT_TYPES = frozenset({"exact", "text", "open", "yes/no", "yesno", "short"})

_UNITS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
          "seventeen eighteen nineteen twenty")
_TENS = {"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80", "ninety": "90"}
# "none" is a count of zero; "no" is left alone (a yes/no answer).
_NUMBER_WORDS = {w: str(i) for i, w in enumerate(_UNITS.split())} | _TENS | {"hundred": "100", "none": "0"}
_TAG = re.compile(r"<[^<>]{0,64}>")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
# A decimal point or thousands comma between digits and a minus sign before one are part of the number; any other
# punctuation goes ("-" and "'" inside words join them: "red-ish" → "redish", other marks become a space).
_PUNCT = re.compile(
    r"(?<!\d)[.,]|[.,](?!\d)|-(?!\d)|(?<=\w)-|["
    + re.escape(string.punctuation.replace(".", "").replace(",", "").replace("-", ""))
    + "]"
)
_NUMBER = re.compile(r"(?<![\d.])[-+]?\d+(?:,\d{3})*(?:\.\d+)?(?:e[-+]?\d+)?(?![\d])")
_LETTER = re.compile(r"(?<![A-Za-z0-9])\(?([A-Z])\)?(?![A-Za-z0-9])")
# "B", "(B)", "B.", "B)", "B:", "(B) cat", "b. cat": a leading option letter, maybe followed by the option text.
_LEADING_LETTER = re.compile(r"^\(?([A-Za-z])(\)\.?|\)?:|\.|\))?(?:\s+(.*))?$", re.DOTALL)


def normalize_answer(text: str) -> str:
    """Lowercase, drop tags, number words → digits, strip punctuation and articles, collapse whitespace.

    >>> normalize_answer("  The <b>Two</b> red-ish CARS!\\n")
    '2 redish cars'
    """
    text = _TAG.sub(" ", text).lower()
    text = _PUNCT.sub(lambda m: "" if m.group(0) in "-'" else " ", text)
    text = " ".join(_NUMBER_WORDS.get(w, w) for w in text.split())
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def parse_numbers(text: str) -> list[float]:
    """The finite numbers in ``text`` (number words count, thousands commas allowed): ``"two, 1,000"`` → [2, 1000]."""
    values = []
    for m in _NUMBER.finditer(normalize_answer(text)):
        try:
            v = float(m.group(0).replace(",", ""))
        except ValueError:  # pragma: no cover - the regex only admits float syntax
            continue
        if math.isfinite(v):
            values.append(v)
    return values


def _gold_number(gold: str) -> float | None:
    """The number a gold answer *is* (not merely contains): ``"2"``, ``"two"``, ``"3.5"``; else None."""
    norm = normalize_answer(gold)
    nums = parse_numbers(gold)
    if len(nums) == 1 and _NUMBER.fullmatch(norm):
        return nums[0]
    return None


def _numeric(pred: str, gold: str, rel_tol: float) -> float | None:
    g = _gold_number(gold)
    if g is None:
        nums = parse_numbers(gold)
        if len(set(nums)) != 1:
            return None
        g = nums[0]
    distinct = set(parse_numbers(pred))
    if len(distinct) != 1:  # none, or a hedge between several values
        return 0.0
    p = distinct.pop()
    return 1.0 if abs(p - g) <= rel_tol * max(abs(g), 1.0) else 0.0


def _option_list(options: Sequence[str] | Mapping[str, str]) -> list[tuple[str, str]]:
    """``(letter, text)`` pairs: a mapping keeps its letters, a sequence is lettered A, B, C..."""
    if isinstance(options, Mapping):
        return [(str(k).strip().strip("().:").upper(), str(v)) for k, v in options.items()]
    return [(string.ascii_uppercase[i], str(v)) for i, v in enumerate(list(options)[:26])]


def _leading_letter(text: str) -> tuple[str, str] | None:
    """``(LETTER, rest)`` when the text opens with an option letter: uppercase, or lowercase marked by ``(b)``,
    ``b.``, ``b)`` or standing alone (a bare ``a`` before a word is the article, not option A)."""
    m = _LEADING_LETTER.match(text)
    if not m:
        return None
    letter, mark, rest = m.group(1), m.group(2), m.group(3) or ""
    if letter.islower() and not mark and not text.startswith("(") and rest:
        return None
    return letter.upper(), rest


def _choice_candidates(text: str, opts: list[tuple[str, str]] | None) -> set[str]:
    """The option letters a text names: its exact option text, or a leading letter (with nothing after it but that
    option's text), else every standalone capital letter and every option text inside it (so hedges name several).

    ``opts`` None: letters only, any A–Z."""
    clean = " ".join(_TAG.sub(" ", text).split())
    norm = normalize_answer(clean)
    texts = {letter: normalize_answer(t) for letter, t in opts or []}
    by_text = {letter for letter, t in texts.items() if t and t == norm}
    if by_text:
        return by_text
    letters = set(texts) if opts is not None else set(string.ascii_uppercase)
    lead = _leading_letter(clean)
    if lead and lead[0] in letters and (not lead[1] or normalize_answer(lead[1]) == texts.get(lead[0])):
        return {lead[0]}
    found = {m.group(1) for m in _LETTER.finditer(clean) if m.group(1) in letters}
    found |= {letter for letter, t in texts.items() if t and f" {t} " in f" {norm} "}
    return found


def _choice(pred: str, gold: str, options: Sequence[str] | Mapping[str, str] | None) -> float | None:
    opts = _option_list(options) if options is not None else None
    gold_set = _choice_candidates(gold, opts)
    if len(gold_set) != 1:
        # no options given and the gold is an option's text ("the blue circle"), not a letter: compare the texts
        return _exact(pred, gold) if opts is None else None
    return 1.0 if _choice_candidates(pred, opts) == gold_set else 0.0


def _exact(pred: str, gold: str) -> float | None:
    g = normalize_answer(gold)
    if not g:
        return None
    return 1.0 if normalize_answer(pred) == g else 0.0


def box_iou(pred: str | Box | None, gold: str | Box) -> float | None:
    """IoU of a predicted box with the gold box (both canonical pixels; strings as ``"[x1, y1, x2, y2]"``).

    0.0 when the prediction is not a box; None when the gold is not one.

    >>> box_iou(Box(0, 0, 10, 10), "[0, 0, 10, 20]"), box_iou("red", "[0, 0, 10, 20]"), box_iou(Box(0, 0, 1, 1), "x")
    (0.5, 0.0, None)
    """
    g = gold if isinstance(gold, Box) else parse_box(gold)
    if g is None:
        return None
    p = pred if isinstance(pred, Box) else parse_box(pred)
    if p is None:
        return 0.0
    return float(boxes.iou(np.array(p.as_tuple()), np.array(g.as_tuple())))


def _auto_type(gold: str, options: object) -> str:
    """Options → choice; a bare letter (``"B"``, ``"(b)"``) → choice by letter; a bare number → numeric; else exact."""
    if options is not None:
        return "choice"
    lead = _leading_letter(" ".join(_TAG.sub(" ", gold).split()))
    if lead and not lead[1]:
        return "choice"
    return "numeric" if _gold_number(gold) is not None else "exact"


def score_answer(
    pred: str | Box | None,
    gold: str,
    *,
    answer_type: str | None = None,
    options: Sequence[str] | Mapping[str, str] | None = None,
    rel_tol: float = 1e-6,
    iou_threshold: float = 0.5,
) -> float | None:
    """1.0 if ``pred`` answers ``gold``, 0.0 if not, None if ``gold`` cannot be parsed for the type.

    ``answer_type``: ``"box"`` (IoU ≥ ``iou_threshold``, see the module docstring), one of ``NUMERIC_TYPES`` /
    ``CHOICE_TYPES`` / ``EXACT_TYPES``; anything else (e.g. a record's semantic ``"color"``) or None picks
    automatically: options → choice, a bare-number gold → numeric, else exact.

    >>> score_answer("3 apples", "three", answer_type="count"), score_answer("2 or 3", "2"), score_answer("x", "")
    (1.0, 0.0, None)
    >>> score_answer(Box(0, 0, 10, 10), "[0, 0, 10, 20]", answer_type="box")
    1.0
    """
    if gold is None or not str(gold).strip():
        return None
    if answer_type == BOX:
        iou = box_iou(pred, gold)
        return None if iou is None else float(iou >= iou_threshold)
    if isinstance(pred, Box):  # a box is no answer to a question of another type
        return 0.0
    kind = (answer_type or "").strip().lower()
    if kind not in NUMERIC_TYPES | CHOICE_TYPES | EXACT_TYPES:
        kind = _auto_type(gold, options)
    if kind in CHOICE_TYPES:
        result = _choice(pred or "", gold, options)
    elif kind in NUMERIC_TYPES:
        result = _numeric(pred or "", gold, rel_tol)
    else:
        result = _exact(pred or "", gold)
    return result
