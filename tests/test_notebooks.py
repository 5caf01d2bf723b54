"""Every notebook in notebooks/ executes top to bottom (nbclient) and is stored without outputs.

Each notebook writes into ``$VIRL_NOTEBOOK_OUT`` (a temporary folder here) and is checked on what it leaves there, so
a notebook that stops short or skips its own asserts fails. 02 needs the real samples in ``../shared/data`` and
FiftyOne's database, 03 a Label Studio server (the session fixture of
``tests/data/integrations/conftest_labelstudio.py``), 04 the trainer's dependencies; each skips with the reason
when its requirement is absent.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import tempfile
import uuid
from pathlib import Path

import nbclient
import nbformat
import pytest
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager

from virl_data.core.types import Status
from virl_data.storage import corpus

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
TESTED = ("01_data_flow", "02_look_in_fiftyone", "03_review_in_label_studio", "04_train_and_evaluate")
CELL_TIMEOUT_S = 300  # a safety net against a hung cell; each notebook takes a minute or two in all


KERNEL = "virl-test-python"
BIN = Path(sys.executable).parent  # not resolved: a venv's bin/python is often a link out of the venv


@functools.cache
def kernel_specs() -> Path:
    """A folder (one per test process) holding the kernel spec ``KERNEL``: ipykernel run by THIS interpreter
    (``sys.executable``), its folder first on the kernel's PATH, as an activated venv has it. ``kernel_name="python3"``
    takes the first ``python3`` spec on the Jupyter path, which may start another interpreter, and the notebooks'
    shell cells would find no ``virl-data`` when the tests run as ``.venv/bin/python -m pytest`` unactivated."""
    kernels = Path(tempfile.mkdtemp(prefix="virl-kernels-"))
    (kernels / KERNEL).mkdir()
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    env = {"PATH": f"{BIN}{os.pathsep}${{PATH}}"}  # the %%bash cells' virl-data / virl-train: this install's scripts
    spec = {"argv": argv, "env": env, "display_name": "the tests' python", "language": "python"}
    (kernels / KERNEL / "kernel.json").write_text(json.dumps(spec))
    return kernels


def kernel_manager() -> KernelManager:
    """A manager of a fresh ``KERNEL`` kernel (this interpreter)."""
    return KernelManager(kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernel_specs())]))


def execute(nb: nbformat.NotebookNode, out: Path) -> nbformat.NotebookNode:
    """Execute ``nb`` in a fresh kernel of this interpreter, with ``out`` as its working directory; a cell that
    raises fails the test with its traceback."""
    client = nbclient.NotebookClient(
        nb, timeout=CELL_TIMEOUT_S, km=kernel_manager(), resources={"metadata": {"path": str(out)}}
    )
    client.execute()
    return nb


def run_notebook(name: str, out: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> nbformat.NotebookNode:
    """Execute ``notebooks/<name>.ipynb`` (``execute``) in a kernel whose environment has ``VIRL_NOTEBOOK_OUT=out``
    and ``env``."""
    for key, value in {"VIRL_NOTEBOOK_OUT": str(out), **env}.items():
        monkeypatch.setenv(key, value)
    return execute(nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4), out)


def test_the_kernel_is_this_interpreter_whatever_python_is_on_path(tmp_path, monkeypatch):
    """Another interpreter (here: a shim that fails) first on PATH as `python`, and named by the first `python3`
    kernel spec on the Jupyter path (as a system-wide or user Jupyter install has it): the notebooks' kernel still
    starts, as this interpreter. (With `kernel_name="python3"` this kernel dies before replying.)"""
    shim = tmp_path / "bin" / "python"
    shim.parent.mkdir()
    shim.write_text("#!/bin/sh\necho 'not the python running the tests' >&2\nexit 1\n")
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim.parent}:{os.environ.get('PATH', '')}")
    other = tmp_path / "jupyter" / "kernels" / "python3"
    other.mkdir(parents=True)
    argv = [str(shim), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (other / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "Python 3", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    code = "import os, sys; print(sys.executable); print(os.environ['PATH'].split(os.pathsep)[0])"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    (out,) = execute(nb, tmp_path).cells[0].outputs
    assert out.text.split() == [sys.executable, str(BIN)]


def test_every_notebook_is_tested_and_stored_without_outputs():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(TESTED)
    for name in TESTED:
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        nbformat.validate(nb)
        assert nb.cells[0].cell_type == "markdown", f"{name}: opens with what it shows and how long it takes"
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.outputs == [] and c.execution_count is None for c in code), f"{name}: strip the outputs"


def test_01_data_flow(tmp_path, monkeypatch):
    run_notebook("01_data_flow", tmp_path, monkeypatch)
    assert (tmp_path / "hf" / "dataset_dict.json").exists()


@pytest.mark.integration
def test_02_look_in_fiftyone(shared_data, tmp_path, monkeypatch):
    fo = pytest.importorskip("fiftyone")
    dataset = f"virl-test-nb02-{uuid.uuid4().hex[:8]}"
    try:
        run_notebook("02_look_in_fiftyone", tmp_path, monkeypatch, VIRL_SHARED_DATA=str(shared_data),
                     VIRL_FIFTYONE_DATASET=dataset)
        assert len(fo.load_dataset(dataset)) == len(corpus.read_records(tmp_path / "corpus" / "verified"))
    finally:
        if fo.dataset_exists(dataset):
            fo.delete_dataset(dataset)
    merged = corpus.read_records(tmp_path / "reviewed.parquet")
    sources = {r.provenance.source for r in merged}
    assert {"gqa", "vg", "flickr30k", "coco"} <= sources
    verdicts = sorted((r.provenance.source, r.reviews[-1].verdict) for r in merged if r.reviews)
    assert verdicts == [("coco", "fix"), ("coco", "reject"), ("gqa", "accept")]
    assert json.loads((tmp_path / "pull.json").read_text())["invalid"] == []
    assert (tmp_path / "review_merged.png").stat().st_size > 10_000


@pytest.mark.integration
def test_03_review_in_label_studio(label_studio_server, tmp_path, monkeypatch):
    pytest.importorskip("label_studio_sdk")
    out = label_studio_server.root / f"nb03-{uuid.uuid4().hex[:8]}"  # the server serves images from its root only
    out.mkdir()
    run_notebook("03_review_in_label_studio", out, monkeypatch, LABEL_STUDIO_URL=label_studio_server.url,
                 LABEL_STUDIO_API_KEY=label_studio_server.token,
                 LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(label_studio_server.root))
    merged = corpus.read_records(out / "reviewed.parquet")
    reviewed = [r for r in merged if r.reviews]
    assert sorted(r.reviews[-1].verdict for r in reviewed) == ["accept", "fix", "reject"]
    assert {r.status for r in reviewed} == {Status.REVIEWED, Status.REJECTED}
    assert (out / "hf" / "dataset_dict.json").exists()
    assert (out / "reviewed_chain.png").stat().st_size > 5_000


def test_04_train_and_evaluate(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    run_notebook("04_train_and_evaluate", tmp_path, monkeypatch)
    log = [json.loads(line) for line in (tmp_path / "runs" / "rl" / "log.jsonl").read_text().splitlines()]
    assert [m["step"] for m in log] == list(range(1, 9))
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert report["counts"]["n_episodes"] == 16
    assert (tmp_path / "train_and_evaluate.png").stat().st_size > 10_000
