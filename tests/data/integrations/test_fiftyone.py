"""FiftyOne integration against FiftyOne's real database: push → edit with the SDK → pull, views, CLI, App.

Each test uses its own dataset name (``virl-test-<hex>``) and deletes it at teardown. The images of these records do
not exist on disk: push must never open them.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import urllib.request
import uuid

import pytest
from typer.testing import CliRunner

from tests.conftest import make_record
from virl_data.core import boxconv
from virl_data.core.types import Box, CheckResult, RationaleStep, Review, Status
from virl_data.review import merge
from virl_data.review.merge import effective
from virl_data.storage import corpus

pytestmark = pytest.mark.integration
fo = pytest.importorskip("fiftyone")
vf = pytest.importorskip("virl_data.integrations.fiftyone")
W, H = 100, 80  # make_record's image size


def _records():
    """0-5 plain (2 steps, 3 boxes), 6 rejected, 7 long, 8 tiny target, 9 already fixed elsewhere, 10 image of
    unknown size (0 x 0: nothing to draw), 11 empty chain."""
    recs = [make_record(i) for i in range(6)]
    dup = CheckResult("distinct_steps", False, "duplicate_step: steps 0 and 1 (IoU 0.95)", 0.95)
    recs.append(make_record(6, status=Status.REJECTED, checks=(dup,)))
    recs.append(make_record(7, chain=[[(0, 0, 10, 10)], [(10, 10, 20, 20)], [(20, 20, 30, 30)], [(30, 30, 40, 40)]]))
    recs.append(make_record(8, chain=[[(5, 5, 60, 60)], [(50, 50, 52, 52)]]))
    fixed = (RationaleStep(boxes=(Box(1, 1, 20, 20),), phrase="fixed"),)
    review = Review(tool="labelstudio", reviewer="bo", at="2025-01-01T00:00:00+00:00", verdict="fix", chain=fixed)
    recs.append(dataclasses.replace(make_record(9), reviews=(review,), status=Status.REVIEWED))
    recs.append(make_record(10, size=(0, 0)))
    recs.append(make_record(11, chain=[]))
    return recs


@pytest.fixture
def name():
    dataset_name = f"virl-test-{uuid.uuid4().hex[:10]}"
    yield dataset_name
    for n in fo.list_datasets():
        if n == dataset_name or n.startswith(f"{dataset_name}.virl-tmp-"):
            fo.delete_dataset(n)


@pytest.fixture
def pushed(name, tmp_path):
    recs = _records()
    result = vf.push(recs, name, image_root=tmp_path / "images")
    return name, recs, result


def _samples(name):
    return {s.virl_id: s for s in fo.load_dataset(name)}


def _det(sample, step, box):
    return next(d for d in sample.chain.detections if d.step == step and d.box == box)


# --- push ------------------------------------------------------------------------------------------------------------
def test_push_writes_chain_fields_tags_and_order_line(pushed, tmp_path):
    name, recs, result = pushed
    assert result.samples == len(recs) == len(fo.load_dataset(name))
    s = _samples(name)[recs[0].id]
    assert s.filepath == str((tmp_path / "images" / recs[0].image.path).resolve())
    assert (s.metadata.width, s.metadata.height) == (W, H)
    assert (s.question, s.answer, s.source, s.status, s.n_steps, s.n_boxes) == (
        recs[0].question, "red", "test", "mined", 2, 3)
    assert s.zoom_need == pytest.approx(50 * 40 / (W * H))  # final step's union box (40, 10, 90, 50)
    dets = s.chain.detections
    assert [(d.label, d.order, d.step, d.box, d.phrase) for d in dets] == [
        ("1. thing 0", 0, 0, 0, "thing 0"), ("2. thing 1", 1, 1, 0, "thing 1"), ("2. thing 1", 1, 1, 1, "thing 1")]
    assert dets[1].bounding_box == pytest.approx([0.4, 0.25, 0.2, 0.375])
    # one open line from the centre of step 0 (20, 20) to the centre of step 1's union box (65, 30)
    (line,) = s.chain_order.polylines
    assert not line.closed and not line.filled
    assert [list(p) for p in line.points[0]] == [pytest.approx([0.2, 0.25]), pytest.approx([0.65, 0.375])]
    rejected = _samples(name)[recs[6].id]
    assert set(rejected.tags) == {"status:rejected", "source:test", "reason:duplicate_step"}
    assert (rejected.reject_reason, rejected.failed_checks, rejected.check_distinct_steps) == (
        "distinct_steps", ["distinct_steps"], 0.95)
    # a record already fixed elsewhere is pushed as corrected (its effective chain)
    fixed = _samples(name)[recs[9].id]
    assert ([d.label for d in fixed.chain.detections], fixed.n_steps, fixed.status) == (["1. fixed"], 1, "reviewed")
    unsized, empty = _samples(name)[recs[10].id], _samples(name)[recs[11].id]
    assert (unsized.chain, unsized.metadata, unsized.zoom_need, empty.chain.detections, empty.chain_order) == (
        None, None, None, [], None)


def test_samples_without_drawable_chain_take_tags_only(pushed):
    name, recs, _ = pushed
    for rid in (recs[10].id, recs[11].id):
        s = _samples(name)[rid]
        s.tags.append("ok")
        s.save()
    merged, report = vf.pull(name, recs)
    assert report.applied == 2 and report.invalid == []
    assert [(r.reviews[-1].verdict, r.reviews[-1].chain) for r in merged[10:]] == [("accept", None)] * 2


def test_a_box_answer_is_drawn_as_a_box_and_round_trips(name, tmp_path):
    grounding = dataclasses.replace(make_record(0, chain=[[(50, 20, 100, 60)]]), answer="[50, 20, 100, 60]",
                                    answer_type="box")
    recs = [grounding, make_record(1)]
    vf.push(recs, name, image_root=tmp_path)
    s = _samples(name)
    (det,) = s[grounding.id].answer_box.detections
    assert det.label == "answer" and det.bounding_box == pytest.approx([0.5, 0.25, 0.5, 0.5])
    assert s[grounding.id].answer == "[50, 20, 100, 60]" and s[recs[1].id].answer_box is None
    merged, report = vf.pull(name, recs)
    assert merged == recs and report.applied == 0  # shown, not an edit


def test_zoom_need_is_the_final_steps_union_over_the_image():
    # final step of make_record: boxes (40,20,60,50) and (70,10,90,30) → union (40,10,90,50) = 50 x 40 px
    helpers = vf._helpers([make_record(0)])
    assert helpers == [{"n_steps": 2, "n_boxes": 3, "zoom_need": pytest.approx(2000 / 8000)}]


def test_push_refuses_an_existing_name_unless_overwrite(pushed, tmp_path):
    name, recs, _ = pushed
    with pytest.raises(vf.FiftyOneError, match=f"FiftyOne dataset '{name}' already exists; pass --overwrite"):
        vf.push(recs[:2], name, image_root=tmp_path)
    assert len(fo.load_dataset(name)) == len(recs)
    assert vf.push(recs[:2], name, image_root=tmp_path, overwrite=True).samples == 2
    assert len(fo.load_dataset(name)) == 2
    assert not [n for n in fo.list_datasets() if ".virl-tmp-" in n and n.startswith(name)]


def test_saved_views_select_what_a_curator_wants_first(pushed):
    name, recs, result = pushed
    assert set(result.views) == {"rejected by reason", "long chains", "tiny targets", "disagreements", "reviewed",
                                 "rejected: duplicate_step"}
    ds = fo.load_dataset(name)

    def ids(view_name):
        return ds.load_saved_view(view_name).values("virl_id")

    assert ids("rejected by reason") == ids("rejected: duplicate_step") == [recs[6].id]
    assert ids("long chains") == [recs[7].id]
    assert ids("tiny targets") == [recs[8].id]
    assert ids("disagreements") == ids("reviewed") == []
    samples = _samples(name)
    for rid, tag in ((recs[0].id, "reject"), (recs[6].id, "ok"), (recs[1].id, "ok")):
        samples[rid].tags.append(tag)
        samples[rid].save()
    assert set(ids("disagreements")) == {recs[0].id, recs[6].id}  # reject on a mined record, ok on a rejected one
    assert set(ids("reviewed")) == {recs[0].id, recs[1].id, recs[6].id}


# --- pull ------------------------------------------------------------------------------------------------------------
def test_round_trip_without_edits_is_the_identity(pushed):
    name, recs, _ = pushed
    merged, report = vf.pull(name, recs, reviewer="ana")
    assert merged == recs
    assert (report.applied, report.unchanged, report.unknown_ids, report.invalid) == (0, 0, [], [])


def _edit(name, recs):
    """Tag reject, tag ok, move a box, delete a box, reorder the steps, on records 0-4; return the moved box."""
    s = _samples(name)
    s[recs[0].id].tags.append("reject")
    s[recs[1].id].tags.append("ok")
    moved = [0.45, 0.3, 0.2, 0.375]
    _det(s[recs[2].id], 1, 0).bounding_box = moved
    s[recs[3].id].chain.detections = [d for d in s[recs[3].id].chain.detections if (d.step, d.box) != (1, 1)]
    _det(s[recs[4].id], 0, 0).order = 1
    for d in s[recs[4].id].chain.detections:
        if d.step == 1:
            d.order = 0
    for i in range(5):
        s[recs[i].id].save()
    return Box(*boxconv.fiftyone_rel_xywh_to_canonical(moved, width=W, height=H).tolist())


def test_pull_applies_exactly_the_edits_made(pushed):
    name, recs, _ = pushed
    moved = _edit(name, recs)
    merged, report = vf.pull(name, recs, reviewer="ana", at="2025-06-01T12:00:00+00:00")
    assert (report.applied, report.unknown_ids, report.invalid) == (5, [], [])
    verdicts = [(r.reviews[-1].verdict, r.status) if r.reviews else None for r in merged]
    assert verdicts[:5] == [("reject", Status.REJECTED), ("accept", Status.REVIEWED), ("fix", Status.REVIEWED),
                            ("fix", Status.REVIEWED), ("fix", Status.REVIEWED)]
    assert merged[5:] == recs[5:]  # untouched records come back equal
    assert all(r.reviews[-1].reviewer == "ana" and r.reviews[-1].tool == "fiftyone" for r in merged[:5])
    assert merged[0].reviews[-1].chain is None and merged[1].reviews[-1].chain is None
    c0, c1 = recs[2].chain
    assert effective(merged[2]).chain == (c0, dataclasses.replace(c1, boxes=(moved, c1.boxes[1])))
    assert moved == Box(45, 24, 65, 54)
    assert effective(merged[3]).chain == (c0, dataclasses.replace(c1, boxes=c1.boxes[:1]))
    assert effective(merged[4]).chain == (recs[4].chain[1], recs[4].chain[0])
    assert [r.chain for r in merged] == [r.chain for r in recs]  # the mined chains are never overwritten


def test_pulling_twice_changes_nothing_the_second_time(pushed, tmp_path):
    name, recs, _ = pushed
    _edit(name, recs)
    once, first = vf.pull(name, recs, reviewer="ana")
    twice, second = vf.pull(name, once, reviewer="ana")
    assert twice == once
    assert (first.applied, second.applied, second.unchanged) == (5, 0, 5)


def test_bad_edits_are_reported_and_no_record_is_lost(pushed):
    name, recs, _ = pushed
    s = _samples(name)
    s[recs[0].id].chain.detections = []  # every box deleted
    _det(s[recs[1].id], 0, 0).bounding_box = [0.9, 0.1, 0.3, 0.1]  # sticks out of the image on the right
    s[recs[2].id].tags.extend(["reject", "ok"])
    s[recs[3].id].virl_id = "nobody-1234"
    _det(s[recs[4].id], 0, 0).bounding_box = [0.1, 0.1, 0.2]
    s[recs[5].id][vf.PUSHED_FIELD] = None
    for i in range(6):
        s[recs[i].id].save()
    merged, report = vf.pull(name, recs)
    assert merged == recs
    assert report.unknown_ids == ["nobody-1234"]
    invalid = dict(report.invalid)
    assert invalid == {
        recs[4].id: "bad_box: detection 0 has bounding_box [0.1, 0.1, 0.2], not 4 numbers [x, y, w, h]",
        recs[0].id: "empty_chain",
        recs[1].id: "box_outside_image_step_0",
        recs[2].id: "conflicting_tags: tagged both reject and ok",
        recs[5].id: "missing_field: virl_pushed (the pushed state) was removed",
    }


def test_a_sample_deleted_in_fiftyone_comes_back_rejected_with_a_note_and_is_counted(pushed):
    """Deleting a sample is a reviewer's decision: its record gets a `reject` review noted `deleted_in_review`, is
    counted in the report, and pulling again records nothing new. A sample whose `virl_id` was edited is not
    taken for deleted (its pushed state names its record)."""
    name, recs, _ = pushed
    ds = fo.load_dataset(name)
    s = _samples(name)
    ds.delete_samples([s[recs[2].id].id, s[recs[7].id].id])
    s[recs[3].id].virl_id = "nobody-1234"
    s[recs[3].id].save()
    merged, report = vf.pull(name, recs, reviewer="ana", at="2025-06-01T12:00:00+00:00")
    assert report.deleted == [recs[2].id, recs[7].id] and report.unknown_ids == ["nobody-1234"]
    assert (report.applied, report.unchanged, report.invalid) == (2, 0, [])
    assert "deleted in review 2" in report.summary()
    for i in (2, 7):
        assert merged[i].status is Status.REJECTED and merged[i].chain == recs[i].chain
        (rev,) = merged[i].reviews
        assert (rev.tool, rev.reviewer, rev.verdict, rev.chain, rev.answer) == ("fiftyone", "ana", "reject", None, None)
        assert rev.note == f"deleted_in_review: its fiftyone sample was deleted from dataset '{name}'"
    assert [r for i, r in enumerate(merged) if i not in (2, 7)] == [r for i, r in enumerate(recs) if i not in (2, 7)]
    again, second = vf.pull(name, merged, reviewer="ana")
    assert again == merged and (second.applied, second.unchanged, second.deleted) == (0, 2, report.deleted)


def test_records_never_pushed_are_not_taken_for_deleted(name, tmp_path):
    """A review queue pushes some records of a corpus; pulling against the whole corpus marks none of the others."""
    recs = _records()
    vf.push(recs[:3], name, image_root=tmp_path / "images")
    merged, report = vf.pull(name, recs)
    assert merged == recs and report.deleted == []


def test_pull_from_a_missing_dataset_is_a_one_line_error(name):
    with pytest.raises(vf.FiftyOneError, match=f"no FiftyOne dataset named '{name}'; existing: "):
        vf.pull(name, [])


# --- converters (no database) ----------------------------------------------------------------------------------------
def test_detections_to_chain_orders_steps_and_places_new_boxes():
    pushed_box = Box(10, 10, 30, 30)
    dets = [
        {"bounding_box": [0.4, 0.25, 0.2, 0.375], "label": "x", "order": 1, "step": 1, "box": 0, "phrase": "b"},
        {"bounding_box": [0.5, 0.5, 0.1, 0.125], "label": "new thing"},  # drawn by a person: a new last step
        {"bounding_box": [0.1 + 1e-12, 0.125, 0.2, 0.25], "label": "1. a", "order": 0, "step": 0, "box": 0,
         "phrase": "a", "role": "context"},
        {"bounding_box": [0.0, 0.0, 0.1, 0.125], "label": "between", "order": 0.5},
    ]
    chain = vf.detections_to_chain(dets, W, H, pushed=[pushed_box])
    assert [s.phrase for s in chain] == ["a", "between", "b", "new thing"]
    assert chain[0].boxes == (pushed_box,) and chain[0].role == "context"  # float noise snapped to the pushed box
    assert chain[3].boxes == (Box(50, 40, 60, 50),)
    with pytest.raises(vf.FiftyOneError, match="bad_attribute: order='first' is not a number"):
        vf.detections_to_chain([{**dets[0], "order": "first"}], W, H)


def test_review_of_a_sample_nobody_touched_is_none_and_json_round_trips():
    rec = make_record(0)
    pushed = merge.pushed_to_json(rec.chain, rec.answer)
    assert merge.pushed_from_json(pushed) == (rec.chain, rec.answer)
    dets = tuple(d.to_dict() for d in vf.chain_to_detections(rec.chain, W, H).detections)
    state = vf.SampleState(rec.id, ("status:mined",), dets, pushed, rec.answer, W, H)
    assert vf.review_of(state, reviewer="a", at="t") is None
    answered = vf.review_of(dataclasses.replace(state, answer="blue", note="was blue"), reviewer="a", at="t")
    assert (answered.verdict, answered.chain, answered.answer, answered.note) == ("fix", None, "blue", "was blue")


def test_review_of_a_chain_with_boxless_steps_nobody_touched_is_none():
    """Steps without boxes (e.g. Flickr30k captions without their XML) push no detection; untouched, nothing comes
    back, and an ``ok`` tag is an accept, not an emptied chain."""
    rec = make_record(0, chain=[[], [(40, 20, 60, 50)], []])
    pushed = merge.pushed_to_json(rec.chain, rec.answer)
    dets = tuple(d.to_dict() for d in vf.chain_to_detections(rec.chain, W, H).detections)
    state = vf.SampleState(rec.id, ("status:rejected",), dets, pushed, rec.answer, W, H)
    assert vf.review_of(state, reviewer="a", at="t") is None
    ok = vf.review_of(dataclasses.replace(state, tags=("ok",)), reviewer="a", at="t")
    assert (ok.verdict, ok.chain) == ("accept", None)
    none_drawn = vf.SampleState(rec.id, (), (), merge.pushed_to_json(rec.chain[:1], rec.answer), rec.answer, W, H)
    assert vf.review_of(none_drawn, reviewer="a", at="t") is None
    moved = [{**dets[0], "bounding_box": [0.1, 0.1, 0.2, 0.2]}]
    fixed = vf.review_of(dataclasses.replace(state, detections=tuple(moved)), reviewer="a", at="t")
    assert fixed.verdict == "fix" and [(s.phrase, len(s.boxes)) for s in fixed.chain] == [("thing 1", 1)]
    assert fixed.chain[0].boxes[0].as_tuple() == pytest.approx((10, 8, 30, 24))


def test_centres_convert_to_relative_points():
    got = boxconv.canonical_to_fiftyone_rel_centers([[50, 50, 100, 75], [0, 0, 200, 100]], width=200, height=100)
    assert got.tolist() == [[0.375, 0.625], [0.5, 0.5]]
    assert boxconv.canonical_to_fiftyone_rel_centers(Box(0, 0, 10, 20), width=10, height=20).tolist() == [0.5, 0.5]


def test_import_virl_data_does_not_import_fiftyone():
    code = "import sys, virl_data, virl_data.cli, virl_data.cli.fiftyone; print('fiftyone' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- CLI and App -----------------------------------------------------------------------------------------------------
def _cli():
    import typer

    from virl_data.cli.fiftyone import app_command, fiftyone_app

    app = typer.Typer()
    app.add_typer(fiftyone_app, name="fiftyone")
    app.command("app")(app_command)
    return app


def test_cli_push_pull_and_errors(name, tmp_path):
    recs = _records()
    src = corpus.write(recs, tmp_path / "c.parquet", image_root=tmp_path / "images")
    runner, app = CliRunner(), _cli()
    result = runner.invoke(app, ["fiftyone", "push", str(src), "--dataset", name])
    assert result.exit_code == 0, result.output
    assert f"pushed 12 records → FiftyOne dataset '{name}'" in result.output
    again = runner.invoke(app, ["fiftyone", "push", str(src), "--dataset", name])
    assert again.exit_code == 2 and "error:" in again.output and "--overwrite" in again.output
    s = _samples(name)[recs[0].id]
    s.tags.append("reject")
    s.save()
    fo.load_dataset(name).delete_samples(_samples(name)[recs[5].id])
    out = tmp_path / "out.parquet"
    args = ["fiftyone", "pull", name, "--corpus", str(src), "--out", str(out), "--reviewer", "ana",
            "--report", str(tmp_path / "r.json")]
    pulled = runner.invoke(app, args)
    assert pulled.exit_code == 0 and recs[5].id in pulled.output, pulled.output
    assert re.search(r"deleted in review\W+1\W+recorded as reject reviews;", pulled.output), pulled.output
    assert json.loads((tmp_path / "r.json").read_text())["deleted"] == [recs[5].id]
    merged = corpus.read_records(out)
    assert [r.status for r in merged][:2] == [Status.REJECTED, Status.MINED] and merged[1:5] == recs[1:5]
    assert merged[5].status is Status.REJECTED and merged[5].reviews[0].note.startswith("deleted_in_review: ")
    assert merged[6:] == recs[6:]
    assert corpus.image_root(out) == tmp_path / "images"
    missing = runner.invoke(app, ["fiftyone", "pull", f"{name}-nope", "--corpus", str(src), "--out", str(out)])
    assert missing.exit_code == 2 and f"no FiftyOne dataset named '{name}-nope'" in missing.output
    neither = runner.invoke(app, ["app"])
    assert neither.exit_code == 2 and "give a CORPUS" in neither.output


def test_app_serves_the_dataset_headless(pushed):
    name, _, _ = pushed
    port = 5190 + uuid.uuid4().int % 50
    result = CliRunner().invoke(_cli(), ["app", "--dataset", name, "--remote", "--port", str(port), "--no-wait"])
    try:
        assert result.exit_code == 0, result.output
        url = f"http://127.0.0.1:{port}/datasets/{fo.load_dataset(name).slug}"
        assert url in result.output
        with urllib.request.urlopen(url, timeout=30) as page:
            assert page.status == 200
    finally:
        assert vf.stop_app(port) is not None
