"""Block planning (virl_data/engines/blocks.py), without any engine: the blocks of a source, mined one by one and put in
``_seq`` order, are exactly the whole-file miner's frame; GQA blocks are runs of questions read back from the
planner's streamed index, neither file ever read whole; VG blocks carry their images' sizes from image_data.json."""

from __future__ import annotations

import doctest
import random
from pathlib import Path

import orjson
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from virl_data.engines import blocks
from virl_data.core.errors import ConfigError, CorpusReadError, WrongFileKind
from virl_data.miners import coco, flickr30k, gqa, refcoco, treebench, vg, viscot
from virl_data.core.schema import records_to_frame

GQA_SAMPLE = "gqa/train_domiknows_sample"


def _gqa_with_duplicates(shared_data: Path, folder: Path, seed: int = 0) -> Path:
    """The GQA sample's questions plus re-asked copies of five, shuffled (an image's questions spread out)."""
    questions = orjson.loads((shared_data / GQA_SAMPLE / "train_balanced_questions_sample.json").read_bytes())
    items = list(questions.items())
    items += [(f"dup{qid}", {**q, "question": q["question"].upper() + "  "}) for qid, q in items[:5]]
    random.Random(seed).shuffle(items)
    path = folder / "train_questions.json"
    path.write_bytes(orjson.dumps(dict(items)))
    return path


def test_docstring_examples():
    assert doctest.testmod(blocks).failed == 0


def _from_blocks(miner: str, options: dict, block_size: int, limit: int | None = None):
    planned = list(blocks.plan_blocks(miner, options, block_size=block_size, limit=limit))
    mined = pl.concat([blocks.mine_block(b.payload) for b in planned]).sort(blocks.SEQ)
    return planned, mined.drop(blocks.SEQ)


def test_gqa_blocks_stream_both_files_into_runs_of_questions(shared_data, tmp_path, monkeypatch):
    questions = _gqa_with_duplicates(shared_data, tmp_path, seed=1)
    graphs = shared_data / GQA_SAMPLE / "train_sceneGraphs_sample.json"
    options = {"questions": questions, "scene_graphs": graphs}
    whole = records_to_frame(gqa.mine(questions=questions, scene_graphs=graphs))
    # neither file is read whole: the whole-file reader is never called for well-formed files
    monkeypatch.setattr(gqa, "_read", lambda *a: pytest.fail("the GQA planner read a file whole"))
    planned = list(blocks.plan_blocks("gqa", options, block_size=3, workdir=tmp_path / "plan"))
    mined = pl.concat([blocks.mine_block(b.payload) for b in planned]).sort(blocks.SEQ)
    assert_frame_equal(mined.drop(blocks.SEQ), whole)
    assert [b.n_items for b in planned] == [3] * (len(whole) // 3) + ([len(whole) % 3] if len(whole) % 3 else [])
    assert blocks.in_order(planned) and planned[0].seq_range == (0, 2)
    # a payload names the index and a range, whatever the block's size
    assert max(len(b.payload) for b in planned) < 300
    assert list((tmp_path / "plan").glob("*.sqlite"))
    _, limited = _from_blocks("gqa", options, block_size=3, limit=7)
    assert_frame_equal(limited, whole.head(7))


def test_gqa_planner_names_a_bad_file(shared_data, tmp_path):
    graphs = shared_data / GQA_SAMPLE / "train_sceneGraphs_sample.json"
    good = shared_data / GQA_SAMPLE / "train_balanced_questions_sample.json"
    truncated = tmp_path / "questions.json"
    truncated.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(CorpusReadError, match="GQA questions file .*questions.json"):
        list(blocks.plan_blocks("gqa", {"questions": truncated, "scene_graphs": graphs}, workdir=tmp_path))
    listed = tmp_path / "list.json"
    listed.write_bytes(b"[1, 2]")
    with pytest.raises(CorpusReadError, match="must hold a JSON object keyed by id, got list"):
        list(blocks.plan_blocks("gqa", {"questions": listed, "scene_graphs": graphs}, workdir=tmp_path))
    with pytest.raises(WrongFileKind, match="swapped"):
        list(blocks.plan_blocks("gqa", {"questions": graphs, "scene_graphs": good}, workdir=tmp_path))
    with pytest.raises(CorpusReadError, match="cannot read GQA questions file"):
        list(blocks.plan_blocks("gqa", {"questions": tmp_path / "absent.json", "scene_graphs": graphs}))


def test_gqa_block_with_a_malformed_or_repeated_entry(shared_data, tmp_path):
    graphs = shared_data / GQA_SAMPLE / "train_sceneGraphs_sample.json"
    good = shared_data / GQA_SAMPLE / "train_balanced_questions_sample.json"
    text = good.read_bytes()
    # a broken value in the middle: the planner finds the entries (it parses none but the first), the block's
    # worker names the file and the byte
    at = text.index(b'"answer"', len(text) // 2)
    broken = tmp_path / "broken_questions.json"
    broken.write_bytes(text[:at] + b'"answer": tru, ' + text[at:])
    planned = list(blocks.plan_blocks("gqa", {"questions": broken, "scene_graphs": graphs}, block_size=4,
                                      workdir=tmp_path / "plan"))
    with pytest.raises(CorpusReadError, match=rf"GQA questions file .*broken_questions.json: .* at byte {at + 10}"):
        for b in planned:
            blocks.mine_block(b.payload)
    # a broken scene graph: among the first entries, the planner's kind check names file and byte; further on,
    # stored as its text, it is named by the worker that parses it
    bad_graphs = tmp_path / "bad_graphs.json"
    graphs_text = graphs.read_bytes()  # 10 graphs: all checked on the driver
    at = graphs_text.index(b'"objects"', len(graphs_text) // 2)
    bad_graphs.write_bytes(graphs_text[:at] + b'"objects": nul, "x": ' + graphs_text[at + len(b'"objects": '):])
    with pytest.raises(CorpusReadError, match=rf"GQA scene graphs file .*bad_graphs.json: .* at byte {at + 11}"):
        list(blocks.plan_blocks("gqa", {"questions": good, "scene_graphs": bad_graphs}, workdir=tmp_path / "plan"))
    options = _gqa_files(tmp_path / "late", 100)  # 50 graphs: the last ones past the driver's check
    late = options["scene_graphs"].read_bytes()
    at = late.rindex(b'"objects"')
    options["scene_graphs"].write_bytes(late[:at] + b'"objects": nul, "x": ' + late[at + len(b'"objects":'):])
    planned = list(blocks.plan_blocks("gqa", options, block_size=64, workdir=tmp_path / "plan"))
    with pytest.raises(CorpusReadError, match="scene graph of image '49' .* not valid JSON"):
        for b in planned:
            blocks.mine_block(b.payload)
    # a question id asked twice inside one block: both entries mined, each its own _seq (as planned)
    items = list(orjson.loads(text).items())
    repeated = tmp_path / "repeated.json"
    repeated.write_bytes(b"{" + b",".join(orjson.dumps(k) + b":" + orjson.dumps(v)
                                          for k, v in [*items[:3], items[1], *items[3:6]]) + b"}")
    planned = list(blocks.plan_blocks("gqa", {"questions": repeated, "scene_graphs": graphs}, block_size=8,
                                      workdir=tmp_path / "plan"))
    mined = blocks.mine_block(planned[0].payload)
    assert planned[0].n_items == 7 and mined[blocks.SEQ].to_list() == list(range(7))
    assert mined["id"][1] == mined["id"][3]


def test_vg_blocks_mine_what_the_whole_file_miner_mines(shared_data, tmp_path):
    data = shared_data / "visual_genome"
    sizes = tmp_path / "image_data.json"  # VG's own sizes file: image 1 sized, image 2 not
    sizes.write_bytes(orjson.dumps([{"image_id": 1, "width": 800, "height": 600, "url": "x/VG_100K/1.jpg"}]))
    for image in ("image1", "image2"):
        for extra in ({}, {"image_data": sizes}):
            options = {"relationships": data / f"relationships_{image}.json",
                       "attributes": data / f"attributes_{image}.json", **extra}
            _, mined = _from_blocks("vg", options, block_size=1)
            assert_frame_equal(mined, records_to_frame(vg.mine(**options)))
            if extra and image == "image1":
                assert (mined["status"] == "mined").any()  # sized by image_data: not all rejected


def test_frame_blocks_and_planner_errors():
    frame = pl.DataFrame({"id": list("abcde")})
    assert [b[blocks.SEQ].to_list() for b in blocks.frame_blocks(frame, 2)] == [[0, 1], [2, 3], [4]]
    assert blocks.frame_blocks(frame.head(0), 2)[0].height == 0
    assert not blocks.plannable("shapes") and blocks.plannable("gqa") and blocks.plannable("viscot")
    with pytest.raises(ConfigError, match="no block planner"):
        blocks.plan_blocks("shapes", {})
    with pytest.raises(ConfigError, match="block_size"):
        blocks.plan_blocks("gqa", {}, block_size=0)


@pytest.mark.parametrize("instances", [
    "mmpose_person_keypoints_val2017/test_coco.json",      # COCO json with images block and categories
    "llava_caps_boxes_val2014/caps_boxes_coco2014_val_80.jsonl",  # LLaVA caps_boxes lines
])
def test_coco_blocks_mine_what_the_whole_file_miner_mines(shared_data, instances):
    path = shared_data / "coco" / instances
    images = path.parent / "images"
    options = {"instances": path, "small_frac": 0.02}
    kwargs = {"images": images} if images.is_dir() else {}
    planned = list(blocks.plan_blocks("coco", options, block_size=8))  # one image per block
    assert len(planned) > 1 and blocks.in_order(planned)
    mined = pl.concat([blocks.mine_block(b.payload, kwargs.get("images")) for b in planned]).sort(blocks.SEQ)
    whole = records_to_frame(coco.mine(**options, **kwargs))
    assert whole.height > 0
    assert_frame_equal(mined.drop(blocks.SEQ), whole)
    with pytest.raises(ConfigError, match="small_frac"):
        list(blocks.plan_blocks("coco", {**options, "small_frac": 2.0}))


# --- miners with one item per line or file: blocks are runs of items ------------------------------------------------
def _treebench_file(folder: Path, n: int = 7) -> Path:
    rows = [{"index": i, "image": f"sa_{i % 3}.jpg", "question": f"What is left of object {i}?", "A": "red",
             "B": "blue", "answer": "AB"[i % 2], "bbox": f"[[{i}, 10, 50, 60]]", "category": "Perception",
             "width": 100 + i, "height": 80} for i in range(n)]
    path = folder / "TreeBench.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def test_refcoco_treebench_flickr30k_blocks_mine_what_the_whole_file_miner_mines(shared_data, tmp_path):
    flickr = shared_data / "flickr30k_entities"
    cases = [
        ("refcoco", refcoco.mine, {"refs": shared_data / "refcoco"}, None),
        ("treebench", treebench.mine, {"annotations": _treebench_file(tmp_path)}, None),
        ("flickr30k", flickr30k.mine, {"sentences": flickr / "Sentences", "splits": flickr / "splits"},
         flickr / "images"),
    ]
    for miner, mine, options, images in cases:
        planned = list(blocks.plan_blocks(miner, options, block_size=5))
        assert len(planned) > 1 and blocks.in_order(planned), miner
        mined = pl.concat([blocks.mine_block(b.payload, images) for b in planned]).sort(blocks.SEQ)
        whole = records_to_frame(mine(**options, **({"images": images} if images else {})))
        assert whole.height > 5, miner
        assert_frame_equal(mined.drop(blocks.SEQ), whole)
    _, limited = _from_blocks("refcoco", {"refs": shared_data / "refcoco"}, block_size=4, limit=6)
    assert_frame_equal(limited, records_to_frame(refcoco.mine(refs=shared_data / "refcoco", limit=6)))
    with pytest.raises(ConfigError, match="unknown RefCOCO answer"):
        blocks.plan_blocks("refcoco", {"refs": shared_data / "refcoco", "answer": "nope"})


def test_viscot_blocks_mine_what_the_whole_file_miner_mines(shared_data, tmp_path):
    data = shared_data / "viscot"
    for options in ({"annotations": data / "benchmark"},  # sizes from nowhere: image_size_unknown reasons
                    {"annotations": data / "benchmark", "sizes": data / "benchmark_det"},  # lent across files
                    {"annotations": data / "cot_train"}):  # sized in the file
        planned, mined = _from_blocks("viscot", options, block_size=7)
        whole = records_to_frame(viscot.mine(**options))
        assert len(planned) > 3 and blocks.in_order(planned) and whole.height > 20
        assert_frame_equal(mined, whole)
        if "sizes" in options:  # the lent sizes reached the workers: records sized, not rejected for it
            assert (whole["status"] == "mined").sum() > 0
    options = {"annotations": data / "benchmark", "sizes": data / "benchmark_det"}
    _, limited = _from_blocks("viscot", options, block_size=4, limit=9)
    assert_frame_equal(limited, records_to_frame(viscot.mine(**options, limit=9)))
    with pytest.raises(WrongFileKind, match="swapped"):  # the miner's own kind check, on the driver
        list(blocks.plan_blocks("viscot", {"annotations": data / "benchmark", "sizes": data / "benchmark"}))


def _gqa_files(folder: Path, n: int, per_image: int = 2) -> dict[str, Path]:
    """``n`` GQA-shaped questions, ``per_image`` per image, each image's scene graph with one object."""
    folder.mkdir(parents=True, exist_ok=True)
    graphs = {str(i): {"width": 640, "height": 480, "objects": {f"{i}1": {"name": "cup", "x": 10, "y": 20, "w": 30,
                                                                          "h": 40, "attributes": ["red"]}}}
              for i in range(n // per_image)}
    questions = {f"q{i}": {"imageId": str(i // per_image), "question": f"Is there a cup? ({i})", "answer": "yes",
                           "semantic": [{"operation": "select", "dependencies": [],
                                         "argument": f"cup ({i // per_image}1)"}]}
                 for i in range(n)}
    paths = {"questions": folder / "q.json", "scene_graphs": folder / "sg.json"}
    paths["questions"].write_bytes(orjson.dumps(questions))
    paths["scene_graphs"].write_bytes(orjson.dumps(graphs))
    return paths


def test_gqa_planner_memory_does_not_grow_with_the_input(tmp_path, monkeypatch):
    import tracemalloc

    from virl_data.engines import jsonspans

    monkeypatch.setattr(jsonspans, "CHUNK_BYTES", 64 * 1024)  # both inputs (0.8 and 3.2 MB) span many chunks
    peaks = []
    for n in (5_000, 20_000):  # 2,500 and 10,000 scene graphs
        options = _gqa_files(tmp_path / str(n), n)
        tracemalloc.start()
        try:
            planned = sum(b.n_items for b in blocks.plan_blocks("gqa", options, block_size=256,
                                                                 workdir=tmp_path / f"plan{n}"))
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        assert planned == n
    # four times the input, about the same peak (parsing the files whole: four times the peak)
    assert peaks[1] < 1.5 * peaks[0], peaks


def test_gqa_scene_graphs_indexed_by_a_second_process(shared_data, tmp_path, monkeypatch):
    monkeypatch.setattr(blocks, "APART_BYTES", 0)  # every scene graphs file counts as large
    questions = shared_data / GQA_SAMPLE / "train_balanced_questions_sample.json"
    graphs = shared_data / GQA_SAMPLE / "train_sceneGraphs_sample.json"
    _, mined = _from_blocks("gqa", {"questions": questions, "scene_graphs": graphs}, block_size=4)
    assert_frame_equal(mined, records_to_frame(gqa.mine(questions=questions, scene_graphs=graphs)))
    with pytest.raises(WrongFileKind, match="swapped"):  # raised in the second process, re-raised here
        list(blocks.plan_blocks("gqa", {"questions": questions, "scene_graphs": questions}, workdir=tmp_path))


def _plan_in_a_pool_worker(options: dict) -> int:
    return sum(b.n_items for b in blocks.plan_blocks("gqa", options, block_size=4))


def test_gqa_planner_inside_a_daemonic_pool_worker_indexes_inline(shared_data, monkeypatch):
    import multiprocessing

    options = {"questions": str(shared_data / GQA_SAMPLE / "train_balanced_questions_sample.json"),
               "scene_graphs": str(shared_data / GQA_SAMPLE / "train_sceneGraphs_sample.json")}
    expected = _plan_in_a_pool_worker(options)
    monkeypatch.setattr(blocks, "APART_BYTES", 0)  # the forked worker has it too: it would start an indexer
    with multiprocessing.get_context("fork").Pool(1) as pool:  # daemonic workers cannot start processes
        assert pool.apply(_plan_in_a_pool_worker, (options,)) == expected
