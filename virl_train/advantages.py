"""Advantages: GRPO group-normalized trajectory advantages plus ViRL's per-action credit on token spans.

The three stages (VIRL_METHOD.md §3), each a pure function::

    A_out[i]  = (R_i − mean_g R) / (std_g R + ε)              group_advantages   (one value per episode)
    Â[i][k]   = (c_ik − mean_g c) / (std_g c + ε)              normalized_credits (over ALL actions of the group)
    A[i, t]   = A_out[i] + η·Â[i][k]  for t in span_k(i)       token_advantages   (one value per completion token)
              = A_out[i]              elsewhere (answer tokens; env tokens are removed later by the loss mask)

``std`` is the unbiased (Bessel-corrected) standard deviation and ε = 1e-4, as in TRL's GRPOTrainer, so in
outcome-only mode (all c_ik = 0, hence Â = 0) the token advantages are exactly TRL's A_out on every token.

Example: a group of 2 episodes with rewards [1, 0] gets A_out ≈ [0.7070, −0.7070] (std = 0.7071, + ε); the
first episode's crop with credit 1.0 against the second's −0.5 gets Â ≈ [0.7070], [−0.7070] and, with η = 0.5,
its span tokens carry 0.7070 + 0.3535 = 1.0605; the second episode's answer tokens carry −0.7070.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from virl_data.core.errors import ConfigError

SCALES = ("group", "batch", "none")
EPS = 1e-4


def _unbiased_std(x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Bessel-corrected std; 0 where fewer than 2 values (TRL returns NaN there and then a 0 advantage)."""
    n = x.numel() if dim is None else x.shape[dim]
    if n < 2:
        return torch.zeros_like(x.mean() if dim is None else x.mean(dim=dim))
    return x.std() if dim is None else x.std(dim=dim)


def group_advantages(
    rewards: torch.Tensor, group_size: int, *, scale: str = "group", eps: float = EPS
) -> torch.Tensor:
    """GRPO trajectory advantages ``[N]`` for ``N = n_groups·group_size`` rewards laid out group after group.

    ``A_i = (r_i − mean_g) / (σ + eps)`` with ``mean_g`` the mean of episode i's group and σ the unbiased std of
    that group (``scale="group"``), of the whole batch (``"batch"``), or no division at all (``"none"``) — TRL's
    ``scale_rewards`` options. A group whose rewards are all equal gets exactly 0.

    >>> group_advantages(torch.tensor([1.0, 0.0, 2.0, 2.0]), 2).tolist()
    [0.7070..., -0.7070..., 0.0, 0.0]
    """
    if scale not in SCALES:
        raise ConfigError(f"advantage scale: expected one of {', '.join(SCALES)}, got {scale!r}")
    if group_size < 1:
        raise ConfigError(f"group_size must be ≥ 1, got {group_size}")
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(
            f"group_advantages: need a 1-D tensor of n·{group_size} rewards, got shape {tuple(rewards.shape)}"
        )
    if not torch.isfinite(rewards).all():
        raise ValueError("group_advantages: rewards must be finite")
    grouped = rewards.view(-1, group_size)
    centred = (grouped - grouped.mean(dim=1, keepdim=True)).reshape(-1)
    if scale == "none":
        return centred
    if scale == "group":
        std = _unbiased_std(grouped, dim=1).repeat_interleave(group_size)
    else:
        std = _unbiased_std(rewards).expand_as(rewards)
    return centred / (std + eps)


def normalized_credits(
    credits: Sequence[Sequence[float]], group_size: int, eps: float = EPS
) -> list[list[float]]:
    """Step credits normalized over all actions of each group: ``Â_ik = (c_ik − μ_g) / (σ_g + eps)``.

    ``credits[i]`` are episode i's step credits c_k (``RewardBreakdown.per_action``), episodes laid out group after
    group. μ_g and σ_g (unbiased std) pool every action of the group's episodes, so an action is judged against the
    other actions taken for the same prompt. Choice for degenerate groups: a group with fewer than 2 actions, or
    whose credits are all equal (e.g. every switch off, all c = 0), gets Â = 0 — it has nothing to be compared
    with, and its tokens keep exactly A_out (plain GRPO).

    >>> normalized_credits([[1.0], [-0.5, -0.5]], 2)
    [[1.1545...], [-0.5772..., -0.5772...]]
    """
    if group_size < 1:
        raise ConfigError(f"group_size must be ≥ 1, got {group_size}")
    if len(credits) % group_size:
        raise ValueError(f"normalized_credits: {len(credits)} episodes are not whole groups of {group_size}")
    out: list[list[float]] = []
    for g in range(0, len(credits), group_size):
        episodes = [np.asarray(c, dtype=np.float64).reshape(-1) for c in credits[g : g + group_size]]
        pooled = np.concatenate(episodes) if episodes else np.zeros(0)
        if not np.isfinite(pooled).all():
            raise ValueError(f"normalized_credits: non-finite step credit in group {g // group_size}")
        if pooled.size < 2 or pooled.max() == pooled.min():
            out.extend([0.0] * len(c) for c in episodes)
            continue
        mu, sigma = pooled.mean(), pooled.std(ddof=1)
        out.extend(((c - mu) / (sigma + eps)).tolist() for c in episodes)
    return out


def _check_spans(i: int, spans: Sequence[tuple[int, int]], length: int) -> None:
    """Spans must be ``0 ≤ start ≤ end ≤ length``; non-empty spans must not overlap (a rollout bug otherwise)."""
    last_end = 0
    for start, end in sorted((int(s), int(e)) for s, e in spans):
        if not 0 <= start <= end <= length:
            raise ValueError(f"token_advantages: episode {i} span [{start}, {end}) is outside [0, {length})")
        if start < end:
            if start < last_end:
                raise ValueError(f"token_advantages: episode {i} has overlapping action spans at token {start}")
            last_end = end


def token_advantages(
    a_out: torch.Tensor,
    credit_hat: Sequence[Sequence[float]],
    spans: Sequence[Sequence[tuple[int, int]]],
    length: int,
    eta: float,
) -> torch.Tensor:
    """Per-token advantages ``[N, length]``: ``A_out[i]`` everywhere, plus ``η·Â[i][k]`` on ``spans[i][k]``.

    ``spans[i][k] = (start, end)`` is action k's ``[start, end)`` in completion coordinates (its reasoning text and
    the action; ``(0, 0)`` = unknown, adds nothing). Answer tokens lie outside every action span and keep A_out;
    env-inserted tokens get a value too, which the loss mask then removes. ``eta = 0`` (or all Â = 0) gives plain
    GRPO: every token carries exactly A_out.

    >>> token_advantages(torch.tensor([1.0]), [[2.0]], [[(1, 3)]], 4, 0.5).tolist()
    [[1.0, 2.0, 2.0, 1.0]]
    """
    if a_out.dim() != 1:
        raise ValueError(f"token_advantages: a_out must be 1-D, got shape {tuple(a_out.shape)}")
    n = a_out.numel()
    if len(credit_hat) != n or len(spans) != n:
        raise ValueError(
            f"token_advantages: {n} advantages but {len(credit_hat)} credit lists and {len(spans)} span lists"
        )
    if not math.isfinite(eta):
        raise ConfigError(f"eta must be finite, got {eta}")
    adv = a_out.unsqueeze(1).repeat(1, length)
    for i, (hat, sp) in enumerate(zip(credit_hat, spans, strict=True)):
        if len(hat) != len(sp):
            raise ValueError(f"token_advantages: episode {i} has {len(hat)} step credits but {len(sp)} action spans")
        _check_spans(i, sp, length)
        for value, (start, end) in zip(hat, sp, strict=True):
            if value and end > start:
                adv[i, int(start) : int(end)] += eta * float(value)
    return adv


__all__ = ["EPS", "SCALES", "group_advantages", "normalized_credits", "token_advantages"]
