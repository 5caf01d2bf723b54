"""Before / after a review: two eval reports compared (``virl_train.compare``, ``virl-train compare``).

End to end with the tiny random model: a demo corpus with corrupted chains is exported and trained on, the corrupted
records are reviewed back to their true chains, the reviewed corpus is exported and trained on with the same config
and seed, both are evaluated, and the CLI lines them up. The figures are those of a tiny random model: the test checks
the machinery (same config, real metrics read from both reports), not that the review helped.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from virl_train.compare import CompareError, compare_reports, config_differences

REPO = Path(__file__).resolve().parents[2]


def _report(acc, rat, probe_acc, **train):
    cfg = {"train": {"run": {"seed": 0, "out_dir": "x"}, "data": {"path": "p"}, **train}, "eval": {"seed": 0}}
    return {"metrics": {"accuracy": acc, "rationale": rat, "rationale_recall": rat, "rationale_precision": rat,
                        "hit_rate@0.5": rat}, "probe": {"accuracy": probe_acc}, "probe_drop": acc - probe_acc,
            "counts": {"n_episodes": 4}, "config": cfg}  # fmt: skip


def test_compare_lines_up_metrics_and_refuses_different_configs():
    a, b = _report(0.5, 0.25, 0.25), _report(0.75, 0.5, 0.5)
    b["config"]["train"]["run"]["out_dir"], b["config"]["train"]["data"]["path"] = "y", "q"  # ignored keys
    rows = {r.metric: (r.before, r.after, r.delta) for r in compare_reports(a, b).rows}
    assert rows["accuracy"] == (0.5, 0.75, 0.25) and rows["rationale"] == (0.25, 0.5, 0.25)
    assert rows["probe_accuracy"] == (0.25, 0.5, 0.25) and rows["probe_drop"] == (0.25, 0.25, 0.0)
    assert rows["n_episodes"] == (4, 4, 0)
    c = _report(0.75, 0.5, 0.5, grpo={"lr": 1e-5})
    assert config_differences(a, c) == ["train.grpo.lr"]
    with pytest.raises(CompareError, match=r"differ in config \(train.grpo.lr\)"):
        compare_reports(a, c)
    assert compare_reports(a, c, allow_config_diff=True).differences == ["train.grpo.lr"]


@pytest.mark.usefixtures("one_thread")
def test_retrain_on_the_reviewed_split_beside_the_first_one(tmp_path):
    pytest.importorskip("torch")
    from typer.testing import CliRunner

    from virl_data.storage import corpus
    from virl_data import export
    from virl_data.review.corrupt import corrupt_chains
    from virl_data.engines.pipeline import run_demo
    from virl_data.review.merge import merge_reviews, ReviewEdit
    from virl_data.core.types import Review
    from virl_train.cli import app

    paths = run_demo(tmp_path / "demo", n=24, image_size=64, console=Console(quiet=True))
    truth = corpus.read_records(paths["split corpus"])
    bad, kinds = corrupt_chains(truth, fraction=0.25, seed=0)
    fixes = [ReviewEdit(t.id, Review(tool="fiftyone", reviewer="r", at="t", verdict="fix", chain=t.chain))
             for t in truth if t.id in kinds]  # fmt: skip
    reviewed, report = merge_reviews(bad, fixes)
    assert report.applied == len(kinds) > 0
    runner, common = CliRunner(), ["grpo.max_new_tokens=8", "env.max_actions=1", "data.limit=4", "run.seed=0"]
    for name, records in (("before", bad), ("after", reviewed)):
        frame = corpus.read(corpus.write(records, tmp_path / f"{name}.parquet", image_root=paths["images"]))
        export.export(frame, tmp_path / name / "hf", "hf", image_root=paths["images"])
        args = [f"data.path={tmp_path / name / 'hf'}", f"run.out_dir={tmp_path / name / 'run'}", *common]
        cfg = str(REPO / "configs" / "tiny_cpu.yaml")
        res = runner.invoke(app, ["train", "--config", cfg, *args, "run.max_steps=1"])
        assert res.exit_code == 0, res.output
        res = runner.invoke(app, ["eval", "--config", cfg, *args, "--checkpoint", str(tmp_path / name / "run"),
                                  "--split", "train", "--limit", "3"])  # fmt: skip
        assert res.exit_code == 0, res.output
    # the real eval's trajectory log is what virl-data queue reads (torch-free reader, same format)
    from virl_data.cli import app as data_app
    from virl_data.review.queue import read_queue

    traj = tmp_path / "before" / "run" / "eval" / "trajectories.jsonl"
    res = runner.invoke(data_app, ["queue", str(traj), "--corpus", str(tmp_path / "before.parquet"),
                                   "--out", str(tmp_path / "queue.jsonl")])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "3 episodes read" in res.output and "episode ids not in the corpus: 0" in res.output
    assert all(e.n_episodes in (0, 1) for e in read_queue(tmp_path / "queue.jsonl"))
    out = tmp_path / "compare.json"
    res = runner.invoke(app, ["compare", str(tmp_path / "before" / "run" / "eval"),
                              str(tmp_path / "after" / "run" / "eval"), "--json", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    print(res.output)
    assert "rationale" in res.output and "probe_drop" in res.output
    got = json.loads(out.read_text())
    assert got["config_differences"] == []
    rows = {r["metric"]: r for r in got["rows"]}
    for name in ("before", "after"):
        ev = json.loads((tmp_path / name / "run" / "eval" / "eval.json").read_text())
        assert rows["accuracy"][name] == ev["metrics"]["accuracy"]
        assert rows["rationale"][name] == ev["metrics"]["rationale"]
        assert rows["probe_drop"][name] == ev["probe_drop"]
    res = runner.invoke(app, ["compare", str(tmp_path / "before" / "run" / "eval"), str(tmp_path / "nowhere")])
    assert res.exit_code == 2 and "error:" in res.output
