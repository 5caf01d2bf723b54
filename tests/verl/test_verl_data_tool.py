"""Through verl 0.9.1's own code: ``RLHFDataset`` loads the ``--format verl`` export (every row kept, the image
decoded, the model's view as the ground truth says), the tool registry loads ``configs/verl/crop_tool.yaml`` and its
``execute`` cuts the right region for each family's convention, and the sample training config composes."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf
from PIL import Image
from verl.tools.tool_registry import initialize_tools_from_config
from verl.utils.dataset.rl_dataset import RLHFDataset

from tests.verl.conftest import N_RECORDS
from virl_train.env import LAST_TEXT

REPO = Path(__file__).resolve().parents[2]
TOOL_YAML = REPO / "configs" / "verl" / "crop_tool.yaml"
TRAIN_YAML = REPO / "configs" / "verl" / "qwen25vl_7b_virl.yaml"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def processor(family: str):
    """A Qwen processor over the family's tiny tokenizer and PIL image processor, without the video processor (the
    stock class needs torchvision, which this CPU torch cannot load)."""
    from transformers import Qwen2_5_VLProcessor
    from transformers.processing_utils import ProcessorMixin

    from virl_train.config import ModelConfig
    from virl_train.models import FAMILIES

    class ImageTextProcessor(Qwen2_5_VLProcessor):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            self.image_token, self.video_token = "<|image_pad|>", "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    fam = FAMILIES[family]
    return ImageTextProcessor(fam.image_processor(ModelConfig()), fam.tiny_tokenizer(), chat_template=CHAT_TEMPLATE)


def dataset(exported, tmp_path, *, filtered: bool) -> RLHFDataset:
    proc = processor(exported.family) if filtered else object()  # unfiltered: verl only checks it is set
    config = OmegaConf.create({
        "filter_overlong_prompts": filtered, "filter_overlong_prompts_workers": 1, "max_prompt_length": 4096,
        "cache_dir": str(tmp_path), "image_patch_size": 16 if exported.family == "qwen3_vl" else 14,
    })  # fmt: skip
    return RLHFDataset([str(exported.path)], tokenizer=getattr(proc, "tokenizer", None), config=config, processor=proc)


def original(exported, i: int) -> Image.Image:
    return Image.open(exported.image_root / exported.records[i].image.path).convert("RGB")


def test_rlhf_dataset_keeps_every_row_and_decodes_the_image(exported, tmp_path):
    ds = dataset(exported, tmp_path, filtered=True)  # the overlong filter drops any row that throws: none may
    assert len(ds) == N_RECORDS
    for i in range(N_RECORDS):
        item, rec = ds[i], exported.records[i]
        system, user = item["raw_prompt"]
        assert system["role"] == "system" and "<tool_call>" in system["content"][0]["text"]
        images = [c for c in user["content"] if c["type"] == "image"]
        texts = [c["text"] for c in user["content"] if c["type"] == "text"]
        assert len(images) == 1 and texts == [rec.question]  # one <image> marker, one image
        assert np.array_equal(np.asarray(images[0]["image"].convert("RGB")), np.asarray(original(exported, i)))
        assert item["agent_name"] == "tool_agent" and item["index"] == i
        truth = json.loads(item["reward_model"]["ground_truth"])
        assert item["tools_kwargs"]["crop"]["create_kwargs"]["convention"] == truth["convention"]
        assert truth["chain"] == [[list(b.as_tuple()) for b in s.boxes] for s in rec.chain]
        # what the model sees is the view the ground truth (and the box convention) assumes
        seen, _, _ = RLHFDataset._process_multi_modal_info(item["raw_prompt"], ds.image_patch_size, ds.config)
        assert seen[0].size == tuple(truth["resized"]) != original(exported, i).size


class Trajectory:
    """The one attribute of verl's ``AgentData`` the crop tool reads (importing the agent loop needs its server
    dependencies: vLLM/SGLang workers, uvicorn): the trajectory's chat messages."""

    def __init__(self, messages):
        self.messages = messages


def _call(tool, create_kwargs, traj, box):
    async def run():
        instance, _ = await tool.create(create_kwargs=create_kwargs)
        try:
            return await tool.execute(instance, {"bbox_2d": box}, agent_data=traj)
        finally:
            await tool.release(instance)

    return asyncio.run(run())


def _in_convention(box, convention, size, resized):
    """Original pixels → the model's numbers, by hand (not boxconv): the check on the tool's conversion."""
    (w, h), (rw, rh) = size, resized
    if convention == "qwen25_abs_resized":
        return [round(box[0] * rw / w), round(box[1] * rh / h), round(box[2] * rw / w), round(box[3] * rh / h)]
    return [round(box[0] * 1000 / w), round(box[1] * 1000 / h), round(box[2] * 1000 / w), round(box[3] * 1000 / h)]


def _from_convention(values, convention, size, resized):
    (w, h), (rw, rh) = size, resized
    sx, sy = (w / rw, h / rh) if convention == "qwen25_abs_resized" else (w / 1000, h / 1000)
    return [values[0] * sx, values[1] * sy, values[2] * sx, values[3] * sy]


def _around(box, size, half=30):
    """A 60 x 60 box centred on ``box``'s centre, moved inside the image: above the tool's 28-px minimum side, so
    the region cut is the box itself (snapped to whole pixels)."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    x1, y1 = min(max(0.0, cx - half), size[0] - 2 * half), min(max(0.0, cy - half), size[1] - 2 * half)
    return (x1, y1, x1 + 2 * half, y1 + 2 * half)


def test_tool_from_yaml_crops_the_region_in_the_family_convention(exported, tmp_path):
    (tool,) = initialize_tools_from_config(str(TOOL_YAML))
    assert type(tool).__name__ == "CropTool" and tool.name == "crop"
    ds = dataset(exported, tmp_path, filtered=False)
    other = {"qwen25_abs_resized": "qwen3_norm1000", "qwen3_norm1000": "qwen25_abs_resized"}
    for i in range(N_RECORDS):
        item, row = ds[i], exported.rows[i]
        truth = json.loads(row["reward_model"]["ground_truth"])
        kwargs = item["tools_kwargs"]["crop"]["create_kwargs"]
        conv, size, resized = truth["convention"], truth["image_size"], truth["resized"]
        target = _around(exported.records[i].chain[-1].boxes[0].as_tuple(), size)
        values = _in_convention(target, conv, size, resized)
        response, reward, metrics = _call(tool, kwargs, Trajectory(item["raw_prompt"]), values)
        assert metrics == {"action": "crop", "error": ""} and reward == 0.0
        assert response.text.startswith("<crop_result>") and len(response.image) == 1
        crop = np.asarray(response.image[0], dtype=np.float64)
        x1, y1, x2, y2 = _from_convention(values, conv, size, resized)
        region = (math.floor(x1), math.floor(y1), math.ceil(x2), math.ceil(y2))
        expected = original(exported, i).crop(region).resize(response.image[0].size, Image.Resampling.BICUBIC)
        assert np.abs(crop - np.asarray(expected, dtype=np.float64)).mean() < 1.0
        # the same numbers read in the other family's convention cut another region: the test can tell them apart
        wx1, wy1, wx2, wy2 = _from_convention(values, other[conv], size, resized)
        wrong = (max(0, math.floor(wx1)), max(0, math.floor(wy1)), min(size[0], math.ceil(wx2)),
                 min(size[1], math.ceil(wy2)))  # fmt: skip
        if wrong[2] - wrong[0] > 1 and wrong[3] - wrong[1] > 1:
            off = original(exported, i).crop(wrong).resize(response.image[0].size, Image.Resampling.BICUBIC)
            assert np.abs(crop - np.asarray(off, dtype=np.float64)).mean() > 5.0


def test_tool_keeps_the_env_budget_per_trajectory(exported, tmp_path):
    (tool,) = initialize_tools_from_config(str(TOOL_YAML))
    item = dataset(exported, tmp_path, filtered=False)[0]
    kwargs = item["tools_kwargs"]["crop"]["create_kwargs"]
    traj = Trajectory(item["raw_prompt"])
    box = [10, 10, 60, 60]
    texts = [_call(tool, kwargs, traj, box)[0] for _ in range(kwargs["max_actions"] + 1)]
    assert [r.image is not None for r in texts] == [True] * kwargs["max_actions"] + [False]
    assert texts[-2].text.endswith(LAST_TEXT) and "no crops are left" in texts[-1].text
    bad, _, metrics = _call(tool, kwargs, Trajectory(item["raw_prompt"]), [5, 5, 1])  # a new trajectory, a bad box
    assert bad.image is None and metrics["error"] == "malformed_box" and bad.text.startswith("<crop_error>")


FREE_FORM = ("reward.custom_reward_function.reward_kwargs.",)  # get_custom_reward_fn passes these on as keywords


def _leaves(tree, prefix=""):
    for key, value in tree.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            yield from _leaves(value, path)
        else:
            yield path


def _known(defaults: dict, path: str) -> bool:
    node = defaults
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return path.startswith(FREE_FORM)
        node = node[key]
    return True


def test_sample_training_config_composes_with_verl_defaults():
    from hydra import compose, initialize_config_dir
    from verl.trainer.ppo.reward import get_custom_reward_fn

    import verl.trainer.config as verl_config

    ours = yaml.safe_load(TRAIN_YAML.read_text())
    generated = Path(verl_config.__file__).parent / "_generated_ppo_trainer.yaml"
    defaults = OmegaConf.to_container(OmegaConf.load(generated), resolve=False)
    unknown = [k for k in _leaves({k: v for k, v in ours.items() if k not in ("hydra", "defaults")})
               if not _known(defaults, k)]  # fmt: skip
    assert unknown == []  # every key we set is one verl 0.9.1 knows
    with initialize_config_dir(config_dir=str(TRAIN_YAML.parent), version_base=None):
        cfg = compose(config_name=TRAIN_YAML.stem)
    assert cfg.actor_rollout_ref.rollout.multi_turn.enable and cfg.algorithm.adv_estimator == "grpo"
    assert cfg.actor_rollout_ref.model.path == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert initialize_tools_from_config(str(REPO / cfg.actor_rollout_ref.rollout.multi_turn.tool_config_path))
    fn = get_custom_reward_fn(cfg)
    assert fn.func.__name__ == "_call_with_kwargs" and fn.args[0].__module__ == "virl_train.interop.verl"
    assert fn.args[1] == {"preset": "full"}
