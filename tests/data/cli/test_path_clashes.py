"""Issue 27, item 2: an output path equal to an input (or to another output) is refused with one ``error:`` line and
exit code 2, and the input is left byte for byte as it was, by every writing command of both command lines. The
cases are checked against the commands the typer apps register, so a new writing command must join them."""

from __future__ import annotations

import json
import shutil

import pytest
import typer.main
from typer.testing import CliRunner

from tests.conftest import SHARED_DATA, make_record
from virl_data.storage import corpus
from virl_data.core.errors import PathClashError
from virl_data.storage.paths import refuse_clashes, same_path

REFCOCO = SHARED_DATA / "refcoco" / "REC_refcoco_unc_val.head40.jsonl"
runner = CliRunner()

TRAJ = {"id": "test-0", "image_size": [100, 80], "rationale": [[[10, 10, 30, 30]]], "actions": [[10, 10, 30, 30]],
        "answer": "red", "gt_answer": "red"}

# (app, argv with {t} = the tmp folder, the file that must stay intact)
DATA_CASES = {
    "mine refcoco (--out = --refs)": ("mine refcoco --refs {t}/R.jsonl --out {t}/R.jsonl", "R.jsonl"),
    "mine refcoco (--out a symlink to --refs)": ("mine refcoco --refs {t}/R.jsonl --out {t}/link.jsonl", "R.jsonl"),
    "mine gqa": ("mine gqa --questions {t}/R.jsonl --scene-graphs {t}/S.json --out {t}/S.json", "S.json"),
    "mine vg": ("mine vg --relationships {t}/R.jsonl --out {t}/R.jsonl", "R.jsonl"),
    "mine coco": ("mine coco --instances {t}/R.jsonl --out {t}/R.jsonl", "R.jsonl"),
    "mine flickr30k": ("mine flickr30k --sentences {t}/R.jsonl --out {t}/R.jsonl", "R.jsonl"),
    "mine viscot": ("mine viscot --annotations {t}/R.jsonl --out {t}/R.jsonl", "R.jsonl"),
    "mine treebench": ("mine treebench --annotations {t}/R.jsonl --out {t}/R.jsonl", "R.jsonl"),
    "mine shapes": ("mine shapes --out {t}/C.parquet --images {t}/C.parquet", "C.parquet"),
    "verify": ("verify {t}/C.parquet --out {t}/C.parquet", "C.parquet"),
    "verify (into its own corpus folder)": ("verify {t}/folder --out {t}/folder/train.parquet", "folder/train.parquet"),
    "stats": ("stats {t}/C.parquet --json {t}/C.parquet", "C.parquet"),
    "stats (two outputs)": ("stats {t}/C.parquet --json {t}/J.json --plot {t}/J.json", "J.json"),
    "filter": ("filter {t}/C.parquet --where pl.lit(True) --out {t}/C.parquet", "C.parquet"),
    "dedup": ("dedup {t}/C.parquet --out {t}/P.parquet --removed {t}/P.parquet", "P.parquet"),
    "split": ("split {t}/C.parquet --out {t}/C.parquet", "C.parquet"),
    "export": ("export {t}/folder --format parquet --out {t}/folder", "folder/train.parquet"),
    "run": ("run {t}/pipe.yaml --out {t}/run", "run/corpus/mined.parquet"),
    "fiftyone pull": ("fiftyone pull ds --corpus {t}/C.parquet --out {t}/C.parquet", "C.parquet"),
    "labelstudio pull": ("labelstudio pull proj --corpus {t}/C.parquet --out {t}/C.parquet", "C.parquet"),
    "queue": ("queue {t}/T.jsonl --corpus {t}/C.parquet --out {t}/T.jsonl", "T.jsonl"),
    "diff": ("diff {t}/C.parquet {t}/P.parquet --json {t}/P.parquet", "P.parquet"),
}
TRAIN_CASES = {
    "score": ("score {t}/T.jsonl -o {t}/T.jsonl", "T.jsonl"),
    "compare": ("compare {t}/J.json {t}/J2.json --json {t}/J.json", "J.json"),
    "eval": ("eval --config {t}/E/eval.json --out {t}/E", "E/eval.json"),
}
# commands that write no file a user names, with the reason
NO_OUTPUT_FILE = {
    "virl-data": {"demo": "no inputs: its folder is refused unless empty or a previous demo",
                  "schema": "prints only", "app": "opens the app", "fiftyone push": "writes a FiftyOne dataset",
                  "labelstudio push": "writes a Label Studio project"},
    "virl-train": {"data": "prints only", "show-config": "prints only",
                   "sft": "a run folder resumed in place by design", "train": "a run folder resumed in place by design"},
}


def _apps():
    from virl_data.cli import app as data_app
    from virl_train.cli import app as train_app

    return {"virl-data": (data_app, DATA_CASES), "virl-train": (train_app, TRAIN_CASES)}


def _commands(app) -> set[str]:
    found: set[str] = set()

    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        if subs is None:
            found.add(" ".join(path))
        for name, sub in (subs or {}).items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return found


@pytest.fixture
def files(tmp_path):
    shutil.copy(REFCOCO, tmp_path / "R.jsonl")
    (tmp_path / "link.jsonl").symlink_to(tmp_path / "R.jsonl")
    (tmp_path / "S.json").write_text("{}")
    corpus.write([make_record(i) for i in range(3)], tmp_path / "C.parquet")
    corpus.write([make_record(i) for i in range(2)], tmp_path / "P.parquet")
    corpus.write([make_record(i) for i in range(2)], tmp_path / "folder" / "train.parquet")
    corpus.write([make_record(i) for i in range(2)], tmp_path / "run" / "corpus" / "mined.parquet")
    (tmp_path / "T.jsonl").write_text(json.dumps(TRAJ) + "\n")
    (tmp_path / "J.json").write_text('{"metrics": {}}')
    (tmp_path / "J2.json").write_text('{"metrics": {}}')
    (tmp_path / "E").mkdir()
    (tmp_path / "E" / "eval.json").write_text("{}")
    (tmp_path / "pipe.yaml").write_text(
        "name: clash\nsource:\n  miner: refcoco\n  options:\n    refs: run/corpus/mined.parquet\n")
    return tmp_path


def test_every_writing_command_has_a_clash_case():
    for name, (app, cases) in _apps().items():
        covered = {case.split(" (")[0] for case in cases} | set(NO_OUTPUT_FILE[name])
        assert _commands(app) == covered, name


CASES = [(name, case) for name, (_, cases) in _apps().items() for case in cases]


@pytest.mark.parametrize(("name", "case"), CASES, ids=[f"{n}-{c}" for n, c in CASES])
def test_an_output_that_is_an_input_is_refused(files, name, case):
    app, cases = _apps()[name]
    argv, kept = cases[case]
    before = (files / kept).read_bytes()
    res = runner.invoke(app, argv.format(t=files).split(), prog_name=name)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.exit_code == 2, res.output
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "would" in lines[0] and "Traceback" not in res.output, lines[0]
    assert (files / kept).read_bytes() == before


def test_the_rule_itself(tmp_path):
    a = tmp_path / "a.parquet"
    a.write_text("x")
    (tmp_path / "hard.parquet").hardlink_to(a)
    assert same_path(a, tmp_path / "sub" / ".." / "a.parquet") and same_path(a, tmp_path / "hard.parquet")
    with pytest.raises(PathClashError, match="--out .* is also the input SRC"):
        refuse_clashes(inputs={"SRC": a}, outputs={"--out": tmp_path / "hard.parquet"})
    with pytest.raises(PathClashError, match="lies inside --out"):
        refuse_clashes(inputs={"SRC": a}, replaced={"--out": tmp_path})
    # an output folder that merely contains an input, and a new file beside an input, are fine
    refuse_clashes(inputs={"SRC": a}, outputs={"--out": tmp_path / "b.parquet", "--json": tmp_path / "b.json"})
    refuse_clashes(inputs={"SRC": tmp_path / "folder"}, outputs={"--out": tmp_path / "folder" / "new.parquet"})


def test_docstring_examples_hold():
    import doctest

    from virl_data.storage import paths
    from virl_data.miners import _common

    assert doctest.testmod(paths).failed == 0 and doctest.testmod(_common).failed == 0
