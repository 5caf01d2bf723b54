"""virl_train.config: strict YAML loading, dotted overrides, clear errors, save/load round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from virl_data.core.errors import ConfigError
from virl_train.config import (
    TrainConfig,
    all_keys,
    config_to_dict,
    load_config,
    save_config,
)

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_defaults_match_the_method_spec():
    cfg = load_config(None)
    assert cfg == TrainConfig()
    assert (cfg.env.max_actions, cfg.env.min_crop, cfg.env.max_aspect) == (4, 28, 100.0)
    assert cfg.model.box_convention == "qwen25_abs_resized"


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_config_yaml_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, TrainConfig)


def test_configs_folder_has_tiny_cpu():
    assert "tiny_cpu.yaml" in [p.name for p in CONFIGS]
    cfg = load_config(CONFIGS[[p.name for p in CONFIGS].index("tiny_cpu.yaml")])
    assert cfg.run.mixed_precision == "fp32" and cfg.run.max_steps == 3


def test_overrides_parse_values_with_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("env:\n  max_actions: 2\noptim:\n  lr: 0.1\n")
    cfg = load_config(
        path,
        [
            "env.max_actions=3",
            "optim.lr=1e-6",  # YAML 1.1 reads this as a string: still a float here
            "model.lora.enabled=false",
            "model.lora.target_modules=[q_proj, v_proj]",
            "data.limit=null",
            "rewards.params.iou=0.5",
            "rewards.params.nested.tau=0.1",
            "grpo.clip_eps=1",
        ],
    )
    assert cfg.env.max_actions == 3
    assert cfg.optim.lr == 1e-6
    assert cfg.model.lora.enabled is False
    assert cfg.model.lora.target_modules == ["q_proj", "v_proj"]
    assert cfg.data.limit is None
    assert cfg.rewards.params == {"iou": 0.5, "nested": {"tau": 0.1}}
    assert cfg.grpo.clip_eps == 1.0 and isinstance(cfg.grpo.clip_eps, float)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "env.max_actons=2",
            "unknown config key 'env.max_actons'; did you mean 'env.max_actions'?",
        ),
        ("max_actions=2", "did you mean 'env.max_actions'?"),
        ("optim.lr_rate=1", "did you mean 'optim.lr'?"),
        ("modle.name_or_path=x", "did you mean 'model'?"),
        ("model.lora.rank=8", "unknown config key 'model.lora.rank'"),
        ("env.max_actions=four", "env.max_actions: expected int, got 'four'"),
        ("env.max_actions=true", "env.max_actions: expected int, got True"),
        ("env.max_actions=2.5", "env.max_actions: expected int, got 2.5"),
        ("optim.lr=fast", "optim.lr: expected float, got 'fast'"),
        ("model.lora.enabled=1", "model.lora.enabled: expected bool, got 1"),
        (
            "model.lora.target_modules=q_proj",
            "model.lora.target_modules: expected list[str], got 'q_proj'",
        ),
        (
            "model.lora.target_modules=[1]",
            "model.lora.target_modules[0]: expected str, got 1",
        ),
        (
            "grpo.loss_agg=sum",
            "grpo.loss_agg: expected one of token_mean, seq_mean, got 'sum'",
        ),
        ("model.box_convention=coco_xywh", "model.box_convention: expected one of"),
        (
            "optim.schedule=step",
            "optim.schedule: expected one of cosine, linear, constant",
        ),
        ("grpo.group_size=1", "grpo.group_size: must be >= 2, got 1"),
        ("env.max_actions=-1", "env.max_actions: must be >= 0"),
        ("env=3", "env: expected a mapping"),
        ("env.max_actions.x=1", "env.max_actions: expected int"),
        ("rewards.params=[1]", "rewards.params: expected dict"),
        ("novalue", "must look like a.b.c=value"),
        ("a..b=1", "must look like a.b.c=value"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert message in str(info.value)


def test_unknown_key_in_yaml_names_dotted_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("grpo:\n  klcoef: 0.1\n")
    with pytest.raises(
        ConfigError, match=r"'grpo.klcoef'; did you mean 'grpo.kl_coef'"
    ):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n- b\n", "must be a mapping"),
        ("env: [1\n", "invalid YAML"),
        ("run: 3\n", "run: expected a mapping"),
    ],
)
def test_bad_yaml_files(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_missing_file_and_empty_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty) == TrainConfig()


def test_save_load_round_trip(tmp_path):
    cfg = load_config(
        None,
        ["env.frame=last_crop", "rewards.params.tau_err=0.2", "data.eval_split=null"],
    )
    path = save_config(cfg, tmp_path / "out" / "config.yaml")
    assert load_config(path) == cfg
    assert config_to_dict(cfg)["env"]["frame"] == "last_crop"
    assert not list(
        path.parent.glob(".*.tmp")
    )  # the atomic write left no temporary file


def test_all_keys_are_dotted_leaves():
    keys = all_keys()
    assert "model.lora.r" in keys and "run.mixed_precision" in keys
    assert "model" not in keys and "model.lora" not in keys
    assert len(keys) == len(set(keys))
