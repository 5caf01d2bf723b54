"""The ``verl`` export format: one Parquet file per split in verl 0.9.1's ``RLHFDataset`` schema, for its tool agent.

``virl-data export CORPUS --format verl --family qwen2_5_vl --out DIR`` writes ``DIR/<split>.parquet``, one row per
record (counts in = counts out, as every export)::

    data_source   the record's source (provenance.source): verl groups validation metrics by it
    prompt        [{"role": "system", "content": <how to crop, in the family's box convention>},
                   {"role": "user", "content": "<image>" + question}]  (one <image> marker per entry of images)
    images        [{"bytes": <the image file>, "min_pixels": m, "max_pixels": M}]  (qwen_vl_utils resizes within
                  these limits, so the view the model sees is exactly ``resized`` below)
    ability       "visual_rationale"
    reward_model  {"style": "rule", "ground_truth": <JSON text, below>}
    extra_info    {"index": i, "id": record id, "split": name, "need_tools_kwargs": true,
                   "tools_kwargs": {"crop": {"create_kwargs": <the crop settings, below>}}}
    agent_name    "tool_agent"  (verl's multi-turn tool loop)

``ground_truth`` (what ``virl_train.interop.verl.compute_score`` reads; JSON so that chains of any length fit one
Parquet type)::

    {"id", "answer", "answer_type", "chain": [[[x1, y1, x2, y2], ...], ...] (ORIGINAL pixels, one list per step),
     "image_size": [W, H], "resized": [w, h], **crop settings}

crop settings (``create_kwargs``, also in ``ground_truth``): ``convention`` (the family's box convention, e.g.
``qwen25_abs_resized``: absolute pixels of the ``resized`` view; ``qwen3_norm1000``: 0-``scale`` relative),
``scale``, ``factor`` (patch × merge), ``min_pixels``, ``max_pixels``, ``max_actions``, ``min_crop``, ``max_aspect``.
``resized = (w, h)`` is ``boxconv.smart_resize`` of the image with these limits.

Example (``images`` decoded, one marker per image)::

    >>> FAMILIES["qwen2_5_vl"].convention, FAMILIES["qwen3_vl"].factor
    ('qwen25_abs_resized', 32)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import polars as pl

from virl_data.core import boxconv
from virl_data.core.errors import ConfigError, VirlError

TOOL_NAME = "crop"
AGENT_NAME = "tool_agent"
ABILITY = "visual_rationale"


class Family(NamedTuple):
    """What the export needs of a model family: its native box convention and its ``factor`` (patch × merge)."""

    convention: str
    factor: int


FAMILIES: dict[str, Family] = {
    "qwen2_vl": Family("qwen2_norm1000", 28),
    "qwen2_5_vl": Family("qwen25_abs_resized", 28),
    "qwen3_vl": Family("qwen3_norm1000", 32),
}
"""The families verl's Hermes tool parser serves (names and values as ``virl_train.models.FAMILIES``; a test keeps
them equal)."""


@dataclass(frozen=True)
class CropSettings:
    """How the crop tool reads and cuts boxes (``create_kwargs`` of every row; defaults as ``virl_train.env``)."""

    convention: str = "qwen25_abs_resized"
    scale: float = 1000.0
    factor: int = boxconv.QWEN_FACTOR
    min_pixels: int = boxconv.QWEN_MIN_PIXELS
    max_pixels: int = boxconv.QWEN_MAX_PIXELS
    max_actions: int = 4
    min_crop: int = 28
    max_aspect: float = 100.0

    @classmethod
    def for_family(cls, family: str, **overrides: Any) -> CropSettings:
        """The settings of ``family`` (a key of ``FAMILIES``) with field overrides; ``ConfigError`` if unknown."""
        if family not in FAMILIES:
            raise ConfigError(f"unknown model family {family!r} for the verl export; known: {', '.join(FAMILIES)}")
        f = FAMILIES[family]
        return cls(**{"convention": f.convention, "factor": f.factor, **overrides})

    def view_size(self, width: int, height: int) -> tuple[int, int]:
        """``(w, h)`` the model sees a ``width × height`` image at (``smart_resize`` within the limits)."""
        h, w = boxconv.smart_resize(height, width, self.factor, self.min_pixels, self.max_pixels)
        return w, h


_COORDS = {
    "qwen2_norm1000": "integers from 0 to 1000 relative to the image width and height (0 = left/top edge, 1000 = "
    "right/bottom edge)",
    "qwen3_norm1000": "integers from 0 to {scale} relative to the image width and height (0 = left/top edge, {scale} "
    "= right/bottom edge)",
    "qwen25_abs_resized": "absolute pixel coordinates on the image as you see it, which is {rw} x {rh} pixels",
}


def system_prompt(settings: CropSettings, resized: tuple[int, int]) -> str:
    """The system message: the crop tool's call syntax (Hermes ``<tool_call>``, which verl parses) and the box
    convention spelled out for this image. Qwen2.5-VL's chat template does not render tool schemas, so the prompt
    carries the syntax itself."""
    if settings.convention not in _COORDS:
        raise ConfigError(f"the verl export knows the box conventions {', '.join(_COORDS)}, not {settings.convention!r}")
    coords = _COORDS[settings.convention].format(rw=resized[0], rh=resized[1], scale=f"{settings.scale:g}")
    n = settings.max_actions
    return (
        "Answer the question about the image. Look closely at the regions that matter before answering.\n"
        f'To zoom into a region, call the crop tool: <tool_call>{{"name": "{TOOL_NAME}", "arguments": {{"bbox_2d": '
        f"[x1, y1, x2, y2]}}}}</tool_call>, with (x1, y1) the top-left and (x2, y2) the bottom-right corner, in "
        f"{coords}; the box always refers to the original image. The crop is shown to you next.\n"
        f"You may crop at most {n} time{'s' if n != 1 else ''}. Think step by step, then give the final answer as "
        "<answer>...</answer>."
    )


def _chain(steps: list[Mapping[str, Any]] | None) -> list[list[list[float]]]:
    return [[[b["x1"], b["y1"], b["x2"], b["y2"]] for b in (s["boxes"] or [])] for s in (steps or [])]


def verl_row(rec: Mapping[str, Any], index: int, split: str, image: bytes, settings: CropSettings) -> dict[str, Any]:
    """One corpus row (``schema.COLUMNS``) → one verl row (see the module docstring)."""
    size = (int(rec["image"]["width"]), int(rec["image"]["height"]))
    resized = settings.view_size(*size)
    crop = asdict(settings)
    truth = {
        "id": rec["id"], "answer": rec["answer"], "answer_type": rec["answer_type"], "chain": _chain(rec["chain"]),
        "image_size": list(size), "resized": list(resized), **crop,
    }  # fmt: skip
    return {
        "data_source": (rec.get("provenance") or {}).get("source") or "virl",
        "prompt": [
            {"role": "system", "content": system_prompt(settings, resized)},
            {"role": "user", "content": "<image>" + rec["question"]},
        ],
        "images": [{"bytes": image, "min_pixels": settings.min_pixels, "max_pixels": settings.max_pixels}],
        "ability": ABILITY,
        "reward_model": {"style": "rule", "ground_truth": orjson.dumps(truth).decode()},
        "extra_info": {
            "index": index, "id": rec["id"], "split": split, "need_tools_kwargs": True,
            "tools_kwargs": {TOOL_NAME: {"create_kwargs": crop}},
        },  # fmt: skip
        "agent_name": AGENT_NAME,
    }


def write_verl(
    splits: dict[str, pl.DataFrame],
    folder: Path,
    *,
    image_root: Path | None,
    progress: bool = False,
    family: str = "qwen2_5_vl",
    crop: Mapping[str, Any] | None = None,
    **_: Any,
) -> tuple[dict[str, str], int]:
    """The ``verl`` writer of ``virl_data.export.export``: ``<split>.parquet`` per split in ``folder``.

    Images are embedded (their bytes), so ``image_root`` is required and a missing image is an error naming it.
    ``family`` picks the box convention and factor (``FAMILIES``); ``crop`` overrides ``CropSettings`` fields.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from virl_data.export import _read_images  # the hf writer's image loading, shared

    if image_root is None:
        raise ConfigError("the verl export embeds the images: pass image_root (where the images' paths resolve)")
    settings = CropSettings.for_family(family, **(crop or {}))
    frames = list(splits.values())
    rel_paths = pl.concat([f["image"].struct.field("path") for f in frames]).unique(maintain_order=True).to_list()
    blobs = _read_images(image_root, rel_paths, progress)
    bad = {p: b for p, b in blobs.items() if isinstance(b, str)}
    if bad:
        path, why = next(iter(bad.items()))
        raise VirlError(f"the verl export embeds every image: {len(bad)} missing or unreadable under {image_root} "
                        f"(e.g. {path}: {why}); fix the image root")
    names = {}
    for name, frame in splits.items():
        rows = [
            verl_row(rec, i, name, blobs[rec["image"]["path"]], settings)  # type: ignore[arg-type]
            for i, rec in enumerate(frame.iter_rows(named=True))
        ]
        pq.write_table(pa.Table.from_pylist(rows), folder / f"{name}.parquet")
        names[name] = f"{name}.parquet"
    return names, 0


__all__ = ["ABILITY", "AGENT_NAME", "FAMILIES", "TOOL_NAME", "CropSettings", "Family", "system_prompt", "verl_row",
           "write_verl"]
