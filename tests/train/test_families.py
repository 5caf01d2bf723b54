"""virl_train.models: every family (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Idefics3) passes the same rollout tests with its
tiny random model: batched = one by one (greedy, ragged, with crops), sampling log-probs = the loss forward, the
KV-cache path over a multi-image conversation = one full forward, seeded determinism, padding invariance; plus
family detection and its one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from PIL import Image

from tests.train.kv_cache import cached_logprobs
from virl_data.core.errors import ConfigError
from virl_train.config import MODEL_FAMILIES, LoraConfig, ModelConfig, load_config
from virl_train.env import CropEnv
from virl_train.models import FAMILIES, family_for, family_from_model_type
from virl_train.models.idefics3 import pad_to_square
from virl_train.policy import load_policy, save_policy
from virl_train.rollout import batch_inputs, completion_logprobs, rollout_batch, rollout_episode

MIN_PX, MAX_PX = 56 * 56, 224 * 224
pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(family: str, **kw) -> ModelConfig:
    f = FAMILIES[family]
    kw = {"name_or_path": f.tiny_name, "dtype": "float32", "min_pixels": MIN_PX, "max_pixels": MAX_PX,
          "lora": LoraConfig(enabled=False), "box_convention": f.default_convention, **kw}
    return ModelConfig(**kw)


@pytest.fixture(scope="module", params=list(FAMILIES))
def policy(request):
    return load_policy(_cfg(request.param), seed=0)


@pytest.fixture(scope="module")
def two_records():
    from tests.conftest import make_record

    rng = np.random.default_rng(0)
    big = Image.fromarray((rng.random((336, 448, 3)) * 255).astype("uint8"))
    small = Image.fromarray((np.random.default_rng(5).random((200, 300, 3)) * 255).astype("uint8"))
    records = [make_record(1, size=(448, 336), chain=[[(100, 80, 230, 170)]]),
               make_record(2, size=(300, 200), question="How many circles are there?")]
    return records, [big, small]


def _crops(policy) -> tuple[str, str, str]:
    if policy.config.box_convention == "qwen25_abs_resized":
        return "<crop>[63, 42, 126, 84]</crop>", "<crop>[10, 10, 200, 150]</crop>", "<crop>[0, 0, 60, 60]</crop>"
    return "<crop>[100, 100, 400, 350]</crop>", "<crop>[0, 0, 900, 800]</crop>", "<crop>[500, 500, 700, 900]</crop>"


class _ForcedEnv(CropEnv):
    """Acts on ``texts[turn]`` whatever the model wrote: rows get crops, errors and answers at different turns."""

    def __init__(self, policy, texts: tuple[str, ...]) -> None:
        super().__init__(policy.config.box_convention, max_actions=2, min_pixels=MIN_PX, max_pixels=MAX_PX,
                         factor=policy.family.factor)  # fmt: skip
        self.texts, self.turn = texts, 0

    def reset(self, image, question):
        self.turn = 0
        return super().reset(image, question)

    def step(self, text: str):
        self.turn += 1
        return super().step(self.texts[min(self.turn, len(self.texts)) - 1])


def _forced(policy):
    a, b, c = _crops(policy)
    return ((a, b, "<answer>red</answer>"), ("<crop>[1, 2, 3]</crop>", c, "<answer>x</answer>"),
            ("<answer>blue</answer>",), (b, "<answer>red</answer>"), (c, a, "<answer>no</answer>"),
            (a, "<crop>[1, 2, 3]</crop>", "<answer>red</answer>"))  # fmt: skip


def _envs(policy):
    return [_ForcedEnv(policy, t) for t in _forced(policy)]


def _check_invariants(policy, r) -> None:
    e = r.episode
    assert len(e.loss_mask) == len(e.completion_ids)
    pads = list(e.prompt_ids).count(policy.image_token_id) + list(e.completion_ids).count(policy.image_token_id)
    assert pads == sum(im.n_tokens for im in r.images)
    starts = list(e.prompt_ids).count(policy.vision_start_id) + list(e.completion_ids).count(policy.vision_start_id)
    assert starts == len(r.images)
    assert all(e.completion_ids[i] not in policy.banned_ids for i in np.flatnonzero(e.loss_mask))


def test_greedy_batch_equals_the_episodes_one_by_one(policy, two_records):
    records, images = two_records
    gen = {"max_new_tokens": 6, "greedy": True}
    batch = rollout_batch(policy, _envs(policy), records, images, 3, **gen)
    alone = [rollout_episode(policy, env, records[k // 3], images[k // 3], **gen)
             for k, env in enumerate(_envs(policy))]  # fmt: skip
    assert [r.episode for r in batch] == [r.episode for r in alone]
    assert [len(r.images) - 1 for r in batch[:3]] == [2, 1, 0]  # ragged: two crops, one, none
    for b, a in zip(batch, alone):
        _check_invariants(policy, b)
        assert np.allclose(b.logprobs, a.logprobs, atol=1e-5)


def test_sampling_logprobs_match_the_loss_forward_and_seeds_repeat(policy, two_records):
    records, images = two_records

    def sample(seed0):
        gens = [torch.Generator().manual_seed(seed0 + s) for s in range(6)]
        return rollout_batch(policy, _envs(policy), records, images, 3, max_new_tokens=6, temperature=0.7,
                             generator=gens)  # fmt: skip

    a, b, c = sample(0), sample(0), sample(100)
    assert [r.episode for r in a] == [r.episode for r in b] and [r.logprobs for r in a] == [r.logprobs for r in b]
    assert [r.episode for r in a] != [r.episode for r in c]
    assert sum(len(r.images) - 1 for r in a) >= 4
    with torch.no_grad():
        lp = completion_logprobs(policy.model, batch_inputs(policy, a), temperature=0.7)
    for row, r in zip(lp, a):
        n = len(r.episode.completion_ids)
        assert torch.allclose(row[:n], torch.tensor(r.logprobs), atol=1e-5) and (row[n:] == 0).all()



def test_the_cache_path_over_crops_equals_one_forward_and_padding_changes_nothing(policy, two_records):
    records, images = two_records
    a, b, _ = _crops(policy)
    scripted = rollout_episode(policy, _ForcedEnv(policy, (a, b, "<answer>red</answer>")), records[0], images[0],
                               max_new_tokens=8, script=("look " + a, "and " + b, "<answer>red</answer>"))
    assert len(scripted.images) == 3 and scripted.episode.answer == "red"
    short = rollout_episode(policy, _ForcedEnv(policy, ("<answer>x</answer>",)), records[1], images[1],
                            max_new_tokens=3, script=("<answer>x</answer>",))
    with torch.no_grad():
        full = completion_logprobs(policy.model, batch_inputs(policy, [scripted]))[0]
        together = completion_logprobs(policy.model, batch_inputs(policy, [short, scripted]))
        alone_short = completion_logprobs(policy.model, batch_inputs(policy, [short]))[0]
    assert torch.allclose(full, cached_logprobs(policy, scripted), atol=1e-4)
    assert torch.allclose(together[1], full, atol=1e-5)
    n = len(short.episode.completion_ids)
    assert torch.allclose(together[0, :n], alone_short, atol=1e-5) and (together[0, n:] == 0).all()


def test_the_image_matters_and_save_load_keeps_the_family(policy, two_records, tmp_path):
    records, images = two_records
    r = rollout_episode(policy, _ForcedEnv(policy, ("<answer>x</answer>",)), records[0], images[0],
                        max_new_tokens=3, script=("<answer>x</answer>",))
    grey = Image.new("RGB", images[0].size, (200, 200, 200))
    r_grey = rollout_episode(policy, _ForcedEnv(policy, ("<answer>x</answer>",)), records[0], grey,
                             max_new_tokens=3, script=("<answer>x</answer>",))
    with torch.no_grad():
        lp = completion_logprobs(policy.model, batch_inputs(policy, [r]))
        lp_grey = completion_logprobs(policy.model, batch_inputs(policy, [r_grey]))
    assert not torch.allclose(lp, lp_grey)  # pixels reach the logits (a constant image is not dropped)
    out = save_policy(policy, tmp_path / "p")
    assert json.loads((out / "config.json").read_text())["model_type"] in policy.family.model_types
    q = load_policy(ModelConfig(**{**vars(policy.config), "name_or_path": str(out)}))
    assert q.family is policy.family
    with torch.no_grad():
        assert torch.allclose(completion_logprobs(q.model, batch_inputs(q, [r])), lp, atol=1e-5)


# --- detection and errors (no model built) -------------------------------------------------------------------------
def test_config_names_every_family():
    assert tuple(FAMILIES) == MODEL_FAMILIES
    assert load_config(None, ["model.family=idefics3"]).model.family == "idefics3"
    with pytest.raises(ConfigError, match="model.family"):
        load_config(None, ["model.family=llava"])


def test_family_detection_and_one_line_errors(tmp_path):
    assert family_for(ModelConfig(name_or_path="tiny-qwen3-vl", box_convention="qwen3_norm1000")).name == "qwen3_vl"
    assert family_from_model_type("smolvlm").name == "idefics3"
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava"}))
    with pytest.raises(ConfigError) as err:
        family_for(ModelConfig(name_or_path=str(tmp_path)))
    msg = str(err.value)
    assert "\n" not in msg and "'llava'" in msg and all(name in msg for name in FAMILIES)
    with pytest.raises(ConfigError, match="cannot use model.box_convention=qwen25_abs_resized"):
        family_for(ModelConfig(name_or_path="tiny-idefics3", box_convention="qwen25_abs_resized"))
    with pytest.raises(ConfigError, match="unknown tiny model"):
        family_for(ModelConfig(name_or_path="tiny-llava"))


def test_idefics3_pads_crops_to_square_without_stretching():
    wide = Image.new("RGB", (60, 20), (255, 0, 0))
    square = pad_to_square(wide)
    assert square.size == (60, 60)
    px = np.asarray(square)
    assert (px[20:40] == [255, 0, 0]).all() and (px[:20] == 0).all() and (px[40:] == 0).all()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_tiny_size_base_doubles_width_and_depth_and_runs_an_episode(family, two_records, tmp_path):
    small = load_policy(_cfg(family), seed=0)
    base = load_policy(_cfg(family, tiny_size="base"), seed=0)
    text = base.model.config.get_text_config()
    assert (text.hidden_size, text.num_hidden_layers) == (128, 4)
    assert (text.hidden_size // text.num_attention_heads) == 16  # head size kept: M-RoPE sections still sum right
    n_small, n_base = (sum(p.numel() for p in p_.model.parameters()) for p_ in (small, base))
    assert 3 * n_small < n_base
    records, images = two_records
    r = rollout_episode(base, _ForcedEnv(base, _forced(base)[0]), records[0], images[0], max_new_tokens=6,
                        greedy=True)
    assert len(r.images) == 3  # the image and two crops went through the bigger towers
    _check_invariants(base, r)
    save_policy(base, tmp_path / "p")
    again = load_policy(_cfg(family, name_or_path=str(tmp_path / "p")))
    assert again.model.config.get_text_config().num_hidden_layers == 4  # a checkpoint keeps its size, whatever model.tiny_size says
    with pytest.raises(ConfigError, match="model.tiny_size"):
        load_config(None, ["model.tiny_size=huge"])
