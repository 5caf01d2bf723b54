"""virl_train.rollout: scripted and sampled episodes with the real tiny Qwen2.5-VL, masks, spans, boxes, budgets,
and the loss forward (cached sampling log-probs = batch log-probs; padding invariance)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from PIL import Image

from tests.train.kv_cache import cached_logprobs
from virl_data.core.errors import ConfigError
from virl_data.core.types import Box
from virl_train.config import LoraConfig, ModelConfig
from virl_train.env import CROP_TEXT, CropEnv
from virl_train.policy import TINY_NAME, load_policy
from virl_train.rollout import (
    batch_inputs,
    completion_logprobs,
    rollout_batch,
    rollout_episode,
    rollout_group,
    sample_token,
    turn_stopped,
)
from virl_train.types import ActionKind

MIN_PX, MAX_PX = 56 * 56, 224 * 224
SCRIPT = (
    "The small square is top left. <crop>[63, 42, 126, 84]</crop>",  # resized 252 x 168 → original x 16/9, y 2
    "Not sure yet. <crop>[1, 2, 3]</crop>",  # malformed: INVALID, no image inserted
    "It is red. <answer>red</answer>",
)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def policy():
    cfg = ModelConfig(name_or_path=TINY_NAME, dtype="float32", min_pixels=MIN_PX, max_pixels=MAX_PX,
                      lora=LoraConfig(enabled=False))
    return load_policy(cfg, seed=0)


@pytest.fixture(scope="module")
def image() -> Image.Image:
    return Image.fromarray((np.random.default_rng(0).random((336, 448, 3)) * 255).astype("uint8"))


def _env(max_actions: int = 2, **kw) -> CropEnv:
    kw = {"min_pixels": MIN_PX, "max_pixels": MAX_PX, **kw}
    return CropEnv("qwen25_abs_resized", max_actions=max_actions, **kw)


@pytest.fixture(scope="module")
def record():
    from tests.conftest import make_record

    return make_record(1, size=(448, 336), chain=[[(100, 80, 230, 170)], [(300, 200, 400, 300)]])


def _check_invariants(policy, r) -> None:
    """Mask 1 exactly on the action spans; spans in order and inside the completion; images ↔ pad tokens."""
    e = r.episode
    assert len(e.loss_mask) == len(e.completion_ids) and set(e.loss_mask) <= {0, 1}
    covered = np.zeros(len(e.completion_ids), dtype=int)
    prev_end = 0
    for a in e.actions:
        s, t = a.token_span
        assert prev_end <= s < t <= len(e.completion_ids)
        covered[s:t] += 1
        prev_end = t
    assert covered.tolist() == list(e.loss_mask)
    pads = list(e.prompt_ids).count(policy.image_token_id) + list(e.completion_ids).count(policy.image_token_id)
    assert pads == sum(im.n_tokens for im in r.images)
    assert all(e.completion_ids[i] != policy.image_token_id for i in np.flatnonzero(e.loss_mask))


# --- scripted (teacher-forced) episodes ---------------------------------------------------------------------------
def test_scripted_rollout_masks_spans_boxes_and_crops(policy, record, image):
    r = rollout_episode(policy, _env(), record, image, max_new_tokens=8, script=SCRIPT)
    e = r.episode
    _check_invariants(policy, r)
    assert [a.kind for a in e.actions] == [ActionKind.CROP, ActionKind.INVALID, ActionKind.ANSWER]
    assert e.answer == "red" and e.n_turns == 3 and e.format_ok and r.logprobs is None
    # spans decode to the turn texts (budget does not cut scripts)
    for a, text in zip(e.actions, SCRIPT):
        assert policy.tokenizer.decode(e.completion_ids[a.token_span[0]:a.token_span[1]]) == text
    assert r.turn_texts == SCRIPT and e.actions[1].error == "malformed_box"
    # qwen25_abs_resized: the model saw 252 x 168, so x scales by 448/252 = 16/9 and y by 336/168 = 2
    assert e.actions[0].box == Box(112.0, 84.0, 224.0, 168.0)
    # images: the original, then the one crop (the INVALID turn inserts none); the crop as the env resized it
    assert len(r.images) == 2 and r.images[0].size == (252, 168)
    crop = _env().view_size(112, 84)
    assert r.images[1].size == crop and r.images[1].n_tokens == crop[0] * crop[1] // 28**2
    text = policy.tokenizer.decode(e.completion_ids)
    assert CROP_TEXT.format(index=1, limit=2) + "<|vision_start|>" in text
    assert text.count("<|vision_start|>") == 1 and "<crop_error>" in text
    # env tokens: everything between the spans; the first one closes the model turn
    t0 = e.actions[0].token_span[1]
    assert e.completion_ids[t0] == policy.im_end_id and e.loss_mask[t0] == 0
    assert e.prompt_ids[-3:] == tuple(policy.text_ids("<|im_start|>assistant\n"))


def test_script_that_runs_out_and_the_pixel_limit_check(policy, record, image):
    r = rollout_episode(policy, _env(), record, image, max_new_tokens=8, script=SCRIPT[:1])
    assert r.episode.answer is None and not r.episode.format_ok and r.episode.n_turns == 1
    with pytest.raises(ConfigError, match="min_pixels/max_pixels"):  # env and model disagree on the view size
        rollout_episode(policy, _env(max_pixels=MAX_PX * 4), record, image, max_new_tokens=8, script=SCRIPT)


# --- sampled episodes ---------------------------------------------------------------------------------------------
def test_sampled_rollouts_never_crash_and_are_deterministic(policy, record, image):
    runs = []
    for seed in (0, 1, 0):
        gen = torch.Generator().manual_seed(seed)
        runs.append(rollout_episode(policy, _env(), record, image, max_new_tokens=6, temperature=1.0, generator=gen))
    for r in runs:
        _check_invariants(policy, r)
        e = r.episode
        assert 1 <= e.n_turns <= 3 and sum(e.loss_mask) <= 6 * 3
        assert len(r.turn_texts) == e.n_turns and len(r.logprobs) == len(e.completion_ids)
        assert all(lp <= 0 for lp in r.logprobs)
    assert runs[0].episode == runs[2].episode and runs[0].turn_texts == runs[2].turn_texts
    assert runs[0].episode.completion_ids != runs[1].episode.completion_ids
    greedy = [rollout_episode(policy, _env(), record, image, max_new_tokens=5, greedy=True) for _ in range(2)]
    assert greedy[0].episode == greedy[1].episode


def test_episode_budget_caps_the_sampled_tokens(policy, record, image):
    r = rollout_episode(policy, _env(max_actions=4), record, image, max_new_tokens=4, max_episode_tokens=6,
                        generator=torch.Generator().manual_seed(0))
    e = r.episode
    assert sum(e.loss_mask) <= 6 and not e.format_ok
    # a random model never closes an action tag: each turn hits its budget and the env records INVALID no_action
    assert [a.token_span[1] - a.token_span[0] for a in e.actions][:1] == [4]
    assert all(a.kind is ActionKind.INVALID for a in e.actions)


def test_stop_rule_and_a_stop_token_ends_the_turn(policy, record, image):
    ids = policy.text_ids("look <crop>[1, 2, 30, 40]</crop>")
    assert turn_stopped(policy, ids) and not turn_stopped(policy, ids[:-2])
    assert turn_stopped(policy, policy.text_ids("x <answer>red</answer>"))
    assert turn_stopped(policy, [*policy.text_ids("hm"), policy.im_end_id])
    assert not turn_stopped(policy, policy.text_ids("a > b"))
    # a real model whose logits are all equal: greedy takes id 0 = <|endoftext|>, a stop token, every turn
    flat = load_policy(policy.config, seed=0)
    with torch.no_grad():
        flat.model.lm_head.weight.zero_()
    r = rollout_episode(flat, _env(), record, image, max_new_tokens=8, greedy=True)
    assert r.turn_texts == ("<|endoftext|>",) * 3 and r.episode.format_ok  # stopped, not cut by the budget
    assert [a.error for a in r.episode.actions] == ["no_action"] * 3


def test_sample_token_options():
    logits = torch.tensor([0.0, 2.0, 1.0, 5.0])
    gen = torch.Generator().manual_seed(0)
    assert sample_token(logits, greedy=True)[0] == 3
    assert sample_token(logits, greedy=True, banned=[3])[0] == 1
    assert {sample_token(logits, top_p=0.5, generator=gen)[0] for _ in range(20)} == {3}
    drawn = {sample_token(logits, temperature=5.0, generator=gen, banned=[3])[0] for _ in range(60)}
    assert drawn == {0, 1, 2}
    tok, lp = sample_token(logits, temperature=2.0, generator=gen)
    assert lp == pytest.approx(torch.log_softmax(logits / 2.0, -1)[tok].item())


def test_rollout_group_is_deterministic_given_its_generator(policy, record, image):
    def group():
        return rollout_group(policy, _env, record, image, 3, max_new_tokens=4,
                             generator=torch.Generator().manual_seed(7))

    a, b = group(), group()
    assert len(a) == 3 and [r.episode for r in a] == [r.episode for r in b]
    assert len({r.episode.completion_ids for r in a}) > 1


# --- batched rollouts (a group or a whole step sampled together) ----------------------------------------------------
class _ForcedEnv(CropEnv):
    """A crop env that acts on ``texts[turn]`` whatever the model wrote: a random model rarely writes a valid crop,
    this one makes the rows of a batch get crops (images of different sizes), errors and answers at different turns."""

    def __init__(self, texts: tuple[str, ...]) -> None:
        super().__init__("qwen25_abs_resized", max_actions=2, min_pixels=MIN_PX, max_pixels=MAX_PX)
        self.texts, self.turn = texts, 0

    def reset(self, image, question):
        self.turn = 0
        return super().reset(image, question)

    def step(self, text: str):
        self.turn += 1
        return super().step(self.texts[min(self.turn, len(self.texts)) - 1])


CROP_A, CROP_B, CROP_C = "<crop>[63, 42, 126, 84]</crop>", "<crop>[10, 10, 200, 150]</crop>", "<crop>[0, 0, 60, 60]</crop>"
FORCED = (  # per row: crop, crop, answer / malformed, crop / answer at once / crop, answer / …
    (CROP_A, CROP_B, "<answer>red</answer>"), ("<crop>[1, 2, 3]</crop>", CROP_C, "<answer>x</answer>"),
    ("<answer>blue</answer>",), (CROP_B, "<answer>red</answer>"), (CROP_C, CROP_A, "<answer>no</answer>"),
    (CROP_A, "<crop>[1, 2, 3]</crop>", "<answer>red</answer>"),
)  # fmt: skip


@pytest.fixture(scope="module")
def two_records(record, image):
    """Two records whose prompts differ in length (the batch pre-fill is ragged)."""
    from tests.conftest import make_record

    other = make_record(2, size=(300, 200), question="How many circles are there?")
    small = Image.fromarray((np.random.default_rng(5).random((200, 300, 3)) * 255).astype("uint8"))
    return [record, other], [image, small]


def _one_by_one(policy, records, images, n, **gen):
    """The episodes of ``rollout_batch(…, n, generator=[g_0, …])`` sampled one at a time, in the same forced envs."""
    gens = gen.pop("generators", [None] * len(FORCED))
    return [rollout_episode(policy, _ForcedEnv(FORCED[k]), records[k // n], images[k // n], generator=gens[k], **gen)
            for k in range(n * len(records))]  # fmt: skip


@pytest.mark.parametrize("budgets", [(10, None), (6, 9)], ids=["turn_budget", "episode_budget"])
def test_greedy_batch_equals_the_episodes_one_by_one(policy, two_records, budgets):
    """Same prompts pre-filled once, rows diverging at the env's crops (ragged replies with images), rows finishing
    at different turns or cut by their budget: token for token what ``rollout_episode`` gives alone."""
    records, images = two_records
    gen = {"max_new_tokens": budgets[0], "max_episode_tokens": budgets[1], "greedy": True}
    batch = rollout_batch(policy, [_ForcedEnv(t) for t in FORCED], records, images, 3, **gen)
    alone = _one_by_one(policy, records, images, 3, **gen)
    assert [r.episode for r in batch] == [r.episode for r in alone]
    assert [r.turn_texts for r in batch] == [r.turn_texts for r in alone]
    assert [r.record_id for r in batch] == [records[0].id] * 3 + [records[1].id] * 3
    for b, a in zip(batch, alone):
        _check_invariants(policy, b)
        assert [im.size for im in b.images] == [im.size for im in a.images]
        assert all(torch.equal(x.pixel_values, y.pixel_values) for x, y in zip(b.images, a.images))
        assert np.allclose(b.logprobs, a.logprobs, atol=1e-5)
    # the forced envs really made the batch ragged: crops in some rows, an early answer in another
    assert [len(r.images) - 1 for r in batch[:3]] == [2, 1, 0]
    assert batch[2].episode.n_turns == 1 and batch[2].episode.answer == "blue"
    if budgets[1] is not None:  # 9 tokens: the second turn is cut by the episode budget
        assert not batch[0].episode.format_ok and sum(batch[0].episode.loss_mask) == 9


def test_batched_sampling_logprobs_match_the_loss_forward(policy, two_records):
    records, images = two_records
    gens = [torch.Generator().manual_seed(s) for s in range(6)]
    batch = rollout_batch(policy, [_ForcedEnv(t) for t in FORCED], records, images, 3, max_new_tokens=8,
                          temperature=0.7, generator=gens)  # fmt: skip
    assert sum(len(r.images) - 1 for r in batch) >= 4  # crops inside the completions
    with torch.no_grad():
        lp = completion_logprobs(policy.model, batch_inputs(policy, batch), temperature=0.7)
    for row, r in zip(lp, batch):
        n = len(r.episode.completion_ids)
        assert torch.allclose(row[:n], torch.tensor(r.logprobs), atol=1e-5) and (row[n:] == 0).all()


def test_a_seeded_batch_is_deterministic_and_samples_each_episode_as_alone(policy, two_records):
    records, images = two_records

    def batch(seed0):
        gens = [torch.Generator().manual_seed(seed0 + s) for s in range(6)]
        return rollout_batch(policy, [_ForcedEnv(t) for t in FORCED], records, images, 3, max_new_tokens=6,
                             generator=gens)  # fmt: skip

    a, b, c = batch(0), batch(0), batch(100)
    assert [r.episode for r in a] == [r.episode for r in b] and [r.logprobs for r in a] == [r.logprobs for r in b]
    assert [r.episode for r in a] != [r.episode for r in c]
    assert len({r.episode.completion_ids for r in a[:3]}) == 3  # one prompt, three different samples
    # row k draws from its own generator: the episode rollout_episode samples with that generator
    alone = _one_by_one(policy, records, images, 3, max_new_tokens=6,
                        generators=[torch.Generator().manual_seed(s) for s in range(6)])  # fmt: skip
    assert [r.episode for r in a] == [r.episode for r in alone]


def test_rollout_batch_argument_checks(policy, record, image):
    with pytest.raises(ValueError, match="need as many images"):
        rollout_batch(policy, [_env()], [record], [image], 2, max_new_tokens=4)
    with pytest.raises(ValueError, match="1 generators for 2 episodes"):
        rollout_batch(policy, [_env(), _env()], [record], [image], 2, max_new_tokens=4,
                      generator=[torch.Generator()])  # fmt: skip
    with pytest.raises(ConfigError, match="max_new_tokens"):
        rollout_batch(policy, [_env()], [record], [image], max_new_tokens=0)
    (r,) = rollout_batch(policy, [_env()], [record], [image], max_new_tokens=4, max_episode_tokens=0)
    assert r.episode.n_turns == 0 and not r.episode.format_ok and r.episode.completion_ids == ()


def test_lora_policy_rolls_out(record, image):
    cfg = ModelConfig(name_or_path=TINY_NAME, dtype="float32", min_pixels=MIN_PX, max_pixels=MAX_PX,
                      lora=LoraConfig(enabled=True, r=2, alpha=4))
    lora = load_policy(cfg, seed=0)
    lora.model.train()
    r = rollout_episode(lora, _env(), record, image, max_new_tokens=3, generator=torch.Generator().manual_seed(0))
    _check_invariants(lora, r)
    assert lora.model.training  # the mode is restored after sampling in eval mode


# --- the loss forward ---------------------------------------------------------------------------------------------

def test_batch_logprobs_match_sampling_and_the_cached_multi_image_path(policy, record, image):
    sampled = rollout_episode(policy, _env(), record, image, max_new_tokens=6, temperature=0.7,
                              generator=torch.Generator().manual_seed(3))
    scripted = rollout_episode(policy, _env(), record, image, max_new_tokens=8, script=SCRIPT)
    with torch.no_grad():
        lp = completion_logprobs(policy.model, batch_inputs(policy, [sampled]), temperature=0.7)[0]
        lp_script = completion_logprobs(policy.model, batch_inputs(policy, [scripted]))[0]
    assert torch.allclose(lp, torch.tensor(sampled.logprobs), atol=1e-5)
    # the cache path with a crop image in the middle gives the same numbers as one full forward
    assert torch.allclose(lp_script, cached_logprobs(policy, scripted), atol=1e-4)
    assert (lp_script[torch.tensor(scripted.episode.loss_mask) == 0] == 0).all()


def test_batch_inputs_and_padding_invariance(policy, record, image):
    long = rollout_episode(policy, _env(), record, image, max_new_tokens=8, script=SCRIPT)
    from tests.conftest import make_record

    other = make_record(2, size=(300, 200), question="How many circles are there?")
    small = Image.fromarray((np.random.default_rng(5).random((200, 300, 3)) * 255).astype("uint8"))
    short = rollout_episode(policy, _env(), other, small, max_new_tokens=3,
                            generator=torch.Generator().manual_seed(1))
    rollouts = [short, long]
    batch = batch_inputs(policy, rollouts, "cpu")
    e_s, e_l = short.episode, long.episode
    assert batch.input_ids.shape == (2, max(len(e.prompt_ids) + len(e.completion_ids) for e in (e_s, e_l)))
    assert batch.completion_mask.shape == (2, len(e_l.completion_ids))
    assert batch.completion_mask[0].tolist() == list(e_s.loss_mask) + [0.0] * (
        len(e_l.completion_ids) - len(e_s.completion_ids))
    assert int(batch.attention_mask[0].sum()) == len(e_s.prompt_ids) + len(e_s.completion_ids)
    assert batch.image_grid_thw.shape[0] == len(short.images) + len(long.images)
    assert int(batch.mm_token_type_ids.sum()) == sum(im.n_tokens for r in rollouts for im in r.images)
    with torch.no_grad():
        together = completion_logprobs(policy.model, batch)
        alone = [completion_logprobs(policy.model, batch_inputs(policy, [r]))[0] for r in rollouts]
    for row, solo, r in zip(together, alone, rollouts):
        n = len(r.episode.completion_ids)
        assert torch.allclose(row[:n], solo, atol=1e-5) and (row[n:] == 0).all()
    logp = completion_logprobs(policy.model, batch)  # differentiable for the loss
    (logp.sum()).backward()
    assert policy.model.lm_head.weight.grad is not None
    policy.model.zero_grad(set_to_none=True)
