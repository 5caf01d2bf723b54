"""The review queue's criteria on hand-built records and episodes, the diff, corruption, Label Studio tasks and the
CLI's error boundary (no database, no server)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import orjson
import pytest
from typer.testing import CliRunner

from tests.conftest import make_record
from virl_data.storage import corpus
from virl_data.review import queue as rq
from virl_data.review.corrupt import corrupt_chains, shift_box
from virl_data.review.diff import diff_records
from virl_data.integrations import labelstudio_tasks as lst
from virl_data.miners.shapes import ShapesConfig, generate, scene_objects
from virl_data.review.merge import effective
from virl_data.core.types import Box, RationaleStep, Review, Status

# make_record: 100 x 80 image, step 0 = (10, 10, 30, 30), step 1 = (40, 20, 60, 50) + (70, 10, 90, 30); answer "red"
STEP0, STEP1A, OTHER = Box(10, 10, 30, 30), Box(40, 20, 60, 50), Box(5, 55, 25, 75)
OBJECTS = (STEP0, STEP1A, Box(70, 10, 90, 30), OTHER)


def ep(*crops, answer="red"):
    return rq.PolicyEpisode("x", crops=tuple(crops), answer=answer)


@pytest.mark.parametrize(
    ("episode", "expected"),
    [
        (ep(STEP0, STEP1A), set()),  # right answer, right crops
        (ep(OTHER), {"illusion", "unlisted_object:0"}),  # right answer, only off the chain, on a known object
        (ep(Box(80, 60, 95, 75)), {"illusion"}),  # right answer, off the chain, on nothing known
        (ep(STEP0, OTHER), {"unlisted_object:0"}),  # one crop on the chain, one on an object it lacks
        (ep(STEP0, Box(40, 10, 90, 50), answer="blue"), {"wrong_answer_right_crops"}),  # step 1 by its union box
        (ep(STEP0, answer="blue"), set()),  # wrong, but step 1 never looked at
        (ep(None, answer="red"), set()),  # no valid crop: nothing to compare
        (ep(Box(10, 10, 30, 30.5), Box(80, 60, 95, 75)), set()),  # one crop on the chain: not an illusion
    ],
)
def test_episode_reasons(episode, expected):
    rec = make_record(0)
    unlisted = rq._unlisted(OBJECTS, rec, rq._steps(rec), rq.QueueConfig())
    assert len(unlisted) == 1
    assert rq.episode_reasons(rec, episode, unlisted) == expected


def test_record_scores_are_fractions_and_unlisted_needs_the_same_object():
    rec = make_record(0)
    other2 = Box(80, 60, 95, 75)
    objects = (*OBJECTS, other2)
    same = [ep(STEP0, OTHER), ep(STEP0, OTHER), ep(STEP0, STEP1A), ep(STEP0, OTHER)]
    entry = rq.score_record(rec, same, objects=objects)
    assert (entry.reason, entry.score, entry.n_episodes) == ("unlisted_object", 0.75, 4)
    assert entry.crops == (STEP0, OTHER)  # the first episode showing the reason
    scattered = [ep(STEP0, OTHER), ep(STEP0, other2), ep(STEP0, STEP1A), ep(STEP0, STEP1A)]
    assert rq.score_record(rec, scattered, objects=objects).scores == {"unlisted_object": 0.25}
    assert rq.score_record(rec, [ep(STEP0, STEP1A)], objects=objects) is None


def test_degenerate_chains_need_no_episode():
    assert rq.chain_problem(make_record(0)) is None
    assert rq.chain_problem(make_record(0, chain=[[(10, 10, 11, 30)]])) == "tiny_box_step_0"
    assert rq.chain_problem(make_record(0, chain=[[(10, 10, 10, 30)]])) == "degenerate_box_step_0"
    dup = make_record(0, chain=[[(10, 10, 30, 30)], [(10, 10, 30, 31)]])
    assert rq.chain_problem(dup) == "duplicate_box_steps_0_1"
    assert rq.score_record(dup, []).scores == {"degenerate_chain": 1.0}


def test_rank_orders_filters_and_uses_the_reviewed_chain():
    recs = [make_record(i, split="val" if i < 3 else "train") for i in range(4)]
    recs.append(make_record(9, status=Status.REJECTED, split="val"))
    eps = {
        recs[0].id: [ep(OTHER)] * 2,  # illusion + unlisted 1.0
        recs[1].id: [ep(STEP0, OTHER), ep(STEP0, STEP1A)],  # unlisted 0.5
        recs[2].id: [ep(STEP0, Box(40, 10, 90, 50), answer="blue")],  # wrong answer, right crops 1.0
        recs[3].id: [ep(OTHER)],  # other split
        recs[4].id: [ep(OTHER)],  # rejected
    }
    episodes = [dataclasses.replace(e, record_id=rid) for rid, es in eps.items() for e in es] + [ep(OTHER)]
    res = rq.rank(recs, episodes, split="val", objects=lambda r: OBJECTS)
    assert [(e.rank, e.record_id, e.reason, e.score) for e in res.entries] == [
        (1, recs[0].id, "illusion", 1.0), (2, recs[2].id, "wrong_answer_right_crops", 1.0),
        (3, recs[1].id, "unlisted_object", 0.5)]  # fmt: skip
    assert (res.n_records, res.n_episodes, res.unknown_ids) == (3, 8, ["x"])
    only = rq.rank(recs, episodes, split="val", reasons=["unlisted_object"], top=1, objects=lambda r: OBJECTS)
    assert [(e.record_id, e.reason, e.score) for e in only.entries] == [(recs[0].id, "unlisted_object", 1.0)]
    assert only.by_reason == {"unlisted_object": 2}
    # a review that adds the looked-at object to the chain takes record 0 out of the queue
    fixed = (*recs[0].chain, RationaleStep(boxes=(OTHER,), phrase="other"))
    review = Review(tool="fiftyone", reviewer="a", at="t", verdict="fix", chain=fixed)
    recs[0] = dataclasses.replace(recs[0], reviews=(review,), status=Status.REVIEWED)
    again = rq.rank(recs, episodes, split="val", objects=lambda r: OBJECTS)
    assert recs[0].id not in {e.record_id for e in again.entries}
    with pytest.raises(Exception, match="unknown queue reason"):
        rq.rank(recs, episodes, reasons=["nope"])


def test_known_objects_rebuild_the_shapes_scene_or_pool_the_image_chains():
    cfg = ShapesConfig(image_size=(128, 128))
    recs = list(generate(8, seed=0, config=cfg))
    objects = rq.known_objects(recs)
    for r in recs:
        assert set(r.boxes) <= set(objects(r)) and objects(r) == scene_objects(r)
    other_world = dataclasses.replace(recs[0], question="What colour is the huge hexagon?")
    assert scene_objects(other_world) is None
    a = make_record(0, path="same.png")
    b = make_record(1, path="same.png", chain=[[(5, 55, 25, 75)], [(10, 10, 30, 30.5)]])
    assert set(rq.known_objects([a, b])(a)) == {*a.boxes, OTHER}


def test_queue_file_round_trips_and_bad_lines_name_the_line(tmp_path):
    entries = [rq.QueueEntry("a", "illusion", 1.0, {"illusion": 1.0}, 3, (STEP0,), "red", 1)]
    path = rq.write_queue(entries, tmp_path / "q.jsonl")
    assert rq.read_queue(path) == entries
    path.write_bytes(path.read_bytes() + b'{"id": "b"}\n')
    with pytest.raises(Exception, match="q.jsonl:2: not a queue entry"):
        rq.read_queue(path)


def test_corruption_shifts_off_the_object_or_drops_a_step():
    assert shift_box(Box(90, 0, 100, 10), 100, 100) == Box(78, 0, 88, 10)
    assert shift_box(Box(0, 0, 100, 100), 100, 100) is None
    recs = list(generate(100, seed=1, config=ShapesConfig(image_size=(128, 128))))
    bad, kinds = corrupt_chains(recs, fraction=0.05, seed=3)
    assert len(kinds) == 5 and set(kinds.values()) <= {"shifted_box", "missing_step"}
    for before, after in zip(recs, bad):
        if before.id not in kinds:
            assert before == after
        elif kinds[before.id] == "missing_step":
            assert len(after.chain) == len(before.chain) - 1
        else:
            moved = set(after.boxes) - set(before.boxes)
            assert len(moved) == 1 and len(after.chain) == len(before.chain)
    assert corrupt_chains(recs, fraction=0.05, seed=3) == (bad, kinds)


def test_diff_counts_changes_by_field_verdict_and_reason():
    a = [make_record(i) for i in range(4)]
    fix = Review(tool="fiftyone", reviewer="r", at="t", verdict="fix", chain=(RationaleStep((OTHER,), "o"),))
    ok = Review(tool="fiftyone", reviewer="r", at="t", verdict="accept")
    b = [dataclasses.replace(a[0], reviews=(fix,), status=Status.REVIEWED),
         dataclasses.replace(a[1], reviews=(ok,), status=Status.REVIEWED), a[2], make_record(7)]  # fmt: skip
    d = diff_records(a, b, reasons={a[0].id: "illusion"})
    assert [(c.id, c.fields, c.verdict, c.reason) for c in d.changed] == [
        (a[0].id, ("chain", "status"), "fix", "illusion"), (a[1].id, ("status",), "accept", "not queued")]
    assert (d.added, d.removed, d.unchanged) == ([b[3].id], [a[3].id], 1)
    assert d.by_field == {"chain": 1, "answer": 0, "status": 2} and d.by_reason == {"illusion": 1, "not queued": 1}


def test_label_studio_queue_task_has_both_layers_and_pull_reads_only_the_chain():
    rec = make_record(0)
    scores = {"illusion": 1.0, "unlisted_object": 0.5}
    entry = rq.QueueEntry(rec.id, "illusion", 1.0, scores, 2, (OTHER, STEP0), "red", 3)
    task = lst.record_to_task(rec, "/img.png", predictions=True, entry=entry)
    assert task["data"]["queue_text"] == '#3 illusion 1.00 (unlisted_object 0.50) · policy answered "red"'
    results = task["predictions"][0]["result"]
    policy = [r for r in results if r["from_name"] == "policy"]
    assert [r["value"]["rectanglelabels"] for r in policy] == [["crop 1"], ["crop 2"]]
    assert all(r["readonly"] for r in policy) and not any(r.get("readonly") for r in results if r not in policy)
    assert policy[0]["value"]["x"] == pytest.approx(5.0) and policy[0]["value"]["height"] == pytest.approx(25.0)
    # an annotation that keeps both layers as pre-drawn is no review; moving a policy crop changes nothing either
    moved = [dict(r, value=dict(r["value"], x=50.0)) if r["from_name"] == "policy" else r for r in results]
    assert lst.annotation_review({"result": moved}, rec.chain, rec.answer, width=100, height=80, reviewer="a",
                                 at="t") is None  # fmt: skip
    assert "policy" in lst.load_template("review_queue") and "$queue_text" in lst.load_template("review_queue")


def test_cli_queue_and_diff_on_files_and_errors(tmp_path):
    from virl_data.cli import app

    recs = [make_record(0), make_record(1)]
    src = corpus.write(recs, tmp_path / "c.parquet")
    line = {"id": recs[0].id, "image_size": [100, 80], "rationale": [[[10, 10, 30, 30]]],
            "actions": [[80, 60, 95, 75]], "answer": "red", "gt_answer": "red"}  # fmt: skip
    traj = tmp_path / "t.jsonl"
    train_lines = [dict(line, step=s, id=recs[1].id, actions=[[10, 10, 30, 30]]) for s in (1, 2)]
    traj.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in [line, *train_lines]))
    assert [e.record_id for e in rq.read_episodes(traj, min_step=2)] == [recs[0].id, recs[1].id]
    assert len(rq.read_episodes(traj)) == 3
    runner = CliRunner()
    res = runner.invoke(app, ["queue", str(traj), "--corpus", str(src), "--out", str(tmp_path / "q.jsonl")])
    assert res.exit_code == 0, res.output
    assert [e.reason for e in rq.read_queue(tmp_path / "q.jsonl")] == ["illusion"]
    for args, message in [
        (["--to", "nowhere"], "--to must be one of fiftyone, labelstudio"),
        (["--reasons", "illusion,bogus"], "unknown queue reason(s) bogus"),
        (["--top", "0"], "--top must be at least 1"),
    ]:
        res = runner.invoke(app, ["queue", str(traj), "--corpus", str(src), *args])
        assert res.exit_code == 2 and message in res.output, res.output
    traj.write_text("{not json\n")
    res = runner.invoke(app, ["queue", str(traj), "--corpus", str(src)])
    assert res.exit_code == 2 and "t.jsonl:1: not valid JSON" in res.output
    after = corpus.write([dataclasses.replace(recs[0], answer="blue"), recs[1]], tmp_path / "a.parquet")
    res = runner.invoke(app, ["diff", str(src), str(after), "--json", str(tmp_path / "d.json")])
    assert res.exit_code == 0 and "1 records changed" in res.output
    assert orjson.loads((tmp_path / "d.json").read_bytes())["by_field"] == {"chain": 0, "answer": 1, "status": 0}


def test_queue_reads_trajectories_without_torch():
    code = ("import sys; from virl_data.review import queue as q; import virl_data.cli.queue; "
            "q.read_episodes; import virl_train.trajectories; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_docstring_examples():
    import doctest

    import virl_data.review.corrupt
    import virl_data.review.diff
    import virl_data.miners.shapes
    import virl_data.review.queue
    import virl_train.compare
    import virl_train.scripted

    for module in (virl_data.review.queue, virl_data.review.diff, virl_data.review.corrupt, virl_data.miners.shapes,
                   virl_train.compare, virl_train.scripted):
        assert doctest.testmod(module).failed == 0, module.__name__
