"""Benchmark the GQA miner against a plain ``orjson.loads`` of the same files, side by side in one run.

    python benchmarks/bench_mining.py [--questions 130000] [--per-image 10] [--repeat 3] [--shuffle]

Builds a GQA-shaped input the size of GQA's balanced val split (~130k questions, ~10 per image) from the real
sample in ``../shared/data/gqa/train_domiknows_sample``: each new image copies a sample scene graph under new
object ids with boxes jittered by a few pixels, and its questions copy that image's sample questions with the ids
in their programs and annotations rewritten. Both files go to a temporary folder, then each stage runs ``--repeat``
times, each time in a fresh process (so peak RSS is the stage's own), and the best time is kept:

- ``orjson.loads``: read, parse and free the questions and scene-graph files, nothing else, Python's defaults;
- ``orjson.loads, gc off``: the same with ``gc.disable()``, the fairest floor: the miner parses that
  way (see ``gqa.mine``), and with the collector on most of the parse time is the collector traversing the
  half-built result again and again;
- ``gqa.mine``: the miner end to end (read, parse, walk every program, build every record), records not kept.

Goal: mining ≤ 2x the raw parse; both ratios are printed. ``--shuffle`` writes the questions in random order
instead of grouped by image (the worst case for the miner's per-image cache).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import gc
import multiprocessing
import os
import random
import re
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

SHARED_DATA = Path(os.environ.get("VIRL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
SAMPLE = SHARED_DATA / "gqa" / "train_domiknows_sample"
_DIGITS = re.compile(rb"\d+")


def peak_rss_mib() -> float:
    # ru_maxrss is KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- input -----------------------------------------------------------------------------------------------------------
def _jitter(obj: dict[str, Any], rng: random.Random, width: int, height: int) -> None:
    obj["x"] = min(max(obj["x"] + rng.randint(-3, 3), 0), width - 1)
    obj["y"] = min(max(obj["y"] + rng.randint(-3, 3), 0), height - 1)
    obj["w"] = max(obj["w"] + rng.randint(-3, 3), 1)
    obj["h"] = max(obj["h"] + rng.randint(-3, 3), 1)


def _new_graph(graph: dict[str, Any], ids: dict[str, str], rng: random.Random) -> dict[str, Any]:
    out = {k: v for k, v in graph.items() if k != "objects"}
    out["objects"] = {}
    for oid, obj in graph["objects"].items():
        new = {k: v for k, v in obj.items() if not k.startswith("_")}  # drop the sample's non-GQA key
        new["relations"] = [{**r, "object": ids.get(r["object"], r["object"])} for r in obj.get("relations", [])]
        _jitter(new, rng, graph["width"], graph["height"])
        out["objects"][ids[oid]] = new
    return out


def _new_question(q: dict[str, Any], image_id: str, ids: dict[bytes, bytes]) -> dict[str, Any]:
    out = dict(q, imageId=image_id)
    for key in ("semantic", "semanticStr", "annotations"):
        text = _DIGITS.sub(lambda m: ids.get(m.group(), m.group()), orjson.dumps(q[key]))
        out[key] = orjson.loads(text)
    return out


def build_input(folder: Path, n_questions: int, per_image: int, shuffle: bool, seed: int = 0) -> tuple[Path, Path]:
    """Write ``questions.json`` and ``scene_graphs.json`` shaped like GQA's, grown from the real sample."""
    graphs = orjson.loads((SAMPLE / "train_sceneGraphs_sample.json").read_bytes())
    questions = orjson.loads((SAMPLE / "train_balanced_questions_sample.json").read_bytes())
    by_image: dict[str, list[dict[str, Any]]] = {}
    for q in questions.values():
        by_image.setdefault(q["imageId"], []).append(q)
    templates = sorted(by_image)
    rng = random.Random(seed)
    out_graphs: dict[str, Any] = {}
    out_questions: list[tuple[str, dict[str, Any]]] = []
    for k in range((n_questions + per_image - 1) // per_image):
        template = templates[k % len(templates)]
        image_id = str(5_000_000 + k)
        ids = {oid: str(10_000_000 * (k + 1) + int(oid) % 10_000_000) for oid in graphs[template]["objects"]}
        out_graphs[image_id] = _new_graph(graphs[template], ids, rng)
        bids = {a.encode(): b.encode() for a, b in ids.items()}
        for j in range(min(per_image, n_questions - len(out_questions))):
            q = by_image[template][j % len(by_image[template])]
            out_questions.append((f"{k:07d}{j:03d}", _new_question(q, image_id, bids)))
    if shuffle:
        rng.shuffle(out_questions)
    qpath, gpath = folder / "val_balanced_questions.json", folder / "val_sceneGraphs.json"
    qpath.write_bytes(orjson.dumps(dict(out_questions)))
    gpath.write_bytes(orjson.dumps(out_graphs))
    return qpath, gpath


# --- stages (each in a fresh process) --------------------------------------------------------------------------------
def stage_parse(qpath: Path, gpath: Path, collector: bool) -> tuple[float, float]:
    if not collector:
        gc.disable()
    t0 = time.perf_counter()
    qs = orjson.loads(qpath.read_bytes())
    gs = orjson.loads(gpath.read_bytes())
    rss = peak_rss_mib()
    del qs, gs  # the miner frees its parse too, within its time
    return time.perf_counter() - t0, rss


def stage_mine(qpath: Path, gpath: Path) -> tuple[float, float, int, dict[str, int]]:
    from virl_data.miners import gqa

    t0 = time.perf_counter()
    statuses: Counter[str] = Counter()
    for rec in gqa.mine(questions=qpath, scene_graphs=gpath):
        statuses[rec.status.value] += 1
    secs = time.perf_counter() - t0
    return secs, peak_rss_mib(), sum(statuses.values()), dict(statuses)


def _best(pool: cf.Executor, fn: Any, repeat: int, *args: Any) -> tuple[Any, ...]:
    runs = [pool.submit(fn, *args).result() for _ in range(repeat)]
    return min(runs, key=lambda r: r[0])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=130_000)
    parser.add_argument("--per-image", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--shuffle", action="store_true", help="questions in random order, not grouped by image")
    args = parser.parse_args(argv)
    if not SAMPLE.is_dir():
        sys.exit(f"the GQA sample is not at {SAMPLE} (set VIRL_SHARED_DATA to the shared/data folder)")

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        qpath, gpath = build_input(Path(tmp), args.questions, args.per_image, args.shuffle)
        build_secs = time.perf_counter() - t0
        mib = (qpath.stat().st_size + gpath.stat().st_size) / 2**20
        ctx = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx, max_tasks_per_child=1) as pool:
            parse = _best(pool, stage_parse, args.repeat, qpath, gpath, True)
            parse_nogc = _best(pool, stage_parse, args.repeat, qpath, gpath, False)
            mined = _best(pool, stage_mine, args.repeat, qpath, gpath)

    n = mined[2]
    table = Table(title=f"GQA mining benchmark: {n:,} questions on {-(-args.questions // args.per_image):,} images, "
                        f"{mib:.0f} MiB of JSON ({'shuffled' if args.shuffle else 'grouped by image'}; "
                        f"input built in {build_secs:.1f} s; best of {args.repeat})")
    for col in ("stage", "seconds", "records/s", "÷ orjson.loads", "÷ gc off", "peak RSS MiB"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    rows = [("orjson.loads", parse), ("orjson.loads, gc off", parse_nogc), ("gqa.mine (parse + records)", mined)]
    for stage, (secs, rss, *_) in rows:
        table.add_row(stage, f"{secs:.2f}", f"{n / secs:,.0f}", f"{secs / parse[0]:.2f}", f"{secs / parse_nogc[0]:.2f}",
                      f"{rss:,.0f}")
    console = Console(width=max(Console().width, 110))
    console.print(table)
    console.print(f"statuses: {mined[3]}")


if __name__ == "__main__":
    sys.exit(main())
