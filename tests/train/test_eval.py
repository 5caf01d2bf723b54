"""virl_train.eval: hand-computed metrics, the probe transforms, report files; ``evaluate`` end to end (tiny policy)."""

from __future__ import annotations

import dataclasses
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from tests.conftest import make_record
from virl_data.core.errors import ConfigError
from virl_data.core.types import Box
from virl_train.env import CropEnv
from virl_train.eval import (
    EvalError,
    EvalReport,
    context_agnosticism,
    full_image,
    grounding_metrics,
    random_same_size,
    render_report,
    score_episodes,
    write_report,
)
from virl_train.matching import MatchConfig
from virl_train.rewards import RewardConfig, score_record
from virl_train.types import Action, ActionKind, Episode

REPO = Path(__file__).resolve().parents[2]
A, B, FAR = (0, 0, 10, 10), (50, 50, 60, 60), (80, 80, 90, 90)
SIZE = (100, 100)


def record(i: int = 0, chain=(A, B), **kw):
    return make_record(i, chain=[[c] for c in chain], size=SIZE, **kw)


def crop(turn: int, box) -> Action:
    return Action(turn, ActionKind.CROP, box=Box(*box))


def invalid(turn: int) -> Action:
    return Action(turn, ActionKind.INVALID, error="no_action")


def episode(rec, actions=(), answer="red", n_turns=None) -> Episode:
    turns = len(actions) + (answer is not None) if n_turns is None else n_turns
    return Episode(rec.id, actions=tuple(actions), answer=answer, n_turns=turns, format_ok=True)


def mixed():
    """ep0: hit on step 0 + its duplicate, right; ep1: malformed + a crop on nothing, wrong; ep2: no action, right."""
    recs = [record(i) for i in range(3)]
    eps = [
        episode(recs[0], [crop(0, A), crop(1, A)]),
        episode(recs[1], [invalid(0), crop(1, FAR)], answer="blue"),
        episode(recs[2]),
    ]
    return eps, recs


def test_hand_computed_mix():
    m = grounding_metrics(*mixed())
    expected = {
        # 4 visual actions: correct, redundant (duplicate), erroneous (malformed), erroneous (no overlap)
        "n_episodes": 3, "n_applicable": 3, "n_actions": 4, "n_crops": 3, "n_steps": 6,
        "correct_rate": 0.25, "redundant_rate": 0.25, "erroneous_rate": 0.5, "invalid_rate": 0.25,
        "mean_fidelity": 0.5, "hit_rate@0.3": 0.5, "hit_rate@0.5": 0.5,
        "accuracy": 2 / 3, "answered_rate": 1.0, "format_rate": 2 / 3,
        # R_rat: ep0 ½(0.5 + 1) = 0.75, ep1 0, ep2 0 (no action)
        "rationale": 0.25, "rationale_recall": 0.5 / 3, "rationale_precision": 1 / 3,
        "gt_coverage": 0.5 / 3,  # ep0 covers 1 of 2 steps
        "tool_use_rate": 2 / 3, "actions_per_episode": 4 / 3, "crops_per_episode": 1.0,
        "turns_per_episode": 7 / 3,  # 3 + 3 + 1
        "rarr": 1 / 3, "rawr": 1 / 3,  # ep0 right for the right reason, ep2 right with no look at all
        # totals (full preset): 1 + 0.5·0.75 = 1.375; 0 − 0.2 (malformed → R_fmt = −1); 1 (gate open, R_rat = 0)
        "reward": (1.375 - 0.2 + 1.0) / 3,
        "context_agnosticism": 0.0, "n_context_pairs": 0,  # every record has its own image
    }
    for key, value in expected.items():
        assert m[key] == pytest.approx(value), key


def test_same_code_path_as_the_reward():
    eps, recs = mixed()
    cfg = RewardConfig.preset("process")
    m = grounding_metrics(eps, recs, cfg)
    totals = [score_record(e, r, cfg).total for e, r in zip(eps, recs)]
    assert m["reward"] == pytest.approx(np.mean(totals))
    assert [s.breakdown for s in score_episodes(eps, recs, cfg)] == [score_record(e, r, cfg) for e, r in zip(eps, recs)]
    # the matching config flows through: by coverage a crop holding all of step 0 is a hit, by IoU it is not
    rec = record(0)
    big = [episode(rec, [crop(0, (0, 0, 30, 30))])]
    assert grounding_metrics(big, [rec])["hit_rate@0.5"] == 0.0  # IoU = 100/900
    by_coverage = RewardConfig(match=MatchConfig(overlap="coverage"))
    assert grounding_metrics(big, [rec], by_coverage)["hit_rate@0.5"] == 1.0


def test_right_answer_with_wrong_crops_is_the_wrong_reason():
    rec = record(0, chain=(A,))
    wrong_look = episode(rec, [crop(0, FAR)])
    right_look = episode(rec, [crop(0, A)])
    m = grounding_metrics([wrong_look], [rec])
    assert (m["accuracy"], m["rarr"], m["rawr"], m["erroneous_rate"]) == (1.0, 0.0, 1.0, 1.0)
    m = grounding_metrics([right_look], [rec])
    assert (m["accuracy"], m["rarr"], m["rawr"], m["gt_coverage"]) == (1.0, 1.0, 0.0, 1.0)
    # a wrong answer is neither, whatever the crops
    m = grounding_metrics([episode(rec, [crop(0, A)], answer="blue")], [rec])
    assert (m["rarr"], m["rawr"], m["rationale"]) == (0.0, 0.0, 1.0)
    # the reason threshold is on R_rat: one exact crop on a two-step chain has R_rat = 0.75
    rec2 = record(1)
    ep2 = episode(rec2, [crop(0, A)])
    assert grounding_metrics([ep2], [rec2])["rarr"] == 1.0
    assert grounding_metrics([ep2], [rec2], reason_threshold=0.8)["rawr"] == 1.0


def test_no_actions_and_no_episodes_are_finite_with_their_denominators():
    recs = [record(i) for i in range(2)]
    m = grounding_metrics([episode(r, answer=None, n_turns=1) for r in recs], recs)
    assert all(math.isfinite(v) for v in m.values())
    assert (m["n_actions"], m["correct_rate"], m["hit_rate@0.5"], m["mean_fidelity"]) == (0, 0.0, 0.0, 0.0)
    assert (m["accuracy"], m["answered_rate"], m["format_rate"], m["tool_use_rate"]) == (0.0, 0.0, 0.0, 0.0)
    empty = grounding_metrics([], [])
    assert empty["n_episodes"] == 0 and all(v == 0.0 for v in empty.values())


def test_unscorable_gold_is_left_out_of_accuracy():
    ok, bad = record(0), dataclasses.replace(record(1), answer_type="count")  # gold "red" is not a count
    m = grounding_metrics([episode(ok), episode(bad)], [ok, bad])
    assert (m["n_applicable"], m["accuracy"], m["answered_rate"]) == (1, 1.0, 1.0)


def test_episodes_and_records_must_pair_up():
    eps, recs = mixed()
    with pytest.raises(EvalError, match="3 episodes but 2 records"):
        grounding_metrics(eps, recs[:2])
    with pytest.raises(EvalError, match="episode 0 is of record"):
        grounding_metrics(eps, recs[::-1])
    with pytest.raises(EvalError, match="expected an Episode"):
        grounding_metrics(["red"], recs[:1])


def test_context_agnosticism_pairs_different_questions_on_one_image():
    C = (0, 0, 10, 20)  # IoU(A, C) = 0.5
    same = {"path": "img/shared.png"}
    recs = [
        record(0, chain=(A,), question="q1", **same),
        record(1, chain=(B,), question="q2", **same),
        record(2, chain=(A,), question="q1", **same),  # the same question as record 0: not a pair with it
        record(3, chain=(A,), question="q3"),  # another image
        record(4, chain=(B,), question="q4", **same),  # no crop: pairs with nobody
    ]
    crops = [[A], [A], [C], [A], []]
    eps = [episode(r, [crop(0, c) for c in cs]) for r, cs in zip(recs, crops)]
    m = grounding_metrics(eps, recs)
    # pairs (0, 1): IoU(A, A) = 1, (1, 2): IoU(A, C) = 0.5; (0, 2) same question, 3 other image, 4 no crops
    assert (m["context_agnosticism"], m["n_context_pairs"]) == (pytest.approx(0.75), 2)
    # ground truth: (0,1) A vs B = 0, (0,4) A vs B = 0, (1,2) B vs A = 0, (1,4) B vs B = 1, (2,4) A vs B = 0
    assert (m["context_agnosticism_gt"], m["n_context_pairs_gt"]) == (pytest.approx(0.2), 5)
    # symmetric best match: A finds A (1); of A, B the best matches are 1 and 0 → ½(1 + 0.5)
    assert context_agnosticism([("i", "a", [Box(*A)]), ("i", "b", [Box(*A), Box(*B)])]) == (0.75, 1)
    same_places = [("i", "a", [Box(*A), Box(*B)]), ("i", "b", [Box(*B), Box(*A)])]
    assert context_agnosticism(same_places) == (1.0, 1) and context_agnosticism(same_places[:1]) == (0.0, 0)


# --- probe transforms ------------------------------------------------------------------------------------------------
def test_random_same_size_keeps_size_stays_inside_and_is_seeded():
    region, size = Box(30, 20, 120, 90), (100 + 30, 80)
    draws = [random_same_size(np.random.default_rng(7))(region, size) for _ in range(2)]
    assert draws[0] == draws[1]  # same seed, same box
    t = random_same_size(np.random.default_rng(0))
    boxes = [t(region, size) for _ in range(400)]
    assert all((b.w, b.h) == (90, 70) for b in boxes)
    assert all(0 <= b.x1 and b.x2 <= 130 and 0 <= b.y1 and b.y2 <= 80 for b in boxes)
    assert {b.x1 for b in boxes} == set(range(41)) and {b.y1 for b in boxes} == set(range(11))  # inclusive, uniform
    other = random_same_size(np.random.default_rng(1))
    assert [other(region, size) for _ in range(5)] != boxes[:5]
    assert t(Box(0, 0, 130, 80), size) == Box(0, 0, 130, 80)  # a full-image region has one place to go


def test_full_image_probe_shows_the_whole_image_at_its_own_size():
    assert full_image()(Box(5, 5, 20, 20), (64, 48)) == Box(0, 0, 64, 48)
    env = CropEnv("abs", min_pixels=28 * 28, max_pixels=28 * 28 * 64, region_transform=full_image())
    env.reset(Image.new("RGB", (200, 120)), "q")
    result = env.step("<crop>[28, 14, 84, 42]</crop>")
    assert result.action.box == Box(28, 14, 84, 42) and result.observation.frame == Box(0, 0, 200, 120)
    assert result.observation.image.size == env.view_size(200, 120)  # resized as the full image, not as the crop


def test_docstring_examples():
    import doctest

    import virl_train.eval as module

    assert doctest.testmod(module).failed == 0


def test_probe_env_shows_a_random_region_of_the_same_size():
    arr = np.random.default_rng(0).integers(0, 255, (120, 200, 3), dtype=np.uint8)
    image = Image.fromarray(arr, "RGB")
    small = {"min_pixels": 28 * 28, "max_pixels": 28 * 28 * 64}

    def frames(env):
        env.reset(image, "q")
        results = [env.step("<crop>[28, 14, 84, 42]</crop>") for _ in range(3)]
        return [(r.action.box, r.observation.frame, r.observation.image.tobytes()) for r in results]

    normal = frames(CropEnv("abs", **small))
    probed = frames(CropEnv("abs", region_transform=random_same_size(np.random.default_rng(3)), **small))
    again = frames(CropEnv("abs", region_transform=random_same_size(np.random.default_rng(3)), **small))
    assert probed == again
    for (box, frame, pixels), (pbox, pframe, ppixels) in zip(normal, probed):
        assert box == pbox == Box(28, 14, 84, 42)  # the action keeps the model's box
        assert (frame.w, frame.h) == (pframe.w, pframe.h)
    assert len({f for _, f, _ in probed}) > 1 and any(p != pp for (_, _, p), (_, _, pp) in zip(normal, probed))


# --- report ----------------------------------------------------------------------------------------------------------
def _report(probe: bool = True) -> EvalReport:
    eps, recs = mixed()
    m = grounding_metrics(eps, recs)
    pm = grounding_metrics([episode(r, e.actions, answer="blue") for r, e in zip(recs, eps)], recs) if probe else None
    rows = [{"record_id": r.id} for r in recs]
    return EvalReport(m, pm, {"eval": {"seed": 0}}, rows)


def test_report_files_are_written_and_readable(tmp_path):
    report = _report()
    assert report.probe_drop == pytest.approx(2 / 3)  # the probe run answered everything wrong
    json_path, png_path = write_report(report, tmp_path / "out")
    data = json.loads(json_path.read_text())
    assert json_path.name == "eval.json" and png_path.name == "eval.png"
    assert data["metrics"]["accuracy"] == pytest.approx(2 / 3) and data["probe"]["accuracy"] == 0.0
    assert data["probe_drop"] == pytest.approx(2 / 3)
    assert data["counts"] == {"n_episodes": 3, "n_applicable": 3, "n_actions": 4, "n_crops": 3, "n_steps": 6,
                              "n_context_pairs": 0, "n_context_pairs_gt": 0, "n_box_answers": 0,
                              "n_multistep": 3, "n_all_hit": 0}
    assert data["probe_counts"]["n_actions"] == 4 and "n_episodes" not in data["probe"]
    assert "n_episodes" not in data["metrics"] and data["config"] == {"eval": {"seed": 0}}
    assert [r["record_id"] for r in data["episodes"]] == [r["record_id"] for r in report.rows]
    with Image.open(png_path) as img:
        assert img.format == "PNG" and img.size[0] > 500
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["eval.json", "eval.png"]  # no temp files left
    assert "episodes" not in report.to_dict(rows=False)


def test_report_without_probe_and_the_table(tmp_path):
    report = _report(probe=False)
    assert report.probe_drop is None and report.to_dict()["probe"] is None
    json_path, png_path = write_report(report, tmp_path)
    assert json.loads(json_path.read_text())["probe_drop"] is None and png_path.stat().st_size > 0
    console = Console(record=True, width=120, file=io.StringIO())
    table = render_report(_report())
    assert [c.header for c in table.columns] == ["metric", "normal", "probe", "Δ"]
    assert table.row_count == len(report.metrics)
    console.print(table)
    text = console.export_text()
    assert "probe accuracy drop +0.667" in text and "n_episodes" in text and "-0.667" in text


# --- evaluate end to end (the real tiny policy, random weights) ------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_eval(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("virl_train.rollout", reason="virl_train/rollout.py is not written yet")
    policy_mod = pytest.importorskip("virl_train.policy", reason="virl_train/policy.py is not written yet")
    pytest.importorskip("virl_train.train", reason="virl_train.train (make_env) does not import yet")
    from virl_data.engines.pipeline import run_demo
    from virl_train.config import load_config
    from virl_train.data import ExampleSet

    out = tmp_path_factory.mktemp("demo")
    export = run_demo(out, n=8, image_size=64, console=Console(quiet=True))["HF export"]
    cfg = load_config(REPO / "configs" / "tiny_cpu.yaml",
                      [f"data.path={export}", "grpo.max_new_tokens=12", "env.max_actions=1"])
    examples = ExampleSet.load(export, "train", limit=4)
    return policy_mod.load_policy(cfg.model, seed=0), examples, cfg


def test_evaluate_end_to_end_with_the_tiny_policy(tiny_eval, tmp_path):
    from virl_train.eval import evaluate

    policy, examples, cfg = tiny_eval
    records = examples.records[:3]
    policy.model.train()
    report = evaluate(policy, records, examples.image, cfg, seed=0)
    assert policy.model.training  # evaluate ran in eval mode and gave the training mode back
    policy.model.eval()
    for m in (report.metrics, report.probe_metrics):  # a random model: garbage, but well-defined numbers
        assert m["n_episodes"] == len(records) and all(math.isfinite(v) for v in m.values())
        assert m["turns_per_episode"] >= 1 and m["actions_per_episode"] <= cfg.env.max_actions + 1
    assert report.probe_drop == pytest.approx(report.metrics["accuracy"] - report.probe_metrics["accuracy"])
    assert [r["record_id"] for r in report.rows] == [r.id for r in records]
    for row in report.rows:  # greedy: the first turn sees the same prompt in both runs, so acts the same
        first, probe_first = row["actions"][:1], row["probe"]["actions"][:1]
        assert [a["box"] for a in first] == [a["box"] for a in probe_first]
    assert report.config["eval"]["probe_kind"] == "random" and report.config["train"]["env"]["max_actions"] == 1
    json_path, _ = write_report(report, tmp_path)
    assert json.loads(json_path.read_text())["counts"]["n_episodes"] == len(records)
    images = [examples.image(i) for i in range(len(records))]
    plain = evaluate(policy, records, images, cfg, seed=0, probe=False)
    assert plain.metrics == report.metrics and plain.probe_metrics is None and plain.probe_drop is None  # seeded
    with pytest.raises(EvalError, match="no records"):
        evaluate(policy, [], [], cfg)
    with pytest.raises(EvalError, match="3 records but 2 images"):
        evaluate(policy, records, images[:2], cfg)


def test_probe_env_through_the_real_rollout_changes_what_the_model_sees(tiny_eval):
    """Teacher-forced turns: the probe keeps actions, answer and metrics, and only the crop's pixels change."""
    from virl_train.eval import make_probe_env
    from virl_train.rollout import rollout_episode
    from virl_train.train import make_env

    policy, examples, cfg = tiny_eval
    rec, image = examples[0], examples.image(0)
    w, h = make_env(cfg).view_size(*image.size)  # the model's (qwen25_abs_resized) pixels
    script = [f"<crop>[0, 0, {w // 2}, {h // 2}]</crop>", f"<answer>{rec.answer}</answer>"]
    runs = [
        rollout_episode(policy, env, rec, image, max_new_tokens=16, script=script)
        for env in (make_env(cfg), make_probe_env(cfg, seed=0, index=0), make_probe_env(cfg, seed=0, index=0))
    ]
    normal, probed = runs[:2]
    assert normal.episode.actions == probed.episode.actions and normal.episode.answer == probed.episode.answer
    assert grounding_metrics([normal], [rec]) == grounding_metrics([probed], [rec])
    crop_pixels = [r.images[1].pixel_values for r in runs]
    assert crop_pixels[0].shape == crop_pixels[1].shape  # same size of region
    assert not torch_equal(crop_pixels[0], crop_pixels[1]) and torch_equal(crop_pixels[1], crop_pixels[2])
    with pytest.raises(ConfigError, match="unknown probe"):
        make_probe_env(cfg, "blank")


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))
