"""The sections and blocks of the evidence pages (``benchmarks/report.py`` assembles and writes them).

Each builder takes the loaded JSON results of its section, by file stem (``r["ablation"]`` is
``docs/assets/ablation.json``), and returns Markdown; every number it shows comes from those results. A new
experiment is one builder here plus one entry in ``report.LEARNING`` (or ``report.BLOCKS``).
"""

from __future__ import annotations

import math
import statistics
import sys
import textwrap
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import ablation_starts  # noqa: E402
import learning  # noqa: E402
from learning import GOAL_HIT, GOAL_IOU, GOAL_MARGIN  # noqa: E402

Results = dict[str, Any]
"""The loaded JSON files of a section, by file stem (``"ablation"`` for ``docs/assets/ablation.json``)."""


# --- small formatting helpers ----------------------------------------------------------------------------------------
def f3(x: float) -> str:
    return f"{x:.3f}"


def pm(m: dict[str, Any]) -> str:
    """``mean ± std`` of a metric summary of ``learning.py`` (``{"mean", "std", "per_seed"}``)."""
    return f"{m['mean']:.3f} ± {m['std']:.3f}"


def met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def mean_window(curve: list[float], first: bool, window: int = 10) -> float:
    return statistics.fmean(curve[:window] if first else curve[-window:])


def span(values: list[float], digits: int = 2) -> str:
    """``lo-hi`` of ``values`` at ``digits`` decimals (a single value when they round equal)."""
    lo, hi = f"{min(values):.{digits}f}", f"{max(values):.{digits}f}"
    return lo if lo == hi else f"{lo}-{hi}"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table: ``header`` then one line per row."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)])


def rationale(result: Results, variant: str) -> dict[str, Any]:
    return result["variants"][variant]["metrics"]["rationale"]


def ablation_table(result: Results) -> str:
    """The ablation table of one ``learning.py`` result (SFT start row, then a row per reward variant)."""
    return learning.markdown(result["variants"], result["sft"]["metrics"])


def goal_paragraph(result: Results) -> str:
    """The start's probe and the goal check of one ``learning.py`` result, in words."""
    sight, goal = result["sft"]["sight"], result["goal"]
    full, outcome = rationale(result, "full"), rationale(result, "outcome")
    per_seed = " / ".join(f3(x) for x in full["per_seed"]) + " against " + " / ".join(map(f3, outcome["per_seed"]))
    return (
        f"SFT start probe: crop IoU {f3(sight['pixels']['crop_iou'])} with pixels vs "
        f"{f3(sight['constant']['crop_iou'])} with every pixel constant, hit@0.5 **{f3(goal['sft_hit@0.5'])}** "
        f"(goal ≥ {GOAL_HIT}: {met(goal['sft_hit_reaches_0.6'])}). Full ViRL: rationale IoU **{f3(full['mean'])}** "
        f"(≥ {GOAL_IOU}: {met(goal['full_reaches_0.5'])}), **{goal['margin']:+.3f}** over outcome-only (per seed "
        f"{per_seed}; paired std {f3(goal['paired_diff_std'])}), against the goal of +{GOAL_MARGIN} beyond 2 std: "
        f"{met(goal['full_beats_outcome_by_0.1'] and goal['margin_over_2_std'])}."
    )


def figure(stem: str, caption: str) -> str:
    return f"![{caption}](assets/{stem}.png)"


# --- the process-only sanity check -------------------------------------------------------------------------------------
def sanity_column(s: Results) -> list[str]:
    """One column of the sanity table: start probe, sampled crop IoU rise, probe after RL, diagnostics, wall time."""
    before, after, curves = s["sft"]["sight"], s["rl"]["sight_after"], s["rl"]["curves"]
    crop, w = curves["diag/crop_iou"], s["window"]

    def probe(sight: dict[str, Any]) -> str:
        return f"{f3(sight['pixels']['crop_iou'])} / {f3(sight['constant']['crop_iou'])} " \
               f"({f3(sight['pixels']['hit_rate@0.5'])})"  # fmt: skip

    verdict = "**pass**" if s["passes"] else "**fail**"
    return [
        probe(before),
        f"{f3(mean_window(crop, True, w))} → {f3(mean_window(crop, False, w))}: rise **{s['rise']:+.3f}** "
        f"(goal ≥ {s['goal']}: {verdict})",
        probe(after),
        f"{curves['diag/kl_start'][-1]:.3g}; {statistics.fmean(curves['diag/zero_spread_frac']):.2f}; "
        f"{statistics.fmean(curves['grad_norm']):.2f}",
        f"{s['wall_s'] / 60:.1f} min",
    ]


def sanity_section(r: Results) -> str:
    one, shapes = r["sanity"], r["sanity_shapes"]
    w = one["window"]
    rows = [
        "SFT start, greedy crop IoU pixels / constant (hit@0.5)",
        f"sampled crop IoU, first {w} → last {w} steps",
        "after RL, greedy crop IoU pixels / constant (hit@0.5)",
        "KL to the start at the end; mean zero-spread fraction; mean gradient norm",
        "wall time (a shared 2-core machine)",
    ]
    cols = [sanity_column(one), sanity_column(shapes)]
    table = md_table(["", "one-shape start (`docs/assets/sanity.json`)", "2-3-shape start (`docs/assets/sanity_shapes.json`)"],
                     [[name, *(c[i] for c in cols)] for i, name in enumerate(rows)])  # fmt: skip
    b1, a1 = one["sft"]["sight"]["pixels"], one["rl"]["sight_after"]["pixels"]
    b2, a2 = shapes["sft"]["sight"]["pixels"], shapes["rl"]["sight_after"]["pixels"]
    c2 = shapes["rl"]["curves"]
    group = shapes["rl"]["config"]["grpo"]["group_size"]
    return f"""`python benchmarks/sanity.py` asks the question the ablation depends on: from the SFT start, does the rationale
reward ALONE (`rewards.preset=rationale`: λ_rat·R_rat, no answer and no format term) raise the sampled crop IoU by
≥ {one['goal']} within {one['rl']['steps']} steps? Same task, config and SFT start as the ablation below, {one['rl']['steps']} GRPO steps at
lr {one['rl']['lr']:g}, 1 seed, crop IoU of the training samples (`diag/crop_iou`), the "can it see" probe on
{one['eval_n']} held-out test records before and after.

{table}

From the ablation's start the rationale reward alone does what it should: the held-out greedy hit rate goes from
{b1['hit_rate@0.5']:.2f} to {a1['hit_rate@0.5']:.2f}. With no answer term, accuracy falls from {b1['accuracy']:.2f} to
{a1['accuracy']:.2f} on those records, the reason ViRL gates the rationale bonus on a right answer. From the sighted start
of the 2-3-shape task it moves the held-out crops the right way ({a2['crop_iou'] - b2['crop_iou']:+.3f} IoU,
{a2['hit_rate@0.5'] - b2['hit_rate@0.5']:+.3f} hit rate), but far less than the goal: per-step sampled IoU swings between
{min(c2['diag/crop_iou']):.2f} and {max(c2['diag/crop_iou']):.2f} with the prompts of the step, the sampling entropy is low
({span(c2['diag/entropy'])}; groups hold {statistics.fmean(c2['diag/distinct_crops']):.1f} distinct crops out of {group} on
average), and (in pilots) learning rates that move it faster wreck it. A start that always crops its best guess leaves
the reward little to choose between; one that sometimes crops for show leaves it a clear choice in most groups."""


# --- the landed ablation -----------------------------------------------------------------------------------------------
def curve_sentence(result: Results) -> str:
    """What the training curves say (seed means; first 10 vs last 10 steps)."""
    v = result["variants"]
    rat = [n for n in ("process", "shaping", "full") if n in v]
    crop = {n: v[n]["curves"]["diag/crop_iou"] for n in v}
    zero = {n: v[n]["curves"]["diag/zero_spread_frac"] for n in v}
    kl_peak = max(v, key=lambda n: max(v[n]["curves"]["diag/kl_start"]))
    return (
        f"From the training curves (mean over seeds, steps 1-10 → last 10): the sampled crop IoU of (b)-(d) rises "
        f"{span([mean_window(crop[n], True) for n in rat])} → {span([mean_window(crop[n], False) for n in rat])}, "
        f"outcome-only's {mean_window(crop['outcome'], True):.2f} → {mean_window(crop['outcome'], False):.2f}; "
        f"outcome-only has no reward spread in {100 * mean_window(zero['outcome'], True):.0f} % (first steps) and "
        f"{100 * mean_window(zero['outcome'], False):.0f} % (last steps) of its groups (every sample answers right, so "
        f"nothing is learnt from them), the rationale variants in "
        f"{span([100 * mean_window(zero[n], True) for n in rat], 0)} % at first; the seed-mean KL to the start peaks "
        f"at {max(v[kl_peak]['curves']['diag/kl_start']):.2f} ({v[kl_peak]['label']})."
    )


def ablation_section(r: Results) -> str:
    a = r["ablation"]
    task, trained = a["task"], a["sft"]["trained"]
    accs = [v["metrics"]["accuracy"]["mean"] for v in a["variants"].values()]
    out = rationale(a, "outcome")
    wins = {a["variants"][n]["label"]: sum(x > o for x, o in zip(rationale(a, n)["per_seed"], out["per_seed"]))
            for n in ("process", "shaping", "full")}  # fmt: skip
    wins_text = "; ".join(f"{label} in {k} of {len(out['per_seed'])} seeds" for label, k in wins.items())
    return f"""`python benchmarks/learning.py` runs the ablation on the CPU (`{task['config']}`): a tiny random model of family
`{a['family']}` (`tiny_size: base`) on a shapes world sized for it, one {trained['steps']}-step SFT start (lr {trained['lr']:g}, batch
{trained['batch_size']}, every weight trained), then {a['rl_steps']} GRPO steps (lr {a['rl_lr']:g}, vision tower and connector
frozen) per reward preset and seed ({len(a['seeds'])} seeds), each final policy evaluated greedily on {task['eval_n']} held-out
records with the illusion probe (a random crop of the same size in place of the model's). The config sets the credit
rule's `tau_err` to 0.3: a chain box here is ~40 % of the image side, so a whole-image crop has IoU ~0.2 with it, and
under the default 0.1 the credit rule called that show-everything zoom "correct".

**The illusion, then the fix** (the defaults: `python benchmarks/learning.py`, i.e. `--task {task['name']} --sft-decoys
{a['sft_decoys']:g} --sft-decoy-kind {a['sft_decoy_kind']}`; `docs/assets/ablation.json`, {a['wall_s'] / 60:.1f} min on
{a['threads']} cores with `--jobs {a['jobs']}`, the SFT start reused via `--start`). One shape per
{task['shapes']['image_size'][0]}-px image, in one of the four cells of a 2 x 2 grid, and a one-step question about its colour
or its shape: the full image already names the answer. {100 * trained['decoys']:g} % of the SFT references crop the image
centre, a context-agnostic box of the right size that overlaps the shape by a corner, with the right answer kept. The
start so answers from the full image (accuracy {f3(a['sft']['metrics']['accuracy'])}; a random crop in place of its own
costs {100 * a['sft']['metrics']['probe_drop']:.1f} points) and crops on the rationale for
{100 * a['sft']['metrics']['hit_rate@0.5']:.0f} % of the held-out questions, on the image centre for the rest:

{ablation_table(a)}

{goal_paragraph(a)} The variants with process supervision beat outcome-only per seed: {wins_text}. Accuracy is
about the same for all ({span(accs, 3)}): the answer never needed the crop, which is why only the rationale reward
keeps putting the crop where the evidence is. Outcome-only also gains over the start
({out['mean'] - a['sft']['metrics']['rationale']:+.3f}): among sampled episodes a tight crop answers right slightly more
often. {curve_sentence(a)}

{figure('ablation', 'Training curves of the four reward variants and the final held-out rationale IoU')}"""


def decoy_share_section(r: Results) -> str:
    """The start's share of centre crops against ViRL's margin: one-seed pilots plus the two 3-seed starts."""
    rows: list[tuple[float, list[str]]] = []
    for p in r["decoy_share_pilots"]["pilots"]:
        cells = ["(not run: no room)", "", ""] if p["outcome"] is None else \
            [f3(p["outcome"]), f3(p["full"]), f"{p['full'] - p['outcome']:+.3f}"]  # fmt: skip
        rows.append((p["decoys"], [f"{p['decoys']:g} (1 seed, pilot)", f3(p["hit"]), f3(p["accuracy"]), *cells]))
    for stem in ("ablation", "ablation_replicate"):
        res = r[stem]
        out, full = rationale(res, "outcome"), rationale(res, "full")
        label = f"**{res['sft_decoys']:g}** ({len(res['seeds'])} seeds, `{stem}.json`)"
        rows.append((res["sft_decoys"], [label, f3(res["sft"]["sight"]["pixels"]["hit_rate@0.5"]),
                                         f3(res["sft"]["metrics"]["accuracy"]), pm(out), pm(full),
                                         f"{full['mean'] - out['mean']:+.3f}"]))  # fmt: skip
    header = ["centre-crop share S of the SFT references", "start hit@0.5", "start accuracy", "(a) outcome",
              "(d) full ViRL", "margin"]  # fmt: skip
    table = md_table(header, [cells for _, cells in sorted(rows, key=lambda x: x[0])])
    return f"""The share S of centre crops in the SFT references sets how often the start looks (`--sft-decoys S`; the pilots
ran `{r['decoy_share_pilots']['command']}`, {r['decoy_share_pilots']['note']}): the more the start looks, the less room
ViRL has over outcome-only.

{table}"""


# --- across SFT starts -------------------------------------------------------------------------------------------------
def starts_section(r: Results) -> str:
    s = r["ablation_starts"]
    rows, summary = s["rows"], s["summary"]
    results = [r[row["name"]] for row in rows]
    runs = sum(len(res["seeds"]) for res in results)
    seeds = lambda v: [x for res in results for x in rationale(res, v)["per_seed"]]  # noqa: E731
    crop = lambda res, v, first: mean_window(res["variants"][v]["curves"]["diag/crop_iou"], first)  # noqa: E731
    rat = ("process", "shaping", "full")
    outcome_moves = ", ".join(f"{crop(res, 'outcome', True):.2f} → {crop(res, 'outcome', False):.2f}" for res in results)
    zero = [statistics.fmean(res["variants"]["outcome"]["curves"]["diag/zero_spread_frac"]) for res in results]
    kl = max(max(res["variants"]["outcome"]["curves"]["diag/kl_start"]) for res in results)
    widest = max(results, key=lambda res: rationale(res, "outcome")["std"])
    same = [row for row in rows if row["decoys"] == rows[0]["decoys"]]
    corr = summary["probe_drop_vs_outcome_gain_r"]
    return f"""`--sft-seed 1` and `--sft-seed 2` train the same recipe with other initial weights, decoy draws and batch order;
`python benchmarks/ablation_starts.py docs/assets/ablation.json docs/assets/ablation_sftseed1.json
docs/assets/ablation_sftseed2.json docs/assets/ablation_replicate.json` puts the starts side by side
(`docs/assets/ablation_starts.json`). Rationale IoU on the same held-out records, ± over the RL seeds of each start;
the last two columns are the sampled crop IoU over the last 10 training steps (mean over seeds):

{ablation_starts.markdown(rows, summary)}

What holds in all {runs} runs ({len(rows)} starts x their seeds): full ViRL ends at {span(seeds('full'), 3)} (process-only at
{span(seeds('process'), 3)}), and the sampled crop IoU of the three rationale variants rises from
{span([crop(res, v, True) for res in results for v in rat])} to {span([crop(res, v, False) for res in results for v in rat])}.
What does not: outcome-only ends anywhere between {min(seeds('outcome')):.3f} and {max(seeds('outcome')):.3f}. It hardly
trains the crop at all: {span([100 * z for z in zero], 0)} % of its groups have no reward spread (every sample answers
right), the seed-mean KL to the start stays ≤ {kl:.2f}, and its sampled crop IoU goes {outcome_moves} (first → last 10
steps, per start). Its greedy crops then fall on either side of a near tie: these starts sample the rationale and the
centre at similar odds, so where outcome-only's greedy crop lands is set by small drifts, per seed
({' / '.join(f3(x) for x in rationale(widest, 'outcome')['per_seed'])} from one start) as much as per start. The
{100 * same[0]['decoys']:g} % share sits on that tipping point for the start too: the same recipe gave start hit rates
{', '.join(f3(row['hit']) for row in same)}. Against this, the goal's test reads: the margin is
{'positive' if summary['margin_min'] > 0 else 'not positive'} for every start and {summary['margin_mean']:+.3f} ±
{summary['margin_std_over_starts']:.3f} over the {summary['starts']}; at the start level (mean ≥ {GOAL_MARGIN} and beyond 2 std
over starts) the goal is {met(summary['goal_at_start_level'])}. The start's probe drop does not predict what
outcome-only gains (r = {'–' if corr is None else f'{corr:+.2f}'} over the {summary['starts']} starts)."""


# --- the 2-3-shape task ------------------------------------------------------------------------------------------------
def shapes_section(r: Results) -> str:
    sighted, deco = r["ablation_shapes"], r["ablation_decorative"]
    v = sighted["variants"]
    best = max(v, key=lambda n: rationale(sighted, n)["mean"] - rationale(sighted, n)["std"])
    lead = [b - a for b, a in zip(rationale(sighted, best)["per_seed"], rationale(sighted, "outcome")["per_seed"])]
    ends = max(rationale(sighted, n)["mean"] for n in v)
    full_d, out_d = rationale(deco, "full"), rationale(deco, "outcome")
    crop = {n: deco["variants"][n]["curves"]["diag/crop_iou"][39:] for n in deco["variants"]}
    leads = [statistics.fmean(b - a for b, a in zip(crop[n], crop["outcome"])) for n in ("process", "shaping", "full")]
    pd, ds = sighted["sft"]["metrics"], deco["sft"]
    return f"""`--task shapes`: 2-3 shapes of 40-51 px per image, each in its own cell, a question naming one of them
({sighted['task']['records']:,} records). The tiny model cannot answer from the full image here (accuracy
{f3(ds['metrics']['accuracy'])} from a start that always zooms on the whole image against {f3(pd['accuracy'])} from one that
looks), and the same ablation shows no margin: outcome-only reward pays for looking too. Same config, {len(sighted['seeds'])}
seeds, {sighted['rl_steps']} steps.

**A start that looks** (`python benchmarks/learning.py --task shapes --sft-decoys 0`; `docs/assets/ablation_shapes.json`,
{sighted['wall_s'] / 60:.1f} min with `--jobs {sighted['jobs']}`, SFT reused via `--start`):

{ablation_table(sighted)}

{goal_paragraph(sighted)} {v[best]['label']} is the best and steadiest variant ({statistics.fmean(lead):+.3f} over
outcome-only, per seed {' / '.join(f'{x:+.3f}' for x in lead)}), and every variant ends at or below the SFT start
({f3(pd['rationale'])}; best variant {f3(ends)}).

{figure('ablation_shapes', 'Training curves on the 2-3-shape task from a start that looks')}

**A start that crops for show** (`python benchmarks/learning.py --task shapes --sft-decoys {deco['sft_decoys']:g}
--sft-decoy-kind {deco['sft_decoy_kind']}`: half the SFT references crop the whole image, answer kept;
`docs/assets/ablation_decorative.json`, {deco['wall_s'] / 60:.1f} min including the SFT):

{ablation_table(deco)}

This start always zooms on the whole image (hit@0.5 {f3(ds['sight']['pixels']['hit_rate@0.5'])}, crop IoU
{f3(ds['sight']['pixels']['crop_iou'])} with pixels and {f3(ds['sight']['constant']['crop_iou'])} with constant pixels: the probe
says it {'can' if ds['sight']['can_see'] else 'cannot'} see), the illusion the paper describes. Every reward variant
teaches it to crop tighter; full ViRL {pm(full_d)} against outcome-only {pm(out_d)}
({full_d['mean'] - out_d['mean']:+.3f}; goal +{GOAL_MARGIN} and ≥ {GOAL_IOU}:
{met(deco['goal']['met'])}), and from step 40 on the sampled crop IoU of (b)-(d) leads (a) by {span(leads)} on average.

{figure('ablation_decorative', 'Training curves on the 2-3-shape task from a start that crops for show')}

**Why the margin disappears on this task**, as far as it was measured (`benchmarks/sanity.py --task shapes` above,
and one-seed pilots whose results were not kept):

- looking helps answering here (probe drop {pd['probe_drop']:.2f} at the sighted start: a random crop costs
  {100 * pd['probe_drop']:.0f} points of accuracy), so outcome-only reward already pays for a tight crop. From a start that
  looks, it has nothing to correct; from a start that does not, it teaches looking too, only more slowly;
- the RL update moves held-out crops by switching behaviour (whole image → tight crop), not by localising better: a
  sighted start samples few distinct crops per group, and the sampling temperatures or learning rates that would
  widen or speed that up make many actions invalid or collapse the policy (pilots);
- so the SFT start's hit rate and ViRL's margin over outcome-only trade off: only a start that cannot see leaves room
  for a margin, which then fails the start's own goal;
- one shape per image with whole-image decoys does not change this (pilot): a whole-image decoy still shows the shape.
  The centre decoys of the one-shape runs above show at most a corner of it, so that start learns to answer from the
  full image, and there the rationale rewards lead."""


# --- blocks inside hand-written pages ----------------------------------------------------------------------------------
def headline(r: Results) -> str:
    """The README's headline results: a few lines, every number from the JSON."""
    a, s, starts = r["ablation"], r["sanity"], r["ablation_starts"]
    full, out = rationale(a, "full"), rationale(a, "outcome")
    runs = [r[row["name"]] for row in starts["rows"]]
    seeds = lambda v: [x for res in runs for x in rationale(res, v)["per_seed"]]  # noqa: E731
    summ, bench = starts["summary"], r["bench_trainer"]
    shapes_margin, loop = r["ablation_shapes"]["goal"]["margin"], r["loop"]
    bullets = [
        f"**Does it learn?** On the CPU-sized reward ablation (a tiny random model of family `{a['family']}`, a shapes "
        f"world, {len(a['seeds'])} seeds per reward variant), full ViRL ends at rationale IoU {pm(full)} against "
        f"{pm(out)} for outcome-only ({full['mean'] - out['mean']:+.3f}) from the main SFT start; across "
        f"{summ['starts']} SFT starts full ViRL ends at {span(seeds('full'), 3)} in all {len(seeds('full'))} runs while "
        f"outcome-only ends anywhere between {min(seeds('outcome')):.3f} and {max(seeds('outcome')):.3f} (margin "
        f"{summ['margin_mean']:+.3f} ± {summ['margin_std_over_starts']:.3f}; goal at the start level: "
        f"{met(summ['goal_at_start_level'])}). On a task where the model must look to answer, outcome-only learns to "
        f"look too (margin {shapes_margin:+.3f}).",
        *matrix_bullets(r),
        f"**The rationale reward alone** raises the sampled crop IoU by {s['rise']:+.3f} in {s['rl']['steps']} steps "
        f"from the main start.",
        f"**Speed:** a virl-train GRPO step takes {bench['ours']['step_s'] / bench['trl']['step_s']:.2f}x the time of "
        f"TRL's `GRPOTrainer` on the same tiny model and batch.",
        f"**The review loop:** the queue's top-k precision on deliberately corrupted demo chains is "
        f"{loop['mean_precision_at_k']:.2f} (mean of {len(loop['runs'])} seeds).",
    ]  # fmt: skip
    return "\n".join(textwrap.fill(b, 116, initial_indent="- ", subsequent_indent="  ", break_on_hyphens=False)
                     for b in bullets)


def ci(stat: dict[str, Any]) -> str:
    """A paired difference as ``+0.123 [+0.045, +0.201]`` (its mean and 95 % CI)."""
    lo, hi = stat["ci95"] if stat["ci95"] else (math.nan, math.nan)
    return f"{stat['mean']:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def _d_against_a(t: dict[str, Any], metric: str, a_is: str = " for outcome-only") -> str:
    """``0.568 against 0.535 for outcome-only (paired +0.033 [-0.004, +0.074])``: (d)'s and (a)'s means of ``metric``
    and their paired difference, from a matrix result."""
    v = t["variants"]
    return (f"{v['full']['metrics'][metric]['mean']:.3f} against {v['outcome']['metrics'][metric]['mean']:.3f}{a_is}"
            f" (paired {ci(t['paired']['d_vs_a'][metric])})")


def matrix_bullets(r: Results) -> list[str]:
    """Headline bullets of the matrices (``benchmarks/matrix.py``) whose JSON is present."""
    out = []
    if "credit" in r:
        c = r["credit"]
        v, d_c = c["variants"], c["paired"]["d_vs_c"]
        n = len(v["full"]["metrics"]["wasted_rate"]["per_run"])
        out.append(
            f"**Per-action credit** (a task whose SFT starts waste "
            f"{statistics.fmean(s['metrics']['wasted_rate'] for s in c['starts']):.0%} of their crops, {c['settings']['starts']} SFT starts x {len(c['settings']['seeds'])} RL seeds): full ViRL "
            f"ends at a wasted-action rate of {v['full']['metrics']['wasted_rate']['mean']:.3f} against "
            f"{v['shaping']['metrics']['wasted_rate']['mean']:.3f} with step shaping only (paired d − c "
            f"{ci(d_c['wasted_rate'])}, 95 % CI over {n} pairs), accuracy {v['full']['metrics']['accuracy']['mean']:.3f}"
            f" vs {v['shaping']['metrics']['accuracy']['mean']:.3f}; goal: {met(c['goal']['met'])}.")
    latest_first = "two_hop_first30" if "two_hop_first30" in r else "two_hop_first"  # the longer-RL rerun, if run
    for name in ("two_hop", latest_first):
        if name not in r:
            continue
        t = r[name]
        hits = span([s["metrics"]["ordered_chain_hit@0.5"] for s in t["starts"]], 3)
        if name == "two_hop":
            out.append(f"**Two-box chains:** SFT starts reach ordered-chain hit@0.5 {hits}; full ViRL ends at rationale "
                       f"IoU {_d_against_a(t, 'rationale')}; goal: {met(t['goal']['met'])}.")
        else:
            out.append(f"**Two-box chains, first hop skipped** (SFT starts whose first crop is often on an empty place, "
                       f"answer kept; ordered-chain hit@0.5 {hits}): full ViRL ends at step 1 IoU "
                       f"{_d_against_a(t, 'step_iou@1')}, rationale IoU {_d_against_a(t, 'rationale', '')}; goal: "
                       f"{met(t['goal']['met'])}.")
    return out


def interop_table(r: Results) -> str:
    """Reward cost per completion of each engine's adapter (``benchmarks/bench_interop.py``)."""
    b = r["bench_interop"]
    rows = [[row["engine"], f"{row['cpu_ms_per_completion']:.3f}", f"{row['ms_per_completion']:.3f}",
             f"{row['cpu_ratio_to_score']:.2f}", f"{row['agree']:,} / {row['n']:,}"] for row in b["rows"]]
    return (md_table(["engine", "CPU ms / completion", "wall ms / completion", "CPU × virl-train score",
                      "totals equal to the log"], rows)
            + f"\n\n{b['episodes']:,} logged episodes, preset `{b['preset']}`, convention `{b['convention']}`, median "
            f"of {b['repeats']} runs; {b['cpu_count']} CPUs at load {b['load_average_1min']:.1f} (wall time grows "
            "with the load, CPU time much less).")


def bench_plan_table(r: Results) -> str:
    """The GQA planner's driver memory against input size (``benchmarks/bench_plan.py``)."""
    b = r["bench_plan"]
    rows = [[f"{row['questions']:,}", f"{row['input_mb']:,.0f}", row["way"], f"{row['seconds']:.1f}",
             f"{row['peak_mb']:,.0f}", f"{row['growth_mb']:,.0f}",
             f"{row['index_mb']:,.0f}" if "index_mb" in row else "–",
             f"{row['second_process_peak_mb']:,.0f}" if row.get("second_process_peak_mb") else "–"]
            for row in b["rows"]]  # fmt: skip
    grown = ", ".join(f"{row['growth_mb']:,.0f}" for row in b["rows"] if row["way"] == "streamed")
    whole = ", ".join(f"{row['growth_mb']:,.0f}" for row in b["rows"] if row["way"] == "whole files")
    return (md_table(["questions", "input MB", "planning", "seconds", "peak MB", "growth over imports MB",
                      "index on disk MB", "scene graphs indexer peak MB"], rows)
            + f"\n\nGrowth of the streamed planner: {grown} MB; of parsing the files whole: {whole} MB (input x"
            f"{b.get('input_ratio', 1):.0f}). Load average {b['load_average'][0]:.1f} while it ran (seconds are "
            f"inflated by other work; memory is not).")


def loop_table(r: Results) -> str:
    """The review queue's precision per seed (``benchmarks/queue_loop.py``): k = the number of corrupted records."""
    runs = r["loop"]["runs"]
    rows = [[str(run["seed"]),
             f"{run['corrupted']} ({run['by_kind'].get('shifted_box', 0)} / {run['by_kind'].get('missing_step', 0)})",
             f"{run['precision_at_k']:.2f}", f"{run['recall_at_2k']:.2f}",
             ", ".join(map(str, run["missed_ranks"])) or "–"] for run in runs]  # fmt: skip
    rows.append(["mean", "", f"**{r['loop']['mean_precision_at_k']:.2f}**",
                 f"{statistics.fmean(run['recall_at_2k'] for run in runs):.2f}", ""])  # fmt: skip
    k = runs[0]["corrupted"]
    return md_table(["seed", "corrupted (shifted / missing)", f"top-{k} precision", f"recall in the top {2 * k}",
                     f"corrupted records ranked below {k}"], rows)  # fmt: skip


def sft_starts_table(r: Results) -> str:
    """The SFT starts tried on the way to the ablation's start (``docs/assets/sft_starts.json``, with its provenance)."""

    def cell(values: list[float], bold: bool) -> str:
        text = ", ".join(f3(v) for v in values)
        return f"**{text}**" if bold else text

    rows = []
    for row in r["sft_starts"]["rows"]:
        bold = row.get("chosen", False)
        pairs = ", ".join(f"{f3(p)} / {f3(c)}" for p, c in zip(row["pixels"], row["constant"]))
        if "train_split" in row:
            pairs += f" (train split: {f3(row['train_split']['pixels'])} / {f3(row['train_split']['constant'])})"
        rows.append([row["start"], f"**{pairs}**" if bold else pairs, cell(row["hit"], bold)])
    return md_table(["SFT start", "pixels / constant", "hit@0.5"], rows) + f"\n\n{r['sft_starts']['note']}"


# --- learning proof II: per-action credit and two-hop chains (benchmarks/matrix.py) -----------------------------------
def credit_section(r: Results) -> str:
    """The wander task: does per-action credit (d) cut wasted actions beyond step shaping (c)?"""
    import matrix

    return ("One shape per image; the SFT references waste actions with the answer kept (a *redundant* repeat of the "
            "rationale crop after it, an *erroneous* crop of the empty opposite cell before it), `env.max_actions` 3. "
            "Under (b) a repeated crop leaves R_rat unchanged, so it costs nothing; (c)'s step shaping gives a repeated "
            "or empty crop r_k = 0, below its group's mean step credit; (d) adds its label's credit (−β_red, −β). "
            "Paired "
            "differences over (start, seed) pairs with a 95 % bootstrap CI (BCa).\n\n" + matrix.markdown(r["credit"])
            + "\n\n" + credit_reading(r["credit"]) + "\n\n"
            + figure("credit", "training curves: actions per episode and the three label rates per variant"))


def credit_reading(c: dict[str, Any]) -> str:
    """What the wander matrix shows, every number from its JSON: where each kind of wasted action went, held out
    (greedy) and in the sampled training episodes (first vs last 10 steps, mean over runs)."""
    from matrix import LETTER
    v, start = c["variants"], c["starts"]
    s_red = statistics.fmean(s["metrics"]["redundant_rate"] for s in start)
    s_err = statistics.fmean(s["metrics"]["erroneous_rate"] for s in start)
    rows = []
    for name, var in v.items():
        cur = var["curves"]
        rows.append([f"({LETTER[name]}) {name}", f"{var['metrics']['redundant_rate']['mean']:.3f}",
                     f"{var['metrics']['erroneous_rate']['mean']:.3f}",
                     f"{mean_window(cur['actions/redundant_rate'], True):.2f} → "
                     f"{mean_window(cur['actions/redundant_rate'], False):.2f}",
                     f"{mean_window(cur['actions/erroneous_rate'], True):.2f} → "
                     f"{mean_window(cur['actions/erroneous_rate'], False):.2f}"])  # fmt: skip
    d_c = c["paired"]["d_vs_c"]
    return (f"**Where the wasted actions went.** The SFT starts' held-out redundant and erroneous rates are "
            f"{s_red:.3f} and {s_err:.3f}.\n\n"
            + md_table(["variant", "redundant (held out)", "erroneous (held out)", "redundant, sampled: first → last "
                        "10 steps", "erroneous, sampled: first → last 10 steps"], rows)
            + f"\n\nPaired (d) − (c): redundant {ci(d_c['redundant_rate'])}, erroneous "
            f"{ci(d_c['erroneous_rate'])}, accuracy {ci(d_c['accuracy'])}. Step shaping already gives every action "
            "its own token credit: r_k = Φ_k − Φ_{k−1} is 0 for an action that adds no coverage, below the mean of "
            "the group's actions once normalized (Â_k), so (c) pushes down the same actions (d)'s labels do; (d) "
            "adds −β_red / −β on top of that 0.")




def two_hop_section(r: Results) -> str:
    """The two-hop task: an ordered two-box chain (the named shape, then its neighbour)."""
    import matrix

    return ("\"What colour is the shape right of / left of / above / below the <named shape>?\" on 2-3 shapes: the "
            "chain is the named shape, then its neighbour. `step_iou@1` / `@2`: how well each chain step was looked "
            "at; `ordered_chain_hit@0.5`: every step hit, in chain order; `order_rate`: of the episodes that hit "
            "both, those in order.\n\n" + matrix.markdown(r["two_hop"])
            + "\n\n" + two_hop_reading(r["two_hop"]) + "\n\n" + figure("two_hop", "training curves per variant"))


def decoy_kind(t: dict[str, Any]) -> str:
    """The decorative-reference kind a matrix result's SFT starts were trained with (``centre`` before it was kept)."""
    return t.get("settings", {}).get("sft_decoy_kind") or t["starts"][0].get("recipe", {}).get("decoy_kind", "centre")


def two_hop_first_section(r: Results, name: str = "two_hop_first") -> str:
    """The two-hop task from starts that skip only the first hop (``--sft-decoy-kind first``), result ``name``."""
    import matrix

    t = r[name]
    return (f"The same task from other SFT starts: {t['settings']['sft_decoys']:.0%} of their references skip the first "
            "hop and keep the rest (`--sft-decoy-kind first`): the first crop goes to an empty place (the first box "
            "mirrored through the image centre, IoU 0 with every rationale box, labelled erroneous), the second to "
            "the true second box, and the answer is the gold one. So the answer does not depend on the first crop: "
            "outcome-only RL has nothing to pay it for, and only the process and credit rewards do. "
            f"{t['settings']['starts']} SFT starts x {len(t['settings']['seeds'])} RL seeds, "
            f"{t['settings']['rl_steps']} RL steps per run.\n\n"
            + matrix.markdown(t) + "\n\n" + two_hop_reading(t) + "\n\n"
            + figure(name, "training curves per variant, first hop skipped"))


def two_hop_reading(t: dict[str, Any]) -> str:
    """The two-hop matrix per SFT start, every number from its JSON: the start, then each variant's held-out
    rationale IoU and ordered hit@0.5 (mean over that start's RL seeds), then (d) − (a)."""
    from matrix import LETTER

    names = [n for n in ("outcome", "full") if n in t["variants"]]
    rows = []
    for s in t["starts"]:
        row = [f"seed {s['sft_seed']}", f"{s['metrics']['rationale']:.3f} / {s['metrics']['ordered_chain_hit@0.5']:.3f}"]
        mine = {}
        for n in names:
            var = t["variants"][n]
            idx = [i for i, run in enumerate(var["runs"]) if run["start"] == s["sft_seed"]]
            rat = [var["metrics"]["rationale"]["per_run"][i] for i in idx]
            hit = [var["metrics"]["ordered_chain_hit@0.5"]["per_run"][i] for i in idx]
            mine[n] = rat
            row.append(f"{statistics.fmean(rat):.3f} / {statistics.fmean(hit):.3f}" if idx else "–")
        if len(names) == 2 and mine["outcome"] and len(mine["outcome"]) == len(mine["full"]):
            diffs = [d - a for d, a in zip(mine["full"], mine["outcome"])]
            row.append(f"{statistics.fmean(diffs):+.3f} ({', '.join(f'{x:+.3f}' for x in diffs)})")
        else:
            row.append("–")
        rows.append(row)
    head = ["SFT start", "start: rationale IoU / ordered hit@0.5",
            *(f"({LETTER[n]}) {n}: rationale IoU / ordered hit@0.5" for n in names), "(d) − (a) rationale IoU (per seed)"]
    ran = ", ".join(f"({LETTER[n]}) {n}" for n in t["variants"])
    out = (f"**Per SFT start** (held out, mean over the start's RL seeds; variants run: {ran}):\n\n"
           + md_table(head, rows))
    if decoy_kind(t) == "first" and len(names) == 2:
        a, d = (t["variants"][n]["metrics"] for n in names)
        p = t["paired"]["d_vs_a"]
        acc, step1, step2, err = ([s["metrics"][k] for s in t["starts"]]
                                  for k in ("accuracy", "step_iou@1", "step_iou@2", "erroneous_rate"))
        out += (f"\n\n**What each reward pays for here.** The starts answer {span(acc, 3)} of the held-out questions "
                f"right; {span(err, 3)} of their crops are erroneous, their step 1 IoU is {span(step1, 3)} and their "
                f"step 2 IoU {span(step2, 3)}. After RL, step 1 IoU: (a) {a['step_iou@1']['mean']:.3f}, (d) "
                f"{d['step_iou@1']['mean']:.3f} (paired d − a {ci(p['step_iou@1'])}); step 2 IoU: (a) "
                f"{a['step_iou@2']['mean']:.3f}, (d) {d['step_iou@2']['mean']:.3f}; erroneous rate: (a) "
                f"{a['erroneous_rate']['mean']:.3f}, (d) {d['erroneous_rate']['mean']:.3f} (paired "
                f"{ci(p['erroneous_rate'])}); accuracy: (a) {a['accuracy']['mean']:.3f}, (d) "
                f"{d['accuracy']['mean']:.3f} (paired {ci(p['accuracy'])}).")
        curves = {n: t["variants"][n].get("curves", {}).get("actions/erroneous_rate") for n in names}
        if all(c and len(c) >= 20 for c in curves.values()):
            moved = "; ".join(f"({LETTER[n]}) {statistics.fmean(c[:10]):.3f} → {statistics.fmean(c[-10:]):.3f}"
                              for n, c in curves.items())
            out += (f" The sampled episodes' erroneous rate during RL (mean over runs, first → last 10 steps): {moved}.")
        few = {n: sum(x < 1.5 for x in t["variants"][n]["metrics"]["actions_per_episode"]["per_run"]) for n in names}
        if any(few.values()):
            runs = {n: len(t["variants"][n]["metrics"]["actions_per_episode"]["per_run"]) for n in names}
            out += (" Runs whose held-out episodes fell to about one crop (actions per episode < 1.5: one hop of the "
                    "two no longer looked at): " + "; ".join(f"({LETTER[n]}) {few[n]} of {runs[n]}" for n in names) + ".")
        adv = {n: t["variants"][n].get("curves", {}).get("adv/erroneous") for n in names}
        if all(adv.values()):
            pushed = "; ".join(f"({LETTER[n]}) {statistics.fmean(c):+.3f}" for n, c in adv.items())
            out += (" The mean token advantage on the erroneous crops' tokens (`adv/erroneous`, mean over steps and "
                    f"runs; negative: the update pushes those crops down): {pushed}.")
    elif "outcome" in t["variants"]:
        a = t["variants"]["outcome"]["metrics"]
        acc = [s["metrics"]["accuracy"] for s in t["starts"]]
        step1 = [s["metrics"]["step_iou@1"] for s in t["starts"]]
        out += (f"\n\n**What outcome-only rewards here.** The starts answer {span(acc, 3)} of the held-out questions "
                f"right and (a) ends at {a['accuracy']['mean']:.3f}: a start whose crops miss answers less often, so "
                "the answer reward alone pays for looking at the right place. A decorative reference moves both hops "
                f"of its chain at once, so that pays for the first hop too: (a)'s step 1 IoU goes {span(step1, 3)} → "
                f"{a['step_iou@1']['mean']:.3f}, with no process reward. A start that skips only the first hop and still "
                "looks where the answer is (`--sft-decoy-kind first`) gives the answer reward nothing to correct: the "
                "next section.")
    return out
