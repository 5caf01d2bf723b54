"""COCO miner: counts and chains hand-checked on the real mmpose / transformers samples, synthetic edge cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest
from PIL import Image

from virl_data.core.errors import ConfigError, CorpusReadError
from virl_data.core.schema import frame_to_records, records_to_frame
from virl_data.core.types import Box, ImageRef, Status, record_id
from virl_data.miners import coco


def _coco(shared_data: Path, sub: str) -> Path:
    d = shared_data / "coco" / sub
    if not d.is_dir():
        pytest.skip(f"no COCO sample at {d}")
    return d


def _by_key(recs) -> dict[tuple[str, str, str], object]:
    return {(r.provenance.native_id("image_id"), r.question_type, r.provenance.native_id("key")): r for r in recs}


def _reasons(rec) -> list[str]:
    return [c.reason for c in rec.checks if not c.passed]


def _close(boxes, expected) -> None:
    """Boxes equal to ``expected`` xyxy tuples up to float rounding of the xywh → xyxy sum."""
    np.testing.assert_allclose([b.as_tuple() for b in boxes], expected, rtol=0, atol=1e-9)


# --- mmpose person_keypoints_val2017 sample: 4 images, 14 persons ----------------------------------------------------
@pytest.fixture
def mmpose(shared_data):
    d = _coco(shared_data, "mmpose_person_keypoints_val2017")
    return _by_key(coco.mine(instances=d / "test_coco.json"))


def test_person_counts_per_image(mmpose):
    counts = {k[0]: r.answer for k, r in mmpose.items() if k[1] == "count"}
    assert counts == {"785": "1", "40083": "3", "196141": "5", "197388": "5"}  # hand-counted in test_coco.json
    assert all(r.question == "How many people are there?" and r.status is Status.MINED
               for k, r in mmpose.items() if k[1] == "count")


def test_count_chain_is_one_step_left_to_right(mmpose):
    rec = mmpose[("40083", "count", "person")]
    (step,) = rec.chain
    assert step.source_ref == "198196,230195,1202706"
    # bbox xywh [38.08,110.95,174.71,174.71], [257.76,139.06,140.05,154.21], [275.17,126.5,10.69,68.26]
    _close(step.boxes, [(38.08, 110.95, 212.79, 285.66), (257.76, 139.06, 397.81, 293.27),
                        (275.17, 126.5, 285.86, 194.76)])
    assert (step.phrase, step.role, rec.answer_type) == ("person", "target", "number")
    assert rec.image == ImageRef("000000040083.jpg", 500, 333)
    assert rec.provenance.source_split == "val2017"
    assert rec.id == record_id("coco", "40083", "count", "person")
    assert mmpose[("196141", "count", "person")].chain[0].source_ref == "1724673,460541,508900,1717641,488308"


def test_small_person_in_a_cell(mmpose):
    # 1202706: 10.69 x 68.26 = 730 px < 1% of 500 x 333; centre (280.5, 160.6) -> centre cell; the other person
    # centred there (230195) covers 13% of the image.
    rec = mmpose[("40083", "small_at", "centre")]
    assert (rec.question, rec.answer) == ("What is the small object in the centre of the image?", "person")
    assert [s.source_ref for s in rec.chain] == ["1202706"]
    _close(rec.chain[0].boxes, [(275.17, 126.5, 285.86, 194.76)])
    # 508900: 16.79 x 32.45 px, centre (449.2, 89.4) of 640 x 429 -> top-right
    assert mmpose[("196141", "small_at", "top-right")].chain[0].source_ref == "508900"
    assert {k[1] for k in mmpose} == {"count", "small_at"}  # no "Is there a person": not every person is small


# --- transformers fixture: image 39769, cats / remotes / couch / bed, no images or categories block ---------------
def test_fixture_without_image_size_is_rejected_but_complete(shared_data):
    d = _coco(shared_data, "transformers_fixture_39769")
    recs = list(coco.mine(instances=d / "coco_annotations.txt"))
    assert [(r.question, r.answer) for r in recs] == [
        ("How many beds are there?", "1"), ("How many cats are there?", "2"),
        ("How many couches are there?", "1"), ("How many remotes are there?", "2")]
    assert all(_reasons(r) == ["image_size_unknown: image 39769 (no size in the file, no images)"] for r in recs)
    assert recs[1].image == ImageRef("000000039769.jpg", 0, 0)
    cats = recs[1].chain[0]
    assert cats.source_ref == "2190839,2190842"
    _close(cats.boxes, [(17.5, 54.38, 318.75, 469.38), (347.5, 25.63, 640.0, 369.38)])


def test_fixture_with_image_file(shared_data):
    d = _coco(shared_data, "transformers_fixture_39769")
    recs = _by_key(coco.mine(instances=d / "coco_annotations.txt", images=d))
    assert all(r.status is Status.MINED and r.image == ImageRef("000000039769.png", 640, 480) for r in recs.values())
    # couch and bed are the only single instances, and both span the whole image: no left/right question
    assert {k[1] for k in recs} == {"count"}
    remotes = recs[("39769", "count", "remote")].chain[0]
    _close(remotes.boxes, [(41.88, 74.2, 175.03, 119.3), (332.89, 79.57, 371.54, 185.88)])


def test_fixture_small_remotes(shared_data):
    # remote areas 6005 and 4109 px: 1.95% and 1.34% of 640 x 480, small under small_frac=0.02
    d = _coco(shared_data, "transformers_fixture_39769")
    recs = _by_key(coco.mine(instances=d / "coco_annotations.txt", images=d, small_frac=0.02))
    exists = recs[("39769", "small_exists", "remote")]
    assert (exists.question, exists.answer, exists.chain[0].source_ref) == (
        "Is there a remote in the image?", "yes", "1110067,1108446")
    assert recs[("39769", "small_at", "top-left")].chain[0].source_ref == "1110067"
    assert recs[("39769", "small_at", "top-centre")].chain[0].source_ref == "1108446"


def test_captions_images_block_lends_the_size(shared_data, tmp_path):
    d = _coco(shared_data, "transformers_fixture_39769")
    caps = tmp_path / "captions_val2017.json"
    caps.write_bytes(orjson.dumps({"images": [{"id": 39769, "file_name": "000000039769.jpg", "width": 640,
                                               "height": 480}], "annotations": []}))
    recs = list(coco.mine(instances=d / "coco_annotations.txt", captions=caps))
    assert recs and all(r.status is Status.MINED and r.image == ImageRef("000000039769.jpg", 640, 480) for r in recs)


# --- LLaVA caps_boxes jsonl (relative xyxy) --------------------------------------------------------------------------
def test_llava_jsonl_converts_relative_boxes(shared_data, tmp_path):
    d = _coco(shared_data, "llava_caps_boxes_val2014")
    Image.new("RGB", (640, 480)).save(tmp_path / "COCO_val2014_000000296284.jpg")
    recs = list(coco.mine(instances=d / "caps_boxes_coco2014_val_80.jsonl", images=tmp_path, limit=1))
    rec = recs[0]
    assert (rec.question, rec.answer, rec.status) == ("How many donuts are there?", "10", Status.MINED)
    assert rec.provenance.source_split == "val2014"
    assert rec.image == ImageRef("COCO_val2014_000000296284.jpg", 640, 480)
    # leftmost donut: [0.0, 0.609, 0.097, 0.722] x (640, 480); second: [0.035, 0.22, 0.196, 0.328]
    _close(rec.chain[0].boxes[:2], [(0, 292.32, 62.08, 346.56), (22.4, 105.6, 125.44, 157.44)])
    assert rec.chain[0].source_ref.split(",")[:2] == ["000000296284#9", "000000296284#4"]
    unsized = next(coco.mine(instances=d / "caps_boxes_coco2014_val_80.jsonl"))
    assert unsized.chain == () and unsized.status is Status.REJECTED
    assert _reasons(unsized)[0].startswith("image_size_unknown: image 000000296284")


# --- synthetic cases -------------------------------------------------------------------------------------------------
CATS = [{"id": 1, "name": "dog"}, {"id": 2, "name": "bench"}, {"id": 3, "name": "cup"}, {"id": 4, "name": "bed"},
        {"id": 5, "name": "person"}]


def _write(tmp_path: Path, anns: list[dict], size=(200, 100), **extra) -> Path:
    data = {"images": [{"id": 1, "file_name": "a.jpg", "width": size[0], "height": size[1]}],
            "annotations": [{"id": 100 + k, "image_id": 1, "iscrowd": 0, **a} for k, a in enumerate(anns)],
            "categories": CATS, **extra}
    path = tmp_path / "instances_train2017.json"
    path.write_bytes(orjson.dumps(data))
    return path


def test_left_of_uses_centres_and_skips_unclear_pairs(tmp_path):
    anns = [{"category_id": 1, "bbox": [10, 10, 20, 20]},   # dog, centre x 20
            {"category_id": 2, "bbox": [120, 10, 40, 30]},  # bench, centre x 140
            {"category_id": 3, "bbox": [135, 50, 10, 10]}]  # cup, centre x 140: level with the bench
    recs = _by_key(coco.mine(instances=_write(tmp_path, anns)))
    left = {k[2]: r for k, r in recs.items() if k[1] == "left_of"}
    assert sorted(left) == ["bench|dog", "cup|dog"]
    rec = left["bench|dog"]
    assert (rec.question, rec.answer, rec.answer_type) == ("Is the bench to the left of the dog?", "no", "yes/no")
    assert [(s.phrase, s.boxes, s.role) for s in rec.chain] == [
        ("bench", (Box(120, 10, 160, 40),), "target"), ("dog", (Box(10, 10, 30, 30),), "target")]
    assert rec.provenance.source_split == "train2017"


def test_clearly_left_margin():
    assert coco.clearly_left(Box(0, 0, 10, 10), Box(20, 0, 30, 10), width=100) is True
    assert coco.clearly_left(Box(20, 0, 30, 10), Box(0, 0, 10, 10), width=100) is False
    assert coco.clearly_left(Box(0, 0, 10, 10), Box(4, 0, 14, 10), width=100) is None  # 4 px < 5% of 100
    assert coco.clearly_left(Box(0, 0, 10, 10), Box(4, 0, 14, 10), width=100, margin=0.01) is None  # 60% overlap


def test_crowd_rejects_the_count_and_blocks_other_templates(tmp_path):
    anns = [{"category_id": 5, "bbox": [10, 10, 5, 5]}, {"category_id": 5, "bbox": [100, 10, 50, 50], "iscrowd": 1},
            {"category_id": 1, "bbox": [120, 40, 5, 5]}]
    recs = _by_key(coco.mine(instances=_write(tmp_path, anns)))
    count = recs[("1", "count", "person")]
    assert count.answer == "2" and count.status is Status.REJECTED
    assert _reasons(count) == ["crowd_annotation: person has iscrowd=1 annotation(s) 101 (count unknown)"]
    assert recs[("1", "count", "dog")].status is Status.MINED
    assert not any("person" in k[2] for k in recs if k[1] in ("left_of", "small_exists"))
    # the small person centred (12.5, 12.5) is alone in the top-left cell; the small dog centred (122.5, 42.5)
    # shares the centre cell with the crowd centred (125, 35), so "the small object in the centre" is not asked
    assert recs[("1", "small_at", "top-left")].answer == "person"
    assert [k[2] for k in recs if k[1] == "small_at"] == ["top-left"]
    assert recs[("1", "small_exists", "dog")].chain[0].source_ref == "102"


def test_small_object_needs_a_clear_cell(tmp_path):
    anns = [{"category_id": 3, "bbox": [10, 10, 5, 5]}, {"category_id": 1, "bbox": [20, 15, 8, 8]}]  # same cell
    recs = _by_key(coco.mine(instances=_write(tmp_path, anns)))
    assert not [k for k in recs if k[1] == "small_at"]
    assert {k[2] for k in recs if k[1] == "small_exists"} == {"cup", "dog"}


def test_unreadable_annotations_are_rejected(tmp_path):
    anns = [{"category_id": 9, "bbox": [10, 10, 5, 5]}, {"category_id": 1, "bbox": [10, 10, 0, 5]},
            {"category_id": 2, "bbox": [1, 2, 3]}]
    recs = _by_key(coco.mine(instances=_write(tmp_path, anns)))
    assert _reasons(recs[("1", "count", "category 9")]) == ["unknown_category: id 9 (annotation 100)"]
    assert _reasons(recs[("1", "count", "dog")]) == ["bad_box: annotation 101 bbox [10, 10, 0, 5] is empty"]
    assert _reasons(recs[("1", "count", "bench")]) == ["bad_box: annotation 102 bbox [1, 2, 3]"]
    assert all(r.status is Status.REJECTED for r in recs.values())
    assert [r.chain == () for r in recs.values()] == [True, False, True]  # bench, category 9 (box kept), dog
    assert not [k for k in recs if k[1] != "count"]  # no other question touches an unreadable category


def test_malformed_files_raise(tmp_path):
    bad = tmp_path / "instances.json"
    bad.write_bytes(b'{"annotations": [')
    with pytest.raises(CorpusReadError, match="instances.json"):
        list(coco.mine(instances=bad))
    bad.write_bytes(b'{"annotations": [{"id": 1, "bbox": [0, 0, 1, 1]}]}')
    with pytest.raises(CorpusReadError, match=r"annotations\[0\] has no image_id"):
        list(coco.mine(instances=bad))
    bad.write_bytes(b'{"images": []}')
    with pytest.raises(CorpusReadError, match="no 'annotations' list"):
        list(coco.mine(instances=bad))
    jl = tmp_path / "caps.jsonl"
    jl.write_bytes(b'{"id": "1", "instances": []}\n{"id": \n')
    with pytest.raises(CorpusReadError, match=r"caps.jsonl:2:"):
        list(coco.mine(instances=jl))
    with pytest.raises(ConfigError):
        list(coco.mine(instances=bad, small_frac=0))


@pytest.mark.parametrize(("name", "plural"), [("person", "people"), ("couch", "couches"), ("bus", "buses"),
                                              ("wine glass", "wine glasses"), ("skis", "skis"), ("knife", "knives"),
                                              ("teddy bear", "teddy bears"), ("sheep", "sheep"), ("mouse", "mice")])
def test_plural(name, plural):
    assert coco.plural(name) == plural


def test_limit_and_schema_round_trip(shared_data):
    d = _coco(shared_data, "mmpose_person_keypoints_val2017")
    recs = list(coco.mine(instances=d / "test_coco.json", limit=3))
    assert len(recs) == 3 and len({r.id for r in recs}) == 3
    assert frame_to_records(records_to_frame(recs)) == recs
