"""The GRPO policy loss: token log-probs, clipped surrogate, optional k3 KL, token-level aggregation.

Per completion token t of sequence i (only where ``mask[i, t] = 1``; env-inserted and padding tokens are 0)::

    ρ        = exp(logp − old_logp)
    surr     = −min(ρ·A, clip(ρ, 1 − ε, 1 + ε_high)·A)
    k3       = exp(ref − logp) − (ref − logp) − 1              (≥ 0, unbiased KL(π‖π_ref) estimator)
    ℓ[i, t]  = surr + kl_coef·k3        (or kl_coef·ρ·k3 with kl_importance_weight: samples come from π_old, and
                                         the ratio makes the KL gradient the unbiased reverse-KL gradient even
                                         on-policy, where ρ = 1 in value; TRL's ``use_bias_correction_kl``)
    token_mean: L = Σ_{i,t} m·ℓ / Σ_{i,t} m                     (TRL loss_type "dapo" / "bnpo")
    seq_mean:   L = mean_i ( Σ_t m·ℓ / Σ_t m )                  (TRL loss_type "grpo")

In outcome-only single-turn mode this equals TRL's GRPOTrainer loss on identical inputs
(``tests/train/test_trl_crosscheck.py`` checks the value and the gradients).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from virl_data.core.errors import ConfigError

AGGS = ("token_mean", "seq_mean")


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``log softmax(logits / temperature)[b, t, targets[b, t]]`` as ``[B, T]`` float32.

    Memory-lean: one sequence at a time, ``gathered − logsumexp``, so no ``[B, T, V]`` log-softmax copy is kept
    (bf16/fp16 rows are upcast to float32 one row at a time; the only per-row copy kept for backward is the
    temperature-scaled row when ``temperature != 1``). Numerically stable for large logits (logsumexp). Negative
    targets (``-100`` padding) give 0.

    >>> token_logprobs(torch.zeros(1, 1, 4), torch.tensor([[2]])).item()  # uniform over 4 → log(1/4)
    -1.3862...
    """
    if logits.dim() != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(f"token_logprobs: logits [B, T, V] and targets [B, T] expected, got "
                         f"{tuple(logits.shape)} and {tuple(targets.shape)}")
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")
    ignore = targets < 0
    safe = targets.clamp(min=0).long()
    rows = []
    for row, tgt in zip(logits, safe, strict=True):
        row = row.float() if row.dtype in (torch.float16, torch.bfloat16) else row
        if temperature != 1.0:
            row = row / temperature
        picked = row.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
        rows.append(picked - torch.logsumexp(row, dim=-1))
    out = torch.stack(rows)
    return out.masked_fill(ignore, 0.0) if ignore.any() else out


@dataclass
class LossOutput:
    """The scalar loss to backpropagate and float statistics for logging.

    ``stats``: ``policy_loss`` (surrogate alone), ``kl`` (mean k3, ρ-weighted with ``kl_importance_weight``; only
    when ``ref_logp`` is given), ``ratio_mean``,
    ``clip_frac_low`` (ρ < 1−ε with A < 0), ``clip_frac_high`` (ρ > 1+ε_high with A > 0), ``clip_frac`` (either),
    ``adv_mean``, ``n_tokens`` — token means over the masked tokens.
    """

    loss: torch.Tensor
    stats: dict[str, float] = field(default_factory=dict)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(π‖π_ref): ``exp(ref − logp) − (ref − logp) − 1``, ≥ 0 (0 where equal).

    >>> round(k3_kl(torch.tensor([0.0]), torch.tensor([-1.0])).item(), 4)  # e^-1 + 1 − 1
    0.3679
    """
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def _aggregate(per_token: torch.Tensor, mask: torch.Tensor, agg: str) -> torch.Tensor:
    """``token_mean`` = Σ m·ℓ / Σ m over the batch; ``seq_mean`` = mean over sequences of per-sequence means."""
    if agg == "token_mean":
        return (per_token * mask).sum() / mask.sum().clamp(min=1.0)
    return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> float:
    return float((x.detach() * mask).sum() / mask.sum().clamp(min=1.0))


def _check(logp, old_logp, advantages, mask, ref_logp, kl_coef, clip_eps, clip_eps_high, agg) -> None:
    if agg not in AGGS:
        raise ConfigError(f"loss agg: expected one of {', '.join(AGGS)}, got {agg!r}")
    if clip_eps < 0 or (clip_eps_high is not None and clip_eps_high < 0):
        raise ConfigError(f"clip_eps must be ≥ 0, got {clip_eps} / {clip_eps_high}")
    if kl_coef < 0:
        raise ConfigError(f"kl_coef must be ≥ 0, got {kl_coef}")
    if kl_coef > 0 and ref_logp is None:
        raise ValueError("policy_loss: kl_coef > 0 needs ref_logp")
    shape = logp.shape
    others = {"old_logp": old_logp, "mask": mask, "ref_logp": ref_logp}
    for name, t in others.items():
        if t is not None and t.shape != shape:
            raise ValueError(f"policy_loss: {name} has shape {tuple(t.shape)}, logp has {tuple(shape)}")
    if logp.dim() != 2 or advantages.shape not in (shape, shape[:1], (shape[0], 1)):
        raise ValueError(f"policy_loss: advantages must be [B] or [B, T] for logp [B, T], got "
                         f"{tuple(advantages.shape)} and {tuple(shape)}")


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_eps: float = 0.2,
    clip_eps_high: float | None = None,
    ref_logp: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    agg: str = "token_mean",
    kl_importance_weight: bool = False,
) -> LossOutput:
    """GRPO clipped surrogate (+ ``kl_coef``·k3) over the masked tokens; see the module docstring for the formula.

    ``logp`` ``[B, T]`` carries the gradient; ``old_logp`` (behaviour policy) and ``ref_logp`` are treated as
    constants; ``advantages`` is ``[B]`` (one per sequence) or ``[B, T]`` (per token); ``mask`` ``[B, T]`` is 1 on
    the policy's own tokens. Masked positions contribute exactly nothing, to the value and to the gradient, even
    when their inputs are not finite. ``clip_eps_high`` None = ``clip_eps`` (symmetric). ``kl_importance_weight``
    multiplies k3 by the (differentiable) ratio ρ, as TRL does by default (``use_bias_correction_kl=True``); off by
    default here, the plain GRPO/DeepSeekMath objective.

    Example: ρ = 1.5, A = +1, ε = 0.2 → surr = −min(1.5, 1.2) = −1.2 (clipped, no gradient);
    ρ = 0.5, A = −1 → surr = −min(−0.5, −0.8) = 0.8 (clipped); ρ = 1.5, A = −1 → 1.5 (unclipped: a bad
    move is always penalized).
    """
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)
    _check(logp, old_logp, advantages, mask, ref_logp, kl_coef, clip_eps, clip_eps_high, agg)
    eps_high = clip_eps if clip_eps_high is None else clip_eps_high
    keep = mask.bool()
    m = keep.to(logp.dtype)
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    # sanitize masked positions first, so a non-finite value there cannot leak NaN into the value or the gradient
    logp_k = torch.where(keep, logp, zero)
    old = torch.where(keep, old_logp.detach(), zero)
    adv = torch.where(keep, advantages.detach().to(logp.dtype).expand_as(logp), zero)
    ratio = torch.exp(logp_k - old)
    clipped = torch.clamp(ratio, 1 - clip_eps, 1 + eps_high)
    surrogate = -torch.min(ratio * adv, clipped * adv)
    per_token = surrogate
    stats: dict[str, float] = {}
    if ref_logp is not None:
        kl = k3_kl(logp_k, torch.where(keep, ref_logp.detach(), zero))
        if kl_importance_weight:
            kl = ratio * kl
        stats["kl"] = _masked_mean(kl, m)
        if kl_coef > 0:
            per_token = per_token + kl_coef * kl
    loss = _aggregate(torch.where(keep, per_token, zero), m, agg)
    low = (ratio < 1 - clip_eps) & (adv < 0)
    high = (ratio > 1 + eps_high) & (adv > 0)
    stats.update(
        policy_loss=float(_aggregate(torch.where(keep, surrogate, zero).detach(), m, agg)),
        ratio_mean=_masked_mean(ratio, m),
        clip_frac_low=_masked_mean(low.to(m.dtype), m),
        clip_frac_high=_masked_mean(high.to(m.dtype), m),
        clip_frac=_masked_mean((low | high).to(m.dtype), m),
        adv_mean=_masked_mean(adv, m),
        n_tokens=float(m.sum()),
    )
    return LossOutput(loss, stats)


__all__ = ["AGGS", "LossOutput", "k3_kl", "policy_loss", "token_logprobs"]
