"""TRL interop: the crop environment and reward components, and a real ``trl.GRPOTrainer`` run on them.

The trainer test runs ``examples/trl_grpo.py``'s ``build_trainer`` for 2 steps on a tiny random Qwen2.5-VL on CPU
(float32) over a ``virl-data export --format trl`` folder. A random model never calls a tool, so a logits processor
(wrapped around ``model.generate``) forces, on the first turn, a well-formed crop tool call on even rows and an answer
on odd rows, and an answer after a crop; TRL's own parsing, tool loop, image handling and loss run unpatched. Then:
the tool was called, each crop reached the model as a second image (checked in the generate inputs and in the loss
forward), and every reward TRL logged equals what ``virl-train score`` computes on the trajectory log the run wrote.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import pickle
from pathlib import Path

import orjson
import pytest
from PIL import Image

from virl_data.miners.shapes import ShapesConfig, generate, make_scene, render_scene
from virl_data.core.schema import record_to_row
from virl_data.core.types import Box
from virl_train.actions import from_pixels
from virl_train.interop.trl import (
    COMPONENTS,
    CropToolEnv,
    RowError,
    component_value,
    crop_environment,
    episode_of,
    reward_funcs,
)
from virl_train.rewards import RewardConfig, label_credit, score_record
from virl_train.types import ActionKind, LabelKind, RewardBreakdown

REPO = Path(__file__).resolve().parents[2]
SHAPES = ShapesConfig(image_size=(224, 224))


def _row(record=None):
    rec = record or next(generate(1, seed=0, config=SHAPES))
    row = record_to_row(rec)
    return {**row, "image_ref": row["image"], "image": render_scene(make_scene(0, seed=0, config=SHAPES))}, rec


def _native(env: CropToolEnv, box: Box) -> list[int]:
    """``box`` (original pixels) in the env's convention, as the model would write it."""
    size = env._image_size
    values = from_pixels(box.as_tuple(), env._env.convention, size, env._env.view_size(*size))
    return [round(v) for v in values.tolist()]


# --- the environment and the reward components (no TRL needed) ------------------------------------------------------
def test_crop_tool_converts_the_family_convention_and_records_actions():
    row, rec = _row()
    env = crop_environment(family="qwen2_5_vl")()  # absolute pixels of the resized image
    assert "absolute pixel coordinates on the image as you see it" in env.reset(**row)
    target = rec.chain[0].boxes[0]
    blocks = env.crop(_native(env, target))
    assert [b["type"] for b in blocks] == ["text", "image"] and isinstance(blocks[1]["image"], Image.Image)
    (action,) = env.calls
    assert action.kind is ActionKind.CROP
    assert max(abs(a - b) for a, b in zip(action.box.as_tuple(), target.as_tuple(), strict=True)) < 2.0
    qwen3 = crop_environment(family="qwen3_vl")()
    qwen3.reset(**row)
    qwen3.crop([0, 0, 500, 500])
    assert qwen3.calls[0].box == Box(0, 0, 112, 112)  # 0-1000 relative


@pytest.mark.parametrize(("args", "error"), [
    ([5, 5, 1, 1], "inverted_box"), ([0, 0, 5000, 5000], "out_of_image"), (["a", 1, 2, 3], "malformed_box"),
    ([1, 2, 3], "malformed_box"), (None, "malformed_box"),
])  # fmt: skip
def test_invalid_boxes_give_error_text_not_exceptions(args, error):
    row, _ = _row()
    env = CropToolEnv("qwen2_norm1000")
    env.reset(**row)
    (block,) = env.crop(args)
    assert block["type"] == "text" and block["text"].startswith("<crop_error>")
    assert env.calls[0].kind is ActionKind.INVALID and env.calls[0].error == error


def test_budget_spent_calls_are_invalid_and_reset_starts_over():
    row, _ = _row()
    env = CropToolEnv("qwen2_norm1000", max_actions=1)
    env.reset(**row)
    env.crop([0, 0, 500, 500])
    assert "No crops are left" in env.crop([0, 0, 500, 500])[0]["text"]
    assert "No crops are left" in env.crop([0, 0, 500, 500])[0]["text"]
    assert [a.error for a in env.calls] == [None, "action_limit", "action_limit"]
    env.reset(**row)
    assert env.calls == ()


def test_reset_refuses_rows_without_a_record_or_image():
    row, _ = _row()
    with pytest.raises(RowError, match="not a virl record"):
        CropToolEnv("qwen2_norm1000").reset(prompt=[], image=row["image"])
    with pytest.raises(RowError, match="no decoded image"):
        CropToolEnv("qwen2_norm1000").reset(**{**row, "image": None})
    with pytest.raises(RowError, match="the record says"):
        CropToolEnv("qwen2_norm1000").reset(**{**row, "image": Image.new("RGB", (10, 10))})


def test_idefics3_is_refused_because_trl_drops_its_tool_images():
    from virl_data.core.errors import ConfigError

    with pytest.raises(ConfigError, match="<image>"):
        crop_environment(family="idefics3")


def _messages(env, rec, *, answer="red", rolled_back=False, trl_error=False):
    """A TRL completion: a crop call + its tool message (unless rolled back), then the answer."""
    call = {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "crop"}}]}
    msgs = [call]
    blocks = env.crop(_native(env, rec.chain[0].boxes[0]))
    if not rolled_back:
        msgs.append({"role": "tool", "name": "crop", "content": blocks})
    if trl_error:
        msgs += [call, {"role": "tool", "name": "zoom", "content": "{'error': 'Tool zoom not found.'}"}]
    return msgs + [{"role": "assistant", "content": f"It is <answer>{answer}</answer>"}]


def test_episode_counts_only_the_crops_the_model_saw():
    row, rec = _row()
    env = crop_environment()()
    env.reset(**row)
    episode, turns = episode_of(env, _messages(env, rec))
    assert [a.kind for a in episode.actions] == [ActionKind.CROP, ActionKind.ANSWER] and episode.answer == "red"
    env.reset(**row)
    episode, _ = episode_of(env, _messages(env, rec, rolled_back=True))  # TRL rolled the tool result back
    assert len(env.calls) == 1 and [a.kind for a in episode.actions] == [ActionKind.ANSWER]
    env.reset(**row)
    episode, _ = episode_of(env, _messages(env, rec, trl_error=True))
    assert [a.error for a in episode.actions[:2]] == [None, "unknown_tool"]
    cut = [{"role": "assistant", "content": "", "tool_calls": [{"type": "function"}]}]
    episode, _ = episode_of(env, cut)
    assert episode.answer is None and not episode.format_ok


def test_components_are_the_score_record_breakdown():
    row, rec = _row()
    cfg = RewardConfig.preset("full")
    funcs = reward_funcs(cfg)
    assert [f.__name__ for f in funcs] == list(COMPONENTS)
    envs, completions = [], []
    for answer, wrong_crop in ((rec.answer, False), ("nonsense", False), (rec.answer, True)):
        env = crop_environment()()
        env.reset(**row)
        if wrong_crop:
            completions.append([{"role": "assistant", "content": "", "tool_calls": [{}]},
                                {"role": "tool", "name": "crop", "content": env.crop([0, 0, 30, 30])},
                                {"role": "assistant", "content": f"<answer>{answer}</answer>"}])
        else:
            completions.append(_messages(env, rec, answer=answer))
        envs.append(env)
    got = {f.__name__: f(prompts=[None] * 3, completions=completions, completion_ids=None, environments=envs)
           for f in funcs}
    for i, env in enumerate(envs):
        b = score_record(episode_of(env, completions[i])[0], env.record, cfg)
        assert got["accuracy"][i] + got["format"][i] + got["rationale"][i] == pytest.approx(b.total, abs=1e-12)
        assert got["shaping"][i] == cfg.eta * b.components["shaping"]
        assert got["credit"][i] == cfg.eta * sum(label_credit(lab.kind, cfg) for lab in b.labels)
    assert got["credit"][2] == -cfg.eta * cfg.beta  # a crop on empty background is erroneous
    assert got["accuracy"] == [1.0, 0.0, 1.0] and got["format"] == [0.0, 0.0, 0.0]
    assert got["rationale"][0] > got["rationale"][2] >= 0.0 == got["rationale"][1]  # gated on the answer
    outcome = reward_funcs(RewardConfig.preset("outcome"))
    assert outcome[3](completions=completions, environments=envs) == [0.0, 0.0, 0.0]
    again = pickle.loads(pickle.dumps(funcs[0]))
    assert again(completions=completions, environments=envs) == got["accuracy"]


def test_rewards_without_environment_score_the_answer_from_columns():
    row, rec = _row(dataclasses.replace(next(generate(1, seed=0, config=SHAPES)), answer="red"))
    columns = {k: [v, v] for k, v in row.items()}
    completions = [[{"role": "assistant", "content": "<answer>red</answer>"}],
                   [{"role": "assistant", "content": "no idea"}]]
    acc, fmt = reward_funcs(components=("accuracy", "format"))
    assert acc(completions=completions, **columns) == [1.0, 0.0]
    assert fmt(completions=completions, **columns) == [0.0, -0.2]


# --- a real GRPOTrainer, 2 steps ---------------------------------------------------------------------------------
def _example():
    spec = importlib.util.spec_from_file_location("trl_grpo_example", REPO / "examples" / "trl_grpo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def trl_export(tmp_path_factory):
    """Two records on one image and chain with golds "red" and "blue", exported with ``--format trl``."""
    from virl_data import export
    from virl_data.core import schema

    root = tmp_path_factory.mktemp("images")
    rec = next(generate(1, seed=0, image_dir=root, config=SHAPES))
    records = [dataclasses.replace(rec, id=f"q-{gold}", answer=gold, answer_type="color", status="accepted",
                                   split="train")
               for gold in ("red", "blue")]
    out = tmp_path_factory.mktemp("export") / "trl"
    export.export(schema.records_to_frame(records), out, "trl", image_root=root)
    return out, rec


class Forcer:
    """A logits processor: row r of a generate call writes ``texts[r]`` then ``<|im_end|>`` (everything else -inf)."""

    def __init__(self, rows: list[list[int]], start: int, eos: int):
        self.rows, self.start, self.eos = rows, start, eos

    def __call__(self, input_ids, scores):
        t = input_ids.shape[1] - self.start
        for r, ids in enumerate(self.rows):
            scores[r, :] = -math.inf
            scores[r, ids[t] if t < len(ids) else self.eos] = 0.0
        return scores


def _force_turns(trainer, tool_call: str, answer: str, seen: list):
    """Wrap ``trainer.model.generate``: first turns (one image in the row) alternate ``tool_call`` / ``answer``,
    turns after a crop (two images) answer. Records each call's images per row in ``seen``."""
    from transformers import LogitsProcessorList

    tok = trainer.processing_class.tokenizer
    vstart, eos = tok.convert_tokens_to_ids("<|vision_start|>"), tok.convert_tokens_to_ids("<|im_end|>")
    call_ids, answer_ids = tok.encode(tool_call, add_special_tokens=False), tok.encode(answer, add_special_tokens=False)
    generate = trainer.model.generate

    def forced(*args, **kwargs):
        ids = kwargs["input_ids"]
        n_images = (ids == vstart).sum(dim=1).tolist()
        rows = [(call_ids if r % 2 == 0 else answer_ids) if n == 1 else answer_ids for r, n in enumerate(n_images)]
        seen.append((n_images, kwargs.get("image_grid_thw")))
        kwargs["logits_processor"] = LogitsProcessorList([Forcer(rows, ids.shape[1], eos)])
        return generate(*args, **kwargs)

    trainer.model.generate = forced


def test_grpo_trainer_two_steps_rewards_equal_virl_train_score(trl_export, tmp_path, monkeypatch):
    pytest.importorskip("trl")
    import torch
    from typer.testing import CliRunner

    from virl_train.cli import app

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    data, rec = trl_export
    example = _example()
    args = example.parser().parse_args([
        "--data", str(data), "--model", "tiny-qwen2.5-vl", "--out", str(tmp_path / "run"), "--max-steps", "2",
        "--batch", "2", "--group", "2", "--max-actions", "1", "--max-completion-length", "160", "--cpu",
        "--lr", "1e-3", "--max-pixels", "50176",
    ])  # fmt: skip
    trainer = example.build_trainer(args)
    probe = crop_environment(trainer.processing_class)()
    probe.reset(**_row(rec)[0])
    box = _native(probe, rec.chain[0].boxes[0])
    tool_call = '<tool_call>\n{"name": "crop", "arguments": {"bbox_2d": %s}}\n</tool_call>' % box
    seen, forwards = [], []
    _force_turns(trainer, tool_call, "I see it. <answer>red</answer>", seen)
    hook = trainer.model.register_forward_pre_hook(
        lambda m, a, kw: forwards.append(kw.get("image_grid_thw")) if m.training else None, with_kwargs=True)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    hook.remove()

    # the tool was called and each crop reached the model as a second image, in generation and in the loss
    assert any(n == [2, 2] for n, _ in seen), seen  # post-tool turns: the original + the crop
    post = next(grid for n, grid in seen if n == [2, 2])
    crop_grid = post[1].tolist()
    assert crop_grid == post[3].tolist() and crop_grid != post[0].tolist()  # the crop's own (smaller) grid
    assert any(g is not None and g.shape[0] == 6 for g in forwards)  # 4 rows: 2 with a crop → 6 images
    assert trainer.state.log_history[0]["tools/call_frequency"] == pytest.approx(0.5)
    assert any(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters())

    # every logged reward equals virl-train score on the trajectory log the run wrote
    log = tmp_path / "run" / "trajectories.rank0.jsonl"
    lines = [orjson.loads(x) for x in log.read_bytes().splitlines()]
    assert [x["step"] for x in lines] == [1] * 4 + [2] * 4
    assert sum(a is not None for x in lines for a in x["actions"]) == 4  # one crop per group, every step
    scored = tmp_path / "scored.jsonl"
    res = CliRunner().invoke(app, ["score", str(log), "--preset", "full", "--out", str(scored)])
    assert res.exit_code == 0, res.output
    scores = [orjson.loads(x) for x in scored.read_bytes().splitlines()]
    cfg = RewardConfig.preset("full")
    expected = [_components(s, cfg) for s in scores]
    assert {round(e["rationale"], 6) for e in expected} > {0.0}  # the right crop + right answer earns the bonus
    for name in COMPONENTS:  # the last step's per-completion values, exactly as TRL logged them (float32)
        assert list(trainer._logs["rewards"][name]) == pytest.approx([e[name] for e in expected[4:]], abs=1e-6)
    steps = [h for h in trainer.state.log_history if "rewards/accuracy/mean" in h]
    for k, h in enumerate(steps):  # the per-step means in log_history
        for name in COMPONENTS:
            mean = sum(e[name] for e in expected[4 * k: 4 * k + 4]) / 4
            assert h[f"rewards/{name}/mean"] == pytest.approx(mean, abs=1e-6)
    assert all(s["total"] == s["logged_total"] for s in scores)


def _components(scored: dict, cfg: RewardConfig) -> dict[str, float]:
    """TRL's five components from one ``virl-train score`` output line."""
    c = scored["components"]
    return {
        "accuracy": cfg.lambda_acc * c["accuracy"], "format": cfg.lambda_fmt * c["format"],
        "rationale": c["rationale_bonus"], "shaping": cfg.eta * c["shaping"],
        "credit": cfg.eta * sum(label_credit(LabelKind(lab["kind"]), cfg) for lab in scored["labels"]),
    }  # fmt: skip


def test_component_value_names_unknown_components():
    from virl_data.core.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown reward component"):
        component_value(RewardBreakdown(total=0.0), "bogus")
    with pytest.raises(ConfigError, match="unknown reward component"):
        reward_funcs(components=("accuracy", "bogus"))


def test_trajectory_log_is_what_score_reads_and_resumes_like_virl_train(tmp_path):
    from types import SimpleNamespace

    from virl_data.storage.trajectories import read_trajectories

    row, rec = _row()
    path = tmp_path / "traj.rank{rank}.jsonl"

    def run(global_step: int, funcs=None):
        funcs = funcs or reward_funcs(log_path=path)
        env = crop_environment()()
        env.reset(**row)
        completions = [_messages(env, rec, answer=rec.answer)]
        for f in funcs:  # five calls, one scoring, one log line
            f(completions=completions, environments=[env], trainer_state=SimpleNamespace(global_step=global_step))
        return funcs

    funcs = run(0)
    run(1, funcs)
    log = tmp_path / "traj.rank0.jsonl"
    lines = list(read_trajectories(log))
    assert [t.step for t in lines] == [1, 2] and lines[0].actions[0] is not None
    assert lines[0].logged["total"] == pytest.approx(1.0 + 0.5 * lines[0].logged["components"]["rationale"])
    run(1)  # a run resumed from the checkpoint of step 1: keeps step 1, logs step 2 again
    assert [t.step for t in read_trajectories(log)] == [1, 2]
    run(0)  # a fresh run starts the file anew
    assert [t.step for t in read_trajectories(log)] == [1]


def test_bench_interop_rows_agree_with_the_log(tmp_path, monkeypatch):
    import sys

    spec = importlib.util.spec_from_file_location("bench_interop", REPO / "benchmarks" / "bench_interop.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_interop", bench)  # its dataclasses look their module up
    spec.loader.exec_module(bench)
    setup = bench.make_setup(24, 4, 8, 1, tmp_path)
    rows = [engine(setup) for engine in bench.ENGINES]
    assert [r.engine for r in rows][-1] == "verl compute_score"  # verl's reward function, next to TRL's
    assert [r.n for r in rows] == [24] * 5 and all(r.agree == 24 for r in rows)
    assert all(r.cpu_ms_per_completion > 0 for r in rows)
    assert sum(1 for _ in (tmp_path / "trl.jsonl").open()) == 24  # the logged row wrote every completion once
