"""virl_train.policy: the tiny offline Qwen2.5-VL (deterministic), image encoding, chat ids, LoRA, save → load."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from PIL import Image

from virl_data.core.errors import ConfigError
from virl_train.config import LoraConfig, ModelConfig
from virl_train.policy import (
    TINY_NAME,
    Policy,
    _tiny_tokenizer_json,
    load_policy,
    save_policy,
)

SMALL = {"min_pixels": 56 * 56, "max_pixels": 224 * 224}


def _cfg(**kw) -> ModelConfig:
    lora = kw.pop("lora", LoraConfig(enabled=False))
    return ModelConfig(name_or_path=kw.pop("name_or_path", TINY_NAME), dtype=kw.pop("dtype", "float32"),
                       lora=lora, **SMALL, **kw)


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(_cfg(), seed=0)


def _noise(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray((np.random.default_rng(seed).random((h, w, 3)) * 255).astype("uint8"))


def _logits(policy: Policy, image: Image.Image, question: str = "What colour is the small square?"):
    enc = policy.encode_image(image)
    ids = torch.tensor([policy.prompt_ids("Answer the question.", question, enc)])
    with torch.no_grad():
        out = policy.model(input_ids=ids, pixel_values=enc.pixel_values, image_grid_thw=enc.image_grid_thw,
                           mm_token_type_ids=(ids == policy.image_token_id).int())
    return out.logits


# --- the tiny model and its tokenizer ----------------------------------------------------------------------------
def test_tiny_build_is_deterministic_per_seed(policy):
    again, other = load_policy(_cfg(), seed=0), load_policy(_cfg(), seed=1)
    a, b, c = policy.model.state_dict(), again.model.state_dict(), other.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    assert policy.tokenizer.get_vocab() == other.tokenizer.get_vocab()
    n = sum(p.numel() for p in policy.model.parameters())
    assert 1e5 < n < 2e6  # tiny: hidden 64, 2 layers, vision depth 2
    cfg = policy.model.config
    assert (cfg.text_config.hidden_size, cfg.text_config.num_hidden_layers, cfg.vision_config.depth) == (64, 2, 2)
    assert not policy.model.training


def test_tiny_tokenizer_is_the_same_in_another_process():
    code = ("import hashlib; from virl_train.policy import _tiny_tokenizer_json as t; "
            "print(hashlib.sha1(t().encode()).hexdigest())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == hashlib.sha1(_tiny_tokenizer_json().encode()).hexdigest()


def test_tokenizer_digits_specials_and_lossless_decoding(policy):
    tok = policy.tokenizer
    assert 600 <= len(tok) <= 2048
    ids = policy.text_ids("<crop>[120, 45, 678, 90]</crop>")
    pieces = [tok.decode([i]) for i in ids]
    assert [p for p in pieces if p.isdigit()] == list("1204567890")  # one token per digit
    for special in ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
                    "<|endoftext|>"):
        assert len(policy.text_ids(special)) == 1
    assert policy.text_ids("<|im_start|>assistant\n")[0] == policy.tokens.ids["<|im_start|>"]
    for text in ("What colour is the small square? <answer>red</answer>", "héllo ☃ {\"bbox_2d\": [1, 2]}\n"):
        assert tok.decode(policy.text_ids(text)) == text
    assert policy.image_token_id == policy.model.config.image_token_id
    assert policy.eos_id == policy.im_end_id and policy.stop_ids == {policy.im_end_id, policy.pad_id}


# --- images and the chat format ----------------------------------------------------------------------------------
def test_encode_image_gives_smart_resized_grid_and_pad_count(policy):
    # 448 x 336 with max 224² px: beta = sqrt(448·336 / 50176) = sqrt(3) → 168 x 252 (multiples of 28)
    enc = policy.encode_image(_noise(448, 336))
    assert enc.image_grid_thw.tolist() == [[1, 12, 18]] and enc.size == (252, 168)
    assert enc.n_tokens == 12 * 18 // 4 == 54
    assert enc.pixel_values.shape == (12 * 18, 3 * 2 * 14 * 14)
    ids = policy.prompt_ids("sys", "q?", enc)
    assert ids.count(policy.image_token_id) == 54
    start = ids.index(policy.vision_start_id)
    assert ids[start + 55] == policy.tokens.ids["<|vision_end|>"]
    assert policy.tokenizer.decode(ids[-3:]) == "<|im_start|>assistant\n"
    small = policy.encode_image(_noise(20, 10))  # below min_pixels: grown to at least 56² px
    assert small.n_tokens >= 4 and small.size[0] * small.size[1] >= 56 * 56


def test_env_ids_close_the_turn_and_open_the_next(policy):
    enc = policy.encode_image(_noise(56, 56))
    text = policy.tokenizer.decode(policy.env_ids("<crop_result>ok</crop_result>", enc))
    assert text.startswith("<|im_end|>\n<|im_start|>user\n<crop_result>ok</crop_result><|vision_start|>")
    assert text.endswith("<|vision_end|><|im_end|>\n<|im_start|>assistant\n")
    plain = policy.env_ids("<crop_error>bad</crop_error>", None, close_turn=False)
    assert policy.image_token_id not in plain and plain[0] != policy.im_end_id


def test_forward_runs_and_the_image_matters(policy):
    a = _logits(policy, _noise(112, 84, seed=0))
    b = _logits(policy, _noise(112, 84, seed=1))
    assert a.shape[-1] == len(policy.tokenizer) and torch.isfinite(a).all()
    assert not torch.allclose(a[0, -1], b[0, -1])  # the last text token attends to the image


# --- options: LoRA, dtype, checkpointing; save → load ------------------------------------------------------------
def test_lora_makes_only_adapters_trainable_and_starts_as_the_base(policy):
    lora = load_policy(_cfg(lora=LoraConfig(enabled=True, r=4, alpha=8, dropout=0.0)), seed=0)
    trainable = [n for n, p in lora.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert len(trainable) == 2 * 4 * 2  # A and B, q/k/v/o, 2 layers (vision attention uses qkv/proj: untouched)
    assert sum(p.numel() for p in lora.model.parameters() if not p.requires_grad) == sum(
        p.numel() for p in policy.model.parameters())
    image = _noise(112, 84)
    assert torch.allclose(_logits(lora, image), _logits(policy, image), atol=1e-5)  # lora_B starts at 0
    with pytest.raises(ConfigError, match="lora"):
        load_policy(_cfg(lora=LoraConfig(enabled=True, target_modules=["no_such_module"])))


def test_dtype_and_gradient_checkpointing():
    p = load_policy(_cfg(dtype="bfloat16", gradient_checkpointing=True))
    assert {q.dtype for q in p.model.parameters()} == {torch.bfloat16}
    assert p.model.is_activation_checkpointing
    assert torch.isfinite(_logits(p, _noise(56, 56)).float()).all()


def test_save_then_load_gives_the_same_policy_offline(tmp_path):
    p = load_policy(_cfg(lora=LoraConfig(enabled=True, r=4, alpha=8, dropout=0.0)), seed=3)
    with torch.no_grad():  # move the adapters off zero so that merging matters
        for name, q in p.model.named_parameters():
            if "lora_B" in name:
                q.add_(0.05)
    image = _noise(140, 112)
    before = _logits(p, image)
    out = save_policy(p, tmp_path / "final")
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()
    assert (out / "preprocessor_config.json").exists() and not (tmp_path / "final.tmp").exists()
    q = load_policy(_cfg(name_or_path=str(out)))
    assert torch.allclose(_logits(q, image), before, atol=1e-5)
    assert q.tokenizer.get_vocab() == p.tokenizer.get_vocab() and q.image_token_id == p.image_token_id
    assert q.encode_image(image).size == p.encode_image(image).size


def test_load_errors_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot load model"):
        load_policy(_cfg(name_or_path=str(tmp_path)))  # an empty folder: no config.json
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    plain = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, "[UNK]")),
                                    unk_token="[UNK]")
    with pytest.raises(ConfigError, match="lacks <|endoftext|>.*qwen2_5_vl chat layout"):
        Policy.from_parts(None, plain, None, _cfg())


@pytest.mark.parametrize("what", ["tower", "all"])
def test_freeze_vision_stops_gradients_into_the_encoder_only(what):
    p = load_policy(_cfg(freeze_vision=what), seed=0)
    trainable = {n for n, t in p.model.named_parameters() if t.requires_grad}
    vision = {n for n, _ in p.model.named_parameters() if ".visual." in f".{n}"}
    merger = {n for n in vision if ".merger." in n}
    assert merger and vision - merger
    assert not (vision - merger) & trainable  # the blocks and patch embedding are fixed
    assert (merger <= trainable) == (what == "tower")
    assert any(n.startswith("model.language_model") or "lm_head" in n for n in trainable)
    enc = p.encode_image(_noise(112, 112))
    ids = p.prompt_ids("You look at images.", "What colour is the small square?", enc)
    out = p.model(input_ids=torch.tensor([ids]), pixel_values=enc.pixel_values, image_grid_thw=enc.image_grid_thw)
    out.logits.sum().backward()
    grads = {n for n, t in p.model.named_parameters() if t.grad is not None}
    assert grads == trainable  # exactly the trainable ones get gradients


def test_freeze_vision_is_validated():
    from virl_train.config import load_config

    with pytest.raises(ConfigError, match="freeze_vision"):
        load_config(None, ["model.freeze_vision=encoder"])
