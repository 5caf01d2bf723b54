"""virl_train.score and ``virl-train score``: same numbers as score_episode, one output line per input, clear errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from virl_data.core.types import Box
from virl_train.cli import app
from virl_train.rewards import RewardConfig, score_episode
from virl_train.score import TrajectoryError, read_trajectories, score_line

LINES = [
    {
        "id": "hit",
        "image_size": [100, 100],
        "rationale": [[[0, 0, 10, 10]], [[50, 50, 60, 60], [55, 55, 70, 70]]],
        "actions": [[0, 0, 10, 10], [0, 0, 10, 10], None],
        "answer": "Red.",
        "gt_answer": "red",
    },
    {
        "id": "mc",
        "image_size": [640, 480],
        "rationale": [[[100, 100, 200, 200]]],
        "actions": [],
        "answer": "(B)",
        "gt_answer": "cat",
        "options": ["dog", "cat"],
    },
]


def write(tmp_path, lines, name="traj.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def test_score_line_equals_score_episode(tmp_path):
    cfg = RewardConfig.preset("full")
    t = next(read_trajectories(write(tmp_path, LINES[:1])))
    out = score_line(t, cfg)
    chain = [[Box(0, 0, 10, 10)], [Box(50, 50, 60, 60), Box(55, 55, 70, 70)]]
    acts = [Box(0, 0, 10, 10), Box(0, 0, 10, 10), None]
    ref = score_episode(acts, "Red.", chain, "red", image_size=(100, 100), cfg=cfg)
    assert out["total"] == pytest.approx(ref.total)
    assert [lab["kind"] for lab in out["labels"]] == ["correct", "redundant", "erroneous"]
    assert [lab["credit"] for lab in out["labels"]] == pytest.approx(list(ref.per_action))
    assert out["config"]["match"]["tau_err"] == 0.1


def test_cli_score_writes_one_line_per_input(tmp_path):
    src, dst = write(tmp_path, LINES), tmp_path / "out" / "scored.jsonl"
    res = CliRunner().invoke(app, ["score", str(src), "--preset", "outcome", "--out", str(dst)])
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in dst.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["hit", "mc"]
    # outcome: R_acc + 0.2·R_fmt (a null action = −1) and no credits
    assert rows[0]["total"] == pytest.approx(0.8) and rows[1]["total"] == 1.0
    assert rows[0]["config"]["gate"] == "none"
    assert [lab["credit"] for lab in rows[0]["labels"]] == [0.0, 0.0, 0.0]
    assert rows[0]["components"]["format"] == -1.0 and rows[1]["components"]["rationale"] == 0.0


def test_cli_score_stdout_and_params(tmp_path):
    src = write(tmp_path, LINES[:1])
    res = CliRunner().invoke(app, ["score", str(src), "--param", "tau_dup=1.5", "-p", "match.overlap=coverage"])
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout.strip())
    assert row["config"]["match"]["overlap"] == "coverage"
    assert row["labels"][1]["reason"] == "no_coverage_gain"  # no longer a duplicate with τ_dup > 1


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({**LINES[0], "image_size": [0, 10]}), "image_size"),
        (json.dumps({k: v for k, v in LINES[0].items() if k != "gt_answer"}), "missing field(s) gt_answer"),
        (json.dumps({**LINES[0], "actions": [[1, 2, 3]]}), "action 0"),
        (json.dumps({**LINES[0], "rationale": []}), "rationale"),
        (json.dumps({**LINES[0], "rationale": [[[5, 5, 1, 1]]]}), "empty box"),
        (json.dumps({**LINES[0], "options": "AB"}), "options"),
    ],
)
def test_malformed_line_names_the_line(tmp_path, bad, message):
    src = write(tmp_path, [LINES[0], "", bad])
    with pytest.raises(TrajectoryError, match=rf"traj.jsonl:3: .*{message[:12]}"):
        list(read_trajectories(src))
    dst = tmp_path / "o.jsonl"
    res = CliRunner().invoke(app, ["score", str(src), "--out", str(dst)])
    assert res.exit_code == 2
    assert "traj.jsonl:3" in res.output and "Traceback" not in res.output
    assert not dst.exists()  # nothing half-written


def test_cli_bad_preset_and_missing_file(tmp_path):
    src = write(tmp_path, LINES)
    assert CliRunner().invoke(app, ["score", str(src), "--preset", "best"]).exit_code == 2
    assert CliRunner().invoke(app, ["score", str(src), "-p", "tau_err"]).exit_code == 2
    assert CliRunner().invoke(app, ["score", str(tmp_path / "nope.jsonl")]).exit_code == 2
