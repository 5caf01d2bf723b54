"""Export a corpus per split: an HF dataset folder (images embedded), Parquet, JSONL or COCO JSON.

One entry point, ``export(df, out_dir, fmt, image_root=...)``:

1. keep the records whose ``status`` is in ``statuses`` (default ``accepted`` + ``reviewed``);
2. group them by the ``split`` column. When no kept record has a split, they all go to a split named ``all``; when
   some do, the kept records without a split are left out (reason ``no_split``);
3. write one output per split into a temporary sibling folder ``<out_dir>.tmp-xxxx``, then rename it onto
   ``out_dir`` whole, so readers never see a half-written export and a failed export leaves nothing behind.

Counts in = counts out: ``result.n_input == result.n_exported + result.n_excluded``; the counts, paths and reasons
are also written to ``out_dir/virl_export.json``. That manifest marks the folder as an export: an existing
``out_dir`` is replaced only when it is empty or holds a manifest, never a folder of other files.

Outputs per format (``<split>`` is the split name):

- ``parquet`` / ``jsonl``: ``<split>.parquet`` / ``<split>.jsonl`` through ``corpus.write`` (canonical layout;
  Parquet declares the image root in its metadata, ``corpus.image_root`` finds it).
- ``hf``: a ``datasets.DatasetDict`` saved with ``save_to_disk``; features are ``schema.hf_features()``: ``image`` is
  an ``Image()`` holding the file's bytes (decoded to PIL on access; ``save_to_disk`` keeps only the file name as its
  ``path``) and ``image_ref`` keeps the ``ImageRef`` with the path relative to the image root.
- ``coco``: ``<split>.json`` for ``pycocotools.coco.COCO``; see ``to_coco``.
- ``trl``: the ``hf`` export plus the ``prompt`` chat column TRL's ``GRPOTrainer`` reads (``virl_data.export.trl``).
- ``verl``: ``<split>.parquet`` in verl's ``RLHFDataset`` schema for its tool agent (images embedded, the chain in
  ``reward_model.ground_truth``); see ``virl_data.export.verl`` (option ``family``).

Example:
    >>> import tempfile, pathlib
    >>> from virl_data.core import schema
    >>> from virl_data.core.types import Box, ImageRef, Provenance, RationaleRecord, RationaleStep
    >>> rec = RationaleRecord(id="r1", image=ImageRef("img/0.png", 64, 48), question="q?", answer="a",
    ...     chain=(RationaleStep((Box(1, 2, 11, 22),), "Red  Square"),), provenance=Provenance("demo"),
    ...     status="accepted", split="val")
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "coco"
    >>> res = export(schema.records_to_frame([rec]), out, "coco", image_root=None)
    >>> res.counts, sorted(p.name for p in out.iterdir())
    ({'val': 1}, ['val.json', 'virl_export.json'])
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from virl_data.core import boxconv, boxes
from virl_data.core.boxanswer import BOX, parse_box
from virl_data.core.errors import ConfigError, VirlError
from virl_data.core.schema import COLUMNS, STATUSES, hf_features, validate_schema
from virl_data.core.types import SCHEMA_VERSION
from virl_data.storage import corpus
from virl_data.storage.locks import sibling_lock

FORMATS: tuple[str, ...] = ("hf", "parquet", "jsonl", "coco", "trl", "verl")
DEFAULT_STATUSES: tuple[str, ...] = ("accepted", "reviewed")
MISSING_IMAGE_MODES: tuple[str, ...] = ("error", "null")
ALL_SPLIT = "all"
NO_SPLIT = "no_split"
MANIFEST = "virl_export.json"
EMPTY_PHRASE_CATEGORY = "region"
# HF's rule for split names; it also keeps them safe as file names.
_SPLIT_NAME = re.compile(r"^\w+(\.\w+)*$")


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote: ``paths`` and ``counts`` per split, ``excluded`` counts per reason.

    Reasons are ``status:<status>`` (status not exported) and ``no_split``. ``missing_images`` counts records
    exported without an image (HF with ``missing_images="null"``).
    """

    fmt: str
    out_dir: Path
    paths: dict[str, Path]
    counts: dict[str, int]
    excluded: dict[str, int] = field(default_factory=dict)
    missing_images: int = 0

    @property
    def n_exported(self) -> int:
        return sum(self.counts.values())

    @property
    def n_excluded(self) -> int:
        return sum(self.excluded.values())

    @property
    def n_input(self) -> int:
        return self.n_exported + self.n_excluded


def export_formats() -> tuple[str, ...]:
    """The export formats: ``('hf', 'parquet', 'jsonl', 'coco', 'trl', 'verl')``."""
    return FORMATS


# --- selection -------------------------------------------------------------------------------------------------------
def _check_statuses(statuses: Sequence[str] | str | None) -> tuple[str, ...] | None:
    if statuses is None:
        return None
    wanted = (statuses,) if isinstance(statuses, str) else tuple(str(s) for s in statuses)
    unknown = [s for s in wanted if s not in STATUSES]
    if unknown or not wanted:
        raise ConfigError(f"unknown status {', '.join(unknown) or '(none given)'}; valid: {', '.join(STATUSES)}")
    return wanted


def split_frames(
    df: pl.DataFrame, statuses: Sequence[str] | None = DEFAULT_STATUSES
) -> tuple[dict[str, pl.DataFrame], dict[str, int]]:
    """Records to export, per split name (sorted, rows in input order), and the left-out counts per reason.

    >>> from virl_data.core import schema
    >>> frames, excluded = split_frames(schema.empty_frame())
    >>> frames, excluded
    ({}, {})
    """
    wanted = _check_statuses(statuses)
    excluded: dict[str, int] = {}
    if wanted is not None:
        dropped = df.filter(~pl.col("status").is_in(wanted)).group_by("status").len().sort("status")
        excluded.update({f"status:{s}": n for s, n in dropped.iter_rows()})
        df = df.filter(pl.col("status").is_in(wanted))
    if df.height and df["split"].null_count() == df.height:
        return {ALL_SPLIT: df}, excluded
    if df["split"].null_count():
        excluded[NO_SPLIT] = df["split"].null_count()
    names = sorted(df["split"].drop_nulls().unique().to_list())
    bad = [n for n in names if not _SPLIT_NAME.match(n)]
    if bad:
        raise VirlError(f"split name {bad[0]!r} cannot name an export split; use letters, digits, '_' and '.'")
    return {name: df.filter(pl.col("split") == name) for name in names}, excluded


# --- the folder, written whole ---------------------------------------------------------------------------------------
def stale_siblings(path: Path) -> list[Path]:
    """The folders an export into ``path`` killed midway (``kill -9``) leaves beside it: its staging folder
    ``<name>.tmp-xxxxxxxx`` (``tempfile.mkdtemp``'s 8 random characters) and the previous export renamed
    ``<name>.old-xxxxxxxx`` (8 hex digits). Nothing else matches, whatever its name starts with."""
    pattern = re.compile(re.escape(path.name) + r"\.(tmp-[a-z0-9_]{8}|old-[0-9a-f]{8})")
    if not path.parent.is_dir():
        return []
    return sorted(p for p in path.parent.iterdir() if pattern.fullmatch(p.name) and p.is_dir() and not p.is_symlink())


@contextlib.contextmanager
def staged_folder(path: Path) -> Iterator[Path]:
    """Yield an empty temporary sibling ``<path>.tmp-xxxx``; on success it replaces ``path`` whole (the old folder
    is removed), on error it is removed and ``path`` is left as it was.

    One export at a time per ``path`` (``locks.sibling_lock``: a second one fails naming the first), so the stale
    folders of an earlier killed export (``stale_siblings``) are removed first; a previous export it had renamed
    away and not yet replaced is put back instead. The new folder gets the mode the
    umask gives a plain ``mkdir`` (``corpus.shared_mode``), not ``mkdtemp``'s 0700."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sibling_lock(path):
        for stale in stale_siblings(path):
            if ".old-" in stale.name and not path.exists():
                os.replace(stale, path)  # killed between its two renames: the previous export comes back
            else:
                shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{path.name}.tmp-", dir=path.parent))
        corpus.shared_mode(tmp)
        with _replacing(path, tmp):
            yield tmp


@contextlib.contextmanager
def _replacing(path: Path, tmp: Path) -> Iterator[None]:
    """On success of the block, ``tmp`` replaces ``path`` (the old folder removed); ``tmp`` is removed either way."""
    try:
        yield
        old = path.with_name(f"{path.name}.old-{secrets.token_hex(4)}")
        if path.exists():
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            if old.exists():
                os.replace(old, path)
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_target(out_dir: Path, image_root: Path | None) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir}: output must be a folder, found a file")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MANIFEST).exists():
        raise ConfigError(
            f"{out_dir}: folder exists and is not a virl export (no {MANIFEST}); an export replaces its folder "
            "whole, so choose a new or empty folder"
        )
    if image_root is not None and out_dir.resolve() in (image_root.resolve(), *image_root.resolve().parents):
        raise ConfigError(f"{out_dir}: the image root {image_root} lies inside the output folder it would replace")


# --- parquet / jsonl -------------------------------------------------------------------------------------------------
def _write_corpus_files(
    splits: dict[str, pl.DataFrame], folder: Path, *, suffix: str, image_root: Path | None, **_: Any
) -> tuple[dict[str, str], int]:
    names = {}
    for name, frame in splits.items():
        root = image_root if suffix == "parquet" else None  # JSONL cannot declare a root
        names[name] = corpus.write(frame, folder / f"{name}.{suffix}", image_root=root).name
    return names, 0


# --- hf --------------------------------------------------------------------------------------------------------------
def _load_image(path: Path) -> bytes | str:
    """The file's bytes, or why they cannot be used (missing, unreadable, not an image)."""
    from PIL import Image, UnidentifiedImageError

    try:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)):  # reads the header only: catches non-images cheaply
            pass
    except (OSError, UnidentifiedImageError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return data


def _read_images(root: Path, rel_paths: list[str], progress: bool) -> dict[str, bytes | str]:
    from rich.progress import track

    # Threads: the work is file I/O, which releases the GIL.
    with ThreadPoolExecutor(max_workers=min(16, (os.cpu_count() or 4) * 2)) as pool:
        loaded = pool.map(_load_image, (root / p for p in rel_paths))
        found = track(loaded, total=len(rel_paths), description="reading images", disable=not progress,
                      transient=True)  # a missing-image error must not follow a leftover bar
        return dict(zip(rel_paths, found, strict=True))


def _missing_error(frames: list[pl.DataFrame], blobs: dict[str, bytes | str], root: Path) -> VirlError:
    bad_paths = [p for p, b in blobs.items() if isinstance(b, str)]
    bad = pl.concat(frames).filter(pl.col("image").struct.field("path").is_in(bad_paths))
    first = ", ".join(bad["id"].head(3).to_list())
    return VirlError(
        f"{len(bad_paths)} image file(s) missing or unreadable under {root} ({bad.height} records, e.g. {first}; "
        f"{bad_paths[0]}: {blobs[bad_paths[0]]}); fix the image root or pass missing_images='null'"
    )


def _hf_dataset(name: str, frame: pl.DataFrame, blobs: dict[str, bytes | str], features: Any) -> Any:
    import datasets
    import pyarrow as pa
    from datasets.table import InMemoryTable

    paths = frame["image"].struct.field("path").to_list()
    images = pa.array(
        [None if isinstance(blobs[p], str) else {"bytes": blobs[p], "path": p} for p in paths],
        type=features["image"].pa_type,
    )
    table = frame.to_arrow()
    columns = {c: images if c == "image" else table["image" if c == "image_ref" else c] for c in features}
    # polars writes large_string/large_list; the cast gives the exact Arrow layout the features declare.
    arrow = pa.table(columns).cast(features.arrow_schema)
    info = datasets.DatasetInfo(features=features)
    return datasets.Dataset(InMemoryTable(arrow), info=info, split=datasets.NamedSplit(name))


@contextlib.contextmanager
def _hf_progress_bars(enabled: bool) -> Iterator[None]:
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    if was_enabled and not enabled:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled and not enabled:
            datasets.enable_progress_bars()


def _write_hf(
    splits: dict[str, pl.DataFrame],
    folder: Path,
    *,
    image_root: Path | None,
    missing_images: str,
    progress: bool,
    **_: Any,
) -> tuple[dict[str, str], int]:
    import datasets

    if image_root is None:
        raise ConfigError("the hf export embeds the images: pass image_root (where the images' paths resolve)")
    frames = list(splits.values())
    rel_paths = pl.concat([f["image"].struct.field("path") for f in frames]).unique(maintain_order=True).to_list()
    blobs = _read_images(image_root, rel_paths, progress)
    n_bad = sum(isinstance(b, str) for b in blobs.values())
    if n_bad and missing_images == "error":
        raise _missing_error(frames, blobs, image_root)
    bad_paths = [p for p, b in blobs.items() if isinstance(b, str)]
    n_missing = sum(f["image"].struct.field("path").is_in(bad_paths).sum() for f in frames) if n_bad else 0
    features = hf_features()
    dd = datasets.DatasetDict({name: _hf_dataset(name, f, blobs, features) for name, f in splits.items()})
    with _hf_progress_bars(progress):
        dd.save_to_disk(str(folder))
    return {name: name for name in splits}, int(n_missing)


# --- coco ------------------------------------------------------------------------------------------------------------
def _normalized_phrase() -> pl.Expr:
    """Lower case, trimmed, inner whitespace collapsed; empty → ``region``."""
    text = pl.col("phrase").fill_null("").str.to_lowercase().str.replace_all(r"\s+", " ").str.strip_chars()
    return pl.when(text == "").then(pl.lit(EMPTY_PHRASE_CATEGORY)).otherwise(text)


def _step_boxes(frame: pl.DataFrame) -> pl.DataFrame:
    """One row per box: ``record_id, path, step, box_index, phrase, role, category, x1, y1, x2, y2``."""
    return (
        frame.select(
            pl.col("id").alias("record_id"), pl.col("image").struct.field("path"), "chain",
            pl.int_ranges(pl.col("chain").list.len()).alias("step"),
        )
        .explode("chain", "step")  # an empty chain / step yields no row
        .unnest("chain")
        .with_columns(pl.int_ranges(pl.col("boxes").list.len()).alias("box_index"))
        .explode("boxes", "box_index")
        .drop_nulls("boxes")
        .unnest("boxes")
        .with_columns(_normalized_phrase().alias("category"))
    )


def coco_categories(frame: pl.DataFrame) -> dict[str, int]:
    """Category ids: one per distinct normalized step phrase, sorted, ids 1..K (empty phrase → ``region``)."""
    names = sorted(_step_boxes(frame)["category"].unique().to_list())
    return {name: i for i, name in enumerate(names, 1)}


def _answer_bbox(records: pl.DataFrame) -> pl.Series:
    """COCO ``[x, y, w, h]`` of each box answer (``boxanswer.parse_box`` of the answer string), null elsewhere."""
    parsed = [parse_box(a) if t == BOX else None for a, t in zip(records["answer"], records["answer_type"])]
    found = [b for b in parsed if b is not None]
    xywh = iter(boxconv.canonical_to_coco_xywh(boxes.as_array(found)).tolist() if found else [])
    return pl.Series("answer_bbox", [next(xywh) if b is not None else None for b in parsed],
                     dtype=pl.List(pl.Float64))


def to_coco(
    frame: pl.DataFrame, *, image_root: str | os.PathLike[str] | None = None, categories: dict[str, int] | None = None
) -> dict[str, Any]:
    """A corpus frame → a COCO detection document (a dict ready for JSON).

    - ``images``: one per distinct image path, ids 1..N in first-seen order, ``file_name`` = the relative path,
      ``width``/``height`` as recorded;
    - ``categories``: ``coco_categories(frame)`` unless given (the export passes one set for all splits, so ids
      agree across split files);
    - ``annotations``: one per box, ``bbox = [x, y, w, h]`` (``boxconv.canonical_to_coco_xywh``), ``area``,
      ``iscrowd = 0``, and ``attributes = {record_id, step, box_index, phrase, role}``: a record's chain is its
      annotations sorted by ``(step, box_index)``;
    - ``virl_records``: per record ``id, image_id, question, answer, answer_type, question_type, source, n_steps``
      and ``answer_bbox``: a box answer (``answer_type="box"``) as COCO ``[x, y, w, h]``, else null;
    - ``info``: ``schema_version`` and ``image_root``.
    """
    categories = coco_categories(frame) if categories is None else categories
    images = (
        frame.select(pl.col("image").struct.unnest())
        .unique("path", keep="first", maintain_order=True)
        .with_row_index("id", offset=1)
        .select(pl.col("id").cast(pl.Int64), pl.col("path").alias("file_name"), "width", "height")
    )
    image_ids = images.select("file_name", image_id="id")
    box_rows = _step_boxes(frame).join(image_ids, left_on="path", right_on="file_name", maintain_order="left")
    xyxy = box_rows.select("x1", "y1", "x2", "y2").to_numpy().astype("float64").reshape(-1, 4)
    annotations = box_rows.select(
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("id"),
        "image_id",
        pl.col("category").replace_strict(categories, return_dtype=pl.Int64).alias("category_id"),
        pl.Series("bbox", boxconv.canonical_to_coco_xywh(xyxy).tolist(), dtype=pl.List(pl.Float64)),
        pl.Series("area", boxes.area(xyxy), dtype=pl.Float64),
        pl.lit(0).alias("iscrowd"),
        pl.struct("record_id", "step", "box_index", "phrase", "role").alias("attributes"),
    )
    records = (
        frame.with_columns(pl.col("image").struct.field("path"))
        .join(image_ids, left_on="path", right_on="file_name", maintain_order="left")
        .select(
            "id", "image_id", "question", "answer", "answer_type", "question_type",
            pl.col("provenance").struct.field("source"), pl.col("chain").list.len().alias("n_steps"),
        )
    )
    records = records.with_columns(_answer_bbox(records))
    return {
        "info": {
            "description": "virl visual rationale export: one annotation per chain box, chain order in attributes",
            "schema_version": SCHEMA_VERSION,
            "image_root": None if image_root is None else str(Path(image_root).resolve()),
        },
        "images": images.to_dicts(),
        "categories": [{"id": i, "name": n, "supercategory": "phrase"} for n, i in categories.items()],
        "annotations": annotations.to_dicts(),
        "virl_records": records.to_dicts(),
    }


def _write_coco(
    splits: dict[str, pl.DataFrame], folder: Path, *, image_root: Path | None, **_: Any
) -> tuple[dict[str, str], int]:
    categories = coco_categories(pl.concat(list(splits.values())))
    names = {}
    for name, frame in splits.items():
        doc = to_coco(frame, image_root=image_root, categories=categories)
        doc["info"]["split"] = name
        with corpus.atomic_path(folder / f"{name}.json") as tmp:
            tmp.write_bytes(orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY))
        names[name] = f"{name}.json"
    return names, 0


def _write_verl(*args: Any, **kwargs: Any) -> tuple[dict[str, str], int]:
    from virl_data.export.verl import write_verl  # imported on use: pyarrow.parquet and the verl row layout

    return write_verl(*args, **kwargs)


def _write_trl(*args: Any, **kwargs: Any) -> tuple[dict[str, str], int]:
    from virl_data.export.trl import write_trl  # imports this module: load it only when asked

    return write_trl(*args, **kwargs)


# --- entry point -----------------------------------------------------------------------------------------------------
def _writer(fmt: str) -> Any:
    writers = {
        "hf": _write_hf,
        "parquet": lambda *a, **k: _write_corpus_files(*a, suffix="parquet", **k),
        "jsonl": lambda *a, **k: _write_corpus_files(*a, suffix="jsonl", **k),
        "coco": _write_coco,
        "trl": _write_trl,
        "verl": _write_verl,
    }
    if fmt not in writers:
        raise ConfigError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    return writers[fmt]


def _manifest(result: ExportResult, statuses: Sequence[str] | None, image_root: Path | None) -> dict[str, Any]:
    return {
        "format": result.fmt,
        "schema_version": SCHEMA_VERSION,
        "statuses": None if statuses is None else list(statuses),
        "image_root": None if image_root is None else str(image_root.resolve()),
        "splits": {n: {"path": p.name, "records": result.counts[n]} for n, p in result.paths.items()},
        "excluded": result.excluded,
        "missing_images": result.missing_images,
    }


def export(
    df: pl.DataFrame | pl.LazyFrame,
    out_dir: str | os.PathLike[str],
    fmt: str,
    *,
    image_root: str | os.PathLike[str] | None,
    statuses: Sequence[str] | None = DEFAULT_STATUSES,
    missing_images: str = "error",
    progress: bool = False,
    options: dict[str, Any] | None = None,
) -> ExportResult:
    """Write ``df`` per split into ``out_dir`` as ``fmt`` (one of ``export_formats()``); see the module docstring.

    ``statuses=None`` exports every status. ``missing_images`` (hf only): ``"error"`` raises ``VirlError`` naming
    how many images and which records; ``"null"`` exports those records with ``image = None`` and counts them.
    ``options``: format-specific writer options (``verl``: ``family``, ``crop``); the other formats ignore them.
    """
    write = _writer(fmt)
    if missing_images not in MISSING_IMAGE_MODES:
        raise ConfigError(f"missing_images={missing_images!r}; valid: {', '.join(MISSING_IMAGE_MODES)}")
    statuses = _check_statuses(statuses)
    frame = df.collect() if isinstance(df, pl.LazyFrame) else df
    validate_schema(frame.schema, "frame to export")
    frame = frame.select(COLUMNS)
    splits, excluded = split_frames(frame, statuses)
    if not splits:
        raise VirlError(
            f"nothing to export: none of the {frame.height} records passed the selection ({excluded or 'empty'}); "
            "check the statuses (statuses=None exports all)"
        )
    out_dir, root = Path(out_dir), None if image_root is None else Path(image_root)
    _check_target(out_dir, root)
    with staged_folder(out_dir) as stage:
        names, n_missing = write(
            splits, stage, image_root=root, missing_images=missing_images, progress=progress, **(options or {})
        )
        result = ExportResult(
            fmt=fmt,
            out_dir=out_dir,
            paths={n: out_dir / names[n] for n in splits},
            counts={n: f.height for n, f in splits.items()},
            excluded=excluded,
            missing_images=n_missing,
        )
        corpus.write_json(_manifest(result, statuses, root), stage / MANIFEST)
    return result


def summary_table(result: ExportResult) -> Any:
    """A ``rich`` table of an export: records and path per split, then left-out counts per reason."""
    from rich.table import Table

    table = Table(title=f"export {result.fmt} → {result.out_dir}")
    for col in ("split", "records", "path"):
        table.add_column(col)
    for name, n in result.counts.items():
        table.add_row(name, str(n), str(result.paths[name]))
    for reason, n in result.excluded.items():
        table.add_row(f"[dim]left out: {reason}[/]", str(n), "")
    if result.missing_images:
        table.add_row("[yellow]exported without image[/]", str(result.missing_images), "")
    table.add_row("[bold]exported / input[/]", f"[bold]{result.n_exported} / {result.n_input}[/]", "")
    return table
