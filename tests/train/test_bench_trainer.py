"""The trainer speed benchmark (``benchmarks/bench_trainer.py``) runs end to end at toy size, like for like.

The like-for-like checks live in the benchmark itself (TRL's prompt ids and pixel values must equal ours, every timed
phase must run at the same torch thread count, our update must step the optimizer); a run that breaks one raises.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")
pytest.importorskip("accelerate")

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # transformers' own deprecations inside TRL


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_trainer", REPO / "benchmarks" / "bench_trainer.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.fixture
def keep_threads():
    """The benchmark sets torch's global thread count; give the other tests theirs back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_toy_run_writes_a_like_for_like_table(bench, tmp_path, keep_threads):
    out_json, out_md = tmp_path / "bench.json", tmp_path / "bench.md"
    argv = ["--batch", "1", "--group", "2", "--tokens", "4", "--episodes", "1", "--repeats", "1",
            "--json", str(out_json), "--md", str(out_md)]  # fmt: skip
    assert bench.main(argv) == 0
    res = json.loads(out_json.read_text())
    ours, trl = res["ours"], res["trl"]
    assert res["setting"]["threads"] == 1
    assert trl["gradient_checkpointing"] is False  # TRL's default would slow its side down
    assert ours["prompt_tokens"] == trl["prompt_tokens"]
    assert ours["episodes"] == 2 and 0 < ours["sampled_tokens"] <= 8 and 0 < trl["sampled_tokens"] <= 8
    for side in (ours, trl):
        for key in ("generation_s", "update_s", "step_s"):
            assert math.isfinite(side[key]) and side[key] > 0
    assert res["reward_1k"]["n"] == 1000 and res["reward_1k"]["full_ms"] > 0
    assert res["rollout"]["policy_tokens"] > 0 and res["rollout"]["mean_turns"] >= 1
    text = out_md.read_text()
    assert "| measure | virl-train |" in text and "step = generation + reward + advantages + update" in text


def test_timing_refuses_another_thread_count(bench, keep_threads):
    torch.set_num_threads(1)
    bench.THREADS[0] = 2
    try:
        with pytest.raises(RuntimeError, match="threads"):
            bench.median_time(lambda: None, 1)
    finally:
        bench.THREADS[0] = 1
