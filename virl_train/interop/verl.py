"""verl 0.9.1 interop: the ViRL reward as verl's custom reward function (torch-, transformers- and verl-free).

verl's reward loop calls ``compute_score(data_source=..., solution_str=..., ground_truth=..., extra_info=...)`` once
per rollout, with ``solution_str`` the decoded response of its tool agent loop (special tokens skipped) and
``ground_truth`` the row's ``reward_model.ground_truth`` as ``virl-data export --format verl`` wrote it (JSON: gold
answer, chain in ORIGINAL pixels, image size, the family's box convention and crop settings;
``virl_data.export.verl``). Point the trainer at it with::

    reward.custom_reward_function.path=pkg://virl_train.interop.verl
    reward.custom_reward_function.name=compute_score
    reward.custom_reward_function.reward_kwargs.preset=full   # optional: any RewardConfig preset / params

From the response to the episode ``score_episode`` judges (the rollout's rules, ``virl_train.env``):

1. every ``<tool_call>…</tool_call>`` block, in order, is one visual action (verl's Hermes parser executes each
   block it decodes); its text goes through ``actions.parse_turn(fmt="json")`` in the family's convention
   (``qwen25_abs_resized`` against the ``resized`` view, ``qwen3_norm1000``…), so a crop's box arrives in original
   pixels via ``virl_data.core.boxconv``, and a malformed call is INVALID (its error code);
2. as ``CropEnv.step`` judges it: a crop whose region the env would refuse (``CropEnv.crop_view``) is INVALID
   ``aspect_ratio``; the first action beyond ``max_actions`` (a crop there is INVALID ``action_limit``) ends the
   episode without an answer, as the env ends it (the crop tool answers it with the env's ``action_limit`` error);
3. the answer is the ``<answer>…</answer>`` of the text after the last tool call (the final turn); none → no
   answer (format penalty). A box answer converts like a crop (``answer_type="box"``).

Where verl and virl's own rollout differ, the reward follows what the model wrote: a ``<tool_call>`` block that
verl cannot decode is never executed, yet counts here as the malformed action it is (erroneous, format penalty); a
turn holding a tool call and an ``<answer>`` goes on in verl (its calls run), so its answer is not the final one.

Then ``score_episode`` (``virl_train.rewards``) with the configured ``RewardConfig``: exactly what ``virl-train
score`` computes for the same episode. The return is ``{"score": total, **components}`` with a fixed key set
(``COMPONENTS``), as verl's reward manager collects each key over the batch. verl turns ``score`` into a
trajectory-level reward: the per-action credits c_k (``components["credit"]``) are logged, not trained on.

Example:
    >>> import json
    >>> gt = json.dumps({"id": "q", "answer": "red", "answer_type": None, "chain": [[[0, 0, 50, 50]]],
    ...     "image_size": [100, 100], "resized": [112, 112], "convention": "qwen3_norm1000"})
    >>> call = '<tool_call>{"name": "crop", "arguments": {"bbox_2d": [0, 0, 500, 500]}}</tool_call>'
    >>> out = compute_score("shapes", call + " <crop_result>…</crop_result> <answer>red</answer>", gt)
    >>> out["score"], out["accuracy"], out["rationale"]
    (1.5, 1.0, 1.0)
"""

from __future__ import annotations

import dataclasses
import functools
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from virl_data.core.boxanswer import BOX
from virl_data.core.errors import ConfigError
from virl_data.core.types import Box
from virl_train.actions import parse_turn
from virl_train.env import CropEnv
from virl_train.rewards import RewardConfig, score_episode
from virl_train.types import Action, ActionKind, LabelKind, RewardBreakdown

TOOL_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
"""verl's Hermes tool parser pattern (``verl/experimental/agent_loop/tool_parser.py``): one match, one tool call."""

COMPONENTS: tuple[str, ...] = (
    "accuracy", "accuracy_applicable", "format", "rationale", "rationale_recall", "rationale_precision",
    "rationale_order", "rationale_bonus", "shaping", "credit", "n_actions", *(f"n_{k.value}" for k in LabelKind),
)  # fmt: skip
"""The components returned beside ``score`` (those ``score_episode`` always logs; a box answer's ``answer_iou`` is
left out so that every row has the same keys)."""

DEFAULTS: dict[str, Any] = {
    "answer_type": None, "scale": 1000.0, "factor": 28, "min_pixels": 56 * 56, "max_pixels": 28 * 28 * 1280,
    "max_actions": 4, "min_crop": 28, "max_aspect": 100.0,
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class GroundTruth:
    """A parsed ``ground_truth``: gold answer, chain (original pixels), image size, the model's view and crop env."""

    id: str
    answer: str
    answer_type: str | None
    chain: tuple[tuple[Box, ...], ...]
    image_size: tuple[int, int]
    resized: tuple[int, int]
    env: CropEnv


@functools.lru_cache(maxsize=4096)  # a GRPO group shares one ground truth: parse it once
def parse_ground_truth(text: str) -> GroundTruth:
    """The JSON ``ground_truth`` of a ``virl-data export --format verl`` row → ``GroundTruth``; ``ConfigError`` when a
    field is missing or of the wrong shape."""
    try:
        obj = {**DEFAULTS, **orjson.loads(text)}
        chain = tuple(tuple(Box(*map(float, b)) for b in step) for step in obj["chain"])
        w, h = (int(v) for v in obj["image_size"])
        rw, rh = (int(v) for v in obj["resized"])
        env = CropEnv(
            obj["convention"], fmt="json", max_actions=int(obj["max_actions"]), min_crop=int(obj["min_crop"]),
            max_aspect=float(obj["max_aspect"]), min_pixels=int(obj["min_pixels"]),
            max_pixels=int(obj["max_pixels"]), factor=int(obj["factor"]), scale=float(obj["scale"]),
        )  # fmt: skip
        return GroundTruth(str(obj.get("id", "")), str(obj["answer"]), obj["answer_type"], chain, (w, h), (rw, rh), env)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"verl ground_truth is not a virl-data export row's: {type(exc).__name__}: {exc}") from None


def _parse(text: str, turn: int, gt: GroundTruth) -> Action:
    env = gt.env
    return parse_turn(
        text, turn=turn, convention=env.convention, image_size=gt.image_size, resized=gt.resized, fmt="json",
        oob_tol=env.oob_tol, params=env.params,
    )  # fmt: skip


def _judged(action: Action, used: int, gt: GroundTruth) -> Action:
    """``action`` as ``CropEnv.step`` records it: a crop over the budget or of a refused region is INVALID."""
    if action.kind is ActionKind.ANSWER:  # an answer tool call: verl has no such tool, the env no such crop
        return dataclasses.replace(action, kind=ActionKind.INVALID, box=None, answer=None, error="unknown_tool")
    if action.kind is not ActionKind.CROP:
        return action
    if used >= gt.env.max_actions:
        return dataclasses.replace(action, kind=ActionKind.INVALID, box=None, error="action_limit")
    assert action.box is not None
    if gt.env.crop_view(action.box, gt.image_size) is None:
        return dataclasses.replace(action, kind=ActionKind.INVALID, box=None, error="aspect_ratio")
    return action


def response_episode(response: str, gt: GroundTruth) -> tuple[list[Action], Action | None]:
    """The visual actions of a decoded verl response and its answer (an ANSWER action, or None when there is none or
    the episode ended at the budget); the rules are in the module docstring."""
    actions: list[Action] = []
    last_end = 0
    for turn, m in enumerate(TOOL_CALL.finditer(response)):
        actions.append(_judged(_parse(m.group(0), turn, gt), len(actions), gt))
        if len(actions) > gt.env.max_actions:  # the env ends the episode at the first action over the budget
            return actions, None
        last_end = m.end()
    final = _parse(response[last_end:], len(actions), gt)
    return actions, final if final.kind is ActionKind.ANSWER else None


def score_response(response: str, gt: GroundTruth, cfg: RewardConfig) -> RewardBreakdown:
    """``score_episode`` of the episode a decoded verl response holds."""
    actions, final = response_episode(response, gt)
    answer = None if final is None else final.box if gt.answer_type == BOX else final.answer
    return score_episode(
        [a.box if a.kind is ActionKind.CROP else None for a in actions], answer, gt.chain, gt.answer,
        image_size=gt.image_size, answer_type=gt.answer_type, cfg=cfg,
    )  # fmt: skip


@functools.lru_cache(maxsize=64)
def _reward_config(preset: str, params: tuple[tuple[str, Any], ...]) -> RewardConfig:
    return RewardConfig.from_params(preset, dict(params))


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: str,
    extra_info: Mapping[str, Any] | None = None,
    *,
    preset: str = "full",
    reward_params: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, float]:
    """verl's custom reward function: ``{"score": ViRL total, **components}`` of one decoded response.

    ``preset`` / ``reward_params``: the ``RewardConfig`` (``RewardConfig.from_params``), settable through
    ``reward.custom_reward_function.reward_kwargs``. ``data_source``, ``extra_info`` and other keywords verl passes
    (``num_turns``, ``rollout_reward_scores``, reward-model addresses) are not needed: everything is in
    ``ground_truth``.
    """
    cfg = _reward_config(preset, tuple(sorted((reward_params or {}).items())))
    b = score_response(solution_str, parse_ground_truth(ground_truth), cfg)
    return {"score": b.total, **{k: float(b.components[k]) for k in COMPONENTS}}


def verl_compute_score_ms(responses: Sequence[str], ground_truths: Sequence[str], repeat: int = 3) -> float:
    """Milliseconds per completion of ``compute_score`` over ``responses`` (paired with ``ground_truths``): the best
    of ``repeat`` passes, the ground-truth cache cleared before each (for ``benchmarks/bench_interop.py``)."""
    if len(responses) != len(ground_truths) or not responses:
        raise ConfigError("verl_compute_score_ms needs as many ground truths as responses, and at least one")
    best = float("inf")
    for _ in range(repeat):
        parse_ground_truth.cache_clear()
        start = time.perf_counter()
        for response, gt in zip(responses, ground_truths, strict=True):
            compute_score("virl", response, gt)
        best = min(best, time.perf_counter() - start)
    return 1000.0 * best / len(responses)


__all__ = [
    "COMPONENTS",
    "TOOL_CALL",
    "GroundTruth",
    "compute_score",
    "parse_ground_truth",
    "response_episode",
    "score_response",
    "verl_compute_score_ms",
]
