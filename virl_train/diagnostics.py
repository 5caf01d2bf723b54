"""RL diagnostics logged every training step: is the update moving the policy, and is there any signal to move it?

Small pure functions over one step's rollouts and reward breakdowns (``step_diagnostics``), plus the one forward
that needs the start policy (``start_logprobs``). Keys (the train loop merges them into its metrics; the gradient
norm ``grad_norm`` and clip fraction ``loss/clip_frac`` come from the update itself):

==============================  ======================================================================================
``diag/zero_spread_frac``       fraction of GRPO groups whose total rewards are all equal (|max − min| ≤ 1e-8):
                                their advantages are 0, they teach nothing
``diag/entropy``                policy entropy on the action tokens (the model's own turns, loss mask 1), estimated
                                from the samples: H ≈ −mean log π(sampled token) at the sampling temperature
``diag/kl_start``               KL(π‖π_start) on the sampled action tokens, k3 estimator
                                ``mean(exp(r) − 1 − r)``, r = log π_start − log π (≥ 0); computed whether or not
                                ``grpo.kl_coef`` uses it. ``diag/kl_start_k1`` = ``mean(−r)`` (unbiased, noisier)
``diag/crop_iou``               sampled crop IoU: each visual action's best IoU with a chain box (invalid → 0),
                                averaged over actions (eval's ``mean_fidelity`` on the training samples);
                                ``diag/hit_rate@0.5`` the fraction reaching 0.5
``diag/distinct_crops``         distinct executed crop boxes (whole pixels) per group, averaged over groups
``reward_spread/<component>``   per reward component, the standard deviation within each group, averaged over
                                groups (what the group-normalised advantage can see); means are ``reward/<component>``
``adv/<label>``                 mean token advantage over the tokens of the actions labelled ``correct`` /
                                ``redundant`` / ``erroneous`` (``label_advantages``; 0 when no action of the step
                                has the label): whether the update pushes each kind of action up (> 0) or down (< 0)
==============================  ======================================================================================

Example:
    >>> zero_spread_fraction([1.0, 1.0, 0.0, 1.0], group_size=2)
    0.5
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from virl_train.types import ActionKind, LabelKind, RewardBreakdown


def _groups(values: Sequence[Any], group_size: int) -> list[Sequence[Any]]:
    return [values[i : i + group_size] for i in range(0, len(values), group_size)]


def zero_spread_fraction(totals: Sequence[float], group_size: int, tol: float = 1e-8) -> float:
    """Fraction of groups (consecutive ``group_size`` episodes) whose totals span at most ``tol``."""
    groups = _groups(list(totals), group_size)
    return float(np.mean([max(g) - min(g) <= tol for g in groups])) if groups else 0.0


def sampled_entropy(rollouts: Sequence[Any]) -> float:
    """−mean log π of the sampled action tokens (mask 1) over all rollouts (0 when none was sampled).

    >>> from types import SimpleNamespace as N
    >>> round(sampled_entropy([N(logprobs=(-1.0, 0.0, -2.0), episode=N(loss_mask=(1, 0, 1)))]), 3)
    1.5
    """
    lps = [lp for r in rollouts if r.logprobs for lp, m in zip(r.logprobs, r.episode.loss_mask) if m]
    return float(-np.mean(lps)) if lps else 0.0


def kl_estimates(logp: torch.Tensor, start_logp: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """``{"diag/kl_start": k3, "diag/kl_start_k1": k1}`` means over ``mask`` of the per-token estimators.

    >>> kl_estimates(torch.tensor([[-1.0]]), torch.tensor([[-1.0]]), torch.tensor([[1.0]]))["diag/kl_start"]
    0.0
    """
    m = mask.float()
    n = m.sum().clamp(min=1.0)
    r = (start_logp - logp).float() * m
    k3 = (torch.exp(r) - 1 - r) * m
    return {"diag/kl_start": float(k3.sum() / n), "diag/kl_start_k1": float((-r).sum() / n)}


def distinct_crops(rollouts: Sequence[Any], group_size: int) -> float:
    """Mean over groups of the number of distinct executed crop boxes (rounded to whole pixels)."""
    counts = []
    for group in _groups(list(rollouts), group_size):
        boxes = {tuple(round(v) for v in a.box.as_tuple()) for r in group for a in r.episode.actions
                 if a.kind is ActionKind.CROP and a.box is not None}  # fmt: skip
        counts.append(len(boxes))
    return float(np.mean(counts)) if counts else 0.0


def reward_spread(scores: Sequence[RewardBreakdown], group_size: int) -> dict[str, float]:
    """``reward_spread/<component>`` (and ``/total``): the within-group standard deviation, averaged over groups."""
    out = {}
    keys = ["total", *scores[0].components] if scores else []
    for key in keys:
        vals = [s.total if key == "total" else s.components[key] for s in scores]
        out[f"reward_spread/{key}"] = float(np.mean([np.std(g) for g in _groups(vals, group_size)]))
    return out


def crop_iou(scores: Sequence[RewardBreakdown]) -> dict[str, float]:
    """``diag/crop_iou`` (mean fidelity f_k over every visual action's label) and ``diag/hit_rate@0.5``."""
    f = [lab.fidelity for s in scores for lab in s.labels]
    return {"diag/crop_iou": float(np.mean(f)) if f else 0.0,
            "diag/hit_rate@0.5": float(np.mean([x >= 0.5 for x in f])) if f else 0.0}


def label_advantages(rollouts: Sequence[Any], scores: Sequence[RewardBreakdown], adv: torch.Tensor) -> dict[str, float]:
    """``adv/<label>``: the mean of the token advantages ``adv`` ``[N, T]`` over the token spans of the actions of
    each label (the crop actions of ``rollouts[i].episode``, labelled by ``scores[i].labels`` in the same order).

    >>> from types import SimpleNamespace as NS
    >>> from virl_train.types import ActionLabel
    >>> ep = NS(actions=[NS(token_span=(0, 2), kind=NS(value="crop")), NS(token_span=(2, 3), kind=NS(value="answer"))])
    >>> lab = ActionLabel(LabelKind.ERRONEOUS, 0.0, None, 0.0, "no_overlap")
    >>> label_advantages([NS(episode=ep)], [NS(labels=(lab,))], torch.tensor([[-1.0, -2.0, 5.0]]))
    {'adv/correct': 0.0, 'adv/redundant': 0.0, 'adv/erroneous': -1.5}

    Every label's key is always there (0 without tokens), so processes of a multi-process run log the same keys.
    """
    keys = [f"adv/{k.value}" for k in LabelKind]
    sums: dict[str, float] = dict.fromkeys(keys, 0.0)
    counts: dict[str, int] = dict.fromkeys(keys, 0)
    for i, (r, s) in enumerate(zip(rollouts, scores, strict=True)):
        spans = [a.token_span for a in r.episode.actions if a.kind.value != "answer"]
        for (start, end), lab in zip(spans, s.labels, strict=True):
            end = min(int(end), adv.shape[1])
            if end > start:
                key = f"adv/{lab.kind.value}"
                sums[key] += float(adv[i, int(start):end].sum())
                counts[key] += end - int(start)
    return {k: sums[k] / counts[k] if counts[k] else 0.0 for k in keys}


def step_diagnostics(rollouts: Sequence[Any], scores: Sequence[RewardBreakdown], group_size: int) -> dict[str, float]:
    """Every diagnostic that needs no model (see the module docstring)."""
    return {
        "diag/zero_spread_frac": zero_spread_fraction([s.total for s in scores], group_size),
        "diag/entropy": sampled_entropy(rollouts),
        "diag/distinct_crops": distinct_crops(rollouts, group_size),
        **crop_iou(scores),
        **reward_spread(scores, group_size),
    }


def start_logprobs(start: torch.nn.Module | None, model: torch.nn.Module, batch: Any, temperature: float):
    """Log-probs ``[B, Tc]`` of the batch's completion tokens under the start policy: the frozen copy ``start``, or
    the LoRA model with its adapters disabled; None when neither exists."""
    from virl_train.rollout import completion_logprobs

    with torch.no_grad():
        if start is not None:
            return completion_logprobs(start, batch, temperature)
        base = model.module if hasattr(model, "module") else model
        if not hasattr(base, "disable_adapter"):
            return None
        with base.disable_adapter():
            return completion_logprobs(base, batch, temperature)


def sampled_logprobs(rollouts: Sequence[Any], width: int) -> torch.Tensor:
    """The rollouts' sampling log-probs right-padded into ``[B, width]`` (0 where none)."""
    out = torch.zeros((len(rollouts), width))
    for i, r in enumerate(rollouts):
        if r.logprobs:
            out[i, : len(r.logprobs)] = torch.tensor(r.logprobs[:width])
    return out


def kl_to_start(start: torch.nn.Module | None, model: torch.nn.Module, batch: Any, rollouts: Sequence[Any],
                temperature: float) -> dict[str, float]:  # fmt: skip
    """``kl_estimates`` of the sampled policy (its sampling log-probs) against the start policy on this batch."""
    ref = start_logprobs(start, model, batch, temperature)
    if ref is None:
        return {}
    mask = batch.completion_mask
    logp = sampled_logprobs(rollouts, mask.shape[1]).to(mask.device)
    return kl_estimates(logp, ref.to(mask.device), mask)


__all__ = ["crop_iou", "distinct_crops", "kl_estimates", "kl_to_start", "label_advantages", "reward_spread",
           "sampled_entropy", "sampled_logprobs", "start_logprobs", "step_diagnostics", "zero_spread_fraction"]
