"""Training configuration: stdlib dataclasses nested by component, one YAML loader, dotted command-line overrides.

Layout (every field has a default, so an empty YAML is a valid config)::

    TrainConfig
      model:   ModelConfig    name_or_path, family, box_convention, box_scale, min_pixels, max_pixels, dtype, tiny_size, lora
      data:    DataConfig     path, train_split, eval_split, limit
      env:     EnvConfig      max_actions, min_crop, max_aspect, action_format, oob_tol, frame
      rewards: RewardsConfig  preset, params (a free mapping, validated by the rewards module)
      grpo:    GRPOConfig     group_size, clip_eps, kl_coef, loss_agg, batch_size, temperature, max_new_tokens, ...
      optim:   OptimConfig    lr, weight_decay, schedule, warmup_steps, grad_clip, grad_accum
      run:     RunConfig      seed, max_steps, out_dir, log_every, save_every, mixed_precision

``load_config(path, overrides)`` reads the YAML (``yaml.safe_load``), applies ``a.b.c=value`` overrides (each value
parsed by ``yaml.safe_load``, so ``3``, ``1.5``, ``true``, ``[q_proj, v_proj]`` and ``null`` work) and builds the
dataclasses with strict keys. Errors are ``ConfigError`` with the dotted key:

- an unknown key names the nearest valid one: ``unknown config key 'env.max_actons'; did you mean 'env.max_actions'?``
- a wrong type names key, expected type and value: ``env.max_actions: expected int, got 'four'``
- a value outside its choices or range names them: ``grpo.loss_agg: expected one of token_mean, seq_mean, got 'sum'``

Floats accept ints (``lr: 1``) and numeric strings: YAML 1.1 reads ``1e-6`` (no dot) as a *string*, a classic trap.
Precision is spelled ``fp32 | bf16 | fp16`` rather than accelerate's ``no`` because YAML reads a bare ``no`` as False.

Example:
    >>> cfg = load_config(None, ["env.max_actions=2", "optim.lr=1e-6"])
    >>> cfg.env.max_actions, cfg.optim.lr
    (2, 1e-06)
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from virl_data.storage.corpus import atomic_path
from virl_data.core.errors import ConfigError
from virl_train.actions import MODEL_CONVENTIONS


MODEL_FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "idefics3")
"""``virl_train.models.FAMILIES``' names (listed here so the config loads without torch; a test keeps them equal)."""


def _choice(default: Any, choices: Iterable[Any]) -> Any:
    """A field whose value must be one of ``choices``."""
    return field(default=default, metadata={"choices": tuple(choices)})


def _at_least(default: Any, minimum: float) -> Any:
    """A numeric field that must be ``>= minimum``."""
    return field(default=default, metadata={"min": minimum})


@dataclass
class LoraConfig:
    """LoRA adapters (``enabled: false`` trains the full model)."""

    enabled: bool = True
    r: int = _at_least(16, 1)
    alpha: float = 32.0
    dropout: float = _at_least(0.05, 0.0)
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )


@dataclass
class ModelConfig:
    """The policy: checkpoint, the box convention it speaks, and its processor's pixel limits.

    ``family`` (``virl_train.models``): ``auto`` detects it from ``name_or_path`` (a tiny name or the checkpoint's
    ``config.json``). ``box_convention`` is the one place the model's coordinate language is named (``virl_train.actions`` converts
    through ``virl_data.core.boxconv``); ``box_scale`` is the 0–scale range of ``qwen3_norm1000`` (1000, or 999 in some
    vendor docs). ``min_pixels`` / ``max_pixels`` are the processor's and also bound the crops the environment returns.
    ``freeze_vision``: ``none`` trains everything (or the LoRA adapters), ``tower`` keeps the vision encoder's blocks
    fixed and trains the patch merger and the language model, ``all`` freezes the merger too.
    ``tiny_size`` only matters for the ``tiny-*`` names (random models built offline): ``small`` (hidden 64, 2 text
    and 2 vision layers; the tests) or ``base`` (hidden 128, 4 and 4 layers; ``benchmarks/learning.py``, the size at
    which a tiny Idefics3 learns where things are). A checkpoint keeps the size it was built with.
    """

    name_or_path: str = "Qwen/Qwen2.5-VL-3B-Instruct"
    family: str = _choice("auto", ("auto", *MODEL_FAMILIES))
    box_convention: str = _choice("qwen25_abs_resized", MODEL_CONVENTIONS)
    box_scale: float = _at_least(1000.0, 1.0)
    min_pixels: int = _at_least(56 * 56, 1)
    max_pixels: int = _at_least(28 * 28 * 1280, 1)
    dtype: str = _choice("bfloat16", ("float32", "bfloat16", "float16"))
    gradient_checkpointing: bool = False
    freeze_vision: str = _choice("none", ("none", "tower", "all"))
    tiny_size: str = _choice("small", ("small", "base"))
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class DataConfig:
    """Where the exported splits are (``virl-data export`` output) and how many records to use (None = all)."""

    path: str = "virl_demo/export/hf"
    train_split: str = "train"
    eval_split: str | None = "val"
    limit: int | None = _at_least(None, 1)


@dataclass
class EnvConfig:
    """The crop environment (``virl_train.env.CropEnv``): action budget, crop limits, action syntax.

    ``oob_tol``: a box may stick out of the image by this fraction of its longer side and is then clipped; beyond,
    the action is invalid. ``frame``: ``original`` = boxes always refer to the original image, ``last_crop`` = to
    the crop the model is looking at (mapped back by ``actions.crop_of_crop``).
    """

    max_actions: int = _at_least(4, 0)
    min_crop: int = _at_least(28, 1)
    max_aspect: float = _at_least(100.0, 1.0)
    action_format: str = _choice("tag", ("tag", "json"))
    oob_tol: float = _at_least(0.02, 0.0)
    frame: str = _choice("original", ("original", "last_crop"))


@dataclass
class RewardsConfig:
    """A named reward preset plus per-parameter overrides; the rewards module validates ``params``."""

    preset: str = "virl"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class GRPOConfig:
    """Group sampling and the clipped policy loss.

    ``batch_size`` prompts per step, each sampled ``group_size`` times; ``clip_eps`` (and ``clip_eps_high`` for an
    asymmetric upper bound, None = same) clip the ratio; ``kl_coef`` weights the k3 KL to the reference (0 = off);
    ``loss_agg`` averages over all tokens of the batch (``token_mean``) or per sequence first (``seq_mean``).
    """

    group_size: int = _at_least(4, 2)
    batch_size: int = _at_least(2, 1)
    clip_eps: float = _at_least(0.2, 0.0)
    clip_eps_high: float | None = _at_least(None, 0.0)
    kl_coef: float = _at_least(0.0, 0.0)
    loss_agg: str = _choice("token_mean", ("token_mean", "seq_mean"))
    updates_per_batch: int = _at_least(1, 1)
    temperature: float = _at_least(1.0, 0.0)
    top_p: float = _at_least(1.0, 0.0)
    max_new_tokens: int = _at_least(256, 1)


@dataclass
class OptimConfig:
    """AdamW and its schedule; ``grad_accum`` micro-batches per optimizer step."""

    lr: float = _at_least(1e-6, 0.0)
    weight_decay: float = _at_least(0.0, 0.0)
    schedule: str = _choice("constant", ("cosine", "linear", "constant"))
    warmup_steps: int = _at_least(0, 0)
    grad_clip: float = _at_least(1.0, 0.0)
    grad_accum: int = _at_least(1, 1)


@dataclass
class RunConfig:
    """Seed, length, output folder and logging/saving cadence of one run."""

    seed: int = 0
    max_steps: int = _at_least(100, 0)
    out_dir: str = "runs/virl"
    log_every: int = _at_least(1, 1)
    save_every: int = _at_least(50, 1)
    mixed_precision: str = _choice("fp32", ("fp32", "bf16", "fp16"))


@dataclass
class TrainConfig:
    """The whole training configuration (see the module docstring for the layout)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    rewards: RewardsConfig = field(default_factory=RewardsConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)


# --- building dataclasses from plain data, strictly ------------------------------------------------------------------
def _dotted(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def all_keys(cls: type = TrainConfig, prefix: str = "") -> list[str]:
    """Every dotted leaf key of a config class, e.g. ``['model.name_or_path', ..., 'run.mixed_precision']``."""
    out: list[str] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = _dotted(prefix, f.name)
        t = hints[f.name]
        out.extend(all_keys(t, key) if dataclasses.is_dataclass(t) else [key])
    return out


def _unknown_key(cls: type, prefix: str, key: str) -> ConfigError:
    """The error for ``key`` not being a field of ``cls``: name the nearest sibling, else the nearest anywhere."""
    dotted = _dotted(prefix, key)
    siblings = [_dotted(prefix, f.name) for f in dataclasses.fields(cls)]
    near = difflib.get_close_matches(
        dotted, siblings, n=1
    ) or difflib.get_close_matches(dotted, all_keys(), n=1)
    if not near:  # e.g. `max_actions` at the top level: match on the last component
        leaves = {k.rsplit(".", 1)[-1]: k for k in all_keys()}
        near = [
            leaves[m] for m in difflib.get_close_matches(str(key), list(leaves), n=1)
        ]
    hint = (
        f"; did you mean {near[0]!r}?" if near else f" (valid: {', '.join(siblings)})"
    )
    return ConfigError(f"unknown config key {dotted!r}{hint}")


def _type_name(t: Any) -> str:
    if (
        typing.get_origin(t) is not None
    ):  # list[str], dict[str, Any]: __name__ would drop the arguments
        return str(t).replace("typing.", "")
    return getattr(t, "__name__", str(t))


def _convert(value: Any, t: Any, key: str) -> Any:
    """``value`` checked (and minimally coerced: int → float, numeric string → float) against type ``t``."""
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], key) if len(inner) == 1 else value
    if dataclasses.is_dataclass(t):
        return _build(t, value, key)
    bad = ConfigError(f"{key}: expected {_type_name(t)}, got {value!r}")
    if t is bool or t is int or t is str:
        # bool is an int in Python, but `max_actions: true` is still a mistake
        if not isinstance(value, t) or (t is int and isinstance(value, bool)):
            raise bad
        return value
    if t is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise bad
        return [_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise bad
        return dict(value)
    raise TypeError(
        f"config field {key} has an unsupported type {t!r}"
    )  # a bug in this module, not user input


def _check_meta(value: Any, f: dataclasses.Field, key: str) -> None:
    choices, minimum = f.metadata.get("choices"), f.metadata.get("min")
    if choices is not None and value not in choices:
        raise ConfigError(
            f"{key}: expected one of {', '.join(map(str, choices))}, got {value!r}"
        )
    if isinstance(value, float) and not math.isfinite(value):  # NaN compares False with every bound: it slips through
        raise ConfigError(f"{key}: must be a finite number, got {value!r}")
    if minimum is not None and value is not None and value < minimum:
        raise ConfigError(f"{key}: must be >= {minimum}, got {value!r}")


def check_field(cls: type, name: str, value: Any, key: str | None = None) -> Any:
    """``value`` checked as the config field ``cls.name`` is when a config loads (type, minimum, choices, not NaN);
    ``key`` names it in the error (default ``name``). For command-line options that stand in for a config field.

    >>> check_field(OptimConfig, "lr", 3e-4)
    0.0003
    >>> check_field(GRPOConfig, "batch_size", 0, "--batch-size")
    Traceback (most recent call last):
    ...
    virl_data.core.errors.ConfigError: --batch-size: must be >= 1, got 0
    """
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    converted = _convert(value, typing.get_type_hints(cls)[name], key or name)
    _check_meta(converted, f, key or name)
    return converted


def _build(cls: type, data: Any, prefix: str = "") -> Any:
    """A mapping → an instance of the config dataclass ``cls``; missing keys take their defaults."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{prefix or 'config'}: expected a mapping of keys to values, got {data!r}"
        )
    names = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise _unknown_key(cls, prefix, str(key))
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        dotted = _dotted(prefix, key)
        kwargs[key] = _convert(value, hints[key], dotted)
        _check_meta(kwargs[key], names[key], dotted)
    return cls(**kwargs)


# --- overrides, load, save -------------------------------------------------------------------------------------------
def apply_override(data: dict[str, Any], override: str) -> None:
    """Set ``a.b.c=value`` in the nested dict ``data`` (in place); ``value`` is parsed by ``yaml.safe_load``."""
    key, sep, raw = override.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {override!r} must look like a.b.c=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"override {override!r}: cannot parse the value: {exc}"
        ) from None
    *parents, leaf = key.split(".")
    node = data
    for i, part in enumerate(parents):
        child = node.setdefault(part, {})
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(
                f"override {override!r}: {'.'.join(parents[: i + 1])} is a value, not a section"
            )
        node = child
    node[leaf] = value


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read the config: {exc.strerror or exc}"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: a config must be a mapping of sections, got {type(data).__name__}"
        )
    return data


def load_config(
    path: Path | str | None = None, overrides: Iterable[str] = ()
) -> TrainConfig:
    """YAML file (or the defaults when ``path`` is None) + ``a.b.c=value`` overrides → a validated ``TrainConfig``.

    >>> load_config(None, ["grpo.loss_agg=seq_mean"]).grpo.loss_agg
    'seq_mean'
    >>> load_config(None, ["env.max_actons=2"])
    Traceback (most recent call last):
    ...
    virl_data.core.errors.ConfigError: unknown config key 'env.max_actons'; did you mean 'env.max_actions'?
    """
    data = _read_yaml(Path(path)) if path is not None else {}
    for override in overrides:
        apply_override(data, override)
    return _build(TrainConfig, data)


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """A config → plain nested dicts/lists (YAML- and JSON-safe); ``_build(TrainConfig, ...)`` inverts it."""
    return dataclasses.asdict(cfg)


def save_config(cfg: TrainConfig, path: Path | str) -> Path:
    """Write ``cfg`` as YAML atomically (write-then-rename); ``load_config(path)`` reads it back equal."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(
            yaml.safe_dump(config_to_dict(cfg), sort_keys=False), encoding="utf-8"
        )
    return path


__all__ = [
    "DataConfig",
    "EnvConfig",
    "GRPOConfig",
    "LoraConfig",
    "ModelConfig",
    "OptimConfig",
    "RewardsConfig",
    "RunConfig",
    "TrainConfig",
    "all_keys",
    "apply_override",
    "check_field",
    "config_to_dict",
    "load_config",
    "save_config",
]
