"""Match visual actions to the ground-truth chain: fidelity, coverage potential, rationale score, credit labels.

Used by the rewards AND by evaluation, so the two cannot drift apart. Notation (VIRL_METHOD.md): actions
``b_1..b_K`` (boxes in ORIGINAL-image pixels, ``None`` = malformed), chain ``g_1..g_M``, overlap ``s(b, g)`` one of
``iou`` (default), ``coverage`` = |b∩g|/|g|, ``precision`` = |b∩g|/|b|
(all via ``virl_data.core.boxes.overlap_matrix``).

- A chain step with several boxes is represented by the **union box of the step** (the smallest box enclosing them):
  a crop showing all objects of the step is the right look for it.
- An action is *invalid* when malformed (``None``), degenerate (non-finite, ``x1 ≥ x2`` or ``y1 ≥ y2``) or out of the
  image by more than ``oob_tol × max(W, H)`` pixels (the rule of ``virl_train.actions``). Invalid actions overlap
  nothing: ``s = 0`` for every step, they add nothing to Φ and count as 0 in the precision mean.
- Fidelity ``f_k = max_j s(b_k, g_j)``; coverage potential ``Φ_k = mean_j max_{k'≤k} s(b_k', g_j)``, ``Φ_0 = 0``.
- ``R_rat = ½(recall + precision)``, recall ``= mean_j max_k s(b_k, g_j)``, precision ``= mean_k max_j s(b_k, g_j)``
  ("dual", default); ``"hungarian"``: the same means over a one-to-one assignment (unassigned rows/columns count 0);
  ``"order_bonus"``: ``(1 − ω)·dual + ω·LIS/M`` where LIS is the longest strictly increasing run (subsequence) of
  the matched step indices of actions with ``f_k ≥ τ_hit``, so visiting more steps in chain order earns up to ω.
  No action → 0.

Example (chain of two steps on a 100 × 100 image, one crop exactly on step 0):
    >>> from virl_data.core.types import Box
    >>> chain = [[Box(0, 0, 10, 10)], [Box(50, 50, 60, 60)]]
    >>> [lab.kind.value for lab in label_actions([Box(0, 0, 10, 10), Box(0, 0, 10, 10)], chain, (100, 100))]
    ['correct', 'redundant']
    >>> coverage_potentials([Box(0, 0, 10, 10)], chain).tolist(), rationale_score([Box(0, 0, 10, 10)], chain)
    ([0.0, 0.5], 0.75)
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from virl_data.core.boxes import as_array, is_valid, overlap_matrix, union
from virl_data.core.errors import ConfigError
from virl_data.core.types import Box
from virl_train.types import ActionLabel, LabelKind

OVERLAPS = ("iou", "coverage", "precision")
RATIONALE_VARIANTS = ("dual", "hungarian", "order_bonus")


@dataclass(frozen=True)
class MatchConfig:
    """Thresholds and variants of the matching (VIRL_METHOD.md §1 and §3); defaults are the spec's.

    ``overlap`` s: iou | coverage | precision; ``tau_err`` fidelity below which an action is erroneous; ``tau_dup``
    IoU with an earlier action from which it is a duplicate; ``tau_hit`` fidelity of a "hit" (also: a step counts as
    covered at this overlap); ``eps`` minimal coverage gain of a useful action; ``oob_tol`` fraction of the image's
    longer side a box may stick out; ``rationale`` dual | hungarian | order_bonus; ``order_weight`` ω of order_bonus.
    """

    overlap: str = "iou"
    tau_err: float = 0.1
    tau_dup: float = 0.7
    tau_hit: float = 0.5
    eps: float = 0.05
    oob_tol: float = 0.02
    rationale: str = "dual"
    order_weight: float = 0.2

    def __post_init__(self) -> None:
        if self.overlap not in OVERLAPS:
            raise ConfigError(f"overlap must be one of {', '.join(OVERLAPS)}, got {self.overlap!r}")
        if self.rationale not in RATIONALE_VARIANTS:
            raise ConfigError(f"rationale must be one of {', '.join(RATIONALE_VARIANTS)}, got {self.rationale!r}")
        if not 0.0 <= self.order_weight <= 1.0:
            raise ConfigError(f"order_weight must be in [0, 1], got {self.order_weight}")


DEFAULT = MatchConfig()
ImageSize = tuple[float, float] | None


@dataclass(frozen=True)
class RationaleDetail:
    """``score`` = R_rat of the configured variant; ``recall``/``precision`` its two halves; ``order`` LIS/M."""

    score: float
    recall: float
    precision: float
    order: float


# --- geometry --------------------------------------------------------------------------------------------------------
def chain_array(chain: Sequence[Sequence[Box]]) -> np.ndarray:
    """``(M, 4)``: one box per step, the union of the step's boxes. Steps may be box lists or ``RationaleStep``s."""
    rows = [union(as_array(list(getattr(step, "boxes", step)))) for step in chain]
    if not rows:
        raise ValueError("the ground-truth chain is empty: nothing to match actions against")
    return np.stack(rows)


def invalid_reason(box: Box | None, image_size: ImageSize, oob_tol: float = DEFAULT.oob_tol) -> str | None:
    """Why an action box cannot be judged: ``"malformed"``, ``"degenerate"``, ``"out_of_image"``; None if fine.

    >>> invalid_reason(Box(0, 0, 10, 10), (100, 100)), invalid_reason(Box(0, 0, 150, 10), (100, 100))
    (None, 'out_of_image')
    """
    if box is None:
        return "malformed"
    arr = as_array([box])
    if not bool(is_valid(arr)[0]):
        return "degenerate"
    if image_size is not None:
        w, h = float(image_size[0]), float(image_size[1])
        tol = oob_tol * max(w, h)
        x1, y1, x2, y2 = arr[0]
        if x1 < -tol or y1 < -tol or x2 > w + tol or y2 > h + tol:
            return "out_of_image"
    return None


def overlaps(
    actions: Sequence[Box | None], chain: Sequence[Sequence[Box]], image_size: ImageSize = None, cfg: MatchConfig = DEFAULT
) -> tuple[np.ndarray, list[str | None]]:
    """``(K, M)`` overlaps s(b_k, g_j) (rows of invalid actions are 0) and each action's invalid reason.

    Scoring one episode asks for the same matrix three times (labels, R_rat, potentials): hashable inputs (boxes,
    ``RationaleStep`` tuples, frozen config) are served from a small cache, each caller getting its own copy."""
    try:
        s, reasons = _overlaps_cached(tuple(actions), tuple(chain), _hashable_size(image_size), cfg)
    except TypeError:  # unhashable input (e.g. a chain given as lists of boxes): compute directly
        return _overlaps(actions, chain, image_size, cfg)
    return s.copy(), list(reasons)


def _hashable_size(image_size: ImageSize) -> tuple[float, float] | None:
    return None if image_size is None else (float(image_size[0]), float(image_size[1]))


@functools.lru_cache(maxsize=512)
def _overlaps_cached(actions: tuple, chain: tuple, image_size, cfg: MatchConfig) -> tuple[np.ndarray, tuple]:
    s, reasons = _overlaps(actions, chain, image_size, cfg)
    return s, tuple(reasons)


def _overlaps(actions, chain, image_size, cfg) -> tuple[np.ndarray, list[str | None]]:
    g = chain_array(chain)
    reasons = [invalid_reason(b, image_size, cfg.oob_tol) for b in actions]
    s = np.zeros((len(actions), len(g)))
    ok = [k for k, r in enumerate(reasons) if r is None]
    if ok:
        s[ok] = overlap_matrix(as_array([actions[k] for k in ok]), g, cfg.overlap)
    return s, reasons


# --- scores ----------------------------------------------------------------------------------------------------------
def fidelity(
    actions: Sequence[Box | None], chain: Sequence[Sequence[Box]], image_size: ImageSize = None, cfg: MatchConfig = DEFAULT
) -> np.ndarray:
    """``f_k = max_j s(b_k, g_j)``, shape ``(K,)``; 0 for invalid actions."""
    s, _ = overlaps(actions, chain, image_size, cfg)
    return s.max(axis=1) if len(actions) else np.zeros(0)


def _potentials(s: np.ndarray) -> np.ndarray:
    if len(s) == 0:
        return np.zeros(1)
    best_so_far = np.maximum.accumulate(s, axis=0)  # [K, M]: max_{k'≤k} s(b_k', g_j)
    return np.concatenate([[0.0], best_so_far.mean(axis=1)])


def coverage_potentials(
    actions: Sequence[Box | None], chain: Sequence[Sequence[Box]], image_size: ImageSize = None, cfg: MatchConfig = DEFAULT
) -> np.ndarray:
    """``[Φ_0, Φ_1, ..., Φ_K]`` with ``Φ_0 = 0`` and ``Φ_k = mean_j max_{k'≤k} s(b_k', g_j)``; shape ``(K+1,)``.

    Step rewards are ``np.diff(Φ)``: r_k = Φ_k − Φ_{k−1} ≥ 0, and a repeated crop earns exactly 0.
    """
    s, _ = overlaps(actions, chain, image_size, cfg)
    return _potentials(s)


def _assignment(s: np.ndarray) -> float:
    """Maximum total overlap of a one-to-one assignment of rows to columns."""
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError:  # pragma: no cover - exercised through _assignment_exact in the tests
        return _assignment_exact(s)
    rows, cols = linear_sum_assignment(s, maximize=True)
    return float(s[rows, cols].sum())


def _assignment_exact(s: np.ndarray) -> float:
    """Exact maximum assignment by enumeration (fallback without scipy; fine for the K, M ≤ ~8 of an episode)."""
    if s.shape[0] > s.shape[1]:
        s = s.T
    k, m = s.shape
    if k == 0:
        return 0.0
    return max(float(s[np.arange(k), list(p)].sum()) for p in itertools.permutations(range(m), k))


def _longest_increasing(seq: Sequence[int]) -> int:
    """Length of the longest strictly increasing subsequence (O(n²), n = actions per episode)."""
    best: list[int] = []
    for i, v in enumerate(seq):
        best.append(1 + max((best[j] for j in range(i) if seq[j] < v), default=0))
    return max(best, default=0)


def rationale_detail(
    actions: Sequence[Box | None], chain: Sequence[Sequence[Box]], image_size: ImageSize = None, cfg: MatchConfig = DEFAULT
) -> RationaleDetail:
    """R_rat with its recall and precision halves and the order fraction (see the module docstring)."""
    s, _ = overlaps(actions, chain, image_size, cfg)
    k, m = s.shape
    if k == 0:
        return RationaleDetail(0.0, 0.0, 0.0, 0.0)
    if cfg.rationale == "hungarian":
        total = _assignment(s)
        recall, precision = total / m, total / k
    else:
        recall, precision = float(s.max(axis=0).mean()), float(s.max(axis=1).mean())
    hits = [int(np.argmax(row)) for row in s if row.max() >= cfg.tau_hit]
    order = _longest_increasing(hits) / m
    score = 0.5 * (recall + precision)
    if cfg.rationale == "order_bonus":
        score = (1.0 - cfg.order_weight) * score + cfg.order_weight * order
    return RationaleDetail(float(score), float(recall), float(precision), float(order))


def rationale_score(
    actions: Sequence[Box | None], chain: Sequence[Sequence[Box]], image_size: ImageSize = None, cfg: MatchConfig = DEFAULT
) -> float:
    """R_rat = ½(recall + precision) (or its configured variant) in [0, 1]; 0 when there is no action.

    Example: chain = two 10 × 10 steps, one crop exactly on step 0 → recall = (1 + 0)/2, precision = 1/1,
    R_rat = ½(0.5 + 1) = 0.75.
    """
    return rationale_detail(actions, chain, image_size, cfg).score


@dataclass(frozen=True)
class ChainOrder:
    """How an episode walked an ordered chain: ``step_iou[j]`` = max_k s(b_k, g_j) (how well step j was looked at),
    ``ordered_hit``: actions k_1 < … < k_M exist with s(b_{k_j}, g_j) ≥ threshold (every step hit, in chain order),
    ``all_hit``: every step hit by some action, in any order."""

    step_iou: tuple[float, ...]
    ordered_hit: bool
    all_hit: bool


def chain_order(
    actions: Sequence[Box | None], chain: Sequence[Sequence[Box]], image_size: ImageSize = None,
    cfg: MatchConfig = DEFAULT, threshold: float = 0.5,
) -> ChainOrder:
    """``ChainOrder`` of one episode. A greedy left-to-right scan decides ``ordered_hit`` (optimal for a
    subsequence match: take the first action that hits the next step).

    >>> chain = [[Box(0, 0, 10, 10)], [Box(50, 50, 60, 60)]]
    >>> chain_order([Box(50, 50, 60, 60), Box(0, 0, 10, 10)], chain)
    ChainOrder(step_iou=(1.0, 1.0), ordered_hit=False, all_hit=True)
    >>> chain_order([Box(0, 0, 10, 10), Box(90, 90, 99, 99), Box(50, 50, 60, 60)], chain).ordered_hit
    True
    """
    s, _ = overlaps(actions, chain, image_size, cfg)
    step_iou = s.max(axis=0) if len(s) else np.zeros(s.shape[1])
    j = 0
    for row in s:
        if j < s.shape[1] and row[j] >= threshold:
            j += 1
    return ChainOrder(tuple(float(v) for v in step_iou), j == s.shape[1], bool((step_iou >= threshold).all()))


# --- labels ----------------------------------------------------------------------------------------------------------
def _duplicate_of(k: int, actions: Sequence[Box | None], reasons: list[str | None], tau_dup: float) -> int | None:
    earlier = [i for i in range(k) if reasons[i] is None]
    if not earlier:
        return None
    ious = overlap_matrix(as_array([actions[k]]), as_array([actions[i] for i in earlier]), "iou")[0]
    best = int(np.argmax(ious))
    return earlier[best] if ious[best] >= tau_dup else None


def label_actions(
    actions: Sequence[Box | None], chain: Sequence[Sequence[Box]], image_size: ImageSize = None, cfg: MatchConfig = DEFAULT
) -> list[ActionLabel]:
    """Label each action correct / redundant / erroneous (VIRL_METHOD.md §3), first matching rule wins:

    1. erroneous: invalid (``malformed`` / ``degenerate`` / ``out_of_image``), ``f_k = 0`` (``no_overlap``) or
       ``f_k < τ_err`` (``low_fidelity``);
    2. redundant: IoU with an earlier valid action ≥ τ_dup (``duplicate_of_action_i``); every step already reached
       ``τ_hit`` before this action (``chain_covered``); ``Φ_k − Φ_{k−1} < ε`` (``no_coverage_gain``);
    3. correct: ``hit`` when ``f_k ≥ τ_hit``, else ``coverage_gain`` (it raised Φ by ≥ ε).

    Example: two identical crops on step 0 of a two-step chain → correct (hit, gain 0.5), redundant
    (duplicate_of_action_0, gain 0).
    """
    s, reasons = overlaps(actions, chain, image_size, cfg)
    phi = _potentials(s)
    best_before = np.zeros(s.shape[1])
    labels = []
    for k in range(len(actions)):
        f = float(s[k].max())
        gain = float(phi[k + 1] - phi[k])
        step = int(np.argmax(s[k])) if f > 0 else None
        kind, reason = LabelKind.ERRONEOUS, reasons[k]
        if reason is None and f == 0:
            reason = "no_overlap"
        elif reason is None and f < cfg.tau_err:
            reason = "low_fidelity"
        elif reason is None:
            kind = LabelKind.REDUNDANT
            dup = _duplicate_of(k, actions, reasons, cfg.tau_dup)
            if dup is not None:
                reason = f"duplicate_of_action_{dup}"
            elif bool((best_before >= cfg.tau_hit).all()):
                reason = "chain_covered"
            elif gain < cfg.eps:
                reason = "no_coverage_gain"
            else:
                kind, reason = LabelKind.CORRECT, "hit" if f >= cfg.tau_hit else "coverage_gain"
        labels.append(ActionLabel(kind=kind, fidelity=f, matched_step=step, coverage_gain=gain, reason=reason))
        best_before = np.maximum(best_before, s[k])
    return labels
