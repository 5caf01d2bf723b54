"""GQA: each question's semantic program, walked in dependency order, gives the box chain of the objects it visits.

Inputs are the official files: ``questions`` (``{qid: {imageId, question, answer, semantic: [{operation,
dependencies, argument}], types: {structural, semantic, detailed}, ...}}``, e.g. ``val_balanced_questions.json``)
and ``scene_graphs`` (``{imageId: {width, height, objects: {objId: {name, x, y, w, h, attributes, relations}}}}``).
Boxes are ``x, y, w, h`` pixels, converted with ``boxconv.coco_xywh_to_canonical``.

The chain. The program's operations are walked in dependency order (a topological order of ``dependencies``; ties
go to the earlier operation, so a program listed in a valid order is walked as listed). An operation whose
argument ends in object ids (``select: painting (389027)``, ``relate: man,to the left of,s (389036)``, ``verify
rel: chair,sitting under,o (3620611)``, several ids as ``(123,456)``) contributes ONE step holding the boxes of
those objects, in the order the ids are written; ``(-)`` (GQA's "no such object") and id-less arguments
(``filter color: green``, ``query: name``, ``exist: ?``) contribute none. Rule for repeats: a step is dropped when
its object set equals that of the step kept just before it (``select: man (1)`` → ``filter color: white`` →
``relate: ..., (1)`` gives one step); a set seen earlier but not just before is kept, since revisiting an object
after another is part of the reasoning. Step phrase = the scene-graph names of its objects (distinct, joined by
", "); ``source_ref`` = the ids joined by ","; role ``target`` for the last step, ``context`` before it.

Record fields: ``answer`` as given, ``question_type`` = ``types.detailed`` (else ``types.semantic``),
``answer_type`` from ``types.structural`` by ``ANSWER_TYPES``, ``source_split`` from the questions file name
(``val_balanced_questions.json`` → ``val``), ``native_ids`` = question and image id, image ``<imageId>.jpg`` with
the scene graph's ``width``/``height`` (else read from the file under ``images``). REJECTED records
(``CheckResult(name="mining")``), one check per reason:

- ``no_scene_graph: image <id>``: the question's image has no entry in ``scene_graphs``;
- ``unknown_object: <id>``: a program argument names an object the scene graph lacks (once per id);
- ``bad_box: object <id> ...``: the object's ``x, y, w, h`` are missing or not numbers;
- ``empty_chain: ...``: no operation references an object (``select: scene`` → ``choose location``);
- ``malformed_question`` / ``malformed_scene_graph``: fields missing or of the wrong type, dependency cycles;
- ``no_answer``: the question has no answer (GQA's test splits ship none);
- ``image_size_unknown``: the size is neither in the scene graph nor readable from the image file.

Example:
    >>> import orjson, tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> sg = {"7": {"width": 100, "height": 80, "objects": {
    ...     "1": {"name": "cup", "x": 10, "y": 20, "w": 30, "h": 40},
    ...     "2": {"name": "table", "x": 0, "y": 50, "w": 100, "h": 30}}}}
    >>> q = {"42": {"imageId": "7", "question": "What is the cup on?", "answer": "table",
    ...     "types": {"structural": "query", "semantic": "rel", "detailed": "relO"},
    ...     "semantic": [{"operation": "select", "dependencies": [], "argument": "cup (1)"},
    ...                  {"operation": "relate", "dependencies": [0], "argument": "_,on,o (2)"},
    ...                  {"operation": "query", "dependencies": [1], "argument": "name"}]}}
    >>> _ = (d / "val_questions.json").write_bytes(orjson.dumps(q))
    >>> _ = (d / "sg.json").write_bytes(orjson.dumps(sg))
    >>> rec = next(mine(questions=d / "val_questions.json", scene_graphs=d / "sg.json"))
    >>> [(s.phrase, s.source_ref, s.role) for s in rec.chain], rec.answer_type, rec.provenance.source_split
    ([('cup', '1', 'context'), ('table', '2', 'target')], 'open', 'val')
    >>> rec.chain[0].boxes
    (Box(x1=10.0, y1=20.0, x2=40.0, y2=60.0),)
"""

from __future__ import annotations

import gc
import heapq
import math
import re
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from PIL import Image

from virl_data.core import boxconv
from virl_data.core.errors import BoxConventionError, CorpusReadError
from virl_data.core.types import (
    Box,
    ImageRef,
    Provenance,
    RationaleRecord,
    RationaleStep,
    record_id,
)
from virl_data.miners._common import check_limit, image_side, mining_outcome, size_out_of_range
from virl_data.miners._kinds import expect

SOURCE = "gqa"
MINER = "gqa@1"
CACHE_IMAGES = 16384
"""How many images' converted objects and steps stay cached (~5 KB each). GQA lists an image's questions together,
so a few would do; this many keeps all of val (10,696 images) and makes a shuffled file cost 1x, not 3x."""

ANSWER_TYPES: dict[str, str] = {
    "verify": "yes/no", "logical": "yes/no", "choose": "choice", "compare": "choice", "query": "open",
}
"""``types.structural`` → ``answer_type``; other structural types give ``None``."""

# Trailing "(id)", "(id,id,...)" or "(-)" of an argument; GQA object ids are digits.
_IDS = re.compile(r"\((-|\d+(?:\s*,\s*\d+)*)\)\s*$", re.ASCII)
_SPLIT = re.compile(r"(?<![a-z])(train|val|testdev|test|challenge|submission)(?![a-z])", re.ASCII | re.IGNORECASE)


class MalformedProgram(ValueError):
    """A question's ``semantic`` program of the wrong shape; its message is the rejection reason. Internal to a
    record (the miner turns it into a REJECTED record), so not a ``VirlError``."""


def split_of(path: Path | str) -> str | None:
    """The GQA split named by a questions file, else None.

    >>> split_of("val_balanced_questions.json"), split_of("SAMPLE-val_balanced_questions.json"), split_of("q.json")
    ('val', 'val', None)
    """
    m = _SPLIT.search(Path(path).name)
    return m.group(1).lower() if m else None


# --- the program -----------------------------------------------------------------------------------------------------
def walk_order(semantic: Any) -> Sequence[int]:
    """Operation indices in dependency order: a topological order, ties to the lower index.

    A program whose dependencies all point backwards (GQA lists them so) is walked as listed; others are sorted.
    Raises ``MalformedProgram`` for a non-list, an operation without a ``dependencies`` list of in-range ints, or a
    cycle.

    >>> walk_order([{"dependencies": []}, {"dependencies": [2]}, {"dependencies": [0]}])
    [0, 2, 1]
    """
    if type(semantic) is not list:
        raise MalformedProgram("malformed_question: semantic is not a list")
    n, listed = len(semantic), True
    for i, op in enumerate(semantic):
        deps = op.get("dependencies") if type(op) is dict else None
        if type(deps) is not list:
            raise MalformedProgram(f"malformed_question: operation {i} has no dependencies list")
        for d in deps:
            if type(d) is not int or not 0 <= d < n or d == i:
                raise MalformedProgram(f"malformed_question: operation {i} depends on {d!r}")
            if d > i:
                listed = False
    return range(n) if listed else _kahn(semantic)


def _kahn(semantic: list[dict[str, Any]]) -> list[int]:
    users: list[list[int]] = [[] for _ in semantic]
    pending = [len(set(op["dependencies"])) for op in semantic]
    for i, op in enumerate(semantic):
        for d in set(op["dependencies"]):
            users[d].append(i)
    ready = [i for i, k in enumerate(pending) if k == 0]  # ascending, so already a heap
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users[i]:
            pending[u] -= 1
            if pending[u] == 0:
                heapq.heappush(ready, u)
    if len(order) < len(semantic):
        raise MalformedProgram("malformed_question: the program's dependencies form a cycle")
    return order


def object_refs(semantic: Any) -> list[tuple[str, ...]]:
    """The object-id groups of a program's operations in walk order, one per step (repeats dropped, see module doc).

    >>> object_refs([{"dependencies": [], "argument": "man (1)"}, {"dependencies": [0], "argument": "white"},
    ...              {"dependencies": [1], "argument": "_,near,o (2, 3)"}, {"dependencies": [2], "argument": "x (-)"}])
    [('1',), ('2', '3')]
    """
    out: list[tuple[str, ...]] = []
    last: tuple[str, ...] | frozenset[str] = ()
    for i in walk_order(semantic):
        arg = semantic[i].get("argument")
        # The ")" test skips the regex for the id-less half of the operations ("name", "color", "?", "left").
        m = _IDS.search(arg) if type(arg) is str and ")" in arg else None
        if m is None or (text := m.group(1)) == "-":
            continue
        if "," in text:
            ids = tuple(dict.fromkeys(s.strip() for s in text.split(",")))
            key: tuple[str, ...] | frozenset[str] = frozenset(ids) if len(ids) > 1 else ids
        else:
            ids = key = (text,)
        if key != last:
            out.append(ids)
            last = key
    return out


# --- the scene graphs ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SceneObject:
    """A scene-graph object: its name and canonical box."""

    name: str
    box: Box


def _image_ref(image_id: str, graph: dict[str, Any] | None, images: Path | None) -> tuple[ImageRef, str | None]:
    """``<imageId>.jpg`` sized by the scene graph, else by the image file's header, else 0 x 0 with a reason."""
    name = f"{image_id}.jpg"
    w, h = (graph.get("width"), graph.get("height")) if graph is not None else (None, None)
    if type(w) is int and type(h) is int and image_side(w) and image_side(h):
        return ImageRef(path=name, width=w, height=h), None
    if bad := size_out_of_range(w, h):
        return ImageRef(name, 0, 0), bad
    if images is None:
        return ImageRef(name, 0, 0), f"image_size_unknown: image {image_id} (no size in the scene graph, no images)"
    try:
        with Image.open(Path(images) / name) as im:
            return ImageRef(path=name, width=im.width, height=im.height), None
    except OSError as e:
        return ImageRef(name, 0, 0), f"image_size_unknown: {name}: {e}"


def _convert(objects: dict[str, Any]) -> tuple[dict[str, int | str], np.ndarray]:
    """``(where, boxes)``: the image's canonical boxes as one ``(N, 4)`` array (one ``boxconv`` call for all) and,
    per object id, its row there or a ``bad_box`` reason (``x, y, w, h`` missing, not numbers or not finite)."""
    try:  # fast path: every object well formed, the usual case
        xywh = np.array([(o["x"], o["y"], o["w"], o["h"]) for o in objects.values()])
        if xywh.dtype.kind in "iuf" and xywh.size:
            return dict(zip(objects, range(len(objects)))), boxconv.coco_xywh_to_canonical(xywh)
    except (KeyError, TypeError, ValueError, AttributeError, BoxConventionError):
        pass
    where: dict[str, int | str] = {}
    good: list[list[Any]] = []
    for oid, o in objects.items():
        vals = [o.get(k) for k in "xywh"] if type(o) is dict else []
        if len(vals) == 4 and all(type(v) in (int, float) and math.isfinite(v) for v in vals):
            where[oid] = len(good)
            good.append(vals)
        else:
            where[oid] = f"bad_box: object {oid} has no finite numeric x, y, w, h"
    return where, boxconv.coco_xywh_to_canonical(np.array(good, dtype=np.float64).reshape(-1, 4))


class _Image:
    """One image: its reference, why it cannot be used (if so), its objects (``Box`` built on first use), steps.

    Few objects per image on purpose: the cache holds thousands of them, and the cycle collector walks them all.
    """

    __slots__ = ("ref", "reasons", "has_graph", "_raw", "_where", "_boxes", "_objects", "steps")

    def __init__(self, ref: ImageRef, reasons: tuple[str, ...] = (), objects: dict[str, Any] | None = None) -> None:
        self.ref, self.reasons, self.has_graph, self._raw = ref, reasons, objects is not None, objects or {}
        self._where, self._boxes = _convert(self._raw) if self._raw else ({}, None)
        self._objects: dict[str, SceneObject | str] = {}
        self.steps: dict[tuple[tuple[str, ...], str], RationaleStep] = {}

    def object(self, oid: str) -> SceneObject | str:
        """The object, or the reason it cannot be used (``unknown_object`` / ``bad_box``)."""
        obj = self._objects.get(oid)
        if obj is None:
            row = self._where.get(oid)
            if row is None:
                obj = f"unknown_object: {oid}"
            elif type(row) is str:
                obj = row
            else:
                name = self._raw[oid].get("name")
                obj = SceneObject(name if type(name) is str else "", Box(*self._boxes[row].tolist()))
            self._objects[oid] = obj
        return obj


class SceneIndex:
    """Scene graphs by image id, converted lazily per image and cached (least recently used dropped first)."""

    def __init__(self, graphs: dict[str, Any], images: Path | None, cache_size: int = CACHE_IMAGES) -> None:
        self.graphs, self.images, self.cache_size = graphs, images, cache_size
        self._cache: OrderedDict[str, _Image] = OrderedDict()

    def get(self, image_id: str) -> _Image:
        image = self._cache.get(image_id)
        if image is not None:
            self._cache.move_to_end(image_id)
            return image
        image = self._cache[image_id] = self._build(image_id)
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return image

    def _build(self, image_id: str) -> _Image:
        graph = self.graphs.get(image_id)
        if graph is None:
            ref, size_reason = _image_ref(image_id, None, self.images)
            return _Image(ref, (f"no_scene_graph: image {image_id}", *filter(None, [size_reason])))
        if type(graph) is not dict or type(graph.get("objects")) is not dict:
            ref, _ = _image_ref(image_id, None, self.images)
            return _Image(ref, (f"malformed_scene_graph: image {image_id} has no objects mapping",))
        ref, size_reason = _image_ref(image_id, graph, self.images)
        return _Image(ref, (size_reason,) if size_reason else (), graph["objects"])


# --- records ---------------------------------------------------------------------------------------------------------
def _step(image: _Image, ids: tuple[str, ...], role: str, reasons: list[str]) -> RationaleStep | None:
    """The step of an id group (cached per image); unknown or bad objects add reasons and are left out."""
    step = image.steps.get((ids, role))
    if step is not None:
        return step
    found: list[tuple[str, SceneObject]] = []
    for oid in ids:
        obj = image.object(oid)
        if type(obj) is str:
            reasons.append(obj)
        else:
            found.append((oid, obj))
    if not found:
        return None
    step = RationaleStep(boxes=tuple(o.box for _, o in found),
                         phrase=", ".join(dict.fromkeys(o.name for _, o in found)),
                         role=role, source_ref=",".join(oid for oid, _ in found))
    if len(found) == len(ids):  # only complete steps are cached: a partial one must add its reasons each time
        image.steps[(ids, role)] = step
    return step


def _chain(semantic: Any, image: _Image, reasons: list[str]) -> tuple[RationaleStep, ...]:
    refs = object_refs(semantic)
    if not refs:
        reasons.append("empty_chain: no operation of the program references an object")
        return ()
    last, steps = len(refs) - 1, []
    for i, ids in enumerate(refs):
        step = _step(image, ids, "target" if i == last else "context", reasons)
        if step is not None:
            steps.append(step)
    return tuple(steps)


def _types(q: dict[str, Any]) -> tuple[str | None, str | None]:
    """``(answer_type, question_type)`` from ``types``."""
    types = q.get("types")
    if type(types) is not dict:
        return None, None
    structural, detailed = types.get("structural"), types.get("detailed") or types.get("semantic")
    answer_type = ANSWER_TYPES.get(structural) if type(structural) is str else None
    return answer_type, detailed if type(detailed) is str else None


def mine_question(qid: str, q: Any, index: SceneIndex, split: str | None) -> RationaleRecord:
    """One question → its record (REJECTED with reasons when the chain or the image cannot be resolved)."""
    q = q if type(q) is dict else {}
    image_id = q.get("imageId")
    image_id = str(image_id) if type(image_id) in (str, int) else ""
    if image_id:
        image = index.get(image_id)
    else:
        image = _Image(ImageRef("", 0, 0), (f"malformed_question: question {qid} has no imageId",))
    reasons = list(image.reasons)
    question, answer = q.get("question"), q.get("answer")
    if type(question) is not str:
        question = ""
        reasons.append(f"malformed_question: question {qid} has no question text")
    if type(answer) is not str:
        answer = ""
        reasons.append(f"no_answer: question {qid}")
    chain: tuple[RationaleStep, ...] = ()
    if image.has_graph:  # an image of unknown size still gets its chain: the rejection names the size only
        try:
            chain = _chain(q.get("semantic"), image, reasons)
        except MalformedProgram as e:
            reasons.append(str(e))
    answer_type, question_type = _types(q)
    return RationaleRecord(
        id=record_id(SOURCE, qid, image_id),
        image=image.ref,
        question=question,
        answer=answer,
        chain=chain,
        provenance=Provenance(source=SOURCE, source_split=split, miner=MINER,
                              native_ids=(("question_id", qid), ("image_id", image_id))),
        answer_type=answer_type,
        question_type=question_type,
        # dict.fromkeys: an unknown id named by two operations is one reason
        **mining_outcome(dict.fromkeys(reasons)),
    )


def _read(path: Path, what: str) -> Any:
    try:
        return orjson.loads(Path(path).read_bytes())
    except (OSError, orjson.JSONDecodeError) as e:
        raise CorpusReadError(f"cannot read GQA {what} file {path}: {e}") from None


def _checked(data: Any, path: Path, what: str) -> dict[str, Any]:
    """``data`` read from the GQA ``what`` file ``path``, if it is one (else ``WrongFileKind`` / ``CorpusReadError``)."""
    expect(data, path, role=f"GQA {what}", expected=[f"GQA {what}"],
           hint="are the questions and scene graphs files swapped?")
    if type(data) is not dict:
        raise CorpusReadError(f"GQA {what} file {path} must hold a JSON object keyed by id, got {type(data).__name__}")
    return data


def _load(questions: Path, scene_graphs: Path) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """Both files parsed with the cycle collector off, then frozen (``gc.freeze``) before it is back on; returns
    ``(questions, scene_graphs, frozen)``, ``frozen`` False when something else had frozen objects already.

    Why freeze while still off: the millions of objects allocated meanwhile leave the collector's counters far past
    their thresholds, so the first allocation after ``gc.enable()`` would traverse them all (0.7 s on GQA val).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        qs, graphs = _read(questions, "questions"), _read(scene_graphs, "scene graphs")
        qs, graphs = _checked(qs, questions, "questions"), _checked(graphs, scene_graphs, "scene graphs")
        frozen = gc.get_freeze_count() == 0
        if frozen:
            gc.freeze()
    finally:
        if enabled:
            gc.enable()
    return qs, graphs, frozen


def mine(
    *,
    questions: Path,
    scene_graphs: Path,
    images: Path | None = None,
    limit: int | None = None,
) -> Iterator[RationaleRecord]:
    """Stream one record per GQA question of ``questions``, its chain resolved against ``scene_graphs``.

    ``images``: the GQA image folder (``<imageId>.jpg``), read only for sizes the scene graph lacks. ``limit`` caps
    the records yielded. Raises ``CorpusReadError`` for an unreadable file, ``ConfigError`` for a negative limit.

    Speed: the two files parse into millions of acyclic dicts and lists, which CPython's cycle collector would
    otherwise traverse again and again while they are built and while records are made (with it: 3/4 of the
    parse time and 2/3 of the mining time, see benchmarks/bench_mining.py). So they are parsed with the collector
    off and frozen (``gc.freeze``: moved out of every collection) until the generator finishes or is closed, when
    ``gc.unfreeze`` hands them back. The freeze is process-wide, so it is skipped when something else already
    froze objects (theirs are never unfrozen here); meanwhile cyclic garbage of the caller that predates the call
    is collected only after the generator ends.
    """
    check_limit(limit)
    qs, graphs, frozen = _load(questions, scene_graphs)
    try:
        index, split = SceneIndex(graphs, images), split_of(questions)
        for n, (qid, q) in enumerate(qs.items()):
            if limit is not None and n >= limit:
                return
            yield mine_question(qid, q, index, split)
    finally:
        if frozen:
            gc.unfreeze()


__all__ = ["ANSWER_TYPES", "MINER", "SOURCE", "MalformedProgram", "SceneIndex", "SceneObject", "mine",
           "mine_question", "object_refs", "split_of", "walk_order"]
