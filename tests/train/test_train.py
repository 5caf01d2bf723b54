"""The training loop end to end on the tiny CPU config: steps run, logs and checkpoints are written, resume is exact."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("accelerate")

from rich.console import Console  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from tests.conftest import kill9, spawn_python  # noqa: E402
from tests.train.resume import Interrupt, assert_same_final_weights, final_weights, interrupt_at  # noqa: E402
from virl_data.core.errors import ConfigError  # noqa: E402
from virl_data.storage.locks import is_lock_file  # noqa: E402
from virl_data.engines.pipeline import run_demo  # noqa: E402
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
    assert final_weights(tmp_path / "run")  # the final policy is saved in HF format


def test_training_changes_the_parameters_and_a_killed_run_resumes_to_the_same_ones(demo_export, tmp_path):
    straight = tmp_path / "straight"
    train(_cfg(demo_export, straight))

    killed = tmp_path / "killed"
    with pytest.raises(Interrupt):
        train(_cfg(demo_export, killed), callbacks=[interrupt_at(2)])
    assert latest_checkpoint(killed).name == "step_2" and not (killed / "final").exists()
    result = train(_cfg(demo_export, killed))
    assert result.resumed_from == 2

    assert_same_final_weights(straight, killed)
    log = [json.loads(x)["step"] for x in (killed / "log.jsonl").read_text().splitlines()]
    assert log == [1, 2, 3]
    # the trajectory log of the resumed run is the uninterrupted run's, line for line (no step twice)
    assert _lines(killed / "trajectories.jsonl") == _lines(straight / "trajectories.jsonl")


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_a_run_killed_between_checkpoints_resumes_without_logging_a_step_twice(demo_export, tmp_path):
    """Checkpoints at steps 2 and 4; killed after step 3 was logged: the rerun resumes at 2, cuts step 3 from both
    logs and writes it again, so both files equal the uninterrupted run's."""
    more = ("run.save_every=2", "run.max_steps=4")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    train(_cfg(demo_export, straight, *more))

    with pytest.raises(Interrupt):
        train(_cfg(demo_export, killed, *more), callbacks=[interrupt_at(3)])
    assert {x["step"] for x in _lines(killed / "trajectories.jsonl")} == {1, 2, 3}
    assert train(_cfg(demo_export, killed, *more)).resumed_from == 2
    assert [x["step"] for x in _lines(killed / "log.jsonl")] == [1, 2, 3, 4]
    assert [x["step"] for x in _lines(killed / "trajectories.jsonl")] == [1] * 4 + [2] * 4 + [3] * 4 + [4] * 4
    assert _lines(killed / "trajectories.jsonl") == _lines(straight / "trajectories.jsonl")
    for purge in (True, False):  # TensorBoard's own loader, and the raw events as any other reader sees them
        assert _tb_steps(killed / "tb", purge) == _tb_steps(straight / "tb", purge)
        assert set(_tb_steps(killed / "tb", purge).values()) == {(1, 2, 3, 4)}


def _tb_steps(tb: Path, purge: bool) -> dict[str, tuple[int, ...]]:
    """Every scalar tag's logged steps, in file order, read by TensorBoard's ``EventAccumulator``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb), size_guidance={"scalars": 0}, purge_orphaned_data=purge).Reload()
    return {tag: tuple(e.step for e in acc.Scalars(tag)) for tag in acc.Tags()["scalars"]}


def test_training_logs_its_trajectories_and_score_reads_them_as_is(demo_export, tmp_path):
    """A 2-step run: 4 episodes per step (2 prompts x 2); `score` under the run's preset reproduces every logged
    reward exactly, and under `outcome` gives other totals."""
    run = tmp_path / "run"
    result = train(_cfg(demo_export, run, "run.max_steps=2", "env.max_actions=2", "grpo.max_new_tokens=16"))
    rows = _lines(run / "trajectories.jsonl")
    assert [(x["step"], x["group"], x["sample"]) for x in rows] == [(s, g, k) for s in (1, 2) for g in (0, 1)
                                                                    for k in (0, 1)]
    for x in rows:
        assert x["version"] == 1 and x["source"] == "train" and len(x["turns"]) >= 1
        assert len(x["actions"]) == len(x["action_errors"]) == len(x["reward"]["labels"])
    for step in (1, 2):  # the logged rewards are the ones the step's metrics were computed from
        mean = sum(x["reward"]["total"] for x in rows if x["step"] == step) / 4
        logged = next(m for m in _lines(run / "log.jsonl") if m["step"] == step)
        assert mean == pytest.approx(logged["reward/total"], abs=1e-12)
    assert result.metrics["actions/tool_use_rate"] == pytest.approx(
        sum(any(a is not None for a in x["actions"]) for x in rows if x["step"] == 2) / 4)

    runner = CliRunner()
    log = str(run / "trajectories.jsonl")
    same = runner.invoke(app, ["score", log, "--preset", "virl", "-o", str(tmp_path / "s.jsonl")])
    assert same.exit_code == 0, same.output
    assert "0 of 8 totals changed" in same.output
    for row, out in zip(rows, _lines(tmp_path / "s.jsonl"), strict=True):
        assert [out[k] for k in ("id", "step", "group", "sample")] == [row[k] for k in ("id", "step", "group", "sample")]
        for key in ("total", "components", "labels", "config"):
            assert out[key] == row["reward"][key], key

    heavier = runner.invoke(app, ["score", log, "-p", "lambda_fmt=0.5"])
    assert heavier.exit_code == 0 and "mean total" in heavier.stderr  # the summary goes to stderr, the lines to stdout
    assert [json.loads(x)["total"] for x in heavier.stdout.splitlines()] != [x["reward"]["total"] for x in rows]

    # the random model never answers right, so its totals are the same under outcome: make one episode a good one
    # (the right answer after a crop on the first chain step) and the presets must part
    edited = tmp_path / "edited.jsonl"
    rows[0] = {**rows[0], "answer": rows[0]["gt_answer"], "format_ok": True,
               "actions": [[float(v) for v in rows[0]["rationale"][0][0]]], "action_errors": [None]}
    edited.write_text("".join(json.dumps(x) + "\n" for x in rows))
    full = runner.invoke(app, ["score", str(edited), "--preset", "virl", "-o", str(tmp_path / "f.jsonl")])
    outcome = runner.invoke(app, ["score", str(edited), "--preset", "outcome", "-o", str(tmp_path / "o.jsonl")])
    assert full.exit_code == 0 and outcome.exit_code == 0, full.output + outcome.output
    f_rows, o_rows = _lines(tmp_path / "f.jsonl"), _lines(tmp_path / "o.jsonl")
    assert f_rows[0]["total"] > o_rows[0]["total"] == 1.0  # the rationale bonus is gone under outcome
    assert sum(r["total"] for r in f_rows) != sum(r["total"] for r in o_rows)
    assert all(lab["credit"] == 0.0 for r in o_rows for lab in r["labels"])


def test_a_second_run_into_a_run_folder_fails_naming_the_first_and_touches_nothing(demo_export, tmp_path):
    """Another process writes the run folder (holds its lock): `train` and `sft` into it stop at once with one
    error line naming that process; the folder keeps only what the first wrote."""
    run = tmp_path / "run"
    first = spawn_python(f"""
        import time
        from pathlib import Path
        from virl_data.storage.locks import folder_lock
        with folder_lock({str(run)!r}):
            Path({str(run / "log.jsonl")!r}).write_text('{{"step": 1, "loss": 0.5}}\\n')
            print("ready", flush=True)
            time.sleep(120)
    """)
    common = ["--config", str(REPO / "configs" / "tiny_cpu.yaml"), f"data.path={demo_export}", f"run.out_dir={run}",
              "run.max_steps=1", "data.limit=4", "grpo.max_new_tokens=8", "env.max_actions=1"]
    try:
        for cmd in (["train", *common], ["sft", *common, "--steps", "1"]):
            res = CliRunner().invoke(app, cmd)
            lines = res.stderr.strip().splitlines()
            assert res.exit_code == 2 and len(lines) == 1, res.output
            assert lines[0].startswith(f"error: {run} is in use by another virl process (pid {first.pid} on host")
        assert sorted(p.name for p in run.iterdir() if not is_lock_file(p)) == ["log.jsonl"]
        assert (run / "log.jsonl").read_text() == '{"step": 1, "loss": 0.5}\n' and first.poll() is None
    finally:
        kill9(first)
    assert train(_cfg(demo_export, run, "run.max_steps=1")).steps == 1  # the killed holder's lock is gone


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
    rows = _lines(run / "eval" / "trajectories.jsonl")  # the greedy episodes, in record order
    assert [(x["source"], x["step"], x["group"], x["sample"]) for x in rows] == [("eval", None, i, 0) for i in range(3)]
    assert [x["id"] for x in rows] == [e["record_id"] for e in report["episodes"]]
    assert [x["reward"]["total"] for x in rows] == [e["reward"] for e in report["episodes"]]
    crops = sum(any(a is not None for a in x["actions"]) for x in rows)
    assert report["metrics"]["tool_use_rate"] == crops / 3
    res = CliRunner().invoke(app, ["score", str(run / "eval" / "trajectories.jsonl"), "--preset", "virl"])
    assert res.exit_code == 0 and "0 of 3 totals changed" in res.stderr, res.output
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
    # every process's episodes, gathered to the main one: 2 processes x 2 prompts x 2 samples per step, no repeats
    rows = _lines(run / "trajectories.jsonl")
    assert [(x["step"], x["group"], x["sample"]) for x in rows] == [
        (s, g, k) for s in (1, 2) for g in range(4) for k in range(2)]
    assert len({x["id"] for x in rows if x["step"] == 1}) == 4  # the two processes rolled out different prompts
