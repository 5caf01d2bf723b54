"""Idefics3 / SmolVLM: a SigLIP encoder (learned position table) at one fixed square size, pixel shuffle × 2 and one
linear connector, a Llama LM with 1-D rotary positions; ``<end_of_utterance>`` closes turns.

- **Images**: image splitting off; every image (the original and each crop) is padded to a square (centred, black)
  and resized to the encoder's size ``S`` (``vision_config.image_size``; the tiny model takes
  ``⌊√max_pixels / 28⌋ · 28``). Without the padding the processor would stretch a crop to the square and lose its
  aspect. One image = ``<fake_token_around_image><global-img>`` + ``(S/14)² / 4`` × ``<image>`` +
  ``<fake_token_around_image>``.
- **Boxes**: SmolVLM has no grounding format of its own, so this family speaks integers relative to the ORIGINAL
  (unpadded) image, ``qwen3_norm1000`` with ``model.box_scale`` (we use 0–100: two digits per coordinate, a coarse
  vocabulary a small model can learn); the padding never enters the coordinates. ``qwen25_abs_resized`` (pixels of
  a processor-resized view) does not apply and is refused.
- **Constant images**: the model drops an all-zero ``pixel_values`` image as padding (and then fails), so a
  "no pixels" probe must use a constant that is not 0 after normalisation.

Chat layout (SmolVLM's template; the env's reply is loss mask 0)::

    <|im_start|>System: {system}<end_of_utterance>\\nUser:{image}{question}<end_of_utterance>\\nAssistant:{turn}
    <end_of_utterance>\\nUser: {tool text}{crop}<end_of_utterance>\\nAssistant:{turn} …

Example:
    >>> from virl_train.models import FAMILIES
    >>> FAMILIES["idefics3"].tiny_side(112 * 112), FAMILIES["idefics3"].tiny_side(50176)
    (112, 224)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from virl_train.models.base import EncodedImage, Family, TokenIds, finish_tiny, seeded, tiny_dims, tiny_tokenizer

if TYPE_CHECKING:
    from virl_train.config import ModelConfig

IDEFICS3_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>", "<global-img>", "<image>",
)  # fmt: skip
CHAT_WORDS = ("System: User: Assistant: System: User: Assistant:",)
TINY_TEXT = {
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "max_position_embeddings": 8192, "rope_theta": 10_000.0,
}  # fmt: skip
TINY_VISION = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
               "patch_size": 14}  # fmt: skip
PATCH, SHUFFLE = 14, 2


def pad_to_square(image: Image.Image, fill: tuple[int, int, int] = (0, 0, 0)) -> Image.Image:
    """``image`` centred on a square canvas of its longer side (``fill`` around it).

    >>> pad_to_square(Image.new("RGB", (30, 10))).size
    (30, 30)
    """
    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return canvas


class Idefics3(Family):
    """Idefics3 and SmolVLM (same architecture): ``Idefics3ForConditionalGeneration`` / ``SmolVLM…``."""

    name, tiny_name, model_types = "idefics3", "tiny-idefics3", ("idefics3", "smolvlm")
    default_convention = "qwen3_norm1000"
    conventions = ("qwen3_norm1000", "qwen2_norm1000", "rel_xyxy", "padded_square_rel", "abs")
    special_tokens = IDEFICS3_SPECIAL_TOKENS
    turn_end = "<end_of_utterance>"
    image_token = "<image>"
    image_start_token = "<global-img>"
    never_sampled = ("<fake_token_around_image>", "<global-img>", "<image>")
    sized_by_pixels = False  # every image becomes S x S, whatever size the env gives it

    @staticmethod
    def tiny_side(max_pixels: int) -> int:
        """The tiny encoder's square side: ``⌊√max_pixels / 28⌋ · 28``, at least 28."""
        return max(PATCH * SHUFFLE, int(math.isqrt(int(max_pixels)) // (PATCH * SHUFFLE)) * PATCH * SHUFFLE)

    def build_tiny(self, cfg: ModelConfig, seed: int) -> tuple[Any, Any, Any]:
        """Hidden 64, 2 Llama layers, a 2-layer SigLIP of side ``tiny_side(max_pixels)`` (``model.tiny_size: base``:
        hidden 128, 4 + 4 layers); weights seeded by ``seed``."""
        from transformers import Idefics3Config, Idefics3ForConditionalGeneration

        tokenizer = tiny_tokenizer(self.special_tokens, eos="<end_of_utterance>", pad="<|endoftext|>",
                                   extra=CHAT_WORDS)  # fmt: skip
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in self.special_tokens}
        side = self.tiny_side(cfg.max_pixels)
        size = cfg.tiny_size
        text = tiny_dims(TINY_TEXT, size, widths=("hidden_size", "intermediate_size"), depths=("num_hidden_layers",),
                         heads=("num_attention_heads", "num_key_value_heads"))
        vision = tiny_dims(TINY_VISION, size, widths=("hidden_size", "intermediate_size"),
                           depths=("num_hidden_layers",))
        text = dict(text, vocab_size=len(tokenizer), bos_token_id=ids["<|im_start|>"],
                    eos_token_id=ids["<end_of_utterance>"], pad_token_id=ids["<|endoftext|>"])
        config = Idefics3Config(text_config=text, vision_config=dict(vision, image_size=side),
                                image_token_id=ids["<image>"], scale_factor=SHUFFLE, pad_token_id=ids["<|endoftext|>"])
        model = seeded(lambda: Idefics3ForConditionalGeneration(config), seed)
        model = finish_tiny(model, tokenizer, cfg, "<end_of_utterance>", "<|endoftext|>")
        return model, tokenizer, self.image_processor(cfg, model_config=config)

    def image_processor(self, cfg: ModelConfig, name: str | None = None, model_config: Any = None) -> Any:
        """The PIL processor, splitting off, one square size ``S``; ``image_seq_len`` = ``(S/patch)² / shuffle²``
        set on it (what one image costs in tokens)."""
        if name is not None:
            from transformers import AutoConfig, AutoImageProcessor

            model_config = model_config or AutoConfig.from_pretrained(name)
            proc = AutoImageProcessor.from_pretrained(name, backend="pil")
        else:
            from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

            proc = Idefics3ImageProcessorPil()
        vision = model_config.vision_config
        side, patch, shuffle = int(vision.image_size), int(vision.patch_size), int(model_config.scale_factor)
        proc.do_image_splitting = False
        proc.size = {"longest_edge": side}
        proc.max_image_size = {"longest_edge": side}
        proc.image_seq_len = (side // patch) ** 2 // shuffle**2
        return proc

    def encode_image(self, processor: Any, image: Image.Image, cfg: ModelConfig) -> EncodedImage:
        """Pad to a square, then the processor (resize to ``S × S``, rescale, normalise): ``pixel_values``
        ``[1, 3, S, S]``; ``size`` is the image's own size (the boxes are relative to it)."""
        rgb = image.convert("RGB")
        out = processor(images=[[pad_to_square(rgb)]], return_tensors="pt")
        pixels = out["pixel_values"][0]  # [1 image, 3, S, S]
        return EncodedImage(pixels, None, int(processor.image_seq_len), rgb.size)

    def image_ids(self, tok: TokenIds, image: EncodedImage) -> list[int]:
        fake = tok.ids["<fake_token_around_image>"]
        return [fake, tok.image_start, *([tok.image] * image.n_tokens), fake]

    def prompt_text(self, system: str) -> tuple[str, str]:
        return f"<|im_start|>System: {system}<end_of_utterance>\nUser:", "{question}<end_of_utterance>\nAssistant:"

    def env_text(self, close_turn: bool) -> tuple[str, str]:
        return ("<end_of_utterance>" if close_turn else "") + "\nUser: {text}", "<end_of_utterance>\nAssistant:"

    def image_inputs(self, images: Sequence[EncodedImage], input_ids: torch.Tensor, tok: TokenIds,
                     device: Any) -> dict[str, Any]:  # fmt: skip
        """All images of the forward as one ``[1, N, 3, S, S]`` batch: the model fills the ``<image>`` tokens of
        every row in order, as it fills them for one row."""
        if not images:
            return {"pixel_values": None}
        return {"pixel_values": torch.cat([im.pixel_values for im in images]).unsqueeze(0).to(device)}


__all__ = ["IDEFICS3_SPECIAL_TOKENS", "Idefics3", "pad_to_square"]
