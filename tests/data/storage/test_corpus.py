"""Record schema and corpus storage: round trips, atomic writes, and clear errors for bad files."""

from __future__ import annotations

import json

import datasets
import polars as pl
import pytest

from tests.conftest import make_record
from virl_data.core import schema
from virl_data.core.errors import CorpusReadError, SchemaMismatchError, SchemaVersionError
from virl_data.core.types import SCHEMA_VERSION, CheckResult, Review, Status
from virl_data.storage import corpus


def _records(n=5):
    recs = [make_record(i) for i in range(max(n, 3))]
    recs[1] = make_record(1, checks=(CheckResult("zoom_need", True, None, 0.1),), status=Status.ACCEPTED)
    recs[2] = make_record(2, chain=[[(1, 2, 3, 4), (5, 6, 7, 8), (0, 0, 1, 1)]])
    return recs[:n]


def test_record_row_roundtrip_is_identity():
    recs = _records()
    rev = Review("labelstudio", "ann@x", "2026-01-01T00:00:00Z", "fix", chain=recs[0].chain[:1], answer="blue")
    recs.append(make_record(9).__class__(**{**{f: getattr(recs[0], f) for f in recs[0].__slots__}, "reviews": (rev,)}))
    df = schema.records_to_frame(recs)
    assert df.schema == schema.polars_schema()
    assert schema.frame_to_records(df) == recs


def test_one_definition_drives_polars_arrow_and_hf():
    pl_schema = schema.polars_schema()
    arrow = schema.arrow_schema()
    feats = schema.hf_features()
    assert list(pl_schema) == list(arrow.names) == list(schema.COLUMNS)
    assert isinstance(feats["image"], datasets.Image)
    assert set(feats) == (set(schema.COLUMNS) | {"image_ref"})
    box = feats["chain"].feature["boxes"].feature
    assert {k: v.dtype for k, v in box.items()} == {"x1": "float64", "y1": "float64", "x2": "float64", "y2": "float64"}


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_write_read_roundtrip(tmp_path, suffix):
    recs = _records()
    path = corpus.write(recs, tmp_path / f"c{suffix}")
    assert corpus.read_records(path) == recs
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_folder_reads_every_parquet_in_name_order(tmp_path):
    recs = _records(6)
    corpus.write(recs[3:], tmp_path / "b.parquet")
    corpus.write(recs[:3], tmp_path / "a.parquet")
    assert [r.id for r in corpus.read_records(tmp_path)] == [r.id for r in recs]


def test_image_root_declared_relative_and_overridable(tmp_path):
    path = corpus.write(_records(1), tmp_path / "sub" / "c.parquet", image_root=tmp_path / "sub" / "images")
    assert corpus.image_root(path) == tmp_path / "sub" / "images"
    moved = tmp_path / "moved"
    (tmp_path / "sub").rename(moved)
    assert corpus.image_root(moved / "c.parquet") == moved / "images"
    assert corpus.image_root(moved / "c.parquet", override="/elsewhere").as_posix() == "/elsewhere"
    jsonl = corpus.write(_records(1), tmp_path / "c.jsonl")
    assert corpus.image_root(jsonl) == tmp_path


def test_failed_write_leaves_old_file_intact(tmp_path):
    path = corpus.write(_records(2), tmp_path / "c.parquet")
    before = path.read_bytes()
    with pytest.raises(SchemaMismatchError):
        corpus.write(pl.DataFrame({"id": ["x"]}), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.parquet"]


def test_other_schema_version_names_file_version_and_fix(tmp_path):
    df = schema.records_to_frame(_records(2)).with_columns(pl.lit(0, pl.Int32).alias("schema_version"))
    path = tmp_path / "old.parquet"
    df.write_parquet(path, metadata={corpus.META_VERSION: "0"})
    with pytest.raises(SchemaVersionError, match=r"old\.parquet.*v0.*expected v1.*v0_to_v1"):
        corpus.read(path)
    newer = tmp_path / "new.jsonl"
    row = schema.record_to_row(_records(1)[0]) | {"schema_version": SCHEMA_VERSION + 1}
    newer.write_text(json.dumps(row) + "\n")
    with pytest.raises(SchemaVersionError, match="upgrade virl"):
        corpus.read(newer)


def test_missing_and_mistyped_columns_are_named(tmp_path):
    df = schema.records_to_frame(_records(2))
    df.drop("chain", "answer").write_parquet(tmp_path / "m.parquet")
    with pytest.raises(SchemaMismatchError, match="missing columns: answer, chain"):
        corpus.read(tmp_path / "m.parquet")
    df.with_columns(pl.col("question").str.len_chars().alias("question")).write_parquet(tmp_path / "t.parquet")
    with pytest.raises(SchemaMismatchError, match=r"wrong type: question \(expected String, found UInt32\)"):
        corpus.read(tmp_path / "t.parquet")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"id": "a", ', r"bad\.jsonl:1: malformed JSON"),
        (b"[1, 2]\n", r"bad\.jsonl:1: expected a JSON object, found list"),
        (b'{"id": "a"}\n', r"bad\.jsonl:1: missing fields: schema_version, image"),
    ],
)
def test_malformed_jsonl(tmp_path, content, message):
    (tmp_path / "bad.jsonl").write_bytes(content)
    with pytest.raises(CorpusReadError, match=message):
        corpus.read(tmp_path / "bad.jsonl")


def test_jsonl_wrong_types_and_bad_status(tmp_path):
    row = schema.record_to_row(_records(1)[0])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(row | {"chain": "not a list"}) + "\n")
    with pytest.raises(SchemaMismatchError, match="wrong type"):
        corpus.read(bad)
    bad.write_text(json.dumps(row | {"status": "approved"}) + "\n")
    with pytest.raises(SchemaMismatchError, match="unknown status 'approved'"):
        corpus.read(bad)


def test_jsonl_optional_fields_default(tmp_path):
    row = schema.record_to_row(_records(1)[0])
    for key in ("checks", "reviews", "status", "split", "answer_type", "question_type"):
        row.pop(key)
    (tmp_path / "min.jsonl").write_text(json.dumps(row) + "\n")
    (rec,) = corpus.read_records(tmp_path / "min.jsonl")
    assert rec.status is Status.MINED and rec.checks == () and rec.split is None


def test_truncated_or_missing_parquet(tmp_path):
    path = corpus.write(_records(3), tmp_path / "c.parquet")
    (tmp_path / "cut.parquet").write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CorpusReadError, match=r"cut\.parquet: not a readable Parquet file"):
        corpus.read(tmp_path / "cut.parquet")
    with pytest.raises(CorpusReadError, match="no such file"):
        corpus.read(tmp_path / "absent.parquet")
    with pytest.raises(CorpusReadError, match="unknown corpus format '.csv'"):
        corpus.write(_records(1), tmp_path / "c.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusReadError, match="holds no"):
        corpus.read(tmp_path / "empty")


def test_scan_is_lazy_and_checked(tmp_path):
    path = corpus.write(_records(4), tmp_path / "c.parquet")
    lf = corpus.scan(path)
    assert isinstance(lf, pl.LazyFrame)
    assert lf.filter(pl.col("chain").list.len() == 1).collect()["id"].to_list() == [_records(4)[2].id]
    pl.DataFrame({"a": [1]}).write_parquet(tmp_path / "x.parquet")
    with pytest.raises(SchemaMismatchError):
        corpus.scan(tmp_path / "x.parquet")
