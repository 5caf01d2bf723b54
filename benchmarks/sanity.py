"""The process-only sanity check: from the SFT start, does the rationale reward ALONE raise sampled crop IoU?

    python benchmarks/sanity.py --family idefics3                 # task, SFT, probe, 100 RL steps, docs/assets/sanity.json
    python benchmarks/sanity.py --family qwen2_5_vl --rl-lr 3e-4 --json /tmp/s.json

Same task and SFT as ``benchmarks/learning.py`` (its ``build_task``, ``run_sft``, ``FAMILY_SETS``), then GRPO with
``rewards.preset=rationale`` (R_rat alone: no answer, no format term; ``--preset`` picks another, e.g. ``process``)
for ``--rl-steps`` steps. Every step logs the diagnostics (``virl_train.diagnostics``);
the check is on the SAMPLED crop IoU of the training episodes (``diag/crop_iou``):

    rise = mean(crop IoU of the last 10 steps) − mean(crop IoU of the first 10 steps)        pass: rise ≥ 0.1

Before and after, the "can it see" probe (``virl_train.sight``, greedy, held-out records) reports crop IoU and hit
rate with the real pixels and with every pixel constant. Writes ``--json`` (default ``docs/assets/sanity.json``: the
per-step curves, the probes, the verdict, timings) and prints a summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rich.console import Console  # noqa: E402

import learning  # noqa: E402
from virl_data.storage.corpus import write_json  # noqa: E402

KEYS = ("diag/crop_iou", "diag/hit_rate@0.5", "reward/rationale", "reward/total", "diag/zero_spread_frac",
        "diag/kl_start", "diag/entropy", "diag/distinct_crops", "grad_norm", "loss/clip_frac",
        "reward_spread/rationale")  # fmt: skip
RISE, WINDOW = 0.1, 10


def rise(curve: list[float], window: int = WINDOW) -> float:
    """Mean of the last ``window`` values minus the mean of the first ``window``.

    >>> rise([0.1] * 10 + [0.3] * 10)
    0.2
    """
    w = min(window, max(1, len(curve) // 2))
    return round(statistics.fmean(curve[-w:]) - statistics.fmean(curve[:w]), 12)


def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    import torch

    from virl_train.sight import sight_line, sight_of_checkpoint
    from virl_train.train import train

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    work = Path(args.work)
    data = learning.build_task(work / "data", args.records, console=console, task=learning.TASKS[args.task])
    if args.start:
        start, sft_wall = Path(args.start), 0.0
    else:
        console.print(f"SFT ({args.family}): {args.sft_steps} steps at lr {args.sft_lr}")
        start, sft_wall = learning.run_sft(data, work / f"sft_{args.family}", args, console)
    base = learning.load_cfg([f"data.path={data}"], args.set, args.family)
    before = sight_of_checkpoint(base, start, args.eval_split, args.eval_n)
    console.print("SFT start " + sight_line(before))
    out = work / f"rl_{args.preset}_{args.family}_lr{args.rl_lr:g}"
    cfg = learning.load_cfg([f"data.path={data}", f"model.name_or_path={start}", f"rewards.preset={args.preset}",
                             f"run.max_steps={args.rl_steps}", f"run.out_dir={out}", f"run.save_every={args.rl_steps}",
                             f"optim.lr={args.rl_lr}"], args.set, args.family)  # fmt: skip
    curves: dict[str, list[float]] = {k: [] for k in KEYS}

    def record(step: int, m: dict[str, float]) -> None:
        for k in KEYS:
            curves[k].append(float(m.get(k, float("nan"))))
        if step % 10 == 0 or step == 1:
            console.print(f"  step {step}: crop IoU {m['diag/crop_iou']:.3f}  R_rat {m['reward/rationale']:.3f}  "
                          f"zero-spread {m['diag/zero_spread_frac']:.2f}  KL {m['diag/kl_start']:.4f}  "
                          f"H {m['diag/entropy']:.2f}  |g| {m['grad_norm']:.3f}  {m['time/wall_s']:.0f}s")

    t_rl = time.perf_counter()
    train(cfg, callbacks=[record], resume=False)
    rl_wall = time.perf_counter() - t_rl
    after = sight_of_checkpoint(base, out / "final", args.eval_split, args.eval_n)
    console.print("after RL  " + sight_line(after))
    r = rise(curves["diag/crop_iou"])
    return {
        "family": args.family, "task": args.task, "rise": r, "passes": r >= RISE, "goal": RISE, "window": WINDOW,
        "sft": {"steps": args.sft_steps if not args.start else None, "lr": args.sft_lr, "start": str(start),
                "wall_s": sft_wall, "sight": before, "trained": learning.start_meta(Path(start))},
        "rl": {"steps": args.rl_steps, "lr": args.rl_lr, "preset": args.preset, "wall_s": rl_wall, "curves": curves,
               "sight_after": after, "config": dataclasses.asdict(cfg)},
        "records": args.records, "eval_split": args.eval_split, "eval_n": args.eval_n, "threads": args.threads,
        "overrides": list(args.set), "wall_s": time.perf_counter() - t0,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=str(learning.REPO / "runs" / "sanity"))
    parser.add_argument("--family", default="idefics3", choices=list(learning.FAMILY_SETS))
    parser.add_argument("--task", default=learning.START["task"], choices=list(learning.TASKS),
                        help="as benchmarks/learning.py's")
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--start", default=None, help="an SFT checkpoint to start from (skips SFT)")
    learning.add_start_arguments(parser)
    parser.add_argument("--rl-steps", type=int, default=100)
    parser.add_argument("--rl-lr", type=float, default=1e-4)
    parser.add_argument("--preset", default="rationale", help="reward preset of the RL run")
    parser.add_argument("--eval-split", default="test")
    parser.add_argument("--eval-n", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", type=Path, default=learning.REPO / "docs" / "assets" / "sanity.json")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    console = Console(width=150)
    result = run(args, console)
    console.print(f"{args.preset} sanity ({args.family}): sampled crop IoU rise {result['rise']:+.3f} over "
                  f"{args.rl_steps} steps (goal ≥ {RISE}): {'PASS' if result['passes'] else 'FAIL'}; "
                  f"{result['wall_s'] / 60:.1f} min")
    write_json(result, args.json)
    console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
