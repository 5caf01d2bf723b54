"""Tests for virl_data.curation.curate: stats (hand-computed), filter expressions, dedup and grouped/stratified
splits."""

from __future__ import annotations

import hashlib
from pathlib import Path

import orjson
import polars as pl
import pytest
from PIL import Image
from rich.console import Console

from virl_data.core.errors import ConfigError, SchemaMismatchError
from virl_data.core.schema import COLUMNS, empty_frame, polars_schema, records_to_frame
from virl_data.core.types import Box, CheckResult, ImageRef, Provenance, RationaleRecord, RationaleStep, Status
from virl_data.curation import curate

XYXY = tuple[float, float, float, float]
A, R, M = Status.ACCEPTED, Status.REJECTED, Status.MINED


# --- factories -------------------------------------------------------------------------------------------------------
def rec(
    i: int,
    *,
    source: str = "a",
    status: Status = A,
    chain: list[list[XYXY]] | None = None,
    size: tuple[int, int] = (100, 80),
    question: str = "What colour is the square?",
    path: str | None = None,
    sha1: str | None = None,
    checks: tuple[CheckResult, ...] = (),
    question_type: str | None = "attr",
    split: str | None = None,
) -> RationaleRecord:
    """A record with id ``r<i>``; ``chain`` is a list of steps, each a list of xyxy boxes."""
    chain = [[(10, 10, 30, 30)]] if chain is None else chain
    steps = tuple(RationaleStep(tuple(Box(*b) for b in step), phrase=f"p{j}") for j, step in enumerate(chain))
    return RationaleRecord(
        id=f"r{i}",
        image=ImageRef(path or f"img/{i}.png", size[0], size[1], sha1),
        question=question,
        answer="red",
        chain=steps,
        provenance=Provenance(source, "val", (("qid", str(i)),), "test@1"),
        question_type=question_type,
        checks=checks,
        status=status,
        split=split,
    )


def frame(*records: RationaleRecord) -> pl.DataFrame:
    return records_to_frame(records)


def ids(df: pl.DataFrame | pl.LazyFrame) -> list[str]:
    return (df.collect() if isinstance(df, pl.LazyFrame) else df)["id"].to_list()


def corpus() -> pl.DataFrame:
    """Five hand-built records; the expected numbers in the tests below are computed by hand from them."""
    skipped = CheckResult("image_readable", True, "skipped: no image root", skipped=True)
    return frame(
        # zoom = union of final step (40,10,90,50) = 50*40 / (100*80) = 0.25; box fracs .05 .075 .05
        rec(0, chain=[[(10, 10, 30, 30)], [(40, 20, 60, 50), (70, 10, 90, 30)]], checks=(skipped,)),
        # recorded zoom_need score 0.7 wins over the computed 0.25; box frac .25
        rec(1, status=R, chain=[[(0, 0, 50, 40)]], checks=(
            CheckResult("chain_length", False, "too_short: 1 step, need 2"),
            CheckResult("zoom_need", True, None, 0.7),
        )),
        # zoom = 8000 / 8000 = 1.0; box fracs .0125 .0125 1.0
        rec(2, source="b", status=R, chain=[[(0, 0, 10, 10)], [(10, 10, 20, 20)], [(0, 0, 100, 80)]], checks=(
            CheckResult("chain_length", False, "too_long: 3 steps, max 2"),
            CheckResult("box_inside_image", False, "box_outside: step 0 box 0 by 3.0 px"),
        )),
        rec(3, source="b", status=M, chain=[]),  # no boxes: zoom null
        # zoom = 20*10 / (200*100) = 0.01
        rec(4, source="b", chain=[[(0, 0, 20, 10)]], size=(200, 100), question_type=None, split="train"),
    )


def as_dict(df: pl.DataFrame, key: str) -> dict:
    return dict(df.select(key, "count").iter_rows())


# --- stats -----------------------------------------------------------------------------------------------------------
def test_stats_counts_by_key():
    s = curate.stats(corpus().lazy())
    assert s.total == 5
    assert as_dict(s.by_source, "source") == {"a": 2, "b": 3}
    assert s.by_source["source"].to_list() == ["b", "a"]  # most frequent first
    assert as_dict(s.by_status, "status") == {"accepted": 2, "rejected": 2, "mined": 1}
    assert s.by_chain_length.rows() == [(0, 1), (1, 2), (2, 1), (3, 1)]
    assert as_dict(s.by_question_type, "question_type") == {"attr": 4, None: 1}
    assert as_dict(s.by_split, "split") == {None: 4, "train": 1}
    assert sorted(s.by_source_status.rows()) == [
        ("a", "accepted", 1), ("a", "rejected", 1), ("b", "accepted", 1), ("b", "mined", 1), ("b", "rejected", 1)
    ]


def test_stats_rejection_reasons_count_failed_checks_only():
    s = curate.stats(corpus())
    assert sorted(s.rejection_reasons.rows()) == [
        ("box_inside_image", "box_outside", 1), ("chain_length", "too_long", 1), ("chain_length", "too_short", 1)
    ]


def test_zoom_need_prefers_recorded_score_else_final_step_union():
    z = curate.with_helpers(corpus()).select("zoom_need").collect()["zoom_need"].to_list()
    assert [z[i] for i in (0, 1, 2, 4)] == pytest.approx([0.25, 0.7, 1.0, 0.01])
    assert z[3] is None


def test_stats_distributions_hand_computed():
    s = curate.stats(corpus())
    zoom = s.zoom_need.row(0, named=True)
    # sorted [0.01, 0.25, 0.7, 1.0]: linear median (0.25 + 0.7) / 2
    assert (zoom["n"], zoom["missing"]) == (4, 1)
    assert (zoom["p0"], zoom["p50"], zoom["p100"]) == pytest.approx((0.01, 0.475, 1.0))
    counts = s.zoom_need_hist["count"].to_list()  # 20 bins of 0.05; 1.0 falls in the last bin
    assert len(counts) == 20 and sum(counts) == 4
    assert counts[0] == counts[5] == counts[14] == counts[19] == 1
    area = {r["metric"]: r for r in s.box_area.iter_rows(named=True)}
    assert area["area_px"]["n"] == 8  # 3 + 1 + 3 + 0 + 1 boxes
    assert (area["area_px"]["p0"], area["area_px"]["p100"]) == (100.0, 8000.0)
    assert (area["area_frac"]["p0"], area["area_frac"]["p100"]) == pytest.approx((0.01, 1.0))
    hist = s.box_log_frac_hist
    assert hist["count"].sum() == 8 and hist["count"][-1] == 1  # frac 1.0 → log10 = 0 → last bin
    # fracs 0.01 (log10 -2) and 0.0125 x2 (log10 -1.903) share the bin [-2, -1.75)
    assert hist.filter(pl.col("bin_lo") == -2.0)["count"].item() == 3


def test_stats_json_render_and_plot(tmp_path: Path):
    s = curate.stats(corpus())
    d = orjson.loads(orjson.dumps(curate.stats_to_dict(s)))
    assert d["total"] == 5 and {"source": "b", "count": 3} in d["by_source"]
    console = Console(record=True, width=140)
    curate.render_stats(s, console)
    text = console.export_text()
    assert "too_short" in text and "records by source" in text and "(none)" in text
    out = curate.plot_stats(s, tmp_path / "plots" / "stats.png")
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size[0] > 500
    assert [p.name for p in out.parent.iterdir()] == ["stats.png"]  # no temporary file left behind


def test_stats_and_plot_of_empty_corpus(tmp_path: Path):
    s = curate.stats(empty_frame())
    assert s.total == 0 and s.by_source.height == 0 and s.zoom_need["n"].item() == 0
    curate.plot_stats(s, tmp_path / "empty.png")
    assert Image.open(tmp_path / "empty.png").format == "PNG"


def test_stats_rejects_a_non_corpus_frame():
    with pytest.raises(SchemaMismatchError, match="missing columns"):
        curate.stats(pl.DataFrame({"id": ["x"]}))


# --- filter ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("pl.col('n_steps') >= 2", ["r0", "r2"]),
        ("(pl.col('source') == 'b') & (pl.col('status') == 'accepted')", ["r4"]),
        ("col('zoom_need') < 0.3", ["r0", "r4"]),  # null zoom (r3) is not kept
        ("pl.col('min_box_area_frac') < 0.02", ["r2", "r4"]),
        ("pl.col('n_boxes') == 3", ["r0", "r2"]),
        ("pl.col('question_type').is_null() | (pl.col('image').struct.field('width') > lit(150))", ["r4"]),
    ],
)
def test_filter_keeps_exact_rows(expression: str, expected: list[str]):
    out = curate.filter_records(corpus(), expression).collect()
    assert ids(out) == expected
    assert out.schema == polars_schema()


def test_filter_report_counts_removed():
    result = curate.filter_report(corpus().lazy(), "pl.col('status') == 'rejected'")
    assert (result.n_in, result.kept.height, result.n_removed) == (5, 2, 3)
    assert tuple(result.kept.columns) == COLUMNS


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("pl.col('n_steps' >= 2", "syntax error"),
        ("pl.col('no_such_column') > 1", "unknown column"),
        ("pl.col('n_steps') + 1", "not a boolean"),
        ("n_steps > 1", "not defined"),
        ("3 > 2", "not a polars expression"),
        ("().__class__.__bases__", "not allowed"),
        ("open('/etc/passwd')", "not defined"),
        ("pl.col('n_steps').nonexistent_method()", "AttributeError"),
    ],
)
def test_filter_invalid_expressions_raise_config_error(expression: str, problem: str):
    with pytest.raises(ConfigError, match=problem) as info:
        curate.filter_records(corpus(), expression)
    assert "\n" not in str(info.value)


# --- dedup -----------------------------------------------------------------------------------------------------------
def test_dedup_same_image_and_normalized_question():
    df = frame(
        rec(0, sha1="aaa", question="What colour is X?"),
        rec(1, sha1="bbb", question="What colour is X?"),  # other image: kept
        rec(2, sha1="aaa", question="  what   colour is x "),  # duplicate of r0
        rec(3, sha1="aaa", question="What colour is Y?"),  # other question: kept
        rec(4, sha1="bbb", question="WHAT COLOUR IS X?!"),  # duplicate of r1
    )
    result = curate.dedup(df)
    kept, removed = result
    assert ids(kept) == ["r0", "r1", "r3"]
    assert removed.select("id", "duplicate_of").rows() == [("r2", "r0"), ("r4", "r1")]
    assert (result.n_in, result.n_removed) == (5, 2)
    assert result.identity == {"sha1": 5, "file": 0, "path": 0} and result.notes == ()
    assert kept.collect_schema() == polars_schema()


def _png(path: Path, colour: tuple[int, int, int]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)
    return hashlib.sha1(path.read_bytes()).hexdigest()


def test_dedup_hashes_files_under_image_root(tmp_path: Path):
    red = _png(tmp_path / "a.png", (255, 0, 0))
    _png(tmp_path / "copy_of_a.png", (255, 0, 0))
    _png(tmp_path / "b.png", (0, 0, 255))
    df = frame(
        rec(0, path="a.png"),
        rec(1, path="copy_of_a.png"),  # same bytes as a.png: duplicate
        rec(2, path="b.png"),
        rec(3, path="other.png", sha1=red),  # recorded sha1 equals a.png's content: duplicate
        rec(4, path="missing.png"),  # unreadable: falls back to its path
    )
    result = curate.dedup(df, image_root=tmp_path)
    assert ids(result.kept) == ["r0", "r2", "r4"]
    assert result.removed["duplicate_of"].to_list() == ["r0", "r0"]
    assert result.identity == {"sha1": 1, "file": 3, "path": 1}
    assert "1 records" in result.notes[0] and "unreadable" in result.notes[0]


def test_dedup_without_sha1_or_root_falls_back_to_path():
    df = frame(rec(0, path="x.png"), rec(1, path="y.png"), rec(2, path="x.png", question="what colour is the square"))
    result = curate.dedup(df)
    assert ids(result.kept) == ["r0", "r1"] and result.removed["duplicate_of"].to_list() == ["r0"]
    assert result.identity["path"] == 3 and "no image root" in result.notes[0]


def test_hash_files_pool_matches_hashlib(tmp_path: Path):
    names = [f"f{i}.bin" for i in range(40)]
    for i, name in enumerate(names):
        (tmp_path / name).write_bytes(bytes([i]) * (i + 1))
    digests = curate.hash_files([*names, "gone.bin"], tmp_path, workers=4)
    assert digests["gone.bin"] is None
    assert all(digests[n] == hashlib.sha1((tmp_path / n).read_bytes()).hexdigest() for n in names)


# --- split -----------------------------------------------------------------------------------------------------------
def split_corpus(n_images: int = 1000) -> pl.DataFrame:
    """Two sources of ~2k records each; 1-3 questions per image; every 7th record rejected, every 11th mined."""
    records, i = [], 0
    for source in ("a", "b"):
        for img in range(n_images):
            for _ in range(1 + (img * 7919) % 3):
                status = R if i % 7 == 0 else M if i % 11 == 0 else A
                records.append(rec(i, source=source, status=status, path=f"{source}/{img}.png", split="stale"))
                i += 1
    return frame(*records)


def test_split_grouped_stratified_and_complete():
    df = split_corpus()
    out = curate.split(df.lazy(), seed=3).collect()
    assert ids(out) == ids(df) and out.schema == polars_schema()  # rows in = rows out, same order
    eligible = pl.col("status").is_in(["accepted", "reviewed"])
    assert out.filter(~eligible)["split"].null_count() == out.filter(~eligible).height
    assert out.filter(eligible)["split"].null_count() == 0
    per_image = out.filter(eligible).group_by(pl.col("image").struct.field("path")).agg(pl.col("split").n_unique())
    assert per_image["split"].max() == 1  # no image in two splits
    for source in ("a", "b"):
        part = out.filter(eligible & (pl.col("provenance").struct.field("source") == source))
        fractions = dict(part.group_by("split").len().with_columns(pl.col("len") / part.height).iter_rows())
        assert fractions == pytest.approx({"train": 0.8, "val": 0.1, "test": 0.1}, abs=0.005)


def test_split_is_deterministic_per_seed():
    df = split_corpus(300)
    first = curate.split(df, seed=0).collect()["split"]
    assert first.equals(curate.split(df, seed=0).collect()["split"])
    other = curate.split(df, seed=1).collect()["split"]
    assert (first != other).sum() > 100


@pytest.mark.parametrize(
    ("n", "expected"),  # round(n * cumulative ratio) differences: 9 → 7.2, 8.1 → 7/1/1; 23 → 18.4, 20.7 → 18/3/2
    [(9, (7, 1, 1)), (10, (8, 1, 1)), (23, (18, 3, 2))],
)
def test_split_unit_groups_give_rounded_counts(n: int, expected: tuple[int, int, int]):
    df = frame(*(rec(i) for i in range(n)))
    counts = dict(curate.split(df, seed=5).collect().group_by("split").len().rows())
    assert (counts["train"], counts["val"], counts["test"]) == expected


def test_split_groups_by_sha1_and_across_sources():
    df = frame(
        *(rec(i, path=f"p{i}.png", sha1="same") for i in range(6)),  # different paths, one sha1
        *(rec(10 + i, source=s, path="shared.png") for i, s in enumerate("abcabc")),  # one image, three sources
        *(rec(20 + i, source=s) for i, s in enumerate("abc" * 10)),
    )
    for seed in range(5):
        out = curate.split(df, seed=seed).collect()
        assert out["split"][:6].n_unique() == 1 and out["split"][6:12].n_unique() == 1


def test_split_group_by_record_and_statuses():
    df = frame(rec(0, path="x.png"), rec(1, path="x.png"), rec(2, status=M))
    out = curate.split(df, {"train": 0.5, "test": 0.5}, group_by="record", statuses=("accepted", "mined"))
    assert out.collect()["split"].null_count() == 0


@pytest.mark.parametrize(
    "ratios",
    [
        {"train": 0.8, "val": 0.1},
        {"train": 1.1, "val": -0.1},
        {"train": 1.0, "val": 0.0},
        {},
        {"train": "lots"},
        {"": 1.0},
    ],
)
def test_split_invalid_ratios(ratios: dict):
    with pytest.raises(ConfigError):
        curate.split(frame(rec(0)), ratios)


def test_split_invalid_options():
    with pytest.raises(ConfigError, match="group_by"):
        curate.split(frame(rec(0)), group_by="scene")
    with pytest.raises(ConfigError, match="statuses"):
        curate.split(frame(rec(0)), statuses=("approved",))
