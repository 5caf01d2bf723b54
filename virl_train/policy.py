"""The policy: an image-text-to-text model of one supported family, its tokenizer and image processor, optional LoRA.

``load_policy(cfg.model)`` gives a ``Policy``; its ``family`` (``virl_train.models``: Qwen2-VL, Qwen2.5-VL, Qwen3-VL,
Idefics3 / SmolVLM) knows the chat layout, the vision placeholders, the rotary positions and the box convention, so
the rollout, SFT, loss and evaluation code never name a model:

- ``name_or_path: tiny-qwen2.5-vl`` (``tiny-qwen2-vl``, ``tiny-qwen3-vl``, ``tiny-idefics3``) builds a tiny random
  model of that family offline (tests, CPU runs): hidden 64, 2 text layers, vision depth 2, a ~1k byte-level BPE
  tokenizer trained in-process on a fixed corpus (the system prompts, tool texts, action tags and the demo world's
  words; one token per digit) plus the family's special tokens. Same ``seed`` → same weights and vocabulary; builds
  in about a second; nothing is written to disk.
- anything else (a hub name or a local folder, e.g. one written by ``save_policy``) loads through
  ``AutoModelForImageTextToText``; the family comes from ``model.family`` or the checkpoint's ``config.json``
  (an unsupported architecture is a one-line error naming the supported ones). The image processor is the family's
  PIL one (CPU torch cannot import torchvision); the stock ``AutoProcessor`` is kept for saving where it imports.
- ``model.lora.enabled`` wraps the model in peft LoRA adapters (only they are trainable);
  ``gradient_checkpointing`` turns it on (non-reentrant); ``dtype`` sets the parameter dtype.

Example:
    >>> from virl_train.config import ModelConfig
    >>> policy = load_policy(ModelConfig(name_or_path="tiny-qwen2.5-vl", dtype="float32"))   # doctest: +SKIP
    >>> policy.encode_image(image).n_tokens   # a 224 x 224 image → 16 x 16 patches → 64 tokens   # doctest: +SKIP
    64
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from virl_data.core.errors import ConfigError
from virl_train.config import LoraConfig, ModelConfig
from virl_train.models import FAMILIES, TINY_NAMES, Family, family_for
from virl_train.models.base import DTYPES, EncodedImage, TokenIds, tiny_tokenizer_json
from virl_train.models.qwen2_vl import QWEN_SPECIAL_TOKENS

TINY_NAME = "tiny-qwen2.5-vl"
"""``model.name_or_path`` that builds the tiny random Qwen2.5-VL offline (``models.TINY_NAMES`` has every family's)."""


@dataclass
class Policy:
    """Model + tokenizer + image processor + the ``ModelConfig`` they were loaded with, its family and token ids.

    ``model`` may be replaced (e.g. by the trainer's unwrapped model); ``processor`` is the stock processor when
    one was loaded (saved with the policy), else None. ``im_end_id`` is the family's turn end (``<|im_end|>``,
    ``<end_of_utterance>``), ``vision_start_id`` the token that opens each image block (one per image).
    """

    model: Any
    tokenizer: Any
    image_processor: Any
    config: ModelConfig
    family: Family
    tokens: TokenIds
    processor: Any = None
    stop_ids: frozenset[int] = field(default_factory=frozenset)
    banned_ids: tuple[int, ...] = ()

    @classmethod
    def from_parts(cls, model: Any, tokenizer: Any, image_processor: Any, config: ModelConfig, processor: Any = None,
                   family: Family | None = None):  # fmt: skip
        """Look the family's chat/vision token ids up in ``tokenizer``; ConfigError if it lacks them."""
        family = family or family_for(config)
        tok = family.token_ids(tokenizer, config.name_or_path)
        stops = {tok.turn_end, tok.eos} | {tok.ids[t] for t in ("<|endoftext|>",) if t in tok.ids}
        banned = tuple(sorted(tok.ids[t] for t in family.never_sampled))
        return cls(model, tokenizer, image_processor, config, family, tok, processor, frozenset(stops), banned)

    @property
    def image_token_id(self) -> int:
        return self.tokens.image

    @property
    def vision_start_id(self) -> int:
        return self.tokens.image_start

    @property
    def im_end_id(self) -> int:
        return self.tokens.turn_end

    @property
    def eos_id(self) -> int:
        return self.tokens.eos

    @property
    def pad_id(self) -> int:
        return self.tokens.pad

    # --- images and chat text --------------------------------------------------------------------------------------
    def encode_image(self, image: Image.Image) -> EncodedImage:
        """The family's processor on ``image`` (Qwen: ``smart_resize`` within ``min_pixels`` / ``max_pixels``;
        Idefics3: padded to a square, one fixed size)."""
        return self.family.encode_image(self.image_processor, image, self.config)

    def text_ids(self, text: str) -> list[int]:
        """``text`` → token ids, no BOS/EOS added (special-token strings such as ``<|im_end|>`` are recognised)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def image_ids(self, image: EncodedImage) -> list[int]:
        """The placeholder block of one image (Qwen: ``<|vision_start|>`` + n × ``<|image_pad|>`` +
        ``<|vision_end|>``)."""
        return self.family.image_ids(self.tokens, image)

    def prompt_ids(self, system: str, question: str, image: EncodedImage) -> list[int]:
        """System prompt, then the user turn with the image before the question, then the model turn's opening."""
        before, after = self.family.prompt_text(system)
        return self.text_ids(before) + self.image_ids(image) + self.text_ids(after.format(question=question))

    def env_ids(self, text: str, image: EncodedImage | None = None, *, close_turn: bool = True) -> list[int]:
        """The environment's reply: the model turn's end (left out when ``close_turn`` is False, i.e. the model
        already emitted it), a user turn with ``text`` + the image (if any), then the next model turn's opening."""
        before, after = self.family.env_text(close_turn)
        ids = self.text_ids(before.format(text=text)) + (self.image_ids(image) if image is not None else [])
        return ids + self.text_ids(after)

    # --- model helpers ---------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def positions(self, row: torch.Tensor, images: Sequence[EncodedImage]) -> torch.Tensor:
        """Rotary positions ``[P, 1, T]`` of the ids ``row`` ``[1, T]`` from 0 (P = 3 for M-RoPE families)."""
        return self.family.positions(self.model, row, images, self.tokens)

    def image_inputs(self, images: Sequence[EncodedImage], input_ids: torch.Tensor, device: Any) -> dict[str, Any]:
        """The model's image keyword arguments for a forward over ``input_ids`` holding ``images``' placeholders."""
        return self.family.image_inputs(images, input_ids, self.tokens, device)


# --- the tiny offline models -----------------------------------------------------------------------------------------
def _tiny_tokenizer_json() -> str:
    """The tiny Qwen tokenizer, serialised."""
    return tiny_tokenizer_json(QWEN_SPECIAL_TOKENS)


def tiny_tokenizer() -> Any:
    """A fresh tiny Qwen ``PreTrainedTokenizerFast`` (eos ``<|im_end|>``, pad ``<|endoftext|>``)."""
    return FAMILIES["qwen2_5_vl"].tiny_tokenizer()


def build_tiny(cfg: ModelConfig, seed: int = 0) -> tuple[Any, Any, Any]:
    """``(model, tokenizer, image_processor)`` of the tiny random model ``cfg.name_or_path`` names (default the
    tiny Qwen2.5-VL); weights seeded by ``seed`` without touching the global RNG."""
    family = TINY_NAMES.get(cfg.name_or_path, FAMILIES["qwen2_5_vl"]) if cfg.family == "auto" else FAMILIES[cfg.family]
    return family.build_tiny(cfg, seed)


# --- loading pretrained checkpoints ----------------------------------------------------------------------------------
def has_torchvision() -> bool:
    """Whether torchvision imports (the stock Qwen processors need it; CPU torch here cannot use the PyPI wheel)."""
    if importlib.util.find_spec("torchvision") is None:
        return False
    try:
        import torchvision  # noqa: F401
    except (ImportError, OSError, RuntimeError):  # a wheel for another torch: "operator torchvision::nms ..."
        return False
    return True


def _load_pretrained(cfg: ModelConfig, family: Family) -> tuple[Any, Any, Any, Any]:
    """``(model, tokenizer, image_processor, processor | None)``: the family's PIL image processor always (no
    torchvision needed); the stock processor too where torchvision imports (written back by ``save_policy``)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

    name = cfg.name_or_path
    try:
        model = AutoModelForImageTextToText.from_pretrained(name, dtype=DTYPES[cfg.dtype])
        tokenizer = AutoTokenizer.from_pretrained(name)
        image_processor = family.image_processor(cfg, name, model.config)
        processor = None
        if has_torchvision():
            proc = AutoProcessor.from_pretrained(name)
            processor = proc if hasattr(proc, "tokenizer") and hasattr(proc, "image_processor") else None
    except (OSError, ValueError) as exc:  # no such folder / not downloadable / no model config: said in one line
        raise ConfigError(f"cannot load model {name!r}: {str(exc).splitlines()[0]}") from None
    return model, tokenizer, image_processor, processor


def with_lora(model: Any, lora: LoraConfig) -> Any:
    """``model`` wrapped in peft LoRA adapters ``(r, alpha, dropout, target_modules)``; base weights frozen."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    peft_cfg = PeftLoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(lora.target_modules)
    )
    try:
        return get_peft_model(model, peft_cfg)
    except ValueError as exc:  # e.g. target modules not found in the model
        raise ConfigError(f"model.lora: {exc}") from None


def enable_checkpointing(model: Any) -> None:
    """Non-reentrant activation (gradient) checkpointing; ``activation_checkpointing_enable`` is the transformers
    5.x name of ``gradient_checkpointing_enable``."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


VISION_MODULES = (".visual.", ".vision_model.")
"""Where a family keeps its vision encoder (Qwen: ``visual``, Idefics3: ``vision_model``)."""
CONNECTORS = (".merger.", ".connector.")
"""The vision→text connector (Qwen: the patch merger inside ``visual``, Idefics3: ``connector`` beside it)."""


def freeze_vision(model: Any, what: str) -> int:
    """Stop gradients into the vision encoder: ``tower`` = every vision parameter but the connector's (Qwen's patch
    merger, Idefics3's connector), ``all`` = the connector too, ``none`` = nothing. Returns how many parameter tensors
    were frozen. (Small random encoders trained with Adam at language-model learning rates drift and lose what tells
    colours apart; large pretrained ones are commonly kept fixed for the same reason.)"""
    if what == "none":
        return 0
    frozen = 0
    for name, param in model.named_parameters():
        dotted = f".{name}"
        connector = any(c in dotted for c in CONNECTORS)
        vision = any(v in dotted for v in VISION_MODULES)
        if (vision and not connector) or (what == "all" and connector):
            param.requires_grad_(False)
            frozen += 1
    if frozen == 0:
        raise ConfigError(f"model.freeze_vision={what}: the model has no parameters under a vision module")
    return frozen


def load_policy(cfg: ModelConfig, *, seed: int = 0) -> Policy:
    """The policy ``cfg`` names (see the module docstring); ``seed`` only matters for the tiny models."""
    family = family_for(cfg)
    if cfg.name_or_path in TINY_NAMES:
        model, tokenizer, image_processor = family.build_tiny(cfg, seed)
        processor = None
    else:
        model, tokenizer, image_processor, processor = _load_pretrained(cfg, family)
    if cfg.gradient_checkpointing:
        enable_checkpointing(model)
    if cfg.lora.enabled:
        model = with_lora(model, cfg.lora)
    freeze_vision(model, cfg.freeze_vision)
    return Policy.from_parts(model, tokenizer, image_processor, cfg, processor, family)


def save_policy(policy: Policy, out_dir: str | os.PathLike[str], *, merge_lora: bool = True) -> Path:
    """Write model (safetensors), tokenizer and image processor (or the stock processor) to ``out_dir`` so that
    ``load_policy(ModelConfig(name_or_path=out_dir))`` loads it offline. LoRA adapters are merged into a copy of
    the model (``merge_lora``; costs one model copy of memory) so the folder is a plain HF checkpoint; without
    merging, peft's adapter folder is written instead. Written to ``<out_dir>.tmp`` and renamed (atomic)."""
    out, model = Path(out_dir), policy.model
    if merge_lora and hasattr(model, "merge_and_unload"):
        import copy

        model = copy.deepcopy(model).merge_and_unload()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    if policy.processor is not None:
        policy.processor.save_pretrained(tmp)
    else:
        policy.tokenizer.save_pretrained(tmp)
        policy.image_processor.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


__all__ = [
    "DTYPES",
    "TINY_NAME",
    "EncodedImage",
    "Policy",
    "build_tiny",
    "has_torchvision",
    "freeze_vision",
    "load_policy",
    "save_policy",
    "tiny_tokenizer",
    "with_lora",
]
