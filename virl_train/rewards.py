"""ViRL rewards: outcome, format, process (rationale), step shaping and per-action credit. Pure functions.

What goes into the trajectory reward (VIRL_METHOD.md §2)::

    total = λ_acc·R_acc + λ_fmt·R_fmt + bonus        (λ_acc = 1 except in the ``rationale`` diagnostic preset)
    bonus = λ_rat·[answer correct]·R_rat   (gate "gated", default)
          = λ_rat·R_rat, λ_rat < 1        (gate "ungated": bounded so the answer still dominates)
          = 0                              (gate "none", or process supervision off)

Shaping does NOT enter ``total``: the potential-based step rewards r_k = Φ_k − Φ_{k−1} go into the per-action step
credits, ``c_k = credit(label_k) + r_k`` with credit(correct) = +α, credit(redundant) = −β_red, credit(erroneous) =
−β (each term only when its switch is on). The advantages module normalizes the c_k over the group and adds η·Â_k
to the tokens of action k. ``RewardBreakdown.components`` also logs every term (``shaping`` = Σ r_k = Φ_K,
``rationale`` = R_rat even when unused) so the ablation is comparable.

Ablation = config only (``RewardConfig.preset``): ``outcome`` (answer + format), ``process`` (+ gated R_rat bonus),
``shaping`` (+ r_k step credits), ``full`` (+ label credits; alias ``virl``). ``rationale`` is no ViRL variant but
a diagnostic: R_rat alone (λ_acc = λ_fmt = 0, ungated bonus), the reward of the process-only sanity check
(``benchmarks/sanity.py``): if it cannot raise crop IoU, no ViRL variant can.

TRL-shaped adapters take a batch of completions plus dataset columns and return one value per sample; ``REWARDS``
maps names to them. Each returns its *weighted contribution*, so ``accuracy + format + rationale == total``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from virl_data.core.answers import box_iou, score_answer
from virl_data.core.boxanswer import BOX
from virl_data.core.errors import ConfigError
from virl_data.core.types import Box, RationaleRecord
from virl_train.matching import MatchConfig, coverage_potentials, label_actions, rationale_detail
from virl_train.types import Action, ActionKind, ActionLabel, Episode, LabelKind, RewardBreakdown

GATES = ("gated", "ungated", "none")
PRESETS: dict[str, dict[str, Any]] = {
    "outcome": {"process": False, "shaping": False, "credit": False, "gate": "none"},
    "process": {"process": True, "shaping": False, "credit": False},
    "shaping": {"process": True, "shaping": True, "credit": False},
    "full": {},
    "virl": {},
    "rationale": {"process": True, "shaping": False, "credit": False, "gate": "ungated", "lambda_acc": 0.0,
                  "lambda_fmt": 0.0},
}


@dataclass(frozen=True)
class RewardConfig:
    """Switches and weights of the ViRL reward (defaults = the ``full`` preset, VIRL_METHOD.md).

    ``process`` use R_rat in the trajectory bonus; ``shaping`` add r_k to the step credits; ``credit`` add the label
    credits; ``gate`` gated | ungated | none; ``lambda_acc`` 1.0 (0 only in the ``rationale`` preset);
    ``lambda_fmt`` 0.2; ``lambda_rat`` 0.5 (< 1 when ungated); ``alpha`` 1.0
    (correct), ``beta_red`` 0.05 (redundant), ``beta`` 0.5 (erroneous); ``eta`` 0.5, the weight of the normalized
    step credit Â_k on the tokens of action k (``virl_train.advantages``); ``numeric_rel_tol`` of numeric answers;
    ``answer_iou`` the IoU a box answer needs to be right (``answer_type="box"``, 0.5); ``match`` the matching
    thresholds.

    >>> RewardConfig.preset("outcome").gate, RewardConfig.preset("full").credit
    ('none', True)
    """

    process: bool = True
    shaping: bool = True
    credit: bool = True
    gate: str = "gated"
    lambda_acc: float = 1.0
    lambda_fmt: float = 0.2
    lambda_rat: float = 0.5
    alpha: float = 1.0
    beta_red: float = 0.05
    beta: float = 0.5
    eta: float = 0.5
    numeric_rel_tol: float = 1e-6
    answer_iou: float = 0.5
    match: MatchConfig = field(default_factory=MatchConfig)

    def __post_init__(self) -> None:
        if self.gate not in GATES:
            raise ConfigError(f"rewards gate: expected one of {', '.join(GATES)}, got {self.gate!r}")
        if self.gate == "ungated" and self.process and not 0 <= self.lambda_rat < 1:
            raise ConfigError(f"rewards lambda_rat: an ungated bonus needs 0 ≤ λ_rat < 1, got {self.lambda_rat}")
        if not 0 < self.answer_iou <= 1:
            raise ConfigError(f"rewards answer_iou: expected 0 < answer_iou ≤ 1, got {self.answer_iou}")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> RewardConfig:
        """The named ablation step (outcome | process | shaping | full | virl) with field overrides."""
        if name not in PRESETS:
            raise ConfigError(f"unknown reward preset {name!r}; use one of {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    @classmethod
    def from_params(cls, preset: str, params: Mapping[str, Any] | None = None) -> RewardConfig:
        """A preset plus flat overrides (``virl_train.config.RewardsConfig.params``): reward fields, or matching
        fields by name or as ``match.<name>``. An unknown key raises ``ConfigError`` naming it."""
        mine = {f.name for f in dataclasses.fields(cls)} - {"match"}
        theirs = {f.name for f in dataclasses.fields(MatchConfig)}
        top: dict[str, Any] = {}
        match: dict[str, Any] = {}
        for key, value in (params or {}).items():
            name = key.removeprefix("match.")
            if key in mine:
                top[key] = _coerce(key, value, getattr(FULL, key))
            elif name in theirs:
                match[name] = _coerce(key, value, getattr(FULL.match, name))
            else:
                raise ConfigError(f"unknown reward parameter {key!r}; known: {', '.join(sorted(mine | theirs))}")
        try:
            return cls.preset(preset, **top, match=MatchConfig(**match))
        except TypeError as exc:  # pragma: no cover - keys are checked above
            raise ConfigError(f"reward parameters: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the matching config nested under ``match``)."""
        return dataclasses.asdict(self)


FULL = RewardConfig()


def _coerce(key: str, value: Any, default: Any) -> Any:
    """``value`` as the type of the field's default (ints are fine for floats); ``ConfigError`` otherwise."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(f"reward parameter {key}: expected {type(default).__name__}, got {value!r}")
    return value


# --- the terms -------------------------------------------------------------------------------------------------------
def format_score(actions: Sequence[Box | None], answer: str | None, format_ok: bool = True) -> float:
    """R_fmt ∈ {−1, 0}: −1 when the rollout broke the format (``format_ok`` False), an action was malformed
    (``None``) or no answer was given; 0 otherwise.

    Example: ``[Box(0, 0, 9, 9), None]`` with answer "red" → −1 (one malformed action); weighted λ_fmt·R_fmt = −0.2.
    """
    return -1.0 if (not format_ok or answer is None or any(b is None for b in actions)) else 0.0


def rationale_bonus(r_rat: float, correct: bool, cfg: RewardConfig = FULL) -> float:
    """``λ_rat·[correct]·R_rat`` (gated), ``λ_rat·R_rat`` (ungated), 0 (none / process off).

    Example: R_rat = 0.75, correct, λ_rat = 0.5 → 0.375 gated; wrong answer → 0 gated, 0.375 ungated.
    """
    if not cfg.process or cfg.gate == "none":
        return 0.0
    if cfg.gate == "gated" and not correct:
        return 0.0
    return cfg.lambda_rat * r_rat


def label_credit(kind: LabelKind, cfg: RewardConfig = FULL) -> float:
    """+α (correct), −β_red (redundant), −β (erroneous): 1.0 / −0.05 / −0.5 by default."""
    return {LabelKind.CORRECT: cfg.alpha, LabelKind.REDUNDANT: -cfg.beta_red, LabelKind.ERRONEOUS: -cfg.beta}[kind]


def step_credits(labels: Sequence[ActionLabel], cfg: RewardConfig = FULL) -> tuple[float, ...]:
    """``c_k = [credit]·credit(label_k) + [shaping]·r_k`` with r_k = ``label.coverage_gain`` = Φ_k − Φ_{k−1}.

    Example (full): a hit raising Φ from 0 to 0.5 → 1.0 + 0.5 = 1.5; its repeat → −0.05 + 0 = −0.05.
    """
    return tuple(
        (label_credit(lab.kind, cfg) if cfg.credit else 0.0) + (lab.coverage_gain if cfg.shaping else 0.0)
        for lab in labels
    )


def score_episode(
    actions: Sequence[Box | None],
    answer: str | Box | None,
    chain: Sequence[Sequence[Box]],
    gold: str,
    *,
    image_size: tuple[float, float] | None = None,
    answer_type: str | None = None,
    options: Sequence[str] | Mapping[str, str] | None = None,
    format_ok: bool = True,
    cfg: RewardConfig = FULL,
) -> RewardBreakdown:
    """The full reward of one trajectory: ``total = λ_acc·R_acc + λ_fmt·R_fmt + bonus`` (λ_acc = 1 but in the
    ``rationale`` preset) and the step credits c_k.

    An answer whose gold cannot be parsed for its type (``score_answer`` → None) scores R_acc = 0 with
    ``components["accuracy_applicable"] = 0`` and never opens the gate. For a box answer (``answer_type="box"``)
    ``answer`` is the answered ``Box`` in original pixels (``Episode.answer_box``) and R_acc = [IoU ≥
    ``cfg.answer_iou``]; ``components["answer_iou"]`` logs the IoU (absent for other answer types).

    Example (full preset): chain [[0,0,10,10]], [[50,50,60,60]] on 100 × 100; one crop on step 0, answer right:
    R_acc = 1, R_fmt = 0, R_rat = ½(0.5 + 1) = 0.75, bonus = 0.5·0.75 = 0.375 → total 1.375; c_1 = 1 + 0.5 = 1.5.
    """
    labels = label_actions(actions, chain, image_size, cfg.match)
    phi = coverage_potentials(actions, chain, image_size, cfg.match)
    rat = rationale_detail(actions, chain, image_size, cfg.match)
    acc = score_answer(answer, gold, answer_type=answer_type, options=options, rel_tol=cfg.numeric_rel_tol,
                       iou_threshold=cfg.answer_iou)
    r_acc = acc if acc is not None else 0.0
    r_fmt = format_score(actions, answer, format_ok)
    bonus = rationale_bonus(rat.score, r_acc == 1.0, cfg)
    credits = step_credits(labels, cfg)
    kinds = [lab.kind for lab in labels]
    components = {
        "accuracy": r_acc,
        "accuracy_applicable": float(acc is not None),
        "format": r_fmt,
        "rationale": rat.score,
        "rationale_recall": rat.recall,
        "rationale_precision": rat.precision,
        "rationale_order": rat.order,
        "rationale_bonus": bonus,
        "shaping": float(phi[-1]),
        "credit": float(sum(credits)),
        "n_actions": float(len(labels)),
        **{f"n_{k.value}": float(kinds.count(k)) for k in LabelKind},
    }
    if answer_type == BOX and acc is not None:
        components["answer_iou"] = float(box_iou(answer, gold) or 0.0)
    total = cfg.lambda_acc * r_acc + cfg.lambda_fmt * r_fmt + bonus
    return RewardBreakdown(total=float(total), components=components, per_action=credits, labels=tuple(labels))


def action_boxes(actions: Sequence[Action]) -> list[Box | None]:
    """The visual actions of an episode as boxes: CROP → its box, INVALID → None (malformed), ANSWER dropped."""
    return [a.box if a.kind is ActionKind.CROP else None for a in actions if a.kind is not ActionKind.ANSWER]


def episode_answer(episode: Episode, answer_type: str | None) -> str | Box | None:
    """What an episode answered, as its record's answer type is scored: the answer box for a box answer, else the
    answer text."""
    return episode.answer_box if answer_type == BOX else episode.answer


def score_record(episode: Episode, record: RationaleRecord, cfg: RewardConfig = FULL) -> RewardBreakdown:
    """``score_episode`` for a rollout of ``record`` (gold answer, chain, answer type and image size from it)."""
    return score_episode(
        action_boxes(episode.actions),
        episode_answer(episode, record.answer_type),
        record.chain,
        record.answer,
        image_size=(record.image.width, record.image.height),
        answer_type=record.answer_type,
        format_ok=episode.format_ok,
        cfg=cfg,
    )


# --- TRL-shaped batched adapters -------------------------------------------------------------------------------------
def _column(kw: Mapping[str, Any], name: str, n: int) -> list[Any]:
    value = kw.get(name)
    return [None] * n if value is None else list(value)


def _samples(completions: Sequence[Any], kw: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One dict per completion. A completion is an ``Episode``, a mapping ``{"actions": [Box | None], "answer"}``
    or a plain answer string; gold data comes from ``records`` (RationaleRecords) or the columns ``answer``,
    ``chain``, ``image_size``, ``answer_type``, ``options``."""
    n = len(completions)
    records = kw.get("records")
    if records is not None:
        cols = {
            "gold": [r.answer for r in records],
            "chain": [r.chain for r in records],
            "image_size": [(r.image.width, r.image.height) for r in records],
            "answer_type": [r.answer_type for r in records],
            "options": [None] * n,
        }
    else:
        cols = {"gold": _column(kw, "answer", n)}
        cols |= {k: _column(kw, k, n) for k in ("chain", "image_size", "answer_type", "options")}
    out = []
    for i, c in enumerate(completions):
        box = cols["answer_type"][i] == BOX
        if isinstance(c, Episode):
            sample = {"actions": action_boxes(c.actions), "pred": episode_answer(c, cols["answer_type"][i]),
                      "format_ok": c.format_ok}
        elif isinstance(c, Mapping):
            pred = c.get("answer_box") if box and "answer_box" in c else c.get("answer")
            sample = {"actions": list(c.get("actions", ())), "pred": pred, "format_ok": True}
        else:
            sample = {"actions": [], "pred": c, "format_ok": True}
        out.append(sample | {k: v[i] for k, v in cols.items()})
    return out


def _episode(s: Mapping[str, Any], cfg: RewardConfig) -> RewardBreakdown:
    return score_episode(
        s["actions"], s["pred"], s["chain"], s["gold"], image_size=s["image_size"], answer_type=s["answer_type"],
        options=s["options"], format_ok=s["format_ok"], cfg=cfg,
    )


def accuracy_reward(completions: Sequence[Any], reward_config: RewardConfig = FULL, **kw: Any) -> list[float | None]:
    """λ_acc·R_acc per sample (R_acc = 1.0 / 0.0; λ_acc = 1 but in the ``rationale`` preset), None where the gold
    cannot be parsed (TRL skips None)."""
    def one(s):
        acc = score_answer(s["pred"], s["gold"], answer_type=s["answer_type"], options=s["options"],
                           rel_tol=reward_config.numeric_rel_tol, iou_threshold=reward_config.answer_iou)
        return None if acc is None else reward_config.lambda_acc * acc

    return [
        None if s["gold"] is None else one(s)
        for s in _samples(completions, kw)
    ]


def format_reward(completions: Sequence[Any], reward_config: RewardConfig = FULL, **kw: Any) -> list[float]:
    """λ_fmt·R_fmt per sample: 0 or −λ_fmt (−0.2 by default)."""
    return [
        reward_config.lambda_fmt * format_score(s["actions"], s["pred"], s["format_ok"])
        for s in _samples(completions, kw)
    ]


def rationale_reward(completions: Sequence[Any], reward_config: RewardConfig = FULL, **kw: Any) -> list[float | None]:
    """The configured rationale bonus per sample (gated λ_rat·R_rat by default); None without a chain."""
    return [
        None if s["chain"] is None or s["gold"] is None else _episode(s, reward_config).components["rationale_bonus"]
        for s in _samples(completions, kw)
    ]


def total_reward(completions: Sequence[Any], reward_config: RewardConfig = FULL, **kw: Any) -> list[float]:
    """``score_episode(...).total`` per sample (needs the chain and the gold answer)."""
    return [_episode(s, reward_config).total for s in _samples(completions, kw)]


REWARDS: dict[str, Callable[..., list[float | None]]] = {
    "accuracy": accuracy_reward,
    "format": format_reward,
    "rationale": rationale_reward,
}


def reward_funcs(cfg: RewardConfig = FULL) -> list[Callable[..., list[float | None]]]:
    """``REWARDS`` bound to ``cfg`` (picklable ``functools.partial``s named like the registry, for TRL logs)."""
    funcs = []
    for name, fn in REWARDS.items():
        bound = functools.partial(fn, reward_config=cfg)
        bound.__name__ = name  # type: ignore[attr-defined]
        funcs.append(bound)
    return funcs

