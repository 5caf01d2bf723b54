"""SFT warm start (``virl-train sft``): teach the policy the environment's action format on ground-truth rationales.

For every training record the *reference trajectory* is rendered in the environment's own language::

    turn k (one per chain step)  <crop>[x1, y1, x2, y2]</crop>     the union box of step k, in the model's convention
    last turn                    <answer>gold</answer>                the gold box in the model's convention for a
                                                                      box answer (``answer_type="box"``)

and played through ``rollout.rollout_episode(..., script=turns)``: the environment parses each turn, cuts the real
crop and inserts it (loss mask 0), so the model is trained on exactly the token stream it will later sample in.
The loss is the mean negative log-likelihood over the model's own tokens (loss mask 1)::

    L = − Σ_{b,j} m_bj · log π(y_bj | y_b<j, images) / Σ_{b,j} m_bj

The policy is written with ``policy.save_policy`` to ``OUT/final``; RL then starts from it with
``model.name_or_path=OUT/final``. Teacher-forced episodes are deterministic, so each record's rollout (token ids,
encoded images) is built once and reused every step.

Example:
    >>> cfg = load_config("configs/shapes_learn.yaml")                  # doctest: +SKIP
    >>> out = sft(cfg, steps=200, lr=3e-3, out_dir="runs/sft")          # doctest: +SKIP
    >>> load_policy(ModelConfig(name_or_path=str(out / "final")))       # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from virl_data.core import boxes
from virl_data.core.boxanswer import answer_box
from virl_data.core.errors import ConfigError
from virl_data.core.types import RationaleRecord
from virl_data.storage.corpus import write_json
from virl_data.storage.locks import folder_lock
from virl_data.storage.trajectories import truncate_steps
from virl_train.actions import from_pixels
from virl_train.config import GRPOConfig, OptimConfig, TrainConfig, check_field, save_config
from virl_train.data import ExampleSet
from virl_train.env import CropEnv
from virl_train.policy import Policy, load_policy, save_policy
from virl_train.rollout import Rollout, batch_inputs, completion_logprobs, rollout_episode
from virl_train.train import (
    PRECISION,
    batch_indices,
    checkpoint_step,
    latest_checkpoint,
    make_env,
    save_checkpoint,
    trainable_parameters,
)

FRACTIONAL = ("rel_xyxy", "padded_square_rel")
"""Conventions whose values are fractions (written with 3 decimals); the others are written as integers."""

StepCallback = Callable[[int, dict[str, float]], None]


# --- the reference trajectory (pure) ---------------------------------------------------------------------------------
def model_box(box: Sequence[float], env: CropEnv, image_size: tuple[int, int]) -> list[float]:
    """An ORIGINAL-pixel box ``(x1, y1, x2, y2)`` → the 4 values the model writes in ``env``'s convention
    (``actions.from_pixels``, the inverse of what the env parses).

    >>> env = CropEnv("qwen2_norm1000")
    >>> model_box((10, 20, 30, 40), env, (100, 200))
    [100.0, 100.0, 300.0, 200.0]
    """
    return from_pixels(box, env.convention, image_size, env.view_size(*image_size), env.params).tolist()


def _fmt_values(values: Sequence[float], convention: str) -> str:
    if convention in FRACTIONAL:
        return ", ".join(f"{v:.3f}" for v in values)
    return ", ".join(str(int(round(v))) for v in values)


def crop_text(values: Sequence[float], env: CropEnv) -> str:
    """One crop turn in ``env``'s action syntax: ``<crop>[x1, y1, x2, y2]</crop>`` or the JSON tool call."""
    inner = f"[{_fmt_values(values, env.convention)}]"
    if env.fmt == "json":
        return f'{{"name": "crop", "arguments": {{"bbox_2d": {inner}}}}}'
    return f"<crop>{inner}</crop>"


def decoy_box(box: Sequence[float], size: tuple[int, int], avoid: np.ndarray, rng: random.Random,
              max_iou: float = 0.1, tries: int = 64) -> list[float] | None:
    """A box of ``box``'s width and height at a random place inside the ``size = (w, h)`` image whose IoU with every
    box of ``avoid`` (``[N, 4]``, original pixels) is at most ``max_iou``; None when ``tries`` random places all
    overlap (e.g. the box covers most of the image).

    >>> decoy_box((0, 0, 10, 10), (100, 100), np.array([[0, 0, 10, 10]]), random.Random(0))
    [49.0, 53.0, 59.0, 63.0]
    """
    bw, bh = box[2] - box[0], box[3] - box[1]
    w, h = size
    if bw >= w or bh >= h:
        return None
    for _ in range(tries):
        x1, y1 = float(rng.randint(0, int(w - bw))), float(rng.randint(0, int(h - bh)))
        cand = np.array([[x1, y1, x1 + bw, y1 + bh]])
        if not len(avoid) or float(boxes.iou_matrix(cand, avoid).max()) <= max_iou:
            return cand[0].tolist()
    return None


def centred_box(box: Sequence[float], size: tuple[int, int]) -> list[float]:
    """A box of ``box``'s width and height (at most the image's) centred in the ``size = (w, h)`` image.

    >>> centred_box((0, 0, 10, 20), (100, 100))
    [45.0, 40.0, 55.0, 60.0]
    """
    w, h = size
    bw, bh = min(box[2] - box[0], w), min(box[3] - box[1], h)
    x1, y1 = (w - bw) / 2, (h - bh) / 2
    return [float(x1), float(y1), float(x1 + bw), float(y1 + bh)]


DECOY_KINDS = ("elsewhere", "whole", "centre", "first")
EXTRA_KINDS = ("redundant", "erroneous")
"""Extra actions a reference may carry besides its chain (``reference_turns``): a *redundant* repeat of the last
rationale crop after it, an *erroneous* crop of an empty place before the first one."""


def empty_box(box: Sequence[float], size: tuple[int, int], avoid: np.ndarray, rng: random.Random,
              max_iou: float = 0.0) -> list[float]:
    """A box of ``box``'s size over no box of ``avoid`` (IoU ≤ ``max_iou``): ``box`` mirrored through the image
    centre (on a grid: the diagonally opposite cell, empty on a one-shape image) when that is free, else a random
    free place (``decoy_box``), else the mirror anyway.

    >>> empty_box((0, 0, 40, 40), (112, 112), np.array([[0, 0, 40, 40]]), random.Random(0))
    [72.0, 72.0, 112.0, 112.0]
    """
    w, h = size
    mirror = [float(w - box[2]), float(h - box[3]), float(w - box[0]), float(h - box[1])]
    if not len(avoid) or float(boxes.iou_matrix(np.array([mirror]), avoid).max()) <= max_iou:
        return mirror
    return decoy_box(box, size, avoid, rng, max_iou=max_iou) or mirror


def reference_turns(record: RationaleRecord, env: CropEnv, decoy: random.Random | None = None,
                    decoy_kind: str = "elsewhere", extras: Sequence[str] = ()) -> list[str]:  # fmt: skip
    """The record's ground-truth trajectory as turn texts: one crop per chain step (the union box of the step's
    boxes, in the model's convention, rounded), then ``<answer>gold</answer>``.

    With ``decoy`` (a seeded RNG) every crop is a *decorative* one instead, the answer still the gold one:
    ``decoy_kind="elsewhere"`` moves the step's box to a random place that overlaps no rationale box (``decoy_box``;
    the true box where none fits); ``"whole"`` crops the whole image, a zoom that shows everything and localises
    nothing; ``"centre"`` puts the step's box at the image centre, the same place whatever the question (a
    context-agnostic crop); ``"first"`` moves only the chain's first step to a place that overlaps no rationale box
    (``empty_box``: labelled erroneous) and keeps the later steps: a start that skips the first hop of a chain and
    still looks where the answer is. An SFT mix of such trajectories gives a start that partly crops for show and
    answers anyway, the behaviour outcome-only RL has no reason to correct (``benchmarks/learning.py``).

    ``extras`` (``EXTRA_KINDS``) adds wasted actions, answer kept: ``"erroneous"`` an ``empty_box`` crop (the first
    step's box where no rationale box is) before the first crop, ``"redundant"`` the last crop once more after it;
    the credit rule labels them erroneous (no overlap) and redundant (duplicate of the earlier crop).

    A chain (with its extras) longer than ``env.max_actions`` cannot be played in the environment: ``ConfigError``.
    """
    if decoy_kind not in DECOY_KINDS:
        raise ConfigError(f"unknown decoy kind {decoy_kind!r}; choose one of {', '.join(DECOY_KINDS)}")
    if unknown := [e for e in extras if e not in EXTRA_KINDS]:
        raise ConfigError(f"unknown extra action {unknown[0]!r}; choose from {', '.join(EXTRA_KINDS)}")
    if len(record.chain) + len(extras) > env.max_actions:
        raise ConfigError(f"record {record.id}: its chain has {len(record.chain)} steps (+ {len(extras)} extra) but "
                          f"env.max_actions is {env.max_actions}; raise env.max_actions to at least the longest")
    size = (record.image.width, record.image.height)
    avoid = boxes.as_array([b for step in record.chain for b in step.boxes])
    turns = []
    for i, step in enumerate(record.chain):
        union = boxes.union(boxes.as_array(step.boxes)).tolist()
        if decoy is not None and decoy_kind == "whole":
            union = [0.0, 0.0, float(size[0]), float(size[1])]
        elif decoy is not None and decoy_kind == "centre":
            union = centred_box(union, size)
        elif decoy is not None and decoy_kind == "first":
            union = empty_box(union, size, avoid, decoy) if i == 0 else union
        elif decoy is not None:
            union = decoy_box(union, size, avoid, decoy) or union
        turns.append(crop_text(model_box(union, env, size), env))
    if "erroneous" in extras:
        first = boxes.union(boxes.as_array(record.chain[0].boxes)).tolist()
        empty = empty_box(first, size, avoid, random.Random(f"empty:{record.id}"))
        turns.insert(0, crop_text(model_box(empty, env, size), env))
    if "redundant" in extras:
        turns.append(turns[-1])
    return turns + [f"<answer>{answer_text(record, env)}</answer>"]


def extra_actions(record: RationaleRecord, shares: dict[str, float] | None, seed: int) -> tuple[str, ...]:
    """The extra actions of ``record``'s reference: each kind of ``shares`` (``{"redundant": p, "erroneous": q}``)
    drawn independently with its probability, a function of the record id, the kind and ``seed`` only (so both
    come together at a share ``p·q``)."""
    shares = shares or {}
    return tuple(kind for kind in EXTRA_KINDS
                 if shares.get(kind, 0.0) > 0 and random.Random(f"{seed}:{kind}:{record.id}").random() < shares[kind])


def decoy_rng(record: RationaleRecord, rate: float, seed: int) -> random.Random | None:
    """The RNG of ``record``'s decorative reference when it draws one (probability ``rate``, a function of the
    record id and ``seed`` only), else None."""
    if rate <= 0:
        return None
    rng = random.Random(f"{seed}:{record.id}")
    return rng if rng.random() < rate else None


def answer_text(record: RationaleRecord, env: CropEnv) -> str:
    """The gold answer as the model writes it: the text, or for a box answer (``answer_type="box"``) the gold box
    in the model's convention, written like a crop's box (``[x1, y1, x2, y2]``, what the env parses back).

    >>> from virl_data.core.types import Box, ImageRef, Provenance, RationaleStep
    >>> rec = RationaleRecord(id="r", image=ImageRef("a.png", 100, 200), question='Where is "x"?',
    ...     answer="[10, 20, 30, 40]", answer_type="box", chain=(RationaleStep((Box(10, 20, 30, 40),)),),
    ...     provenance=Provenance("t"))
    >>> answer_text(rec, CropEnv("qwen2_norm1000"))
    '[100, 100, 300, 200]'
    """
    gold = answer_box(record)
    if gold is None:
        return record.answer
    size = (record.image.width, record.image.height)
    return f"[{_fmt_values(model_box(gold.as_tuple(), env, size), env.convention)}]"


def reference_rollout(policy: Policy, env: CropEnv, record: RationaleRecord, image, max_new_tokens: int,
                      decoy: random.Random | None = None, decoy_kind: str = "elsewhere",
                      extras: Sequence[str] = ()) -> Rollout:  # fmt: skip
    """The teacher-forced rollout of ``record``'s reference trajectory (real crops inserted by ``env``); decorative
    crops of ``decoy_kind`` with ``decoy``, wasted ``extras`` (``reference_turns``)."""
    return rollout_episode(policy, env, record, image, max_new_tokens=max_new_tokens,
                           script=reference_turns(record, env, decoy, decoy_kind, extras))


def nll_loss(logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood over the masked tokens: ``−Σ m·logp / max(Σ m, 1)``."""
    return -(logp * mask).sum() / mask.sum().clamp(min=1.0)


# --- the loop --------------------------------------------------------------------------------------------------------
def _optimizer(model: torch.nn.Module, lr: float, steps: int, warmup: int, weight_decay: float):
    opt = torch.optim.AdamW(trainable_parameters(model), lr=lr, weight_decay=weight_decay)

    def factor(step: int) -> float:  # linear warmup, then cosine to 10 % of lr
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(steps - warmup, 1)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def sft(
    cfg: TrainConfig,
    steps: int,
    *,
    lr: float | None = None,
    batch_size: int | None = None,
    out_dir: str | Path | None = None,
    warmup: int = 10,
    save_every: int | None = None,
    resume: bool = True,
    callbacks: Sequence[StepCallback] = (),
    decoys: float = 0.0,
    decoy_kind: str = "elsewhere",
    extras: dict[str, float] | None = None,
) -> Path:
    """Supervised warm start on the reference trajectories of ``cfg.data`` (train split, ``data.limit``).

    ``lr`` defaults to ``optim.lr``, ``batch_size`` to ``grpo.batch_size × grpo.group_size`` episodes per step;
    warmup then cosine decay to 0.1·lr; gradients clipped at ``optim.grad_clip``. Batches follow
    ``train.batch_indices`` (a seeded permutation per epoch, a function of the step). Writes ``OUT/config.yaml``,
    ``OUT/log.jsonl`` (``loss``, ``lr``, ``time/*`` per step), a checkpoint every ``save_every`` steps (default
    ``run.save_every``) and at the end, and the policy to ``OUT/final``; returns ``OUT`` (``out_dir`` or
    ``run.out_dir``).

    Checkpoints work as in ``train``: ``accelerator.save_state`` into ``OUT/checkpoints/step_N`` (model, optimizer,
    schedule, every RNG), the newest two kept. With ``resume`` a rerun loads the newest one and continues at the
    next step, to the same parameters an uninterrupted run reaches; ``log.jsonl`` is cut back to that step first.
    One writer per ``OUT``: while this runs, another ``sft`` or ``train`` into it fails at once with
    ``virl_data.storage.locks.FolderBusyError`` naming this process.

    ``decoys``: the share of records whose reference crops are decorative (``reference_turns``: moved off every
    rationale box, answer kept; with ``decoy_kind="whole"`` the whole image, with ``"centre"`` the image centre), drawn
    per record from its id and ``run.seed``; 0 (default) = none. The share drawn is logged as ``decoys`` and written
    to ``OUT/sft.json``. ``extras``: per ``EXTRA_KINDS`` kind, the share of references carrying that wasted action
    (``extra_actions``; e.g. ``{"redundant": 0.5, "erroneous": 0.5}``); the shares drawn go to ``OUT/sft.json``.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    # every number is checked before anything is loaded or written, as a config's are (a bad one leaves no run folder)
    lr = cfg.optim.lr if lr is None else check_field(OptimConfig, "lr", lr, "sft: lr")
    if batch_size is not None:
        check_field(GRPOConfig, "batch_size", batch_size, "sft: batch_size")
    if steps < 1:
        raise ConfigError(f"sft: steps must be >= 1, got {steps}")
    if save_every is not None and save_every < 1:
        raise ConfigError(f"sft: save_every must be >= 1, got {save_every}")
    if not 0.0 <= decoys <= 1.0:
        raise ConfigError(f"sft: decoys must be a share in [0, 1], got {decoys}")
    if decoy_kind not in DECOY_KINDS:
        raise ConfigError(f"sft: unknown decoy kind {decoy_kind!r}; choose one of {', '.join(DECOY_KINDS)}")
    extras = {k: float(v) for k, v in (extras or {}).items()}
    if bad := [k for k, v in extras.items() if k not in EXTRA_KINDS or not 0.0 <= v <= 1.0]:
        raise ConfigError(f"sft: extras must map {' / '.join(EXTRA_KINDS)} to a share in [0, 1], got {bad[0]!r}")
    out = Path(out_dir if out_dir is not None else cfg.run.out_dir)
    bs = cfg.grpo.batch_size * cfg.grpo.group_size if batch_size is None else batch_size
    every = save_every or cfg.run.save_every
    with folder_lock(out):  # one writer per run folder: a second one fails here, naming the first
        accelerator = Accelerator(mixed_precision=PRECISION[cfg.run.mixed_precision], cpu=not torch.cuda.is_available())
        set_seed(cfg.run.seed)
        examples = ExampleSet.load(cfg.data.path, cfg.data.train_split, limit=cfg.data.limit)
        policy = load_policy(cfg.model, seed=cfg.run.seed)
        n = len(examples)
        added = [extra_actions(examples[i], extras, cfg.run.seed) for i in range(n)]
        extra_share = {k: sum(k in a for a in added) / max(1, n) for k in EXTRA_KINDS}
        decoy_share = sum(decoy_rng(examples[i], decoys, cfg.run.seed) is not None for i in range(n)) / max(1, n)

        def reference(i: int) -> Rollout:
            """Example ``i``'s reference rollout, built when a batch needs it (held for one step: memory does not
            grow with the data; the same rollout every time, its decoy RNG and extras being functions of the
            record and the seed)."""
            return reference_rollout(policy, make_env(cfg), examples[i], examples.image(i), cfg.grpo.max_new_tokens,
                                     decoy_rng(examples[i], decoys, cfg.run.seed), decoy_kind, added[i])
        opt, sched = _optimizer(policy.model, lr, steps, min(warmup, steps), cfg.optim.weight_decay)
        model, opt = accelerator.prepare(policy.model, opt)
        accelerator.register_for_checkpointing(sched)
        start = 0
        ckpt = latest_checkpoint(out) if resume else None
        if ckpt is not None:
            start = checkpoint_step(ckpt, "sft")
            accelerator.load_state(str(ckpt))
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        write_json({"steps": steps, "lr": lr, "batch_size": bs, "warmup": warmup, "decoys": decoys,
                    "decoy_kind": decoy_kind, "decoy_share": decoy_share, "extras": extras, "extra_share": extra_share,
                    "records": n, "seed": cfg.run.seed},
                   out / "sft.json")  # fmt: skip
        truncate_steps(out / "log.jsonl", start)
        log = (out / "log.jsonl").open("a", buffering=1)  # line-buffered: a killed run keeps its lines
        model.train()
        t_start = time.perf_counter()
        try:
            for step in range(start, steps):
                t0 = time.perf_counter()
                idx = batch_indices(step, n, bs, cfg.run.seed)
                batch = batch_inputs(policy, [reference(i) for i in idx], accelerator.device)
                loss = nll_loss(completion_logprobs(model, batch), batch.completion_mask)
                accelerator.backward(loss)
                norm = accelerator.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip or math.inf)
                opt.step()
                sched.step()
                opt.zero_grad()
                metrics = {"loss": float(loss.detach()), "grad_norm": float(norm), "lr": sched.get_last_lr()[0],
                           "decoys": decoy_share,
                           "time/step_s": time.perf_counter() - t0, "time/wall_s": time.perf_counter() - t_start}
                log.write(json.dumps({"step": step + 1, **metrics}) + "\n")
                if (step + 1) % every == 0 or step + 1 == steps:
                    save_checkpoint(accelerator, out, step + 1, stage="sft")
                for cb in callbacks:
                    cb(step + 1, metrics)
        finally:
            log.close()
        model.eval()
        if steps > start or not (out / "final").is_dir():
            policy.model = accelerator.unwrap_model(model)
            save_policy(policy, out / "final")
        return out


def reference_loss(policy: Policy, rollouts: Sequence[Rollout]) -> float:
    """The SFT loss of ``policy`` on ``rollouts`` (no gradients): how well it already predicts the references."""
    was = policy.model.training
    policy.model.eval()
    try:
        with torch.no_grad():
            batch = batch_inputs(policy, rollouts, policy.device)
            return float(nll_loss(completion_logprobs(policy.model, batch), batch.completion_mask))
    finally:
        policy.model.train(was)


__all__ = ["EXTRA_KINDS", "crop_text", "empty_box", "extra_actions", "model_box", "nll_loss", "reference_loss",
           "reference_rollout", "reference_turns", "sft"]
