"""virl_train.matching: fidelity, potentials, R_rat variants and the correct/redundant/erroneous labels."""

from __future__ import annotations

import numpy as np
import pytest

from virl_data.core.errors import ConfigError
from virl_data.core.types import Box, RationaleStep
from virl_train.matching import (
    MatchConfig,
    _assignment,
    _assignment_exact,
    chain_array,
    coverage_potentials,
    fidelity,
    invalid_reason,
    label_actions,
    rationale_detail,
    rationale_score,
)
from virl_train.types import LabelKind

C, R, E = LabelKind.CORRECT, LabelKind.REDUNDANT, LabelKind.ERRONEOUS
SIZE = (100, 100)
A, B = Box(0, 0, 10, 10), Box(50, 50, 60, 60)  # the two steps of CHAIN
CHAIN = [[A], [B]]


def kinds(actions, chain=CHAIN, cfg=None):
    return [(lab.kind, lab.reason) for lab in label_actions(actions, chain, SIZE, cfg or MatchConfig())]


def test_fidelity_and_potentials_by_hand():
    half = Box(0, 0, 10, 5)  # IoU 0.5 with A
    assert fidelity([half, B, None], CHAIN, SIZE).tolist() == [0.5, 1.0, 0.0]
    # Φ: 0 → (0.5+0)/2 → (0.5+1)/2 → unchanged by the malformed action
    assert coverage_potentials([half, B, None], CHAIN, SIZE).tolist() == [0.0, 0.25, 0.75, 0.75]
    assert coverage_potentials([], CHAIN).tolist() == [0.0]


def test_overlap_kinds():
    big = Box(0, 0, 20, 20)  # contains A: coverage 1, precision 0.25, IoU 0.25
    for kind, expected in [("iou", 0.25), ("coverage", 1.0), ("precision", 0.25)]:
        assert fidelity([big], [[A]], SIZE, MatchConfig(overlap=kind))[0] == pytest.approx(expected)


def test_rationale_dual_by_hand():
    # recall = mean(1, 0) = 0.5; precision = mean(1) = 1 → 0.75
    assert rationale_score([A], CHAIN) == pytest.approx(0.75)
    # duplicate does not raise recall, keeps precision: still 0.75; a miss halves precision
    assert rationale_score([A, A], CHAIN) == pytest.approx(0.75)
    assert rationale_score([A, Box(80, 0, 90, 10)], CHAIN) == pytest.approx(0.5 * (0.5 + 0.5))
    assert rationale_score([], CHAIN) == 0.0
    assert rationale_score([None], CHAIN) == 0.0


def test_rationale_hungarian_is_one_to_one():
    # two crops on A: dual precision 1 (both hit A); one-to-one: A matched once → total 1
    d = rationale_detail([A, A], CHAIN, SIZE, MatchConfig(rationale="hungarian"))
    assert (d.recall, d.precision, d.score) == pytest.approx((0.5, 0.5, 0.5))
    d = rationale_detail([A, B], CHAIN, SIZE, MatchConfig(rationale="hungarian"))
    assert d.score == pytest.approx(1.0)


def test_assignment_fallback_matches_scipy():
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (2, 3), (4, 2), (4, 4), (0, 3)]:
        s = rng.random(shape)
        assert _assignment_exact(s) == pytest.approx(_assignment(s) if s.size else 0.0)
    assert _assignment_exact(np.array([[0.9, 0.8], [0.85, 0.1]])) == pytest.approx(0.8 + 0.85)


def test_rationale_order_bonus():
    cfg = MatchConfig(rationale="order_bonus", order_weight=0.2)
    in_order = rationale_detail([A, B], CHAIN, SIZE, cfg)
    reversed_ = rationale_detail([B, A], CHAIN, SIZE, cfg)
    assert in_order.order == 1.0 and reversed_.order == 0.5
    assert in_order.score == pytest.approx(0.8 * 1.0 + 0.2 * 1.0)
    assert reversed_.score == pytest.approx(0.8 * 1.0 + 0.2 * 0.5)


def test_multi_box_step_uses_union():
    steps = [RationaleStep(boxes=(Box(0, 0, 10, 10), Box(20, 20, 30, 30)))]
    assert chain_array(steps).tolist() == [[0, 0, 30, 30]]
    assert fidelity([Box(0, 0, 30, 30)], steps)[0] == 1.0
    with pytest.raises(ValueError, match="empty"):
        chain_array([])


@pytest.mark.parametrize(
    ("box", "reason"),
    [
        (None, "malformed"),
        (Box(10, 10, 10, 20), "degenerate"),
        (Box(20, 10, 10, 20), "degenerate"),
        (Box(0, 0, float("nan"), 10), "degenerate"),
        (Box(-5, 0, 10, 10), "out_of_image"),
        (Box(0, 0, 103, 10), "out_of_image"),
        (Box(-1, 0, 101, 10), None),  # within oob_tol = 2% of 100 px
        (Box(0, 0, 100, 100), None),
    ],
)
def test_invalid_reason(box, reason):
    assert invalid_reason(box, SIZE) == reason


def test_labels_basic_sequence():
    assert kinds([A, A, B]) == [(C, "hit"), (R, "duplicate_of_action_0"), (C, "hit")]


def test_labels_erroneous():
    far = Box(80, 0, 90, 10)
    tiny = Box(0, 0, 1, 1)  # IoU 0.01 with A
    assert kinds([None, far, tiny, Box(5, 5, 5, 9), Box(0, 0, 200, 10)]) == [
        (E, "malformed"),
        (E, "no_overlap"),
        (E, "low_fidelity"),
        (E, "degenerate"),
        (E, "out_of_image"),
    ]


def test_labels_full_image_crop_is_erroneous():
    lab = label_actions([Box(0, 0, 100, 100)], CHAIN, SIZE)[0]
    assert lab.kind is E and lab.fidelity == pytest.approx(0.01)


def test_labels_chain_covered_and_no_gain():
    a_better = Box(0, 0, 10, 9)  # not a duplicate of a half-box, raises IoU with A 0.5 → 0.9
    half = Box(0, 0, 10, 5)
    # chain covered: both steps reached τ_hit already, a further (non-duplicate) improvement is redundant
    assert kinds([half, B, a_better])[2] == (R, "chain_covered")
    # no coverage gain: a 0.2-IoU crop after a 0.5 one on the same step adds nothing
    low = Box(0, 0, 2, 10)
    assert kinds([half, low])[1] == (R, "no_coverage_gain")
    # a first low-fidelity crop that raises Φ by ≥ ε is correct by coverage gain
    assert kinds([Box(0, 0, 10, 3)], [[A]]) == [(C, "coverage_gain")]


def test_labels_report_gain_and_step():
    labs = label_actions([B, A], CHAIN, SIZE)
    assert [lab.matched_step for lab in labs] == [1, 0]
    assert [lab.coverage_gain for lab in labs] == pytest.approx([0.5, 0.5])
    assert label_actions([None], CHAIN, SIZE)[0].matched_step is None


def test_threshold_params_change_labels():
    tiny = Box(0, 0, 1, 1)
    assert kinds([tiny], [[A]], MatchConfig(tau_err=0.005))[0][0] is not E
    assert kinds([A, Box(0, 0, 10, 8)], cfg=MatchConfig(tau_dup=0.9))[1] == (R, "no_coverage_gain")


def test_config_validation():
    with pytest.raises(ConfigError):
        MatchConfig(overlap="giou")
    with pytest.raises(ConfigError):
        MatchConfig(rationale="best")


def test_overlaps_serves_repeats_from_its_cache_without_sharing_arrays():
    from virl_train.matching import _overlaps_cached, overlaps

    chain = ((Box(0, 0, 10, 10),), (Box(20, 20, 40, 40),))
    acts = (Box(0, 0, 10, 10), None)
    _overlaps_cached.cache_clear()
    s1, r1 = overlaps(acts, chain, (50, 50))
    s1[:] = -1.0  # a caller scribbling on its copy
    r1.append("x")
    s2, r2 = overlaps(acts, chain, (50, 50))
    assert _overlaps_cached.cache_info().hits == 1
    assert s2.tolist() == [[1.0, 0.0], [0.0, 0.0]] and r2 == [None, "malformed"]
    lists, _ = overlaps([Box(0, 0, 10, 10)], [[Box(0, 0, 10, 10)], [Box(20, 20, 40, 40)]])  # unhashable: computed
    assert lists.tolist() == [[1.0, 0.0]]
