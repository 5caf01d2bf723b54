"""virl_train.diagnostics: hand-computed values of the pure functions, and the keys every training step logs."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace as N

import pytest

torch = pytest.importorskip("torch")

from virl_data.core.types import Box
from virl_train.diagnostics import (
    crop_iou,
    distinct_crops,
    kl_estimates,
    label_advantages,
    reward_spread,
    sampled_entropy,
    step_diagnostics,
    zero_spread_fraction,
)
from virl_train.types import Action, ActionKind, RewardBreakdown

REPO = Path(__file__).resolve().parents[2]


def _rollout(boxes=(), logprobs=(-1.0,), mask=(1,)):
    actions = tuple(Action(turn=i, kind=ActionKind.CROP, raw="", box=Box(*b)) for i, b in enumerate(boxes))
    return N(logprobs=logprobs, episode=N(loss_mask=mask, actions=actions))


def test_zero_spread_entropy_and_distinct_crops():
    assert zero_spread_fraction([1, 1, 1, 1, 0, 1, 0.5, 0.5], 2) == 0.75
    assert zero_spread_fraction([0.2, 0.3, 0.4], 3) == 0.0
    assert sampled_entropy([_rollout(logprobs=(-2.0, -9.0, 0.0), mask=(1, 0, 1)), _rollout(logprobs=None)]) == 1.0
    group_a = [_rollout([(0, 0, 10, 10)]), _rollout([(0, 0, 10.2, 10), (5, 5, 20, 20)])]  # 10.2 rounds to 10
    group_b = [_rollout([]), _rollout([(1, 1, 9, 9)])]
    assert distinct_crops(group_a + group_b, 2) == 1.5


def test_reward_spread_is_the_within_group_std():
    scores = [RewardBreakdown(t, {"accuracy": a}) for t, a in [(1.0, 1.0), (0.0, 0.0), (0.5, 1.0), (0.5, 1.0)]]
    spread = reward_spread(scores, 2)
    assert spread == {"reward_spread/total": pytest.approx(0.25), "reward_spread/accuracy": pytest.approx(0.25)}
    diag = step_diagnostics([_rollout()] * 4, scores, 2)
    assert diag["diag/zero_spread_frac"] == 0.5 and diag["diag/entropy"] == 1.0
    assert diag["diag/crop_iou"] == 0.0 and diag["diag/hit_rate@0.5"] == 0.0  # no visual actions


def test_label_advantages_under_the_full_reward_push_an_erroneous_first_crop_down():
    """Two episodes of one group, both answered right: a wasted crop on an empty place then the chain's box, against
    the box at once. The full preset's advantages, read per label on the tokens of each action."""
    from virl_train.rewards import score_episode
    from virl_train.train import advantages_for

    chain = [[Box(0, 0, 40, 40)]]
    wasted, direct = [Box(60, 60, 100, 100), Box(0, 0, 40, 40)], [Box(0, 0, 40, 40)]
    scores = [score_episode(a, "red", chain, "red", image_size=(100, 100)) for a in (wasted, direct)]
    assert [lab.kind.value for lab in scores[0].labels] == ["erroneous", "correct"]

    def rollout(n_crops):  # 4 tokens per crop turn, then 2 answer tokens
        kinds = [ActionKind.CROP] * n_crops + [ActionKind.ANSWER]
        acts = [N(kind=k, token_span=(4 * i, 4 * i + (4 if k is ActionKind.CROP else 2))) for i, k in enumerate(kinds)]
        return N(episode=N(actions=acts))

    rollouts = [rollout(2), rollout(1)]
    adv = advantages_for(rollouts, scores, 2, 10, eta=0.5)
    diag = label_advantages(rollouts, scores, adv)
    assert diag["adv/erroneous"] < 0 < diag["adv/correct"]
    assert diag["adv/erroneous"] == pytest.approx(float(adv[0, :4].mean()))
    assert diag["adv/redundant"] == 0.0  # no redundant action: the key is there all the same


def test_crop_iou_averages_the_labels_fidelity():
    from virl_train.types import ActionLabel, LabelKind

    def lab(f):
        return ActionLabel(LabelKind.CORRECT if f >= 0.5 else LabelKind.ERRONEOUS, f, 0, 0.0, "x")

    scores = [RewardBreakdown(0.0, {}, (), (lab(0.8), lab(0.2))), RewardBreakdown(0.0, {}, (), (lab(0.5),))]
    assert crop_iou(scores) == {"diag/crop_iou": pytest.approx(0.5), "diag/hit_rate@0.5": pytest.approx(2 / 3)}


def test_kl_estimates_zero_at_the_start_and_positive_after_a_move():
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    same = kl_estimates(torch.tensor([[-1.0, -2.0, -5.0]]), torch.tensor([[-1.0, -2.0, 0.0]]), mask)
    assert same == {"diag/kl_start": 0.0, "diag/kl_start_k1": 0.0}  # the masked token does not count
    moved = kl_estimates(torch.tensor([[-0.5, -2.0, 0.0]]), torch.tensor([[-1.0, -2.0, 0.0]]), mask)
    r = -0.5
    assert moved["diag/kl_start"] == pytest.approx((torch.exp(torch.tensor(r)) - 1 - r).item() / 2)
    assert moved["diag/kl_start_k1"] == pytest.approx(0.25)


@pytest.mark.usefixtures("one_thread")
def test_every_step_logs_the_diagnostics(tmp_path):
    from rich.console import Console

    from virl_data.engines.pipeline import run_demo
    from virl_train.config import load_config
    from virl_train.train import train

    data = run_demo(tmp_path / "demo", n=16, image_size=64, console=Console(quiet=True))["HF export"]
    cfg = load_config(REPO / "configs" / "tiny_cpu.yaml", [
        f"data.path={data}", f"run.out_dir={tmp_path / 'run'}", "data.limit=8", "grpo.max_new_tokens=8",
        "env.max_actions=3", "run.max_steps=2", "run.save_every=100", "optim.lr=0.05", "grpo.kl_coef=0",
        "optim.weight_decay=0.5"])  # fmt: skip
    train(cfg, resume=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for row in rows:
        for key in ("diag/zero_spread_frac", "diag/entropy", "diag/kl_start", "diag/kl_start_k1",
                    "diag/distinct_crops", "reward_spread/total", "grad_norm", "loss/clip_frac"):
            assert key in row, key
        assert row["diag/entropy"] > 0 and 0 <= row["diag/zero_spread_frac"] <= 1
    assert rows[0]["diag/kl_start"] == pytest.approx(0.0, abs=1e-5)  # step 1 samples from the start policy
    # a random model fails the format everywhere: every group has zero spread, so no gradient ...
    assert rows[0]["diag/zero_spread_frac"] == 1.0 and rows[0]["grad_norm"] == 0.0
    # ... yet AdamW's weight decay moved the weights, and the KL to the start sees it (kl_coef 0 or not)
    assert rows[1]["diag/kl_start"] > 1e-6
    assert (tmp_path / "run" / "tb").is_dir()
