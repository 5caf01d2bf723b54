"""Does the trainer learn? The ViRL reward ablation on the CPU: outcome-only vs + process vs + shaping vs full ViRL.

    python benchmarks/learning.py                      # the full ablation (about 28 min on 2 cores, --jobs 2)
    python benchmarks/learning.py --rl-steps 5 --seeds 0 --sft-steps 20 --eval-n 8 --json /tmp/a.json --png /tmp/a.png

1. **The task** (``--task``): the demo shapes world sized for a tiny model, 112 x 112 images (4 x 4 = 16 visual
   tokens), shapes of 40-51 px each centred in its own cell of a 2 x 2 grid, one-step questions (the colour or the
   shape of the shape a phrase names), 20,000 records through the real data flow (generate → verify → split → HF
   export). ``one-shape`` (default, ``TASK_ONE``): one shape per image, so the full image names the answer;
   ``shapes`` (``TASK``): 2-3 shapes, where the tiny model needs the crop to answer.
2. **SFT warm start** (``virl_train.sft``) on the train split's reference trajectories, every weight trained
   (``SFT_SETS``): one checkpoint for all runs, with its "can it see" probe (``virl_train.sight``). The family is a
   tiny random Idefics3 of ``model.tiny_size: base`` (``configs/ablation.yaml``; ``--family`` picks another), the one
   that learns where things are on a CPU (docs/families.md). ``--sft-decoys`` makes a share of the references
   crop off the rationale (answer kept; ``--sft-decoy-kind``: elsewhere, the whole image, or the image centre): a
   start that looks in the wrong place and answers anyway. The default, 47.5 % centre crops on ``one-shape``, gives
   the illusion the ablation is about: a start that answers from the full image and crops on the rationale for about
   70 % of the questions, on the image centre for the rest.
3. **RL** from that checkpoint with ``configs/ablation.yaml`` (vision tower and connector frozen), equal steps and
   equal seeds, for each reward preset of ``VIRL_METHOD.md`` (``rewards.preset``; nothing else changes between
   variants): (a) ``outcome`` answer + format, (b) ``process`` + gated rationale bonus, (c) ``shaping`` + step
   shaping, (d) ``full`` + per-action credit assignment. ``--jobs`` runs that many at a time in worker processes.
4. **Evaluation** of every final policy (and of the SFT start) on the same held-out records (``--eval-split``), greedy,
   with the illusion probe (random crop of the same size): ``virl_train.eval.evaluate``, the metrics of
   ``virl-train eval``. "Rationale IoU" is R_rat = ½(recall + precision) of the crops against the chain (the dual
   IoU of ``VIRL_METHOD.md``), "crop precision" / "crop recall" its halves; "crop IoU" is ``mean_fidelity``, each
   crop's best IoU with a chain box averaged over crops (invalid actions count 0).

Writes ``--json`` (default ``docs/assets/ablation.json``: per variant the metrics' mean and std over seeds, the per-seed
values, steps, seeds, wall time, the per-step training curves with the RL diagnostics; the SFT start and its probe
with and without pixels; the task; the goal check) and ``--png`` (learning curves: training
reward, R_rat and accuracy per step, mean over seeds, plus the final rationale IoU per variant), and prints the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("MPLBACKEND", "Agg")

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from virl_data.engines.pipeline import run_demo  # noqa: E402
from virl_data.miners.shapes import ShapesConfig  # noqa: E402
from virl_data.storage.corpus import atomic_path, write_json  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "ablation.yaml"
TASK = ShapesConfig(
    image_size=(112, 112), min_shapes=2, max_shapes=3, questions_per_image=2, grid=2, min_gap=4,
    families=("color_of", "shape_of"), size_fractions=(0.36, 0.41, 0.46),
)  # fmt: skip
"""2-3 shapes of 40-51 px, each centred in its own 56-px cell; one-step questions (colour or shape of the shape a
phrase names). Any crop of the right cell has IoU ≥ 0.5 with the rationale; the full 112-px image (16 visual tokens)
already shows colours and shapes, so an answer needs no crop in principle: the illusion the ablation is about. In
practice the tiny model answers better from a tight crop (test accuracy 0.80 for the sighted SFT start, 0.44 for a
start that always zooms on the whole image), so outcome-only reward also pays for looking (docs/learning.md)."""
TASK_ONE = dataclasses.replace(TASK, min_shapes=1, max_shapes=1)
"""One shape per image, in one of the 4 cells: the full image names the answer (nothing else is there), so a policy
can answer without looking at its crop, and a crop only shows where the evidence is."""
TASK_TWO_HOP = dataclasses.replace(TASK, families=("neighbour_color",), questions_per_image=1)
"""2-3 shapes on the 2 x 2 grid, "what colour is the shape right of / left of / above / below the <named shape>?": an
ordered two-box chain (the named shape, then its neighbour in the next cell), one question per image. The answer needs
the second box only; the first is where the question says to start (``benchmarks/matrix.py --task two-hop``)."""
TASKS: dict[str, ShapesConfig] = {"shapes": TASK, "one-shape": TASK_ONE, "two-hop": TASK_TWO_HOP}
START = {"task": "one-shape", "sft_decoys": 0.475, "sft_decoy_kind": "centre"}
"""The default task and SFT start of this benchmark and of ``sanity.py`` (docs/learning.md: how the share was
chosen). The share sits on a tipping point between cropping the shape and cropping the centre: ``--sft-seed`` 0, 1 and
2 give start hit rates 0.710, 0.690 and 0.245 (docs/learning.md, "Across SFT starts"; ``ablation_starts.py``)."""
VARIANTS: dict[str, str] = {
    "outcome": "(a) outcome + format",
    "process": "(b) + process supervision",
    "shaping": "(c) + step shaping",
    "full": "(d) full ViRL (+ credit)",
}
METRICS: dict[str, str] = {  # eval key → table column
    "accuracy": "accuracy",
    "rationale": "rationale IoU",
    "mean_fidelity": "crop IoU",
    "rationale_precision": "crop precision",
    "rationale_recall": "crop recall",
    "redundant_rate": "redundant",
    "erroneous_rate": "erroneous",
    "probe_drop": "probe drop",
}
CURVES = ("reward/total", "reward/rationale", "reward/accuracy", "diag/crop_iou", "diag/zero_spread_frac",
          "diag/kl_start", "diag/entropy", "grad_norm", "actions/actions_per_episode", "actions/correct_rate",
          "actions/redundant_rate", "actions/erroneous_rate", "adv/correct", "adv/redundant", "adv/erroneous")
"""The per-step log keys each RL run keeps (``result.json`` ``curves``). ``adv/<label>`` (the mean token advantage on
each credit label's actions, ``virl_train.diagnostics``) came later: a run kept before it lacks them, and a summary
averages only the curves every one of its runs has (``mean_curves``)."""
PLOTTED = ("reward/total", "reward/rationale", "reward/accuracy", "diag/crop_iou", "diag/zero_spread_frac")
FAMILY_SETS: dict[str, list[str]] = {  # the tiny model of each family on this task (the config's is Idefics3)
    "idefics3": [],
    "qwen2_5_vl": ["model.name_or_path=tiny-qwen2.5-vl", "model.box_convention=qwen25_abs_resized"],
    "qwen3_vl": ["model.name_or_path=tiny-qwen3-vl", "model.box_convention=qwen3_norm1000", "model.box_scale=100"],
    "qwen2_vl": ["model.name_or_path=tiny-qwen2-vl", "model.box_convention=qwen2_norm1000"],
}
SFT_SETS = ["model.freeze_vision=none"]
"""SFT trains every weight (the random tower must learn to see); RL keeps the config's ``freeze_vision``."""
GOAL_IOU, GOAL_MARGIN, GOAL_HIT = 0.5, 0.1, 0.6
SFT_DECOY_KINDS = ("elsewhere", "whole", "centre", "first")
"""``virl_train.sft.DECOY_KINDS``, spelled here so that ``--help`` does not import torch (a test keeps them equal)."""


# --- the task --------------------------------------------------------------------------------------------------------
def build_task(out: Path, n_records: int, seed: int = 0, console: Console | None = None,
               task: ShapesConfig = TASK) -> Path:
    """The demo data flow (``pipeline.run_demo``: generate → verify → split 80/10/10 by image → HF export) on
    ``n_records`` of ``task`` (default ``TASK``); returns the HF export folder. Reuses an export built with the same
    parameters (``task.json`` beside it)."""
    hf_dir, stamp = out / "export" / "hf", out / "task.json"
    want = {"n_records": n_records, "seed": seed, "task": dataclasses.asdict(task)}
    if hf_dir.is_dir() and stamp.is_file() and json.loads(stamp.read_text()) == json.loads(json.dumps(want)):
        return hf_dir
    hf_dir = run_demo(out, n=n_records, seed=seed, config=task, console=Console(quiet=True),
                      overwrite=True)["HF export"]
    write_json(want, stamp)
    if console:
        console.print(f"task: {n_records} generated records → {hf_dir}")
    return hf_dir


# --- one run ---------------------------------------------------------------------------------------------------------
def load_cfg(overrides: list[str], extra: list[str] | None = None, family: str = "qwen2_5_vl"):
    """``configs/ablation.yaml`` with the family's settings (``FAMILY_SETS``), ``overrides``, then the user's
    ``--set`` overrides (``extra``)."""
    from virl_train.config import load_config

    return load_config(CONFIG, [*FAMILY_SETS[family], *overrides, *(extra or [])])


def evaluate_policy(cfg, policy_dir: Path, data: Path, split: str, n: int, seed: int) -> dict[str, float]:
    """Greedy evaluation with the illusion probe on the first ``n`` records of ``split``: the eval metrics plus
    ``probe_drop``."""
    from virl_train.data import ExampleSet
    from virl_train.eval import evaluate
    from virl_train.policy import load_policy

    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name_or_path=str(policy_dir)))
    policy = load_policy(cfg.model)
    examples = ExampleSet.load(data, split, limit=n)
    report = evaluate(policy, [examples[i] for i in range(len(examples))], examples.image, cfg, seed=seed)
    return {**report.metrics, "probe_drop": report.probe_drop, "probe_accuracy": report.probe_metrics["accuracy"]}


def run_sft(data: Path, out: Path, args: argparse.Namespace, console: Console) -> tuple[Path, float]:
    from virl_train.sft import sft

    cfg = load_cfg([f"data.path={data}", f"run.out_dir={out}", f"run.seed={args.sft_seed}", *SFT_SETS], args.set,
                   args.family)
    t0 = time.perf_counter()
    every = max(1, args.sft_steps // 10)

    def progress(step: int, m: dict[str, float]) -> None:
        if step % every == 0:
            console.print(f"  sft {step}/{args.sft_steps}  loss {m['loss']:.4f}  {m['time/wall_s']:.0f}s")

    sft(cfg, args.sft_steps, lr=args.sft_lr, batch_size=args.sft_batch, out_dir=out, resume=False, callbacks=[progress],
        decoys=args.sft_decoys, decoy_kind=args.sft_decoy_kind, extras=sft_extras(args))
    return out / "final", time.perf_counter() - t0


def sft_extras(args: argparse.Namespace) -> dict[str, float]:
    """The SFT references' wasted-action shares (``--sft-redundant``, ``--sft-erroneous``; ``virl_train.sft.sft``'s
    ``extras``), the ones above 0."""
    shares = {"redundant": getattr(args, "sft_redundant", 0.0), "erroneous": getattr(args, "sft_erroneous", 0.0)}
    return {k: v for k, v in shares.items() if v > 0}


def run_rl(variant: str, seed: int, start: Path, data: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """RL from ``start`` with reward preset ``variant``; returns the per-step curves, eval metrics and wall time."""
    from virl_train.train import train

    cfg = load_cfg([f"data.path={data}", f"model.name_or_path={start}", f"rewards.preset={variant}",
                    f"run.seed={seed}", f"run.max_steps={args.rl_steps}", f"run.out_dir={out}",
                    f"run.save_every={args.rl_steps}", f"optim.lr={args.rl_lr}"], args.set, args.family)
    curves: dict[str, list[float]] = {k: [] for k in CURVES}

    def record(step: int, m: dict[str, float]) -> None:
        for k in CURVES:
            curves[k].append(m[k])

    t0 = time.perf_counter()
    train(cfg, callbacks=[record], resume=False)
    wall = time.perf_counter() - t0
    metrics = evaluate_policy(cfg, out / "final", data, args.eval_split, args.eval_n, seed)
    return {"curves": curves, "metrics": metrics, "train_wall_s": wall, "wall_s": time.perf_counter() - t0}


def _rl_job(job: tuple) -> tuple[str, int, dict[str, Any]]:
    """One RL run in a worker process (``--jobs``): ``args.threads // args.jobs`` torch threads."""
    import torch

    variant, seed, start, data, out, args = job
    torch.set_num_threads(max(1, args.threads // max(1, args.jobs)))
    warnings.filterwarnings("ignore")
    return variant, seed, run_rl(variant, seed, start, data, out, args)


def rl_jobs(jobs: list[tuple], n_workers: int, fn=_rl_job):
    """``fn(job)`` of every job (by default ``(variant, seed, result)`` of an RL run), in the jobs' order: one after
    another in this process, or ``n_workers`` spawned processes at a time (each run is seeded, so the results do not
    depend on the split). ``fn`` must be a module-level function (the workers import it by name)."""
    if n_workers <= 1:
        yield from (fn(job) for job in jobs)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=n_workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from pool.map(fn, jobs)


# --- aggregation and reports -----------------------------------------------------------------------------------------
def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def mean_curves(runs: list[dict[str, Any]]) -> dict[str, list[float]]:
    """The step-wise mean over ``runs`` of each ``CURVES`` key that every run kept.

    >>> mean_curves([{"curves": {"reward/total": [0.0, 1.0], "adv/correct": [1.0, 1.0]}},
    ...              {"curves": {"reward/total": [1.0, 1.0]}}])
    {'reward/total': [0.5, 1.0]}
    """
    keys = [k for k in CURVES if all(k in r["curves"] for r in runs)]
    return {k: [statistics.fmean(c) for c in zip(*(r["curves"][k] for r in runs))] for k in keys}


def summarize(runs: dict[str, list[dict[str, Any]]], seeds: list[int], steps: int) -> dict[str, Any]:
    """Per variant: ``{metric: {"mean", "std", "per_seed"}}``, steps, seeds, wall time, mean curves."""
    out = {}
    for variant, rs in runs.items():
        metrics = {}
        for key in METRICS:
            vals = [float(r["metrics"][key]) for r in rs]
            m, s = mean_std(vals)
            metrics[key] = {"mean": m, "std": s, "per_seed": vals}
        curves = mean_curves(rs)
        out[variant] = {
            "label": VARIANTS[variant], "metrics": metrics, "steps": steps, "seeds": seeds,
            "wall_s": sum(r["wall_s"] for r in rs), "train_wall_s": sum(r["train_wall_s"] for r in rs),
            "curves": curves,
        }  # fmt: skip
    return out


def goal_check(summary: dict[str, Any], sight: dict[str, Any] | None = None) -> dict[str, Any]:
    """The issue's goal, computed, not asserted: the SFT start's crops hit a chain box (IoU ≥ 0.5) at a rate ≥ 0.6 with
    the pixels; full ViRL reaches rationale IoU ≥ 0.5 and beats outcome-only by ≥ 0.1, a margin larger than twice
    the larger of the two variants' seed-to-seed standard deviations (and than twice the std of the per-seed
    differences)."""
    if "full" not in summary or "outcome" not in summary:
        return {}
    full, outcome = summary["full"]["metrics"]["rationale"], summary["outcome"]["metrics"]["rationale"]
    margin = full["mean"] - outcome["mean"]
    diffs = [f - o for f, o in zip(full["per_seed"], outcome["per_seed"])]
    spread = max(full["std"], outcome["std"])
    paired = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
    out = {"full_iou": full["mean"], "outcome_iou": outcome["mean"], "margin": margin, "per_seed_margin": diffs,
           "full_reaches_0.5": full["mean"] >= GOAL_IOU, "full_beats_outcome_by_0.1": margin >= GOAL_MARGIN,
           "seed_std": spread, "paired_diff_std": paired, "margin_over_2_std": margin > 2 * max(spread, paired)}
    if sight is not None:
        hit = sight["pixels"]["hit_rate@0.5"]
        out |= {"sft_hit@0.5": hit, "sft_hit_reaches_0.6": hit >= GOAL_HIT}
    out["met"] = all(v for k, v in out.items() if isinstance(v, bool))
    return out


def table(summary: dict[str, Any], sft_metrics: dict[str, float] | None) -> Table:
    t = Table(title="ViRL ablation (mean ± std over seeds; held-out records, greedy)")
    t.add_column("variant")
    for col in METRICS.values():
        t.add_column(col, justify="right")
    if sft_metrics is not None:
        t.add_row("SFT start", *(f"{sft_metrics[k]:.3f}" for k in METRICS))
    for v in summary.values():
        t.add_row(v["label"], *(f"{v['metrics'][k]['mean']:.3f} ± {v['metrics'][k]['std']:.3f}" for k in METRICS))
    return t


def markdown(summary: dict[str, Any], sft_metrics: dict[str, float] | None) -> str:
    """The Markdown table of docs/learning.md (``benchmarks/report.py`` renders it from the JSON)."""
    lines = ["| variant | " + " | ".join(METRICS.values()) + " |", "|---" * (len(METRICS) + 1) + "|"]
    if sft_metrics is not None:
        lines.append("| SFT start | " + " | ".join(f"{sft_metrics[k]:.3f}" for k in METRICS) + " |")
    for v in summary.values():
        cells = (f"{v['metrics'][k]['mean']:.3f} ± {v['metrics'][k]['std']:.3f}" for k in METRICS)
        lines.append(f"| {v['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(summary: dict[str, Any], path: Path, sft_iou: float | None = None) -> Path:
    """Learning curves (training reward, R_rat, accuracy per RL step; mean over seeds, moving average of 10) and the
    final held-out rationale IoU per variant (mean ± std)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(24, 4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(PLOTTED) + 1)
    for ax, key in zip(axes, PLOTTED):
        for v in summary.values():
            y = np.asarray(v["curves"][key], dtype=float)
            k = min(10, len(y))
            smooth = np.convolve(y, np.ones(k) / k, mode="valid") if k else y
            ax.plot(np.arange(k, len(y) + 1), smooth, label=v["label"])
        ax.set_title(f"train {key} (sampled)")
        ax.set_xlabel("RL step")
    axes[0].legend(fontsize=8)
    names = list(summary)
    means = [summary[n]["metrics"]["rationale"]["mean"] for n in names]
    stds = [summary[n]["metrics"]["rationale"]["std"] for n in names]
    axes[-1].bar(range(len(names)), means, yerr=stds, capsize=4, color="tab:blue")
    axes[-1].axhline(GOAL_IOU, color="grey", ls="--", lw=1, label=f"goal {GOAL_IOU}")
    if sft_iou is not None:
        axes[-1].axhline(sft_iou, color="tab:orange", ls=":", lw=1.5, label=f"SFT start {sft_iou:.3f}")
    axes[-1].legend(fontsize=8)
    axes[-1].set_xticks(range(len(names)), names)
    axes[-1].set_ylim(0, 1)
    axes[-1].set_title("held-out rationale IoU (greedy)")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


# --- main ------------------------------------------------------------------------------------------------------------
def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    import torch

    torch.set_num_threads(args.threads)
    t_all = time.perf_counter()
    work = Path(args.work)
    data = build_task(work / "data", args.records, console=console, task=TASKS[args.task])
    if args.start is not None:
        console.print(f"SFT start: {args.start} (not trained here)")
        start, sft_wall = args.start, 0.0
    else:
        console.print(f"SFT: {args.sft_steps} steps")
        start, sft_wall = run_sft(data, work / "sft", args, console)
    base = load_cfg([f"data.path={data}"], args.set, args.family)
    sft_metrics = evaluate_policy(base, start, data, args.eval_split, args.eval_n, 0)
    console.print(f"  SFT start: accuracy {sft_metrics['accuracy']:.3f}  rationale IoU {sft_metrics['rationale']:.3f}")
    from virl_train.sight import sight_line, sight_of_checkpoint

    sight = sight_of_checkpoint(base, start, args.eval_split, args.eval_n)
    console.print("  " + sight_line(sight))
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in args.variants}
    jobs = [(v, seed, start, data, work / "rl" / f"{v}-s{seed}", args) for seed in args.seeds for v in args.variants]
    for variant, seed, r in rl_jobs(jobs, args.jobs):  # seed-major: a partial run has every variant at equal seeds
        runs[variant].append(r)
        m = r["metrics"]
        console.print(f"  {variant:8s} seed {seed}: accuracy {m['accuracy']:.3f}  rationale IoU {m['rationale']:.3f}  "
                      f"probe drop {m['probe_drop']:+.3f}  {r['wall_s']:.0f}s")
    summary = summarize(runs, list(args.seeds), args.rl_steps)
    result = {
        "variants": summary,
        "sft": {"metrics": {k: float(v) for k, v in sft_metrics.items()},
                "steps": None if args.start else args.sft_steps, "start": str(start), "wall_s": sft_wall,
                "sight": sight, "trained": start_meta(Path(start))},
        "goal": goal_check(summary, sight),
        "family": args.family, "rl_lr": args.rl_lr, "sft_lr": args.sft_lr, "sft_decoys": args.sft_decoys,
        "sft_decoy_kind": args.sft_decoy_kind, "sft_extras": sft_extras(args), "sft_seed": None if args.start else args.sft_seed,
        "task": {"name": args.task, "shapes": dataclasses.asdict(TASKS[args.task]), "records": args.records,
                 "config": str(CONFIG.relative_to(REPO)), "eval_split": args.eval_split, "eval_n": args.eval_n},
        "rl_steps": args.rl_steps, "seeds": list(args.seeds), "threads": args.threads, "jobs": args.jobs,
        "overrides": list(args.set),
        "wall_s": time.perf_counter() - t_all,
    }  # fmt: skip
    return result


def start_meta(start: Path) -> dict[str, Any] | None:
    """How the SFT start was trained: the ``sft.json`` that ``virl_train.sft`` writes beside its ``final`` folder
    (steps, lr, batch size, decoy share and kind), or None where there is none (a start trained elsewhere)."""
    meta = start.parent / "sft.json"
    return json.loads(meta.read_text()) if meta.is_file() else None


def finite(result: dict[str, Any]) -> bool:
    """Whether every reported metric and curve value is a finite number."""
    vals = [x for v in result["variants"].values() for m in v["metrics"].values() for x in m["per_seed"]]
    vals += [x for v in result["variants"].values() for c in v["curves"].values() for x in c]
    return all(math.isfinite(x) for x in vals)


def add_start_arguments(parser: argparse.ArgumentParser) -> None:
    """The SFT start's options (``--sft-*``), shared with ``sanity.py``; defaults from ``START``."""
    parser.add_argument("--sft-steps", type=int, default=1000)
    parser.add_argument("--sft-lr", type=float, default=1e-3)
    parser.add_argument("--sft-batch", type=int, default=16)
    parser.add_argument("--sft-decoys", type=float, default=START["sft_decoys"],
                        help="share of SFT references with a decorative crop (virl_train.sft.reference_turns)")
    parser.add_argument("--sft-decoy-kind", default=START["sft_decoy_kind"], choices=SFT_DECOY_KINDS,
                        help="decorative crop: moved off the rationale, the whole image, or the image centre")
    parser.add_argument("--sft-seed", type=int, default=0,
                        help="the SFT start's seed (initial weights, which references are decoys, batch order)")
    parser.add_argument("--sft-redundant", type=float, default=0.0,
                        help="share of SFT references that repeat the rationale crop after it (answer kept)")
    parser.add_argument("--sft-erroneous", type=float, default=0.0,
                        help="share of SFT references with an empty-cell crop before the rationale crop (answer kept)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=str(REPO / "runs" / "learning"), help="data, checkpoints and run folders")
    parser.add_argument("--task", default=START["task"], choices=list(TASKS),
                        help="shapes: 2-3 shapes per image (TASK); one-shape: one (TASK_ONE); two-hop: "
                             "a two-box chain (TASK_TWO_HOP)")
    parser.add_argument("--records", type=int, default=20000, help="generated task records (80%% train)")
    add_start_arguments(parser)
    parser.add_argument("--rl-steps", type=int, default=100)
    parser.add_argument("--rl-lr", type=float, default=1e-4)
    parser.add_argument("--family", default="idefics3", choices=list(FAMILY_SETS), help="tiny model family")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--eval-split", default="test")
    parser.add_argument("--eval-n", type=int, default=200, help="held-out records per evaluation")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (shared by the --jobs)")
    parser.add_argument("--jobs", type=int, default=2, help="RL runs at a time, each in its own process")
    parser.add_argument("--start", type=Path, default=None,
                        help="an SFT checkpoint of this task to start from (skips SFT; its probe is still taken)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides for every run (e.g. grpo.group_size=8); rewards.preset is the variant's")
    parser.add_argument("--json", type=Path, default=REPO / "docs" / "assets" / "ablation.json")
    parser.add_argument("--png", type=Path, default=REPO / "docs" / "assets" / "ablation.png")
    args = parser.parse_args(argv)
    if any(item.split("=")[0].strip() == "rewards.preset" for item in args.set):
        parser.error("--set rewards.preset=...: the preset is what the ablation varies; use --variants")
    warnings.filterwarnings("ignore")
    console = Console(width=max(Console().width, 150))
    result = run(args, console)
    console.print(table(result["variants"], result["sft"]["metrics"]))
    goal = result["goal"]
    if goal:
        console.print(f"goal: SFT hit@0.5 {goal.get('sft_hit@0.5', float('nan')):.3f} (≥ {GOAL_HIT}: "
                      f"{goal.get('sft_hit_reaches_0.6')}), full IoU {goal['full_iou']:.3f} (≥ {GOAL_IOU}: "
                      f"{goal['full_reaches_0.5']}), margin over outcome-only {goal['margin']:+.3f} (≥ {GOAL_MARGIN}: "
                      f"{goal['full_beats_outcome_by_0.1']}; > 2 std {2 * max(goal['seed_std'], goal['paired_diff_std']):.3f}: "
                      f"{goal['margin_over_2_std']}); met: {goal['met']}; whole run {result['wall_s'] / 60:.1f} min")
    result["markdown"] = markdown(result["variants"], result["sft"]["metrics"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    write_json(result, args.json)
    plot(result["variants"], args.png, result["sft"]["metrics"]["rationale"])
    console.print(f"wrote {args.json} and {args.png}")
    return 0 if finite(result) else 1


if __name__ == "__main__":
    sys.exit(main())
