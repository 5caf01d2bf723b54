"""Action metrics shared by the training log and the eval report: one function, so one meaning per name.

Over N episodes with K visual actions in all (CROP + INVALID; the final answer is not a visual action)::

    tool_use_rate        episodes with ≥ 1 executed crop (a CROP action with a box) / N
    invalid_rate         INVALID actions (unparseable, out of the image, refused by the env) / K
    correct_rate         actions labelled correct / K   (redundant_rate, erroneous_rate likewise; an INVALID
                         action is labelled erroneous, so it counts in erroneous_rate AND invalid_rate)
    actions_per_episode  K / N;   crops_per_episode: executed crops / N

Every rate over zero items is 0. Training logs these as ``actions/<name>`` (``train.rollout_metrics``), evaluation as
``<name>`` (``eval.grounding_metrics``); both call ``action_metrics``.

Example: a random tiny model writes text with no action tag, so each of its turns is an INVALID ``no_action``:
``tool_use_rate`` 0 and ``invalid_rate`` 1.

    >>> from virl_data.core.types import Box
    >>> from virl_train.types import Action, ActionKind, ActionLabel, Episode, LabelKind, RewardBreakdown
    >>> crop = Action(0, ActionKind.CROP, box=Box(0, 0, 5, 5))
    >>> bad = Action(0, ActionKind.INVALID, error="no_action")
    >>> ok = ActionLabel(LabelKind.CORRECT, 1.0, 0, 1.0, "hit")
    >>> err = ActionLabel(LabelKind.ERRONEOUS, 0.0, None, 0.0, "malformed")
    >>> m = action_metrics([Episode("a", actions=(crop,)), Episode("b", actions=(bad,))],
    ...                    [RewardBreakdown(1.0, labels=(ok,)), RewardBreakdown(0.0, labels=(err,))])
    >>> m["tool_use_rate"], m["invalid_rate"], m["correct_rate"], m["actions_per_episode"]
    (0.5, 0.5, 0.5, 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence

from virl_train.types import ActionKind, Episode, LabelKind, RewardBreakdown


def rate(num: float, den: float) -> float:
    """``num / den``, 0.0 when there is nothing to count (``den`` 0)."""
    return float(num) / den if den else 0.0


def action_metrics(episodes: Sequence[Episode], scores: Sequence[RewardBreakdown]) -> dict[str, float]:
    """The action metrics of the module docstring for episodes and their reward breakdowns (paired in order)."""
    if len(episodes) != len(scores):
        raise ValueError(f"{len(episodes)} episodes but {len(scores)} reward breakdowns")
    kinds = [lab.kind for s in scores for lab in s.labels]
    n_ep, n_act = len(episodes), len(kinds)
    crops = [sum(a.kind is ActionKind.CROP and a.box is not None for a in ep.actions) for ep in episodes]
    n_invalid = sum(a.kind is ActionKind.INVALID for ep in episodes for a in ep.actions)
    return {
        **{f"{k.value}_rate": rate(kinds.count(k), n_act) for k in LabelKind},
        "invalid_rate": rate(n_invalid, n_act),
        "tool_use_rate": rate(sum(c > 0 for c in crops), n_ep),
        "actions_per_episode": rate(n_act, n_ep),
        "crops_per_episode": rate(sum(crops), n_ep),
    }


__all__ = ["action_metrics", "rate"]
