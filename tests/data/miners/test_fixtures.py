"""Every miner on a small file the test writes itself in the source's real layout, with the quirks of its public
files, asserting exact chains. These need no ``../shared/data``, so a clone without it still tests every miner.

The quirks reproduced (from the public files the samples in ``../shared/data`` and the source repositories hold):

- GQA: string ids everywhere (question ids with leading zeros, object ids), image ids of the non-VG images
  (``n161313``), the ``(-)`` no-object marker in programs, scene graphs keyed by image id with ``width/height``;
- Visual Genome: ``name`` in relationships but ``names`` lists in attributes, upper-case predicates, images under
  ``VG_100K_2/``, no image size anywhere in the annotations, ``grey`` for gray;
- COCO: non-contiguous category ids, float boxes ``[x, y, w, h]``, a crowd annotation, the ``images`` block;
- RefCOCO/+/g: the REC jsonl (``jxu124/refcocog``, split ``validation``, int ids) and Ground-R1's xywh ``bboxs``;
- Flickr30k Entities: ``Sentences/<id>.txt`` markup with coreference and ``notvisual``, ``Annotations/<id>.xml``
  with several ``<name>`` on one box, ``<nobndbox>``/``<scene>``, and the split files;
- VisCoT: the benchmark json (``"dataset": "v7w"``, ``cot/v7w/``) against its det jsonl (``visual7w.jsonl``,
  ``cot/visual7w/``) and textcap's images under ``cot/textvqa/``: sizes must be matched by question, not by path;
- TreeBench: a VLMEvalKit table row (options as top-level ``A``..``D`` fields, ``bbox`` as a JSON string).
"""

from __future__ import annotations

import orjson
import pytest
from PIL import Image

from virl_data.core.boxanswer import parse_box
from virl_data.core.errors import ConfigError
from virl_data.core.schema import frame_to_records, records_to_frame
from virl_data.core.types import Box, ImageRef, RationaleStep, Status
from virl_data.miners import coco, flickr30k, gqa, refcoco, treebench, vg, viscot


def _json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(obj))
    return path


def _jsonl(path, *rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def _reasons(rec):
    return [c.reason.split(":")[0] for c in rec.checks if not c.passed]


# --- GQA -------------------------------------------------------------------------------------------------------------
def test_gqa_real_layout(tmp_path):
    op = lambda operation, argument, *deps: {"operation": operation, "dependencies": list(deps), "argument": argument}  # noqa: E731
    questions = {
        "05451384": {
            "imageId": "n161313", "question": "What is the woman to the left of the umbrella holding?",
            "answer": "bag", "fullAnswer": "The woman is holding a bag.", "isBalanced": True,
            "semantic": [op("select", "umbrella (1101)"), op("relate", "woman,to the left of,s (1102)", 0),
                         op("relate", "_,holding,o (1103)", 1), op("query", "name", 2)],
            "semanticStr": "select: umbrella (1101)->relate: woman,to the left of,s (1102) [0]->...",
            "annotations": {"answer": {"0": "1103"}, "question": {"3": "1102", "9": "1101"}, "fullAnswer": {}},
            "types": {"structural": "query", "semantic": "rel", "detailed": "relO"},
            "groups": {"global": "bag", "local": "14-woman_holding,o"}, "entailed": [], "equivalent": ["05451384"],
        },
        "05451385": {
            "imageId": "n161313", "question": "Is the woman to the right of a car?", "answer": "no",
            "semantic": [op("select", "woman (1102)"), op("verify rel", "car,to the right of,o (-)", 0)],
            "types": {"structural": "verify", "semantic": "rel", "detailed": "relVerify"},
        },
        "05451386": {
            "imageId": "n161313", "question": "What color is the hat?", "answer": "red",
            "semantic": [op("select", "hat (1199)"), op("query", "color", 0)],
            "types": {"structural": "query", "semantic": "attr", "detailed": "attr"},
        },
    }
    graphs = {"n161313": {"width": 640, "height": 480, "location": "street", "objects": {
        "1101": {"name": "umbrella", "x": 300, "y": 50, "w": 120, "h": 90, "attributes": ["black"],
                 "relations": [{"object": "1102", "name": "to the right of"}]},
        "1102": {"name": "woman", "x": 100, "y": 60, "w": 80, "h": 300, "attributes": [], "relations": []},
        "1103": {"name": "bag", "x": 150, "y": 200, "w": 40, "h": 50, "attributes": ["brown"], "relations": []},
    }}}
    recs = {r.provenance.native_id("question_id"): r for r in gqa.mine(
        questions=_json(tmp_path / "val_balanced_questions.json", questions),
        scene_graphs=_json(tmp_path / "val_sceneGraphs.json", graphs))}
    held = recs["05451384"]
    assert held.status is Status.MINED and held.image == ImageRef("n161313.jpg", 640, 480)
    assert (held.answer, held.answer_type, held.question_type, held.provenance.source_split) == (
        "bag", "open", "relO", "val")
    assert held.chain == (
        RationaleStep((Box(300, 50, 420, 140),), "umbrella", "context", "1101"),
        RationaleStep((Box(100, 60, 180, 360),), "woman", "context", "1102"),
        RationaleStep((Box(150, 200, 190, 250),), "bag", "target", "1103"),
    )
    verify = recs["05451385"]  # "(-)": the car is not in the graph, no step for it
    assert verify.status is Status.MINED and verify.answer_type == "yes/no"
    assert verify.chain == (RationaleStep((Box(100, 60, 180, 360),), "woman", "target", "1102"),)
    assert recs["05451386"].status is Status.REJECTED and _reasons(recs["05451386"]) == ["unknown_object"]


# --- Visual Genome ---------------------------------------------------------------------------------------------------
def test_vg_real_layout(tmp_path):
    man = {"object_id": 10, "name": "man", "synsets": ["man.n.01"], "x": 40, "y": 30, "w": 120, "h": 300}
    shirt = {"object_id": 11, "name": "shirt", "synsets": ["shirt.n.01"], "x": 60, "y": 80, "w": 80, "h": 90}
    rels = [{"image_id": 3, "relationships": [
        {"relationship_id": 100, "predicate": "WEARING", "synsets": ["wear.v.01"], "subject": man, "object": shirt}]}]
    attrs = [{"image_id": 3, "attributes": [
        {"object_id": 10, "names": ["man"], "synsets": ["man.n.01"], "x": 40, "y": 30, "w": 120, "h": 300,
         "attributes": ["standing"]},
        {"object_id": 11, "names": ["shirt"], "synsets": ["shirt.n.01"], "x": 60, "y": 80, "w": 80, "h": 90,
         "attributes": ["grey"]}]}]
    images = tmp_path / "images"
    (images / "VG_100K_2").mkdir(parents=True)
    Image.new("RGB", (500, 400)).save(images / "VG_100K_2" / "3.jpg")
    recs = {r.question_type: r for r in vg.mine(relationships=_json(tmp_path / "relationships.json", rels),
                                                  attributes=_json(tmp_path / "attributes.json", attrs),
                                                  images=images)}
    chain = (RationaleStep((Box(40, 30, 160, 330),), "man", "context", "10"),
             RationaleStep((Box(60, 80, 140, 170),), "shirt", "target", "11"))
    obj, color = recs["relation_object"], recs["relation_color"]
    assert (obj.question, obj.answer, obj.status, obj.chain) == (
        "What is the man wearing?", "shirt", Status.MINED, chain)
    assert (color.question, color.answer, color.answer_type, color.chain) == (
        "What colour is the shirt that the man is wearing?", "gray", "color", chain)
    assert obj.image == ImageRef("VG_100K_2/3.jpg", 500, 400)
    # without images, VG gives no size: every record of the image is a named rejection
    blind = list(vg.mine(relationships=tmp_path / "relationships.json", attributes=tmp_path / "attributes.json"))
    assert [_reasons(r) for r in blind] == [["image_size_unknown"]] * 2


# --- COCO ------------------------------------------------------------------------------------------------------------
def test_coco_real_layout(tmp_path):
    doc = {
        "info": {"description": "COCO 2017 Dataset"}, "licenses": [],
        "images": [{"id": 139, "file_name": "000000000139.jpg", "width": 640, "height": 426, "license": 2}],
        "annotations": [
            {"id": 1, "image_id": 139, "category_id": 18, "bbox": [400.5, 200.25, 80.0, 60.0], "area": 4800.0,
             "iscrowd": 0, "segmentation": [[400.5, 200.25, 480.5, 200.25, 480.5, 260.25]]},
            {"id": 2, "image_id": 139, "category_id": 18, "bbox": [20.0, 210.0, 90.5, 70.0], "area": 6335.0,
             "iscrowd": 0, "segmentation": [[20, 210, 110.5, 210, 110.5, 280]]},
            {"id": 3, "image_id": 139, "category_id": 1, "bbox": [200.0, 100.0, 60.0, 200.0], "area": 12000.0,
             "iscrowd": 0, "segmentation": [[200, 100, 260, 100, 260, 300]]},
            {"id": 4, "image_id": 139, "category_id": 1, "bbox": [300.0, 90.0, 200.0, 150.0], "area": 30000.0,
             "iscrowd": 1, "segmentation": {"counts": [0, 10], "size": [426, 640]}},
        ],
        "categories": [{"id": 1, "name": "person", "supercategory": "person"},
                       {"id": 18, "name": "dog", "supercategory": "animal"}],
    }
    recs = {r.question: r for r in coco.mine(instances=_json(tmp_path / "instances_val2017.json", doc))}
    dogs = recs["How many dogs are there?"]
    assert (dogs.answer, dogs.status, dogs.image) == ("2", Status.MINED, ImageRef("000000000139.jpg", 640, 426))
    assert dogs.chain == (RationaleStep((Box(20, 210, 110.5, 280), Box(400.5, 200.25, 480.5, 260.25)), "dog",
                                        "target", "2,1"),)
    people = recs["How many people are there?"]
    assert people.status is Status.REJECTED and _reasons(people) == ["crowd_annotation"]
    assert set(recs) == {"How many dogs are there?", "How many people are there?"}


# --- RefCOCO/+/g -----------------------------------------------------------------------------------------------------
def test_refcoco_real_layouts_with_box_answers(tmp_path):
    rec_line = {"img_path": "COCO_train2014_000000000042.jpg", "expression": "the dog on the couch",
                "bbox": [12.5, 30.0, 210.75, 180.0], "dataset_name": "jxu124/refcocog", "height": 427,
                "width": 640, "image_id": 42, "sent_id": 7001, "split": "validation"}
    g_line = {"image": "RefCOCOg/test/images/img_5.png", "width": 500, "height": 400,
              "bboxs": [[100.0, 50.0, 150.0, 200.0]], "dataset": "RefCOCOg/test", "problem": "",
              "solution": ["man in blue", "guy holding a kite"], "problem_id": 5}
    folder = tmp_path / "refs"
    _jsonl(folder / "REC_refcocog_umd_val.jsonl", rec_line)
    _jsonl(folder / "Ground-R1_RefCOCOg.jsonl", g_line)
    recs = list(refcoco.mine(refs=folder))
    assert [(r.question, r.answer, r.answer_type) for r in recs] == [
        ('Where is "man in blue"?', "[100, 50, 250, 250]", "box"),          # Ground-R1 xywh → xyxy
        ('Where is "guy holding a kite"?', "[100, 50, 250, 250]", "box"),
        ('Where is "the dog on the couch"?', "[12.5, 30, 210.75, 180]", "box"),
    ]
    assert [r.chain for r in recs] == [
        (RationaleStep((Box(100, 50, 250, 250),), "man in blue", "target", "5"),),
        (RationaleStep((Box(100, 50, 250, 250),), "guy holding a kite", "target", "5"),),
        (RationaleStep((Box(12.5, 30, 210.75, 180),), "the dog on the couch", "target", "7001"),),
    ]
    assert all(parse_box(r.answer) == r.chain[0].boxes[0] for r in recs)  # the answer IS the target box
    assert frame_to_records(records_to_frame(recs)) == recs  # one record type: the schema carries it unchanged
    assert [(r.provenance.native_id("variant"), r.provenance.source_split) for r in recs] == [
        ("refcocog", "test"), ("refcocog", "test"), ("refcocog", "val")]
    phrase = list(refcoco.mine(refs=folder, answer="phrase"))
    assert [(r.answer, r.answer_type) for r in phrase] == [("man", "object"), ("guy", "object"), ("dog", "object")]
    with pytest.raises(ConfigError, match="unknown RefCOCO answer 'word'"):
        list(refcoco.mine(refs=folder, answer="word"))


# --- Flickr30k Entities ----------------------------------------------------------------------------------------------
def test_flickr30k_real_layout(tmp_path):
    sentences, annotations, splits = tmp_path / "Sentences", tmp_path / "Annotations", tmp_path / "splits"
    for d in (sentences, annotations, splits):
        d.mkdir()
    (sentences / "1000092795.txt").write_text(
        "[/EN#1/people Two young guys] with [/EN#2/bodyparts shaggy hair] look at [/EN#3/bodyparts their hands] "
        "while hanging out in [/EN#4/scene the yard] .\n"
        "[/EN#1/people Two men] in [/EN#5/clothing green shirts] are standing in [/EN#4/scene a yard] .\n"
        "[/EN#6/people A man] in [/EN#7/clothing a blue shirt] is standing next to [/EN#1/people his friend] and "
        "[/EN#0/notvisual they] laugh .\n"
        "[/EN#1/people Two friends] enjoy [/EN#0/notvisual time] spent together .\n"
        "[/EN#1/people Two guys] in [/EN#5/clothing green shirts] talk .\n")
    (annotations / "1000092795.xml").write_text(
        "<annotation><filename>1000092795.jpg</filename><size><width>500</width><height>333</height>"
        "<depth>3</depth></size>"
        "<object><name>1</name><bndbox><xmin>300</xmin><ymin>20</ymin><xmax>400</xmax><ymax>330</ymax></bndbox></object>"
        "<object><name>1</name><name>6</name><bndbox><xmin>10</xmin><ymin>30</ymin><xmax>150</xmax>"
        "<ymax>320</ymax></bndbox></object>"
        "<object><name>2</name><bndbox><xmin>320</xmin><ymin>20</ymin><xmax>380</xmax><ymax>60</ymax></bndbox></object>"
        "<object><name>3</name><nobndbox>1</nobndbox><scene>0</scene></object>"
        "<object><name>4</name><nobndbox>1</nobndbox><scene>1</scene></object>"
        "<object><name>5</name><bndbox><xmin>20</xmin><ymin>90</ymin><xmax>140</xmax><ymax>200</ymax></bndbox></object>"
        "<object><name>7</name><bndbox><xmin>30</xmin><ymin>100</ymin><xmax>130</xmax><ymax>210</ymax></bndbox></object>"
        "</annotation>")
    (splits / "train.txt").write_text("1000092795\n")
    (splits / "val.txt").write_text("")
    (splits / "test.txt").write_text("")
    (splits / "UNRELATED_CAPTIONS").write_text("# format: <imageID> <sentence number>\n1000092795 4\n")
    recs = list(flickr30k.mine(sentences=sentences, annotations=annotations, splits=splits))
    guys = (Box(10, 30, 150, 320), Box(300, 20, 400, 330))  # chain 1: two boxes, left to right
    first = recs[0]
    assert (first.answer, first.status, first.image, first.provenance.source_split) == (
        "Two young guys with shaggy hair look at their hands while hanging out in the yard.", Status.MINED,
        ImageRef("1000092795.jpg", 500, 333), "train")
    assert first.chain == (  # "their hands" has no box, "the yard" is the scene: no steps for them
        RationaleStep(guys, "Two young guys", None, "1"),
        RationaleStep((Box(320, 20, 380, 60),), "shaggy hair", None, "2"),
    )
    third = recs[2]  # one box under two chain ids (1 and 6); "they" is notvisual
    assert [(s.phrase, s.source_ref, s.boxes) for s in third.chain] == [
        ("A man", "6", (Box(10, 30, 150, 320),)), ("a blue shirt", "7", (Box(30, 100, 130, 210),)),
        ("his friend", "1", guys)]
    assert _reasons(recs[3]) == ["unrelated_caption"] and recs[4].status is Status.MINED


# --- VisCoT ----------------------------------------------------------------------------------------------------------
def _benchmark(dataset, folder, qid, name, box, gpt, answer):
    path = f"cot/{folder}/{name}"
    question = "<image>\nWhat is behind the bench? Please provide the bounding box coordinate of the region that " \
               "can help you answer the question better."
    return {"dataset": dataset, "split": "val", "question_id": qid, "image": [path, f"{path}###{box}"],
            "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": gpt},
                              {"from": "human", "value": "<image>"}, {"from": "gpt", "value": answer}]}


def _det(folder, qid, name, box, width, height):
    return {"img_path": f"cot/{folder}/{name}", "expression": "What is behind the bench?", "bbox": box,
            "height": height, "width": width, "question_id": qid, "split": "val"}


def test_viscot_visual7w_sizes_matched_by_question_across_folder_spellings(tmp_path):
    bench = _json(tmp_path / "benchmark" / "visual7w.json", [
        _benchmark("v7w", "v7w", 0, "v7w_2359399.jpg", "[2, 0, 390, 282]", "[0.004, 0.124, 0.780, 0.688]", "Foliage."),
        # same image as question 79 of the det file, but its own question id is missing there: matched by file name
        _benchmark("v7w", "v7w", 80, "v7w_2361117.jpg", "[329, 50, 405, 323]", "[0.658, 0.232, 0.810, 0.778]",
                   "Two of the men."),
        _benchmark("v7w", "v7w", 999, "v7w_9.jpg", "[1, 1, 20, 20]", "[0.025, 0.025, 0.500, 0.500]", "A cat."),
    ])
    _jsonl(tmp_path / "benchmark_det" / "visual7w.jsonl",
           _det("visual7w", 0, "v7w_2359399.jpg", [2, 0, 390, 282], 500, 375),
           _det("visual7w", 79, "v7w_2361117.jpg", [4, 36, 264, 365], 500, 367))
    recs = list(viscot.mine(annotations=bench, sizes=tmp_path / "benchmark_det"))
    first, second, missing = recs
    assert (first.status, first.image, first.question_type, first.answer, first.provenance.miner) == (
        Status.MINED, ImageRef("cot/v7w/v7w_2359399.jpg", 500, 375), "visual7w", "Foliage.", "viscot@2")
    assert first.question == "What is behind the bench?"
    assert first.chain == (RationaleStep((Box(2, 0, 390, 282),), viscot.EVIDENCE, "target"),)
    assert (second.status, second.image.width, second.image.height) == (Status.MINED, 500, 367)
    assert missing.status is Status.REJECTED and _reasons(missing) == ["image_size_unknown"]
    assert "none lent by --sizes" in missing.checks[0].reason
    # the image under the other spelling of the folder is found too
    (tmp_path / "images" / "cot" / "visual7w").mkdir(parents=True)
    Image.new("RGB", (40, 40)).save(tmp_path / "images" / "cot" / "visual7w" / "v7w_9.jpg")
    found = list(viscot.mine(annotations=bench, images=tmp_path / "images"))[2]
    assert (found.status, found.image) == (Status.MINED, ImageRef("cot/visual7w/v7w_9.jpg", 40, 40))  # as found


@pytest.mark.parametrize(("subset", "dataset", "bench_folder", "det_folder"), [
    (s, s, s, s) for s in viscot.SUBSETS if s not in ("visual7w", "textcap")
] + [("visual7w", "v7w", "v7w", "visual7w"), ("textcap", "textcap", "textvqa", "textvqa")])
def test_viscot_every_subset_lends_its_det_sizes(tmp_path, subset, dataset, bench_folder, det_folder):
    name = "img_1.jpg"  # question 3 of the det file names another image: the question id alone must not match
    bench = _json(tmp_path / "benchmark" / f"{subset}.json", [
        _benchmark(dataset, bench_folder, 3, name, "[100, 100, 300, 200]", "[0.200, 0.400, 0.600, 0.600]", "x")])
    _jsonl(tmp_path / "benchmark_det" / f"{subset}.jsonl",
           _det(det_folder, 3, "other.jpg", [1, 1, 9, 9], 999, 999),
           _det(det_folder, 4, name, [100, 100, 300, 200], 500, 300))
    (rec,) = viscot.mine(annotations=bench, sizes=tmp_path / "benchmark_det")
    assert rec.status is Status.MINED, rec.checks
    assert (rec.image.width, rec.image.height, rec.question_type) == (500, 300, subset)
    assert rec.chain[0].boxes == (Box(100, 100, 300, 200),)


# --- TreeBench -------------------------------------------------------------------------------------------------------
def test_treebench_vlmevalkit_table_row(tmp_path):
    row = {"index": 12, "image": "sa_1001.jpg", "question": "What is the color of the cup left of the laptop?",
           "A": "red", "B": "blue", "C": "white", "D": "green", "answer": "C",
           "bbox": "[[120.0, 340.5, 180.0, 420.0], [200, 300, 640, 700]]", "category": "Perception/Attributes",
           "width": 1500, "height": 1000}
    (rec,) = treebench.mine(annotations=_jsonl(tmp_path / "TreeBench.jsonl", row))
    assert rec.status is Status.MINED and rec.image == ImageRef("sa_1001.jpg", 1500, 1000)
    assert (rec.question, rec.answer, rec.answer_type) == (
        "What is the color of the cup left of the laptop?\n(A) red\n(B) blue\n(C) white\n(D) green", "C", "choice")
    assert rec.chain == (RationaleStep((Box(120, 340.5, 180, 420),), "", "target", "0"),
                         RationaleStep((Box(200, 300, 640, 700),), "", "target", "1"))
    assert rec.question_type == "Perception/Attributes"
