"""Benchmark the corpus path: generate, write, read and verify N demo records (default 100k).

    python benchmarks/bench_corpus.py [--n 100000] [--images]

Prints records/s for each stage and the process's peak resident memory after each stage. Without ``--images`` the
shapes world yields records only (no PNGs rendered) and the image-file check is skipped; with ``--images`` scenes are
rendered to a temporary folder and verified on disk too.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from virl_data.core.schema import records_to_frame
from virl_data.curation import checks
from virl_data.miners.shapes import generate
from virl_data.storage import corpus


def peak_rss_mib() -> float:
    # ru_maxrss is KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--images", action="store_true", help="render PNGs and verify the image files too")
    args = parser.parse_args(argv)

    rows: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        image_dir = tmp_path / "images" if args.images else None

        t0 = time.perf_counter()
        records = list(generate(args.n, seed=0, image_dir=image_dir))
        rows.append(("generate (records" + (" + PNGs)" if args.images else " only)"), time.perf_counter() - t0, peak_rss_mib()))

        t0 = time.perf_counter()
        df = records_to_frame(records)
        rows.append(("records → frame", time.perf_counter() - t0, peak_rss_mib()))
        del records

        path = tmp_path / "corpus.parquet"
        t0 = time.perf_counter()
        corpus.write(df, path, image_root=image_dir)
        rows.append(("write parquet", time.perf_counter() - t0, peak_rss_mib()))
        size_mib = path.stat().st_size / 2**20

        t0 = time.perf_counter()
        df = corpus.read(path)
        rows.append(("read parquet (+ schema checks)", time.perf_counter() - t0, peak_rss_mib()))

        t0 = time.perf_counter()
        verified = checks.verify(df, checks.CheckConfig(), image_root=image_dir)
        rows.append(("verify" + (" (with image files)" if args.images else " (no image files)"), time.perf_counter() - t0, peak_rss_mib()))
        accepted = int((verified["status"] == "accepted").sum())

    table = Table(title=f"corpus benchmark: {args.n:,} shapes records, parquet {size_mib:.1f} MiB, {accepted:,} accepted")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    table.add_column("records/s", justify="right")
    table.add_column("peak RSS MiB", justify="right")
    for stage, secs, rss in rows:
        table.add_row(stage, f"{secs:.2f}", f"{args.n / secs:,.0f}", f"{rss:,.0f}")
    Console().print(table)


if __name__ == "__main__":
    sys.exit(main())
