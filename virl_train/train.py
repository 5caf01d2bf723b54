"""The ViRL training loop on Accelerate. It reads top to bottom, like a recipe::

    for step in range(start, max_steps):
        records  = the next batch of prompts (a seeded permutation per epoch; the position is a function of the step)
        rollouts = group_size multi-turn episodes per record, sampled as one batch (virl_train.rollout, CropEnv)
        rewards  = score_record(episode, record)  → total + step credits c_k  (virl_train.rewards, pure)
        diag     = zero-spread groups, entropy, KL to the start, distinct crops, reward spreads (virl_train.diagnostics)
        A        = group_advantages(total) on every completion token, + η·Â_k on the tokens of action k
        loss     = clipped policy loss (+ k3 KL to the reference) over the policy's own tokens (env tokens masked)
        update   = backward per micro-batch, gradient clipping, AdamW step, schedule step
        log / checkpoint

Exact resume: ``accelerator.save_state`` stores model, optimizer, scheduler and every RNG; the data position and the
sampling seeds are functions of the step, so a run restarted from the checkpoint of step k repeats steps k+1… as an
uninterrupted run would. Logs go to ``out_dir/log.jsonl`` and TensorBoard (``out_dir/tb``); every sampled episode, with
its reward breakdown, to ``out_dir/trajectories.jsonl`` (``virl_train.trajectories``; ``virl-train score`` reads it).
On resume every log (both JSONL files and the TensorBoard events) is cut back to the checkpoint's step first, so no
step is logged twice.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from virl_data.core.errors import ConfigError
from virl_data.storage.corpus import atomic_path
from virl_data.storage.locks import folder_lock
from virl_train.advantages import group_advantages, normalized_credits, token_advantages
from virl_train.config import TrainConfig, save_config
from virl_train.data import ExampleSet
from virl_train.diagnostics import kl_to_start, label_advantages, step_diagnostics
from virl_train.env import CropEnv
from virl_train.loss import policy_loss
from virl_train.metrics import action_metrics
from virl_train.policy import Policy, load_policy, save_policy
from virl_train.rewards import RewardConfig, score_record
from virl_train.rollout import Rollout, batch_inputs, completion_logprobs, rollout_batch
from virl_train.trajectories import FILE_NAME as TRAJECTORIES
from virl_train.trajectories import TrajectoryLog, trajectory_row, truncate_steps
from virl_train.types import RewardBreakdown

PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}
CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"

StepCallback = Callable[[int, dict[str, float]], None]


@dataclass
class TrainResult:
    """Where a run wrote its outputs, how many steps it has done, and the metrics of its last step."""

    out_dir: Path
    steps: int
    metrics: dict[str, float] = field(default_factory=dict)
    resumed_from: int | None = None


# --- small pure pieces -------------------------------------------------------------------------------------------
def reward_config(cfg: TrainConfig) -> RewardConfig:
    """The reward switches and weights of a run (``rewards.preset`` + ``rewards.params``)."""
    return RewardConfig.from_params(cfg.rewards.preset, cfg.rewards.params)


def batch_indices(step: int, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> list[int]:
    """Record indices of ``step``'s batch on process ``rank``: position ``p`` of the stream is record
    ``perm_e[p mod n]`` with ``e = p div n`` and ``perm_e`` a permutation seeded by ``(seed, e)``.

    >>> batch_indices(0, 4, 2, 0) != batch_indices(1, 4, 2, 0)
    True
    """
    start = (step * world + rank) * batch_size
    out = []
    for p in range(start, start + batch_size):
        epoch = p // n
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        out.append(int(perm[p % n]))
    return out


def make_env(cfg: TrainConfig) -> CropEnv:
    """A fresh crop environment as the config describes it (crops sized with the model family's patch factor)."""
    from virl_train.models import family_for

    m, e = cfg.model, cfg.env
    return CropEnv(
        m.box_convention,
        max_actions=e.max_actions,
        min_crop=e.min_crop,
        max_aspect=e.max_aspect,
        min_pixels=m.min_pixels,
        max_pixels=m.max_pixels,
        fmt=e.action_format,
        oob_tol=e.oob_tol,
        frame=e.frame,
        scale=m.box_scale,
        factor=family_for(m).factor,
    )


def rollout_metrics(rollouts: Sequence[Rollout], scores: Sequence[RewardBreakdown]) -> dict[str, float]:
    """Means of every reward component, the action metrics (``actions/<name>``, ``metrics.action_metrics``: the
    eval report's numbers), lengths and turns over one step's episodes."""
    out: dict[str, float] = {"reward/total": float(np.mean([s.total for s in scores]))}
    for key in scores[0].components:
        out[f"reward/{key}"] = float(np.mean([s.components[key] for s in scores]))
    out |= {f"actions/{k}": v for k, v in action_metrics([r.episode for r in rollouts], scores).items()}
    out["length/completion_tokens"] = float(np.mean([len(r.episode.completion_ids) for r in rollouts]))
    out["length/policy_tokens"] = float(np.mean([sum(r.episode.loss_mask) for r in rollouts]))
    out["length/turns"] = float(np.mean([r.episode.n_turns for r in rollouts]))
    out["answered_rate"] = float(np.mean([r.episode.answer is not None for r in rollouts]))
    return out


def advantages_for(
    rollouts: Sequence[Rollout], scores: Sequence[RewardBreakdown], group_size: int, length: int, eta: float
) -> torch.Tensor:
    """Per-token advantages ``[N, length]``: A_out everywhere, + η·Â_k on the tokens of action k."""
    a_out = group_advantages(torch.tensor([s.total for s in scores], dtype=torch.float32), group_size)
    credit_hat = normalized_credits([list(s.per_action) for s in scores], group_size)
    spans = [[a.token_span for a in r.episode.actions if a.kind.value != "answer"] for r in rollouts]
    return token_advantages(a_out, credit_hat, spans, length, eta)


def is_main_process() -> bool:
    """Whether this process is the main one of an ``accelerate launch`` group (True in a plain run)."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available()).is_main_process


# --- checkpoints -------------------------------------------------------------------------------------------------
def latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest complete checkpoint folder (one with a ``trainer_state.json``), or None."""
    root = out_dir / CHECKPOINTS
    done = [p for p in root.glob("step_*") if (p / STATE_FILE).exists()] if root.is_dir() else []
    return max(done, key=lambda p: int(p.name.split("_")[1]), default=None)


def save_checkpoint(accelerator: Any, out_dir: Path, step: int, keep: int = 2, stage: str = "train") -> Path:
    """``accelerator.save_state`` into ``checkpoints/step_N`` (written to a temp folder, then renamed); the state file
    names the ``stage`` (train | sft) so that one cannot resume from the other's checkpoint."""
    final = out_dir / CHECKPOINTS / f"step_{step}"
    tmp = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()  # every process's files are in tmp before it is renamed (save_state has no barrier)
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps({"step": step, "stage": stage}))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        old = sorted((out_dir / CHECKPOINTS).glob("step_*"), key=lambda p: int(p.name.split("_")[1].split(".")[0]))
        for p in old[:-keep]:
            shutil.rmtree(p, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def checkpoint_step(ckpt: Path, stage: str = "train") -> int:
    """The step a checkpoint was saved at; ``ConfigError`` when it is another stage's (an SFT checkpoint in a GRPO
    run's folder or the reverse; a state file without a stage is a training one)."""
    state = json.loads((ckpt / STATE_FILE).read_text())
    if state.get("stage", "train") != stage:
        raise ConfigError(f"{ckpt} is a checkpoint of {state.get('stage')!r}, not of {stage!r}: write this run to "
                          "another folder, or start over with --fresh")
    return int(state["step"])


def truncate_events(tb_dir: Path, last_step: int) -> int:
    """Cut every TensorBoard events file under ``tb_dir`` back to ``last_step``: the events of later steps (what a
    killed run logged after its checkpoint, which the resumed run logs again) and a torn last record are dropped,
    the rest is kept byte for byte (atomic rewrite). Returns the number of events dropped.

    Physically, not only with ``SummaryWriter(purge_step=...)``: that marker is honoured by TensorBoard's Python
    loader but not by every reader of the files (pandas exporters, other servers)."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.summary.writer.record_writer import RecordWriter

    dropped = 0
    for path in sorted(tb_dir.rglob("events.out.tfevents.*")) if tb_dir.is_dir() else []:
        records = list(RawEventFileLoader(str(path)).Load())  # stops at a torn record
        keep = [r for r in records if Event.FromString(r).step <= last_step]
        if len(keep) == len(records) and path.stat().st_size == sum(len(r) + 16 for r in records):
            continue  # nothing after the step, nothing torn (a record is 8 + 4 + data + 4 bytes)
        with atomic_path(path) as tmp, tmp.open("wb") as fh:
            writer = RecordWriter(fh)
            for record in keep:
                writer.write(record)
        dropped += len(records) - len(keep)
    return dropped


class _Logger:
    """JSONL + TensorBoard, main process only. ``resume_step``: both are first cut back to that step."""

    def __init__(self, out_dir: Path, enabled: bool, resume_step: int = 0) -> None:
        self.enabled = enabled
        self.path = out_dir / "log.jsonl"
        self.tb = None
        if enabled:
            truncate_steps(self.path, resume_step)
            try:
                from torch.utils.tensorboard import SummaryWriter

                truncate_events(out_dir / "tb", resume_step)
                self.tb = SummaryWriter(str(out_dir / "tb"))
            except ImportError:  # tensorboard is in the [train] extra; logs still go to JSONL
                self.tb = None

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as fh:
            fh.write(json.dumps({"step": step, **metrics}) + "\n")
        if self.tb is not None:
            for key, value in metrics.items():
                self.tb.add_scalar(key, value, step)
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


# --- the loop ----------------------------------------------------------------------------------------------------
def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters an optimizer should get; ``ConfigError`` when there are none."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the policy has no trainable parameters (check model.lora)")
    return params


def _optimizer_and_schedule(model: torch.nn.Module, cfg: TrainConfig):
    from transformers import get_scheduler

    optimizer = torch.optim.AdamW(trainable_parameters(model), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    names = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}
    scheduler = get_scheduler(
        names[cfg.optim.schedule], optimizer, num_warmup_steps=cfg.optim.warmup_steps,
        num_training_steps=max(cfg.run.max_steps, 1),
    )
    return optimizer, scheduler


def _reference(policy: Policy, cfg: TrainConfig) -> torch.nn.Module | None:
    """A frozen copy of the initial policy for the k3 KL and the ``diag/kl_start`` diagnostic (None with LoRA: the
    model with its adapters disabled is the start policy)."""
    if cfg.model.lora.enabled:
        return None
    ref = copy.deepcopy(policy.model).eval()
    ref.requires_grad_(False)
    return ref


def _ref_logprobs(ref: torch.nn.Module | None, model: torch.nn.Module, batch: Any, cfg: TrainConfig):
    if cfg.grpo.kl_coef == 0:
        return None
    with torch.no_grad():
        if ref is not None:
            return completion_logprobs(ref, batch, cfg.grpo.temperature)
        base = model.module if hasattr(model, "module") else model  # DDP-wrapped in multi-process runs
        with base.disable_adapter():  # LoRA: the base model is the reference
            return completion_logprobs(base, batch, cfg.grpo.temperature)


def _rollouts(policy: Policy, examples: ExampleSet, idx: list[int], cfg: TrainConfig, step: int, rank: int):
    """``group_size`` episodes of each record of the batch, all sampled together (``rollout_batch``); episode
    ``(b, k)`` draws from its own generator seeded by ``(seed, step, rank, b, k)``."""
    g = cfg.grpo
    records = [examples[i] for i in idx]
    gens = [torch.Generator().manual_seed(hash((cfg.run.seed, step, rank, b, k)) % (2**63))
            for b in range(len(idx)) for k in range(g.group_size)]  # fmt: skip
    rollouts = rollout_batch(
        policy, [make_env(cfg) for _ in gens], records, [examples.image(i) for i in idx], g.group_size,
        max_new_tokens=g.max_new_tokens, temperature=g.temperature, top_p=g.top_p, generator=gens,
    )  # fmt: skip
    return rollouts, [rec for rec in records for _ in range(g.group_size)]


def train(cfg: TrainConfig, *, callbacks: Sequence[StepCallback] = (), resume: bool = True) -> TrainResult:
    """Run GRPO with the ViRL reward for ``cfg.run.max_steps`` steps; resume from the newest checkpoint of
    ``cfg.run.out_dir`` when ``resume``. ``callbacks`` get ``(step, metrics)`` after each step (an exception raised
    there stops the run, e.g. to simulate an interruption in tests). The run holds ``out_dir``'s lock
    (``virl_data.storage.locks.folder_lock``): a second run into it fails at once with ``FolderBusyError`` naming this one."""
    from accelerate import Accelerator

    out_dir = Path(cfg.run.out_dir)
    if cfg.grpo.temperature <= 0:
        raise ConfigError("grpo.temperature must be > 0 for training (the policy ratio is taken at that temperature)")
    if cfg.grpo.batch_size * cfg.grpo.group_size < cfg.optim.grad_accum:
        raise ConfigError(
            f"optim.grad_accum={cfg.optim.grad_accum} exceeds the {cfg.grpo.batch_size * cfg.grpo.group_size} "
            "episodes of a step (grpo.batch_size x grpo.group_size)"
        )
    accelerator = Accelerator(
        mixed_precision=PRECISION[cfg.run.mixed_precision], gradient_accumulation_steps=cfg.optim.grad_accum,
        cpu=not torch.cuda.is_available(),  # accelerate only forms a multi-CPU (gloo) group when told cpu=True
    )
    # one writer per run folder: a second run into it fails here, naming the first, before it touches a file
    with folder_lock(out_dir) if accelerator.is_main_process else contextlib.nullcontext():
        return _train(cfg, accelerator, out_dir, callbacks, resume)


def _train(cfg: TrainConfig, accelerator: Any, out_dir: Path, callbacks: Sequence[StepCallback], resume: bool):
    """The run itself, once ``train`` holds the run folder."""
    from accelerate.utils import set_seed

    set_seed(cfg.run.seed)
    rewards_cfg = reward_config(cfg)
    examples = ExampleSet.load(cfg.data.path, cfg.data.train_split, limit=cfg.data.limit)
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / "config.yaml")

    policy = load_policy(cfg.model, seed=cfg.run.seed)
    ref = _reference(policy, cfg)
    optimizer, scheduler = _optimizer_and_schedule(policy.model, cfg)
    model, optimizer = accelerator.prepare(policy.model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    if ref is not None:
        ref.to(accelerator.device)

    start, resumed = 0, None
    ckpt = latest_checkpoint(out_dir) if resume else None
    if ckpt is not None:
        start = resumed = checkpoint_step(ckpt)
        accelerator.load_state(str(ckpt))
    # what a killed run logged after its checkpoint is logged again below: every log is cut back to it first
    logger = _Logger(out_dir, accelerator.is_main_process, resume_step=start)
    trajectories = TrajectoryLog(out_dir / TRAJECTORIES, resume_step=start, enabled=accelerator.is_main_process)
    metrics: dict[str, float] = {}
    wall0 = time.perf_counter()
    rank, world = accelerator.process_index, accelerator.num_processes
    try:
        for step in range(start, cfg.run.max_steps):
            t0 = time.perf_counter()
            idx = batch_indices(step, len(examples), cfg.grpo.batch_size, cfg.run.seed, rank, world)

            # 1. rollouts: the policy acts in the crop environment (no gradients)
            model.eval()
            policy.model = accelerator.unwrap_model(model)
            with torch.no_grad():
                rollouts, records = _rollouts(policy, examples, idx, cfg, step, rank)
            t_roll = time.perf_counter() - t0

            # 2. rewards (pure) and per-token advantages
            scores = [score_record(r.episode, rec, rewards_cfg) for r, rec in zip(rollouts, records)]
            batch = batch_inputs(policy, rollouts, accelerator.device)
            adv = advantages_for(rollouts, scores, cfg.grpo.group_size, batch.completion_mask.shape[1], rewards_cfg.eta)
            adv = adv.to(accelerator.device)
            diag = step_diagnostics(rollouts, scores, cfg.grpo.group_size) | label_advantages(rollouts, scores, adv)
            diag |= kl_to_start(ref, model, batch, rollouts, cfg.grpo.temperature)

            # 3. the clipped policy update (updates_per_batch passes over grad_accum micro-batches)
            model.train()
            stats = _update(model, ref, optimizer, scheduler, accelerator, policy, rollouts, adv, cfg)

            # 4. log and checkpoint
            metrics = rollout_metrics(rollouts, scores) | stats | diag
            metrics |= {
                "lr": scheduler.get_last_lr()[0], "time/rollout_s": t_roll,
                "time/step_s": time.perf_counter() - t0, "time/wall_s": time.perf_counter() - wall0,
            }
            if world > 1:  # every process rolled out its own prompts: log the mean over processes
                values = accelerator.reduce(torch.tensor(list(metrics.values()), device=accelerator.device), "mean")
                metrics = dict(zip(metrics, values.tolist()))
            if (step + 1) % cfg.run.log_every == 0 or step + 1 == cfg.run.max_steps:
                logger.log(step + 1, metrics)
            trajectories.write(_trajectory_rows(rollouts, records, scores, rewards_cfg, step + 1, cfg, rank, world))
            if (step + 1) % cfg.run.save_every == 0 or step + 1 == cfg.run.max_steps:
                save_checkpoint(accelerator, out_dir, step + 1)
            for cb in callbacks:
                cb(step + 1, metrics)
    finally:
        logger.close()
        trajectories.close()
    if accelerator.is_main_process and cfg.run.max_steps > (resumed or 0):
        policy.model = accelerator.unwrap_model(model)
        save_policy(policy, out_dir / "final")
    accelerator.wait_for_everyone()
    return TrainResult(out_dir, cfg.run.max_steps, metrics, resumed)


def _trajectory_rows(rollouts, records, scores, rewards_cfg, step: int, cfg: TrainConfig, rank: int, world: int):
    """The step's episodes as trajectory-log lines; in a multi-process run every process's lines, gathered (in rank
    order) to all, so that the main process writes them all. Group ``g`` = the prompt's index over all processes."""
    g = cfg.grpo.group_size
    rows = [
        trajectory_row(r.episode, rec, sc, rewards_cfg, source="train", step=step,
                       group=rank * cfg.grpo.batch_size + i // g, sample=i % g, turns=r.turn_texts)
        for i, (r, rec, sc) in enumerate(zip(rollouts, records, scores))
    ]  # fmt: skip
    if world > 1:
        from accelerate.utils import gather_object

        rows = gather_object(rows)
    return rows


def _update(model, ref, optimizer, scheduler, accelerator, policy, rollouts, adv, cfg: TrainConfig) -> dict[str, float]:
    """One batch's policy update; returns the loss statistics averaged over micro-batches."""
    g = cfg.grpo
    n = len(rollouts)
    chunks = [list(range(n))[i::cfg.optim.grad_accum] for i in range(cfg.optim.grad_accum)]
    chunks = [c for c in chunks if c]
    old: dict[int, torch.Tensor] = {}
    if g.updates_per_batch > 1:  # the behaviour policy's log-probs, fixed across the passes
        with torch.no_grad():
            for j, c in enumerate(chunks):
                old[j] = completion_logprobs(model, batch_inputs(policy, [rollouts[i] for i in c], accelerator.device),
                                             g.temperature)
    totals: dict[str, list[float]] = {}
    for _ in range(g.updates_per_batch):
        for j, c in enumerate(chunks):
            mb = batch_inputs(policy, [rollouts[i] for i in c], accelerator.device)
            a = adv[c][:, : mb.completion_mask.shape[1]]
            with accelerator.accumulate(model):
                logp = completion_logprobs(model, mb, g.temperature)
                out = policy_loss(
                    logp, old.get(j, logp.detach()), a, mb.completion_mask, clip_eps=g.clip_eps,
                    clip_eps_high=g.clip_eps_high, ref_logp=_ref_logprobs(ref, model, mb, cfg), kl_coef=g.kl_coef,
                    agg=g.loss_agg,
                )
                accelerator.backward(out.loss)
                if accelerator.sync_gradients:
                    norm = accelerator.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip or math.inf)
                    totals.setdefault("grad_norm", []).append(float(norm))
                    optimizer.step()
                    scheduler.step()
                optimizer.zero_grad()
            totals.setdefault("loss", []).append(float(out.loss.detach()))
            for key, value in out.stats.items():
                totals.setdefault(f"loss/{key}", []).append(float(value))
    return {k: float(np.mean(v)) for k, v in totals.items()}


__all__ = [
    "TrainResult",
    "advantages_for",
    "batch_indices",
    "checkpoint_step",
    "latest_checkpoint",
    "make_env",
    "reward_config",
    "rollout_metrics",
    "save_checkpoint",
    "train",
]
