"""benchmarks/ablation_starts.py: the ablation's margin across SFT starts, computed from learning.py's results."""

from __future__ import annotations

import importlib.util
import json
import statistics
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def starts():
    sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("ablation_starts", REPO / "benchmarks" / "ablation_starts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _result(outcome: list[float], full: list[float], drop: float, start_iou: float = 0.7, seed: int | None = 1,
            decoys: float = 0.475) -> dict:
    """The part of a learning.py result that the summary reads, shaped as learning.py writes it."""

    def metric(vals):
        return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals), "per_seed": vals}

    trained = {"steps": 1000, "decoys": decoys, "decoy_kind": "centre"} | ({} if seed is None else {"seed": seed})
    return {
        "sft": {"metrics": {"accuracy": 0.98, "probe_drop": drop, "rationale": start_iou},
                "sight": {"pixels": {"hit_rate@0.5": 0.71}}, "trained": trained},
        "variants": {v: {"metrics": {"rationale": metric(vals)}, "seeds": [0, 1, 2],
                         "curves": {"diag/crop_iou": [0.0] * 90 + [statistics.fmean(vals) - 0.1] * 10}}
                     for v, vals in (("outcome", outcome), ("full", full))},
        "sft_decoys": decoys, "sft_seed": seed,
    }  # fmt: skip


def test_the_margin_is_summarised_over_starts_and_over_start_seed_pairs(starts):
    a = _result([0.86, 0.87, 0.88], [0.97, 0.98, 0.99], drop=0.15, seed=None)  # an older start: no seed in sft.json
    b = _result([0.90, 0.93, 0.96], [0.97, 0.97, 0.97], drop=0.28, seed=1)
    c = _result([0.80, 0.80, 0.83], [0.95, 0.96, 0.97], drop=0.10, seed=2)
    rows = [starts.start_row(r, n) for r, n in ((a, "s0"), (b, "s1"), (c, "s2"))]
    assert rows[0]["sft_seed"] is None and rows[1]["sft_seed"] == 1
    assert rows[0]["margin"] == pytest.approx(0.11) and rows[1]["margin"] == pytest.approx(0.04)
    assert rows[2]["margin"] == pytest.approx(0.15)
    assert rows[1]["paired_std"] == pytest.approx(0.03)  # per-seed diffs 0.07 / 0.04 / 0.01
    assert rows[1]["outcome_sampled"] == pytest.approx(0.83) and rows[1]["full_sampled"] == pytest.approx(0.87)
    summary = starts.summarize(rows)
    margins = [r["margin"] for r in rows]
    assert summary["margin_mean"] == pytest.approx(statistics.fmean(margins))
    assert summary["margin_std_over_starts"] == pytest.approx(statistics.stdev(margins))
    assert summary["pairs"] == 9 and summary["starts_with_margin_0.1"] == 2
    # mean 0.1 but std over starts 0.056: the goal fails at the start level although two starts pass 0.1
    assert summary["goal_at_start_level"] is False
    # a start whose answers need its crop more (probe drop) lets outcome-only gain more
    assert summary["probe_drop_vs_outcome_gain_r"] > 0.9
    table = starts.markdown(rows, summary)
    assert table.count("\n") == 5 and "| s1 | 0.475 | 1 |" in table and "+0.040 | 0.030 | 0.830 | 0.870 |" in table
    assert all(line.count("|") == len(starts.COLUMNS) + 2 for line in table.splitlines())
    assert f"**{summary['margin_mean']:+.3f} ± {summary['margin_std_over_starts']:.3f}**" in table
    same = [starts.start_row(_result([0.8] * 2 + [0.81], [0.95] * 3, drop=d), f"s{i}") for i, d in enumerate((0.1, 0.2))]
    assert starts.summarize(same)["goal_at_start_level"] is True
    assert starts.summarize(same[:1])["goal_at_start_level"] is False  # one start: no spread to beat


def test_the_cli_writes_the_json_and_rejects_a_result_without_both_variants(starts, tmp_path, capsys):
    paths = []
    for i, drop in enumerate((0.15, 0.28)):
        paths.append(tmp_path / f"start{i}.json")
        paths[-1].write_text(json.dumps(_result([0.86, 0.87, 0.88], [0.96, 0.97, 0.98 - i / 50], drop=drop)))
    out = tmp_path / "starts.json"
    assert starts.main([*map(str, paths), "--json", str(out)]) == 0
    written = json.loads(out.read_text())
    assert [r["name"] for r in written["rows"]] == ["start0", "start1"]
    assert written["summary"]["probe_drop_vs_outcome_gain_r"] is None  # under 3 starts
    assert "margin over 2 starts: +0.097" in capsys.readouterr().out
    broken = _result([0.8] * 3, [0.9] * 3, drop=0.1)
    no_curves = _result([0.8] * 3, [0.9] * 3, drop=0.1)
    del no_curves["variants"]["full"]["curves"]  # older results: the column is left empty
    assert starts.start_row(no_curves, "old")["full_sampled"] is None
    del broken["variants"]["outcome"]
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(SystemExit):
        starts.main([str(tmp_path / "broken.json"), "--json", str(out)])
    assert "no outcome variant" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(SystemExit):
        starts.main([str(tmp_path / "bad.json")])
    assert "not a readable learning.py result" in capsys.readouterr().err
