"""What the review-tool commands (``cli_fiftyone``, ``cli_labelstudio``) share: writing a pulled corpus with its
merge report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from virl_data.storage.paths import refuse_clashes


def report_table(report: Any, out: Path) -> Table:
    """A ``review.MergeReport`` as a table: applied, unchanged, unknown ids, invalid corrections and records whose
    sample/task was deleted in the tool (the first three of each)."""
    table = Table(title=f"pulled reviews → {out}")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_column("detail")
    table.add_row("applied", str(report.applied), "reviews appended")
    table.add_row("unchanged", str(report.unchanged), "already in the corpus")
    table.add_row("unknown ids", str(len(report.unknown_ids)), ", ".join(report.unknown_ids[:3]))
    shown = "; ".join(f"{rid}: {why}" for rid, why in report.invalid[:3])
    table.add_row("invalid", str(len(report.invalid)), shown + (" ..." if len(report.invalid) > 3 else ""))
    deleted = report.deleted
    shown = ", ".join(deleted[:3]) + (" ..." if len(deleted) > 3 else "")
    table.add_row("deleted in review", str(len(deleted)), f"recorded as reject reviews; {shown}" if deleted else "")
    return table


def write_pulled(merged: Any, merge_report: Any, src: Path, out: Path, report: Path | None, console: Console) -> None:
    """Write the merged corpus to ``out`` (keeping ``src``'s image root), the report as JSON to ``report`` when
    given, and print the report table."""
    from virl_data.storage import corpus

    refuse_clashes(inputs={"--corpus": src}, outputs={"--out": out, "--report": report})  # also before the pull
    corpus.write(merged, out, image_root=corpus.declared_image_root(src))
    if report is not None:
        corpus.write_json(merge_report.to_dict(), report)
    console.print(report_table(merge_report, out))
