"""virl_train.advantages: group advantages, normalized step credits and their placement on token spans, by hand."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from virl_data.core.errors import ConfigError  # noqa: E402
from virl_data.core.types import Box  # noqa: E402
from virl_train.advantages import group_advantages, normalized_credits, token_advantages  # noqa: E402
from virl_train.rewards import RewardConfig, score_episode  # noqa: E402

EPS = 1e-4


# --- group_advantages ------------------------------------------------------------------------------------------------
def test_group_advantages_by_hand():
    # group 0: [1, 0, 0, 3] mean 1, unbiased std sqrt((0+1+1+4)/3) = sqrt(2);
    # group 1: [2, 4, 4, 6] mean 4, std sqrt(8/3)
    a = group_advantages(torch.tensor([1.0, 0.0, 0.0, 3.0, 2.0, 4.0, 4.0, 6.0]), 4)
    s0, s1 = math.sqrt(2), math.sqrt(8 / 3)
    want = [0.0, -1 / (s0 + EPS), -1 / (s0 + EPS), 2 / (s0 + EPS), -2 / (s1 + EPS), 0.0, 0.0, 2 / (s1 + EPS)]
    assert a.tolist() == pytest.approx(want, abs=1e-6)
    assert a.view(2, 4).sum(1).abs().max() < 1e-6  # centred per group


def test_zero_variance_group_gets_exactly_zero():
    a = group_advantages(torch.tensor([0.7, 0.7, 0.7, 1.0, 0.0, 1.0]), 3)
    assert a[:3].tolist() == [0.0, 0.0, 0.0]
    s = math.sqrt(1 / 3)  # [1, 0, 1]: mean 2/3, unbiased std sqrt((1/9 + 4/9 + 1/9) / 2)
    assert a[3:].tolist() == pytest.approx([1 / 3 / (s + EPS), -2 / 3 / (s + EPS), 1 / 3 / (s + EPS)], abs=1e-6)


def test_scale_none_and_batch():
    r = torch.tensor([1.0, 0.0, 3.0, 3.0])
    assert group_advantages(r, 2, scale="none").tolist() == [0.5, -0.5, 0.0, 0.0]
    batch_std = float(r.std())  # unbiased std of all four rewards, the per-group means still subtracted
    assert group_advantages(r, 2, scale="batch").tolist() == pytest.approx(
        [0.5 / (batch_std + EPS), -0.5 / (batch_std + EPS), 0.0, 0.0], abs=1e-6)


def test_group_of_one_gets_zero():
    assert group_advantages(torch.tensor([5.0, -1.0]), 1).tolist() == [0.0, 0.0]


@pytest.mark.parametrize(
    ("rewards", "g", "kw", "error"),
    [
        ([1.0, 2.0, 3.0], 2, {}, ValueError),  # not whole groups
        ([1.0, 2.0], 2, {"scale": "global"}, ConfigError),
        ([1.0, 2.0], 0, {}, ConfigError),
        ([1.0, float("nan")], 2, {}, ValueError),
    ],
)
def test_group_advantages_rejects_bad_input(rewards, g, kw, error):
    with pytest.raises(error):
        group_advantages(torch.tensor(rewards), g, **kw)


# --- normalized_credits ----------------------------------------------------------------------------------------------
def test_credits_pooled_over_all_actions_of_the_group():
    # group 0 pools [1.5, -0.05, 1.5] + [-0.5] + [] : mean 0.6125, unbiased std
    credits = [[1.5, -0.05], [1.5], [-0.5], []]
    pooled = [1.5, -0.05, 1.5, -0.5]
    mu = sum(pooled) / 4
    sd = math.sqrt(sum((c - mu) ** 2 for c in pooled) / 3)
    got = normalized_credits(credits, 4)
    assert [len(c) for c in got] == [2, 1, 1, 0]
    flat = [x for c in got for x in c]
    assert flat == pytest.approx([(c - mu) / (sd + EPS) for c in pooled], abs=1e-9)


def test_credits_groups_are_independent():
    got = normalized_credits([[1.0], [0.0], [10.0], [20.0]], 2)
    s = math.sqrt(0.5)
    want = [0.5 / (s + EPS), -0.5 / (s + EPS), -5 / (math.sqrt(50) + EPS), 5 / (math.sqrt(50) + EPS)]
    assert [c for (c,) in got] == pytest.approx(want, abs=1e-12)


def test_degenerate_groups_get_zero():
    # one action in the group; all-equal credits (e.g. every switch off); no action at all
    got = normalized_credits([[1.5], [], [0.1, 0.1], [0.1], [], []], 2)
    assert got == [[0.0], [], [0.0, 0.0], [0.0], [], []]


def test_credits_reject_bad_input():
    with pytest.raises(ValueError, match="whole groups"):
        normalized_credits([[1.0], [2.0], [3.0]], 2)
    with pytest.raises(ValueError, match="non-finite"):
        normalized_credits([[1.0], [float("inf")]], 2)


# --- token_advantages ------------------------------------------------------------------------------------------------
def test_token_advantages_place_eta_credit_on_each_span():
    a_out = torch.tensor([1.0, -0.5])
    hat = [[2.0, -1.0], [0.4]]
    spans = [[(0, 2), (3, 5)], [(1, 4)]]
    adv = token_advantages(a_out, hat, spans, 6, eta=0.5)
    assert adv.shape == (2, 6)
    assert adv[0].tolist() == [2.0, 2.0, 1.0, 0.5, 0.5, 1.0]  # tokens 2 and 5 (env / answer) keep A_out
    assert adv[1].tolist() == pytest.approx([-0.5, -0.3, -0.3, -0.3, -0.5, -0.5])


def test_eta_zero_or_unknown_spans_is_plain_grpo():
    a_out = torch.tensor([0.25, -0.75])
    hat = [[1.0], [-2.0]]
    assert torch.equal(token_advantages(a_out, hat, [[(0, 3)], [(1, 2)]], 4, eta=0.0), a_out[:, None].expand(2, 4))
    assert torch.equal(token_advantages(a_out, hat, [[(0, 0)], [(0, 0)]], 4, eta=0.5), a_out[:, None].expand(2, 4))


@pytest.mark.parametrize(
    ("hat", "spans", "match"),
    [
        ([[1.0, 2.0]], [[(0, 2)]], "2 step credits but 1 action spans"),
        ([[1.0]], [[(2, 9)]], "outside"),
        ([[1.0, 1.0]], [[(0, 3), (2, 4)]], "overlapping"),
    ],
)
def test_token_advantages_reject_inconsistent_spans(hat, spans, match):
    with pytest.raises(ValueError, match=match):
        token_advantages(torch.tensor([0.0]), hat, spans, 5, eta=0.5)


# --- end to end with the reward module: the ablation presets --------------------------------------------------------
CHAIN = [[Box(0, 0, 10, 10)], [Box(50, 50, 60, 60)]]
A, B, FAR = Box(0, 0, 10, 10), Box(50, 50, 60, 60), Box(80, 0, 99, 10)
GROUP = [([A, B], "red"), ([A, A], "red"), ([FAR], "blue"), ([], "red")]  # (crops, answer) of 4 episodes
SPANS = [[(0, 3), (4, 7)], [(0, 2), (3, 6)], [(1, 5)], []]


def _advantages(preset: str) -> tuple[torch.Tensor, torch.Tensor]:
    cfg = RewardConfig.preset(preset)
    scores = [score_episode(acts, ans, CHAIN, "red", image_size=(100, 100), cfg=cfg) for acts, ans in GROUP]
    a_out = group_advantages(torch.tensor([s.total for s in scores]), 4)
    hat = normalized_credits([list(s.per_action) for s in scores], 4)
    return a_out, token_advantages(a_out, hat, SPANS, 9, cfg.eta)


@pytest.mark.parametrize("preset", ["outcome", "process"])
def test_outcome_and_process_presets_give_exactly_a_out(preset):
    a_out, adv = _advantages(preset)
    assert a_out.abs().sum() > 0
    assert torch.equal(adv, a_out[:, None].expand(4, 9))


def test_full_preset_separates_good_and_bad_actions():
    a_out, adv = _advantages("full")
    assert torch.equal(adv[3], a_out[3].expand(9))  # no action: A_out only
    # episode 0: two correct actions; episode 2: an erroneous one. Span tokens move with the credit's sign.
    assert (adv[0, 0:3] > a_out[0]).all() and (adv[0, 4:7] > a_out[0]).all()
    assert (adv[2, 1:5] < a_out[2]).all()
    assert adv[0, 3] == a_out[0] and adv[0, 7] == a_out[0]  # tokens outside the spans (env text, answer)
    # the repeated crop of episode 1 (redundant, −0.05) is credited below its first, correct crop
    assert adv[1, 3] < adv[1, 0]
