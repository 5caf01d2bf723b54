"""TreeBench and V* Bench: multiple-choice questions about small objects in large images, chained by their boxes.

No real file of either benchmark was reachable (both live on the HF hub only), so the layouts below follow the
benchmarks' READMEs and evaluation scripts as quoted in public code; they are assumptions, tested on files written
in the tests:

**V* Bench** (``craigwu/vstar_bench``): one folder per category (``direct_attributes``, ``relative_position``), each
image ``<name>.jpg`` beside its ``<name>.json``::

    {"target_object": ["glove"], "bbox": [[1150, 1473, 60, 81]], "question": "What is the color of the glove?",
     "options": ["white", "black", "red", "blue"]}

``bbox`` is COCO ``[x, y, w, h]`` pixels, one per target object (converted with ``boxconv`` ``coco_xywh``). The
first option is the correct one (V*'s evaluation scores option 0 as right), so the options are shuffled
deterministically (seeded by ``<category>/<image name>``) and the answer is the letter of the correct one. The chain
has one step per target object, in the listed order: ``phrase`` = the object name, ``role="target"``,
``source_ref`` = its index. ``provenance.source = "vstar"``; ``question_type`` = the category (the json's folder).

**TreeBench** (``HaochenWang/TreeBench``, as VLMEvalKit's table rows): a ``.json`` list or a ``.jsonl`` file of::

    {"index": 0, "image": "sa_1234.jpg", "question": "...", "options": {"A": "...", "B": "..."},
     "answer": "B", "bbox": [[x1, y1, x2, y2], ...], "category": "Perception/Attributes"}

``options`` may also be a list (lettered A, B, ... in order) or top-level ``A`` ... ``F`` fields; ``answer`` is a
letter or the text of an option; the boxes (``bbox`` or ``bboxes``; absolute xyxy pixels, possibly as a JSON string,
as in a TSV cell) become one step each, in order, ``phrase=""`` (TreeBench names no objects), ``role="target"``.
``width`` / ``height`` are used when present. Options keep their given order. ``provenance.source = "treebench"``.

For both, ``question = "<question>\\n(A) <option>\\n(B) <option>..."``, ``answer`` = a letter,
``answer_type="choice"``, ``source_split="test"``. Image sizes come from the record, else from the image file: under
``images`` when given, else (V*) beside the json. REJECTED records (``CheckResult(name="mining")``):
``malformed_record`` (missing question/options, boxes and names of different counts, a json of neither layout),
``answer_not_in_options``, ``bad_box``, ``image_not_a_path`` (an embedded base64 image: export image files first),
``image_size_unknown``. Unreadable files and invalid JSON raise ``CorpusReadError``.

Example:
    >>> import orjson, tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> row = {"index": 3, "image": "sa_1.jpg", "width": 1500, "height": 1000, "question": "What is on the cup?",
    ...        "options": ["a logo", "a bird"], "answer": "a bird", "bbox": [[10, 20, 60, 90]]}
    >>> _ = (d / "treebench.jsonl").write_bytes(orjson.dumps(row))
    >>> rec = next(mine(annotations=d / "treebench.jsonl"))
    >>> rec.question, rec.answer, rec.chain[0].boxes, rec.status.value
    ('What is on the cup?\\n(A) a logo\\n(B) a bird', 'B', (Box(x1=10.0, y1=20.0, x2=60.0, y2=90.0),), 'mined')
"""

from __future__ import annotations

import hashlib
import math
import random
import string
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from virl_data.core import boxconv
from virl_data.core.errors import CorpusReadError
from virl_data.core.types import (
    Box,
    ImageRef,
    Provenance,
    RationaleRecord,
    RationaleStep,
    record_id,
)
from virl_data.miners._common import check_limit, image_side, mining_outcome, size_from_files, size_out_of_range
from virl_data.miners._kinds import expect

MINER = "treebench@1"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")
LETTERS = string.ascii_uppercase
MAX_PATH = 1024


@dataclass(frozen=True, slots=True)
class Question:
    """One benchmark question as read; ``error`` names what is wrong with it."""

    source: str
    native: tuple[tuple[str, str], ...]
    question: str = ""
    options: tuple[str, ...] = ()
    answer: str = ""
    chain: tuple[RationaleStep, ...] = ()
    category: str | None = None
    image_path: str = ""
    width: Any = None
    height: Any = None
    error: str | None = None


# --- small parsers ---------------------------------------------------------------------------------------------------
def _numbers(values: Any, n: int = 4) -> list[float] | None:
    """``values`` as ``n`` finite floats, else None (bools and strings are not numbers here)."""
    if not isinstance(values, (list, tuple)) or len(values) != n:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        return None
    return [float(v) for v in values]


def _box(values: Any, convention: str | None, what: str) -> Box | str:
    """One box (``convention`` None = absolute xyxy already, else a ``boxconv`` name) or a ``bad_box`` reason."""
    nums = _numbers(values)
    if nums is None:
        return f"bad_box: {what} {values!r} is not 4 numbers"
    box = boxconv.to_box(convention, nums) if convention else Box(*nums)
    if not (box.x1 < box.x2 and box.y1 < box.y2):
        return f"bad_box: {what} {values!r} is empty"
    return box


def format_choices(question: str, options: tuple[str, ...]) -> str:
    """``"<question>\\n(A) <option>\\n(B) <option>..."``.

    >>> format_choices("Colour?", ("red", "blue"))
    'Colour?\\n(A) red\\n(B) blue'
    """
    return "\n".join([question.strip(), *(f"({LETTERS[i]}) {o}" for i, o in enumerate(options))])


def shuffled(options: list[str], seed_text: str) -> tuple[tuple[str, ...], int]:
    """The options in an order fixed by ``seed_text`` and the new index of ``options[0]`` (V*'s correct one).

    >>> shuffled(["right", "a", "b", "c"], "x.jpg") == shuffled(["right", "a", "b", "c"], "x.jpg")
    True
    """
    order = list(range(len(options)))
    random.Random(int(hashlib.sha1(seed_text.encode()).hexdigest()[:16], 16)).shuffle(order)
    return tuple(options[i] for i in order), order.index(0)


def _text_list(value: Any) -> list[str] | None:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        return None
    return [" ".join(v.split()) for v in value]


# --- V* Bench --------------------------------------------------------------------------------------------------------
def parse_vstar(obj: dict[str, Any], rel_image: str, category: str | None) -> Question:
    """A V* per-image json (``rel_image``: its image's path under the image root; ``category``: its folder)."""
    native = (("category", category or ""), ("image", Path(rel_image).name))
    names, raw_boxes, options = _text_list(obj.get("target_object")), obj.get("bbox"), _text_list(obj.get("options"))
    question = " ".join(str(obj.get("question") or "").split())
    base = Question("vstar", native, category=category, image_path=rel_image)
    if not question or options is None or len(options) < 2:
        return replace(base, error="malformed_record: a V* json needs a question and at least two options")
    if names is None or not isinstance(raw_boxes, list) or len(names) != len(raw_boxes):
        return replace(base, error=f"malformed_record: {len(names or [])} target_object names but "
                                    f"{len(raw_boxes) if isinstance(raw_boxes, list) else 0} bbox entries")
    steps, error = [], None
    for i, (name, values) in enumerate(zip(names, raw_boxes)):
        box = _box(values, "coco_xywh", f"bbox {i} ({name})")
        if isinstance(box, str):
            error = error or box
        else:
            steps.append(RationaleStep(boxes=(box,), phrase=name, role="target", source_ref=str(i)))
    opts, right = shuffled(options, "/".join(v for _, v in native))
    return Question("vstar", native, question, opts, LETTERS[right], tuple(steps), category, rel_image, error=error)


# --- TreeBench -------------------------------------------------------------------------------------------------------
def _options(obj: dict[str, Any]) -> list[str] | None:
    """The options in letter order, from ``options`` (dict or list) or top-level letter fields."""
    raw = obj.get("options")
    if isinstance(raw, dict):
        raw = [raw.get(k) for k in LETTERS if raw.get(k) is not None]
    elif raw is None:
        raw = [obj[k] for k in LETTERS[:6] if isinstance(obj.get(k), str) and obj[k].strip()]
    return _text_list(raw)


def _answer_letter(answer: Any, options: list[str]) -> str | None:
    text = " ".join(str(answer or "").split())
    if len(text) == 1 and text.upper() in LETTERS[:len(options)]:
        return text.upper()
    lowered = [o.lower() for o in options]
    return LETTERS[lowered.index(text.lower())] if text.lower() in lowered else None


def parse_treebench(obj: dict[str, Any], index: int) -> Question:
    """A TreeBench row (``index``: its position in the file, used when the row has no ``index`` field)."""
    qid = next((str(obj[k]) for k in ("index", "id", "question_id") if obj.get(k) is not None), f"#{index}")
    image = obj.get("image", obj.get("image_path"))
    base = Question("treebench", (("index", qid),), category=obj.get("category"),
                    image_path=image if isinstance(image, str) else "", width=obj.get("width"),
                    height=obj.get("height"))
    question, options = " ".join(str(obj.get("question") or "").split()), _options(obj)
    if not question or options is None or len(options) < 2:
        return replace(base, error="malformed_record: a TreeBench row needs a question and at least two options")
    if not isinstance(image, str) or len(image) > MAX_PATH or not Path(image).suffix:
        return replace(base, error="image_not_a_path: the image field is not a file path (embedded image?)")
    letter = _answer_letter(obj.get("answer"), options)
    raw = obj.get("bboxes", obj.get("bbox"))
    if isinstance(raw, str):  # a TSV cell holds the list as text
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    steps, error = [], None
    if not isinstance(raw, list) or not raw:
        error = f"bad_box: bbox {raw!r} is not a list of [x1, y1, x2, y2] boxes"
    for i, values in enumerate(raw if isinstance(raw, list) else []):
        box = _box(values, None, f"bbox {i}")
        if isinstance(box, str):
            error = error or box
        else:
            steps.append(RationaleStep(boxes=(box,), phrase="", role="target", source_ref=str(i)))
    if letter is None:
        error = error or f"answer_not_in_options: {obj.get('answer')!r} is neither a letter nor an option"
    return replace(base, question=question, options=tuple(options), answer=letter or "", chain=tuple(steps),
                    error=error)


# --- reading ---------------------------------------------------------------------------------------------------------
def _load(path: Path) -> Any:
    try:
        if path.suffix == ".jsonl":
            rows = []
            for n, line in enumerate(path.read_bytes().splitlines(), 1):
                if line.strip():
                    try:
                        rows.append(orjson.loads(line))
                    except orjson.JSONDecodeError as e:
                        raise CorpusReadError(f"{path}: line {n} is not valid JSON: {e}") from None
            return rows
        return orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as e:
        raise CorpusReadError(f"{path} is not valid JSON: {e}") from None
    except OSError as e:
        raise CorpusReadError(f"cannot read {path}: {e}") from None


def _image_beside(json_path: Path, root: Path) -> str:
    """The V* image next to ``json_path`` (same stem), relative to ``root``; ``.jpg`` when none is found."""
    for suffix in IMAGE_SUFFIXES:
        if json_path.with_suffix(suffix).is_file():
            return json_path.with_suffix(suffix).relative_to(root).as_posix()
    return json_path.with_suffix(".jpg").relative_to(root).as_posix()


def read_questions(path: Path, root: Path) -> Iterator[Question]:
    """Every question of one file (``root``: the folder V* image paths are relative to)."""
    data = _load(path)
    expect(data, path, role="TreeBench / V* Bench annotations", expected=["TreeBench", "V* Bench"])
    if isinstance(data, dict) and "target_object" in data:
        yield parse_vstar(data, _image_beside(path, root), path.parent.name or None)
    elif isinstance(data, list):
        for i, row in enumerate(data):
            if isinstance(row, dict):
                yield parse_treebench(row, i)
            else:
                yield Question("treebench", (("file", path.name), ("index", f"#{i}")),
                               error=f"malformed_record: row {i} of {path.name} is not an object")
    else:
        yield Question("treebench", (("file", path.name),),
                       error=f"malformed_record: {path.name} is neither a V* json nor a list of TreeBench rows")


def _files(annotations: Path) -> tuple[list[Path], Path]:
    """The annotation files, and the folder V* image paths are relative to."""
    annotations = Path(annotations)
    if annotations.is_dir():
        files = sorted(p for p in annotations.rglob("*") if p.suffix in (".json", ".jsonl") and p.is_file())
        if not files:
            raise CorpusReadError(f"no .json/.jsonl files under {annotations}")
        return files, annotations
    if not annotations.is_file():
        raise CorpusReadError(f"benchmark annotations {annotations} do not exist")
    return [annotations], annotations.parent


# --- records ---------------------------------------------------------------------------------------------------------
_positive_int = image_side  # the one rule of _common (whole, positive, at most MAX_IMAGE_SIDE)


def _image(q: Question, root: Path | None) -> tuple[ImageRef, str | None]:
    w, h = _positive_int(q.width), _positive_int(q.height)
    if w and h:
        return ImageRef(q.image_path, w, h), None
    if bad := size_out_of_range(q.width, q.height):
        return ImageRef(q.image_path, 0, 0), bad
    if root is None or not q.image_path:
        return ImageRef(q.image_path, 0, 0), f"image_size_unknown: {q.image_path or '(no image)'} (no width/height " \
                                             "in the record, no images directory given)"
    return size_from_files(root, [q.image_path]) or (
        ImageRef(q.image_path, 0, 0),
        f"image_size_unknown: no {q.image_path} under {root}",
    )


def _record(q: Question, root: Path | None) -> RationaleRecord:
    image, size_reason = _image(q, root) if q.image_path else (ImageRef("", 0, 0), None)
    reasons = [r for r in (q.error, size_reason) if r]
    return RationaleRecord(
        id=record_id(q.source, *(v for _, v in q.native)),
        image=image,
        question=format_choices(q.question, q.options) if q.question else "",
        answer=q.answer,
        chain=q.chain,
        provenance=Provenance(source=q.source, source_split="test", native_ids=q.native, miner=MINER),
        answer_type="choice",
        question_type=q.category,
        **mining_outcome(reasons),
    )


def mine(*, annotations: Path, images: Path | None = None, limit: int | None = None) -> Iterator[RationaleRecord]:
    """Stream TreeBench / V* Bench records from ``annotations`` (a file, or a folder searched recursively).

    ``images``: the image root; without it, V* images are looked for beside their json and TreeBench rows need
    ``width`` / ``height``. ``limit`` caps the records yielded.
    """
    check_limit(limit)
    files, root = _files(annotations)
    n = 0
    for path in files:
        for q in read_questions(path, root):
            if limit is not None and n >= limit:
                return
            n += 1
            image_root = Path(images) if images is not None else (root if q.source == "vstar" else None)
            yield _record(q, image_root)


__all__ = ["MINER", "Question", "format_choices", "mine", "parse_treebench", "parse_vstar", "read_questions",
           "shuffled"]
