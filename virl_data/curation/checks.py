"""Named, composable checks over a canonical corpus frame, and ``verify`` which runs them.

Every check is a plain function ``fn(df, cfg, image_root) -> df`` over a frame with ``schema.polars_schema()``; it
adds one column ``_check_<name>`` holding ``Struct{name, passed, reason, score, skipped}`` (the ``CHECK`` layout of
the schema), and ``box_inside_image`` may rewrite ``chain`` (clipping). The work is column-wise polars: chains are
exploded to one row per step or per box, judged with the ``boxes.py`` expressions, and aggregated back by row; only
``image_readable`` does I/O (a thread pool over the unique image paths).

Reasons are short snake_case codes, optionally followed by ``": detail"``; steps and boxes are counted from 0:

=====================  ===============================================================================================
check                  failure reasons
=====================  ===============================================================================================
``box_inside_image``   ``box_outside_image: step 2 box 0 exceeds by 14.0px``, ``image_size_invalid``; a box sticking
                       out by ≤ ``tolerance_px`` is clipped silently, one beyond it is clipped (reason ``clipped``,
                       passes) under ``outside_policy="clip"`` or rejected under ``"reject"``
``box_nondegenerate``  ``box_inverted``, ``box_degenerate`` (zero size, non-finite), ``box_too_small`` (area <
                       ``min_box_area``), each ``: step i box j``
``chain_length``       ``empty_chain``, ``chain_too_short: 1 < 2``, ``chain_too_long: 9 > 8``, ``empty_step: step i``
``distinct_steps``     ``duplicate_step: steps 0 and 2 (IoU 0.95)`` (IoU of the steps' union boxes ≥
                       ``duplicate_iou``); score = the largest IoU between two steps
``answer_nonempty``    ``empty_answer``, ``empty_question`` (after strip)
``image_readable``     ``image_size_invalid: recorded 0x480``, ``image_missing: <path>``, ``image_unreadable: <error>``,
                       ``image_size_mismatch: recorded 640x480, file 320x240``; ``skipped: no image root`` without root
``zoom_need``          never fails; score = area(union of the final step's boxes) / (width * height)
=====================  ===============================================================================================

Example:
    >>> from virl_data.core.schema import records_to_frame
    >>> from virl_data.core.types import Box, ImageRef, Provenance, RationaleRecord, RationaleStep
    >>> rec = RationaleRecord(id="r", image=ImageRef("a.png", 100, 50), question="q?", answer="a",
    ...     chain=(RationaleStep((Box(0, 0, 10, 10),)), RationaleStep((Box(0, 0, 10, 10),))),
    ...     provenance=Provenance("demo"))
    >>> out = verify(records_to_frame([rec]))
    >>> out["status"][0], rejection_reasons(out).rows()
    ('rejected', [('distinct_steps', 'duplicate_step', 1)])
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from virl_data.core.boxes import area_expr, clip_expr, iou_expr, outside_expr, union_list_expr, valid_expr
from virl_data.core.errors import ConfigError
from virl_data.core.schema import COLUMNS, polars_schema, validate_schema
from virl_data.core.types import Status

CHECK_NAMES: tuple[str, ...] = (
    "box_inside_image",
    "box_nondegenerate",
    "chain_length",
    "distinct_steps",
    "answer_nonempty",
    "image_readable",
    "zoom_need",
)
"""Every check, in the order ``verify`` runs them (clipping first, so later checks see the clipped boxes)."""

OUTSIDE_POLICIES = ("reject", "clip")
_ROW = "__virl_row"  # row index used to aggregate exploded rows back; never leaves this module
_COORDS = ("x1", "y1", "x2", "y2")


@dataclass(frozen=True)
class CheckConfig:
    """Thresholds and policies of the checks; validated on construction (``ConfigError`` naming the bad value).

    >>> CheckConfig(enabled=("chain_length", "zoom_need")).enabled
    ('chain_length', 'zoom_need')
    """

    tolerance_px: float = 2.0
    outside_policy: str = "reject"
    min_box_area: float = 4.0
    min_steps: int = 1
    max_steps: int = 8
    duplicate_iou: float = 0.9
    enabled: tuple[str, ...] = CHECK_NAMES

    def __post_init__(self) -> None:
        if isinstance(self.enabled, str) or not all(isinstance(n, str) for n in self.enabled):
            raise ConfigError(f"enabled must be a list of check names, got {self.enabled!r}")
        object.__setattr__(self, "enabled", tuple(self.enabled))
        unknown = [n for n in self.enabled if n not in CHECK_NAMES]
        if unknown:
            raise ConfigError(f"unknown check {unknown[0]!r} in enabled; valid checks: {', '.join(CHECK_NAMES)}")
        if len(set(self.enabled)) != len(self.enabled):
            raise ConfigError(f"enabled names a check twice: {', '.join(self.enabled)}")
        if self.outside_policy not in OUTSIDE_POLICIES:
            raise ConfigError(f"outside_policy must be 'reject' or 'clip', got {self.outside_policy!r}")
        if not self.tolerance_px >= 0:
            raise ConfigError(f"tolerance_px must be >= 0, got {self.tolerance_px!r}")
        if not self.min_box_area >= 0:
            raise ConfigError(f"min_box_area must be >= 0, got {self.min_box_area!r}")
        if not 1 <= self.min_steps <= self.max_steps:
            raise ConfigError(f"need 1 <= min_steps <= max_steps, got min_steps={self.min_steps}, "
                              f"max_steps={self.max_steps}")
        if not 0 < self.duplicate_iou <= 1:
            raise ConfigError(f"duplicate_iou must be in (0, 1], got {self.duplicate_iou!r}")


# --- helpers ---------------------------------------------------------------------------------------------------------
def _result(
    name: str,
    passed: pl.Expr,
    reason: pl.Expr | None = None,
    score: pl.Expr | None = None,
    skipped: pl.Expr | bool = False,
) -> pl.Expr:
    """The ``_check_<name>`` struct column; a null ``passed`` (nothing to judge) counts as passed."""
    return pl.struct(
        pl.lit(name, pl.String).alias("name"),
        passed.fill_null(True).alias("passed"),
        (pl.lit(None, pl.String) if reason is None else reason.cast(pl.String)).alias("reason"),
        (pl.lit(None, pl.Float64) if score is None else score.cast(pl.Float64)).alias("score"),
        (skipped if isinstance(skipped, pl.Expr) else pl.lit(skipped)).alias("skipped"),
    ).alias(f"_check_{name}")


def _width() -> pl.Expr:
    return pl.col("image").struct.field("width").cast(pl.Float64)


def _height() -> pl.Expr:
    return pl.col("image").struct.field("height").cast(pl.Float64)


def _size_valid() -> pl.Expr:
    return ((_width() > 0) & (_height() > 0)).fill_null(False)


def _steps(df: pl.DataFrame) -> pl.DataFrame:
    """One row per step: ``_ROW, step, w, h`` and the step's fields; empty and null chains give no rows."""
    return (
        df.select(
            pl.col(_ROW), _width().alias("w"), _height().alias("h"),
            pl.col("chain"), pl.int_ranges(pl.col("chain").list.len(), dtype=pl.Int32).alias("step"),
        )
        .explode(["chain", "step"], empty_as_null=False, keep_nulls=False)
        .unnest("chain")
    )


def _boxes(df: pl.DataFrame) -> pl.DataFrame:
    """One row per box: ``_ROW, step, box, w, h, b`` (``b`` the ``{x1, y1, x2, y2}`` struct), in chain order."""
    return (
        _steps(df)
        .select(_ROW, "step", "w", "h", pl.col("boxes").alias("b"),
                pl.int_ranges(pl.col("boxes").list.len(), dtype=pl.Int32).alias("box"))
        .explode(["b", "box"], empty_as_null=False, keep_nulls=False)
    )


def _where() -> pl.Expr:
    return pl.format("step {} box {}", "step", "box")


def _num(e: pl.Expr, digits: int) -> pl.Expr:
    return e.round(digits).cast(pl.String)


def _join_rows(df: pl.DataFrame, per_row: pl.DataFrame) -> pl.DataFrame:
    """Left-join per-row results on the row index, keeping ``df``'s row order."""
    return df.join(per_row, on=_ROW, how="left", maintain_order="left")


def _with_row_index(df: pl.DataFrame) -> pl.DataFrame:
    return df if _ROW in df.columns else df.with_row_index(_ROW)


def _finish(df: pl.DataFrame, had_index: bool, result: pl.Expr, helpers: list[str]) -> pl.DataFrame:
    df = df.with_columns(result).drop(helpers)
    return df if had_index else df.drop(_ROW)


# --- 1. box_inside_image ---------------------------------------------------------------------------------------------
def box_inside_image(df: pl.DataFrame, cfg: CheckConfig, image_root: Path | None = None) -> pl.DataFrame:
    """Boxes lie inside ``[0, width] x [0, height]``.

    ``excess = max(-x1, -y1, x2 - width, y2 - height, 0)`` per box (``boxes.outside_expr``); non-finite boxes are
    left to ``box_nondegenerate``. ``excess ≤ tolerance_px``: clipped silently. Beyond: clipped with reason
    ``clipped`` under ``outside_policy="clip"``, else failed ``box_outside_image: step i box j exceeds by E px``
    (the first such box in chain order). Score = the largest excess. An image size ≤ 0 fails ``image_size_invalid``.
    """
    had_index, df = _ROW in df.columns, _with_row_index(df)
    bx = _boxes(df).filter(pl.all_horizontal([pl.col("b").struct.field(c).is_finite() for c in _COORDS]))
    bx = bx.with_columns(outside_expr(pl.col("b"), pl.col("w"), pl.col("h")).alias("excess"))
    beyond = pl.col("excess") > cfg.tolerance_px
    clip_box = (pl.col("excess") > 0) & (~beyond | (cfg.outside_policy == "clip"))
    per_row = bx.group_by(_ROW).agg(
        pl.col("excess").max().alias("_excess"),
        pl.format("box_outside_image: {} exceeds by {}px", _where(), _num(pl.col("excess"), 1))
        .filter(beyond).first().alias("_outside"),
        clip_box.any().alias("_clip"),
    )
    df = _join_rows(df, per_row)
    to_clip = df.filter(pl.col("_clip").fill_null(False) & _size_valid())
    if to_clip.height:
        df = _rewrite_chains(df, to_clip, bx.filter(clip_box))
    reason = (
        pl.when(~_size_valid()).then(pl.format("image_size_invalid: recorded {}x{}", *_size_text()))
        .when(pl.col("_outside").is_not_null())
        .then(pl.lit("clipped") if cfg.outside_policy == "clip" else pl.col("_outside"))
    )
    passed = _size_valid() & (pl.col("_outside").is_null() | (cfg.outside_policy == "clip"))
    result = _result("box_inside_image", passed, reason, pl.col("_excess").fill_null(0.0))
    return _finish(df, had_index, result, ["_excess", "_outside", "_clip"])


def _rewrite_chains(df: pl.DataFrame, rows: pl.DataFrame, clipped: pl.DataFrame) -> pl.DataFrame:
    """Replace the chains of ``rows`` by their steps with the boxes of ``clipped`` clipped to the image."""
    new_boxes = clipped.select(
        _ROW, "step", "box", clip_expr(pl.col("b"), pl.col("w"), pl.col("h")).alias("nb")
    )
    boxes = (
        _boxes(rows)
        .join(new_boxes, on=[_ROW, "step", "box"], how="left", maintain_order="left")
        .group_by([_ROW, "step"], maintain_order=True)
        .agg(pl.coalesce("nb", "b").alias("new_boxes"))
    )
    step_fields = polars_schema()["chain"].inner.fields  # type: ignore[attr-defined]
    chains = (
        _steps(rows)
        .join(boxes, on=[_ROW, "step"], how="left", maintain_order="left")
        .with_columns(pl.coalesce("new_boxes", "boxes").alias("boxes"))
        .group_by(_ROW, maintain_order=True)
        .agg(pl.struct([f.name for f in step_fields]).sort_by("step").alias("_new_chain"))
    )
    return (
        _join_rows(df, chains)
        .with_columns(pl.coalesce("_new_chain", "chain").alias("chain"))
        .drop("_new_chain")
    )


def _size_text() -> tuple[pl.Expr, pl.Expr]:
    img = pl.col("image")
    return tuple(  # type: ignore[return-value]
        img.struct.field(f).cast(pl.String).fill_null("null") for f in ("width", "height")
    )


# --- 2. box_nondegenerate --------------------------------------------------------------------------------------------
def box_nondegenerate(df: pl.DataFrame, cfg: CheckConfig, image_root: Path | None = None) -> pl.DataFrame:
    """Every box is finite with ``x1 < x2``, ``y1 < y2`` and ``(x2 - x1) * (y2 - y1) ≥ min_box_area``.

    Reasons (the first bad box in chain order): ``box_degenerate`` (non-finite or zero width/height),
    ``box_inverted`` (``x1 > x2`` or ``y1 > y2``), ``box_too_small`` (with its area).
    """
    had_index, df = _ROW in df.columns, _with_row_index(df)
    b = pl.col("b")
    x1, y1, x2, y2 = (b.struct.field(c) for c in _COORDS)
    finite = pl.all_horizontal([c.is_finite() for c in (x1, y1, x2, y2)]).fill_null(False)
    area = area_expr(b)
    reason = (
        pl.when(~finite).then(pl.format("box_degenerate: {} not finite", _where()))
        .when((x1 > x2) | (y1 > y2)).then(pl.format("box_inverted: {}", _where()))
        .when(~valid_expr(b)).then(pl.format("box_degenerate: {} zero size", _where()))
        .when(area < cfg.min_box_area)
        .then(pl.format("box_too_small: {} area {} < {}", _where(), _num(area, 2), pl.lit(str(cfg.min_box_area))))
    )
    per_row = _boxes(df).group_by(_ROW).agg(reason.drop_nulls().first().alias("_bad"))
    df = _join_rows(df, per_row)
    result = _result("box_nondegenerate", pl.col("_bad").is_null(), pl.col("_bad"))
    return _finish(df, had_index, result, ["_bad"])


# --- 3. chain_length -------------------------------------------------------------------------------------------------
def chain_length(df: pl.DataFrame, cfg: CheckConfig, image_root: Path | None = None) -> pl.DataFrame:
    """``min_steps ≤ len(chain) ≤ max_steps`` and every step has at least one box. Score = the number of steps."""
    n = pl.col("chain").list.len().fill_null(0)
    empty = pl.col("chain").list.eval(pl.element().struct.field("boxes").list.len().fill_null(0) == 0)
    reason = (
        pl.when(n == 0).then(pl.lit("empty_chain"))
        .when(n < cfg.min_steps).then(pl.format("chain_too_short: {} < {}", n, pl.lit(cfg.min_steps)))
        .when(n > cfg.max_steps).then(pl.format("chain_too_long: {} > {}", n, pl.lit(cfg.max_steps)))
        .when(empty.list.any()).then(pl.format("empty_step: step {}", empty.list.arg_max()))
    )
    return df.with_columns(_result("chain_length", reason.is_null(), reason, n))


# --- 4. distinct_steps -----------------------------------------------------------------------------------------------
def distinct_steps(df: pl.DataFrame, cfg: CheckConfig, image_root: Path | None = None) -> pl.DataFrame:
    """No two steps cover the same region: ``IoU(union(step i), union(step j)) < duplicate_iou`` for all ``i < j``.

    ``union`` is the smallest box around a step's valid boxes. Fails ``duplicate_step: steps i and j (IoU v)`` for
    the most overlapping pair; score = that largest IoU (null with fewer than two non-empty steps).
    """
    had_index, df = _ROW in df.columns, _with_row_index(df)
    b = pl.col("b")
    unions = (
        _boxes(df)
        .filter(valid_expr(b).fill_null(False))
        .group_by([_ROW, "step"])
        .agg(
            b.struct.field("x1").min(), b.struct.field("y1").min(),
            b.struct.field("x2").max(), b.struct.field("y2").max(),
        )
        .select(_ROW, "step", pl.struct(*_COORDS).alias("u"))
    )
    pairs = (
        unions.join(unions, on=_ROW, suffix="_j")
        .filter(pl.col("step") < pl.col("step_j"))
        .with_columns(iou_expr(pl.col("u"), pl.col("u_j")).alias("iou"))
    )
    ranked = pl.col("iou").sort_by(["iou", "step", "step_j"], descending=[True, False, False])
    per_row = pairs.group_by(_ROW).agg(
        ranked.first().alias("_iou"),
        pl.format("duplicate_step: steps {} and {} (IoU {})", "step", "step_j", _num(pl.col("iou"), 2))
        .sort_by(["iou", "step", "step_j"], descending=[True, False, False]).first().alias("_pair"),
    )
    df = _join_rows(df, per_row)
    dup = pl.col("_iou") >= cfg.duplicate_iou
    reason = pl.when(dup).then(pl.col("_pair"))
    result = _result("distinct_steps", ~dup, reason, pl.col("_iou"))
    return _finish(df, had_index, result, ["_iou", "_pair"])


# --- 5. answer_nonempty ----------------------------------------------------------------------------------------------
def answer_nonempty(df: pl.DataFrame, cfg: CheckConfig, image_root: Path | None = None) -> pl.DataFrame:
    """The answer and the question are non-empty after stripping whitespace (null counts as empty)."""

    def empty(col: str) -> pl.Expr:
        return pl.col(col).str.strip_chars().fill_null("") == ""

    reason = (
        pl.when(empty("answer")).then(pl.lit("empty_answer"))
        .when(empty("question")).then(pl.lit("empty_question"))
    )
    return df.with_columns(_result("answer_nonempty", reason.is_null(), reason))


# --- 6. image_readable -----------------------------------------------------------------------------------------------
def _probe(path: Path) -> tuple[bool, str | None, int | None, int | None]:
    """``(exists, error, width, height)`` of one image file, reading the header and decoding it cheaply."""
    from PIL import Image

    if not path.is_file():
        return False, None, None, None
    try:
        with Image.open(path) as im:
            width, height = im.size
            im.verify()  # walks the chunks and their CRCs: catches truncated or corrupt PNGs
        with Image.open(path) as im:
            im.draft(None, (64, 64))  # JPEG decodes at 1/8 scale: a cheap full pass over the data
            im.load()
    except Exception as e:  # noqa: BLE001 - any failure to decode makes the file unusable; the reason names it
        detail = str(e).splitlines()[0][:80] if str(e) else ""
        return True, f"{type(e).__name__}" + (f" ({detail})" if detail else ""), None, None
    return True, None, width, height


def probe_images(paths: list[str], image_root: Path, workers: int | None = None) -> pl.DataFrame:
    """Probe each image file under ``image_root`` in a thread pool (PIL releases the GIL while decoding).

    Returns columns ``path, exists, error, file_width, file_height`` in the order of ``paths``.
    """
    workers = workers or min(32, 4 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        probes = list(pool.map(_probe, [image_root / p for p in paths]))
    return pl.DataFrame(
        [(p, *r) for p, r in zip(paths, probes, strict=True)],
        schema={"path": pl.String, "exists": pl.Boolean, "error": pl.String,
                "file_width": pl.Int64, "file_height": pl.Int64},
        orient="row",
    )


def image_readable(df: pl.DataFrame, cfg: CheckConfig, image_root: Path | None = None) -> pl.DataFrame:
    """``image_root / image.path`` exists, decodes, and has the recorded ``width x height`` (PIL's ``size``, before
    any EXIF rotation). A recorded size ≤ 0 fails ``image_size_invalid`` even without a root; otherwise, without a
    root the check is skipped (``passed=True, skipped=True``, reason ``skipped: no image root``)."""
    w_txt, h_txt = _size_text()
    invalid = pl.format("image_size_invalid: recorded {}x{}", w_txt, h_txt)
    if image_root is None:
        reason = pl.when(~_size_valid()).then(invalid).otherwise(pl.lit("skipped: no image root"))
        return df.with_columns(_result("image_readable", _size_valid(), reason, skipped=_size_valid()))
    path = pl.col("image").struct.field("path")
    paths = df.select(path.drop_nulls().unique(maintain_order=True))["path"].to_list()
    probes = probe_images(paths, Path(image_root)).rename({"path": "_path"})
    df = df.with_columns(path.alias("_path")).join(probes, on="_path", how="left", maintain_order="left")
    recorded = (pl.col("file_width") == _width()) & (pl.col("file_height") == _height())
    reason = (
        pl.when(~_size_valid()).then(invalid)
        .when(~pl.col("exists").fill_null(False)).then(pl.format("image_missing: {}", path.fill_null("null")))
        .when(pl.col("error").is_not_null()).then(pl.format("image_unreadable: {}", "error"))
        .when(~recorded).then(pl.format("image_size_mismatch: recorded {}x{}, file {}x{}",
                                        w_txt, h_txt, "file_width", "file_height"))
    )
    result = _result("image_readable", reason.is_null(), reason)
    return df.with_columns(result).drop(["_path", "exists", "error", "file_width", "file_height"])


# --- 7. zoom_need ----------------------------------------------------------------------------------------------------
def zoom_need(df: pl.DataFrame, cfg: CheckConfig, image_root: Path | None = None) -> pl.DataFrame:
    """Score only (always passes): ``area(union of the final step's boxes) / (width * height)``; lower = the answer
    needs more zoom. E.g. final box ``(10, 10, 30, 30)`` on a 100x80 image → ``400 / 8000 = 0.05``. No final box or
    an invalid image size → score null with reason ``no_final_box`` / ``image_size_invalid``."""
    last = pl.col("chain").list.last().struct.field("boxes")
    union = union_list_expr(last)
    has_box = (last.list.len() > 0).fill_null(False)
    score = pl.when(has_box & _size_valid()).then(area_expr(union) / (_width() * _height()))
    reason = (
        pl.when(~has_box).then(pl.lit("no_final_box"))
        .when(~_size_valid()).then(pl.lit("image_size_invalid"))
    )
    return df.with_columns(_result("zoom_need", pl.lit(True), reason, score))


CheckFn = Callable[[pl.DataFrame, CheckConfig, "Path | None"], pl.DataFrame]
CHECKS: dict[str, CheckFn] = {
    "box_inside_image": box_inside_image,
    "box_nondegenerate": box_nondegenerate,
    "chain_length": chain_length,
    "distinct_steps": distinct_steps,
    "answer_nonempty": answer_nonempty,
    "image_readable": image_readable,
    "zoom_need": zoom_need,
}
assert tuple(CHECKS) == CHECK_NAMES


# --- verify and summaries --------------------------------------------------------------------------------------------
def verify(
    df: pl.DataFrame | pl.LazyFrame,
    cfg: CheckConfig = CheckConfig(),  # noqa: B008 - frozen, so a shared default is safe
    image_root: Path | str | None = None,
    progress: bool = False,
) -> pl.DataFrame:
    """Run the enabled checks (in ``CHECK_NAMES`` order) and set each record's status.

    Results go into the ``checks`` list (earlier results of the same names are replaced, so re-verifying is
    idempotent); ``status`` becomes ``accepted`` when no non-skipped entry of ``checks`` failed, else ``rejected``;
    ``reviewed`` records keep their status. Returns exactly the input rows, in order, with ``polars_schema()``.
    Under ``outside_policy="clip"`` clipped chains pass with reason ``clipped`` once, and without it when re-verified.
    """
    frame = df.collect() if isinstance(df, pl.LazyFrame) else df
    validate_schema(frame.schema, "verify")
    n_in = frame.height
    frame = frame.select(COLUMNS).with_row_index(_ROW)
    names = [n for n in CHECK_NAMES if n in cfg.enabled]
    root = None if image_root is None else Path(image_root)
    for name in _progress(names, progress):
        frame = CHECKS[name](frame, cfg, root)
    if names:
        frame = frame.with_columns(_merged_checks(frame, names))
    failed = pl.col("checks").list.eval(
        ~pl.element().struct.field("passed").fill_null(False) & ~pl.element().struct.field("skipped").fill_null(False)
    ).list.any()
    frame = frame.with_columns(
        pl.when(pl.col("status") == Status.REVIEWED.value).then(pl.col("status"))
        .when(failed).then(pl.lit(Status.REJECTED.value))
        .otherwise(pl.lit(Status.ACCEPTED.value))
        .alias("status")
    )
    assert frame.height == n_in, "verify must keep every row"
    return frame.select(COLUMNS)  # drops the row index and the _check_<name> columns


def skipped_checks(df: pl.DataFrame | pl.LazyFrame) -> dict[str, tuple[int, str]]:
    """Checks skipped on some records: ``{check: (records, reason)}`` (e.g. ``image_readable`` without an image
    root: ``skipped: no image root``), for the summary of ``virl-data verify`` and of a pipeline's verify stage."""
    frame = df.lazy().select(pl.col("checks").explode().alias("c")).drop_nulls("c").unnest("c")
    skipped = frame.filter(pl.col("skipped").fill_null(False)).group_by("name").agg(
        pl.len().alias("n"), pl.col("reason").first()).sort("name").collect()
    return {name: (n, reason) for name, n, reason in skipped.iter_rows()}


def skipped_notes(skipped: dict[str, tuple[int, str]]) -> list[str]:
    """``skipped_checks``'s result as the verify stage of a pipeline run reports it (both engines).

    >>> skipped_notes({"image_readable": (3, "skipped: no image root")})
    ['image_readable skipped on 3 (skipped: no image root)']
    """
    return [f"{name} skipped on {n} ({reason})" for name, (n, reason) in skipped.items()]


def _merged_checks(df: pl.DataFrame, names: list[str]) -> pl.Series:
    """Each row's ``checks`` without entries named in ``names``, followed by the new ``_check_<name>`` results.

    Built as one long (row, result) frame imploded by row: ``pl.concat_list`` over struct columns is ~20x slower.
    """
    kept = df.select(
        _ROW, pl.col("checks").list.filter(~pl.element().struct.field("name").is_in(names)).alias("c")
    ).explode("c", empty_as_null=False, keep_nulls=False)
    new = [df.select(_ROW, pl.col(f"_check_{n}").alias("c")) for n in names]
    merged = (
        pl.concat([kept, *new])
        .sort(_ROW, maintain_order=True)  # stable: kept results first, then the new ones in check order
        .group_by(_ROW, maintain_order=True)
        .agg("c")
    )
    assert merged.height == df.height, "every row gets at least one new result"
    return merged.get_column("c").alias("checks")


def _progress(names: list[str], show: bool):  # noqa: ANN202 - a plain generator of names
    if not show:
        yield from names
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task("verify", total=len(names))
        for name in names:
            bar.update(task, description=f"check {name}")
            yield name
            bar.advance(task)


def rejection_reasons(df: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """Failed (non-skipped) checks counted by ``check`` and ``reason_code`` (the reason before ``":"``), most
    frequent first; columns ``check, reason_code, count``."""
    lf = df.lazy() if isinstance(df, pl.DataFrame) else df
    return (
        lf.select(pl.col("checks").explode(empty_as_null=False, keep_nulls=False))
        .unnest("checks")
        .filter(~pl.col("passed").fill_null(False) & ~pl.col("skipped").fill_null(False))
        .select(
            pl.col("name").alias("check"),
            pl.col("reason").fill_null("").str.split(":").list.first().str.strip_chars().alias("reason_code"),
        )
        .group_by("check", "reason_code")
        .agg(pl.len().cast(pl.Int64).alias("count"))
        .sort(["count", "check", "reason_code"], descending=[True, False, False])
        .collect()
    )


__all__ = [
    "CHECKS",
    "CHECK_NAMES",
    "OUTSIDE_POLICIES",
    "CheckConfig",
    "answer_nonempty",
    "box_inside_image",
    "box_nondegenerate",
    "chain_length",
    "distinct_steps",
    "image_readable",
    "probe_images",
    "rejection_reasons",
    "skipped_checks",
    "verify",
    "zoom_need",
]
