"""virl_train.loss: the clipped surrogate, k3 KL, aggregation, masking and token log-probs on hand-computed cases."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from virl_data.core.errors import ConfigError  # noqa: E402
from virl_train.loss import k3_kl, policy_loss, token_logprobs  # noqa: E402

# Two sequences of 3 tokens. Ratios ρ = exp(logp − old): seq 0 [1.5, 0.5, 1.1] with A = +1,
# seq 1 [1.5, 0.5, ·] with A = −1 and its last token masked (an env-inserted token).
RATIOS = torch.tensor([[1.5, 0.5, 1.1], [1.5, 0.5, 1.0]])
OLD = torch.tensor([[-1.0, -2.0, -0.5], [-3.0, -0.2, -1.0]])
ADV = torch.tensor([1.0, -1.0])
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])
# per-token surrogate −min(ρA, clip(ρ, 0.8, 1.2)A):
#   seq 0: −min(1.5, 1.2) = −1.2 (clipped high), −min(0.5, 0.8) = −0.5, −1.1
#   seq 1: −min(−1.5, −1.2) = 1.5 (a bad move is never clipped), −min(−0.5, −0.8) = 0.8 (clipped low)
SURR = [[-1.2, -0.5, -1.1], [1.5, 0.8]]


def _logp() -> torch.Tensor:
    return (OLD + RATIOS.log()).clone().requires_grad_(True)


def test_token_mean_by_hand_with_gradients():
    logp = _logp()
    out = policy_loss(logp, OLD, ADV, MASK, clip_eps=0.2, agg="token_mean")
    assert out.loss.item() == pytest.approx((-1.2 - 0.5 - 1.1 + 1.5 + 0.8) / 5)  # = −0.1
    out.loss.backward()
    # d/dlogp of −ρA is −ρA where unclipped, 0 where the clipped branch is the min; masked token: 0
    want = torch.tensor([[0.0, -0.5, -1.1], [1.5, 0.0, 0.0]]) / 5
    assert torch.allclose(logp.grad, want, atol=1e-6)
    s = out.stats
    assert (s["clip_frac_high"], s["clip_frac_low"], s["clip_frac"], s["n_tokens"]) == pytest.approx((0.2, 0.2, 0.4, 5))
    assert s["ratio_mean"] == pytest.approx((1.5 + 0.5 + 1.1 + 1.5 + 0.5) / 5)
    assert s["policy_loss"] == pytest.approx(-0.1) and "kl" not in s


def test_seq_mean_by_hand():
    logp = _logp()
    out = policy_loss(logp, OLD, ADV, MASK, agg="seq_mean")
    assert out.loss.item() == pytest.approx(((-1.2 - 0.5 - 1.1) / 3 + (1.5 + 0.8) / 2) / 2)
    out.loss.backward()
    want = torch.tensor([[0.0, -0.5 / 3, -1.1 / 3], [1.5 / 2, 0.0, 0.0]]) / 2
    assert torch.allclose(logp.grad, want, atol=1e-6)


def test_asymmetric_upper_clip():
    out = policy_loss(_logp(), OLD, ADV, MASK, clip_eps=0.2, clip_eps_high=0.28)
    assert out.loss.item() == pytest.approx((-1.28 - 0.5 - 1.1 + 1.5 + 0.8) / 5)
    wide = policy_loss(_logp(), OLD, ADV, MASK, clip_eps=0.2, clip_eps_high=0.6)  # 1.5 < 1.6: no longer clipped
    assert wide.loss.item() == pytest.approx((-1.5 - 0.5 - 1.1 + 1.5 + 0.8) / 5)
    assert wide.stats["clip_frac_high"] == 0.0


def test_k3_values_and_gradient():
    logp = torch.tensor([0.0, 0.0, -1.0], requires_grad=True)
    ref = torch.tensor([-1.0, 1.0, -1.0])
    kl = k3_kl(logp, ref)
    assert kl.tolist() == pytest.approx([math.exp(-1), math.e - 2, 0.0])
    kl.sum().backward()
    assert logp.grad.tolist() == pytest.approx([1 - math.exp(-1), 1 - math.e, 0.0])  # d/dlogp = 1 − e^(ref − logp)


def test_kl_term_is_added_per_token():
    logp = _logp()
    ref = logp.detach() + torch.tensor([[-1.0, 0.0, 1.0], [0.5, 0.0, 7.0]])
    k = [[math.exp(-1), 0.0, math.e - 2], [math.exp(0.5) - 1.5, 0.0]]
    out = policy_loss(logp, OLD, ADV, MASK, ref_logp=ref, kl_coef=0.1)
    want = sum(SURR[0]) + sum(SURR[1]) + 0.1 * (sum(k[0]) + sum(k[1]))
    assert out.loss.item() == pytest.approx(want / 5)
    assert out.stats["kl"] == pytest.approx((sum(k[0]) + sum(k[1])) / 5)  # the masked 7.0 does not count
    seq = policy_loss(logp, OLD, ADV, MASK, ref_logp=ref, kl_coef=0.1, agg="seq_mean")
    per_seq = [(sum(SURR[0]) + 0.1 * sum(k[0])) / 3, (sum(SURR[1]) + 0.1 * sum(k[1])) / 2]
    assert seq.loss.item() == pytest.approx(sum(per_seq) / 2)
    logged_only = policy_loss(logp, OLD, ADV, MASK, ref_logp=ref, kl_coef=0.0)
    assert logged_only.loss.item() == pytest.approx(-0.1) and logged_only.stats["kl"] > 0


def test_ratio_weighted_kl_changes_the_gradient_not_the_on_policy_value():
    logp = torch.tensor([[0.0, -1.0]], requires_grad=True)
    ref = torch.tensor([[-1.0, 0.0]])
    adv, mask = torch.zeros(1), torch.ones(1, 2)
    plain = policy_loss(logp, logp.detach(), adv, mask, ref_logp=ref, kl_coef=1.0)
    weighted = policy_loss(logp, logp.detach(), adv, mask, ref_logp=ref, kl_coef=1.0, kl_importance_weight=True)
    k = [math.exp(-1), math.e - 2]
    assert plain.loss.item() == pytest.approx(sum(k) / 2) and weighted.loss.item() == pytest.approx(sum(k) / 2)
    (g_plain,) = torch.autograd.grad(plain.loss, logp)
    (g_weighted,) = torch.autograd.grad(weighted.loss, logp)
    # d(k3)/dlogp = 1 − e^(ref − logp); d(ρ·k3)/dlogp at ρ = 1 adds k3 (the score-function term)
    assert g_plain[0].tolist() == pytest.approx([(1 - math.exp(-1)) / 2, (1 - math.e) / 2])
    assert g_weighted[0].tolist() == pytest.approx([(1 - math.exp(-1) + k[0]) / 2, (1 - math.e + k[1]) / 2])
    off = policy_loss(logp, logp.detach() - 0.5, adv, mask, ref_logp=ref, kl_coef=1.0, kl_importance_weight=True)
    assert off.stats["kl"] == pytest.approx(math.exp(0.5) * sum(k) / 2)  # ρ = e^0.5 weights the estimate


def test_on_policy_value_is_minus_mean_advantage():
    # old = logp.detach() → ρ = 1: the loss is −mean(A) and its gradient −A/n (the REINFORCE direction)
    logp = torch.randn(3, 4, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    adv = torch.tensor([[0.5, 0.5, -1.0, 2.0], [1.0, 1.0, 1.0, 1.0], [-2.0, 0.0, 0.0, 0.0]])
    mask = torch.ones(3, 4)
    out = policy_loss(logp, logp.detach(), adv, mask)
    assert out.loss.item() == pytest.approx(-adv.mean().item())
    out.loss.backward()
    assert torch.allclose(logp.grad, -adv / 12)


def test_per_sequence_and_per_token_advantages_agree():
    a = policy_loss(_logp(), OLD, ADV, MASK).loss
    b = policy_loss(_logp(), OLD, ADV[:, None].expand(2, 3), MASK).loss
    assert a.item() == b.item()


def test_masked_tokens_contribute_nothing_even_when_not_finite():
    logp = _logp()
    bad = logp.detach().clone()
    bad[1, 2] = float("nan")
    logp_bad = (torch.where(MASK.bool(), logp, bad)).detach().requires_grad_(True)
    old = OLD.clone()
    old[1, 2] = float("inf")
    ref = logp.detach().clone()
    ref[1, 2] = float("-inf")
    adv = ADV[:, None].expand(2, 3).clone()
    adv[1, 2] = 1e30
    out = policy_loss(logp_bad, old, adv, MASK, ref_logp=ref, kl_coef=0.5)
    assert out.loss.item() == pytest.approx(-0.1)  # ref = logp on the kept tokens → k3 = 0
    out.loss.backward()
    assert torch.isfinite(logp_bad.grad).all() and logp_bad.grad[1, 2] == 0.0


def test_fully_masked_sequence_counts_as_zero_in_seq_mean():
    mask = torch.tensor([[1, 1, 1], [0, 0, 0]])
    out = policy_loss(_logp(), OLD, ADV, mask, agg="seq_mean")
    assert out.loss.item() == pytest.approx(sum(SURR[0]) / 3 / 2)  # TRL "grpo" divides by the number of sequences
    assert policy_loss(_logp(), OLD, ADV, torch.zeros(2, 3)).loss.item() == 0.0


@pytest.mark.parametrize(
    ("kw", "error"),
    [
        ({"agg": "sum"}, ConfigError),
        ({"clip_eps": -0.1}, ConfigError),
        ({"kl_coef": 0.1}, ValueError),  # no ref_logp
        ({"kl_coef": -1.0, "ref_logp": OLD}, ConfigError),
    ],
)
def test_bad_options(kw, error):
    with pytest.raises(error):
        policy_loss(_logp(), OLD, ADV, MASK, **kw)


def test_shape_mismatch():
    with pytest.raises(ValueError, match="old_logp"):
        policy_loss(_logp(), OLD[:, :2], ADV, MASK)
    with pytest.raises(ValueError, match="advantages"):
        policy_loss(_logp(), OLD, torch.ones(3), MASK)


# --- token_logprobs --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_logprobs_equals_log_softmax_gather(temperature):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 5, 11, generator=g, dtype=torch.float64).requires_grad_(True)
    targets = torch.randint(0, 11, (3, 5), generator=g)
    got = token_logprobs(logits, targets, temperature)
    want = torch.log_softmax(logits / temperature, dim=-1).gather(-1, targets[..., None]).squeeze(-1)
    assert torch.allclose(got, want, atol=1e-12)
    (g1,) = torch.autograd.grad(got.sum(), logits)
    (g2,) = torch.autograd.grad(want.sum(), logits)
    assert torch.allclose(g1, g2, atol=1e-12)


def test_token_logprobs_finite_for_large_logits_and_low_precision():
    logits = torch.tensor([[[1e4, 0.0, -1e4], [1e4, 1e4, 0.0], [3e38, 3e38, -3e38]]])
    got = token_logprobs(logits, torch.tensor([[1, 0, 2]]))
    assert torch.isfinite(got[0, :2]).all()  # a naive log(softmax) gives −inf / NaN here
    assert got[0, :2].tolist() == pytest.approx([-1e4, -math.log(2)], abs=1e-3)  # float32 ulp at 1e4 ≈ 1e-3
    assert got[0, 2].item() < -1e38 and not torch.isnan(got).any()
    bf = torch.randn(2, 4, 7, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    t = torch.randint(0, 7, (2, 4), generator=torch.Generator().manual_seed(3))
    lp = token_logprobs(bf, t)
    assert lp.dtype == torch.float32
    assert torch.allclose(lp, torch.log_softmax(bf.float(), -1).gather(-1, t[..., None]).squeeze(-1), atol=1e-6)


def test_token_logprobs_ignores_negative_targets_and_checks_shapes():
    logits = torch.zeros(1, 3, 4)
    got = token_logprobs(logits, torch.tensor([[0, -100, 3]]))
    assert got[0].tolist() == pytest.approx([-math.log(4), 0.0, -math.log(4)])
    with pytest.raises(ValueError):
        token_logprobs(logits, torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ConfigError):
        token_logprobs(logits, torch.zeros(1, 3, dtype=torch.long), temperature=0.0)
