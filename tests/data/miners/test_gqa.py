"""GQA miner: exact chains hand-checked against the real sample, rejection reasons on tiny synthetic files."""

from __future__ import annotations

import gc
from pathlib import Path

import orjson
import pytest
from PIL import Image

from virl_data.core.errors import ConfigError, CorpusReadError
from virl_data.core.schema import frame_to_records, records_to_frame
from virl_data.core.types import Box, Status, record_id
from virl_data.miners import gqa

TRAIN = Path("gqa/train_domiknows_sample")
VAL = Path("gqa/val_airdsample")


# --- helpers ---------------------------------------------------------------------------------------------------------
def op(operation: str, argument: str, *deps: int) -> dict:
    return {"operation": operation, "dependencies": list(deps), "argument": argument}


def question(image_id: str = "7", semantic: list | None = None, structural: str = "query", **over) -> dict:
    semantic = [op("select", "cup (1)"), op("relate", "_,on,o (2)", 0), op("query", "name", 1)] \
        if semantic is None else semantic
    q = {"imageId": image_id, "question": "What is the cup on?", "answer": "table", "semantic": semantic,
         "types": {"structural": structural, "semantic": "rel", "detailed": "relO"}}
    return q | over


OBJECTS = {
    "1": {"name": "cup", "x": 10, "y": 20, "w": 30, "h": 40, "attributes": [], "relations": []},
    "2": {"name": "table", "x": 0, "y": 50, "w": 100, "h": 30, "attributes": [], "relations": []},
    "3": {"name": "cup", "x": 60, "y": 20, "w": 10, "h": 10, "attributes": [], "relations": []},
}


def write(tmp_path: Path, questions: dict, graphs: dict | None = None, name: str = "val_questions.json"):
    graphs = {"7": {"width": 100, "height": 80, "objects": OBJECTS}} if graphs is None else graphs
    qpath, gpath = tmp_path / name, tmp_path / "scene_graphs.json"
    qpath.write_bytes(orjson.dumps(questions))
    gpath.write_bytes(orjson.dumps(graphs))
    return qpath, gpath


def mine_one(tmp_path: Path, q: dict, graphs: dict | None = None, **kw):
    qpath, gpath = write(tmp_path, {"42": q}, graphs)
    (rec,) = gqa.mine(questions=qpath, scene_graphs=gpath, **kw)
    return rec


def reasons(rec) -> list[str]:
    return [c.reason for c in rec.checks]


# --- the real sample -------------------------------------------------------------------------------------------------
@pytest.fixture
def train_records(shared_data):
    d = shared_data / TRAIN
    recs = list(gqa.mine(questions=d / "train_balanced_questions_sample.json",
                         scene_graphs=d / "train_sceneGraphs_sample.json"))
    return {r.provenance.native_id("question_id"): r for r in recs}


def test_sample_counts_and_the_empty_chain(train_records):
    assert len(train_records) == 23
    rejected = {qid: reasons(r) for qid, r in train_records.items() if r.status is Status.REJECTED}
    # "Is it outdoors or indoors?": select: scene -> choose location: no object is looked at.
    assert rejected == {"13570047": ["empty_chain: no operation of the program references an object"]}
    assert all(r.chain and r.chain[-1].role == "target" for r in train_records.values() if r.status is Status.MINED)


def test_sample_relate_chain_exact(train_records):
    # 11954861: select: painting (389027) -> relate: man,to the left of,s (389036) -> relate: _,holding,o (389020)
    # scene graph 2402518 (375 x 500): painting x=216 y=107 w=23 h=39; man 0 75 125 417; wine glass 136 221 23 42.
    r = train_records["11954861"]
    assert r.status is Status.MINED and r.checks == ()
    assert (r.question, r.answer) == ("What is the man to the left of the painting holding?", "wine glass")
    assert (r.answer_type, r.question_type) == ("open", "relO")
    assert (r.image.path, r.image.width, r.image.height) == ("2402518.jpg", 375, 500)
    assert [(s.phrase, s.source_ref, s.role, s.boxes) for s in r.chain] == [
        ("painting", "389027", "context", (Box(216, 107, 239, 146),)),
        ("man", "389036", "context", (Box(0, 75, 125, 492),)),
        ("wine glass", "389020", "target", (Box(136, 221, 159, 263),)),
    ]
    assert r.id == record_id("gqa", "11954861", "2402518")
    assert r.provenance.source_split == "train" and r.provenance.miner == "gqa@1"
    assert r.provenance.native_ids == (("question_id", "11954861"), ("image_id", "2402518"))


def test_sample_choose_and_verify_chains_exact(train_records):
    # 13522687: select: window (1313959) -> relate: man,at,s (1313980) -> choose rel: backpack,...,s (1313961)
    # image 2384055: window 83 158 80 75; man 97 217 48 170; backpack 44 254 64 85.
    r = train_records["13522687"]
    assert (r.answer, r.answer_type, r.question_type) == ("left", "choice", "relChooser")
    assert [(s.phrase, s.source_ref, s.boxes) for s in r.chain] == [
        ("window", "1313959", (Box(83, 158, 163, 233),)),
        ("man", "1313980", (Box(97, 217, 145, 387),)),
        ("backpack", "1313961", (Box(44, 254, 108, 339),)),
    ]
    # 171048547: select: animal (2791102) -> filter color: black -> verify rel: chair,sitting under,o (3620611).
    # The phrase is the scene graph's name ("cat"), not the program's hypernym ("animal").
    r = train_records["171048547"]
    assert (r.answer, r.answer_type, r.question_type) == ("yes", "yes/no", "relVerify")
    assert [(s.phrase, s.role, s.boxes) for s in r.chain] == [
        ("cat", "context", (Box(0, 0, 310, 328),)), ("chair", "target", (Box(0, 0, 388, 383),))]


def test_sample_no_object_marker_adds_no_step(train_records):
    # 15451857: select: food (3282635) -> verify rel: bottle,to the right of,o (-); food 341 191 23 21.
    r = train_records["15451857"]
    assert r.status is Status.MINED
    assert [(s.source_ref, s.role, s.boxes) for s in r.chain] == [("3282635", "target", (Box(341, 191, 364, 212),))]


def test_sample_round_trips_through_the_schema(train_records):
    recs = list(train_records.values())
    assert frame_to_records(records_to_frame(recs)) == recs


def test_val_questions_without_scene_graphs(shared_data):
    qpath = shared_data / VAL / "questions" / "SAMPLE-val_balanced_questions.json"
    graphs = shared_data / TRAIN / "train_sceneGraphs_sample.json"  # other images: none of the val ones
    recs = list(gqa.mine(questions=qpath, scene_graphs=graphs, images=shared_data / VAL / "images"))
    assert len(recs) == 5 and all(r.status is Status.REJECTED and r.chain == () for r in recs)
    by_id = {r.provenance.native_id("question_id"): r for r in recs}
    r = by_id["00155957"]
    assert reasons(r) == ["no_scene_graph: image 2370134"]
    assert (r.image.path, r.image.width, r.image.height) == ("2370134.jpg", 500, 375)  # read from the jpg header
    assert (r.answer, r.answer_type, r.question_type) == ("yes", "choice", "twoSameMaterial")
    assert r.provenance.source_split == "val"
    assert (by_id["00126851"].image.width, by_id["00126851"].image.height) == (800, 533)
    # Without the images the size is unknown too, and said so.
    r = next(gqa.mine(questions=qpath, scene_graphs=graphs))
    assert r.image.width == 0 and reasons(r)[0].startswith("no_scene_graph: image ")
    assert reasons(r)[1].startswith("image_size_unknown: image ")


# --- the program walk ------------------------------------------------------------------------------------------------
def test_several_ids_make_one_step(tmp_path):
    semantic = [op("select", "cups (1,3)"), op("relate", "_,on,o (2)", 0), op("exist", "?", 1)]
    r = mine_one(tmp_path, question(semantic=semantic, structural="verify"))
    assert r.status is Status.MINED and r.answer_type == "yes/no"
    assert [(s.phrase, s.source_ref, s.boxes) for s in r.chain] == [
        ("cup", "1,3", (Box(10, 20, 40, 60), Box(60, 20, 70, 30))), ("table", "2", (Box(0, 50, 100, 80),))]
    two_names = mine_one(tmp_path, question(semantic=[op("select", "things (2, 1)")]))
    assert [(s.phrase, s.source_ref) for s in two_names.chain] == [("table, cup", "2,1")]


def test_repeats_of_the_same_objects_collapse_only_when_consecutive(tmp_path):
    semantic = [op("select", "cup (1)"), op("filter color", "white", 0), op("relate", "cup,same as,s (1)", 1),
                op("relate", "_,on,o (2)", 2), op("relate", "cup,on,s (1)", 3), op("query", "name", 4)]
    r = mine_one(tmp_path, question(semantic=semantic))
    assert [s.source_ref for s in r.chain] == ["1", "2", "1"]
    assert [s.role for s in r.chain] == ["context", "context", "target"]
    # The same set written in another order is the same set.
    r = mine_one(tmp_path, question(semantic=[op("select", "cups (1,3)"), op("relate", "x,y,s (3,1)", 0)]))
    assert [s.source_ref for s in r.chain] == ["1,3"]


def test_walk_follows_dependencies_not_list_order(tmp_path):
    semantic = [op("relate", "_,on,o (2)", 1), op("select", "cup (1)"), op("query", "name", 0)]
    r = mine_one(tmp_path, question(semantic=semantic))
    assert [s.source_ref for s in r.chain] == ["1", "2"]
    assert list(gqa.walk_order([{"dependencies": [2]}, {"dependencies": []}, {"dependencies": [1]}])) == [1, 2, 0]
    # Two roots: ties go to the earlier operation.
    assert list(gqa.walk_order([{"dependencies": []}, {"dependencies": []}, {"dependencies": [1, 0]}])) == [0, 1, 2]


@pytest.mark.parametrize("semantic, reason", [
    ([op("select", "cup (1)", 1), op("relate", "_,on,o (2)", 0)], "the program's dependencies form a cycle"),
    ([op("select", "cup (1)", 5)], "operation 0 depends on 5"),
    ([{"operation": "select", "argument": "cup (1)"}], "operation 0 has no dependencies list"),
    ("select: cup (1)", "semantic is not a list"),
])
def test_malformed_programs_are_rejected(tmp_path, semantic, reason):
    r = mine_one(tmp_path, question(semantic=semantic))
    assert r.status is Status.REJECTED and reasons(r) == [f"malformed_question: {reason}"] and r.chain == ()


# --- rejections ------------------------------------------------------------------------------------------------------
def test_unknown_objects_are_named_once_and_known_steps_kept(tmp_path):
    semantic = [op("select", "cup (1)"), op("relate", "_,on,o (999)", 0), op("relate", "x,near,s (999,2)", 1)]
    r = mine_one(tmp_path, question(semantic=semantic))
    assert r.status is Status.REJECTED and reasons(r) == ["unknown_object: 999"]
    assert [s.source_ref for s in r.chain] == ["1", "2"]


def test_bad_boxes_are_rejected(tmp_path):
    objects = dict(OBJECTS, **{"2": {"name": "table", "x": "0", "y": 50, "w": 100, "h": 30},
                               "3": {"name": "cup", "y": 1, "w": 2, "h": 3}})
    graphs = {"7": {"width": 100, "height": 80, "objects": objects}}
    r = mine_one(tmp_path, question(), graphs)
    assert reasons(r) == ["bad_box: object 2 has no finite numeric x, y, w, h"]
    assert [s.source_ref for s in r.chain] == ["1"] and r.chain[0].boxes == (Box(10, 20, 40, 60),)
    ok = mine_one(tmp_path, question(semantic=[op("select", "cup (1)")]), graphs)
    assert ok.status is Status.MINED  # a bad box elsewhere in the image does not spoil the rest


def test_missing_answer_question_and_image_id(tmp_path):
    q = question()
    del q["answer"]
    assert reasons(mine_one(tmp_path, q)) == ["no_answer: question 42"]
    r = mine_one(tmp_path, question(imageId=None))
    assert reasons(r)[0] == "malformed_question: question 42 has no imageId" and r.chain == ()
    r = mine_one(tmp_path, question(question=3))
    assert reasons(r) == ["malformed_question: question 42 has no question text"]


def test_malformed_scene_graph_entry(tmp_path):
    r = mine_one(tmp_path, question(), {"7": {"width": 100, "height": 80, "objects": []}})
    assert reasons(r) == ["malformed_scene_graph: image 7 has no objects mapping"]


def test_image_size_from_the_file_when_the_scene_graph_lacks_it(tmp_path):
    graphs = {"7": {"objects": OBJECTS}}
    r = mine_one(tmp_path, question(), graphs)
    assert r.status is Status.REJECTED and r.image.width == 0 and len(r.chain) == 2
    assert reasons(r) == ["image_size_unknown: image 7 (no size in the scene graph, no images)"]
    Image.new("RGB", (64, 48)).save(tmp_path / "7.jpg")
    r = mine_one(tmp_path, question(), graphs, images=tmp_path)
    assert r.status is Status.MINED and (r.image.path, r.image.width, r.image.height) == ("7.jpg", 64, 48)


@pytest.mark.parametrize("types, expected", [
    ({"structural": "verify", "detailed": "existC"}, ("yes/no", "existC")),
    ({"structural": "logical", "detailed": "existAnd"}, ("yes/no", "existAnd")),
    ({"structural": "choose", "semantic": "attr"}, ("choice", "attr")),
    ({"structural": "compare", "detailed": "twoSame"}, ("choice", "twoSame")),
    ({"structural": "query", "detailed": "relO"}, ("open", "relO")),
    ({"structural": "novel"}, (None, None)),
    (None, (None, None)),
])
def test_answer_and_question_types(tmp_path, types, expected):
    r = mine_one(tmp_path, question(types=types))
    assert (r.answer_type, r.question_type) == expected


# --- files, limit, split, collector ----------------------------------------------------------------------------------
@pytest.mark.parametrize("content, message", [
    (b'{"1": {', "cannot read GQA questions file"),
    (b"[1, 2]", "must hold a JSON object keyed by id, got list"),
])
def test_unreadable_files_raise(tmp_path, content, message):
    qpath, gpath = write(tmp_path, {})
    qpath.write_bytes(content)
    with pytest.raises(CorpusReadError, match=message) as e:
        list(gqa.mine(questions=qpath, scene_graphs=gpath))
    assert str(qpath) in str(e.value)
    with pytest.raises(CorpusReadError, match="scene graphs file .*missing.json"):
        list(gqa.mine(questions=gpath, scene_graphs=tmp_path / "missing.json"))
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_limit(tmp_path):
    qpath, gpath = write(tmp_path, {str(i): question() for i in range(5)})
    assert [r.provenance.native_id("question_id") for r in gqa.mine(questions=qpath, scene_graphs=gpath, limit=3)] \
        == ["0", "1", "2"]
    assert list(gqa.mine(questions=qpath, scene_graphs=gpath, limit=0)) == []
    with pytest.raises(ConfigError, match="limit"):
        list(gqa.mine(questions=qpath, scene_graphs=gpath, limit=-1))


def test_collector_state_is_restored(tmp_path):
    qpath, gpath = write(tmp_path, {str(i): question() for i in range(3)})
    it = gqa.mine(questions=qpath, scene_graphs=gpath)
    next(it)
    assert gc.get_freeze_count() > 0 and gc.isenabled()  # parsed data frozen while mining
    it.close()
    assert gc.get_freeze_count() == 0 and gc.isenabled()
    gc.disable()
    try:
        assert len(list(gqa.mine(questions=qpath, scene_graphs=gpath))) == 3
        assert not gc.isenabled()  # a caller's disabled collector stays disabled
    finally:
        gc.enable()


@pytest.mark.parametrize("name, split", [
    ("val_balanced_questions.json", "val"), ("SAMPLE-val_balanced_questions.json", "val"),
    ("train_all_questions_0.json", "train"), ("testdev_balanced_questions.json", "testdev"),
    ("questions.json", None), ("interval.json", None),
])
def test_split_of(name, split):
    assert gqa.split_of(name) == split


def test_docstring_examples():
    import doctest

    assert doctest.testmod(gqa).failed == 0
