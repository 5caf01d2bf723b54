"""The trainer reads exported splits back as the same record type."""

from __future__ import annotations

import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.conftest import make_record
from virl_data import export
from virl_data.core import schema
from virl_data.core.errors import CorpusReadError
from virl_data.core.types import Status
from virl_data.storage import corpus
from virl_train.cli import app
from virl_train.data import available_splits, load_split


@pytest.fixture
def exported(tmp_path):
    images = tmp_path / "images"
    records = []
    for i in range(6):
        path = f"img/{i // 2}.png"
        (images / "img").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (100, 80), (i * 30, 0, 0)).save(images / path)
        records.append(make_record(i, path=path, status=Status.ACCEPTED, split="train" if i < 4 else "val"))
    df = schema.records_to_frame(records)
    return tmp_path, images, df, records


@pytest.mark.parametrize("fmt", ["hf", "parquet"])
def test_load_split_returns_the_exported_records(exported, fmt):
    tmp_path, images, df, records = exported
    out = tmp_path / fmt
    export.export(df, out, fmt, image_root=images)
    assert available_splits(out) == ["train", "val"]
    assert load_split(out, "train") == records[:4]
    assert load_split(out, "val") == records[4:]
    with pytest.raises(CorpusReadError, match="no split 'test'|no records in split 'test'"):
        load_split(out, "test")


def test_load_split_from_a_split_corpus_file(exported):
    tmp_path, _, df, records = exported
    path = corpus.write(df, tmp_path / "split.parquet")
    assert load_split(path, "val") == records[4:]
    assert load_split(path) == records


def test_virl_train_data_command(exported):
    tmp_path, images, df, _ = exported
    export.export(df, tmp_path / "hf", "hf", image_root=images)
    result = CliRunner().invoke(app, ["data", str(tmp_path / "hf")])
    assert result.exit_code == 0, result.output
    assert "train" in result.output and "val" in result.output
    bad = CliRunner().invoke(app, ["data", str(tmp_path / "absent")])
    assert bad.exit_code == 2


@pytest.mark.parametrize("fmt", ["hf", "parquet"])
def test_example_set_opens_the_original_images(exported, fmt):
    from virl_train.data import ExampleSet

    tmp_path, images, df, records = exported
    out = tmp_path / fmt
    export.export(df, out, fmt, image_root=images)
    root = None if fmt == "hf" else images
    ex = ExampleSet.load(out, "train", limit=3, image_root=root)
    assert len(ex) == 3 and ex[1] == records[1]
    img = ex.image(2)
    assert img.mode == "RGB" and img.size == (100, 80) and img.getpixel((0, 0)) == (90, 0, 0)  # img/1.png, last written by record 3


def test_example_set_bad_input(exported):
    from virl_train.data import ExampleSet, ImageLoadError

    tmp_path, images, df, records = exported
    out = tmp_path / "pq"
    export.export(df, out, "parquet", image_root=images)
    ex = ExampleSet.load(out, "train", image_root=tmp_path / "nowhere")
    with pytest.raises(ImageLoadError, match=f"record {records[0].id}: cannot load image 'img/0.png'"):
        ex.image(0)
    Image.new("RGB", (50, 50)).save(images / "img/1.png")
    ex = ExampleSet.load(out, "train", image_root=images)
    with pytest.raises(ImageLoadError, match="is 50x50, the record says 100x80"):
        ex.image(2)
    bare = [make_record(9, chain=[], status=Status.ACCEPTED, split="train")]
    corpus.write(bare, tmp_path / "bare.parquet")
    with pytest.raises(CorpusReadError, match="no rationale boxes"):
        ExampleSet.load(tmp_path / "bare.parquet", "train")
