"""TRL adapter: the crop environment and the ViRL reward components for ``trl.GRPOTrainer`` (TRL stays optional).

What TRL gets::

    from virl_train.interop.trl import crop_environment, reward_funcs
    trainer = GRPOTrainer(model, args=GRPOConfig(...), train_dataset=load_from_disk("export/trl")["train"],
                          processing_class=processor,
                          environment_factory=crop_environment(processor, family="qwen2_5_vl"),
                          reward_funcs=reward_funcs(RewardConfig.preset("full"), log_path="trajectories.jsonl"))

- **Environment** (``CropToolEnv``, one instance per rollout): ``reset(**row)`` reads the dataset row written by
  ``virl-data export --format trl`` (the record's columns and its decoded ``image``), starts a
  ``virl_train.env.CropEnv`` episode on it and returns the instructions appended to the user turn: the crop tool
  and the box convention spelled out for this image as the model sees it (``virl_train.env.system_prompt``). Its
  one tool, ``crop(bbox_2d)``, takes
  the box in the model family's own convention and runs it through the SAME ``CropEnv.step`` as ``virl-train``
  (the JSON tool-call parser of ``virl_train.actions``, ``virl_data.core.boxconv``, the crop rules and the action budget):
  a valid box returns ``[text, image]`` content blocks (the crop reaches the model as an image), an invalid one
  returns the env's ``<crop_error>`` text, never an exception. Each call is recorded.
- **Episode**: after generation, ``episode_of(env, completion)`` turns TRL's message list into the ``Episode``
  ``virl-train`` scores. Visual actions are the completion's tool messages in order: a message whose content is a
  list came from ``crop`` and is the next recorded action; a string message is TRL's own error (unknown tool, wrong
  arguments) and becomes an INVALID action. Taking the recorded actions by the tool messages that survive is what
  makes the reward honest when TRL rolls back a tool result that would overflow ``max_completion_length``: the env
  had recorded that crop, the model never saw it, so it is not counted. The answer is the last assistant message,
  parsed by ``virl_train.actions.parse_turn``; a completion that ends on a tool call (tool-iteration limit) has no
  answer and ``format_ok`` False.
- **Rewards** (``reward_funcs``): five callables with TRL's signature ``(prompts, completions, completion_ids,
  environments, **columns) -> list[float | None]``, one per component, each reading the SAME
  ``virl_train.rewards.score_record`` breakdown (computed once per completion and shared)::

      accuracy  = λ_acc·R_acc            (None where the gold answer cannot be parsed: TRL ignores it)
      format    = λ_fmt·R_fmt
      rationale = the gated bonus λ_rat·[correct]·R_rat      (accuracy + format + rationale = virl's total)
      shaping   = η·[shaping]·Σ_k r_k = η·Φ_K              (potential-based step rewards, summed)
      credit    = η·[credit]·Σ_k credit(label_k)            (+α correct, −β_red redundant, −β erroneous)

  TRL rewards a completion, not an action: ``virl-train`` adds η·Â_k to the tokens of action k (Â_k the step credit
  c_k = credit(label_k) + r_k normalized over the group), TRL can only add the per-completion sum η·Σ_k c_k to the
  whole completion's reward before its group normalization. Components switched off by the preset return 0.
- **Log**: with ``log_path`` each scored completion is appended as a ``virl_train.trajectories`` line (the file
  ``virl-train score`` reads), ``step`` = TRL's ``global_step + 1``; ``{rank}`` in the path is replaced by the
  process rank (``RANK``), so each process of a multi-GPU run writes its own file. A fresh run starts the file
  anew; a run resumed from the checkpoint of step k keeps its lines of steps ≤ k (``trajectories.truncate_steps``).

TRL passes images of tool responses to the model only for families whose image token it knows (``<|image_pad|>``,
``<|image|>``): Qwen2-VL, Qwen2.5-VL, Qwen3-VL; ``crop_environment`` refuses the others (Idefics3's ``<image>``).

The example needs no TRL; its row is one of the ``trl`` export's, built here from a shapes-world record.

Example:
    >>> from virl_data.miners.shapes import ShapesConfig, generate, make_scene, render_scene
    >>> from virl_data.core.schema import record_to_row
    >>> cfg = ShapesConfig(image_size=(224, 224))
    >>> rec = next(generate(1, seed=0, config=cfg))
    >>> row = {**record_to_row(rec), "image_ref": record_to_row(rec)["image"],
    ...        "image": render_scene(make_scene(0, seed=0, config=cfg))}   # what the trl export's rows hold
    >>> env = CropToolEnv("qwen2_norm1000")
    >>> "0 to 1000" in env.reset(**row)
    True
    >>> [block["type"] for block in env.crop([0, 0, 500, 500])], env.crop([9, 9, 1, 1])[0]["text"][:12]
    (['text', 'image'], '<crop_error>')
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
from PIL import Image

from virl_data.core import boxconv
from virl_data.core.boxanswer import BOX
from virl_data.core.errors import ConfigError, VirlError
from virl_data.review.merge import effective
from virl_data.core.schema import record_from_row
from virl_data.core.types import RationaleRecord
from virl_train.actions import ERRORS, parse_turn
from virl_train.env import ERROR_TEXT, LAST_TEXT, CropEnv, question_text, system_prompt
from virl_train.rewards import FULL, RewardConfig, label_credit, score_record
from virl_train.trajectories import TrajectoryLog, trajectory_row
from virl_train.types import Action, ActionKind, Episode, RewardBreakdown

COMPONENTS = ("accuracy", "format", "rationale", "shaping", "credit")
"""The reward components ``reward_funcs`` returns, in order (their names in TRL's logs: ``rewards/<name>/mean``)."""
TRL_IMAGE_TOKENS = ("<|image_pad|>", "<|image|>")
"""The image tokens TRL looks for when it feeds images of tool responses to a VLM."""


class RowError(VirlError):
    """A dataset row handed to ``CropToolEnv.reset`` lacks what the environment needs (record columns, image)."""


class CropToolEnv:
    """The TRL environment of one rollout (see the module docstring). Public methods: ``reset`` and the tool
    ``crop`` only (TRL turns every other public method into a tool).

    ``convention``: the box convention the model speaks (``virl_train.actions.MODEL_CONVENTIONS``); the other
    arguments are ``CropEnv``'s (``min_pixels`` / ``max_pixels`` / ``factor`` must be the processor's, so that the
    crops are not resized again and ``qwen25_abs_resized`` boxes refer to the image the model saw).
    """

    def __init__(
        self,
        convention: str,
        *,
        max_actions: int = 4,
        min_crop: int = 28,
        max_aspect: float = 100.0,
        min_pixels: int = boxconv.QWEN_MIN_PIXELS,
        max_pixels: int = boxconv.QWEN_MAX_PIXELS,
        factor: int = boxconv.QWEN_FACTOR,
        scale: float = 1000.0,
    ) -> None:
        self._env = CropEnv(convention, max_actions=max_actions, min_crop=min_crop, max_aspect=max_aspect,
                            min_pixels=min_pixels, max_pixels=max_pixels, factor=factor, fmt="json", scale=scale)
        self._scale = scale
        self._record: RationaleRecord | None = None
        self._calls: list[Action] = []
        self._image_size: tuple[int, int] = (0, 0)

    @property
    def record(self) -> RationaleRecord | None:
        """The record of the current episode (reviewed corrections applied), None before the first ``reset``."""
        return self._record

    @property
    def calls(self) -> tuple[Action, ...]:
        """Every ``crop`` call of the episode as the env recorded it (CROP with its box in original pixels, or
        INVALID with its error code), rolled-back ones included (``episode_of`` drops those)."""
        return tuple(self._calls)

    def reset(self, **row: Any) -> str:
        """Start an episode on a ``trl`` export row; returns the instructions appended to the user turn."""
        record, image = _row_record(row)
        self._record, self._calls, self._image_size = record, [], image.size
        env = self._env
        env.reset(image, record.question)
        hint = question_text("", record.answer_type).strip()
        rules = system_prompt(env.convention, image.size, resized=env.view_size(*image.size),
                              max_actions=env.max_actions, fmt="json", scale=self._scale)
        return "\n\n" + rules + (" " + hint if hint else "")

    def crop(self, bbox_2d: list[float]) -> list[dict[str, Any]]:
        """Zoom into a region of the image: the region is returned as a new image.

        Args:
            bbox_2d: The region as [x1, y1, x2, y2], (x1, y1) its top-left and (x2, y2) its bottom-right corner, in
                the coordinates the instructions give for this image.
        """
        if self._record is None:
            raise RuntimeError("crop called before reset()")
        if self._env.done:  # the budget is spent: every further call is an invalid action (no exception)
            action = Action(turn=len(self._calls), kind=ActionKind.INVALID, raw=str(bbox_2d), error="action_limit")
            self._calls.append(action)
            return [{"type": "text", "text": _limit_text(self._env.max_actions)}]
        call = orjson.dumps({"name": "crop", "arguments": {"bbox_2d": bbox_2d}}, default=str).decode()
        result = self._env.step(call)  # the virl-train parser, conversion, crop rules and budget
        self._calls.append(result.action)
        obs = result.observation
        if obs is None:  # action_limit: the env ended the episode
            return [{"type": "text", "text": _limit_text(self._env.max_actions)}]
        blocks: list[dict[str, Any]] = [{"type": "text", "text": obs.text}]
        if obs.image is not None:
            blocks.append({"type": "image", "image": obs.image})
        return blocks


def _limit_text(max_actions: int) -> str:
    return ERROR_TEXT.format(index=max_actions + 1, limit=max_actions, reason=ERRORS["action_limit"]) + LAST_TEXT


def _row_record(row: Mapping[str, Any]) -> tuple[RationaleRecord, Image.Image]:
    """The record (``virl_data.core.schema.record_from_row`` + reviewed corrections) and the RGB image of a row."""
    try:
        record = effective(record_from_row(row))
    except (KeyError, TypeError, ValueError) as exc:
        raise RowError(f"dataset row is not a virl record (export it with `virl-data export --format trl`): "
                       f"{type(exc).__name__}: {exc}") from None
    image = row.get("image")
    if image is None and row.get("images"):
        image = row["images"][0]
    if not isinstance(image, Image.Image):
        raise RowError(f"record {record.id}: the row has no decoded image (got {type(image).__name__})")
    if image.size != (record.image.width, record.image.height):
        raise RowError(f"record {record.id}: image is {image.size[0]}x{image.size[1]}, the record says "
                       f"{record.image.width}x{record.image.height}")
    return record, image if image.mode == "RGB" else image.convert("RGB")


def crop_environment(processor: Any = None, *, family: str = "qwen2_5_vl", convention: str | None = None,
                     max_actions: int = 4, min_crop: int = 28, max_aspect: float = 100.0,
                     scale: float = 1000.0) -> Callable[[], CropToolEnv]:  # fmt: skip
    """A picklable zero-argument factory of ``CropToolEnv`` for ``GRPOTrainer(environment_factory=...)``.

    ``family`` (``virl_train.models.FAMILIES``) gives the default box convention (Qwen2.5-VL absolute pixels of the
    resized image, Qwen2-VL and Qwen3-VL 0–1000) and the crop size factor; ``processor`` (its ``image_processor``)
    gives the pixel limits (``size.shortest_edge`` / ``longest_edge``), else the Qwen defaults. ``ConfigError`` for a
    family whose image token TRL does not recognise in tool responses, or a convention the family cannot speak.
    """
    from virl_train.models import FAMILIES

    if family not in FAMILIES:
        raise ConfigError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")
    fam = FAMILIES[family]
    if fam.image_token not in TRL_IMAGE_TOKENS:
        raise ConfigError(f"TRL passes tool-response images only to models whose image token is one of "
                          f"{', '.join(TRL_IMAGE_TOKENS)}; {family} uses {fam.image_token}, so its crops would not "
                          "reach the model")
    convention = convention or fam.default_convention
    fam.check_convention(convention)
    limits = _pixel_limits(processor)
    return functools.partial(CropToolEnv, convention, max_actions=max_actions, min_crop=min_crop,
                             max_aspect=max_aspect, factor=fam.factor, scale=scale, **limits)


def _pixel_limits(processor: Any) -> dict[str, int]:
    image_processor = getattr(processor, "image_processor", processor)
    size = getattr(image_processor, "size", None) if image_processor is not None else None
    get = size.get if isinstance(size, Mapping) else lambda k, d=None: getattr(size, k, d)
    lo, hi = get("shortest_edge", None), get("longest_edge", None)
    return {"min_pixels": int(lo or boxconv.QWEN_MIN_PIXELS), "max_pixels": int(hi or boxconv.QWEN_MAX_PIXELS)}


# --- TRL completion → virl Episode ----------------------------------------------------------------------------------
def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(c.get("text", "") for c in content or () if isinstance(c, Mapping) and c.get("type") == "text")


def episode_of(env: CropToolEnv, completion: Sequence[Mapping[str, Any]]) -> tuple[Episode, list[str]]:
    """The ``Episode`` of one TRL completion (message list) and its assistant turn texts (module docstring)."""
    record = env.record
    if record is None:
        raise RuntimeError("episode_of: the environment was never reset")
    calls, visual, used = env.calls, [], 0
    for m in completion:
        if m.get("role") != "tool":
            continue
        if isinstance(m.get("content"), list) and used < len(calls):
            visual.append(dataclasses.replace(calls[used], turn=len(visual)))
            used += 1
        else:  # TRL's own failure text: the call never reached the env
            code = "unknown_tool" if m.get("name") != "crop" else "malformed_json"
            visual.append(Action(turn=len(visual), kind=ActionKind.INVALID, raw=_text(m.get("content")), error=code))
    turns = [_text(m.get("content")) for m in completion if m.get("role") == "assistant"]
    last = next((m for m in reversed(completion) if m.get("role") == "assistant"), None)
    answer = None
    if last is not None and not last.get("tool_calls"):
        size = env._image_size
        parsed = parse_turn(turns[-1], turn=len(visual), convention=env._env.convention, image_size=size,
                            resized=env._env.view_size(*size), fmt="json", params=env._env.params)
        answer = parsed if parsed.kind is ActionKind.ANSWER else None
    actions = tuple(visual) + ((answer,) if answer is not None else ())
    episode = Episode(record_id=record.id, actions=actions, answer=answer.answer if answer else None,
                      n_turns=len(turns), format_ok=answer is not None, answer_box=answer.box if answer else None)
    return episode, turns


def _plain_episode(record: RationaleRecord, completion: Any) -> tuple[Episode, list[str]]:
    """A completion without an environment (no tool): its last assistant text is the answer, no visual action."""
    messages = completion if isinstance(completion, list) else [{"role": "assistant", "content": str(completion)}]
    turns = [_text(m.get("content")) for m in messages if m.get("role") == "assistant"]
    size = (record.image.width, record.image.height)
    parsed = parse_turn(turns[-1] if turns else "", turn=0, convention="abs", image_size=size, fmt="json")
    ok = parsed.kind is ActionKind.ANSWER
    return Episode(record_id=record.id, actions=(parsed,) if ok else (), answer=parsed.answer if ok else None,
                   n_turns=len(turns), format_ok=ok, answer_box=None), turns


# --- rewards ---------------------------------------------------------------------------------------------------------
def component_value(b: RewardBreakdown, name: str, cfg: RewardConfig = FULL) -> float | None:
    """One TRL reward component of a ``score_record`` breakdown (formulas in the module docstring).

    >>> b = RewardBreakdown(total=1.375, components={"accuracy": 1.0, "accuracy_applicable": 1.0, "format": 0.0,
    ...     "rationale_bonus": 0.375, "shaping": 0.5})
    >>> [component_value(b, c) for c in ("accuracy", "rationale", "shaping")]
    [1.0, 0.375, 0.25]
    """
    c = b.components
    if name == "accuracy":
        return cfg.lambda_acc * c["accuracy"] if c["accuracy_applicable"] else None
    if name == "format":
        return cfg.lambda_fmt * c["format"]
    if name == "rationale":
        return c["rationale_bonus"]
    if name == "shaping":
        return cfg.eta * c["shaping"] if cfg.shaping else 0.0
    if name == "credit":
        return cfg.eta * sum(label_credit(lab.kind, cfg) for lab in b.labels) if cfg.credit else 0.0
    raise ConfigError(f"unknown reward component {name!r}; known: {', '.join(COMPONENTS)}")


class ViRLScorer:
    """Scores a TRL batch once with ``score_record`` and shares the breakdowns with the component callables.

    The cache holds the last batch's ``completions`` list (TRL hands the same list to every reward function of a
    batch) and is dropped when pickled. ``log_path``: see the module docstring.
    """

    def __init__(self, cfg: RewardConfig = FULL, log_path: str | os.PathLike[str] | None = None) -> None:
        self.cfg, self.log_path = cfg, None if log_path is None else str(log_path)
        self._batch: Any = None
        self._scores: list[RewardBreakdown] = []
        self._log: TrajectoryLog | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"cfg": self.cfg, "log_path": self.log_path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["cfg"], state["log_path"])  # type: ignore[misc]

    def breakdowns(self, completions: Sequence[Any], environments: Sequence[CropToolEnv] | None = None,
                   trainer_state: Any = None, **columns: Any) -> list[RewardBreakdown]:  # fmt: skip
        """One breakdown per completion (cached for the batch), logged once when ``log_path`` is set."""
        if completions is self._batch:
            return self._scores
        rows = []
        scores = []
        for i, completion in enumerate(completions):
            if environments is not None:
                record = environments[i].record
                episode, turns = episode_of(environments[i], completion)
            else:
                record = effective(record_from_row({k: v[i] for k, v in columns.items()}))
                episode, turns = _plain_episode(record, completion)
            assert record is not None
            b = score_record(episode, record, self.cfg)
            scores.append(b)
            rows.append((episode, record, b, turns))
        self._batch, self._scores = completions, scores
        if self.log_path is not None:
            self._write(rows, trainer_state)
        return scores

    def _write(self, rows: list[tuple[Episode, RationaleRecord, RewardBreakdown, list[str]]], state: Any) -> None:
        step = None if state is None else int(state.global_step) + 1
        if self._log is None:  # a run resumed at step k keeps the log's lines of steps ≤ k, as virl-train does
            path = Path(self.log_path.format(rank=os.environ.get("RANK", "0")))  # type: ignore[union-attr]
            self._log = TrajectoryLog(path, resume_step=max(0, (step or 1) - 1))
        lines, group, sample, last = [], -1, 0, None
        for episode, record, b, turns in rows:  # TRL repeats each prompt num_generations times in a row
            group, sample = (group, sample + 1) if record.id == last else (group + 1, 0)
            last = record.id
            lines.append(trajectory_row(episode, record, b, self.cfg, source="train", step=step, group=group,
                                        sample=sample, turns=turns))
        self._log.write(lines)


class ComponentReward:
    """One reward component as a TRL reward function (picklable; named ``component`` in TRL's logs)."""

    def __init__(self, scorer: ViRLScorer, component: str) -> None:
        if component not in COMPONENTS:
            raise ConfigError(f"unknown reward component {component!r}; known: {', '.join(COMPONENTS)}")
        self.scorer, self.component, self.__name__ = scorer, component, component

    def __call__(self, prompts: Any = None, completions: Sequence[Any] = (), completion_ids: Any = None,
                 **columns: Any) -> list[float | None]:  # fmt: skip
        scores = self.scorer.breakdowns(completions, **{k: v for k, v in columns.items()
                                                        if k not in ("log_extra", "log_metric")})
        return [component_value(b, self.component, self.scorer.cfg) for b in scores]


def reward_funcs(cfg: RewardConfig = FULL, *, log_path: str | os.PathLike[str] | None = None,
                 components: Sequence[str] = COMPONENTS) -> list[ComponentReward]:  # fmt: skip
    """The ViRL reward components for ``GRPOTrainer(reward_funcs=...)``, sharing one ``ViRLScorer``."""
    scorer = ViRLScorer(cfg, log_path)
    return [ComponentReward(scorer, c) for c in components]


# --- processor and chat template for the tiny offline models (tests, the CPU example) ---------------------------------
def tool_chat_template() -> str:
    """TRL's own Qwen3-VL chat template: it declares tools, renders images inside tool responses, is
    prefix-preserving (TRL keeps it) and TRL knows how to parse its ``<tool_call>`` blocks."""
    import trl

    return (Path(trl.__file__).parent / "chat_templates" / "qwen3_vl.jinja").read_text()


def image_text_processor(tokenizer: Any, image_processor: Any, chat_template: str | None = None) -> Any:
    """A Qwen-VL ``ProcessorMixin`` over ``tokenizer`` and a PIL ``image_processor``, without a video processor.

    The stock ``AutoProcessor`` of the Qwen-VL families needs torchvision for its video processor (absent from CPU
    torch here); TRL takes its VLM path only for a ``ProcessorMixin``. ``chat_template`` defaults to
    ``tool_chat_template()``."""
    from transformers import Qwen2_5_VLProcessor
    from transformers.processing_utils import ProcessorMixin

    class ImageTextProcessor(Qwen2_5_VLProcessor):
        def __init__(self, image_processor: Any = None, tokenizer: Any = None, chat_template: Any = None,
                     **kwargs: Any) -> None:  # fmt: skip
            self.image_token, self.video_token = "<|image_pad|>", "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    template = chat_template or tool_chat_template()
    tokenizer.chat_template = template
    return ImageTextProcessor(image_processor, tokenizer, chat_template=template)


def never_sampled_ids(tokenizer: Any, family: str = "qwen2_5_vl") -> list[int]:
    """Token ids generation must never sample: the family's vision placeholders. Pass them as
    ``GRPOConfig(generation_kwargs={"suppress_tokens": ...})``: TRL suppresses only the image token itself, and a
    sampled ``<|video_pad|>`` crashes the loss forward."""
    from virl_train.models import FAMILIES

    return [tokenizer.convert_tokens_to_ids(t) for t in FAMILIES[family].never_sampled]


__all__ = ["COMPONENTS", "TRL_IMAGE_TOKENS", "ComponentReward", "CropToolEnv", "RowError", "ViRLScorer",
           "component_value", "crop_environment", "episode_of", "image_text_processor", "never_sampled_ids",
           "reward_funcs", "tool_chat_template"]
