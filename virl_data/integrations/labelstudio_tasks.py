"""Records ↔ Label Studio tasks, and annotations → reviews, without a server: templates, the task layout, the rules
that turn what a person did into a ``Review``. ``virl_data.integrations.labelstudio`` does the talking. One record =
one task:

=================  ===================================================================================================
task field         value
=================  ===================================================================================================
``image``          ``/data/local-files/?d=<path under the document root>`` (local-files storage) or
                   ``<image_url_prefix>/<record.image.path>``
``question``       the question; ``answer`` the record's effective answer (``merge.effective``)
``chain_text``     the pushed chain in words: ``1. small square | 2. large circle (2 boxes)``
``virl_id``        the record id (how ``pull`` finds the record)
``virl_pushed``    JSON of the pushed chain and answer (what ``pull`` diffs against)
prediction         ``review_chain`` only: one rectangle per box, labelled with its 1-based step number, region id
                   ``s<step>b<box>``, percent coordinates from ``boxconv.box_to_labelstudio_value``; the step
                   phrase as a per-region ``phrase`` text; for a box answer (``answer_type="box"``) the answer's
                   box as an ``answer_box`` rectangle labelled ``answer``, region id ``answer``
=================  ===================================================================================================

Templates (``annotation_templates/<name>.xml``): ``review_chain`` (the chain pre-drawn, verdict accept / reject /
fix, corrected answer, note), ``draw_chain`` (draw the chain from scratch) and ``review_queue`` (``review_chain``
plus, for a record of the review queue, ``$queue_text`` saying why it is queued and the policy's crops as a second,
read-only ``policy`` layer: regions ``p<k>`` labelled ``crop <k+1>`` in the same prediction). Both use the control names
``chain`` (numbered ``RectangleLabels``), ``phrase`` (per-region text), ``verdict``, ``answer``, ``note``.

Pull: per task, each submitted annotation (skipped ones are ignored) becomes at most one review, by the
annotation's author (their email) at its ``updated_at`` time:

- verdict ``reject`` → ``reject`` (the boxes are not read);
- boxes moved, deleted, added or renumbered, or a corrected answer that differs → ``fix`` with the corrected chain
  and/or answer, whatever the verdict (``accept`` on an edited chain accepts the edit);
- a box answer: an ``answer_box`` rectangle (moved, or drawn on a ``draw_chain`` task) is the corrected answer,
  written as the canonical box string (``virl_data.core.boxanswer``) unless an answer was also typed (the typed one
  wins);
- verdict ``accept`` with nothing changed → ``accept`` (a person vouched for the record: status becomes reviewed);
- no verdict and nothing changed → no review; verdict ``fix`` with nothing changed → listed in ``report.invalid``.

A task nobody annotated gives no review, so push → pull is the identity. Boxes outside the image, an empty chain,
rotated or unnumbered boxes, unknown verdicts and a task whose ``virl_pushed`` cannot be read are listed in
``report.invalid`` (``merge_reviews`` checks the corrected boxes against the image). Boxes sharing a step number
form one step, steps ordered by number; a step's phrase, role and source ref come from the pushed step its first
box came from unless the annotation gives a phrase.

Example::

    task = record_to_task(record, "/data/local-files/?d=images/0.png", predictions=True)
    edits, invalid = task_edits(exported_task, record, emails={1: "ana@example.org"})
"""

from __future__ import annotations

import math
import os
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


from virl_data.core import boxconv
from virl_data.core.boxanswer import BOX, format_box, parse_box
from virl_data.core.errors import BoxConventionError, ConfigError, VirlError
from virl_data.review.merge import VERDICTS, ReviewEdit, effective, pushed_from_json, pushed_to_json
from virl_data.core.types import Box, RationaleRecord, RationaleStep, Review

TOOL = "labelstudio"
TEMPLATES = ("review_chain", "draw_chain", "review_queue")
TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "annotation_templates"
IMAGE, CHAIN, PHRASE, VERDICT, ANSWER, NOTE = "image", "chain", "phrase", "verdict", "answer", "note"
ANSWER_BOX, ANSWER_REGION = "answer_box", "answer"
POLICY = "policy"  # review_queue: the policy's crops, read-only regions labelled "crop <k>"; pull never reads them
MODEL_VERSION = "virl-mined"
SNAP_PX = 1e-6  # a pulled box this close to its pushed region is that box (undoes the percent round trip's noise)


class LabelStudioError(VirlError):
    """Label Studio missing, unreachable or refusing the key; a project that does not fit; an unreadable annotation."""


# --- templates -------------------------------------------------------------------------------------------------------
def template_path(template: str | os.PathLike[str]) -> Path:
    """A template name (``review_chain``, ``draw_chain``) → ``annotation_templates/<name>.xml``; a path ending in
    ``.xml`` is taken as is (a custom template using the same control names)."""
    if str(template).endswith(".xml"):
        path = Path(template)
    elif template in TEMPLATES:
        path = TEMPLATE_DIR / f"{template}.xml"
    else:
        raise ConfigError(f"unknown Label Studio template {str(template)!r}; use one of {', '.join(TEMPLATES)}")
    if not path.is_file():
        raise ConfigError(f"Label Studio template not found: {path} (templates ship with a source checkout)")
    return path


def load_template(template: str | os.PathLike[str]) -> str:
    """The XML of a template; checks it has numbered ``chain`` rectangles on an ``image``."""
    xml = template_path(template).read_text(encoding="utf-8")
    template_steps(xml)
    return xml


def template_steps(xml: str) -> int:
    """How many steps a template can number: its ``chain`` labels must be ``1, 2, ..., N``; returns N."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise ConfigError(f"Label Studio template is not valid XML: {exc}") from None
    chain = root.find(f".//RectangleLabels[@name='{CHAIN}']")
    if chain is None or chain.get("toName") != IMAGE:
        raise ConfigError(f'Label Studio template lacks <RectangleLabels name="{CHAIN}" toName="{IMAGE}">')
    labels = [label.get("value") for label in chain.iter("Label")]
    if not labels or labels != [str(i + 1) for i in range(len(labels))]:
        raise ConfigError(f"Label Studio template: the {CHAIN!r} labels must be the step numbers 1..N, got {labels}")
    return len(labels)


def same_config(a: str, b: str) -> bool:
    """Whether two labeling configs are the same XML (comments and whitespace between tags ignored)."""
    try:
        return ET.canonicalize(a, strip_text=True) == ET.canonicalize(b, strip_text=True)
    except ET.ParseError:
        return False


def template_name(template: str | os.PathLike[str]) -> str:
    """``review_chain`` for ``review_chain`` or ``.../review_chain.xml``."""
    return Path(str(template)).stem


# --- chain ↔ annotation results --------------------------------------------------------------------------------------
def region_id(step: int, box: int) -> str:
    """The id of a pushed region: ``s<step>b<box>`` (0-based)."""
    return f"s{step}b{box}"


def chain_text(chain: Sequence[RationaleStep]) -> str:
    """The chain in words for the task page, e.g. ``1. small square | 2. large circle (2 boxes)``."""
    parts = []
    for j, step in enumerate(chain):
        extra = f" ({len(step.boxes)} boxes)" if len(step.boxes) != 1 else ""
        parts.append(f"{j + 1}. {step.phrase or '(no phrase)'}{extra}")
    return " | ".join(parts) or "(empty chain)"


def chain_to_results(chain: Sequence[RationaleStep], width: float, height: float) -> list[dict[str, Any]]:
    """A chain → Label Studio result items: per box a ``chain`` rectangle labelled ``str(step + 1)`` and, when the
    step has a phrase, a ``phrase`` text on the same region id.

    E.g. step 0 with ``Box(20, 20, 80, 60)`` on a 200x100 image → ``{"id": "s0b0", "from_name": "chain",
    "type": "rectanglelabels", "value": {"x": 10.0, "y": 20.0, "width": 30.0, "height": 40.0, "rotation": 0,
    "rectanglelabels": ["1"]}, ...}``.
    """
    results = []
    for j, step in enumerate(chain):
        for k, box in enumerate(step.boxes):
            value = {**boxconv.box_to_labelstudio_value(box, width=width, height=height), "rotation": 0}
            common = {"id": region_id(j, k), "to_name": IMAGE, "original_width": width, "original_height": height,
                      "image_rotation": 0}
            results.append({**common, "from_name": CHAIN, "type": "rectanglelabels",
                            "value": {**value, "rectanglelabels": [str(j + 1)]}})
            if step.phrase:
                results.append({**common, "from_name": PHRASE, "type": "textarea",
                                "value": {**value, "text": [step.phrase]}})
    return results


def answer_to_results(answer: str, answer_type: str | None, width: float, height: float) -> list[dict[str, Any]]:
    """A box answer → one ``answer_box`` rectangle labelled ``answer`` (region id ``answer``); [] for other answers."""
    box = parse_box(answer) if answer_type == BOX else None
    if box is None:
        return []
    value = {**boxconv.box_to_labelstudio_value(box, width=width, height=height), "rotation": 0}
    return [{"id": ANSWER_REGION, "from_name": ANSWER_BOX, "to_name": IMAGE, "type": "rectanglelabels",
             "original_width": width, "original_height": height, "image_rotation": 0,
             "value": {**value, "rectanglelabels": [ANSWER_REGION]}}]


def results_to_answer_box(
    results: Sequence[Mapping[str, Any]], width: float, height: float, pushed_answer: str
) -> str | None:
    """The ``answer_box`` rectangle of an annotation as an answer string (``format_box``), None without one; a box
    within ``SNAP_PX`` of the pushed answer box is that box. Two rectangles are ``LabelStudioError``."""
    items = [r for r in results if r.get("from_name") == ANSWER_BOX and r.get("type") == "rectanglelabels"]
    if not items:
        return None
    if len(items) > 1:
        raise LabelStudioError(f"two_answer_boxes: {len(items)} answer_box rectangles; a box answer is one box")
    box = boxconv.labelstudio_value_to_box(items[0].get("value") or {}, width=width, height=height)
    return format_box(_snap(box, parse_box(pushed_answer)))


def policy_results(crops: Sequence[Box], width: float, height: float) -> list[dict[str, Any]]:
    """A policy's crops → read-only ``policy`` rectangles ``p<k>`` labelled ``crop <k+1>`` (``review_queue``)."""
    results = []
    for k, box in enumerate(crops):
        value = {**boxconv.box_to_labelstudio_value(box, width=width, height=height), "rotation": 0}
        results.append({"id": f"p{k}", "from_name": POLICY, "to_name": IMAGE, "type": "rectanglelabels",
                        "original_width": width, "original_height": height, "image_rotation": 0, "readonly": True,
                        "value": {**value, "rectanglelabels": [f"crop {k + 1}"]}})
    return results


def queue_text(entry: Any) -> str:
    """Why a record is queued, in words: ``#1 illusion 1.00 (unlisted_object 0.75) · policy answered "red"``."""
    others = ", ".join(f"{r} {v:.2f}" for r, v in entry.scores.items() if r != entry.reason)
    said = f' · policy answered "{entry.policy_answer}"' if entry.policy_answer is not None else ""
    return f"#{entry.rank} {entry.reason} {entry.score:.2f}" + (f" ({others})" if others else "") + said


def _text(item: Mapping[str, Any]) -> str:
    text = (item.get("value") or {}).get("text") or []
    return " ".join(str(t) for t in ([text] if isinstance(text, str) else text)).strip()


def _step_number(item: Mapping[str, Any]) -> int:
    labels = (item.get("value") or {}).get("rectanglelabels") or []
    if len(labels) == 1 and str(labels[0]).isdigit() and int(labels[0]) >= 1:
        return int(labels[0])
    raise LabelStudioError(f"unnumbered_region: region {item.get('id')} is labelled {labels}, not one step number")


def _snap(box: Box, pushed: Box | None) -> Box:
    if pushed is not None and all(abs(a - b) <= SNAP_PX for a, b in zip(box.as_tuple(), pushed.as_tuple())):
        return pushed
    return box


def results_to_chain(
    results: Sequence[Mapping[str, Any]], width: float, height: float, pushed: Sequence[RationaleStep] = ()
) -> tuple[RationaleStep, ...]:
    """Annotation result items → a chain (see the module docstring): ``chain`` rectangles grouped by step number,
    steps ordered by number, boxes within a step in pushed order then drawn order.

    Raises ``LabelStudioError`` (unnumbered region) or ``BoxConventionError`` (rotated or malformed rectangle).
    """
    origin = {region_id(j, k): (j, k) for j, s in enumerate(pushed) for k in range(len(s.boxes))}
    phrases = {r.get("id"): _text(r) for r in results if r.get("from_name") == PHRASE}
    groups: dict[int, list[tuple[tuple[float, float], str, Box]]] = {}
    for i, item in enumerate(results):
        if item.get("from_name") != CHAIN or item.get("type") != "rectanglelabels":
            continue
        rid = str(item.get("id"))
        box = boxconv.labelstudio_value_to_box(item.get("value") or {}, width=width, height=height)
        jk = origin.get(rid)
        box = _snap(box, pushed[jk[0]].boxes[jk[1]] if jk else None)
        key = (float(jk[0]), float(jk[1])) if jk else (math.inf, float(i))
        groups.setdefault(_step_number(item), []).append((key, rid, box))
    chain = []
    for number in sorted(groups):
        members = sorted(groups[number], key=lambda m: m[0])
        jk = origin.get(members[0][1])
        base = pushed[jk[0]] if jk else RationaleStep(boxes=())
        phrase = next((phrases[rid] for _, rid, _ in members if phrases.get(rid)), base.phrase)
        boxes = tuple(b for _, _, b in members)
        chain.append(RationaleStep(boxes=boxes, phrase=phrase, role=base.role, source_ref=base.source_ref))
    return tuple(chain)


def annotation_review(
    annotation: Mapping[str, Any],
    pushed_chain: Sequence[RationaleStep],
    pushed_answer: str,
    *,
    width: float,
    height: float,
    reviewer: str,
    at: str,
    answer_type: str | None = None,
) -> Review | None:
    """One annotation → the person's review, or None when it says nothing (rules in the module docstring).
    ``answer_type="box"`` reads an ``answer_box`` rectangle as the answer.

    Raises ``LabelStudioError`` / ``BoxConventionError`` for an annotation that cannot be read.
    """
    results = annotation.get("result") or []
    by_name: dict[str, list[Mapping[str, Any]]] = {}
    for item in results:
        by_name.setdefault(str(item.get("from_name")), []).append(item)
    verdicts = [c for item in by_name.get(VERDICT, []) for c in (item.get("value") or {}).get("choices") or []]
    if len(verdicts) > 1 or any(v not in VERDICTS for v in verdicts):
        raise LabelStudioError(f"unknown_verdict: {verdicts}; choose one of {', '.join(VERDICTS)}")
    verdict = verdicts[0] if verdicts else None
    note = " ".join(_text(i) for i in by_name.get(NOTE, [])).strip() or None
    make = dict(tool=TOOL, reviewer=reviewer, at=at, note=note)
    if verdict == "reject":
        return Review(verdict="reject", **make)
    chain = results_to_chain(results, width, height, pushed_chain)
    answer = " ".join(_text(i) for i in by_name.get(ANSWER, [])).strip()
    if not answer and answer_type == BOX:
        answer = results_to_answer_box(results, width, height, pushed_answer) or ""
    new_chain = None if chain == tuple(pushed_chain) else chain
    new_answer = answer if answer and answer != pushed_answer else None
    if new_chain is not None or new_answer is not None:
        return Review(verdict="fix", chain=new_chain, answer=new_answer, **make)
    if verdict == "accept":
        return Review(verdict="accept", **make)
    if verdict == "fix":
        raise LabelStudioError(
            "fix_without_change: verdict fix, but the boxes, their order and the answer are unchanged"
        )
    return None


# --- records → tasks -------------------------------------------------------------------------------------------------
def local_files_url(path: Path, document_root: Path) -> str:
    """The URL Label Studio serves a local file under: ``/data/local-files/?d=<path relative to the root>``."""
    rel = path.resolve().relative_to(document_root.resolve())
    return f"/data/local-files/?d={urllib.parse.quote(rel.as_posix())}"


def record_to_task(
    record: RationaleRecord, image_url: str, *, predictions: bool, entry: Any | None = None
) -> dict[str, Any]:
    """One record → a Label Studio task (fields in the module docstring); ``predictions`` pre-draws its chain. A
    queue ``entry`` (``virl_data.review.queue.QueueEntry``) adds ``queue_text`` and the policy's crops as read-only
    ``policy`` regions to the same prediction."""
    eff = effective(record)
    data = {"image": image_url, "question": record.question, "answer": eff.answer, "chain_text": chain_text(eff.chain),
            "virl_id": record.id, "virl_pushed": pushed_to_json(eff.chain, eff.answer)}
    if entry is not None:
        data["queue_text"] = queue_text(entry)
    task: dict[str, Any] = {"data": data}
    w, h = record.image.width, record.image.height
    results = chain_to_results(eff.chain, w, h) + answer_to_results(eff.answer, record.answer_type, w, h)
    if entry is not None and results:
        results += policy_results(entry.crops, w, h)
    if predictions and results:
        task["predictions"] = [{"model_version": MODEL_VERSION, "result": results}]
    return task


# --- exported tasks → reviews ----------------------------------------------------------------------------------------
def _annotations(task: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The task's submitted annotations (skipped ones left out), oldest first."""
    anns = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    return sorted(anns, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), a.get("id") or 0))


def _reviewer(annotation: Mapping[str, Any], emails: Mapping[int, str]) -> str:
    who = annotation.get("completed_by")
    if isinstance(who, Mapping):
        return str(who.get("email") or f"user-{who.get('id')}")
    return emails.get(who, f"user-{who}")  # type: ignore[arg-type]


def task_edits(
    task: Mapping[str, Any], record: RationaleRecord, emails: Mapping[int, str]
) -> tuple[list[ReviewEdit], list[tuple[str, str]]]:
    """The reviews one task holds for ``record`` and the annotations that could not be read ``(id, reason)``."""
    try:
        chain, answer = pushed_from_json(task["data"]["virl_pushed"])
    except (KeyError, TypeError, ValueError):  # someone edited the task's data: nothing to diff against
        return [], [(record.id, f"unreadable_task: task {task.get('id')} has no readable virl_pushed")]
    edits, invalid = [], []
    for ann in _annotations(task):
        at = str(ann.get("updated_at") or ann.get("created_at") or "")
        try:
            review = annotation_review(ann, chain, answer, width=record.image.width, height=record.image.height,
                                       reviewer=_reviewer(ann, emails), at=at, answer_type=record.answer_type)
        except (LabelStudioError, BoxConventionError) as exc:
            invalid.append((record.id, f"annotation {ann.get('id')}: {exc}"))
            continue
        if review is not None:
            edits.append(ReviewEdit(record.id, review))
    return edits, invalid


__all__ = [
    "MODEL_VERSION",
    "TEMPLATES",
    "TEMPLATE_DIR",
    "LabelStudioError",
    "annotation_review",
    "answer_to_results",
    "chain_text",
    "chain_to_results",
    "load_template",
    "local_files_url",
    "policy_results",
    "pushed_from_json",
    "pushed_to_json",
    "queue_text",
    "record_to_task",
    "region_id",
    "results_to_answer_box",
    "results_to_chain",
    "same_config",
    "task_edits",
    "template_name",
    "template_path",
    "template_steps",
]
