"""Tests for virl_data.curation.checks: each check's pass/fail with exact reasons, clipping, images, and verify's
contract."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl
import pytest
from PIL import Image

from virl_data.core.errors import ConfigError
from virl_data.core.schema import frame_to_records, polars_schema, records_to_frame
from virl_data.core.types import Box, CheckResult, ImageRef, Provenance, RationaleRecord, RationaleStep, Status
from virl_data.curation import checks
from virl_data.curation.checks import CHECK_NAMES, CHECKS, CheckConfig, rejection_reasons, verify

XYXY = tuple[float, float, float, float]


# --- factories -------------------------------------------------------------------------------------------------------
def rec(
    i: int = 0,
    chain: list[list[XYXY]] | None = None,
    *,
    size: tuple[int, int] = (100, 80),
    question: str = "Where is the cat?",
    answer: str = "left",
    status: Status = Status.MINED,
    prior: tuple[CheckResult, ...] = (),
    path: str | None = None,
) -> RationaleRecord:
    """A record whose chain is a list of steps, each a list of xyxy boxes; default: two distinct one-box steps."""
    chain = [[(10, 10, 30, 30)], [(50, 40, 90, 70)]] if chain is None else chain
    steps = tuple(
        RationaleStep(tuple(Box(*b) for b in step), phrase=f"p{j}", role="target", source_ref=f"a{j}")
        for j, step in enumerate(chain)
    )
    return RationaleRecord(
        id=f"rec-{i}",
        image=ImageRef(path or f"img/{i}.png", size[0], size[1]),
        question=question,
        answer=answer,
        chain=steps,
        provenance=Provenance("test", "val", (("qid", str(i)),), "test@1"),
        checks=prior,
        status=status,
    )


def frame(*records: RationaleRecord) -> pl.DataFrame:
    return records_to_frame(records)


def result(df: pl.DataFrame, name: str, row: int = 0) -> CheckResult:
    """The recorded result of check ``name`` on ``row`` of a verified frame."""
    found = [c for c in frame_to_records(df)[row].checks if c.name == name]
    assert len(found) == 1, f"{name} recorded {len(found)} times"
    return found[0]


def run_one(name: str, *records: RationaleRecord, image_root: Path | None = None, **cfg) -> pl.DataFrame:
    return verify(frame(*records), CheckConfig(enabled=(name,), **cfg), image_root=image_root)


def chain_boxes(df: pl.DataFrame, row: int = 0) -> list[list[XYXY]]:
    return [[b.as_tuple() for b in s.boxes] for s in frame_to_records(df)[row].chain]


def write_png(root: Path, rel: str, size: tuple[int, int]) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 30, 30)).save(path)
    return path


# --- 1. box_inside_image ---------------------------------------------------------------------------------------------
def test_box_inside_passes_and_keeps_boxes():
    out = run_one("box_inside_image", rec())
    assert result(out, "box_inside_image") == CheckResult("box_inside_image", True, None, 0.0)
    assert chain_boxes(out) == [[(10, 10, 30, 30)], [(50, 40, 90, 70)]]


def test_box_within_tolerance_is_clipped_silently():
    out = run_one("box_inside_image", rec(chain=[[(-1.5, 10, 30, 30)], [(50, 40, 101, 81)]]))
    r = result(out, "box_inside_image")
    assert (r.passed, r.reason, r.score) == (True, None, 1.5)
    assert chain_boxes(out) == [[(0, 10, 30, 30)], [(50, 40, 100, 80)]]


def test_box_beyond_tolerance_rejected_by_default_and_unchanged():
    chain = [[(10, 10, 30, 30)], [(20, 20, 40, 40), (50, 40, 114, 70)]]
    out = run_one("box_inside_image", rec(chain=chain))
    r = result(out, "box_inside_image")
    assert (r.passed, r.reason, r.score) == (False, "box_outside_image: step 1 box 1 exceeds by 14.0px", 14.0)
    assert out["status"][0] == "rejected"
    assert chain_boxes(out) == chain


def test_clip_policy_clips_beyond_tolerance_and_passes():
    chain = [[(10, 10, 30, 30)], [(20, 20, 40, 40), (-5, 40, 114, 90)], []]
    out = run_one("box_inside_image", rec(chain=chain), outside_policy="clip")
    r = result(out, "box_inside_image")
    assert (r.passed, r.reason) == (True, "clipped")
    assert out["status"][0] == "accepted"
    assert chain_boxes(out) == [[(10, 10, 30, 30)], [(20, 20, 40, 40), (0, 40, 100, 80)], []]
    # the rest of each step is untouched
    before, after = rec(chain=chain).chain, frame_to_records(out)[0].chain
    assert [(s.phrase, s.role, s.source_ref) for s in after] == [(s.phrase, s.role, s.source_ref) for s in before]


def test_tolerance_is_configurable():
    out = run_one("box_inside_image", rec(chain=[[(10, 10, 114, 30)]]), tolerance_px=20.0)
    assert result(out, "box_inside_image").passed
    assert chain_boxes(out) == [[(10, 10, 100, 30)]]


def test_box_inside_invalid_image_size():
    out = run_one("box_inside_image", rec(size=(0, 80)))
    assert result(out, "box_inside_image").reason == "image_size_invalid: recorded 0x80"


def test_clipping_only_touches_the_rows_that_need_it():
    records = [rec(0), rec(1, chain=[[(0, 0, 101, 80)]]), rec(2, chain=[[(5, 5, 50, 50)], [(60, 10, 99, 70)]])]
    out = run_one("box_inside_image", *records)
    assert chain_boxes(out, 0) == chain_boxes(frame(records[0]))
    assert chain_boxes(out, 1) == [[(0, 0, 100, 80)]]
    assert chain_boxes(out, 2) == [[(5, 5, 50, 50)], [(60, 10, 99, 70)]]


# --- 2. box_nondegenerate --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("box", "reason"),
    [
        ((10, 10, 30, 30), None),
        ((30, 10, 10, 30), "box_inverted: step 1 box 0"),
        ((10, 30, 30, 10), "box_inverted: step 1 box 0"),
        ((10, 10, 10, 30), "box_degenerate: step 1 box 0 zero size"),
        ((10, 10, math.nan, 30), "box_degenerate: step 1 box 0 not finite"),
        ((10, 10, math.inf, 30), "box_degenerate: step 1 box 0 not finite"),
        ((10, 10, 11, 13), "box_too_small: step 1 box 0 area 3.0 < 4.0"),
        ((10, 10, 12, 12), None),  # area exactly 4 is enough
    ],
)
def test_box_nondegenerate(box, reason):
    out = run_one("box_nondegenerate", rec(chain=[[(50, 40, 90, 70)], [box]]))
    r = result(out, "box_nondegenerate")
    assert (r.passed, r.reason) == (reason is None, reason)


def test_box_nondegenerate_reports_first_bad_box_and_min_area():
    chain = [[(0, 0, 50, 50), (5, 5, 6, 6)], [(9, 9, 1, 1)]]
    assert result(run_one("box_nondegenerate", rec(chain=chain)), "box_nondegenerate").reason == (
        "box_too_small: step 0 box 1 area 1.0 < 4.0"
    )
    out = run_one("box_nondegenerate", rec(chain=chain), min_box_area=0.5)
    assert result(out, "box_nondegenerate").reason == "box_inverted: step 1 box 0"


# --- 3. chain_length -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("chain", "cfg", "reason"),
    [
        ([[(0, 0, 10, 10)]], {}, None),
        ([], {}, "empty_chain"),
        ([[(0, 0, 10, 10)]] * 9, {}, "chain_too_long: 9 > 8"),
        ([[(0, 0, 10, 10)]] * 9, {"max_steps": 9}, None),
        ([[(0, 0, 10, 10)]], {"min_steps": 2}, "chain_too_short: 1 < 2"),
        ([[(0, 0, 10, 10)], [], []], {}, "empty_step: step 1"),
    ],
)
def test_chain_length(chain, cfg, reason):
    r = result(run_one("chain_length", rec(chain=chain), **cfg), "chain_length")
    assert (r.passed, r.reason, r.score) == (reason is None, reason, len(chain))


# --- 4. distinct_steps -----------------------------------------------------------------------------------------------
def test_distinct_steps_pass_scores_largest_iou():
    # IoU((0,0,10,10), (5,0,15,10)) = 50 / 150
    r = result(run_one("distinct_steps", rec(chain=[[(0, 0, 10, 10)], [(5, 0, 15, 10)]])), "distinct_steps")
    assert (r.passed, r.reason) == (True, None)
    assert r.score == pytest.approx(1 / 3)


def test_duplicate_steps_hand_computed_iou():
    # IoU((0,0,100,80), (0,0,100,76)) = 7600 / 8000 = 0.95; step 1 is far from both
    chain = [[(0, 0, 100, 80)], [(90, 0, 95, 5)], [(0, 0, 100, 76)]]
    r = result(run_one("distinct_steps", rec(chain=chain)), "distinct_steps")
    assert (r.passed, r.reason) == (False, "duplicate_step: steps 0 and 2 (IoU 0.95)")
    assert r.score == pytest.approx(0.95)
    assert result(run_one("distinct_steps", rec(chain=chain), duplicate_iou=0.96), "distinct_steps").passed


def test_distinct_steps_compares_union_boxes():
    # no single box of step 0 overlaps step 1 much, but their union (0,0,40,40) equals it
    chain = [[(0, 0, 10, 10), (30, 30, 40, 40)], [(0, 0, 40, 40)]]
    r = result(run_one("distinct_steps", rec(chain=chain)), "distinct_steps")
    assert r.reason == "duplicate_step: steps 0 and 1 (IoU 1.0)"


def test_distinct_steps_single_step_has_no_score():
    r = result(run_one("distinct_steps", rec(chain=[[(0, 0, 10, 10)]])), "distinct_steps")
    assert (r.passed, r.reason, r.score) == (True, None, None)


# --- 5. answer_nonempty ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("question", "answer", "reason"),
    [("Where?", "left", None), ("Where?", "  \n", "empty_answer"), (" ", "left", "empty_question"),
     ("", "", "empty_answer")],
)
def test_answer_nonempty(question, answer, reason):
    r = result(run_one("answer_nonempty", rec(question=question, answer=answer)), "answer_nonempty")
    assert (r.passed, r.reason) == (reason is None, reason)


# --- 6. image_readable -----------------------------------------------------------------------------------------------
def test_image_readable_cases(tmp_path):
    write_png(tmp_path, "img/ok.png", (100, 80))
    write_png(tmp_path, "img/small.png", (50, 40))
    # noise, so that half of the file cuts into the pixel data
    Image.effect_noise((100, 80), 64).convert("RGB").save(tmp_path / "img/cut.png")
    full = (tmp_path / "img/cut.png").read_bytes()
    (tmp_path / "img/cut.png").write_bytes(full[: len(full) // 2])
    records = [
        rec(0, path="img/ok.png"),
        rec(1, path="img/missing.png"),
        rec(2, path="img/cut.png"),
        rec(3, path="img/small.png"),
        rec(4, path="img/ok.png", size=(100, 0)),
        rec(5, path="img/ok.png"),
    ]
    out = run_one("image_readable", *records, image_root=tmp_path)
    reasons = [result(out, "image_readable", i).reason for i in range(len(records))]
    assert reasons[0] is None and reasons[5] is None
    assert reasons[1] == "image_missing: img/missing.png"
    assert reasons[2].startswith("image_unreadable: ")
    assert reasons[3] == "image_size_mismatch: recorded 100x80, file 50x40"
    assert reasons[4] == "image_size_invalid: recorded 100x0"
    assert out["status"].to_list() == ["accepted", "rejected", "rejected", "rejected", "rejected", "accepted"]


def test_truncated_images_fail_even_when_pil_is_told_to_load_them(tmp_path, monkeypatch):
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    noisy = Image.effect_noise((100, 80), 64).convert("RGB")
    noisy.save(tmp_path / "cut.png")
    full = (tmp_path / "cut.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(full[: len(full) // 2])
    out = run_one("image_readable", rec(0, path="cut.png"), image_root=tmp_path)
    assert result(out, "image_readable").reason.startswith("image_unreadable: ")


def test_truncated_jpeg_is_unreadable(tmp_path):
    Image.effect_noise((100, 80), 64).convert("RGB").save(tmp_path / "cut.jpg", quality=95)
    full = (tmp_path / "cut.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(full[: len(full) // 2])
    out = run_one("image_readable", rec(0, path="cut.jpg"), image_root=tmp_path)
    assert result(out, "image_readable").reason.startswith("image_unreadable: ")


def test_image_readable_without_root_is_skipped():
    out = verify(frame(rec(0), rec(1, size=(-3, 80))))
    assert result(out, "image_readable", 0) == CheckResult("image_readable", True, "skipped: no image root", None, True)
    bad = result(out, "image_readable", 1)
    assert (bad.passed, bad.reason, bad.skipped) == (False, "image_size_invalid: recorded -3x80", False)
    assert out["status"].to_list() == ["accepted", "rejected"]


def test_probe_images_reports_each_path(tmp_path):
    write_png(tmp_path, "a.png", (7, 5))
    probes = checks.probe_images(["a.png", "b.png"], tmp_path)
    assert probes.rows() == [("a.png", True, None, 7, 5), ("b.png", False, None, None, None)]


# --- 7. zoom_need ----------------------------------------------------------------------------------------------------
def test_zoom_need_score_hand_computed():
    # final step union = (10,10,50,40): 40 * 30 = 1200 over 100 * 80 = 8000 → 0.15
    chain = [[(0, 0, 100, 80)], [(10, 10, 30, 30), (20, 20, 50, 40)]]
    r = result(run_one("zoom_need", rec(chain=chain)), "zoom_need")
    assert (r.passed, r.reason) == (True, None)
    assert r.score == pytest.approx(0.15)


def test_zoom_need_without_final_box_passes_unscored():
    out = run_one("zoom_need", rec(0, chain=[[(0, 0, 10, 10)], []]), rec(1, chain=[]))
    for row in (0, 1):
        assert result(out, "zoom_need", row) == CheckResult("zoom_need", True, "no_final_box", None)


# --- verify ----------------------------------------------------------------------------------------------------------
def mixed_records() -> list[RationaleRecord]:
    return [
        rec(0),
        rec(1, chain=[]),
        rec(2, answer=" "),
        rec(3, chain=[[(0, 0, 10, 10)], [(0, 0, 10, 10)]]),
        rec(4),
        rec(5, chain=[[(0, 0, 150, 10)]], status=Status.REVIEWED),
        rec(6, chain=[[(5, 5, 5, 9)]]),
    ]


def test_verify_keeps_rows_order_and_schema():
    df = frame(*mixed_records())
    out = verify(df)
    assert out.height == df.height
    assert out["id"].to_list() == df["id"].to_list()
    assert out.schema == polars_schema()
    assert out["status"].to_list() == [
        "accepted", "rejected", "rejected", "rejected", "accepted", "reviewed", "rejected"
    ]
    assert [c.name for c in frame_to_records(out)[0].checks] == list(CHECK_NAMES)


def test_verify_empty_frame():
    from virl_data.core.schema import empty_frame

    out = verify(empty_frame())
    assert out.height == 0 and out.schema == polars_schema()


def test_verify_accepts_lazy_frames():
    df = frame(*mixed_records())
    assert verify(df.lazy()).equals(verify(df))


def test_verify_is_idempotent():
    once = verify(frame(*mixed_records()))
    assert verify(once).equals(once)


def test_verify_replaces_same_name_results_and_keeps_others():
    prior = (CheckResult("chain_length", False, "stale"), CheckResult("human_flag", True, None, 0.5))
    out = verify(frame(rec(0, prior=prior)), CheckConfig(enabled=("chain_length",)))
    assert [(c.name, c.passed, c.reason) for c in frame_to_records(out)[0].checks] == [
        ("human_flag", True, None), ("chain_length", True, None)
    ]
    assert out["status"][0] == "accepted"


def test_status_counts_earlier_failures_of_other_checks():
    out = verify(frame(rec(0, prior=(CheckResult("human_flag", False, "bad_crop"),))), CheckConfig(enabled=()))
    assert out["status"][0] == "rejected"


def test_rejection_reasons_counts_codes():
    out = verify(frame(*mixed_records(), rec(7, chain=[]), rec(8, chain=[[(-30, 0, 10, 10)]])))
    # most frequent first, then by check and code; the reviewed row's failure counts too
    assert rejection_reasons(out).rows() == [
        ("box_inside_image", "box_outside_image", 2),
        ("chain_length", "empty_chain", 2),
        ("answer_nonempty", "empty_answer", 1),
        ("box_nondegenerate", "box_degenerate", 1),
        ("distinct_steps", "duplicate_step", 1),
    ]
    assert rejection_reasons(frame(rec(0))).columns == ["check", "reason_code", "count"]


@pytest.mark.parametrize("name", CHECK_NAMES)
def test_each_check_adds_one_struct_column(name):
    df = frame(rec(0), rec(1, chain=[]))
    out = CHECKS[name](df, CheckConfig(), None)
    assert out.columns == [*df.columns, f"_check_{name}"]
    assert out.schema[f"_check_{name}"] == polars_schema()["checks"].inner
    assert out.drop(f"_check_{name}").equals(df)


# --- CheckConfig -----------------------------------------------------------------------------------------------------
def test_unknown_check_name_is_a_config_error():
    with pytest.raises(ConfigError, match="'box_inside'.*valid checks: box_inside_image, box_nondegenerate"):
        CheckConfig(enabled=("chain_length", "box_inside"))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"outside_policy": "shrug"}, "outside_policy"),
        ({"tolerance_px": -1.0}, "tolerance_px"),
        ({"min_steps": 3, "max_steps": 2}, "min_steps"),
        ({"duplicate_iou": 0.0}, "duplicate_iou"),
        ({"enabled": "zoom_need"}, "enabled"),
        ({"enabled": ("zoom_need", "zoom_need")}, "twice"),
    ],
)
def test_bad_config_values(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        CheckConfig(**kwargs)
