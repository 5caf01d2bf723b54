"""Per source: records mined, accepted and rejected by reason on the real samples in ``../shared/data``.

    python benchmarks/miner_outcomes.py [--json OUT.json] [--viscot VISCOT_BENCHMARK_DIR]

Every source is mined with the same inputs as ``virl-data mine <source> ...`` would be given (the file sets below,
which are also what ``pipelines/*.yaml`` use), written with ``corpus.write`` and verified with the default
``checks.verify`` (what ``virl-data verify`` runs; images checked where the sample ships them). A rejection reason
is counted by its code, the text before the first ``:`` (``image_size_unknown``, ``no_box_annotations``...); a record
rejected for two reasons counts under both; ``answer types`` counts the records' ``answer_type``. Run it on two
checkouts (``PYTHONPATH=<checkout> python benchmarks/miner_outcomes.py``) and compare the tables to see what a change
to the miners did. ``--viscot DIR`` adds one row per subset of a full VisCoT benchmark folder (the official repo's
``viscot_benchmark/``, holding ``benchmark/<subset>.json`` and ``benchmark_det/<subset>.jsonl``), mined with
``--sizes DIR/benchmark_det`` as ``virl-data mine viscot`` would be. TreeBench / V* Bench ship no annotations in the samples, so they are not in the table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson

SHARED = Path(os.environ.get("VIRL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _sources(d: Path) -> dict[str, tuple[Callable[[], Iterator], Path | None]]:
    """Source label → (a thunk mining it, the image root or None)."""
    from virl_data.miners import coco, flickr30k, gqa, refcoco, vg, viscot

    cot = d / "viscot"
    vgd = d / "visual_genome"
    mm = d / "coco" / "mmpose_person_keypoints_val2017"
    tf = d / "coco" / "transformers_fixture_39769"
    f30k = d / "flickr30k_entities"
    gqa_train = d / "gqa" / "train_domiknows_sample"
    return {
        "gqa (train sample)": (lambda: gqa.mine(questions=gqa_train / "train_balanced_questions_sample.json",
                                               scene_graphs=gqa_train / "train_sceneGraphs_sample.json"), None),
        "vg (images 1-2)": (lambda: (r for n in (1, 2) for r in vg.mine(
            relationships=vgd / f"relationships_image{n}.json", attributes=vgd / f"attributes_image{n}.json")), None),
        "coco (mmpose val2017)": (lambda: coco.mine(instances=mm / "test_coco.json", images=mm / "images"),
                                  mm / "images"),
        "coco (transformers 39769)": (lambda: coco.mine(instances=tf / "coco_annotations.txt", images=tf), tf),
        "refcoco (REC + Ground-R1)": (lambda: refcoco.mine(refs=d / "refcoco"), None),
        "flickr30k (Sentences)": (lambda: flickr30k.mine(sentences=f30k / "Sentences", splits=f30k / "splits",
                                                         images=f30k / "images"), f30k / "images"),
        "viscot benchmark (+ det sizes)": (lambda: viscot.mine(annotations=cot / "benchmark",
                                                               sizes=cot / "benchmark_det"), None),
        "viscot benchmark_det": (lambda: viscot.mine(annotations=cot / "benchmark_det"), None),
        "viscot cot_train": (lambda: viscot.mine(annotations=cot / "cot_train"), None),
        "viscot Ground-R1": (lambda: viscot.mine(
            annotations=cot / "Ground-R1_visualCoT_eval_subset150_choice.first20.jsonl"), None),
    }


def _viscot_subsets(folder: Path) -> dict[str, tuple[Callable[[], Iterator], Path | None]]:
    """One source per ``benchmark/<subset>.json`` of a full VisCoT benchmark folder, sizes from ``benchmark_det``."""
    from virl_data.miners import viscot

    def thunk(path: Path) -> Callable[[], Iterator]:
        return lambda: viscot.mine(annotations=path, sizes=folder / "benchmark_det")

    return {f"viscot full {p.stem}": (thunk(p), None) for p in sorted((folder / "benchmark").glob("*.json"))}


def _code(reason: str | None) -> str:
    return (reason or "?").split(":", 1)[0].strip()


def outcome(mine: Callable[[], Iterator], image_root: Path | None, tmp: Path) -> dict:
    """Mine, write, verify; count mined / accepted / rejected and the rejection reason codes."""
    from virl_data.curation import checks
    from virl_data.storage import corpus

    records = list(mine())
    if not records:
        return {"mined": 0, "accepted": 0, "rejected": 0, "reasons": {}, "answer_types": {}}
    path = tmp / "mined.parquet"
    corpus.write(records, path, image_root=image_root)
    verified = checks.verify(corpus.read(path), checks.CheckConfig(), image_root=image_root)
    rows = verified.select("status", "checks").to_dicts()
    reasons: Counter[str] = Counter()
    for row in rows:
        for c in row["checks"] or ():
            if not c["passed"]:
                reasons[f"{c['name']}/{_code(c['reason'])}"] += 1
    status = Counter(r["status"] for r in rows)
    types = Counter(str(r.answer_type) for r in records)
    return {"mined": len(records), "accepted": status.get("accepted", 0), "rejected": status.get("rejected", 0),
            "reasons": dict(sorted(reasons.items())), "answer_types": dict(sorted(types.items()))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, help="Also write the numbers here.")
    ap.add_argument("--viscot", type=Path, help="A full VisCoT viscot_benchmark/ folder: one row per subset.")
    args = ap.parse_args(argv)
    if not SHARED.is_dir():
        print(f"error: no samples at {SHARED} (set VIRL_SHARED_DATA)", file=sys.stderr)
        return 2
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        sources = _sources(SHARED) | (_viscot_subsets(args.viscot) if args.viscot else {})
        for name, (mine, root) in sources.items():
            results[name] = outcome(mine, root, Path(tmp))
    print("| source | mined | accepted | rejected | rejected by reason (check/code: n) | answer types |")
    print("|---|---:|---:|---:|---|---|")
    for name, r in results.items():
        reasons = ", ".join(f"{k}: {v}" for k, v in r["reasons"].items()) or "-"
        types = ", ".join(f"{k}: {v}" for k, v in r["answer_types"].items()) or "-"
        print(f"| {name} | {r['mined']} | {r['accepted']} | {r['rejected']} | {reasons} | {types} |")
    if args.json:
        args.json.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
