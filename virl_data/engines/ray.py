"""The Ray engine: ``run_pipeline``'s stages as one streaming Ray Data pass. The only module that imports ray.

    virl-data run PIPELINE.yaml --engine ray [--address ADDR] [--num-cpus N] [--intermediate mined,verified]

Same YAML, same stage functions, same corpus; only the scheduling differs. Three passes, two of them over the data:

1. **stream** (one Ray Data ``map_batches`` chain, Arrow batches end to end): ``blocks.plan_blocks`` (on the driver)
   cuts the source into blocks (GQA's planner scans both files for where their entries lie: a block is a byte
   range of the questions file, and the scene graphs go to a SQLite index in
   ``OUT/corpus/.plan.<host>-<pid>-<hex>.tmp``, removed after the run, so the driver's memory is flat in the input
   size; on a cluster ``OUT`` and the input must be on storage every node reads, as ``OUT`` must for the shards);
   one task per block
   mines it (``blocks.mine_block``), runs ``checks.verify``, tags
   each record with the first filter that drops it and computes the dedup keys (``curate.dedup_keys``) and the
   split group key. Every step is row-local, so a block gives what the whole corpus would for its rows. The
   task writes its mined / verified shards when asked and returns a header row (its counts for the report) and
   the records left for curation with their key columns (kept in Ray's object store, not on the driver). A source
   whose blocks come out of ``_seq`` order, or a ``limit`` the planner cannot apply, puts a ``sort`` / ``limit``
   between mining and the rest.
2. **barrier** (one Ray task, on the key columns only, extracted from each block where it lies): dedup keeps the
   smallest ``_seq`` of each key (the local engine's "first in input order"); the split groups the kept records by
   image and places the groups with ``curate.assign_groups``. Result: the kept ``_seq`` values (sorted) and a split
   code each, in the object store.
3. **write**: one Ray task per block keeps its records by ``_seq`` (a binary search), sets the split and writes a
   curated shard.

Shards are named ``part-<first _seq, 20 digits>.parquet``, so name order is corpus order whatever the task order,
and a retried task rewrites the same file. Folders are written as ``OUT/corpus/.<name>.<host>-<pid>-<hex>.tmp`` and
swapped in when complete; a later run removes the temp folders of runs whose driver is gone (same host). The
local Ray instance this engine starts is watched by a small process that kills the instance's processes if the
driver dies without stopping it (``kill -9``), since Ray's agents and workers outlive it otherwise.

``report.json`` has the local engine's stages and counts, plus ``config.engine``: Ray address, dashboard URL, CPUs,
blocks, the passes' wall times (``timings``), the driver's resident memory after each (``driver_rss_mb``), and
which nodes processed blocks and wrote shards (``nodes``). The shapes demo world, the one miner without a planner,
renders and mines on the driver; the rest of the chain runs on the workers.

Example (starts a local Ray instance when none is up, and stops it after):
    >>> from virl_data.engines.ray import run_pipeline_ray        # doctest: +SKIP
    >>> report = run_pipeline_ray("pipelines/gqa.yaml", num_cpus=2)  # doctest: +SKIP
    >>> report.stage("verify").n_out                             # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import ray
import ray.data
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

import virl_data
from virl_data.engines import blocks
from virl_data.curation import checks
from virl_data.storage import corpus
from virl_data.curation import curate
from virl_data.engines.pipeline import (
    PASSED_STATUSES,
    PipelineConfig,
    RunReport,
    SplitConfig,
    StageReport,
    _export,
    _export_dir,
    _image_root,
    _mine as mine_whole,
    check_accounting,
    intermediate_corpora,
    load_pipeline,
)
from virl_data.core.errors import EmptyInputError, VirlError
from virl_data.engines.guard import clean_stale, start_watchdog, swap_in, temp_folder
from virl_data.core.schema import COLUMNS, SCHEMA_VERSION, polars_schema

SEQ = blocks.SEQ
STEPS = ("mine", "verify", "filter", "keys")
TALLY = "_tally"  # the stream's blocks start with one header row holding the block's tally (Arrow IPC bytes)
_TALLY = {"kind": pl.String, "key": pl.String, "reason_code": pl.String, "count": pl.Int64}
_KEYS = {SEQ: pl.UInt64, "_content": pl.String, "_question": pl.String, "_identity": pl.String, "_gkey": pl.String,
         "_source": pl.String}


# --- Arrow <-> polars on the workers ---------------------------------------------------------------------------------
def to_arrow(df: pl.DataFrame) -> pa.Table:
    """A polars frame as an Arrow table Ray can move (``large_string``, not polars' ``string_view``)."""
    return df.to_arrow(compat_level=pl.CompatLevel.oldest())


def from_arrow(table: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def write_shard(frame: pl.DataFrame, folder: str | Path, meta: dict[str, str]) -> str | None:
    """``frame`` (canonical columns) as ``folder/part-<first _seq>.parquet``; None when it has no rows."""
    if frame.height == 0:
        return None
    name = f"part-{int(frame.get_column(SEQ).min()):020d}.parquet"
    frame.select(COLUMNS).write_parquet(Path(folder) / name, metadata=meta, statistics=True)
    return name


def _rss_mb() -> float | None:
    """This process's resident memory now (MiB), from ``/proc`` (None elsewhere)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return None


def _node() -> str:
    return ray.get_runtime_context().get_node_id()


# --- pass 1: the fused per-block function ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """What ``process_batch`` does to a batch. ``check=None``: mine only (the pass before a sort or limit)."""

    images: str | None
    check: checks.CheckConfig | None = None
    filters: tuple[str, ...] = ()
    dedup: bool = False
    split: bool = False
    shards: dict[str, str] = dataclasses.field(default_factory=dict)  # intermediate corpus -> its temp folder
    meta: dict[str, str] = dataclasses.field(default_factory=dict)


def _tally(kind: str, key: str | None = None, count: int = 0, reason: str | None = None) -> dict[str, Any]:
    return {"kind": kind, "key": key, "reason_code": reason, "count": int(count)}


def _filter_tag(frame: pl.DataFrame, filters: Sequence[str]) -> pl.Series:
    """The index of the first filter expression that drops each record (null = kept). Filters are row-local, so
    this is what applying them one after the other (the local engine) removes."""
    tag = pl.lit(None, pl.Int32)
    for i, text in reversed(list(enumerate(filters))):
        tag = pl.when(~curate.filter_expr(text).fill_null(False)).then(pl.lit(i, pl.Int32)).otherwise(tag)
    return curate.with_helpers(frame.select(COLUMNS)).select(tag.alias("_tag")).collect().get_column("_tag")


def process_batch(batch: pa.Table, plan: Plan) -> pa.Table:
    """Mine (a ``payload`` batch) → write mined → verify → write verified → filter → dedup and split keys, on one
    batch. Returns a header row (``_tally``: the batch's counts for the report) and the records left for curation:
    canonical columns, ``_seq`` and the key columns (``_KEYS``)."""
    clock, seconds = time.perf_counter(), dict.fromkeys(STEPS, 0.0)

    def lap(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[step] += now - clock
        clock = now

    if "payload" in batch.column_names:
        frames = [blocks.mine_block(p, plan.images) for p in batch.column("payload").to_pylist()]
        mined = pl.concat(frames, how="vertical")
    else:
        mined = from_arrow(batch)
    if plan.check is None:
        return to_arrow(mined)
    if mined.height == 0:  # still a header row and every column, so all blocks share one schema
        mined = pl.DataFrame(schema=polars_schema()).with_columns(pl.lit(None, pl.UInt64).alias(SEQ))
    tally = [_tally("mined", count=mined.height), _tally("mined_rejected", count=(mined["status"] == "rejected").sum())]
    if "mined" in plan.shards:
        write_shard(mined, plan.shards["mined"], plan.meta)
    lap("mine")
    verified = checks.verify(mined.select(COLUMNS), plan.check, image_root=plan.images).with_columns(mined[SEQ])
    if "verified" in plan.shards:
        write_shard(verified, plan.shards["verified"], plan.meta)
    tally += [_tally("status", s, n) for s, n in verified.group_by("status").len().iter_rows()]
    tally += [_tally("reason", c, n, r) for c, r, n in checks.rejection_reasons(verified.select(COLUMNS)).iter_rows()]
    tally += [_tally("skipped", c, n, r) for c, (n, r) in checks.skipped_checks(verified.select(COLUMNS)).items()]
    frame = verified.filter(pl.col("status").is_in(PASSED_STATUSES))
    lap("verify")
    if plan.filters and frame.height:
        tag = _filter_tag(frame, plan.filters)
        tally += [_tally("filter", str(i), n) for i, n in tag.drop_nulls().value_counts().iter_rows()]
        frame = frame.filter(tag.is_null())
    lap("filter")
    keys = pl.DataFrame({SEQ: frame[SEQ]})
    if plan.dedup:
        keys = curate.dedup_keys(frame.select(COLUMNS), plan.images).select(*curate.DEDUP_KEYS, "_identity") \
            .with_columns(frame[SEQ])
    if plan.split:
        keys = keys.with_columns(frame.select(curate.group_key_expr("image").alias("_gkey"),
                                              pl.col("provenance").struct.field("source").alias("_source")))
    lap("keys")
    tally += [_tally("seconds", step, round(s * 1e6)) for step, s in seconds.items()]
    tally += [_tally("node", _node(), 1), *(_tally("shards", f"{name}:{_node()}", 1) for name in plan.shards)]
    header = pl.DataFrame({TALLY: [pl.DataFrame(tally, schema=_TALLY).write_ipc(None).getvalue()]})
    return to_arrow(pl.concat([header, frame.select(*COLUMNS, SEQ).hstack(keys.drop(SEQ))], how="diagonal"))


# --- pass 2: the barrier, on key columns -----------------------------------------------------------------------------
def keys_of(block: pa.Table) -> tuple[pa.Table, pl.DataFrame]:
    """A stream block's key columns (its records, no header) and its tally (the header row)."""
    frame = from_arrow(block)
    header = frame.get_column(TALLY).drop_nulls() if TALLY in frame.columns else pl.Series([], dtype=pl.Binary)
    tally = pl.concat([pl.read_ipc(b) for b in header]) if len(header) else pl.DataFrame(schema=_TALLY)
    keys = frame.filter(pl.col(SEQ).is_not_null()).select(c for c in _KEYS if c in frame.columns)
    return to_arrow(keys), tally


def barrier(dedup: bool, split: SplitConfig | None, n_blocks: int, *parts: Any) -> tuple[dict[str, Any], Any]:
    """The global steps over every block's ``keys_of`` (``parts`` = n_blocks key tables, then n_blocks tallies):
    summed tallies, dedup's keep-first (smallest ``_seq`` per key) and the split's group placement. Returns the
    summary and ``decision``: ``(kept _seq values sorted, split code per kept record or None)``, or None when every
    record is kept as it is."""
    t0 = time.perf_counter()
    tallies = [t for t in parts[n_blocks:] if t.height]
    tally = (pl.concat(tallies) if tallies else pl.DataFrame(schema=_TALLY)).group_by("kind", "key", "reason_code") \
        .agg(pl.col("count").sum())
    tables = [from_arrow(t) for t in parts[:n_blocks] if t.num_rows]
    keys = (pl.concat(tables, how="diagonal") if tables else pl.DataFrame(schema={SEQ: pl.UInt64})).sort(SEQ)
    out: dict[str, Any] = {"tally": tally, "n_in": keys.height, "identity": {}, "split": {}}
    if dedup and keys.height:
        out["identity"] = dict(keys.group_by("_identity").len().iter_rows())
        keys = keys.filter(pl.struct(list(curate.DEDUP_KEYS)).is_first_distinct())
    out["n_kept"], t1 = keys.height, time.perf_counter()
    codes = None
    if split is not None and keys.height:
        groups = keys.group_by("_gkey").agg(pl.col("_source").min().alias("_stratum"), pl.len().alias("_size"))
        assigned = curate.assign_groups(groups.rename({"_gkey": "_key"}), split.ratios, split.seed)
        names = list(split.ratios)
        per_row = keys.join(assigned, left_on="_gkey", right_on="_key", how="left", maintain_order="left")
        out["split"] = dict(per_row.group_by("_split").len().iter_rows())
        codes = per_row.get_column("_split").replace_strict(names, list(range(len(names))),
                                                            return_dtype=pl.UInt8).to_numpy()
    out["seconds"] = {"dedup": t1 - t0, "split": time.perf_counter() - t1}
    decision = (keys.get_column(SEQ).to_numpy(), codes) if dedup or split is not None else None
    return out, decision


# --- pass 3: keep, split, write ---------------------------------------------------------------------------------------
def apply_block(block: pa.Table, decision: tuple[np.ndarray, np.ndarray | None] | None, names: list[str],
                folder: str, meta: dict[str, str]) -> tuple[int, str]:
    """Keep ``block``'s records whose ``_seq`` is in ``decision``'s sorted keep list, set their split, write the
    curated shard; returns (records written, node id)."""
    frame = from_arrow(block).filter(pl.col(SEQ).is_not_null())  # the header row holds the tally only
    if decision is not None:
        keep, codes = decision
        seqs = frame.get_column(SEQ).to_numpy()
        at = np.minimum(np.searchsorted(keep, seqs), max(len(keep) - 1, 0))
        hit = keep[at] == seqs if len(keep) else np.zeros(len(seqs), bool)
        frame = frame.filter(pl.Series(hit))
        if codes is not None:
            frame = frame.with_columns(pl.Series("split", np.asarray(names, dtype=object)[codes[at[hit]]],
                                                 dtype=pl.String))
    write_shard(frame, folder, meta)
    return frame.height, _node()


def write_meta(folder: Path, image_root: Path | None) -> dict[str, str]:
    """The Parquet metadata ``corpus.write`` puts in a file, for shards of ``folder``."""
    return {corpus.META_VERSION: str(SCHEMA_VERSION), **corpus._root_meta(folder / "part.parquet", image_root)}


# --- the local Ray instance ---------------------------------------------------------------------------------------
LOCAL_SYSTEM_CONFIG = {"idle_worker_killing_time_threshold_ms": 300_000}
"""Ray options of a local instance: keep idle workers for 5 minutes. Ray's default (1 s, then idle workers past
one per CPU are stopped) made each pass of a run start fresh workers, seconds each under load (a run measured at
load 15: the stream pass 30 s → 2 s, the key extraction 10 s → 0.2 s once its workers are kept)."""


def local_runtime_env() -> dict[str, Any]:
    """The ``runtime_env`` of a local Ray instance: workers import this checkout of virl (``PYTHONPATH``) and run
    polars on one thread each (Ray gives the parallelism)."""
    root = str(Path(virl_data.__file__).resolve().parents[1])
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    return {"env_vars": {"PYTHONPATH": path, "POLARS_MAX_THREADS": "1", "OMP_NUM_THREADS": "1"}}


def dashboard_url() -> str | None:
    """The Ray dashboard of the connected instance, when one is up."""
    try:
        from ray._private.worker import get_dashboard_url  # no public accessor once connected

        url = get_dashboard_url()
    except Exception:  # noqa: BLE001 - no dashboard is a normal state, not an error
        return None
    return f"http://{url}" if url and not url.startswith("http") else (url or None)


@contextmanager
def connected(address: str | None = None, num_cpus: int | None = None) -> Iterator[dict[str, Any]]:
    """Use the Ray instance already connected, else connect to ``address`` (or start a local one with
    ``num_cpus``, watched by ``start_watchdog``) and shut it down on exit. Yields ``{address, dashboard_url, cpus}``."""
    started, watchdog = not ray.is_initialized(), None
    if started:
        kwargs: dict[str, Any] = {"logging_level": "ERROR", "log_to_driver": False}
        if address is None:
            kwargs |= {"num_cpus": num_cpus, "runtime_env": local_runtime_env(), "_system_config": LOCAL_SYSTEM_CONFIG}
        ray.init(address=address, **kwargs)
        watchdog = start_watchdog() if address is None else None
    try:
        yield {"address": ray.get_runtime_context().gcs_address, "dashboard_url": dashboard_url(),
               "cpus": ray.cluster_resources().get("CPU")}
    finally:
        if started:
            ray.shutdown()
        if watchdog is not None:
            watchdog.communicate(b"done")


@contextmanager
def _data_context() -> Iterator[None]:
    """Keep block order (the planned blocks in ``_seq`` order); Ray's own bars and INFO lines off; a map's own
    exception raised as it is (a worker's ``CorpusReadError``, not Ray Data's ``UserCodeException``)."""
    ctx = ray.data.DataContext.get_current()
    saved = (ctx.execution_options.preserve_order, ctx.enable_progress_bars, ctx.raise_original_map_exception)
    ctx.execution_options.preserve_order, ctx.enable_progress_bars, ctx.raise_original_map_exception = True, False, True
    log = logging.getLogger("ray.data")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        ctx.execution_options.preserve_order, ctx.enable_progress_bars, ctx.raise_original_map_exception = saved
        log.setLevel(level)


def _bar(console: Console | None) -> Progress | None:
    return (Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                     console=console, transient=True) if console is not None else None)


# --- the run ---------------------------------------------------------------------------------------------------------
def _source(cfg: PipelineConfig, plan: Plan, block_size: int, index: Path) -> tuple[ray.data.Dataset, int]:
    """The stream pass's dataset (records left for curation) and the number of blocks."""
    src = cfg.source
    if blocks.plannable(src.miner):
        planned = list(blocks.plan_blocks(src.miner, src.options, limit=src.limit, block_size=block_size,
                                          workdir=index))
        ordered, n = blocks.in_order(planned), len(planned)
        cut = src.limit is not None and src.miner not in blocks.EXACT_LIMIT
        ds = ray.data.from_items([{"payload": b.payload} for b in planned], override_num_blocks=max(1, n))
        del planned  # now in the object store
        fused = ordered and not cut
        ds = ds.map_batches(process_batch, batch_size=1, batch_format="pyarrow",
                            fn_kwargs={"plan": plan if fused else Plan(plan.images)})
        if fused:
            return ds, n
        if not ordered:  # an image's questions were spread over the file: back to file order
            ds = ds.sort(SEQ)
        if cut:
            ds = ds.limit(src.limit)
    else:  # no planner: the whole-file miner on the driver, cut into blocks
        refs = [ray.put(to_arrow(f)) for f in blocks.frame_blocks(mine_whole(src, _path(plan.images)), block_size)]
        ds, n = ray.data.from_arrow_refs(refs), len(refs)
    return ds.map_batches(process_batch, batch_format="pyarrow", fn_kwargs={"plan": plan}), n


def _path(value: str | None) -> Path | None:
    return None if value is None else Path(value)


def run_pipeline_ray(
    config: PipelineConfig | str | Path,
    out: str | Path | None = None,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    block_size: int = blocks.DEFAULT_BLOCK_SIZE,
    intermediate: Sequence[str] | None = None,
    console: Console | None = None,
) -> RunReport:
    """``pipeline.run_pipeline`` on Ray Data (see the module docstring): the same stages, counts and curated corpus,
    written as a Parquet shard folder; the mined / verified corpora too when ``intermediate`` (or the YAML's
    ``intermediate``) names them. Connects to ``address`` (``"auto"``, ``ray://host:10001``) or the instance already
    connected, else starts a local one with ``num_cpus`` and stops it after."""
    cfg = config if isinstance(config, PipelineConfig) else load_pipeline(config)
    # absolute: Ray workers neither share the driver's working directory nor (on a cluster) its machine
    out = Path(out if out is not None else cfg.out).resolve()
    images, started = _image_root(cfg, out), time.perf_counter()
    images = None if images is None else images.resolve()
    names = intermediate_corpora(cfg, intermediate, default=())
    (out / "corpus").mkdir(parents=True, exist_ok=True)
    clean_stale(out / "corpus")
    temps = {name: temp_folder(out / "corpus" / name) for name in (*names, "curated")}
    index = temp_folder(out / "corpus" / "plan")  # a planner's index on disk (GQA), readable by every worker
    try:
        with connected(address, num_cpus) as engine, _data_context():
            bar = _bar(console)
            with bar if bar is not None else nullcontext():
                try:
                    report = _run(cfg, out, images, block_size, temps, index, engine, bar, console)
                except ray.exceptions.RayTaskError as e:
                    if isinstance(e.cause, VirlError):  # bad input found by a worker: its own error, as local
                        raise e.cause from None
                    raise
    finally:
        for tmp in (*temps.values(), index):
            shutil.rmtree(tmp, ignore_errors=True)
    return dataclasses.replace(report, seconds=time.perf_counter() - started)


def _stream(ds: ray.data.Dataset, n_blocks: int, bar: Progress | None) -> list[tuple[Any, int]]:
    """Run the stream pass; returns the (block ref, rows) of the records left for curation, in order."""
    out: list[tuple[Any, int]] = []
    task = bar.add_task("mine → verify → filter → keys (blocks)", total=n_blocks) if bar is not None else None
    for bundle in ds.iter_internal_ref_bundles():
        # whole blocks: only a limit slices blocks, and it comes before the last map
        assert all(s is None for s in bundle.slices), "a sliced block reached the curation pass"
        # a block of no rows has no header either (an empty source gives one, without columns)
        out.extend((entry.ref, entry.metadata.num_rows) for entry in bundle.blocks if entry.metadata.num_rows)
        if task is not None:
            bar.advance(task, len(bundle.blocks))
    if task is not None:
        bar.remove_task(task)
    return out


def _write(refs: list[tuple[Any, int]], decision: Any, names: list[str], folder: Path, meta: dict[str, str],
           bar: Progress | None) -> tuple[int, dict[str, int]]:
    """Pass 3: one task per block; returns (records written, shards per node)."""
    folder.mkdir(parents=True, exist_ok=True)
    task = ray.remote(apply_block)
    pending = [task.remote(ref, decision, names, str(folder), meta) for ref, _ in refs]
    progress = bar.add_task("keep → split → write (blocks)", total=len(pending)) if bar is not None else None
    n, nodes = 0, {}
    while pending:
        ready, pending = ray.wait(pending, num_returns=min(len(pending), 8), timeout=1.0)
        for rows, node in ray.get(ready):
            n, nodes[node] = n + rows, nodes.get(node, 0) + (rows > 0)
        if progress is not None:
            bar.advance(progress, len(ready))
    return n, nodes


def _skipped(tally: pl.DataFrame) -> list[str]:
    """The checks skipped on some records, summed over the blocks, as the local engine's verify stage says them."""
    rows = tally.filter(pl.col("kind") == "skipped").group_by("key", maintain_order=True) \
        .agg(pl.col("count").sum(), pl.col("reason_code").first()).sort("key")
    return checks.skipped_notes({k: (n, r) for k, n, r in rows.select("key", "count", "reason_code").iter_rows()})


def _stages(cfg: PipelineConfig, result: dict[str, Any], stream_s: float, images: Path | None) -> list[StageReport]:
    """The local engine's stage reports from the blocks' tallies; the stream pass's wall time is shared among
    its steps in proportion to their task time."""
    tally = result["tally"]

    def get(kind: str) -> dict[str | None, int]:
        return {k: int(c) for k, c in tally.filter(pl.col("kind") == kind).select("key", "count").iter_rows()}

    work = get("seconds")
    share = {s: stream_s * work.get(s, 0) / max(1, sum(work.values())) for s in STEPS}
    n_mined, status = sum(get("mined").values()), get("status")
    passed = sum(status.get(s, 0) for s in PASSED_STATUSES)
    stages = [
        StageReport("mine", n_mined, n_mined, detail=f"{sum(get('mined_rejected').values())} rejected while mining",
                    seconds=share["mine"]),
        StageReport("verify", n_mined, passed, {"rejected": status.get("rejected", 0)},
                    detail=", ".join([*(f"{s}: {k}" for s, k in sorted(status.items())), *_skipped(tally)]),
                    seconds=share["verify"]),
    ]
    n = passed
    if cfg.filters:
        by_index = get("filter")
        removed: dict[str, int] = {}
        for i, expr in enumerate(cfg.filters):
            removed[expr] = removed.get(expr, 0) + by_index.get(str(i), 0)
        stages.append(StageReport("filter", n, n - sum(removed.values()), removed,
                                  detail=f"{len(cfg.filters)} expressions", seconds=share["filter"]))
        n = stages[-1].n_out
    assert n == result["n_in"], f"the barrier saw {result['n_in']} records, the tallies say {n}"
    if cfg.dedup:
        notes = curate.dedup_notes(result["identity"], images)
        stages.append(StageReport("dedup", n, result["n_kept"], {"duplicate": n - result["n_kept"]},
                                  detail="; ".join(notes), seconds=share["keys"] + result["seconds"]["dedup"]))
        n = result["n_kept"]
    if cfg.split is not None:
        detail = ", ".join(f"{k}: {result['split'].get(k, 0)}" for k in cfg.split.ratios)
        stages.append(StageReport("split", n, n, detail=f"seed {cfg.split.seed}; {detail}",
                                  seconds=result["seconds"]["split"]))
    return stages


def _run(cfg: PipelineConfig, out: Path, images: Path | None, block_size: int, temps: dict[str, Path], index: Path,
         engine: dict[str, Any], bar: Progress | None, console: Console | None) -> RunReport:
    t0 = time.perf_counter()
    meta = write_meta(out / "corpus" / "curated", images)
    for name, tmp in temps.items():
        tmp.mkdir(parents=True)
    plan = Plan(None if images is None else str(images), cfg.check_config(), tuple(cfg.filters), cfg.dedup,
                cfg.split is not None, {k: str(v) for k, v in temps.items() if k != "curated"}, meta)
    ds, n_blocks = _source(cfg, plan, block_size, index)
    t1, rss = time.perf_counter(), {"after_plan": _rss_mb()}
    refs = _stream(ds, n_blocks, bar)
    t2, rss["after_stream"] = time.perf_counter(), _rss_mb()
    # key columns and tallies extracted where each block lives; the barrier task sees only them
    keys_task = ray.remote(num_returns=2)(keys_of)
    parts = [keys_task.remote(ref) for ref, _ in refs]
    summary, decision = ray.remote(num_returns=2)(barrier).remote(
        cfg.dedup, cfg.split, len(parts), *(k for k, _ in parts), *(t for _, t in parts))
    result = ray.get(summary)
    del parts
    t3, rss["after_barrier"] = time.perf_counter(), _rss_mb()
    names = list(cfg.split.ratios) if cfg.split is not None else []
    n_written, writers = _write(refs, decision, names, temps["curated"], meta, bar)
    del refs, decision
    stages = _stages(cfg, result, t2 - t1, images)
    if stages[0].n_in == 0 and cfg.source.limit != 0:  # as the local engine: limit 0 asks for nothing
        raise EmptyInputError(f"source: the {cfg.source.miner} miner found no records in {cfg.source.options}")
    assert n_written == stages[-1].n_out, f"wrote {n_written} curated records, the stages say {stages[-1].n_out}"
    for tmp in temps.values():  # an empty corpus is still a readable corpus
        if not any(tmp.glob("*.parquet")):
            corpus.write(pl.DataFrame(schema=polars_schema()), tmp / "empty.parquet", image_root=images)
    paths = {name: swap_in(tmp, out / "corpus" / name) for name, tmp in temps.items()}
    for name in ("mined", "verified"):  # an earlier run's intermediate corpus would not match this run's
        if name not in paths and (out / "corpus" / name).is_dir():
            shutil.rmtree(out / "corpus" / name)
    t4, rss["after_write"] = time.perf_counter(), _rss_mb()
    for stage in stages:
        if console is not None:
            console.print(f"[bold]{stage.name}[/]: {stage.n_in} → {stage.n_out} {stage.detail}", highlight=False)
    if cfg.export:
        curated = corpus.read(paths["curated"])
        for e in cfg.export:
            paths[f"export:{e.format}"] = _export_dir(out, e)
            t = time.perf_counter()
            stages.append(dataclasses.replace(_export(curated, e, _export_dir(out, e), images),
                                              seconds=time.perf_counter() - t))
    check_accounting(stages)
    tally = result["tally"]
    nodes = {"processed": {k: int(c) for k, c in tally.filter(pl.col("kind") == "node")
                           .select("key", "count").iter_rows()},
             "curated": writers}
    for k, c in tally.filter(pl.col("kind") == "shards").select("key", "count").iter_rows():
        name, node = k.split(":", 1)
        nodes.setdefault(name, {})[node] = int(c)
    engine = {"name": "ray", **engine, "blocks": n_blocks, "block_size": block_size, "nodes": nodes,
              "timings": {"plan": t1 - t0, "stream": t2 - t1, "barrier": t3 - t2, "write": t4 - t3},
              "driver_rss_mb": rss}
    report = RunReport(
        name=cfg.name, out=out, stages=tuple(stages),
        rejection_reasons=tuple(_reasons(tally).iter_rows(named=True)),
        config={**dataclasses.asdict(cfg), "out": str(out), "image_root": None if images is None else str(images),
                "engine": engine},
        paths=paths, seconds=time.perf_counter() - t0,
    )
    corpus.write_json(report.to_dict(), report.report_path)
    return report


def _reasons(tally: pl.DataFrame) -> pl.DataFrame:
    return (
        tally.filter(pl.col("kind") == "reason").select(pl.col("key").alias("check"), "reason_code", "count")
        .sort(["count", "check", "reason_code"], descending=[True, False, False])
    )


__all__ = ["LOCAL_SYSTEM_CONFIG", "Plan", "apply_block", "barrier", "connected", "dashboard_url", "keys_of",
           "local_runtime_env", "process_batch", "run_pipeline_ray", "to_arrow", "write_shard"]
