"""Declarative pipelines: every YAML in pipelines/ validates, the demo and real-sample pipelines run with exact
counts, bad configs fail with the nearest valid key, and `virl-data run` works end to end."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import datasets
import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from tests.conftest import REPO
from virl_data.cli import app
from virl_data.core.errors import ConfigError
from virl_data.engines.pipeline import (
    PipelineConfig,
    SourceConfig,
    StageReport,
    check_accounting,
    load_pipeline,
    miner_parameters,
    pipeline_from_dict,
    run_pipeline,
)
from virl_data.miners import MINERS, coco
from virl_data.storage import corpus

PIPELINES = REPO / "pipelines"
YAMLS = sorted(PIPELINES.glob("*.yaml"))
# The YAMLs reach the samples as ../../shared/data from pipelines/, i.e. beside the repo
YAML_DATA = REPO.parent / "shared" / "data"


def _real(shared_data: Path, name: str) -> PipelineConfig:
    if not YAML_DATA.is_dir():
        pytest.skip(f"pipelines/{name}.yaml points at {YAML_DATA}, which is absent")
    return load_pipeline(PIPELINES / f"{name}.yaml")


def _demo_dict(**overrides) -> dict:
    data = {"name": "tiny", "source": {"miner": "shapes", "options": {"seed": 3}, "limit": 12},
            "split": {"ratios": {"train": 0.5, "val": 0.5}, "seed": 1}, "export": [{"format": "parquet"}]}
    return {**data, **overrides}


def _write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


# --- every shipped YAML ----------------------------------------------------------------------------------------------
def test_pipelines_folder_has_one_yaml_per_source():
    assert {p.stem for p in YAMLS} >= {"demo", "gqa", "vg", "coco", "refcoco", "flickr30k", "viscot"}


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.name)
def test_every_pipeline_yaml_loads_and_resolves_paths_beside_the_yaml(path):
    cfg = load_pipeline(path)
    assert cfg.name == path.stem and cfg.source.miner in MINERS
    params = miner_parameters(cfg.source.miner)
    raw = yaml.safe_load(path.read_text())["source"].get("options") or {}
    for key, value in cfg.source.options.items():
        if "Path" in str(params[key].annotation):  # path options become absolute, resolved from pipelines/
            assert Path(value).is_absolute()
            assert Path(value) == (PIPELINES / raw[key]).resolve()
            if YAML_DATA.is_dir():
                assert Path(value).exists(), value


# --- the demo pipeline end to end ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    cfg = load_pipeline(PIPELINES / "demo.yaml")
    # a filter that removes something, so removals are counted; 40 records keep the run fast
    cfg = dataclasses.replace(cfg, source=dataclasses.replace(cfg.source, limit=40),
                              filters=(*cfg.filters, "pl.col('n_steps') >= 2"))
    out = tmp_path_factory.mktemp("demo_pipeline")
    return out, run_pipeline(cfg, out=out)


def test_demo_pipeline_counts_match_the_files(demo_run):
    out, report = demo_run
    mined = corpus.read(out / "corpus" / "mined.parquet")
    verified = corpus.read(out / "corpus" / "verified.parquet")
    curated = corpus.read(out / "corpus" / "curated.parquet")
    assert [s.name for s in report.stages] == ["mine", "verify", "filter", "dedup", "split", "export:hf",
                                               "export:parquet"]
    assert report.stage("mine").n_out == mined.height == verified.height == 40
    n_accepted = verified.filter(pl.col("status") == "accepted").height
    n_rejected = verified.filter(pl.col("status") == "rejected").height
    assert n_accepted + n_rejected == 40
    assert (report.stage("verify").n_out, report.stage("verify").removed) == (n_accepted, {"rejected": n_rejected})
    one_step = verified.filter((pl.col("status") == "accepted") & (pl.col("chain").list.len() < 2)).height
    assert one_step > 0
    assert report.stage("filter").removed == {"pl.col('n_steps') >= 1": 0, "pl.col('n_steps') >= 2": one_step}
    assert report.stage("split").n_out == curated.height == n_accepted - one_step - report.stage("dedup").n_removed
    assert curated["split"].null_count() == 0 and set(curated["status"]) == {"accepted"}
    exported = sum(pl.read_parquet(p).height for p in (out / "export" / "parquet").glob("*.parquet"))
    assert report.stage("export:parquet").n_out == exported == curated.height
    hf = datasets.load_from_disk(str(out / "export" / "hf"))
    assert sum(len(d) for d in hf.values()) == curated.height
    assert (out / "images").is_dir()  # shapes renders under the run folder


def test_demo_report_json_is_the_report(demo_run):
    out, report = demo_run
    saved = json.loads((out / "report.json").read_text())
    assert saved["stages"] == json.loads(json.dumps(report.to_dict()["stages"]))
    assert {r["check"] for r in saved["rejection_reasons"]} == {r["check"] for r in report.rejection_reasons}
    assert saved["config"]["source"]["miner"] == "shapes" and saved["config"]["image_root"] == str(out / "images")
    for stage in saved["stages"]:
        assert stage["n_in"] == stage["n_out"] + sum(stage["removed"].values())


def test_accounting_guard_raises_on_lost_records():
    ok = [StageReport("mine", 5, 5), StageReport("verify", 5, 3, {"rejected": 2})]
    check_accounting(ok)
    with pytest.raises(AssertionError, match="verify"):
        check_accounting([StageReport("mine", 5, 5), StageReport("verify", 5, 3, {"rejected": 1})])
    with pytest.raises(AssertionError, match="dedup took 4"):
        check_accounting([*ok, StageReport("dedup", 4, 4)])
    with pytest.raises(AssertionError, match="export:hf"):
        check_accounting([*ok, StageReport("export:hf", 2, 2)])


def test_config_built_in_code_runs_without_yaml(tmp_path):
    cfg = PipelineConfig("code", SourceConfig("shapes", {"seed": 2}, limit=6), dedup=False, split=None)
    report = run_pipeline(cfg, out=tmp_path)
    assert [s.name for s in report.stages] == ["mine", "verify"]
    assert corpus.read(tmp_path / "corpus" / "curated.parquet")["split"].null_count() == report.stage("verify").n_out


# --- real samples ----------------------------------------------------------------------------------------------------
def test_gqa_pipeline_on_the_real_sample(shared_data, tmp_path):
    report = run_pipeline(_real(shared_data, "gqa"), out=tmp_path)
    assert report.stage("mine").n_out == 23  # the sample's 23 questions (shared/data/INDEX.md)
    verified = corpus.read(tmp_path / "corpus" / "verified.parquet")
    assert report.stage("verify").removed == {"rejected": verified.filter(pl.col("status") == "rejected").height}
    assert report.stage("verify").n_out > 0
    coco_json = json.loads(next((tmp_path / "export" / "coco").glob("train.json")).read_text())
    assert len(coco_json["annotations"]) > 0
    total = sum(pl.read_parquet(p).height for p in (tmp_path / "export" / "parquet").glob("*.parquet"))
    assert total == report.stage("split").n_out


def test_coco_pipeline_on_the_real_sample_with_images(shared_data, tmp_path):
    cfg = _real(shared_data, "coco")
    report = run_pipeline(cfg, out=tmp_path)
    direct = list(coco.mine(**{k: Path(v) for k, v in cfg.source.options.items() if k == "instances"},
                            images=Path(cfg.source.images)))
    assert report.stage("mine").n_out == len(direct) > 0
    verified = corpus.read(tmp_path / "corpus" / "verified.parquet")
    # the images are there, so image_readable ran (not skipped) on every record
    image_checks = verified.select(pl.col("checks").explode()).unnest("checks").filter(pl.col("name") == "image_readable")
    assert image_checks.height == len(direct) and not image_checks["skipped"].any()
    hf = datasets.load_from_disk(str(tmp_path / "export" / "hf"))
    assert sum(len(d) for d in hf.values()) == report.stage("export:hf").n_out == report.stage("split").n_out
    assert next(iter(hf.values()))[0]["image"].size[0] > 0


def test_all_rejected_source_skips_its_export(shared_data, tmp_path):
    report = run_pipeline(_real(shared_data, "flickr30k"), out=tmp_path)  # the sample has no box annotations
    assert report.stage("verify").n_out == 0 and report.stage("verify").n_removed == report.stage("mine").n_out > 0
    assert report.stage("export:jsonl").detail.startswith("skipped")
    assert any(r["reason_code"] == "no_box_annotations" for r in report.rejection_reasons)


# --- bad configs -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"filtres": []}, "unknown key 'filtres'; did you mean 'filters'?"),
        ({"source": {"minr": "shapes"}}, "unknown key 'minr'; did you mean 'miner'?"),
        ({"verify": {"max_step": 3}}, "did you mean 'max_steps'?"),
        ({"verify": {"outside_policy": "shrug"}}, "outside_policy"),
        ({"split": {"ratios": {"train": 0.5}, "seed": 0}}, "sum to 1"),
        ({"split": {"ratio": {"train": 1.0}}}, "did you mean 'ratios'?"),
        ({"export": [{"format": "tfrecord"}]}, "unknown format 'tfrecord'"),
        ({"export": [{"formt": "hf"}]}, "did you mean 'format'?"),
        ({"export": [{"format": "hf"}, {"format": "hf"}]}, "same folder"),
        ({"filters": ["pl.col('nope') > 1"]}, "nope"),
        ({"dedup": "yes"}, "dedup"),
        ({"source": {"miner": "shapes", "limit": -1}}, "limit"),
    ],
)
def test_bad_config_raises_config_error_naming_the_key(change, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("?", r"\?")):
        pipeline_from_dict(_demo_dict(**change))


def test_unknown_miner_lists_the_miners():
    with pytest.raises(ConfigError) as err:
        pipeline_from_dict(_demo_dict(source={"miner": "gqaa"}))
    assert "did you mean 'gqa'" in str(err.value)
    assert all(name in str(err.value) for name in MINERS)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"question": "q.json", "scene_graphs": "s.json"}, "unknown key 'question'; did you mean 'questions'?"),
        ({"questions": "q.json"}, "needs 'scene_graphs'"),
        ({"questions": "q.json", "scene_graphs": "s.json", "images": "img"}, "set source.images instead"),
        ({"questions": 3, "scene_graphs": "s.json"}, "expected a path"),
    ],
)
def test_bad_miner_options_are_checked_against_the_signature(options, message):
    with pytest.raises(ConfigError, match=message.replace("?", r"\?")):
        pipeline_from_dict({"source": {"miner": "gqa", "options": options}})


def test_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("source: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_pipeline(bad)
    with pytest.raises(ConfigError, match="absent.yaml: cannot read"):
        load_pipeline(tmp_path / "absent.yaml")
    _write_yaml(bad, _demo_dict(dedupe=True))
    with pytest.raises(ConfigError, match=r"bad.yaml: pipeline: unknown key 'dedupe'; did you mean 'dedup'\?"):
        load_pipeline(bad)


def test_relative_paths_resolve_against_the_yaml_folder(tmp_path):
    folder = tmp_path / "conf"
    folder.mkdir()
    path = _write_yaml(folder / "p.yaml", {"source": {"miner": "gqa", "images": "imgs",
                                                      "options": {"questions": "../q.json", "scene_graphs": "s.json"}}})
    cfg = load_pipeline(path)
    assert cfg.source.options == {"questions": str(tmp_path / "q.json"), "scene_graphs": str(folder / "s.json")}
    assert cfg.source.images == str(folder / "imgs") and cfg.name == "p" and cfg.out == "runs/p"


# --- CLI -------------------------------------------------------------------------------------------------------------
def test_cli_run_prints_stages_and_report(tmp_path):
    path = _write_yaml(tmp_path / "tiny.yaml", _demo_dict())
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "run")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "export:parquet" in result.output and "report →" in result.output
    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    assert saved["stages"][0] == {**saved["stages"][0], "name": "mine", "n_in": 12, "n_out": 12}


def test_cli_run_bad_yaml_is_one_line_exit_2(tmp_path):
    path = _write_yaml(tmp_path / "bad.yaml", _demo_dict(filtres=[]))
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "did you mean 'filters'" in lines[0], result.stderr
