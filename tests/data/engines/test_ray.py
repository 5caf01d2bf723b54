"""The Ray engine gives the local engine's corpus: same rows (ids, statuses, check reasons, chains, splits) in the
same order, the same stage counts and rejection reasons, the same exports; on the real samples, the demo world and
pipelines whose checks open images. One local Ray instance serves the whole session (starting one costs seconds).
The block planners alone are tested in test_blocks.py."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import datasets
import polars as pl
import pytest
import yaml
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from tests.conftest import REPO
from tests.data.engines.test_blocks import GQA_SAMPLE, _gqa_with_duplicates
from virl_data.core.errors import CorpusReadError
from virl_data.engines import blocks
from virl_data.storage import corpus
from virl_data.cli import app
from virl_data.engines.pipeline import RunReport, load_pipeline, pipeline_from_dict, run_pipeline

ray = pytest.importorskip("ray", reason="the Ray engine needs the [ray] extra")
from virl_data.engines.ray import LOCAL_SYSTEM_CONFIG, local_runtime_env, run_pipeline_ray  # noqa: E402

PIPELINES = REPO / "pipelines"


@pytest.fixture(scope="session")
def ray_instance():
    """One local Ray instance for the session, stopped after it."""
    if ray.is_initialized():  # someone else's instance: use it, leave it up
        yield
        return
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
             runtime_env=local_runtime_env(), object_store_memory=256 * 1024 * 1024, _system_config=LOCAL_SYSTEM_CONFIG)
    yield
    ray.shutdown()


def _stage_rows(report: RunReport) -> list[tuple]:
    """Everything a stage reports but its seconds; export details name the run folder, so it is cut out."""
    return [(s.name, s.n_in, s.n_out, s.removed, s.detail.replace(str(report.out), "OUT")) for s in report.stages]


def assert_same_run(local: RunReport, on_ray: RunReport) -> None:
    """The two runs wrote the same corpora (row for row) and reported the same stages and rejection reasons."""
    assert _stage_rows(local) == _stage_rows(on_ray)
    assert local.rejection_reasons == on_ray.rejection_reasons
    for name in ("mined", "verified", "curated"):
        assert local.paths[name].suffix == ".parquet" and on_ray.paths[name].is_dir()
        assert_frame_equal(corpus.read(local.paths[name]), corpus.read(on_ray.paths[name]))


def _both(cfg, tmp_path: Path, **ray_kwargs) -> tuple[RunReport, RunReport]:
    local = run_pipeline(cfg, out=tmp_path / "local")
    on_ray = run_pipeline_ray(cfg, out=tmp_path / "ray", intermediate=["mined", "verified"], **ray_kwargs)
    return local, on_ray


# --- equivalence on the real samples, the demo world and image checks ---------------------------------------------
def test_gqa_sample_with_filters_duplicates_and_shuffled_blocks(ray_instance, shared_data, tmp_path):
    questions = _gqa_with_duplicates(shared_data, tmp_path)
    cfg = pipeline_from_dict({
        "name": "gqa_dups",
        "source": {"miner": "gqa", "options": {
            "questions": str(questions),
            "scene_graphs": str(shared_data / GQA_SAMPLE / "train_sceneGraphs_sample.json")}},
        "filters": ["pl.col('n_steps') >= 2", "pl.col('n_boxes') <= 6"],
        "split": {"ratios": {"train": 0.5, "val": 0.25, "test": 0.25}, "seed": 3},
        "export": [{"format": "parquet"}, {"format": "jsonl"}],
    })
    # an image's questions spread over the file: blocks are runs of questions, in order whatever the images
    assert blocks.in_order(blocks.plan_blocks("gqa", cfg.source.options, block_size=4, workdir=tmp_path / "plan"))
    local, on_ray = _both(cfg, tmp_path, block_size=4)
    assert_same_run(local, on_ray)
    assert on_ray.stage("dedup").removed["duplicate"] >= 1  # the re-asked copies that passed the checks
    assert on_ray.stage("filter").n_removed >= 1
    assert on_ray.config["engine"]["blocks"] > 3
    assert len(list(on_ray.paths["mined"].glob("*.parquet"))) > 3  # several shards: their read order is checked
    for fmt in ("parquet", "jsonl"):
        files = sorted(p.name for p in (tmp_path / "local" / "export" / fmt).iterdir())
        assert files == sorted(p.name for p in (tmp_path / "ray" / "export" / fmt).iterdir())
        for name in files:
            assert (tmp_path / "local" / "export" / fmt / name).read_bytes() == \
                (tmp_path / "ray" / "export" / fmt / name).read_bytes()


def test_a_malformed_question_found_by_a_worker_is_the_local_engines_error(ray_instance, shared_data, tmp_path):
    text = (shared_data / GQA_SAMPLE / "train_balanced_questions_sample.json").read_bytes()
    at = text.index(b'"answer"', len(text) // 2)
    broken = tmp_path / "train_questions.json"
    broken.write_bytes(text[:at] + b'"answer": tru, ' + text[at:])
    cfg = pipeline_from_dict({"name": "broken", "source": {"miner": "gqa", "options": {
        "questions": str(broken), "scene_graphs": str(shared_data / GQA_SAMPLE / "train_sceneGraphs_sample.json")}}})
    with pytest.raises(CorpusReadError, match="cannot read GQA questions file .*train_questions.json"):
        run_pipeline(cfg, out=tmp_path / "local")
    # the planner parses only the first entries: a worker meets the broken one, and its error comes out as it is
    with pytest.raises(CorpusReadError, match=rf"cannot read GQA questions file .*train_questions.json: .* at byte"):
        run_pipeline_ray(cfg, out=tmp_path / "ray", block_size=4)
    assert not (tmp_path / "ray" / "corpus" / "curated").exists()


def test_shipped_pipelines_on_the_real_samples(ray_instance, shared_data, tmp_path):
    # the YAMLs reach the samples as ../../shared/data; refcoco and flickr30k mine on the workers too (run planners)
    for name, block_size in (("gqa", 3), ("vg", 3), ("refcoco", 16), ("flickr30k", 10)):
        local, on_ray = _both(load_pipeline(PIPELINES / f"{name}.yaml"), tmp_path / name, block_size=block_size)
        assert_same_run(local, on_ray)
        assert on_ray.stage("mine").n_out > 0
        assert on_ray.config["engine"]["blocks"] > 1 or name == "vg"  # the VG sample is one image: one block


def test_coco_sample_with_image_checks_and_damaged_images(ray_instance, shared_data, tmp_path):
    """COCO with its images, two of them damaged (one unreadable, one gone): image_readable opens every image (on
    the Ray workers) and rejects the same records under both engines; the HF exports hold the same records."""
    cfg = load_pipeline(PIPELINES / "coco.yaml")
    images = tmp_path / "images"
    shutil.copytree(cfg.source.images, images)
    damaged = sorted(p for p in images.rglob("*") if p.is_file())[:2]
    damaged[0].write_bytes(b"not a jpeg")
    damaged[1].unlink()
    cfg = dataclasses.replace(cfg, source=dataclasses.replace(cfg.source, images=str(images)))
    local, on_ray = _both(cfg, tmp_path, block_size=7)
    assert_same_run(local, on_ray)
    assert corpus.image_root(on_ray.paths["curated"]).resolve() == images.resolve()
    reasons = {r["reason_code"] for r in on_ray.rejection_reasons if r["check"] == "image_readable"}
    assert reasons == {"image_missing", "image_unreadable"}
    checks = corpus.read(on_ray.paths["verified"]).select(pl.col("checks").explode()).unnest("checks")
    opened = checks.filter(pl.col("name") == "image_readable")
    assert opened.height == on_ray.stage("mine").n_out and not opened["skipped"].any()
    local_hf = datasets.load_from_disk(str(tmp_path / "local" / "export" / "hf"))
    ray_hf = datasets.load_from_disk(str(tmp_path / "ray" / "export" / "hf"))
    assert list(local_hf) == list(ray_hf) and len(ray_hf) > 0
    for split in local_hf:
        assert ray_hf[split]["id"] == local_hf[split]["id"]


def test_demo_world(ray_instance, tmp_path):
    """The shipped demo pipeline (rendered shapes images, checked by opening them; HF and Parquet exports)."""
    cfg = load_pipeline(PIPELINES / "demo.yaml")
    cfg = dataclasses.replace(cfg, source=dataclasses.replace(cfg.source, limit=80))
    local, on_ray = _both(cfg, tmp_path, block_size=16)
    assert_same_run(local, on_ray)
    assert on_ray.config["engine"]["blocks"] == 5
    local_hf = datasets.load_from_disk(str(tmp_path / "local" / "export" / "hf"))
    ray_hf = datasets.load_from_disk(str(tmp_path / "ray" / "export" / "hf"))
    for split in local_hf:
        assert ray_hf[split]["id"] == local_hf[split]["id"]
        assert ray_hf[split]["chain"] == local_hf[split]["chain"]


@pytest.mark.parametrize("name", ["gqa", "demo"])
def test_an_empty_source_gives_an_empty_corpus(ray_instance, shared_data, tmp_path, name):
    """limit 0: a planned source with no block (GQA) and a driver-mined one with an empty block (demo)."""
    cfg = load_pipeline(PIPELINES / f"{name}.yaml")
    cfg = dataclasses.replace(cfg, source=dataclasses.replace(cfg.source, limit=0))
    local, on_ray = _both(cfg, tmp_path)
    assert_same_run(local, on_ray)
    assert corpus.read(on_ray.paths["curated"]).height == 0


# --- the command line ------------------------------------------------------------------------------------------------
def test_cli_run_engine_ray(ray_instance, tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({"name": "tiny", "source": {"miner": "shapes", "options": {"seed": 3}, "limit": 12},
                                    "export": [{"format": "jsonl"}]}))
    result = CliRunner().invoke(app, ["run", str(path), "--engine", "ray", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "export:jsonl" in result.output and (tmp_path / "run" / "corpus" / "curated").is_dir()
    assert not (tmp_path / "run" / "corpus" / "mined").exists()  # intermediates only when asked
    result = CliRunner().invoke(app, ["run", str(path), "--engine", "ray", "--out", str(tmp_path / "run"),
                                      "--intermediate", "mined"])
    assert result.exit_code == 0, result.output
    assert corpus.read(tmp_path / "run" / "corpus" / "mined").height == 12
    assert not (tmp_path / "run" / "corpus" / "verified").exists()
    assert sorted(p.name for p in (tmp_path / "run" / "corpus").iterdir()) == ["curated", "mined"]  # no temp left


@pytest.mark.parametrize("args, message", [
    (["--engine", "spark"], "--engine must be 'local' or 'ray'"),
    (["--num-cpus", "2"], "apply to --engine ray only"),
])
def test_cli_run_engine_errors_are_one_line(tmp_path, args, message):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({"name": "tiny", "source": {"miner": "shapes", "limit": 2}}))
    result = CliRunner().invoke(app, ["run", str(path), *args])
    assert result.exit_code == 2 and message in " ".join(result.output.split())


# --- output folders and the intermediate corpora (no Ray instance needed) -------------------------------------------
def test_stale_temp_folders_of_dead_runs_are_removed_others_kept(tmp_path):
    import socket
    import subprocess
    import sys

    from virl_data.engines.guard import clean_stale, temp_folder

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    names = [f".mined.{host}-{dead.stdout.strip()}-0123abcd.tmp",  # this host, driver gone: stale
             ".verified.0b078ca0.tmp",                             # an earlier version's name: no owner, stale
             temp_folder(tmp_path / "curated").name,               # this process: alive, kept
             f".mined.elsewhere-{dead.stdout.strip()}-0123abcd.tmp",  # another host: cannot tell, kept
             ".notes.tmp"]                                         # not ours, kept
    for name in names:
        (tmp_path / name).mkdir()
    removed = clean_stale(tmp_path)
    assert sorted(p.name for p in removed) == sorted(names[:2])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[2:])


def test_swap_in_replaces_a_finished_folder_whole(tmp_path):
    from virl_data.engines.guard import swap_in, temp_folder

    folder = tmp_path / "curated"
    folder.mkdir()
    (folder / "old.parquet").write_text("old")
    tmp = temp_folder(folder)
    tmp.mkdir()
    (tmp / "new.parquet").write_text("new")
    swap_in(tmp, folder)
    assert [p.name for p in tmp_path.iterdir()] == ["curated"] and [p.name for p in folder.iterdir()] == ["new.parquet"]


@pytest.mark.parametrize("value, expected", [(None, None), (["verified", "mined"], ("mined", "verified")), ([], ())])
def test_intermediate_key(value, expected):
    from virl_data.engines.pipeline import intermediate_corpora

    cfg = pipeline_from_dict({"source": {"miner": "shapes"}, **({} if value is None else {"intermediate": value})})
    assert cfg.intermediate == expected
    assert intermediate_corpora(cfg, None, default=("mined",)) == (expected if expected is not None else ("mined",))
    assert intermediate_corpora(cfg, ["verified"], default=()) == ("verified",)  # the flag wins


def test_intermediate_key_errors():
    from virl_data.core.errors import ConfigError

    with pytest.raises(ConfigError, match="intermediate: expected a list of mined, verified"):
        pipeline_from_dict({"source": {"miner": "shapes"}, "intermediate": ["curated"]})


def test_run_guard_docstring_examples():
    import doctest

    from virl_data.engines import guard as run_guard

    result = doctest.testmod(run_guard)
    assert result.attempted > 0 and result.failed == 0
