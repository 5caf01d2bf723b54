"""verl interop from the main venv: the reward module stays torch-free, the export's family table matches the
trainer's, ``virl-data export --format verl`` works from the CLI, and the verl tests (``tests/verl``, through verl's
own dataset, tool registry, config and reward loading) pass in the verl venv.

The verl venv: ``$VIRL_VERL_PYTHON`` (when set, only it), else ``<repo>/.venv-verl/bin/python`` (what
``scripts/install.sh`` creates: verl 0.9.1 pins transformers < 5.11, ours is newer); without one the last test skips
with that reason.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from virl_data.storage import corpus
from virl_data.core import schema
from virl_data.cli import app
from virl_data.export.verl import FAMILIES as EXPORT_FAMILIES
from virl_data.miners.shapes import generate
from virl_data.core.types import Status

REPO = Path(__file__).resolve().parents[2]
VERL_TESTS_TIMEOUT_S = 900


def verl_python() -> tuple[str | None, str]:
    """``(python of the verl venv, where it came from)`` or ``(None, why not)``."""
    env = os.environ.get("VIRL_VERL_PYTHON")
    if env:
        ok = Path(env).is_file() and os.access(env, os.X_OK)
        return (env, "VIRL_VERL_PYTHON") if ok else (None, f"VIRL_VERL_PYTHON={env} is not an executable file")
    venv = REPO / ".venv-verl" / "bin" / "python"
    if venv.is_file():
        return str(venv), ".venv-verl"
    return None, "no verl venv: create .venv-verl with verl==0.9.1 (bash scripts/install.sh does) or set VIRL_VERL_PYTHON"


def test_reward_module_imports_without_torch_or_transformers():
    code = (
        "import sys, virl_train.interop.verl as v; "
        "print([m for m in ('torch', 'transformers', 'accelerate', 'verl') if m in sys.modules]); "
        "print(callable(v.compute_score))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    assert out.stdout.split() == ["[]", "True"], out.stdout + out.stderr


def test_export_families_match_the_trainers_families():
    from virl_train.models import FAMILIES

    for name, fam in EXPORT_FAMILIES.items():
        assert (fam.convention, fam.factor) == (FAMILIES[name].default_convention, FAMILIES[name].factor), name


def test_cli_export_verl_writes_every_record_per_split(tmp_path):
    images = tmp_path / "images"
    recs = [dataclasses.replace(r, status=Status.ACCEPTED, split="train" if i < 3 else "val")
            for i, r in enumerate(generate(5, seed=1, image_dir=images))]  # fmt: skip
    src = corpus.write(schema.records_to_frame(recs), tmp_path / "curated.parquet", image_root=images)
    out = tmp_path / "verl"
    res = CliRunner().invoke(app, ["export", str(src), "--format", "verl", "--family", "qwen3_vl", "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = {split: pq.read_table(out / f"{split}.parquet").to_pylist() for split in ("train", "val")}
    assert {k: len(v) for k, v in rows.items()} == {"train": 3, "val": 2}
    row = rows["val"][1]
    truth = json.loads(row["reward_model"]["ground_truth"])
    assert truth["id"] == recs[4].id and truth["convention"] == "qwen3_norm1000" and truth["factor"] == 32
    assert row["prompt"][1]["content"] == "<image>" + recs[4].question and len(row["images"]) == 1
    assert row["images"][0]["bytes"] == (images / recs[4].image.path).read_bytes()
    assert row["extra_info"]["tools_kwargs"]["crop"]["create_kwargs"]["convention"] == "qwen3_norm1000"
    bad = CliRunner().invoke(app, ["export", str(src), "--format", "verl", "--family", "llava", "--out", str(out)])
    assert bad.exit_code == 2 and "unknown model family 'llava'" in bad.output


@pytest.mark.integration
def test_verl_suite_passes_in_the_verl_venv():
    python, where = verl_python()
    if python is None:
        pytest.skip(where)
    out = subprocess.run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/verl"], cwd=REPO, capture_output=True,
        text=True, timeout=VERL_TESTS_TIMEOUT_S, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")},
    )  # fmt: skip
    tail = (out.stdout + out.stderr)[-4000:]
    assert out.returncode == 0, f"tests/verl failed in {where}:\n{tail}"
    assert " passed" in out.stdout and "skipped" not in out.stdout.splitlines()[-1], tail
