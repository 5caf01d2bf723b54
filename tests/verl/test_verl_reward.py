"""verl's ``get_custom_reward_fn`` loads ``compute_score`` from the config keys, and its scores of decoded verl
responses equal ``virl-train score`` on the trajectory log of the same episodes played through ``CropEnv``.

Why this direction: ``virl-train score`` needs only the scorer (no torch, no train extra), so the verl venv runs it
as a subprocess on a log this test writes, with the episodes made by the env the trainer itself uses (turn by turn,
``CropEnv.step``), while ``compute_score`` sees one decoded string per episode, as verl hands it over. The two
paths share the scorer but not the parsing: one string split by ``<tool_call>`` blocks against env turns.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from PIL import Image
from verl.trainer.ppo.reward import get_custom_reward_fn

from virl_train.actions import from_pixels
from virl_train.env import CropEnv
from virl_train.interop.verl import COMPONENTS
from virl_train.rewards import RewardConfig, score_record
from virl_train.trajectories import trajectory_row
from virl_train.types import ActionKind, Episode

PRESETS = ("full", "outcome")


def call(values) -> str:
    return f'<tool_call>{json.dumps({"name": "crop", "arguments": {"bbox_2d": values}})}</tool_call>'


def cases(rec, truth) -> dict[str, list[str]]:
    """Turn texts of each case: every turn but the last is a tool-call turn; the last answers (or does not)."""
    conv, size, resized = truth["convention"], tuple(truth["image_size"]), tuple(truth["resized"])
    params = {"scale": truth["scale"]} if conv == "qwen3_norm1000" else None

    def native(box) -> list[int]:
        return [round(v) for v in from_pixels(box, conv, size, resized, params).tolist()]

    steps = [native(s.boxes[0].as_tuple()) for s in rec.chain]
    far = native((0, 0, 12, 12)) if rec.chain[0].boxes[0].x1 > 40 else native((size[0] - 12, size[1] - 12, *size))
    right, wrong = f"<answer>{rec.answer}</answer>", "<answer>definitely not it</answer>"
    return {
        "chain_then_answer": [f"First the {s.phrase}. {call(v)}" for s, v in zip(rec.chain, steps)] + [right],
        "redundant": [call(steps[0]), call(steps[0]), right],
        "erroneous": [call(far), right],
        "wrong_answer": [call(steps[-1]), wrong],
        "invalid_boxes": [call(steps[0][:3]), call([*steps[0][2:], *steps[0][:2]]), right],
        "out_of_image": [call([v * 3 + 2000 for v in steps[0]]), right],
        "no_answer": [call(steps[0]), "I am not sure."],
        "over_budget": [call(steps[0])] * (truth["max_actions"] + 1) + [right],
        "answer_only": [right],
    }


def env_episode(env: CropEnv, rec, image, turns: list[str]) -> Episode:
    """The episode virl's own rollout records for these turns: each turn stepped through the env; a last turn that
    does not answer means the rollout was cut off there (no answer, format broken), as verl's loop ends then."""
    env.reset(image, rec.question)
    actions, answer, answer_box, done = [], None, None, False
    for k, text in enumerate(turns):
        if k == len(turns) - 1 and "<answer>" not in text:
            break
        result = env.step(text)
        actions.append(result.action)
        if result.done:
            done = True
            if result.action.kind is ActionKind.ANSWER:
                answer, answer_box = result.action.answer, result.action.box
            break
    return Episode(rec.id, actions=tuple(actions), answer=answer, answer_box=answer_box, n_turns=len(actions),
                   format_ok=done)  # fmt: skip


def verl_response(env: CropEnv, image, rec, turns: list[str]) -> str:
    """The decoded response verl's tool agent loop hands the reward: the turns with the tool's texts in between
    (role markers and vision tokens are special tokens, skipped in decoding)."""
    env.reset(image, rec.question)
    parts = []
    for text in turns[:-1]:
        parts.append(text)
        if not env.done:
            obs = env.step(text).observation
            parts.append(f"tool\n{obs.text if obs is not None else '<crop_error>no crops are left</crop_error>'}\n")
    return "".join(parts) + turns[-1]


def virl_train_score(log: Path, preset: str) -> list[dict]:
    exe = Path(sys.executable).parent / "virl-train"
    out = subprocess.run([str(exe), "score", str(log), "--preset", preset], capture_output=True, text=True,
                         timeout=300, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("preset", PRESETS)
def test_compute_score_from_config_equals_virl_train_score(exported, tmp_path, preset):
    config = OmegaConf.create({"reward": {"custom_reward_function": {
        "path": "pkg://virl_train.interop.verl", "name": "compute_score", "reward_kwargs": {"preset": preset}}}})
    compute_score = get_custom_reward_fn(config)
    cfg = RewardConfig.preset(preset)
    log, got, names = [], [], []
    for i, (rec, row) in enumerate(zip(exported.records, exported.rows, strict=True)):
        truth = json.loads(row["reward_model"]["ground_truth"])
        kw = row["extra_info"]["tools_kwargs"]["crop"]["create_kwargs"]
        env = CropEnv(kw["convention"], fmt="json", max_actions=kw["max_actions"], min_pixels=kw["min_pixels"],
                      max_pixels=kw["max_pixels"], factor=kw["factor"], scale=kw["scale"])  # fmt: skip
        image = Image.open(exported.image_root / rec.image.path).convert("RGB")
        for k, (name, turns) in enumerate(cases(rec, truth).items()):
            episode = env_episode(env, rec, image, turns)
            log.append(trajectory_row(episode, rec, score_record(episode, rec, cfg), cfg, source="verl-test",
                                      step=None, group=i, sample=k, turns=turns))  # fmt: skip
            response = verl_response(env, image, rec, turns)
            got.append(compute_score(data_source=row["data_source"], solution_str=response,
                                     ground_truth=row["reward_model"]["ground_truth"], extra_info=row["extra_info"]))
            names.append(name)
    path = tmp_path / "trajectories.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in log))
    expected = virl_train_score(path, preset)
    assert len(expected) == len(got) == len(names)
    for name, e, g in zip(names, expected, got, strict=True):
        assert g["score"] == pytest.approx(e["total"], abs=1e-12), name
        assert {k: g[k] for k in COMPONENTS} == pytest.approx({k: e["components"][k] for k in COMPONENTS}), name
    # the cases exercise every label and both signs of the answer term (the comparison is not vacuous)
    assert all(sum(g[f"n_{kind}"] for g in got) > 0 for kind in ("correct", "redundant", "erroneous"))
    assert {g["accuracy"] for g in got} == {0.0, 1.0} and {g["format"] for g in got} == {0.0, -1.0}
    assert len({round(g["score"], 9) for g in got}) >= (8 if preset == "full" else 4)  # outcome: acc + fmt only
