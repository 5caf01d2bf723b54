"""The real-size GPU benchmark (``benchmarks/bench_gpu.py``): it skips cleanly without CUDA, and its whole path (the
Qwen2.5-VL-3B build with the real vocabulary, LoRA, checkpointing, the trainer's rollout, reward and update) runs on
the CPU at ``--size check``. The 3B timing itself needs a GPU and is not a test."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("accelerate")

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", REPO / "benchmarks" / "bench_gpu.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_the_3b_config_is_qwen25_vl_3b(bench):
    text, vision = bench.SIZES["3b"]
    assert (text["hidden_size"], text["num_hidden_layers"], text["vocab_size"]) == (2048, 36, 151936)
    assert sum(text["rope_parameters"]["mrope_section"]) * 2 == text["hidden_size"] // text["num_attention_heads"]
    assert (vision["depth"], vision["hidden_size"], vision["out_hidden_size"]) == (32, 1280, 2048)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path; a GPU machine runs the real benchmark")
def test_without_cuda_it_says_skipped_and_writes_nothing(bench, tmp_path, capsys):
    assert bench.main(["--json", str(tmp_path / "g.json"), "--md", str(tmp_path / "g.md")]) == 0
    assert "skipped: no CUDA device" in capsys.readouterr().out
    assert not (tmp_path / "g.json").exists()


def test_a_check_size_step_runs_on_the_cpu_with_the_real_vocabulary(bench, tmp_path, one_thread):
    out = tmp_path / "g.json"
    assert bench.main(["--size", "check", "--device", "cpu", "--steps", "1", "--batch", "1", "--group", "2",
                       "--tokens", "4", "--actions", "1", "--image", "112", "--out", str(tmp_path / "run"),
                       "--json", str(out), "--md", str(tmp_path / "g.md")]) == 0  # fmt: skip
    res = json.loads(out.read_text())
    assert res["episodes"] == 2 and len(res["steps"]) == 2 and res["lora_r"] == 64
    assert 0 < res["trainable_params"] < res["params"]  # LoRA: the base weights are frozen
    m = res["median"]
    assert m["policy_tokens"] > 0 and m["rollout_tok_s"] > 0 and m["update_s"] > 0 and math.isfinite(m["step_s"])
    assert "GRPO step" in (tmp_path / "g.md").read_text()
