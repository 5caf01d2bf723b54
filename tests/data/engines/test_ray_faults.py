"""A Ray run that dies halfway: ``kill -9`` of the driver leaves no Ray process of its local instance behind (the
watchdog stops them) and the rerun removes the dead run's temp folders; Ctrl-C leaves the previous finished corpus
in place, readable, and no temp folder. Each case starts ``virl-data run --engine ray`` in a process of its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from polars.testing import assert_frame_equal

from tests.conftest import REPO
from virl_data.storage import corpus
from virl_data.engines.pipeline import run_pipeline

ray = pytest.importorskip("ray", reason="the Ray engine needs the [ray] extra")
from tests.data.engines.test_ray import ray_instance  # noqa: E402,F401 - the session's Ray instance
from virl_data.engines.ray import run_pipeline_ray  # noqa: E402

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")


def _stat(pid: str) -> tuple[str, str] | None:
    """(parent pid, state) of a live process, None when gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in (b"Z", b"X") else (fields[1].decode(), fields[0].decode())


def ray_processes(driver: int) -> set[str]:
    """The driver's descendants, and every process of their raylets (agents and workers re-parent elsewhere)."""
    parents = {p: s[0] for p in filter(str.isdigit, os.listdir("/proc")) if (s := _stat(p)) is not None}
    found, frontier = set(), {str(driver)}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier and p not in found}
        found |= frontier
    raylets = [p for p in found if Path(f"/proc/{p}/comm").read_text().strip() == "raylet"]
    for pid in parents:
        try:
            env = b"\0" + Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if any(f"\0RAY_RAYLET_PID={r}\0".encode() in env for r in raylets):
            found.add(pid)
    return found


def _start(config: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    code = "from virl_data.cli import app; app()"
    args = ["run", str(config), "--engine", "ray", "--num-cpus", "1", "--out", str(out), "--intermediate",
            "mined,verified"]
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def _temps(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "corpus").glob(".*.tmp")) if (out / "corpus").is_dir() else []


def _wait_for_temps(proc: subprocess.Popen, out: Path, timeout: float = 120) -> None:
    """Until the run has made its temp folders (its Ray instance and watchdog are up by then)."""
    deadline = time.monotonic() + timeout
    while not _temps(out):
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the run made no temp folder in time"
        time.sleep(0.05)


def _wait_gone(pids: set[str], timeout: float = 60) -> set[str]:
    deadline = time.monotonic() + timeout
    while (alive := {p for p in pids if _stat(p) is not None}) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive


@pytest.fixture
def shapes_config(tmp_path) -> Path:
    path = tmp_path / "shapes.yaml"
    path.write_text(yaml.safe_dump({"name": "shapes", "source": {"miner": "shapes", "options": {"seed": 5},
                                                                 "limit": 300}}))
    return path


def test_kill_9_of_the_driver_leaves_no_ray_process_and_the_rerun_cleans_up(ray_instance, shapes_config, tmp_path):
    out = tmp_path / "run"
    proc = _start(shapes_config, out)
    try:
        _wait_for_temps(proc, out)
        session = ray_processes(proc.pid)
        assert len(session) >= 4  # gcs, raylet, agents, ... of the run's own Ray instance
        proc.kill()
        proc.wait(timeout=30)
        assert _wait_gone(session) == set(), "Ray processes of the killed run survived it"
    finally:
        if proc.poll() is None:
            proc.kill()
    stale = _temps(out)
    assert stale, "the killed run left no temp folder: it was killed too late to test the cleanup"
    report = run_pipeline_ray(shapes_config, out=out)  # the rerun, on the session's instance
    assert _temps(out) == []
    assert not (out / "corpus" / "mined").exists()  # the rerun did not ask for it
    local = run_pipeline(shapes_config, out=tmp_path / "local")
    assert_frame_equal(corpus.read(local.paths["curated"]), corpus.read(report.paths["curated"]))


def test_ctrl_c_keeps_the_finished_corpus_and_leaves_no_temp_folder(ray_instance, shapes_config, tmp_path):
    out = tmp_path / "run"
    before = run_pipeline_ray(shapes_config, out=out)
    shards = sorted(p.name for p in before.paths["curated"].iterdir())
    finished = corpus.read(before.paths["curated"])
    proc = _start(shapes_config, out)
    try:
        _wait_for_temps(proc, out)
        session = ray_processes(proc.pid)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) != 0
        assert _wait_gone(session) == set(), "Ray processes of the interrupted run survived it"
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _temps(out) == []
    assert sorted(p.name for p in (out / "corpus" / "curated").iterdir()) == shards
    assert_frame_equal(corpus.read(out / "corpus" / "curated"), finished)
