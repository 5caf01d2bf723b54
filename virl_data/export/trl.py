"""The ``trl`` export format: the HF export made directly usable by TRL's ``GRPOTrainer``.

``virl-data export CORPUS --format trl --out DIR`` writes what ``--format hf`` writes (a ``DatasetDict`` saved with
``save_to_disk``, one split per name, every record column, ``image`` an ``Image()`` decoded to PIL on access,
``image_ref`` the recorded path and size) plus the column TRL reads its prompts from:

- ``prompt``: the chat prompt ``[{"role": "user", "content": <question>}]``. TRL inserts the ``image`` column as an
  image block before the first user message; the crop environment (``virl_train.interop.trl.CropToolEnv.reset``)
  appends the crop tool's rules and the box convention for that image as the model sees it (they depend on the
  processor's pixel limits, which the export cannot know).

Records are written as a reviewer last corrected them (``virl_data.review.merge.effective``): the ``answer`` and ``chain``
columns a TRL reward function reads are the ones ``virl-train`` trains on. The chain and answer stay in the corpus
schema (``List(Struct)`` chain, float64 boxes in original-image pixels). Every record needs its image: a missing one
is an error (``missing_images="null"`` is refused).

Example:
    >>> trl_prompt("What colour is the small circle?")
    [{'role': 'user', 'content': 'What colour is the small circle?'}]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from virl_data.core.errors import ConfigError
from virl_data.export import _hf_dataset, _hf_progress_bars, _missing_error, _read_images
from virl_data.review.merge import effective
from virl_data.core.schema import frame_to_records, hf_features, records_to_frame


def trl_prompt(question: str) -> list[dict[str, str]]:
    """The ``prompt`` cell of a record: one user message holding the question."""
    return [{"role": "user", "content": question}]


def _effective(frame: pl.DataFrame) -> pl.DataFrame:
    if not frame["reviews"].list.len().sum():
        return frame
    return records_to_frame(effective(r) for r in frame_to_records(frame))


def write_trl(
    splits: dict[str, pl.DataFrame],
    folder: Path,
    *,
    image_root: Path | None,
    missing_images: str = "error",
    progress: bool = False,
    **_: Any,
) -> tuple[dict[str, str], int]:
    """Write ``splits`` into ``folder`` as a TRL-ready ``DatasetDict`` (module docstring); returns the split names
    and 0 missing images (the ``export`` writer protocol)."""
    import datasets

    if image_root is None:
        raise ConfigError("the trl export embeds the images: pass image_root (where the images' paths resolve)")
    if missing_images != "error":
        raise ConfigError("the trl export needs every record's image (the crop tool crops it); "
                          f"missing_images={missing_images!r} is not allowed")
    splits = {name: _effective(frame) for name, frame in splits.items()}
    frames = list(splits.values())
    rel_paths = pl.concat([f["image"].struct.field("path") for f in frames]).unique(maintain_order=True).to_list()
    blobs = _read_images(image_root, rel_paths, progress)
    if any(isinstance(b, str) for b in blobs.values()):
        raise _missing_error(frames, blobs, image_root)
    features = hf_features()
    prompt_feature = [{"role": datasets.Value("string"), "content": datasets.Value("string")}]
    out = {}
    for name, frame in splits.items():
        ds = _hf_dataset(name, frame, blobs, features)
        out[name] = ds.add_column("prompt", [trl_prompt(q) for q in frame["question"].to_list()],
                                  feature=datasets.List(prompt_feature[0]))
    with _hf_progress_bars(progress):
        datasets.DatasetDict(out).save_to_disk(str(folder))
    return {name: name for name in splits}, 0


__all__ = ["trl_prompt", "write_trl"]
