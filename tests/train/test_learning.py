"""benchmarks/learning.py, shortened: the whole ablation path (task → SFT → RL per preset → eval → JSON/PNG) runs and
reports finite numbers; the presets really differ on a trajectory with a wrong crop."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("accelerate")

from virl_data.core.types import Box  # noqa: E402
from virl_train.config import load_config  # noqa: E402
from virl_train.rewards import RewardConfig, score_record  # noqa: E402
from virl_train.train import reward_config  # noqa: E402
from virl_train.types import Action, ActionKind, Episode, LabelKind  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def _learning():
    spec = importlib.util.spec_from_file_location("learning_bench", REPO / "benchmarks" / "learning.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def learning():
    return _learning()


@pytest.fixture(scope="module")
def task(learning, tmp_path_factory):
    return learning.build_task(tmp_path_factory.mktemp("task"), 60)


def test_the_task_is_small_two_step_at_most_and_on_a_grid(task):
    from virl_train.data import load_split

    records = load_split(task, "train")
    assert len(records) >= 30
    assert {len(r.chain) for r in records} <= {1, 2} and all((r.image.width, r.image.height) == (112, 112)
                                                              for r in records)
    centres = {((b.x1 + b.x2) / 2, (b.y1 + b.y2) / 2) for r in records for s in r.chain for b in s.boxes}
    assert all(abs(cx - 28) <= 1 or abs(cx - 84) <= 1 for cx, _ in centres)  # one shape per 56-px cell


def test_full_virl_and_outcome_only_score_a_wrong_crop_differently(task):
    from virl_train.data import load_split

    record = next(r for r in load_split(task, "train") if len(r.chain) == 1)
    gt = record.chain[0].boxes[0]
    w, h = record.image.width, record.image.height
    # a crop of the same size in the diagonally opposite cell: no overlap with the rationale, answer still right
    wrong = Box(w - gt.x2, h - gt.y2, w - gt.x1, h - gt.y1)
    episode = Episode(record.id, actions=(Action(0, ActionKind.CROP, box=wrong), Action(1, ActionKind.ANSWER,
                      answer=record.answer)), answer=record.answer, n_turns=2)
    right = Episode(record.id, actions=(Action(0, ActionKind.CROP, box=gt), Action(1, ActionKind.ANSWER,
                    answer=record.answer)), answer=record.answer, n_turns=2)
    cfg = load_config(REPO / "configs" / "shapes_learn.yaml")
    outcome = RewardConfig.preset("outcome")
    full = reward_config(cfg)  # the config's preset: full
    assert cfg.rewards.preset == "full"
    o_wrong, f_wrong = score_record(episode, record, outcome), score_record(episode, record, full)
    o_right, f_right = score_record(right, record, outcome), score_record(right, record, full)
    assert o_wrong.total == o_right.total  # outcome-only cannot tell where the model looked
    assert f_wrong.total < f_right.total  # full ViRL ranks the looked-at-the-right-place trajectory higher
    # the wrong crop's own reward: a negative step credit under full ViRL (its tokens get a negative per-action
    # advantage), none under outcome-only (its tokens only share the trajectory's advantage)
    assert f_wrong.per_action != o_wrong.per_action and all(c == 0 for c in o_wrong.per_action)
    assert [lab.kind for lab in f_wrong.labels] == [LabelKind.ERRONEOUS] and f_wrong.per_action[0] < 0
    assert [lab.kind for lab in f_right.labels] == [LabelKind.CORRECT] and f_right.per_action[0] > 0


def test_the_benchmarks_offer_exactly_the_sft_decoy_kinds(learning):
    from virl_train.sft import DECOY_KINDS

    assert learning.SFT_DECOY_KINDS == DECOY_KINDS


def test_a_whole_image_crop_is_erroneous_under_the_ablation_config_and_correct_under_the_default_tau_err(task):
    from virl_train.data import load_split

    record = next(r for r in load_split(task, "train") if len(r.chain) == 1)
    whole = Box(0, 0, record.image.width, record.image.height)
    episode = Episode(record.id, actions=(Action(0, ActionKind.CROP, box=whole), Action(1, ActionKind.ANSWER,
                      answer=record.answer)), answer=record.answer, n_turns=2)
    ablation = reward_config(load_config(REPO / "configs" / "ablation.yaml"))
    assert ablation.credit and ablation.match.tau_err == 0.3
    scored = score_record(episode, record, ablation)
    assert 0.1 < scored.labels[0].fidelity < 0.3  # a chain box is ~40 % of the side: the whole image is at IoU ~0.2
    assert scored.labels[0].kind == LabelKind.ERRONEOUS
    assert scored.per_action[0] < 0
    default = score_record(episode, record, RewardConfig.preset("full"))
    assert default.labels[0].kind == LabelKind.CORRECT and default.per_action[0] > 0


def test_a_shortened_ablation_runs_end_to_end_with_finite_numbers(learning, task, tmp_path):
    import sys

    sys.path.insert(0, str(Path(learning.__file__).parent))
    import learning as bench  # by its own name: the --jobs worker processes import it so

    out_json, out_png = tmp_path / "ablation.json", tmp_path / "ablation.png"
    args = ["--work", str(tmp_path / "work"), "--records", "60", "--sft-steps", "3", "--rl-steps", "2",
            "--seeds", "0", "1", "--variants", "outcome", "full", "--eval-split", "train", "--eval-n", "3",
            "--threads", "2", "--jobs", "2", "--json", str(out_json), "--png", str(out_png), "--family", "idefics3",
            "--sft-decoys", "0.5", "--sft-seed", "3", "--set", "model.tiny_size=small", "grpo.batch_size=2", "grpo.group_size=2",
            "grpo.max_new_tokens=10"]
    assert bench.main(args) == 0  # 0 = every metric and curve value finite
    result = json.loads(out_json.read_text())
    assert result["family"] == "idefics3" and result["task"]["records"] == 60 and result["jobs"] == 2
    assert result["sft_decoys"] == 0.5 and json.loads((tmp_path / "work" / "sft" / "sft.json").read_text())["decoys"] == 0.5
    assert result["sft"]["trained"]["decoys"] == 0.5 and result["sft"]["trained"]["steps"] == 3  # how the start was made
    assert result["sft_seed"] == 3 and result["sft"]["trained"]["seed"] == 3
    assert result["task"]["name"] in bench.TASKS and result["task"]["shapes"]["max_shapes"] >= 1
    sight = result["sft"]["sight"]  # the "can it see" probe of the SFT start
    assert set(sight) >= {"pixels", "constant", "gain", "can_see"} and sight["n_records"] == 3
    assert set(result["variants"]) == {"outcome", "full"} and result["seeds"] == [0, 1] and result["rl_steps"] == 2
    for v in result["variants"].values():
        assert v["steps"] == 2 and v["seeds"] == [0, 1] and v["wall_s"] > 0
        for key in learning.METRICS:
            m = v["metrics"][key]
            assert len(m["per_seed"]) == 2 and math.isfinite(m["mean"]) and math.isfinite(m["std"])
        assert all(len(c) == 2 and all(math.isfinite(x) for x in c) for c in v["curves"].values())
    assert set(result["goal"]) >= {"full_iou", "outcome_iou", "margin"}
    assert "| (d) full ViRL" in result["markdown"] and out_png.stat().st_size > 0


def test_the_preset_cannot_be_overridden_behind_the_ablation(learning):
    with pytest.raises(SystemExit):
        learning.main(["--set", "rewards.preset=outcome"])


def test_the_process_only_sanity_check_runs_and_reports_the_rise(learning, task, tmp_path):
    import sys

    sys.path.insert(0, str(Path(learning.__file__).parent))
    import sanity

    out = tmp_path / "sanity.json"
    assert sanity.main(["--work", str(tmp_path / "work"), "--records", "60", "--sft-steps", "2", "--rl-steps", "4",
                        "--eval-split", "train", "--eval-n", "2", "--json", str(out), "--family", "qwen3_vl",
                        "--sft-seed", "5", "--set", "model.tiny_size=small", "grpo.batch_size=2", "grpo.group_size=2",
                        "grpo.max_new_tokens=10"]) == 0
    result = json.loads(out.read_text())
    curve = result["rl"]["curves"]["diag/crop_iou"]
    assert len(curve) == 4 and result["rise"] == pytest.approx(sanity.rise(curve))
    assert result["passes"] == (result["rise"] >= 0.1) and result["rl"]["preset"] == "rationale"
    assert result["sft"]["trained"]["seed"] == 5 and result["sft"]["trained"]["steps"] == 2  # how the start was made
    assert result["rl"]["config"]["rewards"]["preset"] == "rationale"  # R_rat alone
    assert set(result["sft"]["sight"]["pixels"]) == set(result["rl"]["sight_after"]["constant"])
    assert sanity.rise([0.0, 0.0, 0.5, 0.5], window=2) == 0.5


def test_the_goal_check_needs_a_start_that_sees_and_a_margin_beyond_the_seed_noise(learning):
    def summary(full, outcome):
        return {name: {"metrics": {"rationale": {"mean": statistics.fmean(v), "std": statistics.stdev(v),
                                                 "per_seed": v}}} for name, v in (("full", full), ("outcome", outcome))}

    import statistics

    sees, blind = {"pixels": {"hit_rate@0.5": 0.7}}, {"pixels": {"hit_rate@0.5": 0.45}}
    clear = summary([0.60, 0.62, 0.61], [0.45, 0.47, 0.46])
    assert learning.goal_check(clear, sees)["met"] is True
    assert learning.goal_check(clear, blind)["met"] is False  # the start cannot see: the goal is not met
    noisy = summary([0.75, 0.45, 0.63], [0.40, 0.62, 0.48])  # margin ≥ 0.1 but within the seed-to-seed spread
    goal = learning.goal_check(noisy, sees)
    assert goal["full_beats_outcome_by_0.1"] and not goal["margin_over_2_std"] and goal["met"] is False
    assert learning.goal_check(summary([0.45, 0.46, 0.47], [0.30, 0.31, 0.32]), sees)["full_reaches_0.5"] is False
