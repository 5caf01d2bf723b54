"""VisCoT miner (real benchmark / benchmark_det / cot_train / Ground-R1 samples) and the TreeBench / V* miner
(files written here: no real sample exists)."""

from __future__ import annotations

import doctest

import orjson
import pytest
from PIL import Image

from virl_data.core.errors import ConfigError, CorpusReadError
from virl_data.core.schema import frame_to_records, records_to_frame
from virl_data.core.types import Box, Status
from virl_data.miners import treebench, viscot


def _reasons(rec):
    return [c.reason.split(":")[0] for c in rec.checks]


def _write_jsonl(path, *rows):
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n")
    return path


@pytest.fixture
def cot(shared_data):
    return shared_data / "viscot"


# --- VisCoT: real samples --------------------------------------------------------------------------------------------
def test_benchmark_gqa_with_sizes_lent_by_benchmark_det(cot):
    recs = list(viscot.mine(annotations=cot / "benchmark" / "gqa.first20.json", sizes=cot / "benchmark_det"))
    assert len(recs) == 20 and all(r.status is Status.MINED for r in recs)
    rec = recs[0]
    # image ["cot/gqa/2316539.jpg", "cot/gqa/2316539.jpg###[217, 343, 242, 393]"], gpt "[0.542, 0.686, 0.592, 0.786]"
    # benchmark_det gives 391 x 500: S = 500, ox = 54 -> 0.542 * 500 - 54 = 217 (the gpt box agrees)
    assert rec.question == "What are the tree branches in front of?"
    assert rec.answer == "window"
    assert (rec.image.path, rec.image.width, rec.image.height) == ("cot/gqa/2316539.jpg", 391, 500)
    assert len(rec.chain) == 1
    assert rec.chain[0].boxes == (Box(217, 343, 242, 393),)
    assert (rec.chain[0].phrase, rec.chain[0].role) == ("evidence region", "target")
    assert rec.question_type == "gqa" and rec.provenance.source_split == "val"
    assert rec.provenance.native_ids == (("layout", "benchmark"), ("dataset", "gqa"), ("split", "val"),
                                         ("question_id", "7"))


def test_benchmark_without_size_is_rejected(cot):
    rec = next(viscot.mine(annotations=cot / "benchmark" / "gqa.first20.json"))
    assert rec.status is Status.REJECTED and _reasons(rec) == ["image_size_unknown"]
    assert rec.chain[0].boxes == (Box(217, 343, 242, 393),)


def test_benchmark_cross_check_against_image_header(cot, tmp_path):
    (tmp_path / "cot" / "gqa").mkdir(parents=True)
    image = tmp_path / "cot" / "gqa" / "2316539.jpg"
    Image.new("RGB", (391, 500)).save(image)
    rec = next(viscot.mine(annotations=cot / "benchmark" / "gqa.first20.json", images=tmp_path, limit=1))
    assert rec.status is Status.MINED and (rec.image.width, rec.image.height) == (391, 500)
    # the same annotation on an image of the transposed size: the padded-square box no longer lands on ###
    Image.new("RGB", (500, 391)).save(image)
    rec = next(viscot.mine(annotations=cot / "benchmark" / "gqa.first20.json", images=tmp_path, limit=1))
    assert _reasons(rec) == ["box_mismatch"]
    assert rec.checks[0].reason == ("box_mismatch: ### box [217.0, 343.0, 242.0, 393.0] but the gpt box "
                                    "[0.542, 0.686, 0.592, 0.786] maps to [271.0, 289.0, 296.0, 339.0] on the padded "
                                    "square (tolerance 1.8 px)")


def test_benchmark_det_line_exact(cot):
    recs = list(viscot.mine(annotations=cot / "benchmark_det" / "openimages.first20.jsonl", limit=1))
    rec = recs[0]
    # {"img_path": "cot/openimages/0353aa6ec508b36d.jpg", "expression": "What contain the tea?",
    #  "bbox": [310.4, 161.600256, 808.000512, 572.7997439999999], "height": 768, "width": 1024, "question_id": 0}
    assert rec.question == "What contain the tea?" and rec.answer == ""
    assert rec.chain[0].boxes == (Box(310.4, 161.600256, 808.000512, 572.7997439999999),)
    assert (rec.image.width, rec.image.height) == (1024, 768)
    assert rec.provenance.native_ids[:2] == (("layout", "benchmark_det"), ("dataset", "openimages"))
    # textcap questions use textvqa images: the subset comes from the file name
    textcap = next(viscot.mine(annotations=cot / "benchmark_det" / "textcap.first20.jsonl"))
    assert textcap.image.path.startswith("cot/textvqa/") and textcap.question_type == "textcap"


def test_cot_train_lines_exact(cot):
    sroie = list(viscot.mine(annotations=cot / "cot_train" / "sroie_cot_train.first20.jsonl", limit=2))[1]
    assert sroie.question == "What is the date in the invoice shown in the picture?"
    assert sroie.answer == "13/10/2017"
    assert (sroie.image.path, sroie.image.width, sroie.image.height) == ("cot/sroie/X51006555072.jpg", 592, 982)
    assert sroie.chain[0].boxes == (Box(48, 429, 177, 451),)
    assert sroie.provenance.native_ids == (("layout", "cot_train"), ("dataset", "sroie"), ("split", "train"),
                                           ("index", "1"))
    cub = next(viscot.mine(annotations=cot / "cot_train" / "cub_cot_train.first20.jsonl"))
    assert cub.image.path == "cot/cub/001.Black_footed_Albatross/Black_Footed_Albatross_0009_34.jpg"
    assert cub.chain[0].boxes == (Box(139, 30, 292, 294),) and cub.answer == "Yes"


def test_ground_r1_line_exact(cot):
    rec = next(viscot.mine(annotations=cot / "Ground-R1_visualCoT_eval_subset150_choice.first20.jsonl"))
    assert rec.image.path == "cot/flickr30k/1021439420.jpg"  # from /home/.../cot_image_data/flickr30k/...
    assert (rec.image.width, rec.image.height) == (500, 333)
    assert rec.chain[0].boxes == (Box(303, 96, 486, 289),)
    assert rec.question == "What is the person in the green jacket doing?"
    assert rec.answer.startswith("The person in the green jacket is sitting on the floor")
    assert rec.provenance.native_ids[-1] == ("problem_id", "2")


def test_whole_folder_counts_and_ids(cot):
    recs = list(viscot.mine(annotations=cot))
    assert len(recs) == 12 * 20 + 12 * 20 + 3 * 20 + 20
    assert len({r.id for r in recs}) == len(recs)
    layouts = {r.provenance.native_id("layout") for r in recs}
    assert layouts == {"benchmark", "benchmark_det", "cot_train", "ground_r1"}
    assert frame_to_records(records_to_frame(recs[:30])) == recs[:30]


# --- VisCoT: synthetic rejection cases -------------------------------------------------------------------------------
def _bench(**changes):
    rec = {"dataset": "gqa", "split": "val", "question_id": 1,
           "image": ["cot/gqa/1.jpg", "cot/gqa/1.jpg###[10, 20, 30, 40]"],
           "conversations": [{"from": "human", "value": "<image>\nQ? Please provide the bounding box coordinate of "
                                                         "the region that can help you answer the question better."},
                             {"from": "gpt", "value": "[0.1, 0.2, 0.3, 0.4]"},
                             {"from": "human", "value": "<image>"}, {"from": "gpt", "value": "yes"}]}
    return rec | changes


def test_benchmark_malformed_records(tmp_path):
    rows = [_bench(), _bench(image=["cot/gqa/1.jpg"]), _bench(conversations=[]), {"something": "else"},
            _bench(conversations=_bench()["conversations"][:1] + [{"from": "gpt", "value": "near the top"},
                                                                  {"from": "gpt", "value": "yes"}])]
    (tmp_path / "b.json").write_bytes(orjson.dumps(rows))
    recs = list(viscot.mine(annotations=tmp_path / "b.json"))
    assert recs[0].question == "Q?" and recs[0].answer == "yes"
    assert [_reasons(r)[0] for r in recs] == ["image_size_unknown", "bad_box", "malformed_record",
                                              "malformed_record", "bad_box"]
    assert recs[3].provenance.native_ids == (("layout", "unknown"), ("dataset", ""), ("split", ""), ("file", "b.json"),
                                             ("index", "3"))


def test_bad_bboxs_and_files(tmp_path):
    line = {"question": "Q?", "answer": "A", "image": "x.jpg", "width": 10, "height": 10, "dataset": "dude",
            "split": "train"}
    recs = list(viscot.mine(annotations=_write_jsonl(tmp_path / "t.jsonl", line | {"bboxs": [[5, 5, 1, 9]]},
                                                     line | {"bboxs": []}, line | {"bboxs": [[1, 1, 5, 5]]})))
    assert [_reasons(r) for r in recs] == [["bad_box"], ["bad_box"], []]
    (tmp_path / "bad.jsonl").write_bytes(orjson.dumps(line) + b"\n\n{oops\n")
    with pytest.raises(CorpusReadError, match=r"bad\.jsonl: line 3"):
        list(viscot.mine(annotations=tmp_path / "bad.jsonl"))
    (tmp_path / "d.json").write_bytes(b'{"not": "a list"}')
    with pytest.raises(CorpusReadError, match="list of records"):
        list(viscot.mine(annotations=tmp_path / "d.json"))
    with pytest.raises(CorpusReadError, match="do not exist"):
        list(viscot.mine(annotations=tmp_path / "nope.json"))
    with pytest.raises(ConfigError):
        list(viscot.mine(annotations=tmp_path / "t.jsonl", limit=-1))


# --- V* Bench (layout written here) ----------------------------------------------------------------------------------
@pytest.fixture
def vstar(tmp_path):
    root = tmp_path / "vstar_bench"
    (root / "direct_attributes").mkdir(parents=True)
    (root / "relative_position").mkdir()
    Image.new("RGB", (2000, 1500)).save(root / "direct_attributes" / "sa_1.jpg")
    Image.new("RGB", (1200, 900)).save(root / "relative_position" / "sa_2.jpg")
    (root / "direct_attributes" / "sa_1.json").write_bytes(orjson.dumps(
        {"target_object": ["glove"], "bbox": [[1150, 1373, 60, 81]], "question": "What is the color of the glove?",
         "options": ["white", "black", "red", "blue"]}))
    (root / "relative_position" / "sa_2.json").write_bytes(orjson.dumps(
        {"target_object": ["cup", "laptop"], "bbox": [[100, 200, 50, 40], [400, 180, 300, 200]],
         "question": "Is the cup on the left or right side of the laptop?",
         "options": ["The cup is on the left side of the laptop.", "The cup is on the right side of the laptop."]}))
    return root


def _option(question: str, letter: str) -> str:
    """The text of the option ``letter`` in a formatted multiple-choice question."""
    return next(line[4:] for line in question.splitlines() if line.startswith(f"({letter}) "))


def test_vstar_records(vstar):
    recs = list(treebench.mine(annotations=vstar))
    assert len(recs) == 2 and all(r.status is Status.MINED for r in recs)
    glove, cup = recs
    assert glove.question.splitlines()[0] == "What is the color of the glove?"
    assert [line[:4] for line in glove.question.splitlines()[1:]] == ["(A) ", "(B) ", "(C) ", "(D) "]
    assert sorted(_shuffled_texts(glove.question)) == ["black", "blue", "red", "white"]
    assert _option(glove.question, glove.answer) == "white"  # V*'s first option is the right one
    assert glove.chain[0].boxes == (Box(1150, 1373, 1210, 1454),)  # xywh -> xyxy
    assert (glove.chain[0].phrase, glove.chain[0].role) == ("glove", "target")
    assert (glove.image.path, glove.image.width, glove.image.height) == ("direct_attributes/sa_1.jpg", 2000, 1500)
    assert glove.provenance.source == "vstar" and glove.provenance.miner == "treebench@1"
    assert glove.question_type == "direct_attributes" and glove.answer_type == "choice"
    assert [(s.phrase, s.boxes) for s in cup.chain] == [("cup", (Box(100, 200, 150, 240),)),
                                                         ("laptop", (Box(400, 180, 700, 380),))]
    assert _option(cup.question, cup.answer) == "The cup is on the left side of the laptop."
    # the shuffle is fixed by the image, so mining twice (or one file alone) gives the same record
    again = next(treebench.mine(annotations=vstar / "direct_attributes" / "sa_1.json"))
    assert (again.id, again.question, again.answer) == (glove.id, glove.question, glove.answer)


def _shuffled_texts(question: str) -> list[str]:
    return [line[4:] for line in question.splitlines()[1:]]


def test_vstar_shuffle_is_not_always_first():
    letters = {treebench.shuffled(["right", "b", "c", "d"], f"direct_attributes/sa_{i}.jpg")[1] for i in range(20)}
    assert len(letters) > 1


def test_vstar_mismatched_objects_and_missing_image(vstar):
    (vstar / "direct_attributes" / "sa_3.json").write_bytes(orjson.dumps(
        {"target_object": ["cup", "bag"], "bbox": [[1, 2, 3, 4]], "question": "Q?", "options": ["a", "b"]}))
    (vstar / "direct_attributes" / "sa_4.json").write_bytes(orjson.dumps(
        {"target_object": ["cup"], "bbox": [[1, 2, 3, 4]], "question": "Q?", "options": ["a", "b"]}))
    recs = {r.provenance.native_id("image"): r for r in treebench.mine(annotations=vstar)}
    assert recs["sa_3.jpg"].checks[0].reason == "malformed_record: 2 target_object names but 1 bbox entries"
    assert _reasons(recs["sa_4.jpg"]) == ["image_size_unknown"]


# --- TreeBench (layout written here) ---------------------------------------------------------------------------------
TB_ROW = {"index": 11, "image": "sa_9.jpg", "width": 1600, "height": 1200, "question": "What is behind the chair?",
          "options": {"A": "a lamp", "B": "a dog", "C": "a plant", "D": "a door"}, "answer": "C",
          "bbox": [[100, 120, 300, 400], [500, 80, 620, 260]], "category": "Reasoning/Contact and Occlusion"}


def test_treebench_rows(tmp_path):
    rows = [TB_ROW,
            {k: v for k, v in TB_ROW.items() if k != "options"} | {"index": 12, "A": "x", "B": "y", "answer": "y",
                                                                   "bbox": "[[1, 2, 3, 4]]"},
            TB_ROW | {"index": 13, "answer": "a cat"},
            TB_ROW | {"index": 14, "image": "iVBORw0KGgo" * 200},
            TB_ROW | {"index": 15, "bbox": [[5, 5, 1, 1]]},
            TB_ROW | {"index": 16, "width": None},
            TB_ROW | {"index": 17, "options": ["only one"]}]
    (tmp_path / "tb.json").write_bytes(orjson.dumps(rows))
    recs = list(treebench.mine(annotations=tmp_path / "tb.json"))
    first = recs[0]
    assert first.status is Status.MINED
    assert first.question == "What is behind the chair?\n(A) a lamp\n(B) a dog\n(C) a plant\n(D) a door"
    assert first.answer == "C"
    assert [s.boxes for s in first.chain] == [(Box(100, 120, 300, 400),), (Box(500, 80, 620, 260),)]
    assert [s.source_ref for s in first.chain] == ["0", "1"]
    assert first.question_type == "Reasoning/Contact and Occlusion"
    assert first.provenance.source == "treebench" and first.provenance.native_ids == (("index", "11"),)
    assert (first.image.path, first.image.width, first.image.height) == ("sa_9.jpg", 1600, 1200)
    assert recs[1].answer == "B" and recs[1].chain[0].boxes == (Box(1, 2, 3, 4),)  # letter fields, text answer
    assert [_reasons(r) for r in recs[2:]] == [["answer_not_in_options"], ["image_not_a_path"], ["bad_box"],
                                              ["image_size_unknown"], ["malformed_record"]]


def test_treebench_size_from_images_and_bad_files(tmp_path):
    Image.new("RGB", (800, 600)).save(tmp_path / "sa_9.jpg")
    row = TB_ROW | {"width": None, "height": None}
    rec = next(treebench.mine(annotations=_write_jsonl(tmp_path / "tb.jsonl", row), images=tmp_path))
    assert rec.status is Status.MINED and (rec.image.width, rec.image.height) == (800, 600)
    (tmp_path / "bad.jsonl").write_bytes(orjson.dumps(row) + b"\n[1,\n")
    with pytest.raises(CorpusReadError, match=r"bad\.jsonl: line 2"):
        list(treebench.mine(annotations=tmp_path / "bad.jsonl"))
    (tmp_path / "odd.json").write_bytes(b'{"hello": 1}')
    rec = next(treebench.mine(annotations=tmp_path / "odd.json"))
    assert _reasons(rec) == ["malformed_record"]
    with pytest.raises(CorpusReadError, match="do not exist"):
        list(treebench.mine(annotations=tmp_path / "none.json"))


def test_docstring_examples():
    for module in (viscot, treebench):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0
