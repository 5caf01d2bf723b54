"""Review results merged into the corpus: append-only, idempotent, nothing lost."""

from __future__ import annotations

import pytest

from tests.conftest import make_record
from virl_data.core.types import Box, RationaleStep, Review, Status
from virl_data.review.merge import MergeReport, ReviewEdit, ReviewError, chain_problem, effective, merge_reviews
from virl_data.storage import corpus
from virl_train.data import load_split


def _review(verdict: str, *, chain=None, answer=None, reviewer="ann@example.org", at="2026-11-25T10:00:00") -> Review:
    return Review(tool="test", reviewer=reviewer, at=at, verdict=verdict, chain=chain, answer=answer)


def _chain(*boxes: tuple[float, float, float, float]) -> tuple[RationaleStep, ...]:
    return tuple(RationaleStep(boxes=(Box(*b),), phrase=f"p{j}") for j, b in enumerate(boxes))


def test_merge_appends_and_sets_status_without_touching_the_original():
    recs = [make_record(i) for i in range(3)]
    fixed = _chain((5, 5, 20, 20))
    edits = [
        ReviewEdit(recs[0].id, _review("accept")),
        ReviewEdit(recs[1].id, _review("reject")),
        ReviewEdit(recs[2].id, _review("fix", chain=fixed, answer="blue")),
    ]
    out, report = merge_reviews(recs, edits)
    assert [r.id for r in out] == [r.id for r in recs]
    assert [r.status for r in out] == [Status.REVIEWED, Status.REJECTED, Status.REVIEWED]
    assert report.applied == 3 and report.unchanged == 0 and not report.unknown_ids and not report.invalid
    assert out[2].chain == recs[2].chain and out[2].answer == "red"  # mined original kept
    eff = effective(out[2])
    assert eff.chain == fixed and eff.answer == "blue"
    assert effective(out[0]) is out[0]


def test_merge_twice_changes_nothing_the_second_time():
    recs = [make_record(0)]
    edits = [ReviewEdit(recs[0].id, _review("fix", chain=_chain((1, 1, 9, 9))))]
    once, _ = merge_reviews(recs, edits)
    later = [ReviewEdit(recs[0].id, _review("fix", chain=_chain((1, 1, 9, 9)), at="2026-11-26T00:00:00"))]
    twice, report = merge_reviews(once, later)
    assert twice == once
    assert report == MergeReport(applied=0, unchanged=1)


def test_unknown_ids_and_invalid_corrections_are_reported_and_nothing_is_lost():
    recs = [make_record(i, size=(100, 80)) for i in range(2)]
    edits = [
        ReviewEdit("nope", _review("accept")),
        ReviewEdit(recs[0].id, _review("fix", chain=_chain((50, 50, 120, 70)))),  # outside the 100 x 80 image
        ReviewEdit(recs[1].id, _review("fix", chain=())),
    ]
    out, report = merge_reviews(recs, edits)
    assert out == recs
    assert report.unknown_ids == ["nope"]
    assert report.invalid == [(recs[0].id, "box_outside_image_step_0"), (recs[1].id, "empty_chain")]
    assert report.summary() == "applied 0, unchanged 0, unknown ids 1, invalid 2"


def test_chain_problem_tolerance_and_empty_boxes():
    assert chain_problem(_chain((0, 0, 100.4, 80)), 100, 80) is None
    assert chain_problem(_chain((0, 0, 101, 80)), 100, 80) == "box_outside_image_step_0"
    assert chain_problem(_chain((0, 0, 10, 10), (5, 5, 5, 9)), 100, 80) == "empty_box_step_1"
    assert chain_problem((RationaleStep(boxes=()),), 100, 80) == "empty_step_0"


def test_unknown_verdict_is_a_clear_error():
    with pytest.raises(ReviewError, match="unknown verdict 'maybe'"):
        ReviewEdit("x", _review("maybe"))


def test_trainer_reads_the_reviewed_chain(tmp_path):
    rec = make_record(0, status=Status.ACCEPTED, split="train")
    fixed = _chain((2, 2, 40, 40))
    (out,), _ = merge_reviews([rec], [ReviewEdit(rec.id, _review("fix", chain=fixed, answer="green"))])
    corpus.write([out], tmp_path / "c.parquet")
    (loaded,) = load_split(tmp_path / "c.parquet", "train")
    assert loaded.chain == fixed and loaded.answer == "green"
    assert loaded.reviews == out.reviews
