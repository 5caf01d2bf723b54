"""The layers of the house (``[tool.importlinter]`` in ``pyproject.toml``): ``lint-imports`` keeps every contract on
this tree, and breaks the named contracts on a copy of the packages with deliberately bad imports, so the check
can fail (a lazy import inside a function counts as much as a top-level one)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINT = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the packages and the ``pyproject.toml`` under ``root`` (found first on the path)."""
    env = dict(os.environ, PYTHONPATH=str(root), COLUMNS="200")
    return subprocess.run([sys.executable, "-c", LINT], cwd=root, env=env, capture_output=True, text=True)


def test_every_layer_contract_is_kept():
    proc = lint_imports(REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def test_bad_imports_break_the_named_contracts(tmp_path):
    for package in ("virl_data", "virl_train"):
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    with (tmp_path / "virl_data" / "core" / "types.py").open("a") as fh:  # the core reaching up
        fh.write("\nfrom virl_data.curation import checks  # noqa: E402\n")
    with (tmp_path / "virl_data" / "review" / "queue.py").open("a") as fh:  # the data half reaching up, lazily
        fh.write("\n\ndef _bad_reach():\n    from virl_train.rewards import RewardConfig\n\n    return RewardConfig\n")

    proc = lint_imports(tmp_path)
    out = " ".join(proc.stdout.split())
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Two halves, one way: virl_data never imports virl_train BROKEN" in out
    assert "The record core imports nothing else of virl_data BROKEN" in out
    assert "virl_data follows the flow" in out and "virl_data.core.types -> virl_data.curation.checks" in out
    assert "virl_data.review.queue -> virl_train.rewards" in out
    assert "Command lines sit on top: library code never imports virl_data.cli or virl_train.cli KEPT" in out
