"""Benchmark the FiftyOne round trip: push N verified demo records (default 10k), pull them back untouched, then
pull after a reviewer touched 1% of the samples. Target: push 10k records in under 30 s on 2 cores.

    FIFTYONE_DO_NOT_TRACK=true python benchmarks/bench_fiftyone.py [--n 10000] [--batch-sizes 500,2000]

Images are never rendered nor opened: each sample's filepath and ``metadata`` width/height come from the record.
Every push goes to a fresh, temporary dataset that is deleted at the end. The first row is the one-off cost of
importing FiftyOne and starting its database (not part of any push).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid

from rich.console import Console
from rich.table import Table

from virl_data.core.schema import frame_to_records, records_to_frame
from virl_data.curation import checks
from virl_data.miners.shapes import generate

TARGET_S = 30.0


def _touch(name: str, records: list, every: int) -> int:
    """Tag every ``every``-th sample ``reject`` and move the first box of the one after it; returns edits made."""
    import fiftyone as fo

    by_id = {s.virl_id: s for s in fo.load_dataset(name).select_fields(["virl_id", "chain"])}
    edits = 0
    for i in range(0, len(records) - 1, every):
        tagged, moved = by_id[records[i].id], by_id[records[i + 1].id]
        tagged.tags.append("reject")
        tagged.save()
        box = moved.chain.detections[0]
        x, y, w, h = box.bounding_box
        box.bounding_box = [x + 0.01 if x + w + 0.01 <= 1 else x - 0.01, y, w, h]
        moved.save()
        edits += 2
    return edits


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--batch-sizes", default="500,2000", help="push batch sizes to compare, comma separated")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.batch_sizes.split(",") if s.strip()]

    records = frame_to_records(checks.verify(records_to_frame(generate(args.n, seed=0)), checks.CheckConfig()))
    rows: list[tuple[str, float, str]] = []
    t0 = time.perf_counter()
    import fiftyone as fo

    from virl_data.integrations import fiftyone as vf

    fo.Dataset().delete()
    rows.append(("import fiftyone + start its database (once)", time.perf_counter() - t0, ""))
    names = []
    try:
        for size in sizes:
            name = f"virl-bench-{uuid.uuid4().hex[:8]}"
            names.append(name)
            result = vf.push(records, name, image_root="/nonexistent/images", batch_size=size)
            verdict = "PASS" if args.n < 10_000 or result.seconds < TARGET_S else "FAIL"
            rows.append((f"push, batch {size}", result.seconds, f"target < {TARGET_S:.0f} s at 10k: {verdict}"))
        name = names[-1]
        t0 = time.perf_counter()
        merged, report = vf.pull(name, records, reviewer="bench")
        rows.append(("pull, nothing edited", time.perf_counter() - t0, f"identity: {merged == records}"))
        edits = _touch(name, records, every=100)
        t0 = time.perf_counter()
        merged, report = vf.pull(name, records, reviewer="bench")
        rows.append((f"pull, {edits} samples edited", time.perf_counter() - t0, report.summary()))
        t0 = time.perf_counter()
        _, again = vf.pull(name, merged, reviewer="bench")
        rows.append(("pull again (idempotent)", time.perf_counter() - t0, again.summary()))
    finally:
        for name in names:
            if fo.dataset_exists(name):
                fo.delete_dataset(name)

    table = Table(title=f"FiftyOne benchmark: {args.n:,} shapes records, {os.cpu_count()} CPU cores")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    table.add_column("records/s", justify="right")
    table.add_column("note")
    for stage, secs, note in rows:
        table.add_row(stage, f"{secs:.2f}", f"{args.n / secs:,.0f}", note)
    Console().print(table)


if __name__ == "__main__":
    sys.exit(main())
