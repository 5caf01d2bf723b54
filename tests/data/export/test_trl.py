"""The ``trl`` export: the HF export plus TRL's ``prompt`` column; reviewed corrections applied; images required."""

from __future__ import annotations

import datasets
import pytest
from PIL import Image
from typer.testing import CliRunner

from virl_data.storage import corpus
from virl_data import export
from virl_data.core import schema
from virl_data.cli import app
from virl_data.core.errors import ConfigError, VirlError
from virl_data.core.types import Box, ImageRef, Provenance, RationaleRecord, RationaleStep, Review, Status


def _record(i: int, *, reviews=(), path="img/a.png") -> RationaleRecord:
    return RationaleRecord(
        id=f"r{i}", image=ImageRef(path, 64, 48), question=f"What colour is thing {i}?", answer="red",
        chain=(RationaleStep((Box(1, 2, 11, 22),), "thing"),), provenance=Provenance("unit"),
        answer_type="color", status=Status.REVIEWED if reviews else Status.ACCEPTED,
        split="train" if i < 2 else "val", reviews=reviews,
    )  # fmt: skip


@pytest.fixture
def image_root(tmp_path):
    root = tmp_path / "images"
    (root / "img").mkdir(parents=True)
    Image.new("RGB", (64, 48), (200, 30, 30)).save(root / "img/a.png")
    return root


def _records():
    fix = Review("labelstudio", "ann", "2026-01-01T00:00:00Z", "fix", chain=(RationaleStep((Box(5, 5, 30, 30),)),),
                 answer="blue")
    return [_record(0), _record(1, reviews=(fix,)), _record(2)]


def test_trl_export_has_prompt_image_and_record_columns(tmp_path, image_root):
    res = export.export(schema.records_to_frame(_records()), tmp_path / "trl", "trl", image_root=image_root)
    assert res.counts == {"train": 2, "val": 1}
    dd = datasets.load_from_disk(str(tmp_path / "trl"))
    row = dd["train"][0]
    assert row["prompt"] == [{"role": "user", "content": "What colour is thing 0?"}]
    assert isinstance(row["image"], Image.Image) and row["image"].size == (64, 48)
    assert row["answer"] == "red" and row["chain"][0]["boxes"][0] == {"x1": 1.0, "y1": 2.0, "x2": 11.0, "y2": 22.0}
    assert schema.record_from_row(row) == _records()[0]  # every record column survives
    # the reviewed record is exported as corrected: the columns a reward reads are what virl-train trains on
    fixed = dd["train"][1]
    assert fixed["answer"] == "blue" and fixed["chain"][0]["boxes"][0]["x1"] == 5.0


def test_trl_export_refuses_missing_images(tmp_path, image_root):
    frame = schema.records_to_frame([_record(0, path="img/missing.png")])
    with pytest.raises(VirlError, match="missing or unreadable"):
        export.export(frame, tmp_path / "trl", "trl", image_root=image_root)
    with pytest.raises(ConfigError, match="needs every record's image"):
        export.export(frame, tmp_path / "trl", "trl", image_root=image_root, missing_images="null")
    assert not (tmp_path / "trl").exists()


def test_cli_export_format_trl(tmp_path, image_root):
    src = corpus.write(schema.records_to_frame(_records()), tmp_path / "c.parquet", image_root=image_root)
    out = tmp_path / "trl"
    result = CliRunner().invoke(app, ["export", str(src), "--format", "trl", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert datasets.load_from_disk(str(out))["val"][0]["prompt"][0]["role"] == "user"
