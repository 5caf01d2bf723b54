"""Fixtures of the verl tests (they run in ``.venv-verl``: verl 0.9.1 pins transformers < 5.11, so it lives in a
venv of its own, made by ``scripts/install.sh``; ``tests/train/test_interop_verl.py`` runs them from the main suite).

``exported``: a small shapes-world corpus (300 x 200 images) rendered to PNGs and written by ``virl-data export
--format verl``'s library call, once per family (Qwen2.5-VL: absolute resized pixels; Qwen3-VL: 0-1000), with the
records; ``max_pixels`` is lowered so that the model's view is smaller than the original.
"""

from __future__ import annotations

import dataclasses
import sys
import types
from pathlib import Path
from typing import NamedTuple

import pyarrow.parquet as pq
import pytest

from virl_data.core import schema
from virl_data.export import export
from virl_data.miners.shapes import ShapesConfig, generate
from virl_data.core.types import RationaleRecord, Status

N_RECORDS = 6
FAMILIES = ("qwen2_5_vl", "qwen3_vl")
WORLD = ShapesConfig(image_size=(300, 200))  # sides no multiple of 28 or 32
CROP = {"max_pixels": 160 * 160}  # below 300 x 200: the model's view is a real downscale (Qwen2.5-VL: 168 x 112)


class Exported(NamedTuple):
    family: str
    path: Path  # train.parquet
    image_root: Path
    records: list[RationaleRecord]
    rows: list[dict]


def _import_qwen_vl_utils() -> None:
    """qwen_vl_utils (verl's image path) imports torchvision at module level but uses it only to read videos; the
    PyPI torchvision cannot load beside this machine's CPU torch. Import it once with an empty ``torchvision`` whose
    attributes raise when called, then take that module away again (transformers must keep seeing no torchvision):
    the IMAGE path runs for real, any video use fails loudly."""
    import transformers  # noqa: F401 - decides "no torchvision" before the stand-in exists

    try:
        import qwen_vl_utils  # noqa: F401
        return
    except ImportError:
        pass

    class _Absent(types.ModuleType):
        __version__ = "0.0"

        def __getattr__(self, name: str):  # noqa: ANN204
            if name.startswith("__"):
                raise AttributeError(name)
            return _Absent(f"{self.__name__}.{name}")

        def __call__(self, *a, **k):  # noqa: ANN204
            raise RuntimeError(f"{self.__name__}: torchvision is not installed (video input is not supported here)")

    names = ("torchvision", "torchvision.io", "torchvision.transforms")
    sys.modules.update({name: _Absent(name) for name in names})
    try:
        import qwen_vl_utils  # noqa: F401, F811
    finally:
        for name in names:
            sys.modules.pop(name, None)


_import_qwen_vl_utils()


@pytest.fixture(scope="session", params=FAMILIES)
def exported(request, tmp_path_factory) -> Exported:
    family = request.param
    tmp = tmp_path_factory.mktemp(f"verl-{family}")
    images = tmp / "images"
    recs = [
        dataclasses.replace(r, status=Status.ACCEPTED, split="train")
        for r in generate(N_RECORDS, seed=3, image_dir=images, config=WORLD)
    ]
    options = {"family": family, "crop": CROP}
    res = export(schema.records_to_frame(recs), tmp / "out", "verl", image_root=images, options=options)
    assert res.counts == {"train": N_RECORDS}
    path = res.paths["train"]
    return Exported(family, path, images, recs, pq.read_table(path).to_pylist())
