"""Box answers (``answer_type="box"``): the policy answers with a box in its own convention, parsed and converted
like a crop; the reward, eval, offline scoring and the SFT warm start all judge it by IoU against the gold box."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import orjson
import pytest
from PIL import Image

from virl_data.core.boxanswer import format_box, parse_box
from virl_data.core.errors import ConfigError
from virl_data.core.types import Box
from tests.conftest import make_record
from virl_train.actions import parse_turn
from virl_data.core.answers import box_iou, score_answer
from virl_train.env import BOX_ANSWER_TEXT, CropEnv, question_text
from virl_train.eval import grounding_metrics
from virl_train.rewards import RewardConfig, accuracy_reward, score_record
from virl_train.score import score_file
from virl_train.sft import answer_text, reference_turns
from virl_train.types import ActionKind, Episode

TARGET = (20.0, 40.0, 60.0, 80.0)
SIZE = (200, 100)


def _box_record(i: int = 0):
    rec = make_record(i, size=SIZE, chain=[[TARGET]], question='Where is "man on right"?')
    return dataclasses.replace(rec, answer=format_box(Box(*TARGET)), answer_type="box")


def _answered(box: Box | None, text: str = "x") -> Episode:
    return Episode("r", answer=text, answer_box=box)


# --- the parser: the answer box converts like a crop ------------------------------------------------------------------
@pytest.mark.parametrize(("convention", "text"), [
    ("qwen2_norm1000", "<answer>[100, 400, 300, 800]</answer>"),
    ("rel_xyxy", "<answer>(0.1, 0.4, 0.3, 0.8)</answer>"),
    ("abs", "<answer>20 40 60 80</answer>"),
])
def test_an_answer_box_is_converted_to_original_pixels(convention, text):
    a = parse_turn(text, turn=0, convention=convention, image_size=SIZE)
    assert a.kind is ActionKind.ANSWER and a.answer == text[8:-9]
    assert a.box.as_tuple() == pytest.approx(TARGET)


@pytest.mark.parametrize("text", ["<answer>red</answer>", "<answer>[60, 40, 20, 80]</answer>",
                                  "<answer>[1, 2, 3]</answer>", "<answer>[0, 0, 5000, 5000]</answer>"])
def test_an_answer_that_is_no_valid_box_keeps_no_box(text):
    a = parse_turn(text, turn=0, convention="abs", image_size=SIZE)
    assert a.kind is ActionKind.ANSWER and a.box is None


def test_the_json_format_answer_tool_gives_a_box_too():
    text = '{"name": "answer", "arguments": {"answer": "[100, 400, 300, 800]"}}'
    a = parse_turn(text, turn=0, convention="qwen2_norm1000", image_size=SIZE, fmt="json")
    assert a.box.as_tuple() == pytest.approx(TARGET)


def test_the_env_hands_the_answer_box_over_and_the_question_asks_for_a_box():
    env = CropEnv("qwen2_norm1000", max_actions=2)
    env.reset(Image.new("RGB", SIZE), question_text('Where is "x"?', "box"))
    result = env.step("<answer>[100, 400, 300, 800]</answer>")
    assert result.done and result.action.box.as_tuple() == pytest.approx(TARGET)
    assert question_text('Where is "x"?', "box") == 'Where is "x"?' + BOX_ANSWER_TEXT
    assert question_text('Where is "x"?', "object") == 'Where is "x"?'


# --- scoring ---------------------------------------------------------------------------------------------------------
def test_score_answer_by_iou_against_the_gold_box():
    gold = "[0, 0, 10, 20]"
    assert box_iou(Box(0, 0, 10, 10), gold) == 0.5
    assert score_answer(Box(0, 0, 10, 10), gold, answer_type="box") == 1.0            # IoU 0.5 ≥ 0.5
    assert score_answer(Box(0, 0, 10, 10), gold, answer_type="box", iou_threshold=0.6) == 0.0
    assert score_answer("[0, 0, 10, 20]", gold, answer_type="box") == 1.0             # a canonical string
    assert score_answer("man", gold, answer_type="box") == 0.0                        # a word is no box
    assert score_answer(None, gold, answer_type="box") == 0.0
    assert score_answer(Box(0, 0, 1, 1), "man", answer_type="box") is None            # unreadable gold
    assert score_answer(Box(0, 0, 1, 1), "red") == 0.0                                # a box answers no word


def test_the_reward_scores_the_episode_answer_box_with_the_configured_threshold():
    rec = _box_record()
    near = Box(22, 40, 60, 80)  # IoU 0.95
    full = score_record(_answered(near), rec)
    assert full.components["accuracy"] == 1.0 and full.components["answer_iou"] == pytest.approx(0.95)
    assert score_record(_answered(near), rec, RewardConfig(answer_iou=0.96)).components["accuracy"] == 0.0
    # the answer text never counts for a box record, even if it spells the gold box: the box it names does
    text_only = score_record(_answered(None, text=rec.answer), rec)
    assert text_only.components["accuracy"] == 0.0 and text_only.components["answer_iou"] == 0.0
    assert RewardConfig.from_params("full", {"answer_iou": 0.7}).answer_iou == 0.7
    with pytest.raises(ConfigError, match="answer_iou"):
        RewardConfig(answer_iou=0.0)


def test_trl_adapter_reads_the_answer_box_of_episodes_and_mappings():
    rec = _box_record()
    got = accuracy_reward([_answered(Box(*TARGET)), _answered(Box(100, 0, 150, 50)), {"answer_box": Box(*TARGET)}],
                          records=[rec] * 3)
    assert got == [1.0, 0.0, 1.0]


def test_score_file_reads_a_box_answer_in_pixels(tmp_path: Path):
    line = {"id": "q", "image_size": list(SIZE), "rationale": [[list(TARGET)]], "actions": [list(TARGET)],
            "answer": [20, 40, 60, 90], "gt_answer": format_box(Box(*TARGET)), "answer_type": "box"}
    path = tmp_path / "t.jsonl"
    path.write_bytes(orjson.dumps(line) + b"\n" + orjson.dumps(line | {"answer": [100, 0, 150, 50]}) + b"\n")
    out = io.BytesIO()
    assert score_file(path, RewardConfig.preset("full"), out).n == 2
    first, second = (orjson.loads(x) for x in out.getvalue().splitlines())
    assert first["components"]["accuracy"] == 1.0 and first["components"]["answer_iou"] == pytest.approx(0.8)
    assert second["components"]["accuracy"] == 0.0


def test_eval_reports_the_box_answer_iou():
    recs = [_box_record(0), make_record(1, size=SIZE, chain=[[TARGET]])]
    eps = [Episode(recs[0].id, answer="a", answer_box=Box(20, 40, 60, 60)), Episode(recs[1].id, answer="red")]
    m = grounding_metrics(eps, recs)
    assert m["n_box_answers"] == 1.0 and m["box_answer_iou"] == pytest.approx(0.5)
    assert m["accuracy"] == 1.0  # IoU 0.5 reaches the default threshold; the colour answer is right too


# --- SFT: the reference trajectory answers in the model's convention ---------------------------------------------------
@pytest.mark.parametrize("convention", ["qwen2_norm1000", "rel_xyxy", "qwen25_abs_resized", "abs"])
def test_sft_reference_answer_is_the_gold_box_in_the_model_convention(convention):
    rec = _box_record()
    env = CropEnv(convention, max_actions=2, min_pixels=56 * 56, max_pixels=224 * 224)
    turns = reference_turns(rec, env)
    assert turns[-1] == f"<answer>{answer_text(rec, env)}</answer>"
    env.reset(Image.new("RGB", SIZE), rec.question)
    env.step(turns[0])
    back = env.step(turns[1]).action.box
    assert box_iou(back, rec.answer) > 0.9
    assert answer_text(make_record(0), env) == "red"
    assert parse_box(rec.answer) == Box(*TARGET)


# --- end to end: a teacher-forced rollout of the tiny policy -----------------------------------------------------------
@pytest.mark.usefixtures("one_thread")
def test_a_reference_rollout_of_a_box_record_answers_the_gold_box():
    from virl_train.config import load_config
    from virl_train.policy import load_policy
    from virl_train.sft import reference_rollout
    from virl_train.train import make_env

    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "shapes_learn.yaml", ["env.max_actions=2"])
    policy, rec = load_policy(cfg.model), _box_record()
    r = reference_rollout(policy, make_env(cfg), rec, Image.new("RGB", SIZE), cfg.grpo.max_new_tokens)
    assert box_iou(r.episode.answer_box, rec.answer) > 0.9 and r.episode.format_ok
    assert score_record(r.episode, rec).components["accuracy"] == 1.0
    assert BOX_ANSWER_TEXT.strip() in policy.tokenizer.decode(list(r.episode.prompt_ids))
