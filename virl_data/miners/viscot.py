"""Visual-CoT (VisCoT): question, answer and the one evidence region that helps answer it, as a one-step chain.

``annotations`` is one file or a folder (searched recursively for ``*.json`` / ``*.jsonl``, in sorted order). Four
layouts, told apart per record by their fields:

- ``benchmark`` (a ``.json`` list): ``dataset, split, question_id, image: [path, "path###[x1, y1, x2, y2]"],
  conversations: [human question, gpt box, human "<image>", gpt answer]``. The ``###`` box is absolute xyxy pixels
  (truncated to integers); the gpt box is xyxy in 0–1 of the image padded to a centred square (LLaVA
  ``expand2square``);
- ``benchmark_det`` (JSONL): ``img_path, expression`` (the question), ``bbox`` (absolute xyxy floats), ``width,
  height, question_id, split``; no answer;
- ``cot_train`` (JSONL): ``question, answer, image, width, height, bboxs: [[x1, y1, x2, y2], ...], dataset, split``;
- ``ground_r1`` (JSONL, Ground-R1's reformatted eval subset): ``image`` (an absolute path), ``width, height, bboxs``
  (absolute xyxy), ``dataset, split, problem, solution, problem_id``.

Each record has one step: every box of the record (the ``###`` boxes, or ``bbox`` / ``bboxs``), ``phrase =
EVIDENCE`` ("evidence region": VisCoT names no object), ``role="target"``. The question is the human turn without
``<image>`` and without VisCoT's appended "Please provide the bounding box coordinate of the region ..." request.
``benchmark_det`` lines carry no answer: they are mined with ``answer=""`` (grounding only; the ``answer_nonempty``
check rejects them unless it is switched off). ``question_type`` is the VisCoT subset (``gqa``, ``docvqa`` ...).

Image paths are made relative to the VisCoT image root (the folder holding ``cot/``): ``benchmark`` paths are kept
(``cot/gqa/2316539.jpg``), ``cot_train`` names get ``cot/<dataset>/`` in front, and Ground-R1's absolute paths
keep the part from ``<dataset>/`` on (``/home/.../cot_image_data/flickr30k/1.jpg`` → ``cot/flickr30k/1.jpg``).

Sizes come from ``width`` / ``height`` when the line has them, else from ``sizes`` (other VisCoT files that give
sizes, e.g. ``benchmark_det/`` for ``benchmark/``), else from the image under ``images``. A lent size is matched
by what identifies the question across the two files, not by the path, because the files spell the subsets'
folders differently (the ``visual7w`` benchmark json says ``"dataset": "v7w"`` and ``cot/v7w/v7w_1.jpg``, its det
jsonl ``visual7w.jsonl`` and ``cot/visual7w/v7w_1.jpg``): first the subset (``SUBSET_ALIASES`` folds ``v7w`` into
``visual7w``) and ``question_id`` when both name the same image file, then the subset and the image file name, then
the full path. Under ``images`` the path is tried as written, then with each other spelling of its subset folder
(the record then names the file found).
When the size of a ``benchmark`` record is known, its gpt box is converted by
``boxconv.padded_square_rel_to_canonical`` and must lie within ``GPT_ROUNDING x max(W, H) + TRUNCATION_PX`` pixels
of the ``###`` box on every side (3-decimal rounding plus the integer truncation of the ``###`` box); otherwise the
record is REJECTED with ``box_mismatch``. Other reasons (``CheckResult(name="mining")``): ``malformed_record``,
``bad_box``, ``image_size_unknown``. Unreadable files and invalid JSON raise ``CorpusReadError`` (naming the line
for JSONL).

Example:
    >>> import orjson, tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> line = {"question": "What is the date?", "answer": "13/10/2017", "image": "X5.jpg", "width": 592,
    ...         "height": 982, "bboxs": [[48, 429, 177, 451]], "dataset": "sroie", "split": "train"}
    >>> _ = (d / "sroie_cot_train.jsonl").write_bytes(orjson.dumps(line))
    >>> rec = next(mine(annotations=d / "sroie_cot_train.jsonl"))
    >>> rec.image.path, rec.answer, rec.chain[0].boxes, rec.status.value
    ('cot/sroie/X5.jpg', '13/10/2017', (Box(x1=48.0, y1=429.0, x2=177.0, y2=451.0),), 'mined')
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from virl_data.core import boxconv, boxes
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
from virl_data.miners._kinds import expect_stream

SOURCE = "viscot"
MINER = "viscot@2"
EVIDENCE = "evidence region"
GPT_ROUNDING = 0.0005
"""Half a unit of the gpt box's third decimal, as a fraction of the padded square's side."""
TRUNCATION_PX = 1.5
"""The ``###`` box is truncated to integers (< 1 px) and the paste offset may be rounded (≤ 0.5 px)."""
SUBSETS = ("cub", "docvqa", "dude", "emotic", "flickr30k", "gqa", "infographicsvqa", "openimages", "sroie",
           "textcap", "textvqa", "visual7w", "vsr")
SUBSET_ALIASES = {"v7w": "visual7w"}
"""Other spellings of a subset in the VisCoT files → the name of its benchmark file (``visual7w.json``)."""

_PROMPT = re.compile(r"\s*Please provide the bounding box coordinate of the region that can help you answer the "
                     r"question better\.?\s*$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Item:
    """One VisCoT question as read, in any layout; ``error`` names what is wrong with it."""

    layout: str
    dataset: str
    split: str | None
    native: tuple[tuple[str, str], ...]
    question: str
    answer: str
    image_path: str
    width: Any = None
    height: Any = None
    boxes: tuple[Box, ...] = ()
    gpt_box: tuple[float, ...] | None = None
    error: str | None = None


# --- small parsers ---------------------------------------------------------------------------------------------------
def _numbers(values: Any, n: int = 4) -> list[float] | None:
    """``values`` as ``n`` finite floats, else None (bools and strings are not numbers here)."""
    if not isinstance(values, (list, tuple)) or len(values) != n:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        return None
    return [float(v) for v in values]


def _xyxy_boxes(raw: Any, what: str) -> tuple[tuple[Box, ...], str | None]:
    """A list of absolute xyxy boxes (the canonical layout already) → ``Box``es, or a ``bad_box`` reason."""
    if not isinstance(raw, list) or not raw:
        return (), f"bad_box: {what} {raw!r} is not a list of [x1, y1, x2, y2] boxes"
    out = []
    for values in map(_numbers, raw):
        if values is None or not boxes.is_valid(np.array(values)):
            return (), f"bad_box: {what} {raw!r} holds a box that is not 4 numbers with x1 < x2, y1 < y2"
        out.append(Box(*values))
    return tuple(out), None


def _split(obj: dict[str, Any]) -> str | None:
    return str(obj["split"]) if obj.get("split") is not None else None


def _parse_list(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def image_path(raw: str, dataset: str) -> str:
    """The path relative to the VisCoT image root (the folder holding ``cot/``).

    >>> image_path("cot/gqa/1.jpg", "gqa"), image_path("X5.jpg", "sroie")
    ('cot/gqa/1.jpg', 'cot/sroie/X5.jpg')
    >>> image_path("/home/u/Visual-CoT/cot_image_data/flickr30k/1021439420.jpg", "flickr30k")
    'cot/flickr30k/1021439420.jpg'
    """
    p = raw.replace("\\", "/")
    if p.startswith("cot/") or not dataset:
        return p
    parts = p.split("/")
    hits = [i for i, part in enumerate(parts[:-1]) if part == dataset]
    if hits:
        return "/".join(["cot", *parts[hits[-1]:]])
    return f"cot/{dataset}/{p.lstrip('/')}"


def _subset(path: Path, img_path: str) -> str:
    """A ``benchmark_det`` line's subset: from the file name (``textcap.jsonl``), else from ``cot/<subset>/``."""
    stem = path.name.split(".")[0].removesuffix("_cot_train")
    if stem in SUBSETS:
        return stem
    parts = img_path.split("/")
    return parts[1] if len(parts) > 2 and parts[0] == "cot" else stem


# --- the four layouts ------------------------------------------------------------------------------------------------
def _benchmark(obj: dict[str, Any], index: int) -> Item:
    dataset, split = str(obj.get("dataset") or ""), _split(obj)
    qid = str(obj["question_id"]) if obj.get("question_id") is not None else f"#{index}"
    native = (("question_id", qid),)
    turns = [t for t in obj.get("conversations") or () if isinstance(t, dict)]
    human = [str(t.get("value") or "") for t in turns if t.get("from") == "human"]
    gpt = [str(t.get("value") or "") for t in turns if t.get("from") == "gpt"]
    images = [s for s in obj.get("image") or () if isinstance(s, str)]
    path = image_path(images[0].split("###")[0], dataset) if images else ""
    if not human or len(gpt) < 2:
        return Item("benchmark", dataset, split, native, "", "", path,
                    error="malformed_record: conversations lack the human question, gpt box and gpt answer")
    question = _PROMPT.sub("", human[0].replace("<image>", " ")).strip()
    raw = [_parse_list(s.split("###", 1)[1]) for s in images if "###" in s]
    found, error = _xyxy_boxes(raw, "### box") if raw else ((), "bad_box: no 'path###[x1, y1, x2, y2]' image entry")
    gpt_values = _numbers(_parse_list(gpt[0]))
    if gpt_values is None and error is None:
        error = f"bad_box: the gpt box {gpt[0]!r} is not 4 numbers"
    return Item("benchmark", dataset, split, native, question, gpt[-1].strip(), path, boxes=found,
                gpt_box=tuple(gpt_values) if gpt_values else None, error=error)


def _benchmark_det(obj: dict[str, Any], path: Path) -> Item:
    img = str(obj.get("img_path") or "")
    dataset = _subset(path, img)
    qid = str(obj.get("question_id", ""))
    found, error = _xyxy_boxes([obj.get("bbox")], "bbox")
    return Item("benchmark_det", dataset, _split(obj), (("question_id", qid),),
                str(obj.get("expression") or "").strip(), "", image_path(img, dataset), obj.get("width"),
                obj.get("height"), found, error=error)


def _with_bboxs(obj: dict[str, Any], layout: str, native: tuple[tuple[str, str], ...], q: str, a: str) -> Item:
    dataset = str(obj.get("dataset") or "")
    found, error = _xyxy_boxes(obj.get("bboxs"), "bboxs")
    return Item(layout, dataset, _split(obj), native, str(obj.get(q) or "").strip(),
                str(obj.get(a) or "").strip(), image_path(str(obj.get("image") or ""), dataset), obj.get("width"),
                obj.get("height"), found, error=error)


def parse_item(obj: Any, path: Path, index: int) -> Item:
    """One record of ``path`` (``index`` counts records from 0) → ``Item`` of its layout (or a malformed one)."""
    if isinstance(obj, dict) and isinstance(obj.get("image"), list) and "conversations" in obj:
        return _benchmark(obj, index)
    if isinstance(obj, dict) and {"img_path", "expression", "bbox"} <= obj.keys():
        return _benchmark_det(obj, path)
    if isinstance(obj, dict) and {"problem", "solution", "bboxs"} <= obj.keys():
        return _with_bboxs(obj, "ground_r1", (("problem_id", str(obj.get("problem_id", f"#{index}"))),),
                           "problem", "solution")
    if isinstance(obj, dict) and {"question", "answer", "bboxs"} <= obj.keys():
        return _with_bboxs(obj, "cot_train", (("index", str(index)),), "question", "answer")
    return Item("unknown", "", None, (("file", path.name), ("index", str(index))), "", "", "",
                error=f"malformed_record: record {index} of {path.name} matches no VisCoT layout")


# --- reading ---------------------------------------------------------------------------------------------------------
SIZED = ["VisCoT benchmark_det", "VisCoT cot_train", "VisCoT (Ground-R1 layout)"]
"""The layouts (as ``_kinds.identify`` names them) whose records give image sizes."""
LAYOUTS = ["VisCoT benchmark", *SIZED]


def _files(annotations: Path) -> list[Path]:
    annotations = Path(annotations)
    if annotations.is_dir():
        files = sorted(p for p in annotations.rglob("*") if p.suffix in (".json", ".jsonl") and p.is_file())
        if not files:
            raise CorpusReadError(f"no .json/.jsonl files under the VisCoT folder {annotations}")
        return files
    if not annotations.is_file():
        raise CorpusReadError(f"VisCoT annotations {annotations} do not exist")
    return [annotations]


def read_records(path: Path) -> Iterator[Any]:
    """The raw records of one file: a ``.json`` list, or a JSONL file (``CorpusReadError`` names file and line)."""
    try:
        if path.suffix == ".json":
            data = orjson.loads(path.read_bytes())
            if not isinstance(data, list):
                raise CorpusReadError(f"VisCoT file {path} must hold a list of records, got {type(data).__name__}")
            yield from data
            return
        with open(path, "rb") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield orjson.loads(line)
                    except orjson.JSONDecodeError as e:
                        raise CorpusReadError(f"{path}: line {n} is not valid JSON: {e}") from None
    except orjson.JSONDecodeError as e:
        raise CorpusReadError(f"{path} is not valid JSON: {e}") from None
    except OSError as e:
        raise CorpusReadError(f"cannot read {path}: {e}") from None


# --- records ---------------------------------------------------------------------------------------------------------
SizedImage = tuple[ImageRef, str | None]


_positive_int = image_side  # the one rule of _common (whole, positive, at most MAX_IMAGE_SIDE)


def subset(name: str) -> str:
    """A VisCoT subset under the name of its benchmark file: ``subset("v7w")`` → ``"visual7w"``.

    >>> subset("v7w"), subset("gqa")
    ('visual7w', 'gqa')
    """
    return SUBSET_ALIASES.get(name, name)


def _file_name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


@dataclass
class LentSizes:
    """Sizes other VisCoT files give, by question (subset, question_id → file name, size), by (subset, file name)
    and by path. A key two records give different sizes for is dropped (ambiguous: not lent)."""

    by_question: dict[tuple[str, str], tuple[str, tuple[int, int]]]
    by_name: dict[tuple[str, str], tuple[int, int] | None]
    by_path: dict[str, tuple[int, int] | None]

    def __len__(self) -> int:
        return len(self.by_path)

    def size_of(self, item: Item) -> tuple[int, int] | None:
        """The size lent to ``item``: by question id (when it names the same image file), file name, then path."""
        name, sub = _file_name(item.image_path), subset(item.dataset)
        qid = dict(item.native).get("question_id")
        hit = self.by_question.get((sub, qid)) if qid is not None else None
        if hit is not None and hit[0] == name:
            return hit[1]
        return self.by_name.get((sub, name)) or self.by_path.get(item.image_path)


def _put(table: dict, key: object, size: tuple[int, int]) -> None:
    if key in table and table[key] != size:
        table[key] = None  # two sizes for one key: lend neither
    else:
        table[key] = size


def lent_sizes(sizes: Path) -> LentSizes:
    """The sizes of every record of ``sizes`` (a file or folder) that gives both ``width`` and ``height``."""
    lent = LentSizes({}, {}, {})
    for path in _files(sizes):
        records = expect_stream(read_records(path), path, role="VisCoT sizes", expected=SIZED,
                                hint="sizes come from records with width/height; are the annotations and sizes "
                                     "swapped?")
        for index, obj in enumerate(records):
            item = parse_item(obj, path, index)
            w, h = _positive_int(item.width), _positive_int(item.height)
            if not (w and h and item.image_path):
                continue
            name, sub = _file_name(item.image_path), subset(item.dataset)
            qid = dict(item.native).get("question_id")
            if qid:
                lent.by_question[(sub, qid)] = (name, (w, h))
            _put(lent.by_name, (sub, name), (w, h))
            _put(lent.by_path, item.image_path, (w, h))
    return lent


def _candidates(path: str) -> list[str]:
    """``path`` and the same path under each other spelling of its subset folder (``cot/v7w/`` ↔ ``cot/visual7w/``)."""
    parts = path.split("/")
    if len(parts) < 3 or parts[0] != "cot":
        return [path]
    canonical = subset(parts[1])
    names = [canonical, *(alias for alias, name in SUBSET_ALIASES.items() if name == canonical)]
    return [path, *("/".join(["cot", n, *parts[2:]]) for n in names if n != parts[1])]


def _image(item: Item, images: Path | None, lent: LentSizes, cache: dict[str, SizedImage]) -> SizedImage:
    w, h = _positive_int(item.width), _positive_int(item.height)
    if w and h:
        return ImageRef(item.image_path, w, h), None
    if bad := size_out_of_range(item.width, item.height):
        return ImageRef(item.image_path, 0, 0), bad
    path = item.image_path
    size = lent.size_of(item)
    if size is not None:
        return ImageRef(path, *size), None
    if path not in cache:
        found: SizedImage = (ImageRef(path, 0, 0), f"image_size_unknown: {path} (no width/height in the file, "
                                                    "none lent by --sizes, no images directory given)")
        if images is not None:
            found = size_from_files(images, _candidates(path)) or (
                ImageRef(path, 0, 0),
                f"image_size_unknown: no width/height in the file, none lent by --sizes and no {path} under {images}",
            )
        cache[path] = found
    return cache[path]


def box_mismatch(item: Item, width: int, height: int) -> str | None:
    """``box_mismatch: ...`` when the gpt box, mapped back from the padded square, strays from the ``###`` box."""
    if item.gpt_box is None or not item.boxes:
        return None
    gpt = boxconv.padded_square_rel_to_canonical(list(item.gpt_box), width=width, height=height)
    target = boxes.union(boxes.as_array(item.boxes))
    tol = GPT_ROUNDING * max(width, height) + TRUNCATION_PX
    if boxes.contains(gpt, target, tol) and boxes.contains(target, gpt, tol):
        return None
    return (f"box_mismatch: ### box {np.round(target, 1).tolist()} but the gpt box {list(item.gpt_box)} maps to "
            f"{np.round(gpt, 1).tolist()} on the padded square (tolerance {tol:.1f} px)")


def _record(item: Item, images: Path | None, lent: LentSizes, cache: dict[str, SizedImage]) -> RationaleRecord:
    image, size_reason = _image(item, images, lent, cache)
    reasons = [r for r in (item.error, size_reason) if r]
    if not reasons:
        reasons += filter(None, [box_mismatch(item, image.width, image.height)])
    native = (("layout", item.layout), ("dataset", item.dataset), ("split", str(item.split or "")), *item.native)
    chain = (RationaleStep(boxes=item.boxes, phrase=EVIDENCE, role="target"),) if item.boxes else ()
    return RationaleRecord(
        id=record_id(SOURCE, *(v for _, v in native)),
        image=image,
        question=item.question,
        answer=item.answer,
        chain=chain,
        provenance=Provenance(source=SOURCE, source_split=item.split, native_ids=native, miner=MINER),
        question_type=subset(item.dataset) or None,
        **mining_outcome(reasons),
    )


def mine(
    *,
    annotations: Path,
    images: Path | None = None,
    sizes: Path | None = None,
    limit: int | None = None,
) -> Iterator[RationaleRecord]:
    """Stream one record per VisCoT question of ``annotations`` (a file, or a folder searched recursively).

    ``images``: the VisCoT image root (holding ``cot/``), read for sizes a record lacks (all ``benchmark`` records).
    ``sizes``: files whose records give ``width`` / ``height`` (e.g. ``benchmark_det/``), lending them by question
    (subset + ``question_id``), image file name or path (see the module docstring) before ``images`` is looked at. ``limit`` caps the records yielded.
    """
    check_limit(limit)
    lent = lent_sizes(sizes) if sizes is not None else LentSizes({}, {}, {})
    cache: dict[str, SizedImage] = {}
    n = 0
    for path in _files(annotations):
        records = expect_stream(read_records(path), path, role="VisCoT annotations", expected=LAYOUTS)
        for index, obj in enumerate(records):
            if limit is not None and n >= limit:
                return
            n += 1
            yield _record(parse_item(obj, path, index), images, lent, cache)


__all__ = ["EVIDENCE", "MINER", "SOURCE", "SUBSETS", "SUBSET_ALIASES", "Item", "LentSizes", "box_mismatch",
           "image_path", "lent_sizes", "mine", "parse_item", "read_records", "subset"]
