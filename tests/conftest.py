"""Shared fixtures: small record factories and the location of the real dataset samples."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from virl_data.core.types import (
    Box,
    CheckResult,
    ImageRef,
    Provenance,
    RationaleRecord,
    RationaleStep,
    Status,
    record_id,
)

# the Label Studio server fixture, shared by every test module that names it (one server per session)
pytest_plugins = ["tests.data.integrations.conftest_labelstudio"]

# tests/verl needs verl, which lives in its own venv (.venv-verl): tests/train/test_interop_verl.py runs it there
collect_ignore = [] if importlib.util.find_spec("verl") else ["verl"]

os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("VIRL_SHARED_DATA", REPO.parent / "shared" / "data"))


def make_record(
    i: int = 0,
    *,
    chain: list[list[tuple[float, float, float, float]]] | None = None,
    size: tuple[int, int] = (100, 80),
    question: str = "What colour is the small square?",
    answer: str = "red",
    source: str = "test",
    status: Status = Status.MINED,
    checks: tuple[CheckResult, ...] = (),
    path: str | None = None,
    split: str | None = None,
    sha1: str | None = None,
) -> RationaleRecord:
    """A record with the given chain (list of steps, each a list of xyxy tuples)."""
    chain = [[(10, 10, 30, 30)], [(40, 20, 60, 50), (70, 10, 90, 30)]] if chain is None else chain
    steps = tuple(
        RationaleStep(boxes=tuple(Box(*b) for b in step), phrase=f"thing {j}", role="target" if j else "context")
        for j, step in enumerate(chain)
    )
    return RationaleRecord(
        id=record_id(source, str(i)),
        image=ImageRef(path=path or f"img/{i}.png", width=size[0], height=size[1], sha1=sha1),
        question=question,
        answer=answer,
        chain=steps,
        provenance=Provenance(source=source, source_split="val", native_ids=(("qid", str(i)),), miner="test@1"),
        answer_type="color",
        question_type="attr",
        status=status,
        checks=checks,
        split=split,
    )


def spawn_python(code: str) -> subprocess.Popen:
    """A python child running ``code`` (dedented) in the repository; returns once it printed ``ready`` (e.g. once it
    holds a lock). Stop it with ``kill9``."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True,
                             env=env, cwd=REPO)
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    return child


def kill9(child: subprocess.Popen) -> None:
    """``kill -9`` the child and reap it."""
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)


@pytest.fixture
def record_factory():
    return make_record


@pytest.fixture
def shared_data() -> Path:
    """The real dataset samples in ../shared/data; tests using it skip with a reason when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real dataset samples not found at {SHARED_DATA} (set VIRL_SHARED_DATA)")
    return SHARED_DATA
