"""Qwen3-VL: the Qwen ChatML layout and vision block of Qwen2.5-VL, 16-px patches (2 × 2 merge: ``factor`` 32),
interleaved M-RoPE, DeepStack (features of early vision layers added to the first LM layers), and boxes as integers
0–1000 relative to the image (``qwen3_norm1000``; ``model.box_scale`` sets the upper end, e.g. 999 or a coarse 100).

Example:
    >>> from virl_train.models import FAMILIES
    >>> f = FAMILIES["qwen3_vl"]
    >>> f.default_convention, f.factor, f.tiny_name
    ('qwen3_norm1000', 32, 'tiny-qwen3-vl')
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from virl_train.models.base import finish_tiny, seeded, tiny_dims
from virl_train.models.qwen2_vl import QwenChat

if TYPE_CHECKING:
    from virl_train.config import ModelConfig


class Qwen3VL(QwenChat):
    """Qwen3-VL (dense): ``Qwen3VLForConditionalGeneration``."""

    name, tiny_name, model_types = "qwen3_vl", "tiny-qwen3-vl", ("qwen3_vl",)
    default_convention = "qwen3_norm1000"
    factor = 32
    patch_size = 16
    TINY_VISION = {
        "depth": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 4, "out_hidden_size": 64,
        "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2, "num_position_embeddings": 64,
        "deepstack_visual_indexes": [0],
    }  # fmt: skip

    def build_tiny(self, cfg: ModelConfig, seed: int) -> tuple[Any, Any, Any]:
        """Hidden 64, 2 text layers (head_dim 16, interleaved M-RoPE sections [4, 2, 2]), vision depth 2 with one
        DeepStack layer, a learned 8 × 8 position table (interpolated to each image's grid)."""
        from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

        tokenizer = self.tiny_tokenizer()
        text = self.tiny_text(tokenizer, cfg.tiny_size)
        text |= {"head_dim": 16, "rope_parameters": {"rope_type": "default", "mrope_section": [4, 2, 2],
                                                     "mrope_interleaved": True, "rope_theta": 1_000_000.0}}
        vision = tiny_dims(self.TINY_VISION, cfg.tiny_size, depths=("depth",),
                           widths=("hidden_size", "intermediate_size", "out_hidden_size"))
        config = Qwen3VLConfig(text_config=text, vision_config=vision, **self.tiny_ids(tokenizer))
        model = seeded(lambda: Qwen3VLForConditionalGeneration(config), seed)
        return finish_tiny(model, tokenizer, cfg, "<|im_end|>", "<|endoftext|>"), tokenizer, self.image_processor(cfg)


__all__ = ["Qwen3VL"]
