"""Model families: one small module each (``qwen2_vl.py``: Qwen2-VL + Qwen2.5-VL, ``qwen3_vl.py``, ``idefics3.py``:
Idefics3 / SmolVLM). Adding a family touches its own file and the ``FAMILIES`` dict only.

``family_for(cfg.model)``: ``model.family`` when set, else the family whose ``tiny_name`` is ``model.name_or_path``,
else the one whose ``model_types`` holds the checkpoint's ``config.json`` ``model_type``. Anything else is a one-line
``ConfigError`` naming the supported families.

Example:
    >>> from virl_train.config import ModelConfig
    >>> family_for(ModelConfig(name_or_path="tiny-idefics3")).name
    'idefics3'
    >>> family_from_model_type("smolvlm").name
    'idefics3'
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING

from virl_data.core.errors import ConfigError
from virl_train.models.base import EncodedImage, Family, TokenIds
from virl_train.models.idefics3 import Idefics3
from virl_train.models.qwen2_vl import Qwen2VL, Qwen25VL
from virl_train.models.qwen3_vl import Qwen3VL

if TYPE_CHECKING:
    from virl_train.config import ModelConfig

FAMILIES: dict[str, Family] = {f.name: f for f in (Qwen2VL(), Qwen25VL(), Qwen3VL(), Idefics3())}
FAMILY_NAMES = tuple(FAMILIES)
TINY_NAMES: dict[str, Family] = {f.tiny_name: f for f in FAMILIES.values()}
SUPPORTED = "supported: " + ", ".join(f"{f.name} ({'/'.join(f.model_types)})" for f in FAMILIES.values())


def family_from_model_type(model_type: str, what: str = "the model") -> Family:
    """The family of an HF ``model_type``; ConfigError naming the supported ones otherwise."""
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family
    raise ConfigError(f"{what} is a {model_type!r} model, which virl cannot train; {SUPPORTED}")


@functools.lru_cache(maxsize=32)
def detect_family(name_or_path: str) -> Family:
    """The family of a checkpoint from its ``config.json`` (a local folder, or the hub cache via ``AutoConfig``)."""
    local = Path(name_or_path) / "config.json"
    try:
        if local.is_file():
            model_type = json.loads(local.read_text()).get("model_type", "")
        else:
            from transformers import AutoConfig

            model_type = AutoConfig.from_pretrained(name_or_path).model_type
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load model {name_or_path!r}: {str(exc).splitlines()[0]}") from None
    return family_from_model_type(model_type, f"model {name_or_path!r}")


def family_for(cfg: ModelConfig) -> Family:
    """The family of ``cfg`` (see the module docstring), its box convention checked."""
    if cfg.family != "auto":
        family = FAMILIES[cfg.family]
    elif cfg.name_or_path in TINY_NAMES:
        family = TINY_NAMES[cfg.name_or_path]
    elif cfg.name_or_path.startswith("tiny-"):
        raise ConfigError(f"unknown tiny model {cfg.name_or_path!r}; use one of {', '.join(TINY_NAMES)}")
    else:
        family = detect_family(cfg.name_or_path)
    family.check_convention(cfg.box_convention)
    return family


__all__ = ["FAMILIES", "FAMILY_NAMES", "SUPPORTED", "TINY_NAMES", "EncodedImage", "Family", "TokenIds",
           "detect_family", "family_for", "family_from_model_type"]
