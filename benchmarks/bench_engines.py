"""The same GQA pipeline on the local engine and on Ray Data with 1 and 2 workers, side by side in one run.

    python benchmarks/bench_engines.py [--questions 130000] [--per-image 10] [--out docs/bench_engines.md]
                                       [--json docs/assets/bench_engines.json] [--workers 1,2]

Input: the GQA-shaped files of ``bench_mining.py`` (``--questions`` questions, ~``--per-image`` per image, grown
from the real sample), plus one generated JPEG per image at the scene graph's size, so the checks open every
image (``image_readable``) and dedup hashes every file. Pipeline: mine (gqa) → verify (all checks) → dedup →
split; the curated corpus written (the local engine also writes its mined and verified files, its default; the Ray
engine writes intermediates only when asked, its default); no export.

Each engine runs in a fresh process. Ray: a fresh local instance with ``num_cpus`` = the workers; its start-up
and the workers' warm-up are timed apart ("Ray start"), and so is the engine's fixed cost per run: the same
pipeline on 1,000 questions on the warm instance ("fixed cost"). Peak memory: the driver's peak RSS
(``VmHWM``), its RSS after the planning and after the write pass (Ray: ``config.engine.driver_rss_mb`` of the
run report), and the Ray workers' peak RSS summed over the instance's processes (sampled every 0.2 s; shared
object-store pages count in each process that maps them); CPU seconds of the driver and of the Ray instance's
processes, and the cores they kept busy on average (CPU s ÷ wall s: "1 worker" is one Ray task at a time, but each
task's polars / Arrow calls run on their own thread pools, so it can keep more than one core busy). Goals (issue 28): Ray 1 worker ≥ 0.8× the local engine,
Ray 2 workers ≥ 1.5× Ray 1 worker; both ratios are printed, with the load average, because a machine shared with
other work moves them. Figures go to ``--json``; ``--out`` renders the Markdown table from them.
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


class Sampler:
    """Peak summed RSS of the processes of one Ray instance (those whose environment names its raylet), sampled
    every ``interval`` seconds in a thread, and the CPU seconds they used meanwhile (``cpu_seconds``: per process, its
    last sampled user + system time minus its first; a process first seen after the first sample counts from 0)."""

    def __init__(self, interval: float = 0.2) -> None:
        import threading

        self.peak, self.interval, self.stop = 0, interval, threading.Event()
        self.cpu: dict[int, list[float]] = {}
        self.thread = threading.Thread(target=self.run, daemon=True)

    def raylet(self) -> str | None:
        import psutil

        kids = psutil.Process().children(recursive=True)
        return next((str(p.pid) for p in kids if p.name() == "raylet"), None)

    def run(self) -> None:
        import psutil

        marker, first = f"RAY_RAYLET_PID={self.raylet()}", True
        while True:
            total = 0
            for p in psutil.process_iter():
                try:
                    if marker in "\0".join(f"{k}={v}" for k, v in p.environ().items()):
                        total += p.memory_info().rss
                        t = p.cpu_times()
                        used = t.user + t.system
                        self.cpu.setdefault(p.pid, [used if first else 0.0, used])[1] = used
                except (psutil.Error, OSError):
                    continue
            self.peak, first = max(self.peak, total), False
            if self.stop.wait(self.interval):
                break

    @property
    def cpu_seconds(self) -> float:
        return sum(last - start for start, last in self.cpu.values())

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def peak_mb() -> float:
    """This process's peak resident memory, ``VmHWM``: not ``ru_maxrss``, which a spawned process carries over from
    its parent across exec (the bench's parent held the whole generated input: runs before this fix over-report)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def _cpu_s() -> float:
    """CPU seconds (user + system) this process has used."""
    import resource

    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def run_engine(engine: str, cpus: int | None, inputs: dict[str, tuple[Path, Path]], images: Path, out: Path,
               block_size: int) -> dict[str, Any]:
    """One engine end to end in this (fresh) process: total seconds, per-stage seconds, records, peak memory."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    questions, graphs = inputs["full"]
    cfg = _config(questions, graphs, images)
    result: dict[str, Any] = {"engine": engine, "workers": cpus, "start": 0.0, "fixed": 0.0}
    if engine == "local":
        from virl_data.engines.pipeline import run_pipeline

        t0, c0 = time.perf_counter(), _cpu_s()
        report = run_pipeline(cfg, out=out)
        result["seconds"], result["driver_cpu_s"] = time.perf_counter() - t0, _cpu_s() - c0
    else:
        import ray
        import ray.data

        def warm_up() -> None:  # nested: pickled by value, the workers cannot import this script
            import time

            import virl_data.engines.ray  # noqa: F401 - what every task of the run imports
            time.sleep(0.5)  # hold this worker so the next warm-up task starts another

        _warm = ray.remote(num_cpus=1)(warm_up)
        from virl_data.engines.ray import LOCAL_SYSTEM_CONFIG, local_runtime_env, run_pipeline_ray

        t0 = time.perf_counter()
        ray.init(num_cpus=cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
                 runtime_env=local_runtime_env(), _system_config=LOCAL_SYSTEM_CONFIG)
        # a running cluster has its workers and Ray Data's own actors (stats, autoscaling requests) up already
        ray.get([_warm.remote() for _ in range(cpus or 1)])
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        ray.data.range(4, override_num_blocks=2).map_batches(lambda b: b).materialize()
        result["start"] = time.perf_counter() - t0
        small = _config(*inputs["small"], images)
        run_pipeline_ray(small, out=out.with_name(out.name + "_small"), block_size=block_size)  # first-run imports
        t0 = time.perf_counter()
        run_pipeline_ray(small, out=out.with_name(out.name + "_small"), block_size=block_size)
        result["fixed"] = time.perf_counter() - t0
        with Sampler() as sampler:
            t0, c0 = time.perf_counter(), _cpu_s()
            report = run_pipeline_ray(cfg, out=out, block_size=block_size)
            result["seconds"], result["driver_cpu_s"] = time.perf_counter() - t0, _cpu_s() - c0
        result["workers_peak_mb"], result["workers_cpu_s"] = sampler.peak / 2**20, sampler.cpu_seconds
        result["timings"] = report.config["engine"]["timings"]
        result["driver_rss_mb"] = report.config["engine"].get("driver_rss_mb", {})
        ray.shutdown()
    result |= {"records": report.stage("mine").n_out, "driver_peak_mb": peak_mb(),
               "stages": {s.name: s.seconds for s in report.stages},
               "counts": [(s.name, s.n_in, s.n_out, s.removed) for s in report.stages]}
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=130_000)
    parser.add_argument("--per-image", type=int, default=10)
    parser.add_argument("--block-size", type=int, default=4096)
    parser.add_argument("--workers", default="1,2", help="Ray worker counts to run, comma-separated")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--out", type=Path, default=None, help="also write the table as Markdown here")
    parser.add_argument("--render", type=Path, default=None, help="only render --out from this JSON")
    args = parser.parse_args(argv)
    if args.render is not None:
        data = orjson.loads(args.render.read_bytes())
        return render(data, args.out)
    if not SAMPLE.is_dir():
        sys.exit(f"the GQA sample is not at {SAMPLE} (set VIRL_SHARED_DATA to the shared/data folder)")
    load_before = os.getloadavg()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        inputs = {"full": build_input(tmp, args.questions, args.per_image, shuffle=False)}
        (tmp / "small").mkdir()
        inputs["small"] = build_input(tmp / "small", 1000, args.per_image, shuffle=False)
        n_images = make_images(inputs["full"][1], tmp / "images")
        make_images(inputs["small"][1], tmp / "images")
        build_secs = time.perf_counter() - t0
        ctx = multiprocessing.get_context("spawn")
        configs = [("local", "local", None)] + [
            (f"Ray, {n} worker{'s' if n > 1 else ''}", "ray", n) for n in map(int, args.workers.split(","))]
        for name, engine, cpus in configs:
            with cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx, max_tasks_per_child=1) as pool:
                run = pool.submit(run_engine, engine, cpus, inputs, tmp / "images",
                                  tmp / name.replace(" ", "_").replace(",", ""), args.block_size).result()
            runs.append({"name": name, **run, "load": os.getloadavg()[0]})
            print(f"{name}: {run['seconds']:.1f} s (load {runs[-1]['load']:.1f})", flush=True)
    counts = {r["name"]: r.pop("counts") for r in runs}
    assert len({orjson.dumps(c) for c in counts.values()}) == 1, f"the engines disagree: {counts}"
    data = {"questions": args.questions, "records": runs[0]["records"], "images": n_images,
            "build_seconds": build_secs, "cpus": os.cpu_count(), "load_before": load_before[0],
            "load_after": os.getloadavg()[0], "block_size": args.block_size, "runs": runs}
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    render(data, args.out)


COLS = ("engine", "seconds", "records/s", "speed ÷ local", "speed ÷ Ray 1", "plan s", "stream s", "barrier s",
        "write s", "fixed cost s", "Ray start s", "driver peak MB", "driver MB after plan → write", "workers peak MB",
        "driver CPU s", "Ray CPU s", "cores busy", "load")


def rows(data: dict[str, Any]) -> list[tuple[str, ...]]:
    runs = {r["name"]: r for r in data["runs"]}
    local, ray1 = runs["local"]["seconds"], runs.get("Ray, 1 worker", {}).get("seconds")
    out = []
    for r in data["runs"]:
        t = r.get("timings", {})
        out.append((r["name"], f"{r['seconds']:.1f}", f"{data['records'] / r['seconds']:,.0f}",
                    f"{local / r['seconds']:.2f}", f"{ray1 / r['seconds']:.2f}" if ray1 else "-",
                    *(f"{t[k]:.1f}" if k in t else "-" for k in ("plan", "stream", "barrier", "write")),
                    f"{r['fixed']:.1f}" if r["fixed"] else "-", f"{r['start']:.1f}" if r["start"] else "-",
                    f"{r['driver_peak_mb']:,.0f}", _after(r.get("driver_rss_mb")),
                    f"{r['workers_peak_mb']:,.0f}" if "workers_peak_mb" in r else "-",
                    *_cpu(r), f"{r['load']:.1f}"))
    return out


def _cpu(r: dict[str, Any]) -> tuple[str, str, str]:
    """Driver CPU s, the Ray instance's CPU s, and the cores they kept busy on average (CPU s ÷ wall s)."""
    if "driver_cpu_s" not in r:  # runs before these columns
        return "-", "-", "-"
    ray_s = r.get("workers_cpu_s")
    busy = (r["driver_cpu_s"] + (ray_s or 0.0)) / r["seconds"]
    return f"{r['driver_cpu_s']:.1f}", "-" if ray_s is None else f"{ray_s:.1f}", f"{busy:.2f}"


def _after(rss: dict[str, float] | None) -> str:
    """The driver's resident memory after planning and after the write pass (the streaming part adds little)."""
    if not rss or rss.get("after_plan") is None:
        return "-"
    return f"{rss['after_plan']:,.0f} → {rss['after_write']:,.0f}"


def render(data: dict[str, Any], out: Path | None) -> None:
    title = (f"pipeline engines: {data['records']:,} GQA questions on {data['images']:,} generated images (mine → "
             f"verify → dedup → split); input built in {data['build_seconds']:.0f} s; {data['cpus']} CPUs, load "
             f"average {data['load_before']:.1f} → {data['load_after']:.1f}")
    table = Table(title=title)
    for c in COLS:
        table.add_column(c, justify="left" if c == "engine" else "right")
    for row in rows(data):
        table.add_row(*row)
    Console(width=max(Console().width, 160)).print(table)
    print("speed ratios (÷ columns) are throughput relative to that engine: > 1 = faster")
    if out is not None:
        lines = [f"**{title}**", "", "| " + " | ".join(COLS) + " |", "|" + "---|" * len(COLS)]
        lines += ["| " + " | ".join(row) + " |" for row in rows(data)]
        out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
