"""Cross-check against a peer implementation: in outcome-only single-turn mode our advantages and loss equal TRL's.

A real ``trl.GRPOTrainer`` is built on a tiny random Qwen2 causal LM (saved to a temporary folder, so TRL can build
its own reference model offline) with a fixed-value reward function. TRL generates the batch; then, on identical
inputs, TRL's ``_compute_loss`` (its fused log-prob head included) and ours (``token_logprobs`` on the same model's
logits + ``policy_loss``) must agree on the loss and on the gradients, for ``token_mean`` ↔ "bnpo"/"dapo" and
``seq_mean`` ↔ "grpo", with and without the k3 KL term, with old log-probs perturbed so that the ratio is clipped on
both sides. TRL's advantages come from its own ``_generate_and_score_completions`` (the formula is not a separate
function there), for each ``scale_rewards`` option.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
trl = pytest.importorskip("trl")
transformers = pytest.importorskip("transformers")

from datasets import Dataset  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402

from virl_train.advantages import group_advantages, normalized_credits, token_advantages  # noqa: E402
from virl_train.loss import policy_loss, token_logprobs  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # transformers' own deprecations inside TRL

G = 4  # generations per prompt
PROMPTS = ["what colour is the cat", "crop the region left of the sign"]
REWARDS = [1.0, 0.0, 0.5, 0.0, 1.2, 1.2, 1.2, 1.2]  # the second group has zero variance
TEMPERATURE = 0.7


def fixed_reward(completions, **kwargs):
    """A reward function returning fixed values in completion order (TRL's batched reward shape)."""
    return REWARDS[: len(completions)]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A tiny random Qwen2 causal LM and a small byte-level BPE tokenizer, saved offline to a folder."""
    out = tmp_path_factory.mktemp("tiny_qwen2")
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        PROMPTS * 4 + ["answer yes or no", "the small red square"],
        trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<eos>", "<unk>"],
                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()),
    )
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", eos_token="<eos>",
                                               unk_token="<unk>")
    cfg = transformers.Qwen2Config(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id, bos_token_id=None, tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    transformers.Qwen2ForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _trainer(tiny_dir, tmp_path, **args) -> trl.GRPOTrainer:
    config = trl.GRPOConfig(
        output_dir=str(tmp_path / "trl"), report_to="none", use_cpu=True, per_device_train_batch_size=2 * G,
        num_generations=G, max_completion_length=6, temperature=TEMPERATURE, save_strategy="no", seed=0,
        bf16=False, **args,  # TRL defaults to bf16 autocast, even on CPU: compare in float32
    )
    tok = transformers.AutoTokenizer.from_pretrained(tiny_dir)
    trainer = trl.GRPOTrainer(model=str(tiny_dir), reward_funcs=fixed_reward, args=config,
                              train_dataset=Dataset.from_dict({"prompt": PROMPTS}), processing_class=tok)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by the Trainer loop; we call _compute_loss directly
    return trainer


def _generate(trainer) -> dict:
    inputs = [{"prompt": p} for p in PROMPTS for _ in range(G)]  # what TRL's RepeatSampler yields
    return trainer._generate_and_score_completions(inputs)


@pytest.fixture(scope="module")
def generated(tiny_dir, tmp_path_factory):
    """One TRL-generated batch (prompt/completion ids and masks, advantages) reused by the loss cases."""
    return _generate(_trainer(tiny_dir, tmp_path_factory.mktemp("gen")))


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_group_advantages_equal_trl(tiny_dir, tmp_path, scale):
    batch = _generate(_trainer(tiny_dir, tmp_path, scale_rewards=scale))
    ours = group_advantages(torch.tensor(REWARDS), G, scale=scale)
    assert torch.allclose(batch["advantages"], ours, atol=1e-6, rtol=0)
    assert ours[G:].abs().max() == 0.0  # the zero-variance group


def _our_loss(model, inputs, *, agg, kl_coef, eps_low, eps_high, kl_is):
    """Our path: the model's plain logits → token_logprobs → policy_loss, on TRL's exact inputs."""
    prompt, completion = inputs["prompt_ids"], inputs["completion_ids"]
    mask = inputs["completion_mask"] * inputs.get("tool_mask", 1)
    ids = torch.cat([prompt, completion], dim=1)
    attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
    logits = model(input_ids=ids, attention_mask=attention, use_cache=False).logits
    logits = logits[:, prompt.shape[1] - 1 : -1]  # the logits that predict each completion token
    logp = token_logprobs(logits, completion, TEMPERATURE)
    return policy_loss(logp, inputs["old_per_token_logps"], inputs["advantages"], mask, clip_eps=eps_low,
                       clip_eps_high=eps_high, ref_logp=inputs.get("ref_per_token_logps"), kl_coef=kl_coef, agg=agg,
                       kl_importance_weight=kl_is)


def _loss_and_grads(model, fn) -> tuple[float, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = fn()
    loss.backward()
    params = [model.lm_head.weight, model.model.layers[0].self_attn.q_proj.weight, model.model.embed_tokens.weight]
    return loss.item(), [p.grad.detach().clone() for p in params]


def _perturbed_inputs(trainer, generated, *, per_token_adv: bool) -> dict:
    """TRL's batch, uneven lengths, old log-probs 0.4-σ off the current ones (ratios clip both ways), ref log-probs."""
    inputs = {k: v.clone() if torch.is_tensor(v) else v for k, v in generated.items()}
    # uneven lengths, as if some completions ended early (EOS): "grpo" and "bnpo"/"dapo" then differ
    n, length = inputs["completion_ids"].shape
    ends = torch.tensor([6, 3, 5, 2, 6, 4, 1, 6])[:n].clamp(max=length)
    inputs["completion_mask"] = (torch.arange(length)[None, :] < ends[:, None]).to(inputs["completion_mask"].dtype)
    inputs["num_items_in_batch"] = inputs["completion_mask"].sum()
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
    attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
    with torch.no_grad():
        logp, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, attention,
                                                                inputs["completion_ids"].shape[1])
    g = torch.Generator().manual_seed(7)
    inputs["old_per_token_logps"] = logp + 0.4 * torch.randn(logp.shape, generator=g)
    inputs["ref_per_token_logps"] = logp + 0.3 * torch.randn(logp.shape, generator=g)
    if per_token_adv:
        # a multi-turn-shaped case: env-inserted tokens masked through TRL's own tool_mask, per-token advantages
        tool_mask = torch.ones_like(inputs["completion_mask"])
        tool_mask[::2, 2:4] = 0
        inputs["tool_mask"] = tool_mask
        inputs["num_items_in_batch"] = (inputs["completion_mask"] * tool_mask).sum()
        hat = normalized_credits([[1.0], [-0.5], [0.2], [], [0.3, -1.0], [], [], [0.0]], G)
        spans = [[(0, 2)], [(1, 3)], [(2, 5)], [], [(0, 1), (4, 5)], [], [], [(0, 6)]]
        inputs["advantages"] = token_advantages(inputs["advantages"], hat, spans, length, eta=0.5)
    return inputs


@pytest.mark.parametrize("per_token_adv", [False, True], ids=["single_turn", "token_adv+tool_mask"])
@pytest.mark.parametrize(("beta", "kl_is"), [(0.0, False), (0.04, False), (0.04, True)],
                         ids=["no_kl", "k3", "k3_ratio_weighted"])
@pytest.mark.parametrize(("loss_type", "agg"), [("grpo", "seq_mean"), ("bnpo", "token_mean"), ("dapo", "token_mean")])
def test_policy_loss_equals_trl(tiny_dir, generated, tmp_path, loss_type, agg, beta, kl_is, per_token_adv):
    trainer = _trainer(tiny_dir, tmp_path, loss_type=loss_type, beta=beta, epsilon=0.2, epsilon_high=0.28,
                       use_bias_correction_kl=kl_is)
    model = trainer.model
    inputs = _perturbed_inputs(trainer, generated, per_token_adv=per_token_adv)
    if beta == 0.0:
        inputs.pop("ref_per_token_logps")
    trl_loss, trl_grads = _loss_and_grads(model, lambda: trainer._compute_loss(model, inputs))
    out = _our_loss(model, inputs, agg=agg, kl_coef=beta, eps_low=trainer.epsilon_low, eps_high=trainer.epsilon_high,
                   kl_is=kl_is)
    our_loss, our_grads = _loss_and_grads(model, lambda: out.loss)
    assert out.stats["clip_frac_low"] > 0 and out.stats["clip_frac_high"] > 0  # both clip branches are exercised
    assert our_loss == pytest.approx(trl_loss, abs=1e-6, rel=0)
    for ours, theirs in zip(our_grads, trl_grads, strict=True):
        assert theirs.abs().max() > 0
        assert torch.allclose(ours, theirs, atol=1e-6, rtol=1e-5)
    if beta:
        assert out.stats["kl"] == pytest.approx(trainer._metrics["train"]["kl"][-1], rel=1e-5)
    assert out.stats["clip_frac_low"] == pytest.approx(trainer._metrics["train"]["clip_ratio/low_mean"][-1], abs=1e-7)
