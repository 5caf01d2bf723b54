"""Trainer types: what a rollout produces and what the rewards return. Stdlib only (no torch), frozen dataclasses.

Boxes are ``virl_data.core.types.Box`` in ORIGINAL-image pixels: the action parser converts the model's own convention
through ``virl_data.core.boxconv`` before an ``Action`` is built.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from virl_data.core.types import Box


class ActionKind(str, enum.Enum):
    """What one model turn did: crop a region, give the final answer, or emit something unparseable."""

    CROP = "crop"
    ANSWER = "answer"
    INVALID = "invalid"


class LabelKind(str, enum.Enum):
    """Credit label of a visual action (VIRL_METHOD.md §3)."""

    CORRECT = "correct"
    REDUNDANT = "redundant"
    ERRONEOUS = "erroneous"


@dataclass(frozen=True, slots=True)
class Action:
    """One parsed action.

    ``box`` is set for CROP (original-image pixels) and for an ANSWER whose text is a box (the answer box, same
    pixels), None otherwise; ``answer`` is set for ANSWER; ``raw`` is the
    model text the action was parsed from; ``token_span`` is ``[start, end)`` in the completion's token ids (the
    reasoning text and the action itself), ``(0, 0)`` when unknown (e.g. scoring logged trajectories); ``error``
    says why an INVALID action could not be parsed or was out of the image.
    """

    turn: int
    kind: ActionKind
    box: Box | None = None
    answer: str | None = None
    raw: str = ""
    token_span: tuple[int, int] = (0, 0)
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ActionLabel:
    """The judgement of one visual action against the ground-truth chain.

    ``fidelity`` f_k = max_j s(b_k, g_j); ``matched_step`` the chain index j reaching it (None for malformed
    actions or f_k = 0); ``coverage_gain`` Φ_k − Φ_{k−1}; ``reason`` a short code for the label
    (e.g. ``"hit"``, ``"coverage_gain"``, ``"duplicate_of_action_0"``, ``"no_overlap"``, ``"malformed"``).
    """

    kind: LabelKind
    fidelity: float
    matched_step: int | None
    coverage_gain: float
    reason: str


@dataclass(frozen=True, slots=True)
class Episode:
    """A finished multi-turn rollout for one record.

    ``loss_mask`` has one entry per completion token: 1 = sampled by the policy, 0 = inserted by the environment
    (crop images, tool text). ``actions`` lists the visual actions (CROP / INVALID) in order; ``answer`` is the final
    answer text (None when the model never answered); ``answer_box`` the box that answer names, in ORIGINAL-image
    pixels (None when the answer is not a box): what a box-answer record (``answer_type="box"``) is scored on.
    """

    record_id: str
    prompt_ids: tuple[int, ...] = ()
    completion_ids: tuple[int, ...] = ()
    loss_mask: tuple[int, ...] = ()  # [T]
    actions: tuple[Action, ...] = ()
    answer: str | None = None
    n_turns: int = 0
    format_ok: bool = True
    answer_box: Box | None = None


@dataclass(frozen=True, slots=True)
class RewardBreakdown:
    """Total reward of one episode, its named components, and the per-action step credits c_k."""

    total: float
    components: dict[str, float] = field(default_factory=dict)
    per_action: tuple[float, ...] = ()
    labels: tuple[ActionLabel, ...] = ()
