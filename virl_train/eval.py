"""Evaluation (``virl-train eval``): answer accuracy, grounding metrics and the illusion probe.

Every number comes from the training code path: each episode is scored by ``rewards.score_record`` (answer check,
``matching.label_actions``, ``matching.rationale_detail``) and the per-step coverage by ``matching.overlaps``, so a
metric cannot drift from the reward. ``grounding_metrics`` is pure (episodes + records in, a flat dict out);
``evaluate`` runs the policy (``rollout.rollout_episode``) once normally and once with the probe environment.

Metrics (K = visual actions of an episode, CROP + INVALID; s = the configured overlap, IoU by default; every rate
over zero items is 0 and its denominator is reported as an ``n_*`` key):

==========================  ==========================================================================================
``accuracy``                mean R_acc over episodes whose gold answer is scorable (``n_applicable``); a box answer
                            (``answer_type="box"``) counts as right when its IoU with the gold box ≥ ``answer_iou``
``box_answer_iou``          mean IoU of the answered box with the gold box over box-answer episodes
                            (``n_box_answers``; an answer that is no box counts 0)
``answered_rate``           episodes that gave an answer / ``n_episodes``; ``format_rate``: episodes with R_fmt = 0
``reward``                  mean ``RewardBreakdown.total`` (the configured preset)
``rationale``               mean R_rat = ½(recall + precision); ``rationale_recall`` / ``rationale_precision`` halves
``mean_fidelity``           mean best-match overlap f_k = max_j s(b_k, g_j) over all visual actions (invalid → 0)
``hit_rate@0.3`` / ``@0.5``  visual actions with f_k ≥ 0.3 / 0.5, over ``n_actions``
``gt_coverage``             mean over episodes of the fraction of chain steps j with max_k s(b_k, g_j) ≥ τ_hit
``correct_rate`` ...        ``correct`` / ``redundant`` / ``erroneous`` labels over ``n_actions``; ``invalid_rate``
                            INVALID (unparseable, refused) actions over ``n_actions``
``tool_use_rate``           episodes with ≥ 1 executed crop; ``actions_per_episode``, ``crops_per_episode``,
                            ``turns_per_episode`` means over episodes (the action rates come from
                            ``metrics.action_metrics``, which the training log uses too)
``rarr`` / ``rawr``         right answer with the right / a wrong visual reason, over ``n_applicable``; the reason is
                            right when R_rat ≥ ``reason_threshold`` (0.5: e.g. one exact crop on a 1- or 2-step chain)
``step_iou@j``              over records whose chain has ≥ 2 steps (``n_multistep``): mean of max_k s(b_k, g_j), how
                            well chain step j (1-based, j ≤ the longest chain) was looked at (0 where the chain is
                            shorter); ``ordered_chain_hit@0.5``: such episodes whose crops hit every step (s ≥ 0.5)
                            in chain order (``matching.chain_order``); ``order_rate``: of the episodes that hit every
                            step in any order (``n_all_hit``), those that did so in chain order
``context_agnosticism``     how alike the crops of two episodes asking DIFFERENT questions about the SAME image are:
                            symmetric mean best-match IoU, averaged over such episode pairs (``n_context_pairs``);
                            1 = the same regions whatever the question. ``context_agnosticism_gt``: the same for the
                            ground-truth steps (a reference: crops should be no more alike than the chains)
==========================  ==========================================================================================

**Illusion probe**: the same rollouts (same seeds, greedy by default) with a ``CropEnv`` whose ``region_transform``
shows a random region of the SAME size instead of the region asked for (``random_same_size``), or the full image
(``full_image``). The actions keep the model's boxes, so the grounding metrics barely move; ``probe_drop`` =
accuracy − probe accuracy. A model that uses what it sees in its crops drops; an "illusory" one does not.

Example:
    >>> from virl_train.types import Episode
    >>> from virl_data.core.types import Box, ImageRef, Provenance, RationaleRecord, RationaleStep
    >>> rec = RationaleRecord(id="r", image=ImageRef("a.png", 100, 100), question="q", answer="red",
    ...     chain=(RationaleStep((Box(0, 0, 10, 10),), "x"),), provenance=Provenance("t", "val", (), "t@1"))
    >>> m = grounding_metrics([Episode("r", answer="red")], [rec])
    >>> m["accuracy"], m["tool_use_rate"], m["rawr"], m["n_actions"]
    (1.0, 0.0, 1.0, 0.0)
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from virl_data.core.boxes import as_array, iou_matrix, to_boxes
from virl_data.core.errors import ConfigError, VirlError
from virl_data.core.types import Box, RationaleRecord
from virl_data.storage.corpus import atomic_path, write_json
from virl_train.matching import chain_array, chain_order, overlaps
from virl_train.metrics import action_metrics, rate
from virl_train.rewards import FULL, RewardConfig, action_boxes, score_record
from virl_train.trajectories import FILE_NAME, trajectory_row, write_trajectories
from virl_train.types import ActionKind, Episode, RewardBreakdown

RegionTransform = Callable[[Box, tuple[int, int]], Box]
HIT_THRESHOLDS = (0.3, 0.5)
PLOTTED = ("accuracy", "rationale", "mean_fidelity", "hit_rate@0.5", "gt_coverage", "correct_rate",
           "tool_use_rate", "rarr")


class EvalError(VirlError):
    """Evaluation inputs do not fit together (episodes vs records, records vs images)."""


# --- the probe transforms --------------------------------------------------------------------------------------------
def random_same_size(rng: np.random.Generator) -> RegionTransform:
    """A region transform returning a uniformly random whole-pixel box of the region's size inside the image.

    ``x1 ~ U{0, …, W − w}``, ``y1 ~ U{0, …, H − h}`` (w, h = the region's size, at most the image's); the result is
    ``[x1, y1, x1 + w, y1 + h]``. Deterministic for a seeded ``rng``.

    >>> t = random_same_size(np.random.default_rng(0))
    >>> b = t(Box(10, 10, 40, 30), (100, 80)); (b.w, b.h)
    (30.0, 20.0)
    """

    def transform(region: Box, image_size: tuple[int, int]) -> Box:
        width, height = int(image_size[0]), int(image_size[1])
        w, h = min(round(region.w), width), min(round(region.h), height)
        x1, y1 = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        return Box(x1, y1, x1 + w, y1 + h)

    return transform


def full_image(rng: np.random.Generator | None = None) -> RegionTransform:
    """A region transform showing the whole image instead of any crop (``rng`` unused; same signature).

    >>> full_image()(Box(10, 10, 40, 30), (100, 80))
    Box(x1=0.0, y1=0.0, x2=100.0, y2=80.0)
    """
    return lambda region, image_size: Box(0, 0, int(image_size[0]), int(image_size[1]))


PROBES: dict[str, Callable[[np.random.Generator], RegionTransform]] = {
    "random": random_same_size,
    "full": full_image,
}


# --- per-episode scores (pure) ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EpisodeScore:
    """One episode judged by the training code: its reward breakdown plus what the metrics need besides.

    ``covered``: per chain step, max_k s(b_k, g_j) ≥ τ_hit; ``crops``: the executed crop boxes (original pixels).
    """

    breakdown: RewardBreakdown
    covered: tuple[bool, ...]
    crops: tuple[Box, ...]
    n_invalid: int

    @property
    def applicable(self) -> bool:
        return self.breakdown.components["accuracy_applicable"] == 1.0

    @property
    def correct(self) -> bool:
        return self.applicable and self.breakdown.components["accuracy"] == 1.0


def _episode(item: Any) -> Episode:
    episode = getattr(item, "episode", item)  # a rollout.Rollout or an Episode
    if not isinstance(episode, Episode):
        raise EvalError(f"expected an Episode or a Rollout, got {type(item).__name__}")
    return episode


def score_episodes(
    rollouts_or_episodes: Sequence[Any], records: Sequence[RationaleRecord], cfg: RewardConfig = FULL
) -> list[EpisodeScore]:
    """``score_record`` of each episode against its record (same order, matching ids) and the step coverage."""
    episodes = [_episode(e) for e in rollouts_or_episodes]
    if len(episodes) != len(records):
        raise EvalError(f"{len(episodes)} episodes but {len(records)} records: they must pair up in order")
    out = []
    for i, (ep, rec) in enumerate(zip(episodes, records)):
        if ep.record_id != rec.id:
            raise EvalError(f"episode {i} is of record {ep.record_id!r} but record {i} is {rec.id!r}")
        boxes = action_boxes(ep.actions)
        size = (rec.image.width, rec.image.height)
        s, _ = overlaps(boxes, rec.chain, size, cfg.match)
        covered = s.max(axis=0) >= cfg.match.tau_hit if len(boxes) else np.zeros(s.shape[1], dtype=bool)
        out.append(EpisodeScore(
            breakdown=score_record(ep, rec, cfg),
            covered=tuple(bool(c) for c in covered),
            crops=tuple(a.box for a in ep.actions if a.kind is ActionKind.CROP and a.box is not None),
            n_invalid=sum(a.kind is ActionKind.INVALID for a in ep.actions),
        ))
    return out


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else 0.0


def _pair_iou(a: Sequence[Box], b: Sequence[Box]) -> float:
    """Symmetric mean best-match IoU: ``½(mean_a max_b IoU + mean_b max_a IoU)`` (1 = the same regions)."""
    m = iou_matrix(as_array(list(a)), as_array(list(b)))
    return 0.5 * float(m.max(axis=1).mean() + m.max(axis=0).mean())


def context_agnosticism(groups: Sequence[tuple[str, str, Sequence[Box]]]) -> tuple[float, int]:
    """How alike the boxes of items asking different questions about one image are: for each pair of items with the
    same image key, different questions and boxes on both sides, the symmetric mean best-match IoU
    ``½(mean_{a∈A} max_{b∈B} IoU(a, b) + mean_{b∈B} max_{a∈A} IoU(a, b))``; averaged over those pairs.
    ``groups`` = ``(image_key, question, boxes)`` per item; returns ``(mean, n_pairs)`` (``(0.0, 0)`` without pairs).

    >>> context_agnosticism([("a", "q1", [Box(0, 0, 10, 10)]), ("a", "q2", [Box(0, 0, 10, 10), Box(50, 50, 60, 60)])])
    (0.75, 1)
    """
    by_image: dict[str, list[tuple[str, Sequence[Box]]]] = defaultdict(list)
    for key, question, boxes in groups:
        if len(boxes):
            by_image[key].append((question, boxes))
    ious = [
        _pair_iou(a, b)
        for items in by_image.values()
        for (qa, a), (qb, b) in itertools.combinations(items, 2)
        if qa != qb
    ]
    return _mean(ious), len(ious)


def grounding_metrics(
    rollouts_or_episodes: Sequence[Any],
    records: Sequence[RationaleRecord],
    cfg: RewardConfig = FULL,
    *,
    reason_threshold: float = 0.5,
) -> dict[str, float]:
    """The flat metric dict of the module docstring for episodes paired in order with their records (pure)."""
    scores = score_episodes(rollouts_or_episodes, records, cfg)
    return _metrics([_episode(e) for e in rollouts_or_episodes], records, scores, reason_threshold, cfg)


def _metrics(
    episodes: Sequence[Episode], records: Sequence[RationaleRecord], scores: Sequence[EpisodeScore],
    reason_threshold: float, cfg: RewardConfig = FULL,
) -> dict[str, float]:
    """``grounding_metrics`` from episodes already scored by ``score_episodes`` (``evaluate`` scores each run once)."""
    labels = [lab for sc in scores for lab in sc.breakdown.labels]
    comp = [sc.breakdown.components for sc in scores]
    n_ep, n_act = len(scores), len(labels)
    n_app = sum(sc.applicable for sc in scores)
    right = [sc.correct and c["rationale"] >= reason_threshold for sc, c in zip(scores, comp)]
    ctx, n_ctx = context_agnosticism([(r.image.path, r.question, sc.crops) for r, sc in zip(records, scores)])
    box_ious = [c["answer_iou"] for c in comp if "answer_iou" in c]
    gt_groups = {r.id: (r.image.path, r.question, to_boxes(chain_array(r.chain))) for r in records}
    ctx_gt, n_ctx_gt = context_agnosticism(list(gt_groups.values()))
    m = {
        "accuracy": rate(sum(sc.correct for sc in scores), n_app),
        "box_answer_iou": _mean(box_ious),
        "answered_rate": rate(sum(ep.answer is not None for ep in episodes), n_ep),
        "format_rate": rate(sum(c["format"] == 0.0 for c in comp), n_ep),
        "reward": _mean([sc.breakdown.total for sc in scores]),
        "rationale": _mean([c["rationale"] for c in comp]),
        "rationale_recall": _mean([c["rationale_recall"] for c in comp]),
        "rationale_precision": _mean([c["rationale_precision"] for c in comp]),
        "mean_fidelity": _mean([lab.fidelity for lab in labels]),
        **{f"hit_rate@{t}": rate(sum(lab.fidelity >= t for lab in labels), n_act) for t in HIT_THRESHOLDS},
        "gt_coverage": _mean([_mean(sc.covered) for sc in scores]),
        **action_metrics(episodes, [sc.breakdown for sc in scores]),  # the same function as the training log
        "turns_per_episode": _mean([ep.n_turns for ep in episodes]),
        "rarr": rate(sum(right), n_app),
        "rawr": rate(sum(sc.correct and not r for sc, r in zip(scores, right)), n_app),
        "context_agnosticism": ctx,
        "context_agnosticism_gt": ctx_gt,
    }
    counts = {
        "n_episodes": n_ep, "n_applicable": n_app, "n_actions": n_act, "n_crops": sum(len(sc.crops) for sc in scores),
        "n_steps": sum(len(sc.covered) for sc in scores), "n_context_pairs": n_ctx, "n_context_pairs_gt": n_ctx_gt,
        "n_box_answers": len(box_ious),
    }
    return m | chain_metrics(episodes, records, cfg) | {k: float(v) for k, v in counts.items()}


def chain_metrics(episodes: Sequence[Episode], records: Sequence[RationaleRecord], cfg: RewardConfig = FULL,
                  threshold: float = 0.5) -> dict[str, float]:
    """The ordered-chain metrics of the module docstring (``step_iou@j``, ``ordered_chain_hit@0.5``, ``order_rate``
    with their counts) over the episodes whose record has a chain of ≥ 2 steps.

    >>> from virl_data.core.types import ImageRef, Provenance, RationaleStep
    >>> from virl_train.types import Action
    >>> rec = RationaleRecord(id="r", image=ImageRef("a.png", 100, 100), question="q", answer="red",
    ...     chain=(RationaleStep((Box(0, 0, 10, 10),)), RationaleStep((Box(50, 50, 60, 60),))),
    ...     provenance=Provenance("t", "val", (), "t@1"))
    >>> ep = Episode("r", actions=(Action(0, ActionKind.CROP, box=Box(50, 50, 60, 60)),), answer="red")
    >>> m = chain_metrics([ep], [rec]); m["step_iou@1"], m["step_iou@2"], m["ordered_chain_hit@0.5"], m["n_all_hit"]
    (0.0, 1.0, 0.0, 0.0)
    """
    multi = [(ep, r) for ep, r in zip(episodes, records) if len(r.chain) >= 2]
    longest = max([2, *(len(r.chain) for _, r in multi)])
    orders = [chain_order(action_boxes(ep.actions), r.chain, (r.image.width, r.image.height), cfg.match, threshold)
              for ep, r in multi]
    n_all = sum(o.all_hit for o in orders)
    return {
        **{f"step_iou@{j + 1}": _mean([o.step_iou[j] if j < len(o.step_iou) else 0.0 for o in orders])
           for j in range(longest)},
        f"ordered_chain_hit@{threshold:g}": rate(sum(o.ordered_hit for o in orders), len(orders)),
        "order_rate": rate(sum(o.ordered_hit for o in orders), n_all),
        "n_multistep": float(len(orders)), "n_all_hit": float(n_all),
    }  # fmt: skip


def episode_row(episode: Episode, record: RationaleRecord, score: EpisodeScore) -> dict[str, Any]:
    """One JSON-ready row: the answer, its correctness, reward, rationale and every visual action with its label."""
    labels = score.breakdown.labels
    visual = [a for a in episode.actions if a.kind is not ActionKind.ANSWER]
    return {
        "record_id": record.id,
        "question": record.question,
        "gold": record.answer,
        "answer": episode.answer,
        "answer_box": list(episode.answer_box.as_tuple()) if episode.answer_box is not None else None,
        "correct": score.correct,
        "reward": score.breakdown.total,
        "rationale": score.breakdown.components["rationale"],
        "n_turns": episode.n_turns,
        "actions": [
            {
                "kind": a.kind.value,
                "box": list(a.box.as_tuple()) if a.box is not None else None,
                "error": a.error,
                "label": lab.kind.value,
                "reason": lab.reason,
                "fidelity": lab.fidelity,
            }
            for a, lab in zip(visual, labels)
        ],
    }


# --- the report ------------------------------------------------------------------------------------------------------
@dataclass
class EvalReport:
    """Metrics of the normal run, of the probe run (None without probe), the config, optional per-episode rows, and
    the normal run's episodes as trajectory-log lines (``virl_train.trajectories``, ``source`` "eval").

    ``probe_drop`` = accuracy − probe accuracy (None without probe).
    """

    metrics: dict[str, float]
    probe_metrics: dict[str, float] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    trajectories: list[dict[str, Any]] = field(default_factory=list)

    @property
    def probe_drop(self) -> float | None:
        if self.probe_metrics is None:
            return None
        return self.metrics["accuracy"] - self.probe_metrics["accuracy"]

    def to_dict(self, rows: bool = True) -> dict[str, Any]:
        """JSON-ready: ``metrics`` and ``probe`` (rates), ``probe_drop``, ``counts`` / ``probe_counts`` (the ``n_*``
        denominators of each run), ``config``, and ``episodes`` (the rows) when ``rows``."""
        out: dict[str, Any] = {
            "metrics": _rates(self.metrics),
            "probe": _rates(self.probe_metrics) if self.probe_metrics is not None else None,
            "probe_drop": self.probe_drop,
            "counts": _counts(self.metrics),
            "probe_counts": _counts(self.probe_metrics) if self.probe_metrics is not None else None,
            "config": self.config,
        }
        if rows:
            out["episodes"] = self.rows
        return out


def _rates(metrics: dict[str, float]) -> dict[str, float]:
    """The metrics without their ``n_*`` denominators."""
    return {k: v for k, v in metrics.items() if not k.startswith("n_")}


def _counts(metrics: dict[str, float]) -> dict[str, int]:
    """The ``n_*`` denominators as integers."""
    return {k: int(v) for k, v in metrics.items() if k.startswith("n_")}


def _images(images: Sequence[Any] | Callable[[int], Any], n: int) -> Callable[[int], Any]:
    if callable(images):
        return images
    if len(images) != n:
        raise EvalError(f"{n} records but {len(images)} images: they must pair up in order")
    return images.__getitem__


EVAL_CHUNK = 32
"""Episodes sampled together by ``rollout_batch`` during evaluation (bounds the KV cache of one batch)."""


def _run(policy: Any, records, image_of, env_factory, cfg, *, seed: int, greedy: bool) -> list[Any]:
    """One rollout per record with the same per-record generator seed in every run (so runs differ only by env),
    ``EVAL_CHUNK`` records at a time through ``rollout_batch`` (each row = ``rollout_episode`` with its generator)."""
    import torch

    from virl_train.rollout import rollout_batch

    out = []
    for lo in range(0, len(records), EVAL_CHUNK):
        idx = range(lo, min(lo + EVAL_CHUNK, len(records)))
        gens = [torch.Generator().manual_seed(int(np.random.default_rng([seed, i]).integers(2**62))) for i in idx]
        out += rollout_batch(
            policy, [env_factory(i) for i in idx], [records[i] for i in idx], [image_of(i) for i in idx], 1,
            max_new_tokens=cfg.grpo.max_new_tokens, temperature=cfg.grpo.temperature, top_p=cfg.grpo.top_p,
            greedy=greedy, generator=gens,
        )  # fmt: skip
    return out


def make_probe_env(cfg: Any, probe_kind: str = "random", *, seed: int = 0, index: int = 0) -> Any:
    """The training environment of ``cfg`` (``train.make_env``) whose crops show ``PROBES[probe_kind]`` of the region
    asked for, its generator seeded by ``(seed, index)`` (so record ``index`` sees the same probe in every run)."""
    from virl_train.train import make_env

    if probe_kind not in PROBES:
        raise ConfigError(f"unknown probe {probe_kind!r}; use one of {', '.join(PROBES)}")
    env = make_env(cfg)
    env.region_transform = PROBES[probe_kind](np.random.default_rng([seed, index]))
    return env


def evaluate(
    policy: Any,
    records: Sequence[RationaleRecord],
    images: Sequence[Any] | Callable[[int], Any],
    cfg: Any,
    *,
    probe: bool = True,
    seed: int = 0,
    greedy: bool = True,
    probe_kind: str = "random",
    reason_threshold: float = 0.5,
) -> EvalReport:
    """Roll the policy out once per record (``images[i]`` = the ORIGINAL image of ``records[i]``, or a callable
    ``i -> image``) and, with ``probe``, once more in ``make_probe_env(cfg, probe_kind, seed=seed, index=i)``; score
    both with ``grounding_metrics``. ``cfg`` is the ``TrainConfig`` (model convention, env, rewards,
    ``grpo.max_new_tokens`` / temperature / top_p). The model runs in eval mode and gets its mode back after."""
    import torch

    from virl_train.train import make_env

    if not records:
        raise EvalError("no records to evaluate")
    if probe_kind not in PROBES:
        raise ConfigError(f"unknown probe {probe_kind!r}; use one of {', '.join(PROBES)}")
    image_of = _images(images, len(records))
    rewards = RewardConfig.from_params(cfg.rewards.preset, cfg.rewards.params)
    was_training = policy.model.training
    policy.model.eval()
    try:
        with torch.no_grad():
            normal = _run(policy, records, image_of, lambda i: make_env(cfg), cfg, seed=seed, greedy=greedy)
            probed = None
            if probe:
                envs = lambda i: make_probe_env(cfg, probe_kind, seed=seed, index=i)
                probed = _run(policy, records, image_of, envs, cfg, seed=seed, greedy=greedy)
    finally:
        policy.model.train(was_training)
    # each run scored once; the metrics, the report rows and the trajectory lines all read these scores
    scores = score_episodes(normal, records, rewards)
    probe_scores = score_episodes(probed, records, rewards) if probed else None
    metrics = _metrics([_episode(r) for r in normal], records, scores, reason_threshold, rewards)
    probe_metrics = (_metrics([_episode(r) for r in probed], records, probe_scores, reason_threshold, rewards)
                     if probed else None)
    config = {
        "train": dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else {},
        "rewards_resolved": rewards.to_dict(),
        "eval": {"probe": probe, "probe_kind": probe_kind, "seed": seed, "greedy": greedy,
                 "reason_threshold": reason_threshold, "hit_thresholds": list(HIT_THRESHOLDS)},
    }
    return EvalReport(metrics, probe_metrics, config, _rows(normal, probed, records, scores, probe_scores),
                      _trajectories(normal, records, scores, rewards))


def _trajectories(rollouts, records, scores, cfg: RewardConfig) -> list[dict[str, Any]]:
    """The normal run's scored episodes as trajectory-log lines (group = the record's index, sample 0, step null)."""
    return [
        trajectory_row(_episode(r), rec, sc.breakdown, cfg, source="eval", step=None, group=i, sample=0,
                       turns=getattr(r, "turn_texts", ()))
        for i, (r, rec, sc) in enumerate(zip(rollouts, records, scores))
    ]


def _rows(normal, probed, records, scores, probe_scores) -> list[dict[str, Any]]:
    """Per-episode rows of the scored normal run, each with the probe run's row under ``"probe"`` (None without
    probe)."""
    rows = []
    for i, (rec, sc, psc) in enumerate(zip(records, scores, probe_scores or [None] * len(records))):
        row = episode_row(_episode(normal[i]), rec, sc)
        row["probe"] = None if psc is None else episode_row(_episode(probed[i]), rec, psc)
        rows.append(row)
    return rows


# --- output ----------------------------------------------------------------------------------------------------------
def plot_report(report: EvalReport, path: str | Path) -> Path:
    """A bar plot of the ``PLOTTED`` metrics, normal vs probe, written atomically as PNG (Agg canvas, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    x = np.arange(len(PLOTTED))
    runs = [("normal", report.metrics)] + ([("probe", report.probe_metrics)] if report.probe_metrics else [])
    width = 0.8 / len(runs)
    for j, (name, m) in enumerate(runs):
        ax.bar(x + (j - (len(runs) - 1) / 2) * width, [m[k] for k in PLOTTED], width, label=name)
    ax.set_xticks(x, PLOTTED, rotation=20, ha="right")
    ax.set_ylim(0, 1.05)
    drop = report.probe_drop
    n = int(report.metrics["n_episodes"])
    ax.set_title(f"eval: {n} episodes" + (f", probe accuracy drop {drop:+.3f}" if drop is not None else ""))
    ax.legend()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return Path(path)


def write_report(report: EvalReport, out_dir: str | Path, *, rows: bool = True) -> tuple[Path, Path]:
    """Write ``out_dir/eval.json`` (``report.to_dict(rows)``), ``out_dir/eval.png`` and, when the report has them,
    the episodes as ``out_dir/trajectories.jsonl`` (``virl-train score`` reads it), each atomically."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if report.trajectories:
        write_trajectories(out_dir / FILE_NAME, report.trajectories)
    json_path = write_json(report.to_dict(rows), out_dir / "eval.json")
    return json_path, plot_report(report, out_dir / "eval.png")


def render_report(report: EvalReport) -> Any:
    """A rich ``Table``: one row per metric, columns normal / probe / Δ (counts shown as integers)."""
    from rich.table import Table

    probe = report.probe_metrics
    table = Table(title="virl eval" + (f" (probe accuracy drop {report.probe_drop:+.3f})" if probe else ""))
    for col in ("metric", "normal") + (("probe", "Δ") if probe else ()):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for key, value in report.metrics.items():
        fmt = (lambda v: str(int(v))) if key.startswith("n_") else (lambda v: f"{v:.3f}")
        cells = [key, fmt(value)]
        if probe:
            cells += [fmt(probe[key]), f"{probe[key] - value:+.3f}" if not key.startswith("n_") else ""]
        table.add_row(*cells)
    return table


__all__ = [
    "PROBES",
    "EpisodeScore",
    "EvalError",
    "EvalReport",
    "chain_metrics",
    "context_agnosticism",
    "episode_row",
    "evaluate",
    "full_image",
    "grounding_metrics",
    "make_probe_env",
    "plot_report",
    "random_same_size",
    "render_report",
    "score_episodes",
    "write_report",
]
