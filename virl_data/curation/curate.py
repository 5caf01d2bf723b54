"""Curation stages over a canonical corpus frame (``schema.polars_schema()``): stats, filter, dedup, split.

Every stage takes a ``pl.DataFrame`` or ``pl.LazyFrame`` and works with native polars expressions over the
``List(Struct)`` chain column (no row UDFs). Nothing is dropped silently: ``filter_report`` and ``dedup`` return
what they removed, and ``split`` returns every input row (records it does not assign keep ``split = null``).
(The module runs ~600 lines because it holds the four stages and the stats' rich/PNG renderers; each section is
short and independent, and could move out whole, e.g. the renderers to a ``curate_report`` module.)

Per-record helper columns (``HELPER_COLUMNS``), usable in ``filter`` expressions:

- ``n_steps``: chain length; ``n_boxes``: boxes over all steps; ``source``: ``provenance.source``;
- ``zoom_need``: the score of the ``zoom_need`` check when recorded, else ``area(U) / (width * height)`` with ``U``
  the union box of the final step (min x1/y1, max x2/y2 over its boxes); null without a final box or image size;
- ``min_box_area_frac``: ``min over all boxes of area(box) / (width * height)``.

Example:
    >>> from virl_data.miners.shapes import generate
    >>> from virl_data.core.schema import records_to_frame
    >>> df = records_to_frame(generate(40, seed=0))
    >>> s = stats(df)
    >>> s.total
    40
    >>> kept = filter_records(df, "pl.col('n_steps') >= 1").collect()
    >>> assigned = split(df.with_columns(status=pl.lit("accepted")), seed=0).collect()
    >>> assigned.height, assigned["split"].null_count()
    (40, 0)
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from virl_data.core.boxes import area_expr, union_list_expr
from virl_data.core.errors import ConfigError
from virl_data.core.schema import COLUMNS, STATUSES, polars_schema, validate_schema
from virl_data.curation.checks import rejection_reasons
from virl_data.storage.corpus import atomic_path

Frame = pl.DataFrame | pl.LazyFrame
DEFAULT_RATIOS: dict[str, float] = {"train": 0.8, "val": 0.1, "test": 0.1}
QUANTILES = (0.0, 0.1, 0.5, 0.9, 1.0)
# Fixed histogram edges, so the plots and JSON of two corpora compare bin by bin.
LOG_FRAC_RANGE = (-5.0, 0.0, 20)  # log10(box area / image area): 1e-5 .. 1 in quarter decades
ZOOM_RANGE = (0.0, 1.0, 20)


def _lazy(df: Frame) -> pl.LazyFrame:
    """A lazy view of a canonical corpus frame; a frame of another layout is a ``SchemaMismatchError``."""
    lf = df.lazy() if isinstance(df, pl.DataFrame) else df
    validate_schema(lf.collect_schema(), "curation input")
    return lf


# --- per-record helper expressions -----------------------------------------------------------------------------------
def _image_area() -> pl.Expr:
    """``width * height`` as float; null when either side is missing or not positive."""
    w = pl.col("image").struct.field("width").cast(pl.Float64)
    h = pl.col("image").struct.field("height").cast(pl.Float64)
    return pl.when((w > 0) & (h > 0)).then(w * h)


def _all_boxes() -> pl.Expr:
    """Every box of the chain, steps flattened in order: ``List(Struct{x1, y1, x2, y2})``."""
    return pl.col("chain").list.eval(pl.element().struct.field("boxes").explode(keep_nulls=False))


def zoom_need_expr() -> pl.Expr:
    """Zoom need per record: the recorded ``zoom_need`` check score, else ``area(final-step union) / image area``.

    E.g. final step ``[(10, 10, 30, 30)]`` on a 100x80 image → ``400 / 8000 = 0.05``.
    """
    recorded = pl.col("checks").list.eval(
        pl.element().filter(pl.element().struct.field("name") == "zoom_need").struct.field("score")
    ).list.first()
    final = union_list_expr(pl.col("chain").list.last().struct.field("boxes"))
    return pl.coalesce(recorded, area_expr(final) / _image_area()).alias("zoom_need")


HELPER_COLUMNS: dict[str, pl.Expr] = {
    "n_steps": pl.col("chain").list.len().cast(pl.Int64),
    "n_boxes": pl.col("chain").list.eval(pl.element().struct.field("boxes").list.len()).list.sum().cast(pl.Int64),
    "source": pl.col("provenance").struct.field("source"),
    "zoom_need": zoom_need_expr(),
    "min_box_area_frac": _all_boxes().list.eval(area_expr(pl.element())).list.min() / _image_area(),
}


def with_helpers(df: Frame) -> pl.LazyFrame:
    """The corpus with the ``HELPER_COLUMNS`` appended (drop them with ``.select(schema.COLUMNS)``)."""
    return _lazy(df).with_columns(expr.alias(name) for name, expr in HELPER_COLUMNS.items())


# --- stats -----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CorpusStats:
    """Small summary tables of a corpus. Count tables have the key column(s) and ``count``; quantile tables have
    ``metric, n, missing, p0, p10, p50, p90, p100``; histograms ``bin_lo, bin_hi, count``."""

    total: int
    by_source: pl.DataFrame
    by_status: pl.DataFrame
    by_source_status: pl.DataFrame
    by_chain_length: pl.DataFrame
    by_question_type: pl.DataFrame
    by_split: pl.DataFrame
    box_area: pl.DataFrame  # metrics area_px, area_frac (one row per box)
    box_log_frac_hist: pl.DataFrame  # log10 area fraction, values outside the range fall in the end bins
    zoom_need: pl.DataFrame
    zoom_need_hist: pl.DataFrame
    rejection_reasons: pl.DataFrame  # check, reason_code, count over failed checks


def _counts(df: pl.DataFrame, *keys: str) -> pl.DataFrame:
    out = df.group_by(keys).agg(pl.len().cast(pl.Int64).alias("count"))
    if keys == ("n_steps",):
        return out.sort("n_steps")
    return out.sort(["count", *keys], descending=[True] + [False] * len(keys), nulls_last=True)


def _quantiles(df: pl.DataFrame, metric: str, column: str) -> dict[str, Any]:
    values = df.get_column(column).drop_nulls().drop_nans()
    row: dict[str, Any] = {"metric": metric, "n": values.len(), "missing": df.height - values.len()}
    for q in QUANTILES:
        row[f"p{round(q * 100)}"] = values.quantile(q, "linear") if values.len() else None
    return row


def _quantile_table(rows: list[dict[str, Any]]) -> pl.DataFrame:
    schema = {"metric": pl.String, "n": pl.Int64, "missing": pl.Int64}
    schema |= {f"p{round(q * 100)}": pl.Float64 for q in QUANTILES}
    return pl.DataFrame(rows, schema=schema, orient="row")


def histogram(values: pl.Series, lo: float, hi: float, n_bins: int) -> pl.DataFrame:
    """Counts of ``values`` in ``n_bins`` equal bins over ``[lo, hi]``; values beyond the ends (±inf included) go in
    the end bins; null/NaN values are left out. Columns ``bin_lo, bin_hi, count`` (every bin, zeros included).

    >>> histogram(pl.Series([0.1, 0.2, 0.9, 5.0]), 0.0, 1.0, 2)["count"].to_list()
    [2, 2]
    """
    width = (hi - lo) / n_bins
    finite = values.cast(pl.Float64).drop_nulls().drop_nans()
    index = ((finite.clip(lo, hi) - lo) / width).floor().cast(pl.Int64).clip(0, n_bins - 1)
    counts = index.alias("bin").to_frame().group_by("bin").agg(pl.len().cast(pl.Int64).alias("count"))
    bins = pl.DataFrame({"bin": np.arange(n_bins, dtype=np.int64)})
    return (
        bins.join(counts, on="bin", how="left")
        .sort("bin")
        .select(
            (lo + pl.col("bin") * width).alias("bin_lo"),
            (lo + (pl.col("bin") + 1) * width).alias("bin_hi"),
            pl.col("count").fill_null(0),
        )
    )


def stats(df: Frame) -> CorpusStats:
    """Counts, box-area and zoom-need distributions and rejection reasons of a corpus (one pass per table)."""
    lf = with_helpers(df)
    per_record = lf.select(
        "source", "status", "n_steps", "question_type", "split", "zoom_need"
    )
    per_box = (
        lf.select(_all_boxes().alias("box"), _image_area().alias("image_area"))
        .explode("box", keep_nulls=False)
        .select(
            area_expr(pl.col("box")).alias("area_px"),
            (area_expr(pl.col("box")) / pl.col("image_area")).alias("area_frac"),
        )
    )
    rec, boxes = pl.collect_all([per_record, per_box])
    return CorpusStats(
        total=rec.height,
        by_source=_counts(rec, "source"),
        by_status=_counts(rec, "status"),
        by_source_status=_counts(rec, "source", "status"),
        by_chain_length=_counts(rec, "n_steps"),
        by_question_type=_counts(rec, "question_type"),
        by_split=_counts(rec, "split"),
        box_area=_quantile_table(
            [_quantiles(boxes, "area_px", "area_px"), _quantiles(boxes, "area_frac", "area_frac")]
        ),
        box_log_frac_hist=histogram(boxes["area_frac"].log10(), *LOG_FRAC_RANGE),
        zoom_need=_quantile_table([_quantiles(rec, "zoom_need", "zoom_need")]),
        zoom_need_hist=histogram(rec["zoom_need"], *ZOOM_RANGE),
        rejection_reasons=rejection_reasons(lf.select("checks")),
    )


def stats_to_dict(s: CorpusStats) -> dict[str, Any]:
    """JSON-able form: ``{"total": n, "by_source": [{"source": ..., "count": ...}, ...], ...}``."""
    out: dict[str, Any] = {}
    for f in fields(s):
        value = getattr(s, f.name)
        out[f.name] = value.to_dicts() if isinstance(value, pl.DataFrame) else value
    return out


def _cell(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _rich_table(title: str, df: pl.DataFrame) -> Any:
    from rich.table import Table

    table = Table(title=title)
    for name, dtype in df.schema.items():
        table.add_column(name, justify="right" if dtype.is_numeric() else "left")
    for row in df.iter_rows():
        table.add_row(*(_cell(v) for v in row))
    return table


def render_stats(s: CorpusStats, console: Any) -> None:
    """Print the statistics as rich tables on ``console`` (a ``rich.console.Console``)."""
    console.print(f"[bold]{s.total}[/bold] records")
    for title, df in (
        ("records by source", s.by_source),
        ("records by status", s.by_status),
        ("records by chain length", s.by_chain_length),
        ("records by question type", s.by_question_type),
        ("records by split", s.by_split),
        ("box area (per box)", s.box_area),
        ("zoom need (per record; lower = smaller final region)", s.zoom_need),
        ("rejection reasons (failed checks)", s.rejection_reasons),
    ):
        if df.height:
            console.print(_rich_table(title, df))


def _bars(ax: Any, hist: pl.DataFrame, xlabel: str) -> None:
    lo, hi = hist["bin_lo"].to_numpy(), hist["bin_hi"].to_numpy()
    ax.bar(lo, hist["count"].to_numpy(), width=hi - lo, align="edge", edgecolor="white")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")


def plot_stats(s: CorpusStats, path: str | os.PathLike[str]) -> Path:
    """Write a 2x2 PNG (records by source and status, chain lengths, log10 box-area fraction, zoom need) atomically.

    Uses the Agg canvas directly (no pyplot), so it never touches the caller's matplotlib backend.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(11, 8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots(2, 2)
    table = s.by_source_status.pivot(on="status", index="source", values="count", sort_columns=True).fill_null(0)
    sources = table["source"].fill_null("(none)").to_list()
    bottom = np.zeros(len(sources))
    for status in table.columns[1:]:
        counts = table[status].to_numpy()
        ax[0, 0].bar(sources, counts, bottom=bottom, label=status)
        bottom += counts
    ax[0, 0].set_title(f"records by source and status (total {s.total})")
    if sources:
        ax[0, 0].legend()
    ax[0, 1].bar(s.by_chain_length["n_steps"].to_numpy(), s.by_chain_length["count"].to_numpy())
    ax[0, 1].set_title("chain length")
    ax[0, 1].set_xlabel("steps")
    ax[0, 1].xaxis.set_major_locator(MaxNLocator(integer=True))
    _bars(ax[1, 0], s.box_log_frac_hist, "log10(box area / image area)")
    ax[1, 0].set_title("box area fraction (per box)")
    _bars(ax[1, 1], s.zoom_need_hist, "area(final-step union) / image area")
    ax[1, 1].set_title("zoom need (per record)")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return Path(path)


# --- filter ----------------------------------------------------------------------------------------------------------
_FILTER_NAMESPACE = {"pl": pl, "col": pl.col, "lit": pl.lit}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _helper_schema() -> pl.Schema:
    return with_helpers(pl.LazyFrame(schema=polars_schema())).collect_schema()


def filter_expr(expression: str) -> pl.Expr:
    """Parse a polars expression string selecting rows to keep; checked against the corpus + helper columns.

    Only ``pl``, ``col`` and ``lit`` are in scope (no builtins, no dunder names). A syntax error, an unknown name or
    column, or a non-boolean result raises ``ConfigError`` with a one-line message.

    >>> filter_expr("(pl.col('n_steps') >= 2) & (col('source') == 'shapes')") is not None
    True
    """
    where = f"filter expression {expression!r}"
    if "__" in expression:
        raise ConfigError(f"{where}: names with '__' are not allowed")
    try:
        expr = eval(compile(expression, "<filter>", "eval"), {"__builtins__": {}}, dict(_FILTER_NAMESPACE))
    except SyntaxError as exc:
        raise ConfigError(f"{where}: syntax error at column {exc.offset}: {exc.msg}") from None
    except NameError as exc:
        raise ConfigError(f"{where}: {exc}; only pl, col and lit are defined (use pl.col('name'))") from None
    except Exception as exc:  # whatever the user's code raised, it is their input's fault
        raise ConfigError(f"{where}: {type(exc).__name__}: {_first_line(exc)}") from None
    if not isinstance(expr, pl.Expr):
        raise ConfigError(f"{where}: evaluates to {type(expr).__name__}, not a polars expression")
    try:
        dtype = pl.LazyFrame(schema=_helper_schema()).select(expr.alias("_keep")).collect_schema()["_keep"]
    except pl.exceptions.ColumnNotFoundError as exc:
        known = ", ".join([*COLUMNS, *HELPER_COLUMNS])
        raise ConfigError(f"{where}: unknown column ({_first_line(exc)}); columns: {known}") from None
    except Exception as exc:  # polars' schema/type errors
        raise ConfigError(f"{where}: {type(exc).__name__}: {_first_line(exc)}") from None
    if dtype != pl.Boolean:
        raise ConfigError(f"{where}: evaluates to {dtype}, not a boolean")
    return expr


def filter_records(df: Frame, expression: str | pl.Expr) -> pl.LazyFrame:
    """The rows where ``expression`` is true (null counts as false), with exactly the canonical columns."""
    expr = filter_expr(expression) if isinstance(expression, str) else expression
    return with_helpers(df).filter(expr).select(COLUMNS)


@dataclass(frozen=True)
class FilterResult:
    """The kept rows (canonical columns) and the input count; ``n_removed = n_in - kept.height``."""

    kept: pl.DataFrame
    n_in: int

    @property
    def n_removed(self) -> int:
        return self.n_in - self.kept.height


def filter_report(df: Frame, expression: str | pl.Expr) -> FilterResult:
    """``filter_records`` collected, with the input count, so the number removed is reported."""
    lf = _lazy(df)
    kept, n_in = pl.collect_all([filter_records(lf, expression), lf.select(pl.len())])
    return FilterResult(kept=kept, n_in=int(n_in.item()))


# --- dedup -----------------------------------------------------------------------------------------------------------
def normalized_question_expr(column: str = "question") -> pl.Expr:
    """Lowercase, whitespace runs collapsed to one space, trailing punctuation/space stripped.

    ``"  What colour   is X?! "`` → ``"what colour is x"``.
    """
    return (
        pl.col(column).str.to_lowercase().str.replace_all(r"\s+", " ")
        .str.replace(r"[\p{P}\s]+$", "").str.strip_chars()
    )


def _sha1_file(path: Path) -> str | None:
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha1").hexdigest()
    except OSError:
        return None


def hash_files(paths: Sequence[str], root: str | os.PathLike[str], *, workers: int = 8) -> dict[str, str | None]:
    """sha1 hex of each file ``root / path`` (None where unreadable); a thread pool when there are many files."""
    root = Path(root)
    files = [root / p for p in paths]
    if len(files) <= 16 or workers <= 1:
        digests = [_sha1_file(f) for f in files]
    else:
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            digests = list(pool.map(_sha1_file, files))
    return dict(zip(paths, digests, strict=True))


@dataclass(frozen=True)
class DedupResult:
    """``kept``: the first record of each duplicate set, in input order; ``removed``: the others, canonical columns
    plus ``duplicate_of`` (the kept record's id). ``identity``: how many records' images were identified by a
    recorded sha1 / a hashed file / only their path; ``notes`` says when paths had to stand in for content.

    Unpacks as ``kept, removed = dedup(df)``.
    """

    kept: pl.LazyFrame
    removed: pl.DataFrame
    n_in: int
    identity: dict[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def n_removed(self) -> int:
        return self.removed.height

    def __iter__(self) -> Iterator[Any]:
        return iter((self.kept, self.removed))


def _content_hashes(frame: pl.DataFrame, image_root: str | os.PathLike[str] | None, workers: int) -> pl.DataFrame:
    """``path → file_sha1`` for the images without a recorded sha1 (empty without an image root)."""
    path = pl.col("image").struct.field("path")
    unhashed = frame.filter(pl.col("image").struct.field("sha1").is_null()).select(path.unique(maintain_order=True))
    digests = {} if image_root is None else hash_files(unhashed["path"].to_list(), image_root, workers=workers)
    return pl.DataFrame(
        {"_path": list(digests), "_file_sha1": list(digests.values())},
        schema={"_path": pl.String, "_file_sha1": pl.String},
    )


DEDUP_KEYS = ("_content", "_question")
"""The columns ``dedup_keys`` adds that make two records duplicates when both are equal."""


def dedup_keys(frame: pl.DataFrame, image_root: str | os.PathLike[str] | None = None, *,
               workers: int = 8) -> pl.DataFrame:
    """``frame`` with the duplicate keys: ``_content`` (the image's ``sha1``, else ``sha1`` of its file under
    ``image_root``, else ``"path:<path>"``), ``_question`` (``normalized_question_expr``) and ``_identity`` (which of
    ``sha1`` / ``file`` / ``path`` gave ``_content``). Row-local, so any slice of a corpus gets the same keys.

    >>> from virl_data.miners.shapes import generate
    >>> from virl_data.core.schema import records_to_frame
    >>> dedup_keys(records_to_frame(generate(2, seed=0)))["_identity"].to_list()
    ['path', 'path']
    """
    hashes = _content_hashes(frame, image_root, workers)
    sha1, path = pl.col("image").struct.field("sha1"), pl.col("image").struct.field("path")
    return (
        frame.with_columns(path.alias("_path"))
        .join(hashes, on="_path", how="left", maintain_order="left")
        .with_columns(
            pl.coalesce(sha1, "_file_sha1", pl.lit("path:") + path).alias("_content"),
            pl.when(sha1.is_not_null()).then(pl.lit("sha1"))
            .when(pl.col("_file_sha1").is_not_null()).then(pl.lit("file"))
            .otherwise(pl.lit("path")).alias("_identity"),
            normalized_question_expr().alias("_question"),
        )
        .drop("_path", "_file_sha1")
    )


def dedup_notes(identity: Mapping[str, int], image_root: str | os.PathLike[str] | None) -> tuple[str, ...]:
    """The note ``DedupResult.notes`` carries when ``identity["path"]`` records were compared by path."""
    n_path = identity.get("path", 0)
    if not n_path:
        return ()
    why = "no image root was given" if image_root is None else f"their file under {image_root} was unreadable"
    return (f"{n_path} records have no recorded sha1 and {why}: their images were compared by path",)


def dedup(df: Frame, image_root: str | os.PathLike[str] | None = None, *, workers: int = 8) -> DedupResult:
    """Remove duplicates: same image content and same normalized question; the first in input order is kept.

    Image content = ``image.sha1`` when recorded, else the sha1 of the file under ``image_root``, else (no root, or
    an unreadable file) the image path, which ``notes`` reports.
    """
    frame = _lazy(df).collect()
    keys = list(DEDUP_KEYS)
    marked = (
        dedup_keys(frame, image_root, workers=workers)
        .with_columns(
            pl.col("id").first().over(keys).alias("duplicate_of"),
            pl.struct(keys).is_first_distinct().alias("_first"),
        )
    )
    identity = dict(marked.group_by("_identity").len().iter_rows())
    return DedupResult(
        kept=marked.filter("_first").select(COLUMNS).lazy(),
        removed=marked.filter(~pl.col("_first")).select(*COLUMNS, "duplicate_of"),
        n_in=frame.height,
        identity={k: identity.get(k, 0) for k in ("sha1", "file", "path")},
        notes=dedup_notes(identity, image_root),
    )


# --- split -----------------------------------------------------------------------------------------------------------
def check_ratios(ratios: Mapping[str, float]) -> dict[str, float]:
    """Split fractions: non-empty names, each finite and > 0, summing to 1 (±1e-6); else ``ConfigError``."""
    if not ratios:
        raise ConfigError("split ratios are empty; give e.g. train=0.8,val=0.1,test=0.1")
    out: dict[str, float] = {}
    for name, value in ratios.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"split name {name!r} must be a non-empty string")
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"split ratio {name}={value!r} is not a number") from None
        if not np.isfinite(value) or value <= 0:
            raise ConfigError(f"split ratio {name}={value} must be positive")
        out[name] = value
    total = sum(out.values())
    if abs(total - 1.0) > 1e-6:
        raise ConfigError(f"split ratios must sum to 1, got {total:.6g} ({out})")
    return out


def group_key_expr(group_by: str) -> pl.Expr:
    """The split's group of a record: its image (``sha1:<sha1>``, else ``path:<path>``) or the record itself."""
    if group_by == "image":
        image = pl.col("image").struct
        return pl.coalesce(pl.lit("sha1:") + image.field("sha1"), pl.lit("path:") + image.field("path"))
    if group_by == "record":
        return pl.col("id")
    raise ConfigError(f"split group_by={group_by!r} is unknown; use 'image' or 'record'")


def stable_order(keys: Sequence[str], seed: int) -> np.ndarray:
    """A seeded pseudo-random rank per key: the first 8 bytes of ``sha1(f"{seed}:{key}")`` as uint64.

    Unlike ``Expr.hash`` (not stable across polars versions) or a numpy stream (tied to numpy's generator), sha1
    gives the same order on every machine and version, and a key's rank does not depend on the other keys, so
    adding records to a corpus moves few existing groups. Costs ~1 µs per key.
    """
    digests = b"".join(hashlib.sha1(f"{seed}:{k}".encode()).digest()[:8] for k in keys)
    return np.frombuffer(digests, dtype=">u8").astype(np.uint64)


def assign_groups(groups: pl.DataFrame, ratios: dict[str, float], seed: int) -> pl.DataFrame:
    """``_key → _split``. Within each stratum the groups, in seeded order, are laid end to end over ``[0, N)``
    (``N`` = the stratum's records); a group goes to split ``i`` when its midpoint ``(cum - size/2) / N`` lies in
    ``[c_{i-1}, c_i)``, ``c_i`` the cumulative ratios. Unit groups give exactly ``round(N c_i) - round(N c_{i-1})``
    records per split; whole groups move a split's count by at most half the straddling group."""
    bounds = np.cumsum(list(ratios.values()))[:-1].tolist()
    names = dict(enumerate(ratios))
    mid = (pl.col("_cum") - pl.col("_size") / 2) / pl.col("_total")
    index = pl.sum_horizontal([(mid >= b).cast(pl.Int64) for b in bounds]) if bounds else pl.lit(0, pl.Int64)
    return (
        groups.with_columns(_order=pl.Series(stable_order(groups["_key"].to_list(), seed)))
        .sort("_stratum", "_order", "_key")
        .with_columns(
            _cum=pl.col("_size").cum_sum().over("_stratum"),
            _total=pl.col("_size").sum().over("_stratum"),
        )
        .select("_key", index.replace_strict(names, return_dtype=pl.String).alias("_split"))
    )


def split(
    df: Frame,
    ratios: Mapping[str, float] | None = None,
    seed: int = 0,
    group_by: str = "image",
    statuses: Sequence[str] = ("accepted", "reviewed"),
) -> pl.LazyFrame:
    """Set the ``split`` column: grouped (no image in two splits), stratified by source, seeded and deterministic.

    Records whose status is in ``statuses`` get a split; the others get ``split = null``; rows in = rows out, same
    order. Image identity = ``sha1`` when recorded, else the path. An image shared by several sources is one group,
    placed in the stratum of its first source by name (so no image ever crosses splits). Order within a stratum:
    ``stable_order``; assignment: ``assign_groups``.
    """
    ratios = check_ratios(DEFAULT_RATIOS if ratios is None else ratios)
    unknown = [s for s in statuses if s not in STATUSES]
    if unknown:
        raise ConfigError(f"split statuses {unknown} unknown; expected some of {', '.join(STATUSES)}")
    lf = _lazy(df).with_columns(
        group_key_expr(group_by).alias("_key"), pl.col("status").is_in(list(statuses)).alias("_eligible")
    )
    groups = (
        lf.filter("_eligible")
        .group_by("_key")
        .agg(pl.col("provenance").struct.field("source").min().alias("_stratum"), pl.len().alias("_size"))
        .collect()
    )
    assigned = assign_groups(groups, ratios, seed)
    return (
        lf.join(assigned.lazy(), on="_key", how="left", maintain_order="left")
        .with_columns(pl.when("_eligible").then(pl.col("_split")).otherwise(pl.lit(None, pl.String)).alias("split"))
        .select(COLUMNS)
    )


__all__ = [
    "DEDUP_KEYS",
    "DEFAULT_RATIOS",
    "HELPER_COLUMNS",
    "CorpusStats",
    "DedupResult",
    "FilterResult",
    "check_ratios",
    "assign_groups",
    "dedup",
    "dedup_keys",
    "dedup_notes",
    "filter_expr",
    "filter_records",
    "group_key_expr",
    "filter_report",
    "hash_files",
    "histogram",
    "normalized_question_expr",
    "plot_stats",
    "render_stats",
    "split",
    "stable_order",
    "stats",
    "stats_to_dict",
    "with_helpers",
    "zoom_need_expr",
]
