"""benchmarks/matrix.py: the reward-preset matrix (starts x seeds x presets) at --quick size, its paired bootstrap
statistics recomputed from the per-run values, and the degenerate cases of the statistics."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("accelerate")
pytest.importorskip("scipy")

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def matrix():
    sys.path.insert(0, str(REPO / "benchmarks"))
    import matrix  # by its own name, as the --jobs workers import it

    return matrix


def test_paired_statistics_handle_the_degenerate_cases_and_match_scipy(matrix):
    import numpy as np
    from scipy.stats import bootstrap

    assert matrix.paired_stat([])["mean"] is None and matrix.paired_stat([])["ci95"] is None
    one = matrix.paired_stat([0.3])
    assert one["mean"] == 0.3 and one["ci95"] is None and not one["excludes_0"] and one["n"] == 1
    flat = matrix.paired_stat([-0.2] * 4)
    assert flat["ci95"] == [-0.2, -0.2] and flat["excludes_0"] and flat["method"] == "zero variance"
    diffs = [0.05, -0.02, 0.11, 0.07, 0.01, 0.09]
    got = matrix.paired_stat(diffs)
    ci = bootstrap((np.array(diffs),), np.mean, n_resamples=9999, method="BCa",
                   rng=np.random.default_rng(matrix.CI_SEED)).confidence_interval
    assert got["ci95"] == pytest.approx([ci.low, ci.high]) and got["method"] == "BCa"
    assert got["ci95"][0] < got["mean"] < got["ci95"][1] and got == matrix.paired_stat(diffs)  # seeded: repeatable
    assert matrix.paired_stat([-d for d in diffs])["ci95"] == pytest.approx([-ci.high, -ci.low], abs=0.02)


def test_a_quick_matrix_writes_every_documented_key_and_the_paired_stats_recompute_from_the_runs(matrix, tmp_path):
    out_json, out_png = tmp_path / "credit.json", tmp_path / "credit.png"
    work = tmp_path / "work"
    argv = ["--task", "wander", "--quick", "--work", str(work), "--json", str(out_json), "--png", str(out_png)]
    assert matrix.main(argv) == 0  # 0 = every per-run metric and curve value finite
    result = json.loads(out_json.read_text())
    assert result["task"] == "wander" and result["quick"] and out_png.stat().st_size > 0
    assert set(result["variants"]) == set(matrix.VARIANTS)
    assert result["settings"]["sft_redundant"] == 0.6 and "env.max_actions=3" in result["settings"]["overrides"]
    assert set(result["settings"]["rewards"]) == set(matrix.VARIANTS)  # the reward configs, resolved per preset
    assert [s["sft_seed"] for s in result["starts"]] == [0, 1] and not any(s["reused"] for s in result["starts"])
    assert all(s["trained"]["extras"] == {"redundant": 0.6, "erroneous": 0.6} for s in result["starts"])
    for v in result["variants"].values():
        assert [(r["start"], r["seed"], r["reused"]) for r in v["runs"]] == [(0, 0, False), (0, 1, False),
                                                                             (1, 0, False), (1, 1, False)]
        for key in ("accuracy", "rationale", "actions_per_episode", "redundant_rate", "erroneous_rate",
                    "wasted_rate", "probe_drop"):
            m = v["metrics"][key]
            assert len(m["per_run"]) == 4 and math.isfinite(m["mean"]) and math.isfinite(m["std"])
        rates = (v["metrics"][k]["per_run"] for k in ("redundant_rate", "erroneous_rate", "wasted_rate"))
        for red, err, wasted in zip(*rates):
            assert wasted == pytest.approx(red + err)
        for key in matrix.PLOTTED:  # the training curves of the action counts and label rates, one value per step
            assert len(v["curves"][key]) == matrix.QUICK["rl_steps"]
        for key in ("adv/correct", "adv/redundant", "adv/erroneous"):  # where each credit label's advantage went
            assert len(v["curves"][key]) == matrix.QUICK["rl_steps"] and math.isfinite(v["curves"][key][0])
    # the paired entries: exactly a direct recomputation from the per-run values (same start, same seed)
    variants = result["variants"]
    for name, (x, y) in matrix.PAIRS.items():
        for key, stat in result["paired"][name].items():
            xs, ys = variants[x]["metrics"][key]["per_run"], variants[y]["metrics"][key]["per_run"]
            diffs = [a - b for a, b in zip(xs, ys)]
            want = matrix.paired_stat(diffs)
            assert stat["mean"] == pytest.approx(want["mean"]) and stat["n"] == 4
            assert stat["ci95"] == (pytest.approx(want["ci95"]) if want["ci95"] else None)
    assert set(result["paired"]["d_vs_c"]) >= {"wasted_rate", "accuracy"} and "rationale" in result["paired"]["d_vs_a"]
    goal = result["goal"]
    assert goal["d_wasted_le_half_c"] == (goal["d_wasted"] <= 0.5 * goal["c_wasted"])
    assert goal["d_minus_c_wasted_ci_excludes_0"] == result["paired"]["d_vs_c"]["wasted_rate"]["excludes_0"]
    assert "met" in goal and "| (d) full ViRL" in result["markdown"] and "d − c" in result["markdown"]
    assert matrix.markdown(result) == result["markdown"]
    # a second run reuses the starts and every RL run
    again = tmp_path / "again.json"
    assert matrix.main([*argv[:-4], "--json", str(again), "--png", str(out_png)]) == 0
    second = json.loads(again.read_text())
    assert all(s["reused"] for s in second["starts"]) and second["paired"] == result["paired"]
    assert all(r["reused"] for v in second["variants"].values() for r in v["runs"])  # no RL run done twice
    folders = sorted(p.name for p in (work / "rl").glob("*/*") if (p / "result.json").is_file())
    assert len(folders) == 4 * len(matrix.VARIANTS) and all(f.count("-") == 2 for f in folders)  # <v>-s<seed>-<key>


def test_runs_with_other_settings_get_their_own_folder_and_an_older_kept_run_is_found(matrix, tmp_path):
    """Two runs of the same start, preset and seed with another --rl-lr must not overwrite each other's result."""
    one, other = matrix.run_folder(tmp_path, "full", 0, "k1"), matrix.run_folder(tmp_path, "full", 0, "k2")
    assert one != other and one.name == "full-s0-k1"
    legacy = tmp_path / "full-s0"  # the name runs were kept under before
    legacy.mkdir()
    (legacy / "result.json").write_text(json.dumps({"key": "k1"}))
    assert matrix.run_folder(tmp_path, "full", 0, "k1") == legacy
    assert matrix.run_folder(tmp_path, "full", 0, "k2") == tmp_path / "full-s0-k2"


def test_a_summary_averages_only_the_curves_every_run_kept(matrix):
    """A run kept before the ``adv/<label>`` curves existed still summarizes with new ones: those curves are left out."""
    old = {"curves": {"reward/total": [0.0, 1.0]}}
    new = {"curves": {"reward/total": [1.0, 0.0], "adv/erroneous": [-1.0, -2.0]}}
    assert matrix.learning.mean_curves([old, new]) == {"reward/total": [0.5, 0.5]}
    assert matrix.learning.mean_curves([new, new])["adv/erroneous"] == [-1.0, -2.0]


def _runs(values: dict[str, list[float]], key: str, curves: tuple[str, ...]) -> dict[str, list[dict]]:
    """Runs shaped as the matrix keeps them: 2 starts x 2 seeds per variant, ``key`` set from ``values``, the rest 0."""
    pairs = [(0, 0), (0, 1), (1, 0), (1, 1)]
    return {v: [{"start": s, "seed": r, "wall_s": 1.0, "reused": False, "curves": {c: [0.0] for c in curves},
                 "metrics": {k: 0.0 for k in ("accuracy", "rationale", "wasted_rate")} | {key: x}}
                for (s, r), x in zip(pairs, vals)] for v, vals in values.items()}


def test_the_goals_read_the_means_and_the_paired_intervals(matrix):
    import learning

    metrics = ["accuracy", "rationale", "wasted_rate"]
    wasted = {"outcome": [0.6, 0.5, 0.6, 0.55], "process": [0.5] * 4, "shaping": [0.5, 0.45, 0.55, 0.5],
              "full": [0.1, 0.15, 0.2, 0.1]}
    runs = _runs(wasted, "wasted_rate", learning.CURVES)
    variants, pairs = matrix.summarize(runs, metrics), matrix.paired(runs, metrics)
    goal = matrix.goal_check("wander", variants, pairs, [])
    assert goal["d_wasted_le_half_c"] and goal["d_minus_c_wasted_ci_excludes_0"] and goal["met"]
    assert pairs["d_vs_c"]["wasted_rate"]["mean"] == pytest.approx(-0.3625)
    iou = {"outcome": [0.5, 0.7, 0.6, 0.65], "process": [0.8] * 4, "shaping": [0.8] * 4, "full": [0.7, 0.75, 0.8, 0.7]}
    runs = _runs(iou, "rationale", learning.CURVES)
    variants, pairs = matrix.summarize(runs, metrics), matrix.paired(runs, metrics)
    starts = [{"metrics": {"ordered_chain_hit@0.5": 0.62}}, {"metrics": {"ordered_chain_hit@0.5": 0.41}}]
    goal = matrix.goal_check("two-hop", variants, pairs, starts)
    assert goal["d_beats_a_by_0.1"] and goal["d_minus_a_rationale"] == pytest.approx(0.125)
    assert goal["starts_reach_0.5"] is False and goal["met"] is False  # one start misses the ordered hit rate
    md = matrix.markdown({"metrics": {"rationale": "rationale IoU"}, "starts": [], "variants": variants,
                          "paired": pairs, "goal": goal})
    assert "| d − a | " in md and "starts_reach_0.5: no" in md


def test_the_two_hop_task_gives_ordered_two_box_chains_its_sft_reference_walks_in_order(matrix, tmp_path):
    import learning
    from virl_train.data import load_split
    from virl_train.env import CropEnv
    from virl_train.matching import chain_order
    from virl_train.sft import reference_turns
    from PIL import Image

    data = learning.build_task(tmp_path, 40, task=matrix.TASKS["two-hop"].shapes)
    records = load_split(data, "train")
    assert records and all(len(r.chain) == 2 and r.question_type == "neighbour_color" for r in records)
    env = CropEnv("abs", max_actions=3)
    for rec in records[:5]:
        env.reset(Image.new("RGB", (112, 112)), rec.question)
        crops = [env.step(t).action.box for t in reference_turns(rec, env)[:-1]]
        assert chain_order(crops, rec.chain, (112, 112)).ordered_hit
        assert not chain_order(crops[::-1], rec.chain, (112, 112)).ordered_hit  # the other order does not count


def test_the_sft_recipe_takes_the_task_s_decoy_share_unless_given_and_keys_the_start_by_it(matrix):
    two_hop, wander = matrix.parse_args(["--task", "two-hop"]), matrix.parse_args(["--task", "wander"])
    assert two_hop.sft["sft_decoys"] == 0.475 and wander.sft["sft_decoys"] == 0.0
    given = matrix.parse_args(["--task", "two-hop", "--sft-decoys", "0.3", "--sft-decoy-kind", "whole"])
    assert given.sft["sft_decoys"] == 0.3
    recipes = [matrix.start_recipe(0, a) for a in (two_hop, given)]
    assert recipes[0]["decoy_kind"] == "centre" and recipes[1]["decoy_kind"] == "whole"
    assert matrix._key(recipes[0]) != matrix._key(recipes[1])  # another share is another start, never reused
    with pytest.raises(SystemExit):
        matrix.parse_args(["--task", "two-hop", "--sft-decoy-kind", "nowhere"])


def test_the_two_hop_reading_splits_each_variant_s_runs_by_their_start(matrix):
    import report_sections

    def var(rat, hit):
        runs = [{"start": s, "seed": k} for s in (0, 1) for k in (0, 1)]
        return {"runs": runs, "metrics": {"rationale": {"per_run": rat}, "ordered_chain_hit@0.5": {"per_run": hit}}}

    starts = [{"sft_seed": s, "metrics": {"rationale": 0.5 + s / 10, "ordered_chain_hit@0.5": 0.4 + s / 10,
                                          "accuracy": 0.7 + s / 10, "step_iou@1": 0.45 + s / 10}} for s in (0, 1)]
    t = {"starts": starts, "variants": {"outcome": var([0.2, 0.4, 0.6, 0.6], [0.1, 0.3, 0.5, 0.5]),
                                        "full": var([0.9, 0.9, 0.7, 0.5], [0.8, 0.8, 0.6, 0.4])}}
    t["variants"]["outcome"]["metrics"] |= {"accuracy": {"mean": 0.96}, "step_iou@1": {"mean": 0.88}}
    text = report_sections.two_hop_reading(t)
    assert "variants run: (a) outcome, (d) full" in text
    assert "answer 0.700-0.800 of the held-out questions right and (a) ends at 0.960" in text
    assert "step 1 IoU goes 0.450-0.550 → 0.880" in text
    lines = text.splitlines()
    assert "| seed 0 | 0.500 / 0.400 | 0.300 / 0.200 | 0.900 / 0.800 | +0.600 (+0.700, +0.500) |" in lines
    assert "| seed 1 | 0.600 / 0.500 | 0.600 / 0.500 | 0.600 / 0.500 | +0.000 (+0.100, -0.100) |" in lines


def test_the_two_hop_reading_of_starts_that_skip_the_first_hop(matrix):
    import report_sections

    def var(step1, err, acc, actions=(2.0, 2.0), adv=None):
        runs = [{"start": 0, "seed": k} for k in (0, 1)]
        per = {"rationale": [0.6, 0.7], "ordered_chain_hit@0.5": [0.5, 0.6], "actions_per_episode": list(actions)}
        means = {"step_iou@1": step1, "step_iou@2": 0.9, "erroneous_rate": err, "accuracy": acc}
        curves = {"actions/erroneous_rate": [0.4] * 10 + [0.3] * 40 + [err] * 10}
        return {"runs": runs, "metrics": {k: {"per_run": v} for k, v in per.items()}
                | {k: {"mean": v} for k, v in means.items()},
                "curves": curves | ({"adv/erroneous": adv} if adv else {})}

    start = {"sft_seed": 0, "recipe": {"decoy_kind": "first"},
             "metrics": {"rationale": 0.6, "ordered_chain_hit@0.5": 0.3, "accuracy": 0.99, "step_iou@1": 0.35,
                         "step_iou@2": 0.88, "erroneous_rate": 0.33}}
    stat = lambda m: {"mean": m, "ci95": [m - 0.1, m + 0.1]}  # noqa: E731
    t = {"starts": [start], "variants": {"outcome": var(0.4, 0.3, 0.98), "full": var(0.8, 0.1, 0.99)},
         "paired": {"d_vs_a": {"step_iou@1": stat(0.4), "erroneous_rate": stat(-0.2), "accuracy": stat(0.01)}}}
    assert report_sections.decoy_kind(t) == "first"
    text = report_sections.two_hop_reading(t)
    assert "**What each reward pays for here.** The starts answer 0.990 of the held-out questions right; 0.330" in text
    assert "step 1 IoU: (a) 0.400, (d) 0.800 (paired d − a +0.400 [+0.300, +0.500])" in text
    assert "erroneous rate: (a) 0.300, (d) 0.100 (paired -0.200 [-0.300, -0.100])" in text
    assert "first → last 10 steps): (a) 0.400 → 0.300; (d) 0.400 → 0.100." in text
    assert "What outcome-only rewards here" not in text  # the centre-decoy reading is for the other starts
    assert "fell to about one crop" not in text and "adv/erroneous" not in text  # no collapse; runs kept before adv/
    # a run that dropped the second hop is counted; the erroneous crops' mean token advantage when the runs kept it
    t["variants"] = {"outcome": var(0.4, 0.3, 0.98, (1.0, 2.0), [-0.2, -0.4]), "full": var(0.8, 0.1, 0.99, adv=[-1.0])}
    text = report_sections.two_hop_reading(t)
    assert "(actions per episode < 1.5: one hop of the two no longer looked at): (a) 1 of 2; (d) 0 of 2." in text
    assert "negative: the update pushes those crops down): (a) -0.300; (d) -1.000." in text
