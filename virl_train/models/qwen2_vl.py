"""Qwen2-VL and Qwen2.5-VL: ChatML turns, ``<|vision_start|>`` + n × ``<|image_pad|>`` + ``<|vision_end|>`` per image,
3-D multimodal rotary positions (M-RoPE), native-resolution patches (14 px, 2 × 2 merge: ``factor`` 28).

Box conventions: Qwen2.5-VL was trained on absolute pixels of the smart-resized image (``qwen25_abs_resized``),
Qwen2-VL on integers 0–1000 relative to the image (``qwen2_norm1000``); any convention can be configured.

Chat layout of one episode (the env's reply is loss mask 0)::

    <|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n{image}{question}<|im_end|>\\n<|im_start|>assistant\\n
    {model turn}<|im_end|>\\n<|im_start|>user\\n{tool text}{crop}<|im_end|>\\n<|im_start|>assistant\\n{model turn} …

Example:
    >>> from virl_train.models import FAMILIES
    >>> FAMILIES["qwen2_5_vl"].default_convention, FAMILIES["qwen2_vl"].default_convention
    ('qwen25_abs_resized', 'qwen2_norm1000')
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from virl_data.core.errors import ConfigError
from virl_train.models.base import EncodedImage, Family, TokenIds, finish_tiny, seeded, tiny_dims, tiny_tokenizer

if TYPE_CHECKING:
    from virl_train.config import ModelConfig

QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>",
)  # fmt: skip
TINY_TEXT = {  # head_dim 16: mrope_section sums to head_dim / 2
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "max_position_embeddings": 8192,
    "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1_000_000.0},
}  # fmt: skip


class QwenChat(Family):
    """What every Qwen-VL family shares: ChatML, the vision block, M-RoPE, grid-based pixel values."""

    special_tokens = QWEN_SPECIAL_TOKENS
    turn_end = "<|im_end|>"
    image_token = "<|image_pad|>"
    image_start_token = "<|vision_start|>"
    never_sampled = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")
    multimodal_rope = True
    patch_size = 14

    def tiny_tokenizer(self) -> Any:
        return tiny_tokenizer(self.special_tokens, eos="<|im_end|>", pad="<|endoftext|>")

    def tiny_ids(self, tokenizer: Any) -> dict[str, int]:
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in self.special_tokens}
        return {"image_token_id": ids["<|image_pad|>"], "video_token_id": ids["<|video_pad|>"],
                "vision_start_token_id": ids["<|vision_start|>"], "vision_end_token_id": ids["<|vision_end|>"]}

    def tiny_text(self, tokenizer: Any, size: str = "small") -> dict[str, Any]:
        """The tiny text config (``model.tiny_size``; ``base`` keeps head size 16, so the M-RoPE sections hold)."""
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in self.special_tokens}
        text = tiny_dims(TINY_TEXT, size, widths=("hidden_size", "intermediate_size"), depths=("num_hidden_layers",),
                         heads=("num_attention_heads", "num_key_value_heads"))
        return dict(text, vocab_size=len(tokenizer), bos_token_id=ids["<|endoftext|>"],
                    eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])

    def image_processor(self, cfg: ModelConfig, name: str | None = None, model_config: Any = None) -> Any:
        """``Qwen2VLImageProcessorPil`` (no torchvision) with the config's pixel limits and the family's patch."""
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        if name is not None:
            from transformers import AutoImageProcessor

            return AutoImageProcessor.from_pretrained(name, backend="pil")  # encode_image passes the pixel limits
        return Qwen2VLImageProcessorPil(min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels,
                                        patch_size=self.patch_size)

    def encode_image(self, processor: Any, image: Image.Image, cfg: ModelConfig) -> EncodedImage:
        """``smart_resize`` with ``min_pixels`` / ``max_pixels`` (factor patch × merge): e.g. 448 × 336 with max
        50176 px and patch 14 → 252 × 196 px, grid [1, 14, 18], 63 tokens."""
        size = {"shortest_edge": cfg.min_pixels, "longest_edge": cfg.max_pixels}
        out = processor(images=[image.convert("RGB")], size=size, return_tensors="pt")
        grid = out["image_grid_thw"].to(torch.long)
        merge, patch = int(getattr(processor, "merge_size", 2)), int(getattr(processor, "patch_size", 14))
        n = int(grid.prod()) // merge**2
        return EncodedImage(out["pixel_values"], grid, n, (int(grid[0, 2]) * patch, int(grid[0, 1]) * patch))

    def image_ids(self, tok: TokenIds, image: EncodedImage) -> list[int]:
        return [tok.image_start, *([tok.image] * image.n_tokens), tok.ids["<|vision_end|>"]]

    def prompt_text(self, system: str) -> tuple[str, str]:
        return (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n",
                "{question}<|im_end|>\n<|im_start|>assistant\n")

    def env_text(self, close_turn: bool) -> tuple[str, str]:
        return ("<|im_end|>\n" if close_turn else "\n") + "<|im_start|>user\n{text}", \
            "<|im_end|>\n<|im_start|>assistant\n"

    def positions(self, model: Any, row: torch.Tensor, images: Sequence[EncodedImage], tok: TokenIds) -> torch.Tensor:
        """3-D (temporal, height, width) positions from 0 (the model's own ``get_rope_index``): text advances all
        three by 1, an image block of ``h × w`` merged patches takes ``(s, s + i, s + j)``, the text after it
        resumes at ``s + max(h, w)``."""
        mm = (row == tok.image).to(torch.int32)
        if not images or not bool(mm.any()):
            return torch.arange(row.shape[1]).view(1, 1, -1).expand(3, 1, -1)
        grid = torch.cat([im.image_grid_thw for im in images])
        pos, _ = _rope_owner(model).get_rope_index(row, mm_token_type_ids=mm, image_grid_thw=grid)
        return pos

    def image_inputs(self, images: Sequence[EncodedImage], input_ids: torch.Tensor, tok: TokenIds,
                     device: Any) -> dict[str, Any]:  # fmt: skip
        return {
            "pixel_values": torch.cat([im.pixel_values for im in images]).to(device) if images else None,
            "image_grid_thw": torch.cat([im.image_grid_thw for im in images]).to(device) if images else None,
            "mm_token_type_ids": (input_ids == tok.image).to(device=device, dtype=torch.int32),
        }


def _rope_owner(model: Any) -> Any:
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
            raise ConfigError(f"{type(model).__name__} has no get_rope_index: not a Qwen-VL-style model")


class Qwen25VL(QwenChat):
    """Qwen2.5-VL: window attention in the vision tower, RMSNorm + SwiGLU, 2 × 2 patch merger."""

    name, tiny_name, model_types = "qwen2_5_vl", "tiny-qwen2.5-vl", ("qwen2_5_vl",)
    default_convention = "qwen25_abs_resized"
    TINY_VISION = {
        "depth": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 4, "out_hidden_size": 64,
        "fullatt_block_indexes": [1], "window_size": 112, "patch_size": 14, "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }  # fmt: skip

    def build_tiny(self, cfg: ModelConfig, seed: int) -> tuple[Any, Any, Any]:
        """Hidden 64, 2 text layers, vision depth 2, the ~1k-token tiny vocabulary; weights seeded by ``seed``."""
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

        tokenizer = self.tiny_tokenizer()
        vision = tiny_dims(self.TINY_VISION, cfg.tiny_size, depths=("depth",),
                           widths=("hidden_size", "intermediate_size", "out_hidden_size"),
                           lists={"fullatt_block_indexes": [1, 3]})
        config = Qwen2_5_VLConfig(text_config=self.tiny_text(tokenizer, cfg.tiny_size), vision_config=vision,
                                  **self.tiny_ids(tokenizer))  # fmt: skip
        model = seeded(lambda: Qwen2_5_VLForConditionalGeneration(config), seed)
        return finish_tiny(model, tokenizer, cfg, "<|im_end|>", "<|endoftext|>"), tokenizer, self.image_processor(cfg)


class Qwen2VL(QwenChat):
    """Qwen2-VL: full attention in the vision tower (LayerNorm + GELU MLP), 2 × 2 patch merger."""

    name, tiny_name, model_types = "qwen2_vl", "tiny-qwen2-vl", ("qwen2_vl",)
    default_convention = "qwen2_norm1000"
    TINY_VISION = {"depth": 2, "embed_dim": 64, "hidden_size": 64, "mlp_ratio": 2, "num_heads": 4, "patch_size": 14,
                   "spatial_merge_size": 2, "temporal_patch_size": 2}  # fmt: skip

    def build_tiny(self, cfg: ModelConfig, seed: int) -> tuple[Any, Any, Any]:
        from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

        tokenizer = self.tiny_tokenizer()
        vision = tiny_dims(self.TINY_VISION, cfg.tiny_size, widths=("embed_dim", "hidden_size"), depths=("depth",))
        config = Qwen2VLConfig(text_config=self.tiny_text(tokenizer, cfg.tiny_size), vision_config=vision,
                               **self.tiny_ids(tokenizer))  # fmt: skip
        model = seeded(lambda: Qwen2VLForConditionalGeneration(config), seed)
        return finish_tiny(model, tokenizer, cfg, "<|im_end|>", "<|endoftext|>"), tokenizer, self.image_processor(cfg)


__all__ = ["QWEN_SPECIAL_TOKENS", "Qwen25VL", "Qwen2VL", "QwenChat"]
