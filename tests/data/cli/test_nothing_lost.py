"""Issue 27 ("nothing lost, ever"), items 1, 3, 6 and 7, each reproduced through the real command line first:

1. a corpus mined without images gets the same statuses from ``virl-data verify`` as from ``virl-data run`` (image
   checks skipped, and said so), where verify used to reject every record as ``image_missing``;
3. an empty input is an error and leaves an existing output as it was (mine, score, queue);
6. ``virl-train sft`` checks ``--lr`` / ``--batch-size`` as a config's numbers are checked, before any run folder;
7. an absurd image size in an annotation is a named ``mining`` rejection, not an ``OverflowError``.
"""

from __future__ import annotations

import json
import shutil

import polars as pl
import pytest
from typer.testing import CliRunner

from tests.conftest import SHARED_DATA, make_record
from virl_data.storage import corpus
from virl_data.cli import app as data_app
from virl_data.engines.pipeline import run_pipeline

REFCOCO = SHARED_DATA / "refcoco" / "REC_refcoco_unc_val.head40.jsonl"
runner = CliRunner()


def data(*args):
    return runner.invoke(data_app, [str(a) for a in args], prog_name="virl-data")


def train(*args):
    from virl_train.cli import app as train_app

    return runner.invoke(train_app, [str(a) for a in args], prog_name="virl-train")


def one_error(res, *needles):
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.exit_code == 2, res.output
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


# --- 1. verify and run: one rule for a corpus without images ---------------------------------------------------------
def test_verify_and_run_agree_on_a_corpus_mined_without_images(tmp_path):
    mined = tmp_path / "m.parquet"
    assert data("mine", "refcoco", "--refs", REFCOCO, "--out", mined).exit_code == 0
    res = data("verify", mined, "--out", tmp_path / "v.parquet")
    assert res.exit_code == 0, res.output
    assert "image_readable skipped on 40 records" in " ".join(res.output.split())
    (tmp_path / "p.yaml").write_text(f"name: r\nsource:\n  miner: refcoco\n  options:\n    refs: {REFCOCO}\n")
    report = run_pipeline(tmp_path / "p.yaml", out=tmp_path / "run")
    assert "image_readable skipped on 40" in report.stage("verify").detail
    by_cli = corpus.read(tmp_path / "v.parquet").select("id", "status").sort("id")
    by_run = corpus.read(tmp_path / "run" / "corpus" / "verified.parquet").select("id", "status").sort("id")
    assert by_cli.equals(by_run) and by_cli["status"].unique().to_list() == ["accepted"]


def test_an_undeclared_root_stays_undeclared_through_curation(tmp_path):
    mined = tmp_path / "m.parquet"
    data("mine", "refcoco", "--refs", REFCOCO, "--out", mined)
    assert data("filter", mined, "--where", "pl.lit(True)", "--out", tmp_path / "f.parquet").exit_code == 0
    assert corpus.declared_image_root(tmp_path / "f.parquet") is None
    res = data("verify", tmp_path / "f.parquet", "--out", tmp_path / "v.parquet")
    assert corpus.read(tmp_path / "v.parquet")["status"].unique().to_list() == ["accepted"], res.output
    # given a root, the images are checked (and these are absent): the rule is about the root, not the miner
    res = data("verify", mined, "--out", tmp_path / "v2.parquet", "--image-root", tmp_path)
    assert corpus.read(tmp_path / "v2.parquet")["status"].unique().to_list() == ["rejected"], res.output


# --- 3. empty inputs -------------------------------------------------------------------------------------------------
def test_mining_an_empty_file_keeps_the_corpus(tmp_path):
    good = tmp_path / "m.parquet"
    data("mine", "refcoco", "--refs", REFCOCO, "--out", good)
    before = good.read_bytes()
    (tmp_path / "empty.jsonl").write_text("")
    one_error(data("mine", "refcoco", "--refs", tmp_path / "empty.jsonl", "--out", good), "mined 0", "left as it was")
    assert good.read_bytes() == before
    one_error(data("mine", "viscot", "--annotations", tmp_path / "empty.jsonl", "--out", tmp_path / "new.parquet"))
    assert not (tmp_path / "new.parquet").exists()


def test_a_pipeline_over_an_empty_source_is_an_error(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "p.yaml").write_text("name: e\nsource:\n  miner: refcoco\n  options:\n    refs: empty.jsonl\n")
    one_error(data("run", tmp_path / "p.yaml", "--out", tmp_path / "run"), "no records")
    assert not (tmp_path / "run" / "corpus").exists()


def test_score_and_queue_refuse_an_empty_log(tmp_path):
    (tmp_path / "T.jsonl").write_text("")
    good = tmp_path / "scored.jsonl"
    good.write_text('{"id": "kept"}\n')
    one_error(train("score", tmp_path / "T.jsonl", "-o", good), "no trajectories")
    assert good.read_text() == '{"id": "kept"}\n'
    one_error(train("score", tmp_path / "T.jsonl"), "no trajectories")  # to stdout: no mean of 0.000
    corpus.write([make_record(0)], tmp_path / "c.parquet")
    one_error(data("queue", tmp_path / "T.jsonl", "--corpus", tmp_path / "c.parquet", "--out", good), "no episodes")
    assert good.read_text() == '{"id": "kept"}\n'


# --- 6. sft's command-line numbers -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("option", "value", "needle"), [
    ("--batch-size", "0", "batch_size: must be >= 1"), ("--batch-size", "-4", "batch_size: must be >= 1"),
    ("--lr", "-1", "lr: must be >= 0"), ("--lr", "nan", "lr: must be a finite number"),
    ("--lr", "inf", "lr: must be a finite number"),
])
def test_sft_checks_its_numbers_before_the_run_folder(tmp_path, option, value, needle):
    run = tmp_path / "run"
    one_error(train("sft", "--steps", "1", option, value, "--out", run, f"data.path={tmp_path}/absent"), needle)
    assert not run.exists()


def test_the_config_refuses_non_finite_numbers_as_sft_does():
    from virl_data.core.errors import ConfigError
    from virl_train.config import load_config

    with pytest.raises(ConfigError, match="optim.lr: must be a finite number"):
        load_config(None, ["optim.lr=nan"])


# --- 7. absurd image sizes -------------------------------------------------------------------------------------------
def _refcoco_line(**changes):
    line = json.loads(REFCOCO.read_text().splitlines()[0])
    return json.dumps({**line, **changes})


@pytest.mark.parametrize("width", [10**30, 1e30, 1e300, 2**31, 2**64], ids=["1e30-int", "1e30", "1e300", "2^31", "2^64"])
def test_a_huge_image_size_is_a_named_rejection(tmp_path, width):
    src = tmp_path / "huge.jsonl"
    src.write_text(_refcoco_line(width=width) + "\n")
    res = data("mine", "refcoco", "--refs", src, "--out", tmp_path / "m.parquet")
    assert res.exit_code == 0, res.output
    checks = corpus.read(tmp_path / "m.parquet")["checks"].to_list()[0]
    assert [c["reason"].split(":")[0] for c in checks] == ["image_size_out_of_range"]


def test_a_size_past_a_double_is_one_error_line(tmp_path):
    src = tmp_path / "huge.jsonl"
    src.write_text(_refcoco_line(width=10**400) + "\n")  # not even JSON a parser can hold: the file is refused
    one_error(data("mine", "refcoco", "--refs", src, "--out", tmp_path / "m.parquet"), "line 1 is not valid JSON")


def test_huge_sizes_in_every_sized_miner(tmp_path):
    from virl_data.miners import coco, gqa, treebench, viscot

    huge = 10**30
    sg = {"1": {"width": huge, "height": 10, "objects": {"5": {"name": "cat", "x": 1, "y": 1, "w": 4, "h": 4}}}}
    q = {"q1": {"imageId": "1", "question": "What is it?", "answer": "cat", "semantic": [
        {"operation": "select", "dependencies": [], "argument": "cat (5)"}], "annotations": {"answer": {}}}}
    (tmp_path / "sg.json").write_text(json.dumps(sg))
    (tmp_path / "q.json").write_text(json.dumps(q))
    reasons = [c.reason for r in gqa.mine(questions=tmp_path / "q.json", scene_graphs=tmp_path / "sg.json")
               for c in r.checks]
    assert any(r.startswith("image_size_out_of_range") for r in reasons), reasons
    inst = {"images": [{"id": 1, "file_name": "1.jpg", "width": float("1e30"), "height": 10}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4]},
                            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [5, 1, 4, 4]}],
            "categories": [{"id": 1, "name": "cat"}]}
    (tmp_path / "i.json").write_text(json.dumps(inst))
    records = list(coco.mine(instances=tmp_path / "i.json"))
    assert records and all(r.status.value == "rejected" for r in records)
    tb = {"index": 1, "image": "a.jpg", "width": huge, "height": 10, "question": "Q?", "options": ["a", "b"],
          "answer": "A", "bbox": [[1, 1, 4, 4]]}
    (tmp_path / "t.jsonl").write_text(json.dumps(tb) + "\n")
    for r in treebench.mine(annotations=tmp_path / "t.jsonl"):
        assert any(c.reason.startswith("image_size_out_of_range") for c in r.checks), r.checks
    vc = {"question": "Q?", "answer": "a", "image": "X.jpg", "width": huge, "height": 10, "bboxs": [[1, 1, 4, 4]],
          "dataset": "sroie", "split": "train"}
    (tmp_path / "v.jsonl").write_text(json.dumps(vc) + "\n")
    for r in viscot.mine(annotations=tmp_path / "v.jsonl"):
        assert any(c.reason.startswith("image_size_out_of_range") for c in r.checks), r.checks


def test_the_real_sample_still_mines_whole(tmp_path):
    shutil.copy(REFCOCO, tmp_path / "r.jsonl")
    res = data("mine", "refcoco", "--refs", tmp_path / "r.jsonl", "--out", tmp_path / "m.parquet")
    assert res.exit_code == 0 and corpus.read(tmp_path / "m.parquet").filter(pl.col("status") == "rejected").height == 0


def test_check_field_examples_hold():
    import doctest

    from virl_train import config

    assert doctest.testmod(config).failed == 0
