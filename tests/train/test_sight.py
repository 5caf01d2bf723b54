"""virl_train.sight: the "can it see" probe (real pixels vs every pixel one constant), pure verdict and end to end
through ``virl-train sft`` / ``virl-train eval`` with the tiny policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from rich.console import Console

from virl_train.sight import SIGHT_FILL, constant_image, sight_line, sight_verdict

REPO = Path(__file__).resolve().parents[2]


def _m(iou: float, hit: float) -> dict[str, float]:
    return {"mean_fidelity": iou, "hit_rate@0.5": hit, "hit_rate@0.3": hit, "n_actions": 8.0, "accuracy": 0.5}


def test_verdict_flags_a_start_that_cannot_see():
    sees = sight_verdict(_m(0.55, 0.6), _m(0.30, 0.2))
    assert sees["can_see"] and sees["gain"] == pytest.approx(0.25)
    assert sees["pixels"]["crop_iou"] == 0.55 and sees["constant"]["hit_rate@0.5"] == 0.2
    blind = sight_verdict(_m(0.41, 0.36), _m(0.40, 0.35))
    assert not blind["can_see"] and "WARNING: cannot see" in sight_line(blind)
    assert "WARNING" not in sight_line(sees)


def test_constant_image_is_not_zero():
    img = constant_image(Image.new("RGB", (7, 5), (1, 2, 3)))
    assert img.size == (7, 5) and {img.getpixel((x, y)) for x in range(7) for y in range(5)} == {SIGHT_FILL} and SIGHT_FILL != (0, 0, 0)


@pytest.mark.usefixtures("one_thread")
def test_sft_and_eval_report_the_probe(tmp_path):
    pytest.importorskip("torch")
    from typer.testing import CliRunner

    from virl_data.engines.pipeline import run_demo
    from virl_train.cli import app

    export = run_demo(tmp_path / "demo", n=8, image_size=64, console=Console(quiet=True))["HF export"]
    sets = [f"data.path={export}", "grpo.max_new_tokens=12", "env.max_actions=3", "data.eval_split=train",
            "data.limit=4"]
    cfg = str(REPO / "configs" / "tiny_cpu.yaml")
    out = tmp_path / "sft"
    res = CliRunner().invoke(app, ["sft", "--config", cfg, *sets, "--steps", "2", "--out", str(out), "--sight-n", "3"])
    assert res.exit_code == 0, res.output
    sight = json.loads((out / "sight.json").read_text())
    assert sight["n_records"] == 3 and set(sight["pixels"]) == set(sight["constant"])
    assert "can it see: crop IoU" in res.output
    assert ("WARNING: cannot see" in res.output) == (not sight["can_see"])
    res = CliRunner().invoke(app, ["eval", "--config", cfg, *sets, "--checkpoint", str(out), "--limit", "3",
                                   "--out", str(tmp_path / "ev"), "--probe", "none"])
    assert res.exit_code == 0, res.output
    again = json.loads((tmp_path / "ev" / "sight.json").read_text())
    assert again["pixels"] == sight["pixels"] and again["constant"] == sight["constant"]  # same greedy runs
