"""Export per split: Parquet/JSONL round trips, the HF dataset folder (images embedded), COCO JSON with the chain
order kept; status and split selection with counted exclusions; missing images; atomic folder replacement."""

from __future__ import annotations

import dataclasses

import datasets
import numpy as np
import orjson
import polars as pl
import pytest
from PIL import Image
from polars.testing import assert_frame_equal
from pycocotools.coco import COCO
from rich.console import Console

from virl_data.core import boxconv
from virl_data.storage import corpus
from virl_data import export
from virl_data.core import schema
from virl_data.core.errors import ConfigError, VirlError
from virl_data.storage.locks import is_lock_file
from virl_data.core.types import (
    Box,
    CheckResult,
    ImageRef,
    Provenance,
    RationaleRecord,
    RationaleStep,
    Review,
    Status,
)

SIZES = {"img/a.png": (64, 48), "img/b.png": (40, 30), "img/sub/c.png": (50, 70)}


# --- factories -------------------------------------------------------------------------------------------------------
def _step(phrase, *boxes, role=None):
    return RationaleStep(boxes=tuple(Box(*b) for b in boxes), phrase=phrase, role=role, source_ref=f"ref-{phrase}")


def _record(i, path, chain, *, status=Status.ACCEPTED, split=None, **kw):
    w, h = SIZES[path]
    return RationaleRecord(
        id=f"t-{i}",
        image=ImageRef(path=path, width=w, height=h, sha1=None),
        question=f"question {i}?",
        answer=f"answer {i}",
        chain=tuple(chain),
        provenance=Provenance(source="unit", source_split="val", native_ids=(("qid", str(i)),), miner="unit@1"),
        answer_type="color",
        question_type="attr",
        status=status,
        split=split,
        **kw,
    )


def _records():
    """7 records: 4 exportable with a split, one rejected, one mined, one accepted without a split."""
    review = Review("labelstudio", "ann", "2026-01-01T00:00:00Z", "fix", chain=(_step("fixed", (1, 1, 5, 5)),))
    return [
        _record(0, "img/a.png", [_step("Red  Square", (1.25, 2.5, 10.75, 20.125), role="context"),
                                 _step("blue circle", (30, 4, 40, 14), (44.5, 20, 60, 47.5), role="target")],
                split="train", checks=(CheckResult("zoom_need", True, None, 0.125),)),
        _record(1, "img/a.png", [_step("red square", (2, 3, 12, 21))], status=Status.REVIEWED, split="train",
                reviews=(review,)),
        _record(2, "img/b.png", [_step("", (0, 0, 40, 30)), _step("tiny dot", (5, 5, 6.5, 7))], split="val"),
        _record(3, "img/b.png", [_step("rejected thing", (1, 1, 2, 2))], status=Status.REJECTED, split="val"),
        _record(4, "img/sub/c.png", [_step("mined thing", (1, 1, 2, 2))], status=Status.MINED, split="test"),
        _record(5, "img/sub/c.png", [_step("no split", (1, 1, 2, 2))]),
        _record(6, "img/sub/c.png", [], split="test"),  # an empty chain still exports (image, question, no boxes)
    ]


@pytest.fixture
def image_root(tmp_path):
    root = tmp_path / "images"
    for rel, (w, h) in SIZES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (w, h), (200, 30, 30)).save(root / rel)
    return root


@pytest.fixture
def frame():
    return schema.records_to_frame(_records())


def _expected(df, split):
    return df.filter(pl.col("status").is_in(["accepted", "reviewed"]) & (pl.col("split") == split))


def _leftovers(parent):
    """Temporary files or folders beside an export; its lock file (``locks.sibling_lock``) stays by design."""
    return sorted(p.name for p in parent.iterdir()
                  if (".tmp-" in p.name or ".old-" in p.name or p.name.startswith(".")) and not is_lock_file(p))


# --- formats and selection -------------------------------------------------------------------------------------------
def test_formats_and_unknown_format_names_the_valid_ones(frame, tmp_path):
    assert export.export_formats() == ("hf", "parquet", "jsonl", "coco", "trl", "verl")
    with pytest.raises(ConfigError, match="hf, parquet, jsonl, coco, trl, verl"):
        export.export(frame, tmp_path / "out", "yolo", image_root=None)
    with pytest.raises(ConfigError, match="accepted"):
        export.export(frame, tmp_path / "out", "jsonl", image_root=None, statuses=("acepted",))
    with pytest.raises(ConfigError, match="missing_images"):
        export.export(frame, tmp_path / "out", "hf", image_root=tmp_path, missing_images="skip")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_corpus_formats_round_trip_each_split(frame, image_root, tmp_path, fmt):
    out = tmp_path / "out"
    res = export.export(frame, out, fmt, image_root=image_root)
    assert res.counts == {"test": 1, "train": 2, "val": 1}
    assert res.excluded == {"status:mined": 1, "status:rejected": 1, "no_split": 1}
    assert res.n_input == frame.height
    for split in ("train", "val", "test"):
        path = out / f"{split}.{fmt}"
        assert res.paths[split] == path and path.is_file()
        assert_frame_equal(corpus.read(path), _expected(frame, split))
    if fmt == "parquet":
        assert corpus.image_root(out / "train.parquet").resolve() == image_root.resolve()
    manifest = orjson.loads((out / export.MANIFEST).read_bytes())
    assert manifest["splits"]["train"] == {"path": f"train.{fmt}", "records": 2}
    assert manifest["excluded"] == res.excluded
    assert _leftovers(tmp_path) == []
    console = Console(record=True, width=200)
    console.print(export.summary_table(res))
    text = console.export_text()
    assert "left out: status:rejected" in text and "4 / 7" in text


def test_without_any_split_everything_goes_to_all(frame, tmp_path):
    unsplit = frame.with_columns(pl.lit(None, pl.String).alias("split"))
    res = export.export(unsplit, tmp_path / "out", "parquet", image_root=None, statuses=None)
    assert res.counts == {"all": frame.height} and res.excluded == {}
    assert_frame_equal(corpus.read(tmp_path / "out" / "all.parquet"), unsplit)


def test_status_selection_is_counted(frame, tmp_path):
    res = export.export(frame, tmp_path / "out", "jsonl", image_root=None, statuses=["rejected", "mined"])
    assert res.counts == {"test": 1, "val": 1}
    assert res.excluded == {"status:accepted": 4, "status:reviewed": 1}
    everything = export.export(frame, tmp_path / "all", "jsonl", image_root=None, statuses=None)
    assert everything.counts == {"test": 2, "train": 2, "val": 2} and everything.excluded == {"no_split": 1}
    with pytest.raises(VirlError, match=r"nothing to export.*status:mined"):
        export.export(frame.filter(pl.col("status") == "mined"), tmp_path / "none", "jsonl", image_root=None)
    assert not (tmp_path / "none").exists()


def test_bad_split_name_is_a_clear_error(frame, tmp_path):
    bad = frame.with_columns(pl.lit("../escape").alias("split"))
    with pytest.raises(VirlError, match="split name '../escape'"):
        export.export(bad, tmp_path / "out", "parquet", image_root=None)


# --- hf --------------------------------------------------------------------------------------------------------------
def test_hf_dataset_dict_with_embedded_images(frame, image_root, tmp_path):
    out = tmp_path / "hf"
    res = export.export(frame, out, "hf", image_root=image_root)
    # Moving the images away proves they are embedded, not referenced.
    image_root.rename(tmp_path / "moved")
    dd = datasets.load_from_disk(str(out))
    assert isinstance(dd, datasets.DatasetDict) and sorted(dd) == ["test", "train", "val"]
    assert res.paths["train"] == out / "train"
    ds = dd["train"]
    assert ds.features == schema.hf_features()
    first = ds[0]
    assert isinstance(first["image"], Image.Image) and first["image"].size == (64, 48)
    original = {r.id: r for r in _records()}
    for split in ("train", "val", "test"):
        rows = list(dd[split])
        assert [r["id"] for r in rows] == _expected(frame, split)["id"].to_list()
        for row in rows:
            assert schema.record_from_row(row) == original[row["id"]]
            assert row["image"].size == (row["image_ref"]["width"], row["image_ref"]["height"])
    assert first["chain"][0]["boxes"][0] == {"x1": 1.25, "y1": 2.5, "x2": 10.75, "y2": 20.125}
    raw = ds.cast_column("image", datasets.Image(decode=False))[0]["image"]
    # save_to_disk keeps only the file name of an embedded image; image_ref keeps the relative path.
    assert raw["path"] == "a.png" and raw["bytes"][:4] == b"\x89PNG" and first["image_ref"]["path"] == "img/a.png"
    assert _leftovers(tmp_path) == []


def test_hf_missing_image_is_an_error_and_leaves_nothing(frame, image_root, tmp_path):
    (image_root / "img/a.png").unlink()
    out = tmp_path / "hf"
    with pytest.raises(VirlError, match=r"1 image file\(s\) missing.*2 records, e\.g\. t-0, t-1"):
        export.export(frame, out, "hf", image_root=image_root)
    assert not out.exists() and _leftovers(tmp_path) == []
    (image_root / "img/b.png").write_bytes(b"not an image")
    with pytest.raises(VirlError, match="2 image file"):
        export.export(frame, out, "hf", image_root=image_root)


def test_hf_missing_image_as_null_is_counted(frame, image_root, tmp_path):
    (image_root / "img/a.png").unlink()
    res = export.export(frame, tmp_path / "hf", "hf", image_root=image_root, missing_images="null")
    assert res.missing_images == 2
    dd = datasets.load_from_disk(str(tmp_path / "hf"))
    assert [r["image"] for r in dd["train"]] == [None, None]
    assert dd["val"][0]["image"].size == (40, 30)


def test_hf_needs_an_image_root(frame, tmp_path):
    with pytest.raises(ConfigError, match="image_root"):
        export.export(frame, tmp_path / "hf", "hf", image_root=None)


# --- coco ------------------------------------------------------------------------------------------------------------
def test_coco_loads_and_keeps_the_chain(frame, image_root, tmp_path):
    out = tmp_path / "coco"
    res = export.export(frame, out, "coco", image_root=image_root)
    assert res.paths == {s: out / f"{s}.json" for s in ("test", "train", "val")}
    coco = COCO(str(out / "train.json"))
    kept = _records()[:2]
    assert len(coco.getAnnIds()) == sum(len(r.boxes) for r in kept) == 4
    assert [img["file_name"] for img in coco.dataset["images"]] == ["img/a.png"]
    assert coco.imgs[1]["width"] == 64 and coco.imgs[1]["height"] == 48
    assert sorted(coco.getAnnIds(imgIds=[1])) == [1, 2, 3, 4]
    for rec in kept:
        anns = sorted((a for a in coco.dataset["annotations"] if a["attributes"]["record_id"] == rec.id),
                      key=lambda a: (a["attributes"]["step"], a["attributes"]["box_index"]))
        canon = boxconv.coco_xywh_to_canonical(np.array([a["bbox"] for a in anns], dtype=np.float64))
        expected = np.array([b.as_tuple() for b in rec.boxes], dtype=np.float64)
        np.testing.assert_allclose(canon, expected, rtol=0, atol=1e-9)
        assert [a["attributes"]["phrase"] for a in anns] == [s.phrase for s in rec.chain for _ in s.boxes]
        assert [a["attributes"]["role"] for a in anns] == [s.role for s in rec.chain for _ in s.boxes]
        assert [a["area"] for a in anns] == [b.area for b in rec.boxes]
        assert all(a["iscrowd"] == 0 for a in anns)
    # One category set for every split, from normalized phrases, sorted; an empty phrase becomes "region".
    names = [c["name"] for c in coco.dataset["categories"]]
    assert names == ["blue circle", "red square", "region", "tiny dot"]
    assert [c["id"] for c in coco.dataset["categories"]] == [1, 2, 3, 4]
    assert sorted(coco.getCatIds(catNms=["red square"])) == [2]
    assert len(coco.getAnnIds(catIds=[2])) == 2  # "Red  Square" and "red square" share a category
    recs = coco.dataset["virl_records"]
    assert recs[1] == {"id": "t-1", "image_id": 1, "question": "question 1?", "answer": "answer 1",
                       "answer_type": "color", "question_type": "attr", "source": "unit", "n_steps": 1,
                       "answer_bbox": None}
    assert coco.dataset["info"]["image_root"] == str(image_root.resolve())
    assert coco.dataset["info"]["schema_version"] == schema.SCHEMA_VERSION


def test_coco_images_first_seen_order_and_empty_chain(frame, tmp_path):
    res = export.export(frame, tmp_path / "coco", "coco", image_root=None, statuses=None)
    doc = orjson.loads(res.paths["val"].read_bytes())
    assert [(i["id"], i["file_name"]) for i in doc["images"]] == [(1, "img/b.png")]
    assert len(doc["annotations"]) == 3 and {a["image_id"] for a in doc["annotations"]} == {1}
    test = orjson.loads(res.paths["test"].read_bytes())
    assert [r["n_steps"] for r in test["virl_records"]] == [1, 0]
    assert len(test["annotations"]) == 1


def test_coco_shows_a_box_answer_as_a_coco_box(tmp_path):
    rec = dataclasses.replace(_records()[0], answer="[4, 6, 14.5, 26]", answer_type="box", split="val")
    doc = export.to_coco(schema.records_to_frame([rec, dataclasses.replace(rec, id="w", answer="red",
                                                                           answer_type="color")]))
    assert [r["answer_bbox"] for r in doc["virl_records"]] == [[4.0, 6.0, 10.5, 20.0], None]
    assert doc["virl_records"][0]["answer"] == "[4, 6, 14.5, 26]"  # the canonical answer string stays


# --- atomic folder replacement ---------------------------------------------------------------------------------------
def test_failing_export_leaves_no_partial_folder(frame, tmp_path, monkeypatch):
    real_write, calls = corpus.write, []

    def failing_write(*args, **kw):
        calls.append(args[1])
        if len(calls) == 2:
            raise OSError("disk full")
        return real_write(*args, **kw)

    monkeypatch.setattr(corpus, "write", failing_write)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="disk full"):
        export.export(frame, out, "parquet", image_root=None)
    assert not out.exists() and _leftovers(tmp_path) == []
    # A failed re-export keeps the previous export whole.
    monkeypatch.setattr(corpus, "write", real_write)
    export.export(frame, out, "parquet", image_root=None)
    before = sorted(p.name for p in out.iterdir())
    calls.clear()
    monkeypatch.setattr(corpus, "write", failing_write)
    with pytest.raises(OSError):
        export.export(frame, out, "parquet", image_root=None, statuses=None)
    assert sorted(p.name for p in out.iterdir()) == before and _leftovers(tmp_path) == []


def test_reexport_replaces_the_folder_but_never_a_foreign_one(frame, tmp_path):
    out = tmp_path / "out"
    export.export(frame, out, "parquet", image_root=None)
    only_train = frame.filter(pl.col("split") == "train")
    export.export(only_train, out, "parquet", image_root=None)
    assert sorted(p.name for p in out.iterdir()) == ["train.parquet", export.MANIFEST]  # no stale val/test
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a virl export"):
        export.export(frame, foreign, "jsonl", image_root=None)
    assert (foreign / "notes.txt").read_text() == "keep me"
