"""The Ray engine: ``run_pipeline``'s stages, scheduled by Ray Data over blocks. The only module that imports ray.

    virl-data run PIPELINE.yaml --engine ray [--address ADDR] [--num-cpus N]

Same YAML, same stage functions, same corpus; only the scheduling differs:

=========  ==========================================================================================================
stage      under Ray
=========  ==========================================================================================================
mine       ``blocks.plan_blocks`` (on the driver) cuts the source into blocks, each holding only the part of the
           global index it needs (GQA: questions grouped by image with those images' scene graphs; VG, COCO: runs
           of images with their objects / annotations and sizes); one Ray task
           per block runs ``blocks.mine_block``. Miners without a planner mine on the driver, cut into blocks.
           Records carry ``_seq``, their position in the local engine's output; blocks out of order are sorted by it
verify     ``checks.verify`` as ``map_batches`` over Arrow batches (every check is row-local; ``image_readable``
           opens the images on the workers)
filter     each record tagged with the first expression that drops it (``map_batches``), counted per batch
dedup      ``curate.dedup_keys`` per batch, then Ray's ``groupby(keys).aggregate(Min(_seq))``: the smallest
           ``_seq`` of a key is the record the local engine keeps (the first in input order)
split      ``groupby(image, source).count()`` by Ray gives the groups; ``curate.assign_groups`` (the local
           engine's function) places them; ``map_batches`` writes each record's split
=========  ==========================================================================================================

Corpora are written by Ray as Parquet shards: ``OUT/corpus/{mined,verified,curated}/*.parquet`` (each shard
declares the schema version and the image root like ``corpus.write``; ``corpus.read`` reads a folder of shards).
Exports read the curated shards and run ``export.export`` as the local engine does. ``report.json`` has the same
stages and counts as the local engine's, plus ``config.engine`` (Ray address, dashboard URL, blocks, CPUs).

Equivalence (tested in ``tests/data/engines/test_ray.py``): the same ids, statuses, reasons, chains and splits, in
the same order, and the same per-stage counts as ``pipeline.run_pipeline``.

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
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import ray
import ray.data
from ray.data.aggregate import Count, Min
from ray.data.context import ShuffleStrategy
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
    StageReport,
    _export,
    _export_dir,
    _image_root,
    _mine as mine_whole,
    check_accounting,
    load_pipeline,
)
from virl_data.core.schema import COLUMNS, SCHEMA_VERSION, polars_schema

SEQ = blocks.SEQ
_REMOVED_BY = "_removed_by"
_MINED_REJ = "_mined_rejected"


# --- Arrow <-> polars on the workers ---------------------------------------------------------------------------------
def to_arrow(df: pl.DataFrame) -> pa.Table:
    """A polars frame as an Arrow table Ray can shuffle (``large_string``, not polars' ``string_view``)."""
    return df.to_arrow(compat_level=pl.CompatLevel.oldest())


def from_arrow(table: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


# --- batch functions (pure, module level so Ray can ship them) -------------------------------------------------------
def mine_batch(batch: pa.Table, images: str | None) -> pa.Table:
    """The records of the blocks in ``batch`` (a ``payload`` column of ``blocks.Block`` payloads)."""
    frames = [blocks.mine_block(p, images) for p in batch.column("payload").to_pylist()]
    return to_arrow(pl.concat(frames, how="vertical"))


def verify_batch(batch: pa.Table, cfg: checks.CheckConfig, images: str | None) -> pa.Table:
    """``checks.verify`` on one batch, ``_seq`` carried along (verify keeps every row, in order), and
    ``_mined_rejected``: whether the miner had rejected the record (counted for the mine stage's report)."""
    frame = from_arrow(batch)
    verified = checks.verify(frame.select(COLUMNS), cfg, image_root=images)
    return to_arrow(verified.with_columns(frame.get_column(SEQ), (frame["status"] == "rejected").alias(_MINED_REJ)))


def tally_batch(batch: pa.Table) -> pa.Table:
    """What the report needs of the verified corpus, for one batch: records per status, records the miner had
    rejected, ``checks.rejection_reasons``; as ``kind, key, reason_code, count`` rows summed by the driver."""
    frame = from_arrow(batch)
    status = frame.group_by("status").len("count").select(
        pl.lit("status").alias("kind"), pl.col("status").alias("key"), pl.lit(None, pl.String).alias("reason_code"),
        pl.col("count").cast(pl.Int64))
    mined = pl.DataFrame({"kind": ["mined_rejected"], "key": [None], "reason_code": [None],
                          "count": [int(frame[_MINED_REJ].sum())]},
                         schema={"kind": pl.String, "key": pl.String, "reason_code": pl.String, "count": pl.Int64})
    reasons = checks.rejection_reasons(frame.select(COLUMNS)).select(
        pl.lit("reason").alias("kind"), pl.col("check").alias("key"), "reason_code", "count")
    return to_arrow(pl.concat([status, mined, reasons]))


def passed_batch(batch: pa.Table) -> pa.Table:
    """The records that leave ``verify`` into curation (``PASSED_STATUSES``)."""
    return to_arrow(from_arrow(batch).filter(pl.col("status").is_in(PASSED_STATUSES)))


def filter_tag_batch(batch: pa.Table, filters: Sequence[str]) -> pa.Table:
    """``_removed_by``: the index of the first filter expression that drops the record (null = kept). Filters are
    row-local, so this is what applying them one after the other (the local engine) removes."""
    frame = from_arrow(batch)
    tag = pl.lit(None, pl.Int32)
    for i, text in reversed(list(enumerate(filters))):
        tag = pl.when(~curate.filter_expr(text).fill_null(False)).then(pl.lit(i, pl.Int32)).otherwise(tag)
    tagged = curate.with_helpers(frame.select(COLUMNS)).select(tag.alias(_REMOVED_BY)).collect()
    return to_arrow(frame.with_columns(tagged.get_column(_REMOVED_BY)))


def kept_batch(batch: pa.Table) -> pa.Table:
    return to_arrow(from_arrow(batch).filter(pl.col(_REMOVED_BY).is_null()).drop(_REMOVED_BY))


def dedup_key_batch(batch: pa.Table, images: str | None) -> pa.Table:
    """Each record's ``curate.dedup_keys`` (``_content``, ``_question``, ``_identity``) and ``_seq``, nothing else:
    the groupby's input stays small. Hashes the image files when needed."""
    frame = from_arrow(batch)
    keyed = curate.dedup_keys(frame.select(COLUMNS), images)
    return to_arrow(keyed.select(*curate.DEDUP_KEYS, "_identity").with_columns(frame.get_column(SEQ)))


def keep_seqs_batch(batch: pa.Table, keep: np.ndarray) -> pa.Table:
    """The records whose ``_seq`` is in ``keep`` (sorted)."""
    frame = from_arrow(batch)
    mask = np.isin(frame.get_column(SEQ).to_numpy(), keep, assume_unique=True)
    return to_arrow(frame.filter(pl.Series(mask)).select(*COLUMNS, SEQ))


def split_key_batch(batch: pa.Table, group_by: str) -> pa.Table:
    """``_key`` (``curate.group_key_expr``) and ``_source`` of each record: the input of the group count."""
    return to_arrow(from_arrow(batch).select(
        curate.group_key_expr(group_by).alias("_key"), pl.col("provenance").struct.field("source").alias("_source")
    ))


def apply_split_batch(batch: pa.Table, assigned: pa.Table, group_by: str) -> pa.Table:
    """Each record's ``split`` from ``assigned`` (``_key → _split``, from ``curate.assign_groups``)."""
    frame = from_arrow(batch)
    out = (
        frame.with_columns(curate.group_key_expr(group_by).alias("_key"))
        .join(from_arrow(assigned), on="_key", how="left", maintain_order="left")
        .with_columns(pl.col("_split").alias("split"))
        .select(*COLUMNS, SEQ)
    )
    return to_arrow(out)


def shard_batch(batch: pa.Table, metadata: dict[str, str]) -> pa.Table:
    """Canonical columns only, with the corpus metadata ``corpus.write`` puts in a Parquet file."""
    table = to_arrow(from_arrow(batch).select(COLUMNS))
    return table.replace_schema_metadata(metadata)


# --- driver helpers --------------------------------------------------------------------------------------------------
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
    ``num_cpus``) and shut it down on exit. Yields ``{address, dashboard_url, cpus}``."""
    started = not ray.is_initialized()
    if started:
        kwargs: dict[str, Any] = {"logging_level": "ERROR", "log_to_driver": False}
        if address is None:
            kwargs |= {"num_cpus": num_cpus, "runtime_env": local_runtime_env()}
        ray.init(address=address, **kwargs)
    try:
        yield {"address": ray.get_runtime_context().gcs_address, "dashboard_url": dashboard_url(),
               "cpus": ray.cluster_resources().get("CPU")}
    finally:
        if started:
            ray.shutdown()


@contextmanager
def _data_context() -> Iterator[None]:
    """Keep block order through every stage (``_seq`` order = the local engine's order); Ray's own bars off."""
    ctx = ray.data.DataContext.get_current()
    saved = (ctx.execution_options.preserve_order, ctx.enable_progress_bars, ctx.shuffle_strategy)
    ctx.execution_options.preserve_order, ctx.enable_progress_bars = True, False
    # groupby by tasks, not by aggregator actors: the actors' start-up dominated every groupby in our measurements
    ctx.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    log = logging.getLogger("ray.data")
    level = log.level
    log.setLevel(logging.WARNING)  # one INFO line per executed dataset otherwise
    try:
        yield
    finally:
        ctx.execution_options.preserve_order, ctx.enable_progress_bars, ctx.shuffle_strategy = saved
        log.setLevel(level)


class _Run:
    """One run's driver state: the progress bar, and the per-stage clock."""

    def __init__(self, console: Console | None) -> None:
        self.bar = (Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), console=console, transient=True) if console is not None else None)
        self.last = time.perf_counter()

    def lap(self) -> float:
        now = time.perf_counter()
        elapsed, self.last = now - self.last, now
        return elapsed

    def materialize(self, ds: ray.data.Dataset, what: str, total: int | None, unit: str = "records") -> Any:
        """Run ``ds`` to the end, advancing the bar per finished block; returns a dataset over the blocks."""
        refs: list[Any] = []
        task = self.bar.add_task(f"{what} ({unit})", total=total) if self.bar is not None else None
        for bundle in ds.iter_internal_ref_bundles():
            refs.extend(bundle.block_refs)
            if task is not None:
                self.bar.advance(task, bundle.num_rows() if unit == "records" else len(bundle.block_refs))
        if task is not None:
            self.bar.remove_task(task)
        return ray.data.from_arrow_refs(refs) if refs else ds.materialize()


def counts_batch(batch: pa.Table, column: str) -> pa.Table:
    """``column``'s value counts in one batch (``value, count``), summed by the driver."""
    counts = from_arrow(batch).get_column(column).value_counts(name="count")
    return to_arrow(counts.rename({column: "value"}).with_columns(pl.col("value").cast(pl.String)))


def collect(ds: ray.data.Dataset, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """A (small) dataset on the driver as one polars frame, block by block in Arrow (``take_all`` would build a
    Python dict per row: seconds for the 100k+ rows of a groupby result)."""
    tables = [t for t in ray.get(ds.to_arrow_refs()) if t.num_rows]
    if not tables:
        return pl.DataFrame(schema=schema)
    frame = from_arrow(pa.concat_tables(tables, promote_options="permissive"))
    return frame.select(pl.col(name).cast(dtype) for name, dtype in schema.items())


def _counts(ds: ray.data.Dataset, column: str) -> dict[str | None, int]:
    """Records per value of ``column`` (a few distinct values: a per-batch count and a sum, no shuffle)."""
    out: dict[str | None, int] = {}
    for row in ds.map_batches(counts_batch, batch_format="pyarrow", fn_kwargs={"column": column}).take_all():
        out[row["value"]] = out.get(row["value"], 0) + int(row["count"])
    return out


def write_shards(ds: ray.data.Dataset, folder: Path, image_root: Path | None) -> Path:
    """Write ``ds`` as Parquet shards under ``folder`` (replacing it whole: written beside, then renamed)."""
    meta = {corpus.META_VERSION: str(SCHEMA_VERSION), **corpus._root_meta(folder / "part.parquet", image_root)}
    tmp = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        # Ray names the shards <write uuid>_<task index, 6 digits>-<file>.parquet: one write, so name order is
        # task order, which is dataset order (preserve_order), and corpus.read reads them in that order
        ds.map_batches(shard_batch, batch_format="pyarrow", fn_kwargs={"metadata": meta}).write_parquet(str(tmp))
        if not any(tmp.glob("*.parquet")):  # an empty corpus is still a readable corpus
            corpus.write(pl.DataFrame(schema=polars_schema()), tmp / "empty.parquet",
                         image_root=image_root)
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


# --- the stages ------------------------------------------------------------------------------------------------------
def _partitions() -> int:
    """Shuffle partitions of a groupby: one per CPU of the cluster (Ray's default, 200, is for big clusters)."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _mine(cfg: PipelineConfig, images: Path | None, block_size: int, run: _Run) -> tuple[Any, int]:
    """The mined dataset in the local engine's order, and the number of blocks."""
    src, root = cfg.source, None if images is None else str(images)
    if blocks.plannable(src.miner):
        planned = list(blocks.plan_blocks(src.miner, src.options, limit=src.limit, block_size=block_size))
        ds = ray.data.from_items([{"payload": b.payload} for b in planned], override_num_blocks=max(1, len(planned)))
        ds = ds.map_batches(mine_batch, batch_size=1, batch_format="pyarrow", fn_kwargs={"images": root})
        if not blocks.in_order(planned):  # an image's questions were spread over the file: back to file order
            ds = ds.sort(SEQ)
        if src.limit is not None and src.miner not in blocks.EXACT_LIMIT:
            ds = ds.limit(src.limit)
        return run.materialize(ds, "mine", len(planned), unit="blocks"), len(planned)
    frame = mine_whole(src, images)  # no planner: the whole-file miner, on the driver
    refs = [ray.put(to_arrow(f)) for f in blocks.frame_blocks(frame, block_size)]
    return ray.data.from_arrow_refs(refs), len(refs)


def _verify(mined: Any, cfg: PipelineConfig, images: Path | None, run: _Run,
            n: int) -> tuple[Any, StageReport, pl.DataFrame, int]:
    """The verified dataset, its stage report, the rejection reasons and how many records the miner rejected (all
    counted in one pass over the verified blocks)."""
    root = None if images is None else str(images)
    ds = mined.map_batches(verify_batch, batch_format="pyarrow", fn_kwargs={"cfg": cfg.check_config(), "images": root})
    verified = run.materialize(ds, "verify", n)
    schema = {"kind": pl.String, "key": pl.String, "reason_code": pl.String, "count": pl.Int64}
    tally = (
        collect(verified.map_batches(tally_batch, batch_format="pyarrow"), schema)
        .group_by("kind", "key", "reason_code").agg(pl.col("count").sum())
    )
    counts = dict(tally.filter(pl.col("kind") == "status").select("key", "count").iter_rows())
    n_mining = int(tally.filter(pl.col("kind") == "mined_rejected")["count"].sum())
    reasons = (
        tally.filter(pl.col("kind") == "reason").select(pl.col("key").alias("check"), "reason_code", "count")
        .sort(["count", "check", "reason_code"], descending=[True, False, False])
    )
    passed = sum(counts.get(s, 0) for s in PASSED_STATUSES)
    stage = StageReport("verify", n, passed, {"rejected": counts.get("rejected", 0)},
                        detail=", ".join(f"{s}: {k}" for s, k in sorted(counts.items())))
    return verified, stage, reasons, n_mining


def _filter(frame: Any, filters: Sequence[str], run: _Run, n: int) -> tuple[Any, StageReport]:
    tagged = run.materialize(
        frame.map_batches(filter_tag_batch, batch_format="pyarrow", fn_kwargs={"filters": list(filters)}), "filter", n)
    by_index = _counts(tagged, _REMOVED_BY)
    removed: dict[str, int] = {}
    for i, expr in enumerate(filters):
        removed[expr] = removed.get(expr, 0) + by_index.get(str(i), 0)
    kept = tagged.map_batches(kept_batch, batch_format="pyarrow")
    return kept, StageReport("filter", n, n - sum(removed.values()), removed, detail=f"{len(filters)} expressions")


def _dedup(frame: Any, images: Path | None, run: _Run, n: int) -> tuple[Any, StageReport]:
    root = None if images is None else str(images)
    keyed = run.materialize(
        frame.map_batches(dedup_key_batch, batch_format="pyarrow", fn_kwargs={"images": root}), "dedup", n)
    keys = [*curate.DEDUP_KEYS, "_identity"]  # _identity in the key only to count it: merged below
    groups = keyed.groupby(keys, num_partitions=_partitions()).aggregate(
        Min(SEQ, alias_name="first"), Count(alias_name="n"))
    table = collect(groups, {**{k: pl.String for k in keys}, "first": pl.UInt64, "n": pl.Int64})
    keep = np.sort(table.group_by(curate.DEDUP_KEYS).agg(pl.col("first").min())["first"].to_numpy())
    identity = dict(table.group_by("_identity").agg(pl.col("n").sum()).iter_rows())
    kept = frame.map_batches(keep_seqs_batch, batch_format="pyarrow", fn_kwargs={"keep": keep})
    notes = curate.dedup_notes(identity, images)
    return kept, StageReport("dedup", n, len(keep), {"duplicate": n - len(keep)}, detail="; ".join(notes))


def _split(frame: Any, cfg: PipelineConfig, n: int) -> tuple[Any, StageReport]:
    split = cfg.split
    assert split is not None
    group_by = "image"
    pairs = frame.map_batches(split_key_batch, batch_format="pyarrow", fn_kwargs={"group_by": group_by})
    counted = pairs.groupby(["_key", "_source"], num_partitions=_partitions()).count()
    groups = (
        collect(counted, {"_key": pl.String, "_source": pl.String, "count()": pl.Int64})
        .group_by("_key").agg(pl.col("_source").min().alias("_stratum"), pl.col("count()").sum().alias("_size"))
    )
    assigned = curate.assign_groups(groups, split.ratios, split.seed)
    out = frame.map_batches(apply_split_batch, batch_format="pyarrow",
                            fn_kwargs={"assigned": to_arrow(assigned), "group_by": group_by})
    by_split = assigned.join(groups, on="_key").group_by("_split").agg(pl.col("_size").sum())
    counts = dict(by_split.iter_rows())
    detail = ", ".join(f"{k}: {counts.get(k, 0)}" for k in split.ratios)
    return out, StageReport("split", n, n, detail=f"seed {split.seed}; {detail}")


def run_pipeline_ray(
    config: PipelineConfig | str | Path,
    out: str | Path | None = None,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    block_size: int = blocks.DEFAULT_BLOCK_SIZE,
    console: Console | None = None,
) -> RunReport:
    """``pipeline.run_pipeline`` on Ray Data (see the module docstring): the same stages, counts and corpus, the
    corpora written as Parquet shard folders. Connects to ``address`` (``"auto"``, ``ray://host:10001``) or the
    instance already connected, else starts a local one with ``num_cpus`` and stops it after."""
    cfg = config if isinstance(config, PipelineConfig) else load_pipeline(config)
    # absolute: Ray workers neither share the driver's working directory nor (on a cluster) its machine
    out = Path(out if out is not None else cfg.out).resolve()
    images, started = _image_root(cfg, out), time.perf_counter()
    images = None if images is None else images.resolve()
    with connected(address, num_cpus) as engine, _data_context():
        run = _Run(console)
        with run.bar if run.bar is not None else nullcontext():
            report = _run(cfg, out, images, block_size, run, engine, console)
    return dataclasses.replace(report, seconds=time.perf_counter() - started)


def _run(cfg: PipelineConfig, out: Path, images: Path | None, block_size: int, run: _Run, engine: dict[str, Any],
         console: Console | None) -> RunReport:
    stages: list[StageReport] = []
    paths: dict[str, Path] = {}
    started = time.perf_counter()

    def done(stage: StageReport, ds: Any = None, name: str | None = None, seconds: float | None = None) -> None:
        if ds is not None and name is not None:
            paths[name] = write_shards(ds, out / "corpus" / name, images)
        stages.append(dataclasses.replace(stage, seconds=run.lap() if seconds is None else seconds))
        if console is not None:
            console.print(f"[bold]{stage.name}[/]: {stage.n_in} → {stage.n_out} {stage.detail}", highlight=False)

    mined, n_blocks = _mine(cfg, images, block_size, run)
    n_mined = mined.count()
    paths["mined"] = write_shards(mined, out / "corpus" / "mined", images)
    mine_seconds = run.lap()
    verified, stage, reasons, n_mining = _verify(mined, cfg, images, run, n_mined)  # counts the miner's rejections
    done(StageReport("mine", n_mined, n_mined, detail=f"{n_mining} rejected while mining"), seconds=mine_seconds)
    done(stage, verified, "verified")
    frame, n = verified.map_batches(passed_batch, batch_format="pyarrow"), stage.n_out
    if cfg.filters:
        frame, stage = _filter(frame, cfg.filters, run, n)
        done(stage)
        n = stage.n_out
    if cfg.dedup:
        frame, stage = _dedup(frame, images, run, n)
        done(stage)
        n = stage.n_out
    if cfg.split is not None:
        frame, stage = _split(frame, cfg, n)
        frame = run.materialize(frame, "split", n)
        done(stage)
    paths["curated"] = write_shards(frame, out / "corpus" / "curated", images)
    if cfg.export:
        curated = corpus.read(paths["curated"])
        for e in cfg.export:
            paths[f"export:{e.format}"] = _export_dir(out, e)
            done(_export(curated, e, _export_dir(out, e), images))
    check_accounting(stages)
    engine = {"name": "ray", **engine, "blocks": n_blocks, "block_size": block_size}
    report = RunReport(
        name=cfg.name, out=out, stages=tuple(stages), rejection_reasons=tuple(reasons.iter_rows(named=True)),
        config={**dataclasses.asdict(cfg), "out": str(out), "image_root": None if images is None else str(images),
                "engine": engine},
        paths=paths, seconds=time.perf_counter() - started,
    )
    corpus.write_json(report.to_dict(), report.report_path)
    return report


__all__ = ["collect", "connected", "dashboard_url", "local_runtime_env", "run_pipeline_ray", "to_arrow", "write_shards"]
