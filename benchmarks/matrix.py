"""Learning proof II: what each reward component does, per-action credit included, with paired bootstrap CIs.

    python benchmarks/matrix.py --task wander        # docs/assets/credit.json + credit.png
    python benchmarks/matrix.py --task two-hop       # docs/assets/two_hop.json + two_hop.png
    python benchmarks/matrix.py --task wander --quick --work /tmp/m --json /tmp/m.json --png /tmp/m.png   # seconds

The four reward presets of ``benchmarks/learning.py`` (``VARIANTS``: (a) outcome + format, (b) + process, (c) + step
shaping, (d) full ViRL) over ``--starts`` SFT starts (``--sft-seed`` 0, 1, ...) x ``--seeds`` RL seeds, on one of
two tasks made for what the one-step ablation cannot show (``TASKS``):

- ``wander`` (issue 25, reward 3): one shape per image (``learning.TASK_ONE``), SFT references with *wasted* actions,
  answer kept (``virl_train.sft``'s ``extras``): a *redundant* repeat of the rationale crop after it (share
  ``--sft-redundant``, 0.6) and an *erroneous* crop of the empty opposite cell before it (``--sft-erroneous``, 0.6),
  drawn independently; ``env.max_actions`` 3. The references so carry 2.2 actions on average, 55 % of them wasted
  (a start that learns those odds crops 3 times when greedy: each extra is more likely than not).
  Under (b) a repeat leaves R_rat unchanged, so it costs nothing; under (c) its step reward r_k = Φ_k − Φ_{k−1} is
  0, below the mean of its group's step credits once normalized (η·Â_k on its tokens); (d) adds its label's credit
  (−β_red redundant, −β erroneous). The wander run (docs/learning.md) measured what that leaves to (d).
- ``two-hop``: "what colour is the shape right of / left of / above / below the <named shape>?" on 2-3 shapes in a
  2 x 2 grid (``learning.TASK_TWO_HOP``): an ordered two-box chain, the named shape, then its neighbour. The answer
  needs the second box only, so outcome-only reward does not pay for the first look. The ordered-chain metrics
  (``virl_train.eval``: ``step_iou@1`` / ``@2``, ``ordered_chain_hit@0.5``, ``order_rate``) are reported for every
  variant and for the starts.

Starts are SFT checkpoints keyed by (task, SFT seed, recipe) under ``WORK/starts`` and reused when present; every RL
run's result is kept in its folder (``result.json``) and reused too, so an interrupted matrix continues where it
stopped. ``--jobs`` runs that many SFT or RL jobs at a time (``learning.rl_jobs``).

**Statistics** (``paired_stat``): for a pair of variants (``PAIRS``: ``d_vs_c``, ``d_vs_b``, ``d_vs_a``) and a metric,
the differences x − y over the (start, seed) pairs both ran (same start, same RL seed), their mean and a 95 %
bootstrap CI of the mean (``scipy.stats.bootstrap``, BCa, 9,999 resamples, ``rng`` seeded with ``CI_SEED``). Fewer
than 2 pairs: no interval (``ci95`` null); all differences equal: the interval is that value. ``excludes_0`` says
whether the interval lies strictly on one side of 0.

Writes ``--json`` (per variant the metrics' mean / std / per-run values, the mean training curves; the starts and
their metrics; ``"paired"``; the goals; the settings, reward configs resolved per preset; wall times; the markdown)
and ``--png`` (training curves of actions per episode and the correct / redundant / erroneous rates per variant, plus
the final goal metric), and prints the tables. ``markdown(result)`` renders a result as markdown tables
(``benchmarks/report.py`` calls it).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rich.console import Console  # noqa: E402

import learning  # noqa: E402
from virl_data.storage.corpus import atomic_path, write_json  # noqa: E402
from virl_data.miners.shapes import ShapesConfig  # noqa: E402

REPO = learning.REPO
VARIANTS = learning.VARIANTS
LETTER = {"outcome": "a", "process": "b", "shaping": "c", "full": "d"}
PAIRS = {"d_vs_c": ("full", "shaping"), "d_vs_b": ("full", "process"), "d_vs_a": ("full", "outcome")}
CI_SEED, N_RESAMPLES = 0, 9999
BASE_METRICS = {  # eval key → table column; wasted_rate = redundant_rate + erroneous_rate (every action gets 1 label)
    "accuracy": "accuracy", "rationale": "rationale IoU", "actions_per_episode": "actions / episode",
    "wasted_rate": "wasted", "redundant_rate": "redundant", "erroneous_rate": "erroneous", "probe_drop": "probe drop",
}  # fmt: skip
CHAIN_METRICS = {"step_iou@1": "step 1 IoU", "step_iou@2": "step 2 IoU", "ordered_chain_hit@0.5": "ordered hit@0.5",
                 "order_rate": "order correct"}  # fmt: skip
PLOTTED = {"actions/actions_per_episode": "actions per episode", "actions/correct_rate": "correct rate",
           "actions/redundant_rate": "redundant rate", "actions/erroneous_rate": "erroneous rate"}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class MatrixTask:
    """A task of the matrix: its shapes world, its SFT recipe (beyond ``--sft-steps`` / lr / batch), the config
    overrides of every run, whether its chains are ordered (chain metrics), and where its results go."""

    shapes: ShapesConfig
    sft: dict[str, Any]
    sets: tuple[str, ...]
    ordered: bool
    name: str

    @property
    def metrics(self) -> dict[str, str]:
        return BASE_METRICS | (CHAIN_METRICS if self.ordered else {})


TASKS: dict[str, MatrixTask] = {
    "wander": MatrixTask(learning.TASK_ONE, {"sft_redundant": 0.6, "sft_erroneous": 0.6, "sft_decoys": 0.0},
                         ("env.max_actions=3",), ordered=False, name="credit"),
    "two-hop": MatrixTask(learning.TASK_TWO_HOP, {"sft_redundant": 0.0, "sft_erroneous": 0.0, "sft_decoys": 0.475},
                          ("env.max_actions=3",), ordered=True, name="two_hop"),
}  # fmt: skip
QUICK = {"records": 40, "sft_steps": 2, "rl_steps": 1, "starts": 2, "seeds": [0, 1], "eval_n": 2,
         "eval_split": "train", "jobs": 1, "threads": 1,
         "set": ["model.tiny_size=small", "grpo.batch_size=1", "grpo.group_size=2", "grpo.max_new_tokens=8"]}
"""``--quick``: the matrix's whole path at the size of a test (a few seconds per run, numbers meaningless)."""


# --- statistics ------------------------------------------------------------------------------------------------------
def paired_stat(diffs: list[float], seed: int = CI_SEED) -> dict[str, Any]:
    """Mean of paired differences and its 95 % bootstrap CI (``scipy.stats.bootstrap``, BCa; percentile where BCa is
    undefined). ``n`` < 2: ``ci95`` None; zero variance: ``[d, d]``.

    >>> paired_stat([0.1, 0.1, 0.1])["ci95"], paired_stat([0.2])["ci95"]
    ([0.1, 0.1], None)
    >>> s = paired_stat([0.10, 0.12, 0.08, 0.11, 0.09]); s["excludes_0"], s["ci95"][0] > 0
    (True, True)
    """
    import numpy as np
    from scipy.stats import bootstrap

    n = len(diffs)
    out: dict[str, Any] = {"mean": statistics.fmean(diffs) if n else None, "n": n, "ci95": None, "method": None}
    if n < 2:
        out["note"] = "fewer than 2 pairs: no interval"
    elif max(diffs) - min(diffs) <= 1e-12:
        out |= {"ci95": [diffs[0], diffs[0]], "method": "zero variance", "note": "all differences equal"}
    else:
        for method in ("BCa", "percentile"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a degenerate BCa warns, then gives NaN: the percentile one is used
                res = bootstrap((np.asarray(diffs, dtype=float),), np.mean, n_resamples=N_RESAMPLES,
                                confidence_level=0.95, method=method, rng=np.random.default_rng(seed))
            ci = res.confidence_interval
            if math.isfinite(ci.low) and math.isfinite(ci.high):
                out |= {"ci95": [float(ci.low), float(ci.high)], "method": method}
                break
    ci = out["ci95"]
    out["excludes_0"] = bool(ci is not None and (ci[0] > 0 or ci[1] < 0))
    return out


def paired(runs: dict[str, list[dict[str, Any]]], metrics: list[str]) -> dict[str, Any]:
    """``PAIRS`` x ``metrics``: ``paired_stat`` of x − y over the (start, seed) pairs both variants ran."""
    out = {}
    for name, (x, y) in PAIRS.items():
        if x not in runs or y not in runs:
            continue
        ys = {(r["start"], r["seed"]): r["metrics"] for r in runs[y]}
        pairs = [(r["metrics"], ys[(r["start"], r["seed"])]) for r in runs[x] if (r["start"], r["seed"]) in ys]
        out[name] = {k: paired_stat([a[k] - b[k] for a, b in pairs]) for k in metrics}
    return out


# --- runs ------------------------------------------------------------------------------------------------------------
def with_wasted(metrics: dict[str, float]) -> dict[str, float]:
    """The eval metrics plus ``wasted_rate`` = (redundant + erroneous actions) / all actions."""
    return metrics | {"wasted_rate": metrics["redundant_rate"] + metrics["erroneous_rate"]}


def _key(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


def start_recipe(sft_seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """What makes an SFT start: the task, its seed and every setting the SFT reads (the start's cache key);
    ``args.set`` already holds the task's overrides, ``args.sft`` its recipe (``parse_args``)."""
    return {"task": args.task, "shapes": dataclasses.asdict(TASKS[args.task].shapes), "records": args.records,
            "sft_seed": sft_seed, "steps": args.sft_steps, "lr": args.sft_lr, "batch": args.sft_batch,
            "family": args.family, "decoy_kind": args.sft_decoy_kind, **args.sft, "sets": list(args.set)}  # fmt: skip


def _sft_job(job: tuple) -> dict[str, Any]:
    """Train (or reuse) one SFT start and evaluate it on the held-out records."""
    import torch

    recipe, folder, data, args = job
    torch.set_num_threads(max(1, args.threads // max(1, args.jobs)))
    warnings.filterwarnings("ignore")
    stamp = folder / "recipe.json"
    recipe = json.loads(json.dumps(recipe))  # as the stamp reads back (tuples become lists)
    reused = (folder / "final").is_dir() and stamp.is_file() and json.loads(stamp.read_text()) == recipe
    wall = 0.0
    if not reused:
        ns = argparse.Namespace(**{**vars(args), **{k: v for k, v in recipe.items() if k.startswith("sft_")},
                                   "sft_decoy_kind": recipe["decoy_kind"]})
        _, wall = learning.run_sft(data, folder, ns, Console(quiet=args.quick, width=150))
        write_json(recipe, stamp)
    evaluated, ev_key = folder / "start_eval.json", _key([recipe, args.eval_split, args.eval_n])
    if reused and evaluated.is_file() and (kept := json.loads(evaluated.read_text()))["key"] == ev_key:
        metrics = kept["metrics"]
    else:
        base = learning.load_cfg([f"data.path={data}"], recipe["sets"], args.family)
        metrics = with_wasted(learning.evaluate_policy(base, folder / "final", data, args.eval_split, args.eval_n, 0))
        write_json({"key": ev_key, "metrics": metrics}, evaluated)
    return {"sft_seed": recipe["sft_seed"], "key": folder.name, "path": str(folder / "final"), "recipe": recipe,
            "reused": reused, "wall_s": wall, "metrics": metrics, "trained": learning.start_meta(folder / "final")}


def _run_job(job: tuple) -> dict[str, Any]:
    """One RL run (``learning._rl_job``), or its kept ``result.json`` when the same run was done before."""
    run_key, variant, seed, start, data, out, args = job
    kept = out / "result.json"
    if kept.is_file() and (r := json.loads(kept.read_text())).get("key") == run_key:
        return r | {"reused": True}
    _, _, r = learning._rl_job((variant, seed, start, data, out, args))
    r = {"key": run_key, "variant": variant, "seed": seed, **r, "metrics": with_wasted(r["metrics"])}
    write_json(r, kept)
    return r | {"reused": False}


def run_folder(parent: Path, variant: str, seed: int, run_key: str) -> Path:
    """Where one RL run lives: ``<variant>-s<seed>-<run key>``, so runs of the same start, preset and seed with other
    settings (``--rl-lr``, ``--rl-steps``, ``--set``) never share a folder. A run kept under the older name
    ``<variant>-s<seed>`` whose ``result.json`` has this key is that run, and is reused where it is."""
    legacy = parent / f"{variant}-s{seed}"
    kept = legacy / "result.json"
    if kept.is_file() and json.loads(kept.read_text()).get("key") == run_key:
        return legacy
    return parent / f"{variant}-s{seed}-{run_key}"


def run_matrix(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    """Data, the SFT starts, every (start, seed, variant) RL run; returns the result (see the module docstring)."""
    spec = TASKS[args.task]
    t0 = time.perf_counter()
    work = Path(args.work)
    data = learning.build_task(work / "data" / args.task, args.records, console=console, task=spec.shapes)
    sft_jobs = []
    for sft_seed in range(args.starts):
        recipe = start_recipe(sft_seed, args)
        sft_jobs.append((recipe, work / "starts" / f"{args.task}-s{sft_seed}-{_key(recipe)}", data, args))
    console.print(f"{len(sft_jobs)} SFT starts ({args.sft_steps} steps each, reused when present)")
    starts = list(learning.rl_jobs(sft_jobs, args.jobs, _sft_job))
    for s in starts:
        m = s["metrics"]
        how = "reused" if s["reused"] else f"{s['wall_s']:.0f}s"
        console.print(f"  start s{s['sft_seed']} ({how}): accuracy "
                      f"{m['accuracy']:.3f}  rationale IoU {m['rationale']:.3f}  actions {m['actions_per_episode']:.2f}"
                      f"  wasted {m['wasted_rate']:.3f}  ordered hit@0.5 {m['ordered_chain_hit@0.5']:.3f}")
    jobs = []
    for s in starts:
        for seed in args.seeds:
            for v in args.variants:
                run_key = _key([s["key"], v, seed, args.rl_steps, args.rl_lr, args.set, args.eval_split, args.eval_n])
                jobs.append((run_key, v, seed, s["path"], data, run_folder(work / "rl" / s["key"], v, seed, run_key),
                             args))
    console.print(f"{len(jobs)} RL runs ({args.rl_steps} steps each, --jobs {args.jobs})")
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in args.variants}
    for (_, v, seed, start, *_), r in zip(jobs, learning.rl_jobs(jobs, args.jobs, _run_job)):
        sft_seed = next(s["sft_seed"] for s in starts if s["path"] == start)
        runs[v].append(r | {"start": sft_seed})
        m, how = r["metrics"], "reused" if r["reused"] else f"{r['wall_s']:.0f}s"
        console.print(f"  s{sft_seed} {v:8s} seed {seed}: accuracy {m['accuracy']:.3f}  rationale {m['rationale']:.3f}"
                      f"  actions {m['actions_per_episode']:.2f}  wasted {m['wasted_rate']:.3f}  {how}")
    return assemble(args, spec, starts, runs, time.perf_counter() - t0)


# --- the result ------------------------------------------------------------------------------------------------------
def summarize(runs: dict[str, list[dict[str, Any]]], metrics: list[str]) -> dict[str, Any]:
    """Per variant: ``{metric: {"mean", "std", "per_run"}}`` (``per_run`` in the runs' order, ``runs`` naming each
    run's (start, seed)), the mean training curves, wall times."""
    out = {}
    for v, rs in runs.items():
        stats = {}
        for k in metrics:
            vals = [float(r["metrics"][k]) for r in rs]
            m, s = learning.mean_std(vals)
            stats[k] = {"mean": m, "std": s, "per_run": vals}
        curves = learning.mean_curves(rs)
        which = [{"start": r["start"], "seed": r["seed"], "reused": r["reused"]} for r in rs]
        out[v] = {"label": VARIANTS[v], "metrics": stats, "runs": which, "curves": curves,
                  "wall_s": sum(r["wall_s"] for r in rs)}
    return out


def goal_check(task: str, variants: dict[str, Any], pairs: dict[str, Any], starts: list[dict[str, Any]]) -> dict:
    """Issue 25's goals, computed. ``wander``: (d)'s wasted rate ≤ 0.5 x (c)'s, the CI of (d) − (c) excludes 0,
    (d)'s accuracy ≥ (c)'s − 0.02. ``two-hop``: every SFT start's ordered-chain hit@0.5 ≥ 0.5 (held out), (d)'s
    rationale IoU ≥ (a)'s + 0.1 with the CI of (d) − (a) excluding 0."""
    mean = lambda v, k: variants[v]["metrics"][k]["mean"] if v in variants else math.nan  # noqa: E731
    out: dict[str, Any] = {}
    if task == "wander" and "d_vs_c" in pairs:
        d, c = mean("full", "wasted_rate"), mean("shaping", "wasted_rate")
        out = {"d_wasted": d, "c_wasted": c, "d_wasted_le_half_c": d <= 0.5 * c,
               "d_minus_c_wasted_ci_excludes_0": pairs["d_vs_c"]["wasted_rate"]["excludes_0"],
               "d_minus_c_accuracy": mean("full", "accuracy") - mean("shaping", "accuracy"),
               "d_accuracy_within_0.02_of_c": mean("full", "accuracy") >= mean("shaping", "accuracy") - 0.02}
    elif task == "two-hop" and "d_vs_a" in pairs:
        hits = [s["metrics"]["ordered_chain_hit@0.5"] for s in starts]
        out = {"start_ordered_hit@0.5": hits, "starts_reach_0.5": all(h >= 0.5 for h in hits),
               "d_minus_a_rationale": mean("full", "rationale") - mean("outcome", "rationale"),
               "d_beats_a_by_0.1": mean("full", "rationale") >= mean("outcome", "rationale") + 0.1,
               "d_minus_a_rationale_ci_excludes_0": pairs["d_vs_a"]["rationale"]["excludes_0"]}
    if out:
        out["met"] = all(v for v in out.values() if isinstance(v, bool))
    return out


def assemble(args: argparse.Namespace, spec: MatrixTask, starts: list[dict], runs: dict[str, list],
             wall: float) -> dict[str, Any]:
    """The JSON result of a matrix run (also the input of ``markdown``)."""
    from virl_train.rewards import RewardConfig

    metrics = list(spec.metrics)
    variants = summarize(runs, metrics)
    pairs = paired(runs, metrics)
    cfg = learning.load_cfg([], args.set, args.family)
    rewards = {v: RewardConfig.from_params(v, cfg.rewards.params).to_dict() for v in args.variants}
    return {
        "task": args.task, "shapes": dataclasses.asdict(spec.shapes), "records": args.records, "quick": args.quick,
        "variants": variants, "paired": pairs, "goal": goal_check(args.task, variants, pairs, starts),
        "starts": starts, "metrics": spec.metrics,
        "settings": {"sft_steps": args.sft_steps, "sft_lr": args.sft_lr, "sft_batch": args.sft_batch, **args.sft,
                     "sft_decoy_kind": args.sft_decoy_kind,
                     "rl_steps": args.rl_steps, "rl_lr": args.rl_lr, "seeds": list(args.seeds), "starts": args.starts,
                     "eval_split": args.eval_split, "eval_n": args.eval_n, "family": args.family,
                     "config": str(learning.CONFIG.relative_to(REPO)), "overrides": list(args.set),
                     "rewards": rewards, "rewards_params": dict(cfg.rewards.params), "jobs": args.jobs,
                     "threads": args.threads, "ci": {"method": "scipy.stats.bootstrap BCa (percentile fallback)",
                                                     "n_resamples": N_RESAMPLES, "seed": CI_SEED, "level": 0.95}},
        "wall_s": wall,
    }  # fmt: skip


def _fmt_ci(stat: dict[str, Any]) -> str:
    if stat["mean"] is None:
        return "–"
    ci = stat["ci95"]
    return f"{stat['mean']:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else f"{stat['mean']:+.3f} (n = {stat['n']})"


def markdown(result: dict[str, Any]) -> str:
    """A matrix result (the JSON ``main`` writes, read back) as markdown: the per-variant table (a row per SFT start,
    then mean ± std over the start x seed runs), the paired differences with their 95 % CIs, and the goals."""
    metrics = result["metrics"]
    lines = ["| variant | " + " | ".join(metrics.values()) + " |", "|---" * (len(metrics) + 1) + "|"]
    for s in result["starts"]:
        lines.append(f"| SFT start (seed {s['sft_seed']}) | " + " | ".join(f"{s['metrics'][k]:.3f}" for k in metrics)
                     + " |")
    for v in result["variants"].values():
        cells = (f"{v['metrics'][k]['mean']:.3f} ± {v['metrics'][k]['std']:.3f}" for k in metrics)
        lines.append(f"| {v['label']} | " + " | ".join(cells) + " |")
    lines += ["", "| paired difference (same start, same seed): mean [95 % CI] | " + " | ".join(metrics.values())
              + " |", "|---" * (len(metrics) + 1) + "|"]
    for name, stats in result["paired"].items():
        lines.append(f"| {name.replace('_vs_', ' − ')} | " + " | ".join(_fmt_ci(stats[k]) for k in metrics) + " |")
    goal = result["goal"]
    if goal:
        flags = ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in goal.items() if isinstance(v, bool))
        lines += ["", f"Goals: {flags}."]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> Path:
    """Training curves (sampled episodes, mean over runs, moving average of 10): actions per episode and the three
    label rates per variant; then the final wasted rate (wander) or rationale IoU (two-hop) per variant."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(24, 4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(PLOTTED) + 1)
    for ax, (key, title) in zip(axes, PLOTTED.items()):
        for v in result["variants"].values():
            y = np.asarray(v["curves"][key], dtype=float)
            k = min(10, len(y))
            ax.plot(np.arange(k, len(y) + 1), np.convolve(y, np.ones(k) / k, mode="valid"), label=v["label"])
        ax.set_title(f"train {title} (sampled)")
        ax.set_xlabel("RL step")
    axes[0].legend(fontsize=8)
    final = "wasted_rate" if result["task"] == "wander" else "rationale"
    names = list(result["variants"])
    stats = [result["variants"][n]["metrics"][final] for n in names]
    axes[-1].bar(range(len(names)), [s["mean"] for s in stats], yerr=[s["std"] for s in stats], capsize=4)
    axes[-1].set_xticks(range(len(names)), [f"({LETTER[n]}) {n}" for n in names])
    axes[-1].set_ylim(0, 1)
    axes[-1].set_title(f"held-out {final} (greedy)")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


def finite(result: dict[str, Any]) -> bool:
    """Whether every per-run metric and curve value is a finite number."""
    vals = [x for v in result["variants"].values() for m in v["metrics"].values() for x in m["per_run"]]
    vals += [x for v in result["variants"].values() for c in v["curves"].values() for x in c]
    return all(math.isfinite(x) for x in vals)


# --- main ------------------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True, choices=list(TASKS))
    parser.add_argument("--work", default=str(REPO / "runs" / "matrix"), help="data, starts and run folders")
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--starts", type=int, default=3, help="SFT starts (SFT seeds 0 .. N-1)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="RL seeds per start")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--sft-steps", type=int, default=1000)
    parser.add_argument("--sft-lr", type=float, default=1e-3)
    parser.add_argument("--sft-batch", type=int, default=16)
    parser.add_argument("--sft-redundant", type=float, default=None, help="override the task's share (wander: 0.6)")
    parser.add_argument("--sft-erroneous", type=float, default=None, help="override the task's share (wander: 0.6)")
    parser.add_argument("--sft-decoys", type=float, default=None,
                        help="override the task's share of decorative references (two-hop: 0.475, wander: 0)")
    parser.add_argument("--sft-decoy-kind", default="centre", choices=learning.SFT_DECOY_KINDS,
                        help="where a decorative reference crops (default: the image centre)")
    parser.add_argument("--rl-steps", type=int, default=60)
    parser.add_argument("--rl-lr", type=float, default=1e-4)
    parser.add_argument("--eval-split", default="test")
    parser.add_argument("--eval-n", type=int, default=150)
    parser.add_argument("--family", default="idefics3", choices=list(learning.FAMILY_SETS))
    parser.add_argument("--threads", type=int, default=2, help="torch threads in all (shared by the --jobs)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="test size (QUICK): the whole path in seconds")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides for every run")
    parser.add_argument("--json", type=Path, default=None, help="default docs/assets/<credit|two_hop>.json")
    parser.add_argument("--png", type=Path, default=None, help="default docs/assets/<credit|two_hop>.png")
    args = parser.parse_args(argv)
    if any(item.split("=")[0].strip() == "rewards.preset" for item in args.set):
        parser.error("--set rewards.preset=...: the preset is what the matrix varies; use --variants")
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, [*v, *args.set] if k == "set" else v)
    spec = TASKS[args.task]
    given = ("sft_redundant", "sft_erroneous", "sft_decoys")
    args.sft = spec.sft | {k: getattr(args, k) for k in given if getattr(args, k) is not None}
    args.set = [*spec.sets, *args.set]  # the task's overrides, the same for every preset
    args.json = args.json or REPO / "docs" / "assets" / f"{spec.name}.json"
    args.png = args.png or REPO / "docs" / "assets" / f"{spec.name}.png"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    console = Console(width=max(Console().width, 150))
    result = run_matrix(args, console)
    result["markdown"] = markdown(result)
    console.print(result["markdown"])
    console.print(f"whole matrix {result['wall_s'] / 60:.1f} min")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    write_json(result, args.json)
    plot(result, args.png)
    console.print(f"wrote {args.json} and {args.png}")
    return 0 if finite(result) else 1


if __name__ == "__main__":
    sys.exit(main())
