"""The Ray engine's driver memory while it plans GQA blocks, against the input size: streamed planner vs whole files.

    python benchmarks/bench_plan.py [--questions 100000 300000] [--per-image 10] [--block-size 4096]
                                    [--json docs/assets/bench_plan.json]

For each size, the GQA-shaped files of ``bench_mining.py`` are built, then each way of planning runs in a fresh
process (``spawn``) and reports its wall time and peak resident memory (``VmHWM``), and the same after importing
what it needs (the baseline), so the difference is what the planning itself holds:

- ``whole files``: both files parsed whole (``gqa._load``), what the block planner did before it streamed and what
  the local engine's miner does;
- ``streamed``: ``blocks.plan_blocks("gqa", ...)`` to its last block, each block dropped as it comes: both files
  scanned in chunks for where their entries lie (``jsonspans``), the questions cut into byte ranges, the scene
  graphs' texts written to a SQLite index in a temporary ``workdir``; a scene graphs file of
  ``blocks.APART_BYTES`` or more is indexed by a second process, whose peak is reported too (``RUSAGE_CHILDREN``).

Flat means the streamed planner's growth over its baseline stays the same when the input grows. Also mines one
block from the index in the planning process and checks it against the whole-file miner's records for those
questions, so the figures are for a planner that gives the right blocks. Figures go to ``--json`` and are printed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]  # this checkout
from bench_engines import peak_mb  # noqa: E402
from bench_mining import build_input  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _plan(way: str, questions: str, graphs: str, block_size: int, workdir: str) -> dict[str, Any]:
    """One way of planning in this (fresh) process."""
    import polars as pl

    from virl_data.core.schema import records_to_frame
    from virl_data.engines import blocks
    from virl_data.miners import gqa

    base = peak_mb()
    t0 = time.perf_counter()
    if way == "whole files":
        qs, sg, _ = gqa._load(Path(questions), Path(graphs))
        n_items, n_blocks = len(qs), (len(qs) + block_size - 1) // block_size
    else:
        n_items = n_blocks = 0
        first = None
        for b in blocks.plan_blocks("gqa", {"questions": questions, "scene_graphs": graphs}, block_size=block_size,
                                    workdir=workdir):
            n_items, n_blocks, first = n_items + b.n_items, n_blocks + 1, first or b
    seconds, peak = time.perf_counter() - t0, peak_mb()
    import resource

    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the scene graphs indexer, if one ran
    out = {"way": way, "seconds": seconds, "peak_mb": peak, "baseline_mb": base, "growth_mb": peak - base,
           "items": n_items, "blocks": n_blocks, "second_process_peak_mb": child or None}
    if way == "streamed":  # the first block, mined from the index, is the whole-file miner's first records
        mined = blocks.mine_block(first.payload).drop(blocks.SEQ)
        whole = records_to_frame(gqa.mine(questions=Path(questions), scene_graphs=Path(graphs), limit=first.n_items))
        out["first_block_matches"] = mined.equals(whole)
        out["index_mb"] = sum(p.stat().st_size for p in Path(workdir).glob("*.sqlite")) / 2**20
        assert isinstance(mined, pl.DataFrame)
    return out


def run(way: str, questions: Path, graphs: Path, block_size: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="virl-bench-plan-") as workdir, \
            ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:  # not daemonic: it may
        return pool.submit(_plan, way, str(questions), str(graphs), block_size, workdir).result()  # start one


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, nargs="+", default=[100_000, 300_000])
    parser.add_argument("--per-image", type=int, default=10)
    parser.add_argument("--block-size", type=int, default=4096)
    parser.add_argument("--json", type=Path, default=REPO / "docs" / "assets" / "bench_plan.json")
    args = parser.parse_args(argv)
    rows = []
    for n in args.questions:
        with tempfile.TemporaryDirectory(prefix="virl-bench-plan-in-") as folder:
            t0 = time.perf_counter()
            questions, graphs = build_input(Path(folder), n, args.per_image, shuffle=False)
            built = time.perf_counter() - t0
            size_mb = (questions.stat().st_size + graphs.stat().st_size) / 2**20
            for way in ("whole files", "streamed"):
                r = run(way, questions, graphs, args.block_size) | {"questions": n, "input_mb": size_mb,
                                                                     "input_built_s": built}
                rows.append(r)
                print(f"{n:>9,} questions ({size_mb:,.0f} MB)  {way:<12} {r['seconds']:6.1f} s  peak "
                      f"{r['peak_mb']:7,.0f} MB  (baseline {r['baseline_mb']:5,.0f}, growth {r['growth_mb']:7,.0f})"
                      + (f"  index {r['index_mb']:,.0f} MB, second process peak "
                         f"{r['second_process_peak_mb'] or 0:,.0f} MB, first block matches: {r['first_block_matches']}"
                         if way == "streamed" else ""), flush=True)
    result = {"rows": rows, "per_image": args.per_image, "block_size": args.block_size, "cpus": os.cpu_count(),
              "load_average": os.getloadavg()}
    streamed = [r for r in rows if r["way"] == "streamed"]
    if len(streamed) >= 2:
        lo, hi = streamed[0], streamed[-1]
        result["streamed_growth_ratio"] = hi["growth_mb"] / max(lo["growth_mb"], 1.0)
        result["input_ratio"] = hi["questions"] / lo["questions"]
        print(f"input x{result['input_ratio']:.1f}: streamed planner's growth x{result['streamed_growth_ratio']:.2f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.json.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, args.json)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
