"""The policy: a Qwen2/2.5-VL-style image-text-to-text model, its tokenizer and image processor, optional LoRA.

``load_policy(cfg.model)`` gives a ``Policy``:

- ``name_or_path: tiny-qwen2.5-vl`` builds a tiny random Qwen2.5-VL offline (tests, CPU smoke runs): hidden 64,
  2 text layers, vision depth 2, a ~1k byte-level BPE tokenizer trained in-process on a fixed corpus (the system
  prompts, tool texts, action tags and the demo world's words; one token per digit) plus the Qwen special tokens.
  Same ``seed`` → same weights and vocabulary; builds in well under 2 s; nothing is written to disk.
- anything else (a hub name or a local folder, e.g. one written by ``save_policy``) loads through
  ``AutoModelForImageTextToText``; the processor through ``AutoProcessor`` where torchvision imports (GPU machines),
  else tokenizer + ``AutoImageProcessor(backend="pil")`` (``Qwen2VLImageProcessorPil``: CPU torch cannot import
  torchvision).
- ``model.lora.enabled`` wraps the model in peft LoRA adapters (only they are trainable);
  ``gradient_checkpointing`` turns it on (non-reentrant); ``dtype`` sets the parameter dtype.

The rollout speaks the Qwen chat format through ``prompt_ids`` / ``env_ids``: one image is
``<|vision_start|>`` + ``prod(image_grid_thw) / merge_size²`` × ``<|image_pad|>`` + ``<|vision_end|>``, so only
tokenizers with those tokens (Qwen2-VL, Qwen2.5-VL) are accepted.

Example:
    >>> from virl_train.config import ModelConfig
    >>> policy = load_policy(ModelConfig(name_or_path="tiny-qwen2.5-vl", dtype="float32"))   # doctest: +SKIP
    >>> policy.encode_image(image).n_tokens   # a 224 x 224 image → 16 x 16 patches → 64 tokens   # doctest: +SKIP
    64
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from virl_data.errors import ConfigError
from virl_train.config import LoraConfig, ModelConfig

TINY_NAME = "tiny-qwen2.5-vl"
"""``model.name_or_path`` that builds the tiny random Qwen2.5-VL offline."""

QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>",
)  # fmt: skip
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
TINY_TEXT = {  # head_dim 16: mrope_section sums to head_dim / 2
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "max_position_embeddings": 8192,
    "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1_000_000.0},
}  # fmt: skip
TINY_VISION = {
    "depth": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 4, "out_hidden_size": 64,
    "fullatt_block_indexes": [1], "window_size": 112, "patch_size": 14, "spatial_merge_size": 2,
    "temporal_patch_size": 2,
}  # fmt: skip
TINY_VOCAB = 1024


@dataclass(frozen=True)
class EncodedImage:
    """One image as the model sees it: ``pixel_values`` ``[n_patches, C·T·P·P]``, ``image_grid_thw`` ``[1, 3]``
    (temporal, height, width patches), ``n_tokens`` = ``prod(grid) / merge²`` placeholder tokens, ``size`` the
    ``(w, h)`` in pixels after the processor's resize (what ``qwen25_abs_resized`` coordinates refer to)."""

    pixel_values: torch.Tensor
    image_grid_thw: torch.Tensor
    n_tokens: int
    size: tuple[int, int]


@dataclass
class Policy:
    """Model + tokenizer + image processor + the ``ModelConfig`` they were loaded with, and the chat token ids.

    ``model`` may be replaced (e.g. by the trainer's unwrapped model); ``processor`` is the stock processor when
    one was loaded (saved with the policy), else None.
    """

    model: Any
    tokenizer: Any
    image_processor: Any
    config: ModelConfig
    image_token_id: int
    video_token_id: int
    vision_start_id: int
    vision_end_id: int
    im_start_id: int
    im_end_id: int
    eos_id: int
    pad_id: int
    processor: Any = None
    merge_size: int = 2
    patch_size: int = 14
    stop_ids: frozenset[int] = field(default_factory=frozenset)
    banned_ids: tuple[int, ...] = ()

    @classmethod
    def from_parts(cls, model: Any, tokenizer: Any, image_processor: Any, config: ModelConfig, processor: Any = None):
        """Look the Qwen chat/vision token ids up in ``tokenizer``; ConfigError if it lacks them."""
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
        missing = [t for t, i in ids.items() if i is None or i == tokenizer.unk_token_id]
        if missing:
            raise ConfigError(f"policy {config.name_or_path!r}: the tokenizer lacks {', '.join(missing)}; "
                              "only Qwen2-VL / Qwen2.5-VL-style models are supported")
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else ids["<|im_end|>"]
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else ids["<|endoftext|>"]
        vision = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")
        return cls(
            model, tokenizer, image_processor, config, ids["<|image_pad|>"], ids["<|video_pad|>"],
            ids["<|vision_start|>"], ids["<|vision_end|>"], ids["<|im_start|>"], ids["<|im_end|>"], eos, pad,
            processor=processor, merge_size=int(getattr(image_processor, "merge_size", 2)),
            patch_size=int(getattr(image_processor, "patch_size", 14)),
            stop_ids=frozenset({ids["<|im_end|>"], ids["<|endoftext|>"], eos}),
            banned_ids=tuple(sorted({ids[t] for t in vision})),
        )

    # --- images and chat text --------------------------------------------------------------------------------------
    def encode_image(self, image: Image.Image) -> EncodedImage:
        """Run the image processor with ``ModelConfig.min_pixels`` / ``max_pixels`` (``smart_resize``, factor
        ``patch_size · merge_size`` = 28): e.g. 448 × 336 with max 50176 px → 252 × 196 px, grid [1, 14, 18],
        63 tokens."""
        size = {"shortest_edge": self.config.min_pixels, "longest_edge": self.config.max_pixels}
        out = self.image_processor(images=[image.convert("RGB")], size=size, return_tensors="pt")
        grid = out["image_grid_thw"].to(torch.long)
        n = int(grid.prod()) // self.merge_size**2
        size_wh = (int(grid[0, 2]) * self.patch_size, int(grid[0, 1]) * self.patch_size)
        return EncodedImage(out["pixel_values"], grid, n, size_wh)

    def text_ids(self, text: str) -> list[int]:
        """``text`` → token ids, no BOS/EOS added (special-token strings such as ``<|im_end|>`` are recognised)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def image_ids(self, image: EncodedImage) -> list[int]:
        """``<|vision_start|>`` + ``n_tokens`` × ``<|image_pad|>`` + ``<|vision_end|>``."""
        return [self.vision_start_id, *([self.image_token_id] * image.n_tokens), self.vision_end_id]

    def prompt_ids(self, system: str, question: str, image: EncodedImage) -> list[int]:
        """``<|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n{image}{question}<|im_end|>\\n``
        ``<|im_start|>assistant\\n`` (the Qwen chat template with one image before the question)."""
        return (
            self.text_ids(f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n")
            + self.image_ids(image)
            + self.text_ids(f"{question}<|im_end|>\n<|im_start|>assistant\n")
        )

    def env_ids(self, text: str, image: EncodedImage | None = None, *, close_turn: bool = True) -> list[int]:
        """The environment's reply: ``<|im_end|>\\n`` closing the model turn (left out when ``close_turn`` is False,
        i.e. the model already emitted it), ``<|im_start|>user\\n{text}`` + the image (if any) ``<|im_end|>\\n``,
        then ``<|im_start|>assistant\\n`` opening the next model turn."""
        head = ("<|im_end|>\n" if close_turn else "\n") + f"<|im_start|>user\n{text}"
        ids = self.text_ids(head) + (self.image_ids(image) if image is not None else [])
        return ids + self.text_ids("<|im_end|>\n<|im_start|>assistant\n")

    # --- model helpers ---------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def rope_positions(self, input_ids: torch.Tensor, mm_token_type_ids: torch.Tensor,
                       image_grid_thw: torch.Tensor | None) -> torch.Tensor:
        """3-D (temporal, height, width) rotary positions ``[3, B, T]`` of a sequence starting at position 0 (the
        model's own ``get_rope_index``): text advances all three by 1, an image block of ``h × w`` merged patches
        takes ``(s, s + i, s + j)`` and the text after it resumes at ``s + max(h, w)``."""
        if image_grid_thw is None or not bool(mm_token_type_ids.any()):
            t = torch.arange(input_ids.shape[1], device=input_ids.device)
            return t.view(1, 1, -1).expand(3, input_ids.shape[0], -1)
        pos, _ = _inner_model(self.model).get_rope_index(
            input_ids, mm_token_type_ids=mm_token_type_ids, image_grid_thw=image_grid_thw
        )
        return pos


def _inner_model(model: Any) -> Any:
    """The module holding ``get_rope_index`` under peft / DDP wrappers."""
    while True:
        if hasattr(model, "get_rope_index"):
            return model
        if hasattr(model, "get_base_model"):
            model = model.get_base_model()
        elif hasattr(model, "module"):
            model = model.module
        elif hasattr(model, "model"):
            model = model.model
        else:
            raise ConfigError(f"{type(model).__name__} has no get_rope_index: not a Qwen2/2.5-VL-style model")


# --- the tiny offline model ------------------------------------------------------------------------------------------
def _tiny_corpus() -> list[str]:
    """Fixed training text for the tiny tokenizer: prompts, tool texts, tags, digits and the demo world's words."""
    from virl_data.miners.shapes import COLORS, KINDS, SIZES
    from virl_train.actions import ERRORS, MODEL_CONVENTIONS
    from virl_train.env import CROP_TEXT, ERROR_TEXT, LAST_TEXT, system_prompt

    out = []
    for conv in MODEL_CONVENTIONS:
        for size, n, fmt in (((224, 224), 4, "tag"), ((640, 480), 2, "json"), ((100, 80), 1, "tag")):
            out.append(system_prompt(conv, size, max_actions=n, fmt=fmt))
    out += [CROP_TEXT.format(index=i, limit=n) + LAST_TEXT for i in range(1, 5) for n in range(1, 5)]
    out += [ERROR_TEXT.format(index=i % 4 + 1, limit=4, reason=r) for i, r in enumerate(ERRORS.values())]
    colors, kinds = list(COLORS), list(KINDS)
    for i, (c, k, s) in enumerate((c, k, s) for c in colors for k in kinds for s in SIZES):
        a, b = (37 * i) % 200, (53 * i) % 180
        out += [
            f"What colour is the {s} {k}? How many {k}s are there? Is the {c} {k} larger than the {s} {k}?",
            f"Which is closer to the {c} {k}: the {s} {k} or the {colors[i % len(colors)]} {kinds[i % 3]}?",
            f"What shape is nearest to the other object that has the same colour as the {s} {k}?",
            f"I need to look at the {s} {c} {k} first. <crop>[{a}, {b}, {a + 24}, {b + 31}]</crop>",
            (f'The {k} is {c}, so the answer is <answer>{c}</answer> {{"name": "crop", "arguments": '
             f'{{"bbox_2d": [{b}, {a}, {b + 9}, {a + 16}]}}}} <answer>{k}</answer> <answer>{i % 10}</answer>'),
            "Let me zoom in on the region to see it better. Now I can answer. <answer>yes</answer> <answer>no</answer>",
        ]
    out += [
        "<|im_start|>system\n<|im_start|>user\n<|im_start|>assistant\n system user assistant",
        "The object on the left is above the one on the right; the top one is below the bottom edge of the image.",
        "There are one, two, three, four, five, six, seven, eight, nine or ten objects between them.",
        "First I count the shapes, then I compare their sizes and colours; the largest one is next to it.",
    ]
    return out * 2


@functools.lru_cache(maxsize=1)
def _tiny_tokenizer_json() -> str:
    """The tiny tokenizer, serialised (trained once per process; BPE training is deterministic)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    # digits first split one per digit (as Qwen2's regex does), then byte-level BPE
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB, special_tokens=list(QWEN_SPECIAL_TOKENS), show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )  # fmt: skip
    tok.train_from_iterator(_tiny_corpus(), trainer)
    return tok.to_str()


def tiny_tokenizer() -> Any:
    """A fresh ``PreTrainedTokenizerFast`` of the tiny vocabulary (eos ``<|im_end|>``, pad ``<|endoftext|>``)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tiny_tokenizer_json()), eos_token="<|im_end|>",
        pad_token="<|endoftext|>", clean_up_tokenization_spaces=False,
    )  # fmt: skip


def _pil_image_processor(cfg: ModelConfig) -> Any:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    return Qwen2VLImageProcessorPil(min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels)


def build_tiny(cfg: ModelConfig, seed: int = 0) -> tuple[Any, Any, Any]:
    """``(model, tokenizer, image_processor)`` of the tiny random Qwen2.5-VL; weights seeded by ``seed`` without
    touching the global RNG."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tokenizer = tiny_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    text = dict(TINY_TEXT, vocab_size=len(tokenizer), bos_token_id=ids["<|endoftext|>"],
                eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    config = Qwen2_5_VLConfig(
        text_config=text, vision_config=dict(TINY_VISION), image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.eval()  # as from_pretrained leaves it; the trainer switches modes itself
    return model.to(DTYPES[cfg.dtype]), tokenizer, _pil_image_processor(cfg)


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


def _load_processor(name: str) -> tuple[Any, Any, Any]:
    """``(tokenizer, image_processor, processor | None)``: the stock processor where torchvision imports, else the
    tokenizer and the PIL image processor (also when a folder holds no full processor, e.g. a saved tiny policy)."""
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

    if has_torchvision():
        proc = AutoProcessor.from_pretrained(name)
        if hasattr(proc, "tokenizer") and hasattr(proc, "image_processor"):
            return proc.tokenizer, proc.image_processor, proc
        return AutoTokenizer.from_pretrained(name), AutoImageProcessor.from_pretrained(name), None
    return AutoTokenizer.from_pretrained(name), AutoImageProcessor.from_pretrained(name, backend="pil"), None


def _load_pretrained(cfg: ModelConfig) -> tuple[Any, Any, Any, Any]:
    from transformers import AutoModelForImageTextToText

    name = cfg.name_or_path
    try:
        model = AutoModelForImageTextToText.from_pretrained(name, dtype=DTYPES[cfg.dtype])
        tokenizer, image_processor, processor = _load_processor(name)
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


def freeze_vision(model: Any, what: str) -> int:
    """Stop gradients into the vision encoder: ``tower`` = every vision parameter but the patch merger's, ``all`` =
    the merger too, ``none`` = nothing. Returns how many parameter tensors were frozen. (Small random encoders
    trained with Adam at language-model learning rates drift and lose what tells colours apart; large pretrained
    ones are commonly kept fixed for the same reason.)"""
    if what == "none":
        return 0
    frozen = 0
    for name, param in model.named_parameters():
        if ".visual." in f".{name}" and (what == "all" or ".merger." not in name):
            param.requires_grad_(False)
            frozen += 1
    if frozen == 0:
        raise ConfigError(f"model.freeze_vision={what}: the model has no parameters under a 'visual' module")
    return frozen


def load_policy(cfg: ModelConfig, *, seed: int = 0) -> Policy:
    """The policy ``cfg`` names (see the module docstring); ``seed`` only matters for ``tiny-qwen2.5-vl``."""
    if cfg.name_or_path == TINY_NAME:
        model, tokenizer, image_processor = build_tiny(cfg, seed)
        processor = None
    else:
        model, tokenizer, image_processor, processor = _load_pretrained(cfg)
    if cfg.gradient_checkpointing:
        enable_checkpointing(model)
    if cfg.lora.enabled:
        model = with_lora(model, cfg.lora)
    freeze_vision(model, cfg.freeze_vision)
    return Policy.from_parts(model, tokenizer, image_processor, cfg, processor)


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
