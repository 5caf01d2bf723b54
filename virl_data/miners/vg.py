"""Visual Genome: relationship questions whose answer the scene graph fixes, with a subject → object box chain.

Inputs are the official ``relationships.json`` (a list of ``{image_id, relationships: [{relationship_id, predicate,
subject: {object_id, name | names, x, y, w, h[, merged_object_ids]}, object: {...}}]}``; a single such object, as
in per-image cuts, is accepted too) and optionally ``attributes.json`` (``[{image_id, attributes: [{object_id,
names, x, y, w, h, attributes?}]}]``, which is effectively the objects list). Boxes are ``x, y, w, h`` pixels,
converted with ``boxconv.to_box("coco_xywh", ...)``.

Each relationship gives up to two records (``question_type``):

====================  ================================================  ===========================  ===========
template              example                                           chain                        answer_type
====================  ================================================  ===========================  ===========
``relation_object``   What is the shade on? / What does the man wear?   subject (context), object    object
                                                                        (target)
``relation_color``    What colour are the pants that the man is         subject (context), object    color
                      wearing?                                          (target)
====================  ================================================  ===========================  ===========

``relation_color`` is only asked when the object carries a colour word among its attributes (``grey`` counts as
``gray``) and is not a person (``PEOPLE``). A record is REJECTED (``CheckResult(name="mining")``) when the graph
does not fix its answer:

- ``ambiguous_referent: <name> (N objects)``: the subject's name (or, for ``relation_color``, the object's name
  among the subject's objects for that predicate) denotes several objects of the image;
- ``ambiguous_answer: ...``: the subject relates by the predicate to objects of different names, or the object has
  several colours;
- ``self_relation``, ``answer_in_question``, ``duplicate_question`` (same question already asked of the image),
  ``malformed_relationship``, ``bad_box``, and ``image_size_unknown`` (VG annotations carry no image size: it is
  taken from VG's ``image_data.json`` when given, else read from the image file when ``images`` is given, else
  every record of the image is rejected).

"Distinct objects" merge VG's duplicates: mentions sharing an ``object_id``, linked by ``merged_object_ids``, or of
the same name with box IoU ≥ ``dup_iou`` (annotators often drew the same thing twice under new ids) count once.

Example:
    >>> import orjson, tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> obj = lambda i, n, x: {"object_id": i, "name": n, "x": x, "y": 10, "w": 20, "h": 30}
    >>> rels = {"image_id": 7, "relationships": [
    ...     {"relationship_id": 1, "predicate": "ON", "subject": obj(1, "cup", 0), "object": obj(2, "table", 50)}]}
    >>> _ = (d / "rel.json").write_bytes(orjson.dumps(rels))
    >>> rec = next(mine(relationships=d / "rel.json"))
    >>> rec.question, rec.answer, [s.phrase for s in rec.chain], rec.chain[1].boxes[0]
    ('What is the cup on?', 'table', ['cup', 'table'], Box(x1=50.0, y1=10.0, x2=70.0, y2=40.0))
    >>> rec.status.value, rec.checks[0].reason
    ('rejected', 'image_size_unknown: VG image 7 (no images directory given)')
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from virl_data.core import boxconv, boxes
from virl_data.core.errors import CorpusReadError, VirlError
from virl_data.core.types import (
    Box,
    ImageRef,
    Provenance,
    RationaleRecord,
    RationaleStep,
    record_id,
)
from virl_data.miners._common import check_limit, image_side, mining_outcome, size_from_files
from virl_data.miners._kinds import expect

SOURCE = "vg"
MINER = "vg@1"
DUP_IOU = 0.7
IMAGE_SUBDIRS = ("", "VG_100K", "VG_100K_2", "images")

COLOURS: dict[str, str] = {
    c: c for c in ("white", "black", "gray", "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown",
                   "silver", "gold", "tan", "beige")
} | {"grey": "gray"}
"""Attribute word → colour answer (synonyms folded)."""

PEOPLE = frozenset({"man", "woman", "men", "women", "person", "people", "boy", "girl", "child", "kid", "guy", "lady",
                    "player", "skier", "surfer", "skateboarder"})
"""Names never asked about by colour: VG's "white"/"black" on a person describes skin, not a colour to ground."""

# Words ending in "s" that are not third-person verbs, so "What is the X <word> ...?" is the right form.
_NOT_VERBS = frozenset({"across", "towards", "as", "is", "was", "besides", "versus", "plus", "its", "his", "this",
                        "upwards", "downwards", "outwards", "always"})


@dataclass(frozen=True, slots=True)
class Mention:
    """One appearance of an object: in a relationship or in the attributes list."""

    object_id: str
    name: str
    box: Box
    merged: tuple[str, ...] = ()
    colours: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Relation:
    """A parsed relationship; ``error`` is set (and the rest may be empty) when it cannot be used."""

    rel_id: str
    predicate: str
    subject: Mention | None
    object: Mention | None
    error: str | None = None


# --- reading ---------------------------------------------------------------------------------------------------------
def _load_images(path: Path, what: str) -> list[dict[str, Any]]:
    """A VG json file → its list of per-image entries (a lone per-image object is wrapped)."""
    try:
        data = orjson.loads(Path(path).read_bytes())
    except (OSError, orjson.JSONDecodeError) as e:
        raise CorpusReadError(f"cannot read VG {what} file {path}: {e}") from None
    data = [data] if isinstance(data, dict) else data
    expect(data, path, role=f"VG {what}", expected=[f"Visual Genome {what}"],
           hint="are the relationships and attributes files swapped?")
    if not isinstance(data, list):
        raise CorpusReadError(f"VG {what} file {path} must hold a list of images, got {type(data).__name__}")
    for i, entry in enumerate(data):
        if not isinstance(entry, dict) or "image_id" not in entry or not isinstance(entry.get(what), list):
            raise CorpusReadError(f"VG {what} file {path}: entry {i} lacks image_id or a {what!r} list")
    return data


def _name(obj: dict[str, Any]) -> str:
    """``name`` (str) or the first of ``names`` (list), lower-cased with whitespace collapsed; "" when absent."""
    raw = obj.get("name")
    if raw is None and isinstance(obj.get("names"), list) and obj["names"]:
        raw = obj["names"][0]
    return " ".join(str(raw).lower().split()) if isinstance(raw, str) else ""


def parse_object(obj: Any) -> Mention | str:
    """A VG object dict → ``Mention``, or a rejection reason (``malformed_relationship`` / ``bad_box``)."""
    if not isinstance(obj, dict) or obj.get("object_id") is None:
        return "malformed_relationship: object without object_id"
    oid, name = str(obj["object_id"]), _name(obj)
    if not name:
        return f"malformed_relationship: object {oid} has no name"
    try:
        box = boxconv.to_box("coco_xywh", [obj[k] for k in ("x", "y", "w", "h")])
    except (KeyError, TypeError, VirlError):
        return f"bad_box: object {oid} has no numeric x, y, w, h"
    if not boxes.is_valid(boxes.as_array([box]))[0]:
        return f"bad_box: object {oid} box {box.as_tuple()} is empty"
    attributes, merged_ids = obj.get("attributes") or [], obj.get("merged_object_ids") or []
    if not isinstance(attributes, list) or not isinstance(merged_ids, list):
        return f"malformed_relationship: object {oid} has attributes or merged_object_ids that are not lists"
    words = {" ".join(str(a).lower().split()) for a in attributes if isinstance(a, str)}
    merged = tuple(str(m) for m in merged_ids)
    return Mention(oid, name, box, merged, frozenset(COLOURS[w] for w in words if w in COLOURS))


def parse_relation(rel: Any, index: int) -> Relation:
    """A VG relationship dict → ``Relation`` (predicate lower-cased); ``index`` names it when it has no id."""
    rel = rel if isinstance(rel, dict) else {}
    rel_id = str(rel["relationship_id"]) if rel.get("relationship_id") is not None else f"#{index}"
    predicate = " ".join(str(rel.get("predicate") or "").lower().split())
    subj, obj = parse_object(rel.get("subject")), parse_object(rel.get("object"))
    error = next((e for e in (subj, obj) if isinstance(e, str)), None)
    if error is None and not predicate:
        error = "malformed_relationship: empty predicate"
    if error is not None:
        return Relation(rel_id, predicate, None, None, error)
    return Relation(rel_id, predicate, subj, obj)  # type: ignore[arg-type]


# --- the image graph: distinct objects -------------------------------------------------------------------------------
class Graph:
    """An image's mentions grouped into distinct objects (union-find over ids, merged ids, same-name duplicates)."""

    def __init__(self, mentions: list[Mention], dup_iou: float = DUP_IOU) -> None:
        self._parent: dict[str, str] = {}
        for m in mentions:
            for other in m.merged:
                self._union(m.object_id, other)
        self._union_duplicates(mentions, dup_iou)
        self.names: dict[str, set[str]] = {}
        self.colours: dict[str, set[str]] = {}
        for m in mentions:
            root = self.find(m.object_id)
            self.names.setdefault(m.name, set()).add(root)
            self.colours.setdefault(root, set()).update(m.colours)

    def find(self, oid: str) -> str:
        while self._parent.get(oid, oid) != oid:
            oid = self._parent[oid]
        return oid

    def _union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self._parent[max(ra, rb)] = min(ra, rb)

    def _union_duplicates(self, mentions: list[Mention], dup_iou: float) -> None:
        if len(mentions) < 2:
            return
        ious = boxes.iou_matrix(*(boxes.as_array([m.box for m in mentions]),) * 2)
        names = np.array([m.name for m in mentions], dtype=object)
        for i, j in zip(*np.nonzero((ious >= dup_iou) & (names[:, None] == names[None, :]))):
            if i < j:
                self._union(mentions[i].object_id, mentions[j].object_id)

    def count(self, name: str) -> int:
        """How many distinct objects carry ``name``."""
        return len(self.names.get(name, ()))


# --- wording ---------------------------------------------------------------------------------------------------------
def is_plural(name: str) -> bool:
    """Heuristic: the last word ends in "s" but not "ss"/"us"/"is" ("shoes", "pants" yes; "bus", "glass" no)."""
    last = name.split()[-1] if name else ""
    return last.endswith("s") and not last.endswith(("ss", "us", "is"))


def _verb_base(word: str) -> str | None:
    """The base form of a third-person verb ("wears" → "wear", "has" → "have", "carries" → "carry"), else None."""
    if word == "has":
        return "have"
    if len(word) < 3 or not word.endswith("s") or word in _NOT_VERBS or word.endswith(("ss", "us", "ous")):
        return None
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("sses", "shes", "ches", "xes", "zes", "oes")):
        return word[:-2]
    return word[:-1]


def relation_clause(subject: str, predicate: str) -> tuple[str, str]:
    """``(question, clause)`` wordings: "What does the man wear?" / "the man wears"; "What is the cup on?" / "the
    cup is on". A leading "is"/"are" of the predicate is folded into the copula."""
    words = predicate.split()
    if words[0] in ("is", "are") and len(words) > 1:
        words = words[1:]
    be, do = ("are", "do") if is_plural(subject) else ("is", "does")
    base, rest = _verb_base(words[0]), " ".join(words[1:])
    if base is not None:
        verb = " ".join(filter(None, (base, rest)))
        clause_verb = verb if be == "are" else " ".join(words)
        return f"What {do} the {subject} {verb}?", f"the {subject} {clause_verb}"
    pred = " ".join(words)
    return f"What {be} the {subject} {pred}?", f"the {subject} {be} {pred}"


# --- records ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Draft:
    template: str
    question: str = ""
    answer: str = ""
    chain: tuple[RationaleStep, ...] = ()
    reasons: tuple[str, ...] = ()


def _step(mentions: list[Mention], role: str) -> RationaleStep:
    ordered = sorted(mentions, key=lambda m: (m.box.x1, m.box.y1))
    return RationaleStep(boxes=tuple(m.box for m in ordered), phrase=ordered[0].name, role=role,
                         source_ref=",".join(m.object_id for m in ordered))


def _drafts(rel: Relation, graph: Graph, by_key: dict[tuple[str, str], dict[str, list[Mention]]]) -> list[_Draft]:
    """The records one usable relationship asks, each with its rejection reasons (if any)."""
    subj, obj = rel.subject, rel.object
    assert subj is not None and obj is not None
    s_root, o_root = graph.find(subj.object_id), graph.find(obj.object_id)
    objects = by_key[(s_root, rel.predicate)]  # object root → its mentions, same subject and predicate
    # The relationship's own object, then one mention of each other object of the same name.
    same = [obj] + [ms[0] for root, ms in objects.items() if root != o_root and any(m.name == obj.name for m in ms)]
    common: list[str] = []
    if graph.count(subj.name) > 1:
        common.append(f"ambiguous_referent: {subj.name} ({graph.count(subj.name)} objects)")
    if s_root == o_root:
        common.append(f"self_relation: {subj.name} {rel.predicate} itself")
    question, clause = relation_clause(subj.name, rel.predicate)
    names = sorted({m.name for ms in objects.values() for m in ms})
    reasons = list(common)
    if len(names) > 1:
        reasons.append(f"ambiguous_answer: '{subj.name} {rel.predicate}' has {len(names)} answers ({', '.join(names)})")
    context = _step([subj], "context")
    out = [_Draft("relation_object", question, obj.name, (context, _step(same, "target")), tuple(reasons))]
    colours = graph.colours.get(o_root, set())
    if colours and obj.name not in PEOPLE:
        reasons = list(common)
        if len(same) > 1:
            reasons.append(f"ambiguous_referent: {obj.name} that {clause} ({len(same)} objects)")
        if len(colours) > 1:
            reasons.append(f"ambiguous_answer: {obj.name} has {len(colours)} colours ({', '.join(sorted(colours))})")
        be = "are" if is_plural(obj.name) else "is"
        out.append(_Draft("relation_color", f"What colour {be} the {obj.name} that {clause}?", min(colours),
                          (context, _step([obj], "target")), tuple(reasons)))
    return out


def _answer_leak(d: _Draft) -> str | None:
    words = set(d.question.lower().rstrip("?").split())
    return f"answer_in_question: {d.answer!r}" if d.answer and set(d.answer.split()) <= words else None


SizedImage = tuple[ImageRef, str | None]  # the image and, when its size is unknown, why


def read_image_data(path: Path) -> dict[str, ImageRef]:
    """VG's ``image_data.json`` → ``ImageRef`` by image id: the size without opening the image.

    Entries are ``{image_id (VG 1.2) | id (VG 1.0), width, height, url, coco_id, flickr_id}``. The path is
    ``<folder>/<id>.jpg`` when the url's folder is one of VG's image folders (``VG_100K``, ``VG_100K_2``), as the
    files sit there, else ``<id>.jpg``. Entries without a positive integer size are left out (their images fall back
    to the files). Raises ``CorpusReadError`` for an unreadable file or one that is not a list of objects.

    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "image_data.json"
    >>> _ = f.write_text('[{"image_id": 1, "width": 800, "height": 600, '
    ...                  '"url": "https://cs.stanford.edu/people/rak248/VG_100K_2/1.jpg"}]')
    >>> read_image_data(f)["1"]
    ImageRef(path='VG_100K_2/1.jpg', width=800, height=600, sha1=None)
    """
    try:
        data = orjson.loads(Path(path).read_bytes())
    except (OSError, orjson.JSONDecodeError) as e:
        raise CorpusReadError(f"cannot read VG image data file {path}: {e}") from None
    if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
        raise CorpusReadError(f"VG image data file {path} must hold a list of image objects")
    refs: dict[str, ImageRef] = {}
    for entry in data:
        image_id, w, h = entry.get("image_id", entry.get("id")), entry.get("width"), entry.get("height")
        if image_id is None or type(w) is not int or type(h) is not int or not (image_side(w) and image_side(h)):
            continue
        url = entry.get("url")
        folder = url.rsplit("/", 2)[-2] if isinstance(url, str) and url.count("/") >= 2 else ""
        name = f"{image_id}.jpg"
        refs[str(image_id)] = ImageRef(f"{folder}/{name}" if folder in IMAGE_SUBDIRS[1:3] else name, w, h)
    return refs


def _image_ref(image_id: str, images: Path | None, cache: dict[str, SizedImage],
               sizes: dict[str, ImageRef] | None = None) -> SizedImage:
    """The image's ``ImageRef`` (from ``sizes``, VG's ``image_data.json``, else from the image file) and, when its
    size cannot be found, an ``image_size_unknown`` reason."""
    if image_id in cache:
        return cache[image_id]
    if sizes and image_id in sizes:
        cache[image_id] = (sizes[image_id], None)
        return cache[image_id]
    default = ImageRef(path=f"{image_id}.jpg", width=0, height=0)
    if images is None:
        found = (default, f"image_size_unknown: VG image {image_id} (no images directory given)")
    else:
        found = (default, f"image_size_unknown: VG image {image_id}: no {image_id}.jpg under {images}")
        name = f"{image_id}.jpg"
        found = size_from_files(images, (f"{sub}/{name}" if sub else name for sub in IMAGE_SUBDIRS)) or found
    cache[image_id] = found
    return found


def _record(image_id: str, rel_id: str, d: _Draft, image: ImageRef, size_reason: str | None) -> RationaleRecord:
    reasons = [*d.reasons, *filter(None, (_answer_leak(d), size_reason))]
    return RationaleRecord(
        id=record_id(SOURCE, image_id, rel_id, d.template),
        image=image,
        question=d.question,
        answer=d.answer,
        chain=d.chain,
        provenance=Provenance(source=SOURCE, source_split=None, miner=MINER, native_ids=(
            ("image_id", image_id), ("relationship_id", rel_id), ("template", d.template))),
        answer_type="color" if d.template == "relation_color" else "object",
        question_type=d.template,
        **mining_outcome(reasons),
    )


def mine_image(entry: dict[str, Any], objects: list[Any], image: ImageRef, size_reason: str | None,
               dup_iou: float = DUP_IOU) -> Iterator[RationaleRecord]:
    """The records of one image: its relationships entry and its attributes objects (possibly empty)."""
    image_id = str(entry["image_id"])
    rels = [parse_relation(r, i) for i, r in enumerate(entry["relationships"])]
    mentions = [m for m in map(parse_object, objects) if isinstance(m, Mention)]
    mentions += [m for r in rels for m in (r.subject, r.object) if m is not None]
    graph = Graph(mentions, dup_iou)
    by_key: dict[tuple[str, str], dict[str, list[Mention]]] = {}
    for r in rels:
        if r.subject is not None and r.object is not None:
            key = (graph.find(r.subject.object_id), r.predicate)
            by_key.setdefault(key, {}).setdefault(graph.find(r.object.object_id), []).append(r.object)
    asked: dict[str, str] = {}
    for r in rels:
        drafts = [_Draft("relation_object", reasons=(r.error,))] if r.error else _drafts(r, graph, by_key)
        for d in drafts:
            if d.question and asked.setdefault(d.question, r.rel_id) != r.rel_id:
                d = _Draft(d.template, d.question, d.answer, d.chain,
                           (*d.reasons, f"duplicate_question: asked already for relationship {asked[d.question]}"))
            yield _record(image_id, r.rel_id, d, image, size_reason)


def mine(
    *,
    relationships: Path,
    attributes: Path | None = None,
    image_data: Path | None = None,
    images: Path | None = None,
    limit: int | None = None,
    dup_iou: float = DUP_IOU,
) -> Iterator[RationaleRecord]:
    """Stream relationship records from VG ``relationships`` (+ ``attributes`` for colours and the object list).

    ``image_data``: VG's ``image_data.json``, the image sizes (``read_image_data``): with it a corpus needs no image
    files. ``images``: the VG image root (``<id>.jpg`` directly or under ``VG_100K``/``VG_100K_2``), read for the
    size of an image ``image_data`` lacks. ``limit`` caps the records yielded. Raises ``CorpusReadError`` for
    unreadable files.
    """
    check_limit(limit)
    sizes = read_image_data(image_data) if image_data is not None else None
    rel_entries = _load_images(relationships, "relationships")
    objects: dict[str, list[Any]] = {}
    if attributes is not None:
        for entry in _load_images(attributes, "attributes"):
            objects.setdefault(str(entry["image_id"]), []).extend(entry["attributes"])
    cache: dict[str, SizedImage] = {}
    n = 0
    for entry in rel_entries:
        image_id = str(entry["image_id"])
        image, size_reason = _image_ref(image_id, images, cache, sizes)
        for rec in mine_image(entry, objects.get(image_id, []), image, size_reason, dup_iou):
            if limit is not None and n >= limit:
                return
            n += 1
            yield rec


__all__ = ["COLOURS", "MINER", "SOURCE", "Graph", "Mention", "Relation", "is_plural", "mine", "mine_image",
           "parse_object", "parse_relation", "read_image_data", "relation_clause"]
