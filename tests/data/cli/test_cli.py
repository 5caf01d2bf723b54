"""The `virl-data` command line end to end on the demo world, and its one-line errors on bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import datasets
import polars as pl
import pytest
from typer.testing import CliRunner

from tests.conftest import make_record
from virl_data.cli import app
from virl_data.storage import corpus

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    result = invoke("demo", "--out", out, "--n", 80, "--image-size", 96)
    assert result.exit_code == 0, result.output
    return out


def test_demo_writes_every_stage_and_prints_paths(demo_dir):
    for rel in ("corpus/mined.parquet", "corpus/verified.parquet", "corpus/split.parquet",
                "reports/stats.json", "reports/stats.png", "export/hf"):
        assert (demo_dir / rel).exists(), rel
    verified = corpus.read(demo_dir / "corpus" / "verified.parquet")
    assert verified.height == 80
    assert set(verified["status"]) <= {"accepted", "rejected"}
    ds = datasets.load_from_disk(str(demo_dir / "export" / "hf"))
    assert set(ds) == {"train", "val", "test"}
    n_accepted = int((verified["status"] == "accepted").sum())
    assert sum(len(ds[s]) for s in ds) == n_accepted
    stats = json.loads((demo_dir / "reports" / "stats.json").read_text())
    assert stats["total"] == 80


def test_verify_stats_filter_split_export_chain(demo_dir, tmp_path):
    mined = demo_dir / "corpus" / "mined.parquet"
    r = invoke("verify", mined, "--out", tmp_path / "v.parquet")
    assert r.exit_code == 0 and "accepted" in r.output
    assert corpus.image_root(tmp_path / "v.parquet") == demo_dir / "images"

    r = invoke("stats", tmp_path / "v.parquet", "--plot", tmp_path / "s.png", "--json", tmp_path / "s.json")
    assert r.exit_code == 0 and (tmp_path / "s.png").stat().st_size > 0
    assert json.loads((tmp_path / "s.json").read_text())["total"] == 80

    r = invoke("filter", tmp_path / "v.parquet", "--where", "pl.col('n_steps') >= 2", "--out", tmp_path / "f.parquet")
    assert r.exit_code == 0, r.output
    kept = corpus.read(tmp_path / "f.parquet")
    assert kept.height > 0 and kept["chain"].list.len().min() >= 2

    r = invoke("split", tmp_path / "v.parquet", "--out", tmp_path / "sp.parquet", "--seed", 3)
    assert r.exit_code == 0, r.output
    split = corpus.read(tmp_path / "sp.parquet")
    per_image = split.filter(pl.col("split").is_not_null()).group_by(pl.col("image").struct.field("path")).agg(
        pl.col("split").n_unique()
    )
    assert per_image["split"].max() == 1

    for fmt in ("parquet", "jsonl", "coco", "hf"):
        r = invoke("export", tmp_path / "sp.parquet", "--format", fmt, "--out", tmp_path / f"exp_{fmt}")
        assert r.exit_code == 0, r.output
        assert any((tmp_path / f"exp_{fmt}").iterdir())


def test_dedup_command(demo_dir, tmp_path):
    df = corpus.read(demo_dir / "corpus" / "mined.parquet")
    doubled = pl.concat([df, df.head(5).with_columns(pl.col("id") + "-copy")])
    src = corpus.write(doubled, tmp_path / "d.parquet", image_root=demo_dir / "images")
    r = invoke("dedup", src, "--out", tmp_path / "dd.parquet", "--removed", tmp_path / "removed.parquet")
    assert r.exit_code == 0, r.output
    assert corpus.read(tmp_path / "dd.parquet").height == df.height
    assert pl.read_parquet(tmp_path / "removed.parquet").height == 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("verify", "{tmp}/absent.parquet", "--out", "{tmp}/o.parquet"), "no such file"),
        (("stats", "{tmp}/bad.jsonl"), "malformed JSON"),
        (("verify", "{tmp}/good.parquet", "--out", "{tmp}/o.csv", "--no-images"), "unknown corpus format"),
        (("verify", "{tmp}/good.parquet", "--out", "{tmp}/o.parquet", "--outside-policy", "shrug"), "outside_policy"),
        (("filter", "{tmp}/good.parquet", "--where", "pl.col('nope') > 1", "--out", "{tmp}/o.parquet"), "nope"),
        (("split", "{tmp}/good.parquet", "--out", "{tmp}/o.parquet", "--ratios", "train=0.5,val=0.1"), "sum"),
        (("split", "{tmp}/good.parquet", "--out", "{tmp}/o.parquet", "--ratios", "train"), "NAME=FRACTION"),
        (("export", "{tmp}/good.parquet", "--format", "tfrecord", "--out", "{tmp}/e"), "tfrecord"),
    ],
)
def test_user_errors_are_one_line_exit_2(tmp_path, args, message):
    (tmp_path / "bad.jsonl").write_text('{"id": ')
    corpus.write([make_record(0)], tmp_path / "good.parquet")
    cmd = [a.format(tmp=tmp_path) for a in args]
    proc = subprocess.run([sys.executable, "-m", "virl_data.cli", *cmd], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert message.lower() in lines[0].lower()


@pytest.mark.parametrize("cmd", [[], ["demo"], ["mine", "shapes"], ["verify"], ["stats"], ["filter"], ["dedup"],
                                 ["split"], ["export"], ["schema"]])
def test_every_command_has_help(cmd):
    r = runner.invoke(app, [*cmd, "--help"])
    assert r.exit_code == 0 and "Usage" in r.output


def test_schema_command_lists_columns():
    r = invoke("schema")
    assert r.exit_code == 0 and "chain" in r.output and "schema v1" in r.output
