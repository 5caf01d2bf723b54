"""The training loop end to end on the tiny CPU config: steps run, logs and checkpoints are written, resume is exact."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("accelerate")

from rich.console import Console  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from virl_data.errors import ConfigError  # noqa: E402
from virl_data.pipeline import run_demo  # noqa: E402
from virl_train.cli import app  # noqa: E402
from virl_train.config import load_config  # noqa: E402
from virl_train.train import batch_indices, latest_checkpoint, train  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo_export(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    return run_demo(out, n=24, image_size=64, console=Console(quiet=True))["HF export"]


def _cfg(data: Path, out: Path, *more: str):
    return load_config(
        REPO / "configs" / "tiny_cpu.yaml",
        [f"data.path={data}", f"run.out_dir={out}", "data.limit=8", "grpo.max_new_tokens=12", "env.max_actions=1",
         "run.save_every=1", "run.max_steps=3", *more],
    )


class _Interrupt(RuntimeError):
    pass


def _weights(out: Path) -> dict[str, torch.Tensor]:
    (path,) = (out / "final").glob("*.safetensors")
    return load_file(str(path))


def test_three_steps_write_logs_checkpoints_and_a_final_model(demo_export, tmp_path):
    seen = []
    result = train(_cfg(demo_export, tmp_path / "run"), callbacks=[lambda s, m: seen.append((s, m))])
    assert result.steps == 3 and [s for s, _ in seen] == [1, 2, 3]
    lines = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3]
    for x in lines:
        for key in ("reward/total", "reward/accuracy", "reward/rationale", "actions/erroneous_rate", "loss",
                    "length/completion_tokens", "time/step_s", "lr", "grad_norm"):
            assert key in x and x[key] == x[key], key  # present and not NaN
    assert latest_checkpoint(tmp_path / "run").name == "step_3"
    assert len(list((tmp_path / "run" / "checkpoints").glob("step_*"))) == 2  # only the newest two kept
    assert any((tmp_path / "run" / "tb").iterdir())
    assert (tmp_path / "run" / "config.yaml").exists()
    assert _weights(tmp_path / "run")  # the final policy is saved in HF format


def test_training_changes_the_parameters_and_a_killed_run_resumes_to_the_same_ones(demo_export, tmp_path):
    straight = tmp_path / "straight"
    train(_cfg(demo_export, straight))

    killed = tmp_path / "killed"

    def stop_at_two(step, metrics):
        if step == 2:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train(_cfg(demo_export, killed), callbacks=[stop_at_two])
    assert latest_checkpoint(killed).name == "step_2" and not (killed / "final").exists()
    result = train(_cfg(demo_export, killed))
    assert result.resumed_from == 2

    a, b = _weights(straight), _weights(killed)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    log = [json.loads(x)["step"] for x in (killed / "log.jsonl").read_text().splitlines()]
    assert log == [1, 2, 3]


def test_batch_indices_cover_each_epoch_once():
    seen = [i for step in range(5) for i in batch_indices(step, 10, 2, seed=3)]
    assert sorted(seen) == list(range(10))
    assert batch_indices(7, 10, 2, seed=3) == batch_indices(7, 10, 2, seed=3)
    ranks = batch_indices(0, 10, 2, 3, rank=0, world=2) + batch_indices(0, 10, 2, 3, rank=1, world=2)
    assert len(set(ranks)) == 4


def test_config_errors_are_one_line(demo_export, tmp_path):
    with pytest.raises(ConfigError, match="grad_accum=9 exceeds the 4 episodes"):
        train(_cfg(demo_export, tmp_path / "r", "optim.grad_accum=9"))
    res = CliRunner().invoke(app, ["train", "--config", str(REPO / "configs" / "tiny_cpu.yaml"), "grpo.clip_epss=1"])
    assert res.exit_code == 2 and "unknown config key 'grpo.clip_epss'" in res.output


def test_cli_train_and_show_config(demo_export, tmp_path):
    cfg = REPO / "configs" / "tiny_cpu.yaml"
    res = CliRunner().invoke(app, ["show-config", "--config", str(cfg), "grpo.group_size=3"])
    assert res.exit_code == 0 and "group_size: 3" in res.output
    res = CliRunner().invoke(
        app,
        ["train", "--config", str(cfg), f"data.path={demo_export}", f"run.out_dir={tmp_path / 'cli'}",
         "run.max_steps=1", "data.limit=4", "grpo.max_new_tokens=8", "env.max_actions=1"],
    )
    assert res.exit_code == 0, res.output
    assert "step 1/1" in res.output and (tmp_path / "cli" / "final").is_dir()


def test_cli_eval_writes_a_report_with_the_probe(demo_export, tmp_path):
    cfg = REPO / "configs" / "tiny_cpu.yaml"
    run = tmp_path / "run"
    common = [f"data.path={demo_export}", f"run.out_dir={run}", "grpo.max_new_tokens=8", "env.max_actions=1"]
    res = CliRunner().invoke(app, ["train", "--config", str(cfg), *common, "run.max_steps=1", "data.limit=2"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["eval", "--config", str(cfg), *common, "--checkpoint", str(run), "--split", "test", "--limit", "3"])
    assert res.exit_code == 0, res.output
    report = json.loads((run / "eval" / "eval.json").read_text())
    assert report["counts"]["n_episodes"] == 3 and report["probe_counts"]["n_episodes"] == 3
    assert 0 <= report["metrics"]["accuracy"] <= 1 and report["probe_drop"] == report["probe_drop"]
    assert (run / "eval" / "eval.png").stat().st_size > 0


@pytest.mark.integration
def test_two_process_run_on_cpu_logs_once_and_resumes(demo_export, tmp_path):
    """``accelerate launch`` with 2 gloo processes: one log line per step, one final model, resume across a rerun."""
    import shutil
    import subprocess

    launcher = shutil.which("accelerate")
    if launcher is None:
        pytest.skip("the accelerate launcher is not on PATH")
    run = tmp_path / "mp"
    args = [launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
            "no", "--dynamo_backend", "no", "-m", "virl_train.cli", "train", "--config",
            str(REPO / "configs" / "tiny_cpu.yaml"), f"data.path={demo_export}", f"run.out_dir={run}",
            "data.limit=8", "grpo.max_new_tokens=8", "env.max_actions=1"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for steps in (1, 2):
        done = subprocess.run([*args, f"run.max_steps={steps}"], capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        assert done.stdout.count(f"step {steps}/{steps}") == 1, done.stdout  # printed by the main process only
    assert "resumed at step 1" in done.stdout
    assert [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()] == [1, 2]
