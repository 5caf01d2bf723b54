"""virl_data.storage.trajectories, the trajectory log format: resume truncation (a torn last line dropped, a step
never logged twice), a disabled log, the docstring examples. Lines built from scored episodes:
tests/train/test_trajectories.py."""

from __future__ import annotations

import doctest
import json

import pytest

from virl_data.storage import trajectories
from virl_data.storage.trajectories import TrajectoryError, TrajectoryLog, truncate_steps


def test_truncate_keeps_steps_up_to_the_checkpoint_and_drops_a_torn_line(tmp_path):
    path = tmp_path / "log.jsonl"
    lines = [json.dumps({"step": s, "k": i}) for s, i in [(1, 0), (1, 1), (2, 0), (3, 0)]]
    path.write_text("\n".join(lines) + "\n" + '{"step": 4, "k"')  # killed mid-line
    assert truncate_steps(path, 2) == 3
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1, 1, 2]
    assert truncate_steps(tmp_path / "missing.jsonl", 2) == 0 and not (tmp_path / "missing.jsonl").exists()
    log = TrajectoryLog(path, resume_step=1)  # resume from step 1, then log step 2 again
    log.write([{"step": 2, "k": 9}])
    log.close()
    kept = [json.loads(x) for x in path.read_text().splitlines()]
    assert [(x["step"], x["k"]) for x in kept] == [(1, 0), (1, 1), (2, 9)]
    TrajectoryLog(path, resume_step=0).close()  # a fresh run starts an empty file
    assert path.read_text() == ""
    path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(TrajectoryError, match="log.jsonl:2"):
        truncate_steps(path, 1)


def test_a_disabled_log_writes_nothing(tmp_path):
    log = TrajectoryLog(tmp_path / "t.jsonl", enabled=False)
    log.write([{"step": 1}])
    log.close()
    assert not (tmp_path / "t.jsonl").exists()


def test_docstring_examples():
    assert doctest.testmod(trajectories).failed == 0
