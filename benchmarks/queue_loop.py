"""How well the review queue finds deliberately corrupted chains on the demo world (prints a table, writes JSON).

For each seed: ``--n`` shapes records, ``--fraction`` of them corrupted (``virl_data.review.corrupt``: a shifted box or
a missing step), ``--samples`` scripted-policy episodes per record (``virl_train.scripted``: built from the TRUE chains
with seeded mistakes; no trained model), then ``review_queue.rank``; reported: top-k precision (k = number of
corrupted records), recall in the top 2k, and where the corrupted records that were missed came in.

    python benchmarks/queue_loop.py --seeds 0 1 2 --json docs/assets/loop.json
    python benchmarks/queue_loop.py --app --dataset virl-loop-demo   # also push the queue with images, serve the App

With ``--app`` the first seed's corpus is rendered to ``--out`` (images), the top 2k pushed to FiftyOne with the
policy's crops, and the App served on ``--port`` until Ctrl-C (for the screenshot in docs/loop.md).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from virl_data.miners.shapes import generate
from virl_data.review import queue as review_queue
from virl_data.review.corrupt import corrupt_chains
from virl_data.storage import corpus
from virl_data.storage.trajectories import write_trajectories
from virl_train.scripted import ScriptedPolicy, scripted_rows


def run_seed(seed: int, n: int, fraction: float, samples: int, out: Path | None) -> dict:
    images = out / "images" if out else None
    truth = list(generate(n, seed=seed, image_dir=images))
    bad, kinds = corrupt_chains(truth, fraction=fraction, seed=seed)
    policy = ScriptedPolicy(samples=samples, seed=seed)
    rows = scripted_rows(truth, bad, policy, objects=review_queue.known_objects(bad))
    with tempfile.TemporaryDirectory() as tmp:
        traj = write_trajectories(Path(tmp) / "trajectories.jsonl", rows)
        started = time.perf_counter()
        entries = review_queue.rank(bad, review_queue.read_episodes(traj)).entries  # the path virl-data queue takes
        seconds = time.perf_counter() - started
    k = len(kinds)
    ranks = {e.record_id: e.rank for e in entries}
    result = {
        "seed": seed, "n": n, "corrupted": k, "samples": samples, "episodes": len(rows),
        "precision_at_k": review_queue.precision_at(entries, set(kinds), k),
        "recall_at_2k": review_queue.precision_at(entries, set(kinds), 2 * k) * 2 * k / k,
        "missed_ranks": sorted(ranks.get(i, -1) for i in kinds if ranks.get(i, 10**9) > k),
        "by_kind": {kind: sum(v == kind for v in kinds.values()) for kind in ("shifted_box", "missing_step")},
        "rank_seconds": seconds,
    }  # fmt: skip
    if out:
        src = corpus.write(bad, out / "corpus.parquet", image_root=images)
        write_trajectories(out / "trajectories.jsonl", rows)
        result["paths"] = {"corpus": str(src), "trajectories": str(out / "trajectories.jsonl")}
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--fraction", type=float, default=0.05)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--app", action="store_true")
    ap.add_argument("--dataset", default="virl-loop-demo")
    ap.add_argument("--out", type=Path, default=Path("/tmp/virl-loop-demo"))
    ap.add_argument("--port", type=int, default=5151)
    args = ap.parse_args()
    console = Console()
    results = [run_seed(s, args.n, args.fraction, args.samples, args.out if args.app and i == 0 else None)
               for i, s in enumerate(args.seeds)]
    table = Table(title=f"review queue vs {args.fraction:.0%} corrupted chains ({args.n} records, scripted policy, "
                  f"{args.samples} samples/record)")
    for col in ("seed", "corrupted", "shifted / missing", "top-k precision", "recall in top 2k", "missed at rank",
                "rank s"):
        table.add_column(col, justify="right")
    for r in results:
        kinds = f"{r['by_kind']['shifted_box']} / {r['by_kind']['missing_step']}"
        table.add_row(str(r["seed"]), str(r["corrupted"]), kinds,
                      f"{r['precision_at_k']:.2f}", f"{r['recall_at_2k']:.2f}", str(r["missed_ranks"]),
                      f"{r['rank_seconds']:.1f}")
    p = [r["precision_at_k"] for r in results]
    recall = statistics.mean(r["recall_at_2k"] for r in results)
    table.add_row("mean", "", "", f"{statistics.mean(p):.2f}", f"{recall:.2f}",
                  "", "")
    console.print(table)
    if args.json:
        corpus.write_json({"runs": results, "mean_precision_at_k": statistics.mean(p)}, args.json)
    if args.app:
        from virl_data.integrations import fiftyone as fo_int

        first = results[0]
        recs = corpus.read_records(first["paths"]["corpus"])
        entries = review_queue.rank(recs, review_queue.read_episodes(first["paths"]["trajectories"]),
                                    top=2 * first["corrupted"]).entries
        by_id = {r.id: r for r in recs}
        fo_int.push([by_id[e.record_id] for e in entries], args.dataset, image_root=args.out / "images",
                    overwrite=True, queue=entries)
        session, url = fo_int.launch(args.dataset, remote=True, port=args.port)
        console.print(f"FiftyOne App: {url} (Ctrl-C to stop)")
        try:
            session.wait(-1)
        except KeyboardInterrupt:
            pass
        finally:
            fo_int.stop_app(args.port)


if __name__ == "__main__":
    main()
