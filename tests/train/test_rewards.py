"""virl_train.rewards: hand-computed totals, presets (the ablation), degenerate exploits, TRL adapters, pickling."""

from __future__ import annotations

import functools
import pickle

import pytest

from tests.conftest import make_record
from virl_data.core.errors import ConfigError
from virl_data.core.types import Box
from virl_train.matching import MatchConfig
from virl_train.rewards import (
    REWARDS,
    RewardConfig,
    accuracy_reward,
    action_boxes,
    format_reward,
    rationale_reward,
    reward_funcs,
    score_episode,
    score_record,
    total_reward,
)
from virl_train.types import Action, ActionKind, Episode, LabelKind

C, R, E = LabelKind.CORRECT, LabelKind.REDUNDANT, LabelKind.ERRONEOUS
SIZE = (100, 100)
A, B = Box(0, 0, 10, 10), Box(50, 50, 60, 60)
CHAIN = [[A], [B]]


def score(actions, answer="red", gold="red", preset="full", **kw):
    return score_episode(actions, answer, CHAIN, gold, image_size=SIZE, cfg=RewardConfig.preset(preset, **kw))


def test_full_by_hand():
    b = score([A, A, B])
    # R_acc 1; R_rat = ½(recall 1 + precision 1) = 1; bonus 0.5 → total 1.5
    assert b.total == pytest.approx(1.5)
    assert [lab.kind for lab in b.labels] == [C, R, C]
    # c = (1 + 0.5, −0.05 + 0, 1 + 0.5)
    assert b.per_action == pytest.approx((1.5, -0.05, 1.5))
    assert b.components["shaping"] == pytest.approx(1.0)
    assert b.components["credit"] == pytest.approx(2.95)
    assert (b.components["n_correct"], b.components["n_redundant"], b.components["n_erroneous"]) == (2, 1, 0)


def test_wrong_answer_closes_the_gate():
    b = score([A], answer="blue")
    assert b.components["rationale"] == pytest.approx(0.75)
    assert b.components["rationale_bonus"] == 0.0 and b.total == 0.0
    ungated = score([A], answer="blue", gate="ungated")
    assert ungated.total == pytest.approx(0.5 * 0.75)


@pytest.mark.parametrize(
    ("preset", "total", "credits"),
    [
        ("outcome", 1.0, (0.0, 0.0)),  # answer only
        ("process", 1.375, (0.0, 0.0)),  # + 0.5 · R_rat(= 0.75)
        ("shaping", 1.375, (0.5, 0.0)),  # + r_k as step credits
        ("full", 1.375, (1.5, -0.05)),  # + label credits
    ],
)
def test_presets_are_the_ablation(preset, total, credits):
    b = score([A, A], preset=preset)
    assert b.total == pytest.approx(total)
    assert b.per_action == pytest.approx(credits)
    assert b.components["rationale"] == pytest.approx(0.75)  # always logged


def test_config_validation_and_params():
    with pytest.raises(ConfigError, match="preset"):
        RewardConfig.preset("nope")
    with pytest.raises(ConfigError, match="gate"):
        RewardConfig(gate="sometimes")
    with pytest.raises(ConfigError, match="lambda_rat"):
        RewardConfig(gate="ungated", lambda_rat=1.5)
    cfg = RewardConfig.from_params("outcome", {"lambda_fmt": 1, "tau_err": 0.2, "match.overlap": "coverage"})
    assert (cfg.lambda_fmt, cfg.match.tau_err, cfg.match.overlap, cfg.process) == (1.0, 0.2, "coverage", False)
    with pytest.raises(ConfigError, match="tau_errr"):
        RewardConfig.from_params("full", {"tau_errr": 0.2})
    with pytest.raises(ConfigError, match="expected float"):
        RewardConfig.from_params("full", {"alpha": "big"})
    assert RewardConfig.preset("virl") == RewardConfig.preset("full") == RewardConfig()


# --- degenerate exploits ---------------------------------------------------------------------------------------------
def test_exploit_full_image_crop():
    b = score([Box(0, 0, 100, 100)])
    assert b.labels[0].kind is E
    assert b.components["rationale"] == pytest.approx(0.01)  # IoU 0.01 with each step
    assert b.per_action[0] < 0


def test_exploit_repeated_crop():
    b = score([A] * 4)
    assert [lab.kind for lab in b.labels] == [C, R, R, R]
    assert [lab.coverage_gain for lab in b.labels[1:]] == [0.0, 0.0, 0.0]
    assert b.per_action[1:] == pytest.approx((-0.05,) * 3)
    assert b.total == score([A]).total  # repeating earns nothing


def test_exploit_hundred_tiny_crops():
    tiny = [Box(x, y, x + 1, y + 1) for x in range(10) for y in range(10)]  # tile step 0 in 1-px crops
    b = score(tiny)
    assert all(lab.kind is E for lab in b.labels)
    assert b.components["rationale"] < 0.01
    assert sum(b.per_action) < -40


def test_exploit_no_crop():
    b = score([])
    assert b.components["rationale"] == 0.0 and b.per_action == () and b.total == 1.0


def test_exploit_malformed_action():
    b = score([None, A])
    assert b.labels[0].kind is E and b.labels[0].reason == "malformed"
    assert b.components["format"] == -1.0
    # R_rat = ½(recall 0.5 + precision 0.5); bonus 0.25; total 1 − 0.2 + 0.25
    assert b.total == pytest.approx(1.05)


def test_missing_answer_and_unparseable_gold():
    b = score([A], answer=None)
    assert b.components["format"] == -1.0 and b.components["accuracy"] == 0.0
    na = score_episode([A], "2", CHAIN, "red", image_size=SIZE, answer_type="numeric")
    assert na.components["accuracy_applicable"] == 0.0 and na.components["rationale_bonus"] == 0.0


def test_match_config_reaches_labels():
    cfg = RewardConfig(match=MatchConfig(overlap="coverage"))
    b = score_episode([Box(0, 0, 100, 100)], "red", CHAIN, "red", image_size=SIZE, cfg=cfg)
    assert b.labels[0].kind is C  # covers every step fully under the coverage overlap


# --- episodes, records and TRL adapters ------------------------------------------------------------------------------
def _episode(boxes, answer="red", format_ok=True):
    acts = [
        Action(turn=i, kind=ActionKind.CROP, box=b) if b else Action(turn=i, kind=ActionKind.INVALID, error="x")
        for i, b in enumerate(boxes)
    ]
    acts.append(Action(turn=len(acts), kind=ActionKind.ANSWER, answer=answer))
    return Episode(record_id="r", actions=tuple(acts), answer=answer, format_ok=format_ok)


def test_score_record_uses_record_fields():
    rec = make_record(chain=[[(10, 10, 30, 30)]], size=(100, 80), answer="red")
    ep = _episode([Box(10, 10, 30, 30), None])
    assert action_boxes(ep.actions) == [Box(10, 10, 30, 30), None]
    b = score_record(ep, rec)
    # R_rat = ½(1 + ½) = 0.75; total = 1 − 0.2 + 0.5·0.75
    assert b.total == pytest.approx(1.175)


def test_adapters_sum_to_total():
    completions = [
        _episode([A]),
        {"actions": [A, None], "answer": "blue"},
        _episode([B, A], format_ok=False),
        "red",
    ]
    cols = {"answer": ["red"] * 4, "chain": [CHAIN] * 4, "image_size": [SIZE] * 4, "prompts": ["ignored"] * 4}
    parts = [fn(completions, **cols) for fn in REWARDS.values()]
    totals = total_reward(completions, **cols)
    for i, t in enumerate(totals):
        assert sum(p[i] for p in parts) == pytest.approx(t)
    assert parts[0] == [1.0, 0.0, 1.0, 1.0]
    assert parts[1] == pytest.approx([0.0, -0.2, -0.2, 0.0])
    assert parts[2] == pytest.approx([0.375, 0.0, 0.5, 0.0])


def test_adapters_not_applicable_and_records():
    assert accuracy_reward(["2"], answer=["red"], answer_type=["numeric"]) == [None]
    assert rationale_reward(["red"], answer=["red"]) == [None]  # no chain column
    rec = make_record(chain=[[(10, 10, 30, 30)]], answer="red")
    assert rationale_reward([_episode([Box(10, 10, 30, 30)])], records=[rec]) == [0.5]
    assert format_reward([_episode([None])], records=[rec]) == [pytest.approx(-0.2)]


def test_rewards_pickle_round_trip():
    cfg = RewardConfig.preset("process", lambda_rat=0.3)
    for fn in [*REWARDS.values(), *reward_funcs(cfg), functools.partial(total_reward, reward_config=cfg)]:
        clone = pickle.loads(pickle.dumps(fn))
        kw = {"answer": ["red"], "chain": [CHAIN], "image_size": [SIZE]}
        assert clone([_episode([A])], **kw) == fn([_episode([A])], **kw)
    assert [f.__name__ for f in pickle.loads(pickle.dumps(reward_funcs(cfg)))] == list(REWARDS)
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    b = score([A, None])
    assert pickle.loads(pickle.dumps(b)) == b


def test_the_rationale_preset_is_the_rationale_score_alone():
    """The sanity check's reward: λ_rat·R_rat whatever the answer and the format (no ViRL variant)."""
    from virl_data.core.types import Box as B
    from virl_train.rewards import RewardConfig, accuracy_reward, score_episode

    cfg = RewardConfig.preset("rationale")
    chain = [[B(0, 0, 10, 10)], [B(50, 50, 60, 60)]]
    right = score_episode([B(0, 0, 10, 10)], "red", chain, "red", image_size=(100, 100), cfg=cfg)
    wrong = score_episode([B(0, 0, 10, 10), None], None, chain, "red", image_size=(100, 100), format_ok=False, cfg=cfg)
    assert right.components["rationale"] == 0.75 and right.total == 0.5 * 0.75
    assert wrong.components["accuracy"] == 0.0 and wrong.components["format"] < 0
    assert wrong.total == 0.5 * wrong.components["rationale"]
    assert RewardConfig.preset("full").lambda_acc == 1.0 and cfg.lambda_acc == 0.0
    assert accuracy_reward(["red"], cfg, answer=["red"]) == [0.0] and accuracy_reward(["red"], answer=["red"]) == [1.0]
