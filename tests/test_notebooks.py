"""Every notebook in notebooks/ executes top to bottom (nbclient) and is stored without outputs.

Each notebook writes into ``$VIRL_NOTEBOOK_OUT`` (a temporary folder here) and is checked on what it leaves there, so
a notebook that stops short or skips its own asserts fails. 02 needs the real samples in ``../shared/data`` and
FiftyOne's database, 03 a Label Studio server (the session fixture of
``tests/data/integrations/conftest_labelstudio.py``), 04 the trainer's dependencies; each skips with the reason
when its requirement is absent.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import nbclient
import nbformat
import pytest

from virl_data.core.types import Status
from virl_data.storage import corpus

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
TESTED = ("01_data_flow", "02_look_in_fiftyone", "03_review_in_label_studio", "04_train_and_evaluate")
CELL_TIMEOUT_S = 300  # a safety net against a hung cell; each notebook takes a minute or two in all


def run_notebook(name: str, out: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> nbformat.NotebookNode:
    """Execute ``notebooks/<name>.ipynb`` in a fresh kernel whose environment has ``VIRL_NOTEBOOK_OUT=out`` and
    ``env``, with ``out`` as its working directory; a cell that raises fails the test with its traceback."""
    for key, value in {"VIRL_NOTEBOOK_OUT": str(out), **env}.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(out)}}
    )
    client.execute()
    return nb


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
