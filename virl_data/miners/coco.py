"""COCO instances: questions the boxes themselves answer (counting, left/right, small objects), with box chains.

Inputs: ``instances`` is a COCO ``instances_*.json`` (``images``, ``annotations`` with ``bbox`` ``[x, y, w, h]``
pixels, ``categories``; person_keypoints files are a superset), a bare JSON list of annotations (as in the
transformers fixture; categories then come from the standard COCO ids, ``COCO_CATEGORIES``), or LLaVA's
``caps_boxes_*.jsonl`` (one image a line, ``instances: [{category, bbox}]`` with bbox xyxy in 0–1 of the image).
``captions`` (a ``captions_*.json``) only lends its ``images`` block: file names and sizes for an instances file
without one. Boxes are converted by ``boxconv`` (``coco_xywh``, ``rel_xyxy``).

Per image (``question_type``):

=================  ==============================================  ==================================  ===========
template           example                                         chain                               answer_type
=================  ==============================================  ==================================  ===========
``count``          How many people are there?                      one step: every instance, by x1     number
``left_of``        Is the dog to the left of the bench?            A, B (both targets)                 yes/no
``small_exists``   Is there a remote in the image?                 one step: every instance (all       yes/no
                                                                   smaller than ``small_frac``)
``small_at``       What is the small object in the top-left of     the object                          object
                   the image?
=================  ==============================================  ==================================  ===========

``count`` is asked for every category present; it is REJECTED (``CheckResult(name="mining")``) with
``crowd_annotation`` when an instance is a crowd (``iscrowd=1``: the count is unknown), ``bad_box`` /
``unknown_category`` when an instance cannot be read, and ``image_size_unknown`` when the size is neither in the
file nor in an image file under ``images``. The other templates need the image size and clear cases, so they are
skipped (not rejected) otherwise: ``left_of`` takes categories with exactly one instance in the image, and only
when the centres lie at least ``margin`` x W apart and the boxes share at most half the narrower width; ``small_*``
takes instances under ``small_frac`` of the image area whose 3x3 cell (by centre) holds no other object smaller than
twice that, nor a crowd.

Example:
    >>> import orjson, tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> data = {"images": [{"id": 5, "file_name": "5.jpg", "width": 100, "height": 80}],
    ...         "annotations": [{"id": 1, "image_id": 5, "category_id": 17, "bbox": [60, 10, 20, 20], "iscrowd": 0},
    ...                         {"id": 2, "image_id": 5, "category_id": 17, "bbox": [5, 10, 20, 20], "iscrowd": 0}]}
    >>> _ = (d / "instances.json").write_bytes(orjson.dumps(data))
    >>> rec = next(mine(instances=d / "instances.json"))
    >>> rec.question, rec.answer, rec.status.value, rec.chain[0].source_ref
    ('How many cats are there?', '2', 'mined', '2,1')
    >>> rec.chain[0].boxes  # left to right
    (Box(x1=5.0, y1=10.0, x2=25.0, y2=30.0), Box(x1=60.0, y1=10.0, x2=80.0, y2=30.0))
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from virl_data.core import boxconv, boxes
from virl_data.core.errors import ConfigError, CorpusReadError, VirlError
from virl_data.core.types import (
    Box,
    ImageRef,
    Provenance,
    RationaleRecord,
    RationaleStep,
    record_id,
)
from virl_data.miners._common import check_limit, image_side, mining_outcome, size_from_files
from virl_data.miners._kinds import expect, identify

SOURCE = "coco"
MINER = "coco@1"
SMALL_FRAC = 0.01
MARGIN = 0.05

COCO_CATEGORIES: dict[int, str] = {
    1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus", 7: "train", 8: "truck", 9: "boat",
    10: "traffic light", 11: "fire hydrant", 13: "stop sign", 14: "parking meter", 15: "bench", 16: "bird", 17: "cat",
    18: "dog", 19: "horse", 20: "sheep", 21: "cow", 22: "elephant", 23: "bear", 24: "zebra", 25: "giraffe",
    27: "backpack", 28: "umbrella", 31: "handbag", 32: "tie", 33: "suitcase", 34: "frisbee", 35: "skis",
    36: "snowboard", 37: "sports ball", 38: "kite", 39: "baseball bat", 40: "baseball glove", 41: "skateboard",
    42: "surfboard", 43: "tennis racket", 44: "bottle", 46: "wine glass", 47: "cup", 48: "fork", 49: "knife",
    50: "spoon", 51: "bowl", 52: "banana", 53: "apple", 54: "sandwich", 55: "orange", 56: "broccoli", 57: "carrot",
    58: "hot dog", 59: "pizza", 60: "donut", 61: "cake", 62: "chair", 63: "couch", 64: "potted plant", 65: "bed",
    67: "dining table", 70: "toilet", 72: "tv", 73: "laptop", 74: "mouse", 75: "remote", 76: "keyboard",
    77: "cell phone", 78: "microwave", 79: "oven", 80: "toaster", 81: "sink", 82: "refrigerator", 84: "book",
    85: "clock", 86: "vase", 87: "scissors", 88: "teddy bear", 89: "hair drier", 90: "toothbrush",
}
"""The 80 standard COCO detection categories by id, for files without a ``categories`` block."""

CELLS = (("top-left", "top-centre", "top-right"), ("centre-left", "centre", "centre-right"),
         ("bottom-left", "bottom-centre", "bottom-right"))
"""3x3 image regions by (row, column) of an object's centre."""

_IRREGULAR = {"person": "people", "mouse": "mice", "sheep": "sheep", "skis": "skis", "scissors": "scissors",
              "broccoli": "broccoli", "knife": "knives"}
_SPLIT = re.compile(r"(train|val|test)_?(20\d\d)|(20\d\d)_(train|val|test)", re.IGNORECASE)


def plural(name: str) -> str:
    """English plural of a category name: "person" → "people", "couch" → "couches", "wine glass" → "wine glasses".

    >>> [plural(n) for n in ("cat", "bus", "bench", "teddy bear", "person", "toothbrush")]
    ['cats', 'buses', 'benches', 'teddy bears', 'people', 'toothbrushes']
    """
    head, _, last = name.rpartition(" ")
    if last in _IRREGULAR:
        word = _IRREGULAR[last]
    elif last.endswith(("s", "sh", "ch", "x", "z")):
        word = last + "es"
    elif last.endswith("y") and last[-2:-1] not in tuple("aeiou"):
        word = last[:-1] + "ies"
    else:
        word = last + "s"
    return f"{head} {word}" if head else word


def split_of(text: str) -> str | None:
    """The COCO split named in a file name or URL, as ``<split><year>``, else None.

    >>> split_of("instances_val2017.json"), split_of("caps_boxes_coco2014_val_80.jsonl"), split_of("x.json")
    ('val2017', 'val2014', None)
    """
    m = _SPLIT.search(text)
    if m is None:
        return None
    kind, year = (m.group(1), m.group(2)) if m.group(1) else (m.group(4), m.group(3))
    return f"{kind.lower()}{year}"


# --- reading ---------------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class ImageInfo:
    """One image as the files describe it; ``anns`` are its raw annotation dicts in file order."""

    image_id: str
    file_name: str | None = None
    width: int | None = None
    height: int | None = None
    split: str | None = None
    anns: list[dict[str, Any]] = field(default_factory=list)


def _read_json(path: Path) -> Any:
    try:
        return orjson.loads(Path(path).read_bytes())
    except (OSError, orjson.JSONDecodeError) as e:
        raise CorpusReadError(f"cannot read COCO file {path}: {e}") from None


SWAPPED = "are the instances and captions files swapped?"


def _captions(path: Path) -> Any:
    """A COCO captions json (checked to be one: it lends only its ``images`` block)."""
    data = _read_json(path)
    expect(data, path, role="COCO captions", expected=["COCO captions"], hint=SWAPPED)
    return data


def _size(entry: dict[str, Any]) -> tuple[int | None, int | None]:
    w, h = entry.get("width"), entry.get("height")
    sides = image_side(w), image_side(h)  # huge or non-finite sizes are not sizes: looked up elsewhere, else rejected
    return sides if sides[0] and sides[1] else (None, None)


def _file_name(value: Any) -> str | None:
    """An image file name as the file gives it, when it is one (a non-empty string); else None (the id names it)."""
    return value if isinstance(value, str) and value else None


def _images_block(data: Any, path: Path) -> dict[str, ImageInfo]:
    """``images`` entries by id (empty when the file has none)."""
    out: dict[str, ImageInfo] = {}
    block = (data.get("images") if isinstance(data, dict) else None) or []
    if not isinstance(block, list):
        raise CorpusReadError(f"COCO file {path}: 'images' must be a list of image entries, got {type(block).__name__}")
    for i, im in enumerate(block):
        if not isinstance(im, dict) or im.get("id") is None:
            raise CorpusReadError(f"COCO file {path}: images[{i}] has no id")
        split = split_of(str(im.get("coco_url") or im.get("file_name") or ""))
        out[str(im["id"])] = ImageInfo(str(im["id"]), _file_name(im.get("file_name")), *_size(im), split)
    return out


def _read_coco(path: Path) -> tuple[list[ImageInfo], dict[int, str] | None]:
    """A COCO json (dict with ``annotations``, or a bare list of them) → images in order of first annotation."""
    data = _read_json(path)
    expect(data, path, role="COCO instances", expected=["COCO instances", "a COCO instance annotation"],
           hint=SWAPPED)
    anns = data.get("annotations") if isinstance(data, dict) else data
    if not isinstance(anns, list):
        raise CorpusReadError(f"COCO file {path} has no 'annotations' list")
    cats = None
    if isinstance(data, dict) and isinstance(data.get("categories"), list):
        named = [c for c in data["categories"] if isinstance(c, dict) and {"id", "name"} <= c.keys()]
        cats = {c["id"]: str(c["name"]) for c in named}
    known = _images_block(data, path)
    images: dict[str, ImageInfo] = {}
    for i, ann in enumerate(anns):
        if not isinstance(ann, dict) or ann.get("image_id") is None:
            raise CorpusReadError(f"COCO file {path}: annotations[{i}] has no image_id")
        iid = str(ann["image_id"])
        images.setdefault(iid, known.get(iid) or ImageInfo(iid)).anns.append(ann)
    return list(images.values()), cats


def _read_llava(path: Path) -> Iterator[ImageInfo]:
    """LLaVA ``caps_boxes`` jsonl → one ``ImageInfo`` a line (annotations keep ``category`` and relative ``bbox``)."""
    try:
        lines = Path(path).read_bytes().splitlines()
    except OSError as e:
        raise CorpusReadError(f"cannot read COCO file {path}: {e}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            raise CorpusReadError(f"{path}:{n}: invalid JSON: {e}") from None
        if not isinstance(row, dict) or row.get("id") is None or not isinstance(row.get("instances"), list):
            kind = identify(row)
            looks = f" (the line looks like {kind}, not LLaVA caps_boxes (COCO))" if kind else ""
            raise CorpusReadError(f"{path}:{n}: expected an object with 'id' and an 'instances' list{looks}")
        anns = [dict(a if isinstance(a, dict) else {}, id=f"{row['id']}#{k}") for k, a in enumerate(row["instances"])]
        yield ImageInfo(str(row["id"]), _file_name(row.get("image")), anns=anns)


# --- instances -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Instance:
    """One annotation: canonical ``box`` (None when it cannot be read or needs the unknown image size)."""

    ann_id: str
    category: str
    box: Box | None
    crowd: bool = False
    error: str | None = None


def _category(ann: dict[str, Any], cats: dict[int, str] | None) -> tuple[str, str | None]:
    """The annotation's category name and, when it has none, an ``unknown_category`` reason."""
    if "category_id" in ann:
        cid = ann["category_id"]
        name = (cats if cats is not None else COCO_CATEGORIES).get(cid) if isinstance(cid, int | str) else None
        if name is None:
            return f"category {cid}", f"unknown_category: id {cid} (annotation {ann['id']})"
        return name, None
    name = " ".join(str(ann.get("category") or "").split())
    return name, None if name else f"unknown_category: annotation {ann['id']} has no category"


def _box(ann: dict[str, Any], size: tuple[int, int] | None) -> tuple[Box | None, str | None]:
    """The canonical box (None with no reason when relative boxes wait for an unknown image size)."""
    try:
        if "category_id" in ann:
            box = boxconv.to_box("coco_xywh", ann.get("bbox"))
        elif size is None:
            return None, None
        else:
            box = boxconv.to_box("rel_xyxy", ann.get("bbox"), width=size[0], height=size[1])
    except (VirlError, TypeError, ValueError):
        return None, f"bad_box: annotation {ann['id']} bbox {ann.get('bbox')!r}"
    if not boxes.is_valid(boxes.as_array([box]))[0]:
        return None, f"bad_box: annotation {ann['id']} bbox {ann.get('bbox')!r} is empty"
    return box, None


def _instance(ann: dict[str, Any], cats: dict[int, str] | None, size: tuple[int, int] | None) -> Instance:
    """A raw annotation → ``Instance``; COCO anns have ``category_id`` + xywh, LLaVA ones ``category`` + rel xyxy."""
    ann = dict(ann, id=str(ann.get("id", "?")))
    name, cat_error = _category(ann, cats)
    box, box_error = _box(ann, size)
    return Instance(ann["id"], name, box, bool(ann.get("iscrowd", 0)), box_error or cat_error)


# --- geometry (only comparisons; conversions stay in boxconv) --------------------------------------------------------
def _centres(a: np.ndarray) -> np.ndarray:
    """``(N, 2)`` centres ``((x1 + x2)/2, (y1 + y2)/2)`` of ``(N, 4)`` xyxy boxes."""
    return (a[:, :2] + a[:, 2:]) / 2


def clearly_left(a: Box, b: Box, width: float, margin: float = MARGIN) -> bool | None:
    """True/False when ``a``'s centre is clearly left/right of ``b``'s, None when too close to call.

    Clear = centres at least ``margin * width`` apart and horizontal overlap ≤ half the narrower box width.

    >>> clearly_left(Box(0, 0, 10, 10), Box(50, 0, 60, 10), width=100)
    True
    >>> clearly_left(Box(0, 0, 100, 10), Box(40, 0, 60, 10), width=100) is None  # the wide box spans the other
    True
    """
    (ax, _), (bx, _) = _centres(boxes.as_array([a, b]))
    overlap = min(a.x2, b.x2) - max(a.x1, b.x1)
    if abs(ax - bx) < margin * width or overlap > 0.5 * min(a.w, b.w):
        return None
    return bool(ax < bx)


def _cells(bs: list[Box], size: tuple[int, int]) -> list[tuple[int, int]]:
    """The 3x3 ``(row, col)`` cell of each box centre."""
    rel = _centres(boxconv.canonical_to_rel_xyxy(boxes.as_array(bs), width=size[0], height=size[1]))
    idx = np.clip(np.floor(rel * 3), 0, 2).astype(int)
    return [(int(r), int(c)) for c, r in idx]


# --- questions -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Question:
    template: str
    key: str
    question: str
    answer: str
    answer_type: str
    chain: tuple[RationaleStep, ...]
    reasons: tuple[str, ...] = ()


def _step(insts: list[Instance], role: str = "target") -> RationaleStep:
    ordered = sorted(insts, key=lambda i: (i.box.x1, i.box.y1) if i.box else (0.0, 0.0))
    return RationaleStep(boxes=tuple(i.box for i in ordered if i.box is not None), phrase=ordered[0].category,
                         role=role, source_ref=",".join(i.ann_id for i in ordered))


def count_questions(by_cat: dict[str, list[Instance]]) -> Iterator[Question]:
    """"How many <plural> are there?" for each category; rejected when an instance is crowd or unreadable."""
    for cat, insts in by_cat.items():
        reasons = [i.error for i in insts if i.error]
        crowd = [i.ann_id for i in insts if i.crowd]
        if crowd:
            reasons.append(f"crowd_annotation: {cat} has iscrowd=1 annotation(s) {', '.join(crowd)} (count unknown)")
        chain = (_step(insts),) if all(i.box for i in insts) else ()
        yield Question("count", cat, f"How many {plural(cat)} are there?", str(len(insts)), "number", chain,
                       tuple(reasons))


def _usable(by_cat: dict[str, list[Instance]]) -> dict[str, list[Instance]]:
    """Categories whose every instance has a box and none is a crowd."""
    return {c: v for c, v in by_cat.items() if all(i.box and not i.crowd and not i.error for i in v)}


def left_of_questions(by_cat: dict[str, list[Instance]], width: int, margin: float) -> Iterator[Question]:
    """"Is the <A> to the left of the <B>?" for each pair of single-instance categories (A before B by name)."""
    single = sorted((c, v[0]) for c, v in _usable(by_cat).items() if len(v) == 1)
    for k, (ca, a) in enumerate(single):
        for cb, b in single[k + 1:]:
            left = clearly_left(a.box, b.box, width, margin)  # type: ignore[arg-type]
            if left is not None:
                yield Question("left_of", f"{ca}|{cb}", f"Is the {ca} to the left of the {cb}?",
                               "yes" if left else "no", "yes/no", (_step([a]), _step([b])))


def small_questions(by_cat: dict[str, list[Instance]], size: tuple[int, int], small_frac: float) -> Iterator[Question]:
    """"Is there a <cat> in the image?" (every instance small) and "What is the small object in the <cell> of the
    image?" (the only object under ``2 small_frac`` of the image centred in that cell, and itself small)."""
    limit = small_frac * size[0] * size[1]
    for cat, insts in _usable(by_cat).items():
        if all(i.box.area < limit for i in insts):  # type: ignore[union-attr]
            yield Question("small_exists", cat, f"Is there a {cat} in the image?", "yes", "yes/no", (_step(insts),))
    placed = [(i, i.box) for v in by_cat.values() for i in v if i.box is not None]
    if not placed:
        return
    cells = _cells([b for _, b in placed], size)
    for (inst, box), cell in zip(placed, cells):
        if inst.crowd or inst.error or box.area >= limit:
            continue
        rivals = [o for (o, b), c in zip(placed, cells)
                  if c == cell and o is not inst and (o.crowd or b.area < 2 * limit)]
        if not rivals:
            name = CELLS[cell[0]][cell[1]]
            yield Question("small_at", name, f"What is the small object in the {name} of the image?",
                           inst.category, "object", (_step([inst]),))


# --- records ---------------------------------------------------------------------------------------------------------
def _candidates(info: ImageInfo) -> list[str]:
    """File names to look for under ``images``: the file's own name, then COCO's usual namings of the id."""
    names = [info.file_name] if info.file_name else []
    if info.image_id.isdigit():
        n = int(info.image_id)
        names += [f"{n:012d}.jpg", f"{n:012d}.png", f"COCO_val2014_{n:012d}.jpg", f"COCO_train2014_{n:012d}.jpg",
                  f"{n}.jpg"]
    return names


def _resolve(info: ImageInfo, lent: dict[str, ImageInfo], images: Path | None) -> tuple[ImageRef, str | None]:
    """The image's ``ImageRef`` and, when no size can be found, an ``image_size_unknown`` reason."""
    other = lent.get(info.image_id)
    file_name = info.file_name or (other.file_name if other else None)
    default = file_name or next(iter(_candidates(info)), f"{info.image_id}.jpg")
    if info.width and info.height:
        return ImageRef(path=default, width=info.width, height=info.height), None
    if other and other.width and other.height:
        return ImageRef(path=default, width=other.width, height=other.height), None
    if images is None:
        return ImageRef(default, 0, 0), f"image_size_unknown: image {info.image_id} (no size in the file, no images)"
    found = size_from_files(images, filter(None, [file_name, *_candidates(info)]))
    if found is not None:
        return found
    where = f"no size in the file, no file in {images}"
    return ImageRef(default, 0, 0), f"image_size_unknown: image {info.image_id} ({where})"


def mine_image(info: ImageInfo, image: ImageRef, size_reason: str | None, cats: dict[int, str] | None,
               small_frac: float = SMALL_FRAC, margin: float = MARGIN) -> Iterator[Question]:
    """Every question of one image (with its rejection reasons)."""
    size = None if size_reason else (image.width, image.height)
    by_cat: dict[str, list[Instance]] = {}
    for ann in info.anns:
        inst = _instance(ann, cats, size)
        by_cat.setdefault(inst.category, []).append(inst)
    by_cat = dict(sorted(by_cat.items()))
    for q in count_questions(by_cat):
        yield Question(q.template, q.key, q.question, q.answer, q.answer_type, q.chain,
                       (*q.reasons, *filter(None, [size_reason])))
    if size is not None:
        yield from left_of_questions(by_cat, size[0], margin)
        yield from small_questions(by_cat, size, small_frac)


def _record(info: ImageInfo, image: ImageRef, split: str | None, q: Question) -> RationaleRecord:
    return RationaleRecord(
        id=record_id(SOURCE, info.image_id, q.template, q.key),
        image=image,
        question=q.question,
        answer=q.answer,
        chain=q.chain,
        provenance=Provenance(source=SOURCE, source_split=info.split or split, miner=MINER, native_ids=(
            ("image_id", info.image_id), ("template", q.template), ("key", q.key))),
        answer_type=q.answer_type,
        question_type=q.template,
        **mining_outcome(q.reasons),
    )


def mine(
    *,
    instances: Path,
    captions: Path | None = None,
    images: Path | None = None,
    limit: int | None = None,
    small_frac: float = SMALL_FRAC,
    margin: float = MARGIN,
) -> Iterator[RationaleRecord]:
    """Stream box-answerable questions from a COCO ``instances`` json (or LLaVA ``caps_boxes`` jsonl).

    ``captions``: a COCO captions json whose ``images`` block supplies sizes/file names missing from ``instances``.
    ``images``: the image directory, read for sizes only. ``small_frac``: area fraction under which an object is
    "small"; ``margin``: the least centre gap, as a fraction of the width, for a left/right question.
    """
    check_limit(limit)
    if not 0 < small_frac < 1 or not 0 <= margin < 1:
        raise ConfigError(f"need 0 < small_frac < 1 and 0 <= margin < 1, got {small_frac}, {margin}")
    split = split_of(Path(instances).name)
    infos: Iterator[ImageInfo] | list[ImageInfo]
    if Path(instances).suffix == ".jsonl":
        infos, cats = _read_llava(instances), None
    else:
        infos, cats = _read_coco(instances)
    lent = _images_block(_captions(captions), captions) if captions is not None else {}
    n = 0
    for info in infos:
        image, size_reason = _resolve(info, lent, images)
        for q in mine_image(info, image, size_reason, cats, small_frac, margin):
            if limit is not None and n >= limit:
                return
            n += 1
            yield _record(info, image, split, q)
