"""What kind of dataset file is this? Content sniffing for the miners, so a swapped or wrong input stops with a
message that names what the file looks like and what was expected, instead of mining nonsense.

``identify(entry)`` names the kind of ONE entry (a record, a line, a per-image object) by its fields; ``KINDS`` lists
every kind it knows. A miner checks the first few entries of each input with ``expect`` (whole parsed files) or
``expect_stream`` (streamed lines / records): the input is rejected with ``WrongFileKind`` when none of them is of
an expected kind but one is of another known kind (the message names both). Entries of no known kind are left to
the miner's own checks, which name the missing field or record the rejection reason.

Example:
    >>> identify({"imageId": "1", "question": "Is it red?", "answer": "no", "semantic": []})
    'GQA questions'
    >>> identify({"width": 500, "height": 375, "objects": {}})
    'GQA scene graphs'
    >>> expect([{"width": 5, "height": 5, "objects": {}}], "x.json", role="questions", expected=["GQA questions"])
    Traceback (most recent call last):
    ...
    virl_data.core.errors.WrongFileKind: the questions file x.json looks like GQA scene graphs, not GQA questions
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

from virl_data.core.errors import WrongFileKind

SAMPLE = 20
"""How many leading entries of an input are looked at."""

T = TypeVar("T")


def _has(obj: Any, *keys: str) -> bool:
    return isinstance(obj, dict) and all(k in obj for k in keys)


def _list_of(obj: Any, key: str, *fields: str) -> bool:
    """``obj[key]`` is a list, empty or with one of its first ``SAMPLE`` elements having ``fields``."""
    value = obj.get(key) if isinstance(obj, dict) else None
    return isinstance(value, list) and (not value or any(_has(v, *fields) for v in value[:SAMPLE]))


# Order matters where layouts share fields (a REC line and a VisCoT benchmark_det line both have expression + bbox).
KINDS: dict[str, Callable[[Any], bool]] = {
    "GQA questions": lambda o: _has(o, "question") and ("semantic" in o or "imageId" in o),
    "GQA scene graphs": lambda o: _has(o, "objects") and "image_id" not in o,  # VG's objects.json has image_id
    "Visual Genome relationships": lambda o: _list_of(o, "relationships", "subject", "object"),
    "Visual Genome attributes": lambda o: _list_of(o, "attributes", "object_id"),
    "Visual Genome objects": lambda o: _has(o, "image_id") and _list_of(o, "objects", "object_id"),
    "Visual Genome region descriptions": lambda o: _list_of(o, "regions", "phrase"),
    # COCO files are told apart by their annotations; one with none could be any of them (unknown)
    "COCO captions": lambda o: _list_of(o, "annotations", "caption") and bool(o["annotations"]),
    "COCO panoptic annotations": lambda o: _list_of(o, "annotations", "segments_info") and bool(o["annotations"]),
    "COCO instances": lambda o: _list_of(o, "annotations", "bbox") and bool(o["annotations"]),
    "a COCO instance annotation": lambda o: _has(o, "bbox", "image_id", "category_id"),
    "LLaVA caps_boxes (COCO)": lambda o: _has(o, "id", "instances") and isinstance(o["instances"], list),
    "RefCOCO (REC layout)": lambda o: _has(o, "expression", "bbox") and ("sent_id" in o or "dataset_name" in o),
    "VisCoT benchmark_det": lambda o: _has(o, "img_path", "expression", "bbox"),
    "RefCOCO (Ground-R1 layout)": lambda o: _has(o, "solution", "bboxs") and isinstance(o["solution"], list),
    "VisCoT benchmark": lambda o: _has(o, "image", "conversations") and isinstance(o["image"], list),
    "VisCoT (Ground-R1 layout)": lambda o: _has(o, "problem", "solution", "bboxs"),
    "VisCoT cot_train": lambda o: _has(o, "question", "answer", "bboxs"),
    "V* Bench": lambda o: _has(o, "target_object", "bbox"),
    "TreeBench": lambda o: _has(o, "question") and ("bbox" in o or "bboxes" in o) and ("options" in o or "A" in o),
    "POPE questions": lambda o: _has(o, "question_id", "text", "label"),
}
"""Kind name → predicate over one entry."""


def identify(entry: Any) -> str | None:
    """The name of the first kind in ``KINDS`` whose predicate accepts ``entry``, else None.

    >>> identify({"img_path": "a.jpg", "expression": "dog", "bbox": [1, 2, 3, 4], "question_id": 7})
    'VisCoT benchmark_det'
    >>> identify({"anything": 1}) is None
    True
    """
    for name, accepts in KINDS.items():
        try:
            if accepts(entry):
                return name
        except (TypeError, AttributeError, KeyError):
            continue
    return None


def entries(data: Any) -> Iterator[Any]:
    """The entries of a parsed JSON file: the values of an object keyed by id (GQA), the items of a list, or the
    object itself when it is one record (a per-image file, a COCO file with an ``annotations`` list)."""
    if isinstance(data, list):
        yield from data
    elif isinstance(data, dict) and data and identify(data) is None and all(isinstance(v, dict) for v in
                                                                             islice(data.values(), SAMPLE)):
        yield from data.values()
    else:
        yield data


def _check(head: list[Any], path: Path | str, role: str, expected: Iterable[str], hint: str | None) -> None:
    wanted = list(expected)
    kinds = [identify(e) for e in head]
    if any(k in wanted for k in kinds) or all(k is None for k in kinds):
        return  # of the expected kind, or of no known kind: the miner's own checks name what is wrong
    found = next(k for k in kinds if k is not None)
    message = f"the {role} file {path} looks like {found}, not {' or '.join(wanted)}"
    raise WrongFileKind(message + (f" ({hint})" if hint else ""))


def expect(data: Any, path: Path | str, *, role: str, expected: Iterable[str], hint: str | None = None) -> None:
    """Raise ``WrongFileKind`` when none of the first ``SAMPLE`` entries of the parsed file ``data`` is of an
    ``expected`` kind and one is of another known kind. ``role`` names the input (``"GQA questions"``), ``hint`` is
    added to the message (e.g. "are the two files swapped?"). An empty file passes (nothing to mine)."""
    _check(list(islice(entries(data), SAMPLE)), path, role, expected, hint)


def expect_stream(items: Iterable[T], path: Path | str, *, role: str, expected: Iterable[str],
                  hint: str | None = None, entry: Callable[[T], Any] = lambda x: x) -> Iterator[T]:
    """``items`` unchanged, after checking (as ``expect``) the entries of the first ``SAMPLE`` of them; ``entry``
    picks the JSON entry out of an item (e.g. the value of a ``(line number, value)`` pair)."""
    it = iter(items)
    head = list(islice(it, SAMPLE))
    _check([entry(x) for x in head], path, role, expected, hint)
    yield from head
    yield from it


__all__ = ["KINDS", "SAMPLE", "entries", "expect", "expect_stream", "identify"]
