"""virl_train.sft: reference trajectories in the model's own convention, played through the env, learned by SFT."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from PIL import Image  # noqa: E402
from rich.console import Console  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from tests.train.resume import Interrupt, assert_same_final_weights, interrupt_at  # noqa: E402
from virl_data.core import boxes  # noqa: E402
from virl_data.core.errors import ConfigError  # noqa: E402
from virl_data.engines.pipeline import run_demo  # noqa: E402
from virl_train.cli import app  # noqa: E402
from virl_train.config import load_config  # noqa: E402
from virl_train.data import ExampleSet  # noqa: E402
from virl_train.env import CropEnv  # noqa: E402
from virl_train.policy import load_policy  # noqa: E402
from virl_train.rewards import RewardConfig, score_record  # noqa: E402
from virl_train.sft import (  # noqa: E402
    centred_box, crop_text, decoy_box, decoy_rng, empty_box, extra_actions, model_box, reference_loss,
    reference_rollout, reference_turns, sft,
)
from virl_train.train import make_env  # noqa: E402
from virl_train.types import LabelKind  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def demo_export(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    return run_demo(out, n=24, image_size=112, console=Console(quiet=True))["HF export"]


def _cfg(data: Path, out: Path, *more: str):
    return load_config(REPO / "configs" / "shapes_learn.yaml",
                       [f"data.path={data}", f"run.out_dir={out}", "data.limit=6", "env.max_actions=3", *more])


@pytest.fixture
def record():
    from tests.conftest import make_record

    return make_record(1, size=(448, 336), chain=[[(100, 80, 230, 170)], [(300, 200, 350, 240), (360, 250, 400, 300)]])


@pytest.mark.parametrize("convention", ["qwen25_abs_resized", "qwen2_norm1000", "qwen3_norm1000", "rel_xyxy", "padded_square_rel", "abs"])
def test_reference_turns_parse_back_to_the_union_of_each_step(record, convention):
    env = CropEnv(convention, max_actions=3, min_pixels=56 * 56, max_pixels=224 * 224)
    turns = reference_turns(record, env)
    assert len(turns) == 3 and turns[-1] == f"<answer>{record.answer}</answer>"
    env.reset(Image.new("RGB", (448, 336)), record.question)
    for step, turn in zip(record.chain, turns):
        action = env.step(turn).action
        union = boxes.union(boxes.as_array(step.boxes))
        got = boxes.as_array([action.box])[0]
        assert float(boxes.iou(got, union)) > 0.95, (turn, got, union)


def test_model_box_uses_the_convention_and_crop_text_the_syntax():
    env = CropEnv("qwen2_norm1000")
    assert model_box((10, 20, 30, 40), env, (100, 200)) == [100.0, 100.0, 300.0, 200.0]
    assert crop_text([100.0, 100.0, 300.0, 200.0], env) == "<crop>[100, 100, 300, 200]</crop>"
    json_env = CropEnv("rel_xyxy", fmt="json")
    assert crop_text([0.1, 0.2, 0.3, 0.4], json_env) == '{"name": "crop", "arguments": {"bbox_2d": [0.100, 0.200, 0.300, 0.400]}}'


def test_a_chain_longer_than_the_action_budget_is_a_config_error(record):
    with pytest.raises(ConfigError, match="max_actions"):
        reference_turns(record, CropEnv("qwen25_abs_resized", max_actions=1))


def test_decoy_turns_crop_off_every_rationale_box_with_the_same_size_and_keep_the_answer(record):
    import random

    env = CropEnv("abs", max_actions=3)
    chain = boxes.as_array([b for step in record.chain for b in step.boxes])
    true_turns = reference_turns(record, env)
    for seed in range(20):
        turns = reference_turns(record, env, random.Random(seed))
        assert turns[-1] == true_turns[-1]  # the gold answer stays
        env.reset(Image.new("RGB", (448, 336)), record.question)
        for step, turn in zip(record.chain, turns[:-1]):
            got = boxes.as_array([env.step(turn).action.box])
            union = boxes.union(boxes.as_array(step.boxes))
            assert float(boxes.iou_matrix(got, chain).max()) <= 0.1 + 0.02  # integer rounding of the written box
            assert abs((got[0, 2] - got[0, 0]) - (union[2] - union[0])) <= 1
            assert abs((got[0, 3] - got[0, 1]) - (union[3] - union[1])) <= 1
            assert 0 <= got[0, 0] and got[0, 2] <= 448 and 0 <= got[0, 1] and got[0, 3] <= 336
    # a box as large as the image has no decorative place: the true one is kept
    assert decoy_box((0, 0, 448, 336), (448, 336), chain, random.Random(0)) is None
    # which records draw a decoy is a function of the record id and the seed only, at the asked rate
    from tests.conftest import make_record

    recs = [make_record(i) for i in range(400)]
    drawn = [decoy_rng(r, 0.3, 0) is not None for r in recs]
    assert drawn == [decoy_rng(r, 0.3, 0) is not None for r in recs] and 0.22 < sum(drawn) / 400 < 0.38
    assert drawn != [decoy_rng(r, 0.3, 1) is not None for r in recs]
    assert not any(decoy_rng(r, 0.0, 0) for r in recs) and all(decoy_rng(r, 1.0, 0) for r in recs)


def test_whole_image_decoys_crop_the_whole_image_at_every_step_and_keep_the_answer(record):
    import random

    env = CropEnv("abs", max_actions=3)
    turns = reference_turns(record, env, random.Random(0), "whole")
    assert turns[-1] == reference_turns(record, env)[-1]
    env.reset(Image.new("RGB", (448, 336)), record.question)
    for turn in turns[:-1]:
        assert env.step(turn).action.box.as_tuple() == (0, 0, 448, 336)
    # the kind only matters when a decoy is drawn; an unknown kind is a clear error
    assert reference_turns(record, env, None, "whole") == reference_turns(record, env)
    with pytest.raises(ConfigError, match="elsewhere, whole, centre, first"):
        reference_turns(record, env, random.Random(0), "corner")


def test_first_decoys_move_only_the_chain_s_first_step_off_the_rationale_and_label_it_erroneous(record):
    import random

    from virl_train.matching import chain_order, label_actions

    env = CropEnv("abs", max_actions=3)
    chain = boxes.as_array([b for step in record.chain for b in step.boxes])
    true_turns = reference_turns(record, env)
    for seed in range(10):
        turns = reference_turns(record, env, random.Random(seed), "first")
        assert turns[1:] == true_turns[1:]  # the second hop and the answer are the true ones
        env.reset(Image.new("RGB", (448, 336)), record.question)
        crops = [env.step(t).action.box for t in turns[:-1]]
        assert float(boxes.iou_matrix(boxes.as_array([crops[0]]), chain).max()) == 0.0  # off every rationale box
        assert not chain_order(crops, record.chain, (448, 336)).ordered_hit
        assert [a.kind.value for a in label_actions(crops, record.chain, (448, 336))] == ["erroneous", "correct"]
    # a one-step chain has only a first step: its one crop is moved
    from tests.conftest import make_record

    one = make_record(2, size=(448, 336), chain=[[(100, 80, 230, 170)]])
    moved = reference_turns(one, env, random.Random(3), "first")
    assert moved[-1] == reference_turns(one, env)[-1] and moved[0] != reference_turns(one, env)[0]


def test_centre_decoys_crop_the_same_place_in_every_image_with_the_steps_size_and_keep_the_answer(record):
    import random

    env = CropEnv("abs", max_actions=3)
    turns = reference_turns(record, env, random.Random(0), "centre")
    assert turns[-1] == reference_turns(record, env)[-1]
    env.reset(Image.new("RGB", (448, 336)), record.question)
    for step, turn in zip(record.chain, turns[:-1]):
        union = boxes.union(boxes.as_array(step.boxes))
        x1, y1, x2, y2 = env.step(turn).action.box.as_tuple()
        assert abs((x1 + x2) / 2 - 224) <= 1 and abs((y1 + y2) / 2 - 168) <= 1  # centred, whatever the chain
        assert abs((x2 - x1) - (union[2] - union[0])) <= 1 and abs((y2 - y1) - (union[3] - union[1])) <= 1
    # the RNG plays no part: the place depends on the image and the box size only
    assert reference_turns(record, env, random.Random(1), "centre") == turns
    assert centred_box((0, 0, 500, 20), (448, 336)) == [0.0, 158.0, 448.0, 178.0]  # clipped to the image


@pytest.mark.parametrize("extras", [("redundant",), ("erroneous",), ("redundant", "erroneous")])
def test_extra_actions_waste_a_known_action_that_the_credit_rule_labels_so(extras):
    from tests.conftest import make_record
    from virl_train.matching import label_actions

    record = make_record(2, size=(112, 112), chain=[[(2, 2, 54, 54)]])  # one shape in the top-left cell
    env = CropEnv("abs", max_actions=3)
    turns = reference_turns(record, env, extras=extras)
    assert turns[-1] == reference_turns(record, env)[-1]  # the gold answer stays
    env.reset(Image.new("RGB", (112, 112)), record.question)
    got = [env.step(turn).action.box for turn in turns[:-1]]
    assert len(got) == 1 + len(extras)
    want = ["correct"]
    if "erroneous" in extras:  # an empty cell first: the diagonally opposite one
        assert boxes.iou_matrix(boxes.as_array([got[0]]), boxes.as_array([(58, 58, 110, 110)]))[0, 0] > 0.9
        want.insert(0, "erroneous")
    if "redundant" in extras:  # the rationale crop once more, after it
        assert got[-1] == got[-2]
        want.append("redundant")
    labels = label_actions(got, record.chain, (112, 112))
    assert [lab.kind.value for lab in labels] == want
    assert {lab.reason for lab in labels if lab.kind is LabelKind.REDUNDANT} <= {f"duplicate_of_action_{len(want) - 2}"}
    with pytest.raises(ConfigError, match="max_actions"):
        reference_turns(record, CropEnv("abs", max_actions=1 + len(extras) - 1), extras=extras)
    with pytest.raises(ConfigError, match="unknown extra"):
        reference_turns(record, env, extras=("wasted",))


def test_extra_actions_are_drawn_per_record_at_their_shares_and_avoid_the_rationale():
    import random

    from tests.conftest import make_record

    recs = [make_record(i) for i in range(400)]
    drawn = [extra_actions(r, {"redundant": 0.5, "erroneous": 0.25}, 0) for r in recs]
    assert drawn == [extra_actions(r, {"redundant": 0.5, "erroneous": 0.25}, 0) for r in recs]  # a function of id+seed
    assert 0.42 < sum("redundant" in d for d in drawn) / 400 < 0.58
    assert 0.18 < sum("erroneous" in d for d in drawn) / 400 < 0.32
    assert 0.07 < sum(len(d) == 2 for d in drawn) / 400 < 0.19  # independent draws: both at about 0.5 x 0.25
    assert not any(extra_actions(r, None, 0) for r in recs)
    # where the mirror image of the box is taken, a free place of the same size is used instead
    avoid = np.array([[0, 0, 40, 40], [60, 60, 100, 100]], dtype=float)
    box = empty_box((0, 0, 40, 40), (100, 100), avoid, random.Random(0))
    assert float(boxes.iou_matrix(np.array([box]), avoid).max()) == 0.0 and box[2] - box[0] == 40


def test_sft_with_decoys_trains_on_decorative_crops_and_records_the_share(demo_export, tmp_path):
    cfg = _cfg(demo_export, tmp_path / "sft")
    out = sft(cfg, 2, lr=1e-3, batch_size=2, warmup=1, decoys=1.0)
    meta = json.loads((out / "sft.json").read_text())
    assert meta["decoys"] == 1.0 and meta["decoy_share"] == 1.0 and meta["records"] == 6
    assert json.loads((out / "log.jsonl").read_text().splitlines()[0])["decoys"] == 1.0
    with pytest.raises(ConfigError, match="decoys"):
        sft(cfg, 2, decoys=1.5)
    with pytest.raises(ConfigError, match="decoy kind"):
        sft(cfg, 2, decoys=0.5, decoy_kind="corner")
    whole = sft(cfg, 2, lr=1e-3, batch_size=2, warmup=1, decoys=1.0, decoy_kind="whole", out_dir=tmp_path / "whole")
    assert json.loads((whole / "sft.json").read_text())["decoy_kind"] == "whole"
    cfg = _cfg(demo_export, tmp_path / "extra", "env.max_actions=4")  # the demo's 3-step chains + 1 repeat
    extra = sft(cfg, 1, lr=1e-3, batch_size=2, warmup=1, extras={"redundant": 1.0})
    meta = json.loads((extra / "sft.json").read_text())
    assert meta["extras"] == {"redundant": 1.0} and meta["extra_share"] == {"redundant": 1.0, "erroneous": 0.0}
    with pytest.raises(ConfigError, match="extras"):
        sft(cfg, 1, extras={"wasted": 0.5})


def test_the_reference_rollout_scores_as_a_perfect_trajectory(demo_export, tmp_path):
    cfg = _cfg(demo_export, tmp_path)
    examples = ExampleSet.load(demo_export, "train", limit=6)
    policy = load_policy(cfg.model)
    for i in range(len(examples)):
        rec = examples[i]
        r = reference_rollout(policy, make_env(cfg), rec, examples.image(i), cfg.grpo.max_new_tokens)
        s = score_record(r.episode, rec, RewardConfig.preset("full"))
        assert r.episode.answer == rec.answer and r.episode.format_ok
        assert [lab.kind for lab in s.labels] == [LabelKind.CORRECT] * len(rec.chain), rec.chain
        assert s.components["accuracy"] == 1.0 and s.components["rationale"] > 0.6
        assert sum(r.episode.loss_mask) < len(r.episode.loss_mask)  # the env's crops are in, masked out


def test_sft_lowers_the_reference_loss_and_writes_a_loadable_policy(demo_export, tmp_path):
    cfg = _cfg(demo_export, tmp_path / "sft")
    examples = ExampleSet.load(demo_export, "train", limit=6)
    before_policy = load_policy(cfg.model, seed=cfg.run.seed)
    refs = [reference_rollout(before_policy, make_env(cfg), examples[i], examples.image(i), 24) for i in range(6)]
    before = reference_loss(before_policy, refs)
    out = sft(cfg, 12, lr=3e-3, batch_size=6, warmup=2)
    after_policy = load_policy(load_config(REPO / "configs" / "shapes_learn.yaml",
                                           [f"model.name_or_path={out / 'final'}"]).model)
    after = reference_loss(after_policy, refs)
    assert after < 0.7 * before, (before, after)
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in log] == list(range(1, 13)) and all(np.isfinite(x["loss"]) for x in log)
    assert (out / "config.yaml").is_file()


def test_cli_sft_then_train_from_its_checkpoint(demo_export, tmp_path):
    runner = CliRunner()
    base = ["--config", str(REPO / "configs" / "shapes_learn.yaml"), f"data.path={demo_export}", "data.limit=4",
            "env.max_actions=3"]
    done = runner.invoke(app, ["sft", *base, "--steps", "2", "--out", str(tmp_path / "sft")])
    assert done.exit_code == 0, done.output
    assert "SFT done" in done.output and (tmp_path / "sft" / "final").is_dir()
    assert "can it see: skipped" in done.output and "no split 'val'" in done.output  # no eval split in this export
    done = runner.invoke(app, ["train", *base, f"model.name_or_path={tmp_path / 'sft' / 'final'}",
                               f"run.out_dir={tmp_path / 'rl'}", "run.max_steps=1", "grpo.batch_size=2",
                               "grpo.group_size=2", "grpo.max_new_tokens=8"])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "rl" / "final").is_dir()


def test_sft_builds_each_batch_s_references_when_it_needs_them(demo_export, tmp_path, monkeypatch):
    import copy

    import virl_train.sft as sft_module

    built: list[tuple[str, tuple[str, ...]]] = []
    real = sft_module.reference_rollout

    def counted(policy, env, record, image, max_new_tokens, decoy=None, decoy_kind="elsewhere", extras=()):
        turns = reference_turns(record, env, copy.deepcopy(decoy), decoy_kind, extras)  # a copy: the RNG is consumed
        built.append((record.id, tuple(turns)))
        return real(policy, env, record, image, max_new_tokens, decoy, decoy_kind, extras)

    monkeypatch.setattr(sft_module, "reference_rollout", counted)
    cfg = _cfg(demo_export, tmp_path / "lazy", "env.max_actions=4")
    sft(cfg, 4, lr=1e-3, batch_size=2, warmup=1, decoys=0.5, extras={"redundant": 0.5})
    assert len(built) == 4 * 2  # the batches' references only, not one per record up front (6 records)
    turns: dict[str, set] = {}
    for rid, t in built:
        turns.setdefault(rid, set()).add(t)
    assert all(len(t) == 1 for t in turns.values()), turns  # a record seen twice gets the same reference


def test_sft_refuses_zero_steps(demo_export, tmp_path):
    with pytest.raises(ConfigError, match="steps"):
        sft(_cfg(demo_export, tmp_path), 0)


def test_sft_checkpoints_and_a_killed_run_resumes_to_the_same_parameters(demo_export, tmp_path):
    """5 steps with a checkpoint every 2, LoRA with dropout on (so the restored RNG matters): killed after step 3,
    the rerun resumes from step 2 and ends with the uninterrupted run's parameters, bit for bit."""
    more = ("model.lora.enabled=true", "model.lora.dropout=0.3", "model.freeze_vision=none")
    kw = {"lr": 3e-3, "batch_size": 3, "warmup": 2, "save_every": 2}
    straight = sft(_cfg(demo_export, tmp_path / "straight", *more), 5, **kw)
    assert sorted(p.name for p in (straight / "checkpoints").glob("step_*")) == ["step_4", "step_5"]

    killed = tmp_path / "killed"
    with pytest.raises(Interrupt):
        sft(_cfg(demo_export, killed, *more), 5, callbacks=[interrupt_at(3)], **kw)
    assert sorted(p.name for p in (killed / "checkpoints").glob("step_*")) == ["step_2"]
    assert not (killed / "final").exists()
    seen = []
    sft(_cfg(demo_export, killed, *more), 5, callbacks=[lambda s, m: seen.append(s)], **kw)
    assert seen == [3, 4, 5]  # resumed after step 2
    assert_same_final_weights(straight, killed)
    log = [json.loads(x) for x in (killed / "log.jsonl").read_text().splitlines()]
    straight_log = [json.loads(x) for x in (straight / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in log] == [1, 2, 3, 4, 5]  # step 3 of the killed run is not logged twice
    assert [x["loss"] for x in log] == [x["loss"] for x in straight_log]


def test_sft_and_grpo_do_not_resume_from_each_others_checkpoints(demo_export, tmp_path):
    from virl_train.train import train

    out = tmp_path / "shared"
    sft(_cfg(demo_export, out), 1, batch_size=2)
    cfg = _cfg(demo_export, out, "run.max_steps=1", "grpo.batch_size=1", "grpo.group_size=2", "grpo.max_new_tokens=4")
    with pytest.raises(ConfigError, match="checkpoint of 'sft', not of 'train'.*--fresh"):
        train(cfg)
    base = ["sft", "--config", str(REPO / "configs" / "shapes_learn.yaml"), f"data.path={demo_export}", "data.limit=2",
            "--out", str(out)]
    res = CliRunner().invoke(app, [*base, "--steps", "1", "--save-every", "0"])
    assert res.exit_code == 2 and "--save-every" in res.output
    res = CliRunner().invoke(app, [*base, "--steps", "2", "--save-every", "1"])  # resumes after step 1
    assert res.exit_code == 0 and "sft step 1/2" not in res.output and "sft step 2/2" in res.output, res.output
    res = CliRunner().invoke(app, [*base, "--steps", "2", "--fresh"])  # starts over
    assert res.exit_code == 0 and "sft step 1/2" in res.output, res.output
    assert [json.loads(x)["step"] for x in (out / "log.jsonl").read_text().splitlines()] == [1, 2]
