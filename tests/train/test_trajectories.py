"""virl_train.trajectories and virl_train.metrics, without a model: the logged line scores back to its own reward,
one meaning per action metric in the training log and the eval report (the log format itself:
tests/data/storage/test_trajectories.py)."""

from __future__ import annotations

import doctest

import pytest

from tests.conftest import make_record
from virl_data.core.types import Box
from virl_train import metrics as metrics_mod
from virl_train import trajectories as traj_mod
from virl_train.eval import grounding_metrics
from virl_train.rewards import RewardConfig, score_record
from virl_train.score import score_file, score_line
from virl_train.trajectories import TrajectoryError, TrajectoryLog, parse_line, read_trajectories, trajectory_row
from virl_train.types import Action, ActionKind, Episode

SIZE = (100, 80)
CHAIN = [[(10, 10, 30, 30)], [(40, 20, 60, 50), (70, 10, 90, 30)]]


def _episodes():
    """ep0: a hit on step 0, then the right answer; ep1: garbage, a crop on nothing, wrong; ep2: garbage only."""
    recs = [make_record(i, chain=CHAIN, size=SIZE) for i in range(3)]
    eps = [
        Episode(recs[0].id, actions=(Action(0, ActionKind.CROP, box=Box(10.25, 10, 30, 29.5), raw="<crop>…"),
                                     Action(1, ActionKind.ANSWER, answer="red")), answer="red", n_turns=2),
        Episode(recs[1].id, actions=(Action(0, ActionKind.INVALID, error="no_action", raw="blah"),
                                     Action(1, ActionKind.CROP, box=Box(0, 60, 8, 79))), answer="blue", n_turns=3),
        Episode(recs[2].id, actions=(Action(0, ActionKind.INVALID, error="no_action"),), n_turns=1,
                format_ok=False),
    ]  # fmt: skip
    return eps, recs


def _rows(cfg: RewardConfig):
    eps, recs = _episodes()
    return [
        trajectory_row(ep, rec, score_record(ep, rec, cfg), cfg, source="train", step=1, group=i // 2, sample=i % 2,
                       turns=[f"turn {i}"])
        for i, (ep, rec) in enumerate(zip(eps, recs))
    ]


def test_logged_line_rescored_under_its_config_gives_its_reward_exactly(tmp_path):
    cfg = RewardConfig.preset("full")
    rows = _rows(cfg)
    log = TrajectoryLog(tmp_path / "t.jsonl")
    log.write(rows)
    log.close()
    for row, t in zip(rows, read_trajectories(tmp_path / "t.jsonl")):
        out = score_line(t, cfg)
        for key in ("total", "components", "labels", "config"):
            assert out[key] == row["reward"][key], key  # exact, not approx: same code, same floats
        assert (out["id"], out["step"], out["group"], out["sample"]) == (row["id"], 1, row["group"], row["sample"])
        assert out["logged_total"] == row["reward"]["total"]
    assert rows[0]["actions"] == [[10.25, 10.0, 30.0, 29.5]] and rows[1]["actions"] == [None, [0.0, 60.0, 8.0, 79.0]]
    assert rows[1]["action_errors"] == ["no_action", None] and rows[2]["format_ok"] is False
    assert [lab["kind"] for lab in rows[1]["reward"]["labels"]] == ["erroneous", "erroneous"]


def test_rescoring_under_another_preset_reports_what_changed(tmp_path):
    path = tmp_path / "t.jsonl"
    traj_mod.write_trajectories(path, _rows(RewardConfig.preset("full")))
    with (tmp_path / "same.jsonl").open("wb") as fh:
        same = score_file(path, RewardConfig.preset("full"), fh)
    with (tmp_path / "outcome.jsonl").open("wb") as fh:
        other = score_file(path, RewardConfig.preset("outcome"), fh)
    assert (same.n, same.n_logged, same.n_changed) == (3, 3, 0) and same.mean_total == same.mean_logged
    # ep0 right with a hit: 1 + ½·R_rat under full, 1.0 under outcome; the wrong / unanswered ones do not change
    assert other.n_changed == 1 and other.mean_total < other.mean_logged
    assert "1 of 3 totals changed" in other.describe()


def test_version_and_origin_fields_are_checked():
    row = _rows(RewardConfig.preset("full"))[0]
    assert parse_line(row, "t.jsonl", 1).logged == row["reward"]
    with pytest.raises(TrajectoryError, match="t.jsonl:4: trajectory format version 2"):
        parse_line({**row, "version": 2}, "t.jsonl", 4)
    with pytest.raises(TrajectoryError, match="'step' must be an integer"):
        parse_line({**row, "step": "one"}, "t.jsonl", 1)
    with pytest.raises(TrajectoryError, match="'reward' must be an object"):
        parse_line({**row, "reward": 1.0}, "t.jsonl", 1)


def test_train_log_and_eval_report_give_the_same_action_metrics():
    """One meaning per name: ``actions/<name>`` of the training log == ``<name>`` of the eval report."""
    from virl_train.train import rollout_metrics

    class _Rollout:  # what rollout_metrics reads of a rollout.Rollout
        def __init__(self, episode):
            self.episode = episode

    eps, recs = _episodes()
    cfg = RewardConfig.preset("full")
    train_m = rollout_metrics([_Rollout(e) for e in eps], [score_record(e, r, cfg) for e, r in zip(eps, recs)])
    eval_m = grounding_metrics(eps, recs, cfg)
    names = ("tool_use_rate", "invalid_rate", "correct_rate", "redundant_rate", "erroneous_rate",
             "actions_per_episode", "crops_per_episode")
    for name in names:
        assert train_m[f"actions/{name}"] == eval_m[name], name
    # hand-computed: crops in ep0 and ep1 (2 of 3 episodes); 2 invalid of 4 visual actions
    assert eval_m["tool_use_rate"] == pytest.approx(2 / 3) and eval_m["invalid_rate"] == 0.5
    assert eval_m["correct_rate"] == 0.25 and eval_m["actions_per_episode"] == pytest.approx(4 / 3)


def test_a_policy_that_never_crops_has_zero_tool_use_and_full_invalid_rate():
    rec = make_record(0, chain=CHAIN, size=SIZE)
    eps = [Episode(rec.id, actions=(Action(0, ActionKind.INVALID, error="no_action"),) * 2, n_turns=2)] * 2
    m = metrics_mod.action_metrics(eps, [score_record(e, rec) for e in eps])
    assert m["tool_use_rate"] == 0.0 and m["invalid_rate"] == 1.0 and m["actions_per_episode"] == 2.0
    assert metrics_mod.action_metrics([], [])["tool_use_rate"] == 0.0


def test_docstring_examples():
    for module in (traj_mod, metrics_mod):
        assert doctest.testmod(module).failed == 0, module.__name__
