"""RefCOCO miner: exact records from the real derived samples (REC + Ground-R1), and rejection cases."""

from __future__ import annotations

import doctest

import orjson
import pytest
from PIL import Image

from virl_data.core.errors import ConfigError, CorpusReadError
from virl_data.core.schema import frame_to_records, records_to_frame
from virl_data.core.types import Box, Status
from virl_data.miners import refcoco


def _write(path, *rows):
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n")
    return path


def _reasons(rec):
    return [c.reason.split(":")[0] for c in rec.checks]


@pytest.fixture
def refs(shared_data):
    return shared_data / "refcoco"


# --- real samples ----------------------------------------------------------------------------------------------------
def test_rec_val_first_line_exact(refs):
    rec = next(refcoco.mine(refs=refs / "REC_refcoco_unc_val.head40.jsonl"))
    # {"img_path": "COCO_train2014_000000580957.jpg", "expression": "bowl behind the others can only see part",
    #  "bbox": [468.3, 0.91, 640.0, 117.03], "height": 428, "width": 640, "image_id": 580957, "sent_id": 222, ...}
    assert rec.status is Status.MINED and rec.checks == ()
    assert rec.question == 'Where is "bowl behind the others can only see part"?'
    assert (rec.answer, rec.answer_type) == ("[468.3, 0.91, 640, 117.03]", "box")  # the target box, canonical
    assert rec.question_type == "referring_relation"
    assert rec.image.path == "COCO_train2014_000000580957.jpg"
    assert (rec.image.width, rec.image.height) == (640, 428)
    assert len(rec.chain) == 1
    step = rec.chain[0]
    assert step.boxes == (Box(468.3, 0.91, 640.0, 117.03),)
    assert (step.phrase, step.role, step.source_ref) == ("bowl behind the others can only see part", "target", "222")
    assert rec.provenance.source == "refcoco" and rec.provenance.miner == "refcoco@2"
    assert rec.provenance.source_split == "val"
    assert rec.provenance.native_ids == (("variant", "refcoco"), ("split", "val"), ("image_id", "580957"),
                                         ("sent_id", "222"))


def test_rec_refcoco_plus_variant_from_dataset_name(refs):
    recs = list(refcoco.mine(refs=refs / "REC_refcoco+_unc_val.head40.jsonl", answer="phrase", limit=4))
    assert [r.provenance.native_id("variant") for r in recs] == ["refcoco+"] * 4
    assert [r.provenance.native_id("sent_id") for r in recs] == ["210", "211", "212", "213"]
    assert [r.answer for r in recs] == ["white bowl", "white bowl", "white bowl", "bowl"]
    # "bowl of carrots": sent 213 has its own box
    assert recs[3].chain[0].boxes == (Box(151.96, 139.46, 606.89, 423.19000000000005),)
    assert recs[0].id == refcoco.record_id("refcoco", "refcoco+", "val", "580957", "210")  # the variant is in the id


def test_rec_testa_split_and_relation(refs):
    recs = list(refcoco.mine(refs=refs / "REC_refcoco_unc_testA.head40.jsonl", answer="phrase", limit=6))
    assert {r.provenance.source_split for r in recs} == {"testA"}
    # "person on left of bench" relates the person to the bench; "man on right" only places the man
    by_expr = {r.chain[0].phrase: r for r in recs}
    assert by_expr["person on left of bench"].question_type == "referring_relation"
    assert by_expr["person on left of bench"].answer == "person"
    assert by_expr["man on right"].question_type == "referring_expression"
    assert by_expr["man on right"].chain[0].boxes == (Box(385.79, 208.07, 509.76, 413.24),)


def test_ground_r1_one_record_per_expression_xywh_converted(refs):
    recs = list(refcoco.mine(refs=refs / "Ground-R1_RefCOCO_eval_subset_1000.5per_split.jsonl", answer="phrase",
                             limit=8))
    first = recs[:3]  # line 1: RefCOCO/testB img_1581, 3 expressions, bboxs [[0.0, 0.0, 248.6..., 288.2...]] xywh
    assert [r.chain[0].phrase for r in first] == ["animal on left", "teddy bear left", "upper stuffed animal"]
    assert [r.answer for r in first] == ["animal", "teddy bear", "stuffed animal"]
    assert first[0].chain[0].boxes == (Box(0.0, 0.0, 248.60000610351562, 288.20001220703125),)
    assert [r.provenance.native_ids for r in first][2] == (
        ("variant", "refcoco"), ("split", "testB"), ("problem_id", "1581"), ("expression", "2"))
    assert first[0].image.path == "RefCOCO/testB/images/img_1581.png"
    assert (first[0].image.width, first[0].image.height) == (500, 375)
    # line 3 (img_923): [231.54, 204.48, w=392.93, h=159.37] -> x2 = x + w, y2 = y + h
    hotdog = next(r for r in recs if r.chain[0].phrase == "hot dog in front")
    (box,) = hotdog.chain[0].boxes
    assert box.as_tuple() == pytest.approx((231.5399932861328, 204.47999572753906, 624.4699859619141,
                                            363.84999084472656))


def test_whole_folder_counts_in_equal_out(refs):
    ground_r1 = [orjson.loads(line) for line in
                 (refs / "Ground-R1_RefCOCO_eval_subset_1000.5per_split.jsonl").read_bytes().splitlines()]
    expected = sum(len(r["solution"]) for r in ground_r1) + 3 * 40
    recs = list(refcoco.mine(refs=refs))
    assert len(recs) == expected
    assert len({r.id for r in recs}) == expected
    assert all(r.status is Status.MINED for r in recs)
    variants = {(r.provenance.native_id("variant"), r.provenance.source_split) for r in recs}
    assert {("refcoco+", "testB"), ("refcocog", "test"), ("refcocog", "val"), ("refcoco", "testA")} <= variants
    assert frame_to_records(records_to_frame(recs[:10])) == recs[:10]


def test_variant_argument_mismatch_rejects(refs):
    recs = list(refcoco.mine(refs=refs / "REC_refcoco+_unc_val.head40.jsonl", variant="refcoco", limit=2))
    assert [_reasons(r) for r in recs] == [["variant_mismatch"]] * 2
    assert recs[0].checks[0].reason == "variant_mismatch: the file says refcoco+, refcoco was asked for"


# --- expressions -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("expression", "target", "relation", "relational"), [
    ("white bowl next to rice", "white bowl", "next to", True),
    ("man on the left of bench", "man", "on the left of", True),
    ("dish in top right corner", "dish", "in", False),
    ("left black shirt", "black shirt", None, False),
    ("The banana at the left of the stack.", "banana", "at", True),
    ("closest", "closest", None, False),
    ("NUMBER 15", "number 15", None, False),
])
def test_parse_expression(expression, target, relation, relational):
    ref = refcoco.parse_expression(expression)
    assert (ref.target, ref.relation, ref.relational) == (target, relation, relational)


def test_variant_and_split_names():
    assert refcoco.variant_of("REC_refcoco+_unc_val") == "refcoco+"
    assert refcoco.variant_of("RefCOCOg/test") == "refcocog"
    assert refcoco.variant_of("some_file") is None
    assert refcoco.split_of("validation") == "val"
    assert refcoco.split_of("REC_refcocog_umd_test.jsonl") == "test"
    assert refcoco.split_of("nothing_here") is None


# --- synthetic rejection cases ---------------------------------------------------------------------------------------
REC_LINE = {"img_path": "img_1.jpg", "expression": "cup next to the laptop", "bbox": [10, 20, 50, 60],
            "dataset_name": "jxu124/refcocog", "image_id": 1, "sent_id": 7, "split": "train"}


def test_size_from_image_when_line_lacks_it(tmp_path):
    path = _write(tmp_path / "refs.jsonl", REC_LINE)
    (tmp_path / "images" / "train2014").mkdir(parents=True)
    Image.new("RGB", (120, 90)).save(tmp_path / "images" / "train2014" / "img_1.jpg")
    rec = next(refcoco.mine(refs=path, images=tmp_path / "images"))
    assert rec.status is Status.MINED
    assert (rec.image.path, rec.image.width, rec.image.height) == ("train2014/img_1.jpg", 120, 90)
    assert rec.provenance.native_ids[:2] == (("variant", "refcocog"), ("split", "train"))


def test_size_unknown_without_images(tmp_path):
    rec = next(refcoco.mine(refs=_write(tmp_path / "refs.jsonl", REC_LINE)))
    assert rec.status is Status.REJECTED
    assert _reasons(rec) == ["image_size_unknown"]
    assert (rec.image.width, rec.image.height) == (0, 0)
    assert rec.chain[0].boxes == (Box(10, 20, 50, 60),)  # still shown for review


def test_bad_boxes_empty_expression_and_unknown_layout(tmp_path):
    size = {"width": 100, "height": 100}
    path = _write(
        tmp_path / "refs.jsonl",
        REC_LINE | size | {"bbox": [50, 20, 10, 60]},  # x2 < x1
        REC_LINE | size | {"bbox": "10,20,50,60", "sent_id": 8},
        REC_LINE | size | {"expression": "  ", "sent_id": 9},
        {"image": "x.png", "width": 10, "height": 10, "bboxs": [], "solution": ["a cup"], "problem_id": 1},
        {"foo": 1},
    )
    recs = list(refcoco.mine(refs=path))
    assert [_reasons(r) for r in recs] == [["bad_box"], ["bad_box"], ["empty_expression"], ["bad_box"],
                                          ["malformed_record"]]
    assert recs[0].chain[0].boxes == (Box(50, 20, 10, 60),) and recs[1].chain == ()
    assert recs[4].provenance.native_ids[-1] == ("line", "refs.jsonl:5")
    assert all(r.status is Status.REJECTED for r in recs)


def test_invalid_json_names_file_and_line(tmp_path):
    path = tmp_path / "refs.jsonl"
    path.write_bytes(orjson.dumps(REC_LINE) + b"\n{not json\n")
    with pytest.raises(CorpusReadError, match=r"refs\.jsonl: line 2"):
        list(refcoco.mine(refs=path))


def test_missing_inputs_and_bad_arguments(tmp_path):
    with pytest.raises(CorpusReadError, match="does not exist"):
        list(refcoco.mine(refs=tmp_path / "nope.jsonl"))
    with pytest.raises(CorpusReadError, match="no .jsonl"):
        list(refcoco.mine(refs=tmp_path))
    with pytest.raises(ConfigError, match="variant"):
        list(refcoco.mine(refs=tmp_path, variant="refclef"))
    with pytest.raises(ConfigError, match="limit"):
        list(refcoco.mine(refs=tmp_path, limit=-1))


def test_limit_caps_records(refs):
    assert len(list(refcoco.mine(refs=refs, limit=5))) == 5
    assert list(refcoco.mine(refs=refs, limit=0)) == []


def test_docstring_examples():
    for module in (refcoco,):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0
