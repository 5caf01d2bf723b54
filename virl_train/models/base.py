"""What every model family provides, and the pieces families share (the tiny offline tokenizer, the image record).

A family (``virl_train.models.FAMILIES``) is one small object that knows, for one HF architecture:

- ``build_tiny(cfg, seed)``: a tiny random model + tokenizer + PIL image processor, built offline (tests, CPU runs);
- ``image_processor(cfg, name)``: the processor set-up without torchvision (``backend="pil"``);
- ``encode_image``: one PIL image → ``EncodedImage`` (pixel values, grid, how many placeholder tokens, view size);
- the chat layout: ``prompt_text`` / ``env_text`` (the text around the image of a user turn) and ``image_ids``
  (the placeholder block one image occupies), the turn-end / stop / never-sampled tokens (env-token masking keys on
  them: the env's reply is appended with loss mask 0 between two model turns);
- ``positions``: the rotary positions of a chunk (3-D M-RoPE for the Qwen families, 1-D for Idefics3);
- ``image_inputs``: the model's keyword arguments for the images of a forward (``pixel_values`` + grid, ...);
- its box convention (``default_convention``, the ones it accepts) and the ``factor`` crops are sized by.

Rollout, SFT, loss and evaluation only talk to ``Policy`` (``virl_train.policy``), which asks its family.

Example:
    >>> from virl_train.models import FAMILIES
    >>> sorted(FAMILIES)
    ['idefics3', 'qwen2_5_vl', 'qwen2_vl', 'qwen3_vl']
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from virl_data.core.errors import ConfigError

if TYPE_CHECKING:
    from virl_train.config import ModelConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
TINY_VOCAB = 1024


@dataclass(frozen=True)
class EncodedImage:
    """One image as the model sees it: ``pixel_values`` (family-specific layout), ``image_grid_thw`` ``[1, 3]``
    (temporal, height, width patches; None for families without a grid), ``n_tokens`` placeholder tokens,
    ``size`` the ``(w, h)`` in pixels the box convention refers to (Qwen: after the processor's resize)."""

    pixel_values: torch.Tensor
    image_grid_thw: torch.Tensor | None
    n_tokens: int
    size: tuple[int, int]


@dataclass(frozen=True)
class TokenIds:
    """The chat/vision token ids a family's layout uses, looked up once in the tokenizer."""

    image: int  # the placeholder replaced by visual features
    image_start: int  # one per image (counts images)
    turn_end: int  # closes a turn (<|im_end|>, <end_of_utterance>)
    eos: int
    pad: int
    ids: dict[str, int]  # every special token of the family by its text


class Family:
    """Base of a model family; subclasses set the class attributes and implement the abstract methods."""

    name: str = ""
    tiny_name: str = ""
    model_types: tuple[str, ...] = ()
    default_convention: str = "qwen2_norm1000"
    conventions: tuple[str, ...] = ()  # the box conventions this family may speak (empty = any)
    factor: int = 28  # crops are sized by smart_resize with this factor (patch × merge)
    special_tokens: tuple[str, ...] = ()
    turn_end: str = ""
    image_token: str = ""
    image_start_token: str = ""
    never_sampled: tuple[str, ...] = ()  # vision placeholders: sampling one would corrupt the next input
    multimodal_rope: bool = False
    sized_by_pixels: bool = True  # the processor sizes images by min/max pixels, as the env sizes its views

    # --- identity and checks -----------------------------------------------------------------------------------
    def check_convention(self, convention: str) -> None:
        """ConfigError when this family cannot speak ``convention`` (one line naming the ones it can)."""
        if self.conventions and convention not in self.conventions:
            raise ConfigError(f"model family {self.name} cannot use model.box_convention={convention}; "
                              f"use one of {', '.join(self.conventions)}")

    def token_ids(self, tokenizer: Any, what: str) -> TokenIds:
        """The family's special-token ids in ``tokenizer``; ConfigError naming the missing ones."""
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in self.special_tokens}
        missing = [t for t, i in ids.items() if i is None or i == tokenizer.unk_token_id]
        if missing:
            raise ConfigError(f"policy {what!r}: the tokenizer lacks {', '.join(missing)}, which the {self.name} "
                              "chat layout needs")
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else ids[self.turn_end]
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
        return TokenIds(ids[self.image_token], ids[self.image_start_token], ids[self.turn_end], eos, pad, ids)

    # --- to implement ------------------------------------------------------------------------------------------
    def build_tiny(self, cfg: ModelConfig, seed: int) -> tuple[Any, Any, Any]:
        raise NotImplementedError

    def image_processor(self, cfg: ModelConfig, name: str | None = None, model_config: Any = None) -> Any:
        raise NotImplementedError

    def encode_image(self, processor: Any, image: Image.Image, cfg: ModelConfig) -> EncodedImage:
        raise NotImplementedError

    def image_ids(self, tok: TokenIds, image: EncodedImage) -> list[int]:
        raise NotImplementedError

    def prompt_text(self, system: str) -> tuple[str, str]:
        """``(before the image, after the image + question)`` templates of the first user turn; the second takes
        ``{question}`` and ends with the opening of the model's turn."""
        raise NotImplementedError

    def env_text(self, close_turn: bool) -> tuple[str, str]:
        """``(before the image, after it)`` of the environment's reply; the first takes ``{text}``, closes the
        model's turn when ``close_turn`` (the model did not emit the turn end) and the second opens the next one."""
        raise NotImplementedError

    def positions(self, model: Any, row: torch.Tensor, images: Sequence[EncodedImage], tok: TokenIds) -> torch.Tensor:
        """Rotary positions ``[P, 1, T]`` of ``row`` ``[1, T]`` starting at 0 (P = 3 for M-RoPE, else 1)."""
        t = torch.arange(row.shape[1])
        return t.view(1, 1, -1)

    def image_inputs(self, images: Sequence[EncodedImage], input_ids: torch.Tensor, tok: TokenIds,
                     device: Any) -> dict[str, Any]:  # fmt: skip
        """Keyword arguments of a forward over ``input_ids`` holding the placeholders of ``images`` (in order)."""
        raise NotImplementedError


# --- the tiny offline tokenizer (shared by every family; its special tokens differ) ----------------------------------
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


@functools.lru_cache(maxsize=4)
def tiny_tokenizer_json(special_tokens: tuple[str, ...], extra: tuple[str, ...] = ()) -> str:
    """The tiny tokenizer with ``special_tokens`` first, trained on the fixed corpus + ``extra`` lines (a family's
    chat words), serialised (BPE training is deterministic)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    # digits first split one per digit (as Qwen2's regex does), then byte-level BPE
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB, special_tokens=list(special_tokens), show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )  # fmt: skip
    tok.train_from_iterator(_tiny_corpus() + list(extra) * 2, trainer)
    return tok.to_str()


def tiny_tokenizer(special_tokens: tuple[str, ...], eos: str, pad: str, extra: tuple[str, ...] = ()) -> Any:
    """A fresh ``PreTrainedTokenizerFast`` of the tiny vocabulary with ``special_tokens`` (ids 0, 1, …)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(tiny_tokenizer_json(tuple(special_tokens), tuple(extra))), eos_token=eos,
        pad_token=pad, clean_up_tokenization_spaces=False,
    )  # fmt: skip


def tiny_dims(small: dict[str, Any], size: str, *, widths: Sequence[str] = (), depths: Sequence[str] = (),
              heads: Sequence[str] = (), lists: dict[str, Any] | None = None) -> dict[str, Any]:
    """A tiny config of ``model.tiny_size``: ``small`` as given; ``base`` with the ``widths`` (hidden sizes), ``depths``
    (layer counts) and ``heads`` keys doubled (head size unchanged) and the ``lists`` entries replaced.

    >>> tiny_dims({"hidden_size": 64, "num_hidden_layers": 2}, "base", widths=["hidden_size"], depths=["num_hidden_layers"])
    {'hidden_size': 128, 'num_hidden_layers': 4}
    """
    if size == "small":
        return dict(small)
    if size != "base":
        raise ConfigError(f"model.tiny_size: expected one of small, base, got {size!r}")
    out = dict(small)
    for key in (*widths, *depths, *heads):
        out[key] = 2 * small[key]
    return out | dict(lists or {})


def seeded(build, seed: int):
    """``build()`` with the torch RNG seeded by ``seed`` and restored afterwards (weights depend on ``seed`` only)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def finish_tiny(model: Any, tokenizer: Any, cfg: ModelConfig, eos: str, pad: str) -> Any:
    """Generation defaults, eval mode (as ``from_pretrained`` leaves a model) and the configured dtype."""
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids(eos)
    model.generation_config.pad_token_id = tokenizer.convert_tokens_to_ids(pad)
    model.eval()
    return model.to(DTYPES[cfg.dtype])


__all__ = ["DTYPES", "EncodedImage", "Family", "TokenIds", "finish_tiny", "seeded", "tiny_dims", "tiny_tokenizer",
           "tiny_tokenizer_json"]
