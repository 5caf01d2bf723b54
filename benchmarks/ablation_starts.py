"""The reward ablation across SFT starts: how much of ViRL's margin over outcome-only survives a different start.

    python benchmarks/ablation_starts.py docs/assets/ablation.json docs/assets/ablation_sftseed1.json docs/assets/ablation_sftseed2.json

``benchmarks/learning.py`` runs one SFT start and several RL seeds, so its standard deviations are over seeds from
that one start. This reads several of its JSON results (one per start: ``--sft-seed``, ``--sft-decoys``, ...) and
reports, per start, how the start was trained, its "can it see" probe (hit@0.5 with pixels), its accuracy and probe
drop (how much its answers need its own crop), outcome-only's and full ViRL's rationale IoU (greedy, held out), the
margin, and the two variants' sampled crop IoU over their last 10 training steps (what the policy samples, not its
greedy choice: a policy near a tie between two crops can flip its greedy crop with a small drift); then the
margin's mean and standard deviation over starts, and the issue's goal applied at the start level (mean margin ≥ 0.1
and larger than twice its std over starts). Also the correlation of the start's probe drop with what outcome-only
gains over the start: outcome-only reward only pays for a tight crop where the crop changes the answer.

Writes ``--json`` (default ``docs/assets/ablation_starts.json``) with the rows, the summary and the Markdown table, and prints
the table. Nothing is trained here.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from virl_data.storage.corpus import write_json

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from learning import GOAL_MARGIN, goal_check  # noqa: E402

COLUMNS = {
    "decoys": "decoy share", "sft_seed": "SFT seed", "hit": "start hit@0.5", "accuracy": "start accuracy",
    "probe_drop": "start probe drop", "start_iou": "start rationale IoU", "outcome": "(a) outcome",
    "full": "(d) full ViRL", "margin": "margin", "paired_std": "paired std",
    "outcome_sampled": "(a) sampled crop IoU, last 10 steps", "full_sampled": "(d) sampled crop IoU, last 10 steps",
}  # fmt: skip
SAMPLED = "diag/crop_iou"
"""The training curve (mean over seeds) whose last 10 steps give the sampled crop IoU columns."""


def start_row(result: dict[str, Any], name: str) -> dict[str, Any]:
    """One start of ``learning.py``'s result: how it was trained, its probe, and the two variants' rationale IoU."""
    goal = goal_check(result["variants"], result["sft"]["sight"])  # margin, paired std: as learning.py reports them
    if not goal:
        missing = {"outcome", "full"} - set(result["variants"])
        raise ValueError(f"{name}: no {' and '.join(sorted(missing))} variant; run learning.py with both")
    trained = result["sft"].get("trained") or {}
    sft = result["sft"]["metrics"]
    outcome, full = (result["variants"][v]["metrics"]["rationale"] for v in ("outcome", "full"))

    def sampled(variant: str) -> float | None:
        curve = result["variants"][variant].get("curves", {}).get(SAMPLED)
        return statistics.fmean(curve[-10:]) if curve else None

    return {
        "name": name, "decoys": trained.get("decoys", result.get("sft_decoys")),
        "sft_seed": trained.get("seed", result.get("sft_seed", 0)),
        "hit": goal["sft_hit@0.5"], "accuracy": sft["accuracy"],
        "probe_drop": sft["probe_drop"], "start_iou": sft["rationale"],
        "outcome": outcome["mean"], "outcome_std": outcome["std"], "full": full["mean"], "full_std": full["std"],
        "margin": goal["margin"], "paired_std": goal["paired_diff_std"], "per_seed_margin": goal["per_seed_margin"],
        "seeds": result["variants"]["full"]["seeds"],
        "outcome_sampled": sampled("outcome"), "full_sampled": sampled("full"),
    }  # fmt: skip


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The margin over starts (mean, std, min, max), over every start x seed pair, the goal at the start level, and
    the correlation of the start's probe drop with outcome-only's gain over the start (None under 3 starts)."""
    margins = [r["margin"] for r in rows]
    pairs = [d for r in rows for d in r["per_seed_margin"]]
    std = statistics.stdev(margins) if len(margins) > 1 else 0.0
    gains = [r["outcome"] - r["start_iou"] for r in rows]
    drops = [r["probe_drop"] for r in rows]
    corr = statistics.correlation(drops, gains) if len(rows) >= 3 and len(set(drops)) > 1 else None
    mean = statistics.fmean(margins)
    return {
        "starts": len(rows), "margin_mean": mean, "margin_std_over_starts": std,
        "margin_min": min(margins), "margin_max": max(margins),
        "pairs": len(pairs), "pair_margin_mean": statistics.fmean(pairs),
        "pair_margin_std": statistics.stdev(pairs) if len(pairs) > 1 else 0.0,
        "starts_with_margin_0.1": sum(m >= GOAL_MARGIN for m in margins),
        "goal_at_start_level": mean >= GOAL_MARGIN and len(rows) > 1 and mean > 2 * std,
        "probe_drop_vs_outcome_gain_r": corr,
    }  # fmt: skip


def _cell(key: str, row: dict[str, Any]) -> str:
    value = row[key]
    if key in ("sft_seed", "decoys"):
        return "–" if value is None else f"{value:g}"
    if key == "margin":
        return f"{value:+.3f}"
    if key in ("outcome", "full"):
        return f"{value:.3f} ± {row[key + '_std']:.3f}"
    return "–" if value is None else f"{value:.3f}"


def markdown(rows: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    """The Markdown table of docs/learning.md: a row per start, then the mean over starts."""
    lines = ["| start | " + " | ".join(COLUMNS.values()) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    lines += [f"| {r['name']} | " + " | ".join(_cell(k, r) for k in COLUMNS) + " |" for r in rows]
    cells = dict.fromkeys(COLUMNS, "")
    cells["margin"] = f"**{summary['margin_mean']:+.3f} ± {summary['margin_std_over_starts']:.3f}**"
    lines.append(f"| mean over {summary['starts']} starts | " + " | ".join(cells.values()) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, nargs="+", help="learning.py JSON results, one per SFT start")
    parser.add_argument("--json", type=Path, default=REPO / "docs" / "assets" / "ablation_starts.json")
    args = parser.parse_args(argv)
    console = Console(width=max(Console().width, 150))
    rows = []
    for path in args.results:
        try:
            result = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            parser.error(f"{path}: not a readable learning.py result ({exc})")
        try:
            rows.append(start_row(result, path.stem))
        except (KeyError, ValueError) as exc:
            parser.error(f"{path}: not a learning.py result with a probe and both variants ({exc})")
    summary = summarize(rows)
    t = Table(title="ViRL ablation across SFT starts (rationale IoU, held-out, greedy; ± over RL seeds)")
    for col in ["start", *COLUMNS.values()]:
        t.add_column(col)
    for r in rows:
        t.add_row(r["name"], *(_cell(k, r) for k in COLUMNS))
    console.print(t)
    corr = summary["probe_drop_vs_outcome_gain_r"]
    console.print(f"margin over {summary['starts']} starts: {summary['margin_mean']:+.3f} ± "
                  f"{summary['margin_std_over_starts']:.3f} (min {summary['margin_min']:+.3f}, max "
                  f"{summary['margin_max']:+.3f}); over {summary['pairs']} start x seed pairs "
                  f"{summary['pair_margin_mean']:+.3f} ± {summary['pair_margin_std']:.3f}; starts with margin ≥ "
                  f"{GOAL_MARGIN}: {summary['starts_with_margin_0.1']}; goal at the start level (≥ {GOAL_MARGIN}, "
                  f"> 2 std): {summary['goal_at_start_level']}; r(start probe drop, outcome-only gain) "
                  + ("–" if corr is None else f"{corr:+.2f}"))
    out = {"rows": rows, "summary": summary, "inputs": [str(p) for p in args.results],
           "markdown": markdown(rows, summary)}
    write_json(out, args.json)
    console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
