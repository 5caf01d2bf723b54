"""The same GQA pipeline on the local engine and on Ray Data with 1 and 2 workers, side by side in one run.

    python benchmarks/bench_engines.py [--questions 130000] [--per-image 10] [--out docs/bench_engines.md]

Input: the GQA-shaped files of ``bench_mining.py`` (``--questions`` questions, ~``--per-image`` per image, grown
from the real sample), plus one generated JPEG per image at the scene graph's size, so the checks open every
image (``image_readable``) and dedup hashes every file. Pipeline: mine (gqa) → verify (all checks) → dedup →
split, corpora written (``.parquet`` files locally, Parquet shard folders under Ray); no export.

Each engine runs in a fresh process (Ray: a fresh local instance started with ``num_cpus`` = 1 or 2, the block
planning on the driver as in real use); the wall time covers the whole run, Ray's start-up excluded (it is printed
apart, with the workers' warm-up: a running cluster has its workers up). Goal of issue 12: Ray 2 workers ≥ 1.6× Ray 1 worker, Ray 1 worker ≥ 0.7× the local engine; both ratios are
printed, with the load average, because a machine shared with other work moves them.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import logging
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]  # this checkout
from bench_mining import SAMPLE, build_input  # noqa: E402

STAGES = ("mine", "verify", "dedup", "split")


def make_images(graphs: Path, folder: Path, workers: int = 2) -> int:
    """One small-quality JPEG ``<imageId>.jpg`` per scene graph, of the graph's ``width x height``."""
    sizes = [(k, g["width"], g["height"]) for k, g in orjson.loads(graphs.read_bytes()).items()]
    folder.mkdir(parents=True, exist_ok=True)
    chunks = [sizes[i::workers] for i in range(workers)]
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(_write_images, chunks, [folder] * workers))
    return len(sizes)


def _write_images(sizes: list[tuple[str, int, int]], folder: Path) -> None:
    from PIL import Image

    for image_id, w, h in sizes:
        n = int(image_id)
        Image.new("RGB", (w, h), (n % 251, n // 251 % 251, 128)).save(folder / f"{image_id}.jpg", quality=60)


def _config(questions: Path, graphs: Path, images: Path) -> Any:
    from virl_data.engines.pipeline import pipeline_from_dict

    return pipeline_from_dict({
        "name": "bench", "source": {"miner": "gqa", "images": str(images),
                                    "options": {"questions": str(questions), "scene_graphs": str(graphs)}},
        "dedup": True, "split": {"seed": 0},
    })


def run_engine(engine: str, cpus: int | None, questions: Path, graphs: Path, images: Path, out: Path,
               block_size: int) -> dict[str, Any]:
    """One engine end to end in this (fresh) process: total seconds, per-stage seconds, records."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    cfg = _config(questions, graphs, images)
    start_secs = 0.0
    if engine == "local":
        from virl_data.engines.pipeline import run_pipeline

        t0 = time.perf_counter()
        report = run_pipeline(cfg, out=out)
    else:
        import ray
        import ray.data

        def warm_up() -> None:  # nested: pickled by value, the workers cannot import this script
            import time

            import virl_data.engines.ray  # noqa: F401 - what every task of the run imports
            time.sleep(0.5)  # hold this worker so the next warm-up task starts another

        _warm = ray.remote(num_cpus=1)(warm_up)
        from virl_data.engines.ray import local_runtime_env, run_pipeline_ray

        t0 = time.perf_counter()
        ray.init(num_cpus=cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
                 runtime_env=local_runtime_env())
        # a running cluster has its workers and Ray Data's own actors (stats, autoscaling requests) up already
        ray.get([_warm.remote() for _ in range(cpus or 1)])
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        ray.data.range(4, override_num_blocks=2).map_batches(lambda b: b).materialize()
        start_secs = time.perf_counter() - t0
        t0 = time.perf_counter()
        report = run_pipeline_ray(cfg, out=out, block_size=block_size)
        ray.shutdown()
    secs = time.perf_counter() - t0
    return {"seconds": secs, "start": start_secs, "records": report.stage("mine").n_out,
            "stages": {s.name: s.seconds for s in report.stages},
            "counts": [(s.name, s.n_in, s.n_out, s.removed) for s in report.stages]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=130_000)
    parser.add_argument("--per-image", type=int, default=10)
    parser.add_argument("--block-size", type=int, default=4096)
    parser.add_argument("--out", type=Path, default=None, help="also write the table as Markdown here")
    args = parser.parse_args(argv)
    if not SAMPLE.is_dir():
        sys.exit(f"the GQA sample is not at {SAMPLE} (set VIRL_SHARED_DATA to the shared/data folder)")
    load_before = os.getloadavg()
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        qpath, gpath = build_input(tmp, args.questions, args.per_image, shuffle=False)
        n_images = make_images(gpath, tmp / "images")
        build_secs = time.perf_counter() - t0
        ctx = multiprocessing.get_context("spawn")
        for name, engine, cpus in (("local", "local", None), ("Ray, 1 worker", "ray", 1), ("Ray, 2 workers", "ray", 2)):
            with cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx, max_tasks_per_child=1) as pool:
                runs[name] = pool.submit(run_engine, engine, cpus, qpath, gpath, tmp / "images",
                                         tmp / name.replace(" ", "_").replace(",", ""), args.block_size).result()
            print(f"{name}: {runs[name]['seconds']:.1f} s", flush=True)
    load_after = os.getloadavg()
    counts = {name: r["counts"] for name, r in runs.items()}
    assert len({orjson.dumps(c) for c in counts.values()}) == 1, f"the engines disagree: {counts}"
    render(runs, args, n_images, build_secs, load_before, load_after)


def render(runs: dict[str, dict[str, Any]], args: argparse.Namespace, n_images: int, build_secs: float,
           load_before: tuple[float, ...], load_after: tuple[float, ...]) -> None:
    n = runs["local"]["records"]
    title = (f"pipeline engines: {n:,} GQA questions on {n_images:,} generated images (mine → verify → dedup → "
             f"split); input built in {build_secs:.0f} s; {os.cpu_count()} CPUs, load average {load_before[0]:.1f} "
             f"→ {load_after[0]:.1f}")
    cols = ("engine", "seconds", "records/s", *(f"{s} s" for s in STAGES), "Ray start s", "speed ÷ local", "speed ÷ Ray 1")
    rows = []
    for name, r in runs.items():
        rows.append((name, f"{r['seconds']:.1f}", f"{n / r['seconds']:,.0f}",
                     *(f"{r['stages'].get(s, 0):.1f}" for s in STAGES),
                     f"{r['start']:.1f}" if r["start"] else "-",
                     f"{runs['local']['seconds'] / r['seconds']:.2f}",
                     f"{runs['Ray, 1 worker']['seconds'] / r['seconds']:.2f}"))
    table = Table(title=title)
    for c in cols:
        table.add_column(c, justify="left" if c == "engine" else "right")
    for row in rows:
        table.add_row(*row)
    Console(width=max(Console().width, 130)).print(table)
    print("speed ratios (÷ columns) are throughput relative to that engine: > 1 = faster")
    if args.out is not None:
        lines = [f"**{title}**", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
