"""``virl-data queue`` and ``virl-data diff``: the data-centric loop's two ends.

    virl-data queue TRAJECTORIES.jsonl --corpus CORPUS [--out queue.jsonl] [--top N] [--reasons a,b] [--split val]
                    [--min-step N]
                    [--to fiftyone --dataset NAME [--overwrite] | --to labelstudio --project TITLE]
    virl-data diff BEFORE AFTER [--queue queue.jsonl] [--json diff.json]

``queue`` ranks the corpus records where a policy's logged episodes (``virl-train eval`` / ``train`` write
``trajectories.jsonl``) disagree with the chain (``virl_data.review.queue``) and can push the queue for review:
pull the reviews back with ``virl-data fiftyone pull`` / ``labelstudio pull`` as for any push. ``diff`` says what
the review changed. Both are wired into ``virl_data.cli``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from virl_data.cli.boundary import user_errors
from virl_data.core.errors import ConfigError, EmptyInputError
from virl_data.storage.paths import refuse_clashes

if TYPE_CHECKING:
    from virl_data.core.types import RationaleRecord
    from virl_data.review.queue import QueueEntry, QueueResult

console = Console()
TARGETS = ("fiftyone", "labelstudio")


def _reasons(text: str | None) -> list[str] | None:
    return [r.strip() for r in text.split(",") if r.strip()] if text else None


def _queue_table(result: QueueResult, records_by_id: Mapping[str, RationaleRecord], shown: int = 20) -> Table:
    table = Table(title=f"review queue: {len(result.entries)} records (of {result.n_records} in scope)")
    for col in ("rank", "id", "reason", "score", "episodes", "question"):
        table.add_column(col, justify="right" if col in ("rank", "score", "episodes") else "left")
    for e in result.entries[:shown]:
        question = records_by_id[e.record_id].question
        table.add_row(str(e.rank), e.record_id, e.reason, f"{e.score:.2f}", str(e.n_episodes), question[:60])
    return table


def _push(
    target: str, queued: Sequence[RationaleRecord], entries: Sequence[QueueEntry], src: Path, opts: Mapping[str, Any]
) -> None:
    """Push the queued records (in rank order) with their entries to FiftyOne or Label Studio; print where."""
    from virl_data.storage import corpus

    if target == "fiftyone":
        from virl_data.integrations import fiftyone as fo_int

        name = opts["dataset"] or f"virl-queue-{src.stem}"
        root = corpus.image_root(src, opts["image_root"])
        res = fo_int.push(queued, name, image_root=root, overwrite=opts["overwrite"], queue=entries,
                          info={"corpus": str(src.resolve()), "queue": True})
        console.print(f"pushed {res.samples} queued records → FiftyOne dataset {res.dataset!r} (saved view 'queue'); "
                      f"open: virl-data app --dataset {res.dataset}; pull: virl-data fiftyone pull {res.dataset} "
                      f"--corpus {src} --out OUT", soft_wrap=True)
        return
    from virl_data.integrations import labelstudio as ls

    if not opts["project"]:
        raise ConfigError("--to labelstudio needs --project TITLE")
    root = None if opts["image_url_prefix"] else corpus.image_root(src, opts["image_root"])
    res = ls.push(queued, opts["project"], template="review_queue", image_root=root,
                  document_root=opts["document_root"], image_url_prefix=opts["image_url_prefix"], url=opts["url"],
                  api_key=opts["api_key"], queue=entries)
    console.print(f"imported {res.imported} queued tasks into Label Studio project {res.project!r} (id "
                  f"{res.project_id}), {res.existing} already there, {len(res.skipped)} skipped; pull: virl-data "
                  f"labelstudio pull {res.project!r} --corpus {src} --out OUT", soft_wrap=True)


def queue_command(
    trajectories: Annotated[Path, typer.Argument(help="trajectories.jsonl of a virl-train eval (or train) run.")],
    src: Annotated[Path, typer.Option("--corpus", "-c", help="The corpus the policy was evaluated on.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the queue here as JSON lines.")] = None,
    top: Annotated[int | None, typer.Option(help="Keep the first N records.")] = None,
    reasons: Annotated[
        str | None,
        typer.Option(help="Comma-separated reasons to rank by: illusion, unlisted_object, wrong_answer_right_crops, "
                     "degenerate_chain (default: all)."),
    ] = None,
    split: Annotated[str | None, typer.Option(help="Only records of this split (default: every split).")] = None,
    min_step: Annotated[
        int | None, typer.Option(help="A training log: only episodes of optimizer steps >= N (eval lines are kept).")
    ] = None,
    to: Annotated[str | None, typer.Option("--to", help="Push the queue for review: fiftyone or labelstudio.")] = None,
    dataset: Annotated[str | None, typer.Option(help="FiftyOne dataset (default: virl-queue-<corpus stem>).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a FiftyOne dataset of that name.")] = False,
    project: Annotated[str | None, typer.Option(help="Label Studio project title (created when missing).")] = None,
    image_root: Annotated[Path | None, typer.Option(help="Folder the image paths are relative to.")] = None,
    document_root: Annotated[Path | None, typer.Option(help="Label Studio's local-files document root.")] = None,
    image_url_prefix: Annotated[str | None, typer.Option(help="Label Studio: images from URL/<path>.")] = None,
    url: Annotated[str | None, typer.Option("--url", help="Label Studio URL (default: $LABEL_STUDIO_URL).")] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", help="Label Studio token.", show_default=False)] = None,
) -> None:
    """Rank records by how much a policy's logged episodes disagree with their chains (illusion, unlisted object,
    wrong answer with right crops, degenerate chain); each with its reason and score. Optionally push them for
    review with the policy's crops drawn beside the chain."""
    from virl_data.review import queue as review_queue
    from virl_data.storage import corpus

    if to is not None and to not in TARGETS:
        raise ConfigError(f"--to must be one of {', '.join(TARGETS)}, got {to!r}")
    refuse_clashes(inputs={"TRAJECTORIES": trajectories, "--corpus": src}, outputs={"--out": out})
    records = corpus.read_records(src)
    if not records:
        raise EmptyInputError(f"--corpus {src} holds no records: nothing to queue")
    episodes = review_queue.read_episodes(trajectories, min_step=min_step)
    if not episodes:  # an empty queue would replace a previous one with nothing
        raise EmptyInputError(f"{trajectories} holds no episodes" + (f" of steps >= {min_step}" if min_step else "")
                              + ": nothing to rank")
    result = review_queue.rank(records, episodes, top=top,
                               reasons=_reasons(reasons), split=split)
    by_id = {r.id: r for r in records}
    console.print(_queue_table(result, by_id))
    counts = ", ".join(f"{r} {n}" for r, n in result.by_reason.items())
    console.print(f"{result.n_episodes} episodes read; by reason (whole queue): {counts}; "
                  f"episode ids not in the corpus: {len(result.unknown_ids)}", soft_wrap=True)
    if out is not None:
        review_queue.write_queue(result.entries, out)
        console.print(f"queue → {out}")
    if to is not None:
        queued = [by_id[e.record_id] for e in result.entries]
        opts = dict(dataset=dataset, overwrite=overwrite, project=project, image_root=image_root,
                    document_root=document_root, image_url_prefix=image_url_prefix, url=url, api_key=api_key)
        _push(to, queued, result.entries, src, opts)


def diff_command(
    before: Annotated[Path, typer.Argument(help="The corpus before the review.")],
    after: Annotated[Path, typer.Argument(help="The corpus after it (e.g. what fiftyone pull wrote).")],
    queue: Annotated[
        Path | None, typer.Option(help="The queue the review worked from: count changes by reason.")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the diff as JSON here.")] = None,
) -> None:
    """Records whose effective chain, answer or status changed between two corpora, with counts by field, by review
    verdict and (with --queue) by queue reason."""
    from virl_data.review import diff
    from virl_data.review import queue as review_queue
    from virl_data.storage import corpus

    refuse_clashes(inputs={"BEFORE": before, "AFTER": after, "--queue": queue}, outputs={"--json": json_out})
    reasons = {e.record_id: e.reason for e in review_queue.read_queue(queue)} if queue else None
    result = diff.diff_records(corpus.read_records(before), corpus.read_records(after), reasons=reasons)
    table = Table(title=f"{len(result.changed)} records changed ({result.unchanged} unchanged, "
                  f"{len(result.added)} added, {len(result.removed)} removed)")
    for col in ("id", "changed", "status", "verdict", "reason"):
        table.add_column(col)
    for c in result.changed[:30]:
        table.add_row(c.id, ", ".join(c.fields), " → ".join(c.status), c.verdict or "", c.reason or "")
    console.print(table)
    for title, counts in (("by field", result.by_field), ("by verdict", result.by_verdict),
                          ("by reason", result.by_reason)):
        if counts:
            console.print(f"{title}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if json_out is not None:
        corpus.write_json(result.to_dict(), json_out)


queue_command = user_errors(queue_command)
diff_command = user_errors(diff_command)

__all__ = ["diff_command", "queue_command"]
