"""RefCOCO / RefCOCO+ / RefCOCOg: each referring expression becomes 'Where is "<expression>"?', grounded by its box.

``refs`` is one JSONL file or a folder of ``*.jsonl`` files. Two derived layouts are read, told apart per line by
their fields (the original ``refs(unc).p`` + ``instances.json`` pair is not supported: no copy was reachable):

- **Shikra/REC** (``img_path, expression, bbox, width, height, image_id, sent_id, split, dataset_name`` =
  ``jxu124/refcoco[plus|g]``): ``bbox`` is absolute xyxy pixels, the canonical layout, taken as is once checked
  (4 numbers, ``x1 < x2``, ``y1 < y2``);
- **Ground-R1** (``image, width, height, bboxs: [[x, y, w, h]], dataset`` = "RefCOCOplus/testB", ``solution``: all
  expressions of the ref, ``problem_id``): converted with ``boxconv.to_box("coco_xywh", ...)``.

One record per expression (a Ground-R1 line lists all expressions of one ref and gives one record each):

- ``question = 'Where is "<expression>"?'``: the expression is quoted verbatim (whitespace collapsed) rather than
  spliced into the sentence, because RefCOCO expressions are fragments of every shape ("closest", "The banana at
  the left of the stack.", "on the under one ...") and no template reads well for all of them;
- ``answer`` (``answer="box"``, the default): the referent's box, the grounding being the point of these records:
  ``answer_type="box"`` and the answer string is the box in the canonical convention (``boxanswer.format_box``:
  ``"[10, 20, 110, 70]"``), scored by IoU (``virl_data.core.answers.score_answer``). The expression stays in the
  question only, so the answer cannot be read off the question. With ``answer="phrase"`` the answer is the
  expression's target phrase instead (``parse_expression``, ``answer_type="object"``): the words before the first
  relation word ("next to", "on", "of", "holding" ...), without determiners and position words, lower-cased:
  "white bowl next to rice" → "white bowl", "left black shirt" → "black shirt", "man on right" → "man"; when nothing
  is left ("closest") the whole expression (lower-cased). Beware: that phrase is a part of the question;
- ``chain``: one step, the referent's box, ``phrase`` = the expression, ``role="target"``,
  ``source_ref`` = the sentence id (REC) or problem id (Ground-R1). A relational expression ("cup next to the
  laptop") would make a [context, target] chain if the file gave the context object's box; neither layout does, so
  such records stay one step and are marked ``question_type="referring_relation"`` (else
  ``"referring_expression"``) for curation;
- ``provenance.native_ids``: ``variant`` (refcoco | refcoco+ | refcocog: from ``dataset_name`` / ``dataset``, else
  from the file name, else the ``variant`` argument), ``split`` (train | val | test | testA | testB; "validation" →
  "val"; from the line, else the file name), then ``image_id, sent_id`` (REC) or ``problem_id, expression``
  (Ground-R1, the expression's index in ``solution``).

REJECTED records (``CheckResult(name="mining")``): ``malformed_record`` (a line of neither layout),
``empty_expression``, ``bad_box`` (missing, non-numeric or empty box), ``variant_mismatch`` (the line's variant is
not the ``variant`` asked for), ``image_size_unknown`` (no width/height in the line and none readable from the image
under ``images``). A line that is not JSON raises ``CorpusReadError`` naming the file and line.

Example:
    >>> import orjson, tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> line = {"img_path": "COCO_train2014_000000000009.jpg", "expression": "white bowl next to rice",
    ...         "bbox": [10, 20, 110, 70], "dataset_name": "jxu124/refcoco", "height": 480, "width": 640,
    ...         "image_id": 9, "sent_id": 3, "split": "validation"}
    >>> _ = (d / "REC_refcoco_unc_val.jsonl").write_bytes(orjson.dumps(line))
    >>> rec = next(mine(refs=d / "REC_refcoco_unc_val.jsonl"))
    >>> rec.question, rec.answer, rec.answer_type, rec.question_type
    ('Where is "white bowl next to rice"?', '[10, 20, 110, 70]', 'box', 'referring_relation')
    >>> next(mine(refs=d / "REC_refcoco_unc_val.jsonl", answer="phrase")).answer
    'white bowl'
    >>> rec.chain[0].boxes
    (Box(x1=10.0, y1=20.0, x2=110.0, y2=70.0),)
    >>> rec.provenance.native_ids[:2], rec.status.value
    ((('variant', 'refcoco'), ('split', 'val')), 'mined')
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from virl_data.core import boxconv
from virl_data.core.boxanswer import BOX, format_box
from virl_data.core.errors import ConfigError, CorpusReadError
from virl_data.core.types import (
    Box,
    ImageRef,
    Provenance,
    RationaleRecord,
    RationaleStep,
    record_id,
)
from virl_data.miners._common import check_limit, image_side, mining_outcome, size_from_files, size_out_of_range
from virl_data.miners._kinds import expect_stream

SOURCE = "refcoco"
MINER = "refcoco@2"
VARIANTS = ("refcoco", "refcoco+", "refcocog")
ANSWERS = ("box", "phrase")
"""What a record answers: its target box (``answer_type="box"``) or the expression's target phrase."""
IMAGE_SUBDIRS = ("", "train2014")
"""Where an image is looked for under ``images`` (the REC files name COCO train2014 files)."""

_SPLITS = {"train": "train", "val": "val", "validation": "val", "test": "test", "testa": "testA", "testb": "testB"}

RELATIONS: tuple[tuple[str, ...], ...] = tuple(
    tuple(r.split()) for r in sorted((
        "to the left of", "to the right of", "on the left of", "on the right of", "in front of", "in back of",
        "on top of", "next to", "close to", "left of", "right of", "behind", "beside", "besides", "near", "under",
        "underneath", "below", "beneath", "above", "over", "on", "in", "inside", "at", "by", "with", "holding",
        "wearing", "carrying", "riding", "between", "against", "of", "from", "touching", "facing",
    ), key=lambda r: -len(r.split()))
)
"""Words that relate the target to something else, longest first so "to the left of" wins over "of"."""

DETERMINERS = frozenset({"the", "a", "an", "this", "that", "these", "those", "his", "her", "their", "its", "my",
                         "your", "our", "some"})
POSITION_WORDS = frozenset({
    "left", "right", "top", "bottom", "middle", "center", "centre", "front", "back", "side", "sides", "corner",
    "far", "farthest", "furthest", "farther", "further", "nearest", "closest", "closer", "upper", "lower", "end",
    "edge", "first", "second", "third", "fourth", "last", "1st", "2nd", "3rd", "half", "part", "most", "very", "us",
    "camera", "screen", "picture", "image", "photo", "pic", "frame", "view", "row", "background", "foreground",
    "leftmost", "rightmost", "one", "ones", "only", "partially", "see", "can", "visible",
})
"""Words that say where (or which of several), not what: dropped from the target phrase; a relation whose other
side holds only these (and determiners) locates the target in the image, not against another object."""

_WORD = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*", re.IGNORECASE)


# --- expressions -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Referent:
    """An expression split at its first relation word: ``target`` phrase, ``relation``, ``context`` phrase.

    ``relational`` is True when the context names an object (not only a position such as "the top right corner").
    """

    target: str
    relation: str | None = None
    context: str | None = None
    relational: bool = False


def _first_relation(words: list[str]) -> tuple[int, int] | None:
    """``(start, length)`` of the earliest relation in ``words`` (the longest one at that start)."""
    for i in range(len(words)):
        for rel in RELATIONS:
            if tuple(words[i:i + len(rel)]) == rel:
                return i, len(rel)
    return None


def parse_expression(expression: str) -> Referent:
    """Split a referring expression at its first relation word.

    >>> parse_expression("white bowl next to rice")
    Referent(target='white bowl', relation='next to', context='rice', relational=True)
    >>> parse_expression("dish in top right corner")
    Referent(target='dish', relation='in', context='top right corner', relational=False)
    >>> parse_expression("closest").target
    'closest'
    """
    words = [w.lower() for w in _WORD.findall(expression)]
    found = _first_relation(words)
    head = words if found is None else words[:found[0]]
    target = " ".join(w for w in head if w not in DETERMINERS and w not in POSITION_WORDS)
    target = target or " ".join(expression.lower().split()).strip(" .,;:!?")
    if found is None:
        return Referent(target)
    start, n = found
    after = words[start + n:]
    named = [w for w in after if w not in DETERMINERS and w not in POSITION_WORDS]
    return Referent(target, " ".join(words[start:start + n]), " ".join(after) or None, bool(named))


def variant_of(text: str) -> str | None:
    """The RefCOCO variant a dataset or file name names (``None`` when it names none).

    >>> variant_of("jxu124/refcocoplus"), variant_of("REC_refcocog_umd_val"), variant_of("RefCOCO/testB")
    ('refcoco+', 'refcocog', 'refcoco')
    """
    t = text.lower()
    if re.search(r"refcoco(\+|plus)", t):
        return "refcoco+"
    if "refcocog" in t:
        return "refcocog"
    return "refcoco" if "refcoco" in t else None


def split_of(text: str) -> str | None:
    """The split a split field, dataset or file name names, normalised (``validation`` → ``val``).

    >>> split_of("validation"), split_of("RefCOCOplus/testB"), split_of("REC_refcoco_unc_testA.head40")
    ('val', 'testB', 'testA')
    """
    for token in reversed(re.split(r"[^A-Za-z0-9]+", text)):
        if token.lower() in _SPLITS:
            return _SPLITS[token.lower()]
    return None


# --- reading ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Expression:
    """One referring expression as read from a line, in either layout; ``error`` names what is wrong with it."""

    variant: str | None
    split: str | None
    native: tuple[tuple[str, str], ...]
    expression: str
    image_path: str
    width: Any
    height: Any
    box: Box | None
    source_ref: str | None
    error: str | None = None


def _files(refs: Path) -> list[Path]:
    refs = Path(refs)
    if refs.is_dir():
        files = sorted(refs.glob("*.jsonl"))
        if not files:
            raise CorpusReadError(f"no .jsonl files in the RefCOCO folder {refs}")
        return files
    if not refs.is_file():
        raise CorpusReadError(f"RefCOCO file {refs} does not exist")
    return [refs]


def read_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """``(line number from 1, parsed value)`` for each non-blank line; ``CorpusReadError`` names file and line."""
    try:
        with open(path, "rb") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield n, orjson.loads(line)
                    except orjson.JSONDecodeError as e:
                        raise CorpusReadError(f"{path}: line {n} is not valid JSON: {e}") from None
    except OSError as e:
        raise CorpusReadError(f"cannot read {path}: {e}") from None


def _numbers(values: Any, n: int = 4) -> list[float] | None:
    """``values`` as ``n`` finite floats, else None (bools and strings are not numbers here)."""
    if not isinstance(values, (list, tuple)) or len(values) != n:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        return None
    return [float(v) for v in values]


def _checked(box: Box, what: str) -> str | None:
    return None if box.x1 < box.x2 and box.y1 < box.y2 else f"bad_box: {what} {list(box.as_tuple())} is empty"


def _rec_line(obj: dict[str, Any], file_variant: str | None, file_split: str | None) -> Expression:
    """A Shikra/VisCoT REC line (``bbox`` absolute xyxy)."""
    variant = variant_of(str(obj.get("dataset_name") or "")) or file_variant
    split = split_of(str(obj.get("split") or "")) or file_split
    sent = str(obj["sent_id"]) if obj.get("sent_id") is not None else None
    native = (("image_id", str(obj.get("image_id", ""))), ("sent_id", sent or ""))
    values, error, box = _numbers(obj.get("bbox")), None, None
    if values is None:
        error = f"bad_box: bbox {obj.get('bbox')!r} is not 4 numbers"
    else:
        box = Box(*values)  # absolute xyxy already: the canonical convention
        error = _checked(box, "bbox")
    return Expression(variant, split, native, str(obj.get("expression") or ""), str(obj.get("img_path") or ""),
                      obj.get("width"), obj.get("height"), box, sent, error)


def _ground_r1_line(obj: dict[str, Any], file_variant: str | None, file_split: str | None) -> list[Expression]:
    """A Ground-R1 line: one ref, ``bboxs`` xywh, all its expressions in ``solution``."""
    dataset = str(obj.get("dataset") or "")
    variant, split = variant_of(dataset) or file_variant, split_of(dataset) or file_split
    pid = str(obj.get("problem_id", ""))
    raw = obj.get("bboxs")
    boxes_in = raw if isinstance(raw, list) else []
    values = [_numbers(b) for b in boxes_in]
    error, box = None, None
    if len(values) != 1 or values[0] is None:
        error = f"bad_box: bboxs {raw!r} is not one [x, y, w, h] box"
    else:
        box = boxconv.to_box("coco_xywh", values[0])
        error = _checked(box, "bboxs[0] as xywh")
    solution = obj.get("solution")
    listed = solution if isinstance(solution, list) else []  # anything else holds no expression: rejected below
    expressions = [solution] if isinstance(solution, str) else [s for s in listed if isinstance(s, str)]
    return [Expression(variant, split, (("problem_id", pid), ("expression", str(i))), e, str(obj.get("image") or ""),
                       obj.get("width"), obj.get("height"), box, pid, error)
            for i, e in enumerate(expressions or [""])]


def read_expressions(path: Path) -> Iterator[Expression]:
    """Every expression of one JSONL file, in file order (a line of neither layout gives a malformed one)."""
    file_variant, file_split = variant_of(path.name), split_of(path.name)
    lines = expect_stream(read_jsonl(path), path, role="RefCOCO refs", entry=lambda line: line[1],
                          expected=["RefCOCO (REC layout)", "RefCOCO (Ground-R1 layout)"])
    for n, obj in lines:
        if isinstance(obj, dict) and "expression" in obj and "bbox" in obj:
            yield _rec_line(obj, file_variant, file_split)
        elif isinstance(obj, dict) and "solution" in obj and "bboxs" in obj:
            yield from _ground_r1_line(obj, file_variant, file_split)
        else:
            yield Expression(file_variant, file_split, (("line", f"{path.name}:{n}"),), "", "", None, None, None,
                             None, f"malformed_record: {path.name} line {n} has neither expression + bbox (REC) "
                                   "nor solution + bboxs (Ground-R1)")


# --- records ---------------------------------------------------------------------------------------------------------
SizedImage = tuple[ImageRef, str | None]


_positive_int = image_side  # the one rule of _common (whole, positive, at most MAX_IMAGE_SIDE)


def image_ref(path: str, width: Any, height: Any, images: Path | None, cache: dict[str, SizedImage]) -> SizedImage:
    """The image with its size from the line, else from the file header under ``images``, else a reason why not."""
    w, h = _positive_int(width), _positive_int(height)
    if w and h:
        return ImageRef(path=path, width=w, height=h), None
    if bad := size_out_of_range(width, height):
        return ImageRef(path, 0, 0), bad
    if path in cache:
        return cache[path]
    found: SizedImage = (ImageRef(path, 0, 0), f"image_size_unknown: {path or '(no image path)'} "
                                                "(no width/height in the file, no images directory given)")
    if images is not None and path:
        found = (ImageRef(path, 0, 0), f"image_size_unknown: no width/height in the file and no {path} under {images}")
        found = size_from_files(images, (f"{sub}/{path}" if sub else path for sub in IMAGE_SUBDIRS)) or found
    cache[path] = found
    return found


def _record(e: Expression, variant: str | None, images: Path | None, cache: dict[str, SizedImage],
            answer: str = BOX) -> RationaleRecord:
    reasons = [e.error] if e.error else []
    if variant is not None and e.variant is not None and e.variant != variant:
        reasons.append(f"variant_mismatch: the file says {e.variant}, {variant} was asked for")
    the_variant = e.variant or variant or "unknown"
    expression = " ".join(e.expression.split())
    if not expression and not e.error:
        reasons.append("empty_expression: the line gives no referring expression")
    image, size_reason = image_ref(e.image_path, e.width, e.height, images, cache)
    if size_reason and not (e.error and not e.image_path):  # a malformed line has no image to size
        reasons.append(size_reason)
    ref = parse_expression(expression) if expression else Referent("")
    chain = () if e.box is None else (RationaleStep(boxes=(e.box,), phrase=expression, role="target",
                                                    source_ref=e.source_ref),)
    native = (("variant", the_variant), ("split", e.split or ""), *e.native)
    return RationaleRecord(
        id=record_id(SOURCE, *(v for _, v in native)),
        image=image,
        question=f'Where is "{expression}"?' if expression else "",
        answer=(format_box(e.box) if e.box is not None else "") if answer == BOX else ref.target,
        chain=chain,
        provenance=Provenance(source=SOURCE, source_split=e.split, native_ids=native, miner=MINER),
        answer_type=BOX if answer == BOX else "object",
        question_type="referring_relation" if ref.relational else "referring_expression",
        **mining_outcome(reasons),
    )


def mine(
    *,
    refs: Path,
    images: Path | None = None,
    variant: str | None = None,
    answer: str = BOX,
    limit: int | None = None,
) -> Iterator[RationaleRecord]:
    """Stream one record per referring expression of ``refs`` (a JSONL file or a folder of them).

    ``images``: the COCO image root (files directly or under ``train2014/``), read only for sizes a line lacks.
    ``variant``: the variant to assume where neither the line nor the file name tells; a line that names another
    variant is REJECTED (``variant_mismatch``). ``answer``: ``"box"`` (the target box, ``answer_type="box"``) or
    ``"phrase"`` (the expression's target phrase). ``limit`` caps the records yielded.
    """
    check_limit(limit)
    if answer not in ANSWERS:
        raise ConfigError(f"unknown RefCOCO answer {answer!r}; use one of {', '.join(ANSWERS)}")
    if variant is not None and variant not in VARIANTS:
        raise ConfigError(f"unknown RefCOCO variant {variant!r}; known: {', '.join(VARIANTS)}")
    cache: dict[str, SizedImage] = {}
    n = 0
    for path in _files(refs):
        for e in read_expressions(path):
            if limit is not None and n >= limit:
                return
            n += 1
            yield _record(e, variant, images, cache, answer)


__all__ = ["ANSWERS", "MINER", "SOURCE", "VARIANTS", "Expression", "Referent", "image_ref", "mine", "parse_expression",
           "read_expressions", "read_jsonl", "split_of", "variant_of"]
