"""Speed side by side: a virl-train GRPO step vs TRL's ``GRPOTrainer``, reward cost, multi-turn rollout tokens/s.

    python benchmarks/bench_trainer.py [--batch 2] [--group 4] [--tokens 32] [--repeats 5] [--threads 1]

Everything runs in ONE process on the same tiny random Qwen2.5-VL (``tiny-qwen2.5-vl``, fp32, same seed → same
initial weights for both trainers), the same batch (``batch`` records × ``group`` generations), the same image
prompts (token ids and pixel values checked equal), the same ``max_new_tokens``, the same torch thread count (checked
before every timed phase), outcome-only reward (``rewards.preset=outcome``), single turn (``env.max_actions=0``), no
KL (β = 0, no reference model), one update per batch, token-mean loss (TRL ``bnpo``), AdamW at the same learning rate
and weight decay, gradient clipping 1.0, no gradient checkpointing (TRL's default turns it on; ours is off). Each phase
is warmed up once, then timed ``--repeats`` times; the median is reported. The two sides' generations (and
updates) are timed interleaved, so a change in the load of the shared machine hits both alike.

TRL sees the images through ``image_text_processor``: the stock ``Qwen2_5_VLProcessor`` wants a video processor, which
needs torchvision (CPU torch here cannot import it), so a subclass without one wraps our tokenizer and PIL image
processor, with a chat template that writes our prompt token for token.

1. **generation**: ours ``train._rollouts`` (our token loop with a KV cache, the batch's episodes sampled together:
   each record's prompt pre-filled once, one forward per step for all rows); TRL
   ``GRPOTrainer._generate_and_score_completions`` (processor + batched ``model.generate``, then rewards and
   advantages). TRL's reward time (measured inside its reward function) is subtracted and reported as reward.
2. **reward**: ours ``score_record`` per episode, then ``batch_inputs`` + ``advantages_for``; TRL its reward call
   (``parse_turn`` + ``score_record``: the same scoring, plus parsing that our env did during the rollout).
3. **update** (loss forward + backward + clip + AdamW step): ours ``train._update`` on our rollouts, TRL
   ``compute_loss`` + backward + clip + optimizer step on its batch; and ours again on TRL's exact batch.
   The step is 1 + 2 + 3.

What still differs: our sampler never draws the vision placeholder tokens and stops a turn at a closing action tag,
TRL's ``generate`` stops at EOS only (the sampled token counts are printed; a random model rarely stops early); TRL
computes token entropies for its logs and a chunked log-prob head; TRL pre-fills every row's prompt, we pre-fill each
record's prompt once for its group.

Also: the reward computation for 1k synthetic trajectories (a mix of crops: hits, repeats, misses, malformed) with
``score_record`` (presets outcome and full), as ms, as % of one measured virl step, and per trajectory as % of the
step time per episode; and multi-turn rollouts (``env.max_actions=2``) sampled tokens/s (policy tokens only), one
``rollout_episode`` at a time and the same seeded episodes as one ``rollout_batch`` (checked equal), vs a plain
``model.generate`` loop over the same prompts with the same number of new tokens per prompt (batch 1,
``min_new_tokens = max_new_tokens``). The random model seldom writes a valid crop, so its extra turns mostly get the
env's text reply (the crop count is printed). Writes ``docs/assets/bench_trainer.json`` and ``docs/bench_trainer.md``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from virl_data.core.types import Box  # noqa: E402
from virl_data.storage.corpus import atomic_path, write_json  # noqa: E402
from virl_train import train as tr  # noqa: E402
from virl_train.actions import parse_turn  # noqa: E402
from virl_train.config import TrainConfig, load_config  # noqa: E402
from virl_train.data import ExampleSet  # noqa: E402
from virl_train.env import CropEnv  # noqa: E402
from virl_train.policy import Policy, load_policy  # noqa: E402
from virl_train.rewards import RewardConfig, score_record  # noqa: E402
from virl_train.rollout import Rollout, batch_inputs, env_system_prompt, rollout_batch, rollout_episode  # noqa: E402
from virl_train.types import Action, ActionKind, Episode  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


THREADS = [1]  # the torch intra-op thread count every timed phase must run with (set by ``run``)


def median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Run ``fn`` once to warm up, then ``repeats`` times; ``(median seconds, last result)``."""
    return race({"fn": fn}, repeats)["fn"]


def race(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, tuple[float, Any]]:
    """Each function run once to warm up, then ``repeats`` times, interleaved (a, b, a, b, …) so that a change in
    the machine's load hits every side alike; ``{name: (median seconds, last result)}``. Refuses to time anything at
    another torch thread count than ``THREADS[0]`` (both sides must run with the same)."""
    if torch.get_num_threads() != THREADS[0]:
        raise RuntimeError(f"torch runs {torch.get_num_threads()} threads, the benchmark set {THREADS[0]}")
    out = {name: fn() for name, fn in fns.items()}  # warm-up
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            out[name] = fn()
            times[name].append(time.perf_counter() - t0)
    return {name: (statistics.median(times[name]), out[name]) for name in fns}


# --- setup --------------------------------------------------------------------------------------------------------
def bench_config(data: Path, out: Path, args: argparse.Namespace, *more: str) -> TrainConfig:
    """``configs/tiny_cpu.yaml`` in the single-turn outcome-only setting of the comparison."""
    return load_config(REPO / "configs" / "tiny_cpu.yaml", [
        f"data.path={data}", f"run.out_dir={out}", "env.max_actions=0", "rewards.preset=outcome",
        f"grpo.batch_size={args.batch}", f"grpo.group_size={args.group}", f"grpo.max_new_tokens={args.tokens}",
        "grpo.kl_coef=0", "grpo.updates_per_batch=1", "optim.grad_accum=1", *more,
    ])  # fmt: skip


def demo_data(tmp: Path) -> Path:
    """A small demo export (shapes world, 224 px images) to draw prompts from."""
    from virl_data.engines.pipeline import run_demo

    return run_demo(tmp / "demo", n=24, image_size=224, console=Console(quiet=True))["HF export"]


@dataclass
class Ours:
    """Our trainer's pieces, prepared as ``train.train`` prepares them."""

    cfg: TrainConfig
    policy: Policy
    model: Any
    optimizer: Any
    scheduler: Any
    accelerator: Any
    examples: ExampleSet
    rewards: RewardConfig


def build_ours(cfg: TrainConfig) -> Ours:
    from accelerate import Accelerator

    accelerator = Accelerator(mixed_precision="no", cpu=True)
    policy = load_policy(cfg.model, seed=cfg.run.seed)
    optimizer, scheduler = tr._optimizer_and_schedule(policy.model, cfg)
    model, optimizer = accelerator.prepare(policy.model, optimizer)
    examples = ExampleSet.load(cfg.data.path, cfg.data.train_split, limit=cfg.data.limit)
    return Ours(cfg, policy, model, optimizer, scheduler, accelerator, examples, tr.reward_config(cfg))


def our_generation(o: Ours, idx: list[int], step: int) -> tuple[list[Rollout], list[Any]]:
    o.model.eval()
    o.policy.model = o.accelerator.unwrap_model(o.model)
    with torch.no_grad():
        return tr._rollouts(o.policy, o.examples, idx, o.cfg, step, 0)


def our_reward(o: Ours, rollouts: list[Rollout], records: list[Any]) -> list[Any]:
    return [score_record(r.episode, rec, o.rewards) for r, rec in zip(rollouts, records)]


def our_advantages(o: Ours, rollouts: list[Rollout], scores: list[Any]) -> torch.Tensor:
    batch = batch_inputs(o.policy, rollouts, o.accelerator.device)
    return tr.advantages_for(rollouts, scores, o.cfg.grpo.group_size, batch.completion_mask.shape[1], o.rewards.eta)


def our_update(o: Ours, rollouts: list[Rollout], adv: torch.Tensor) -> dict[str, float]:
    o.model.train()
    stats = tr._update(o.model, None, o.optimizer, o.scheduler, o.accelerator, o.policy, rollouts, adv, o.cfg)
    if "grad_norm" not in stats:  # the optimizer step was skipped (gradient accumulation): not a full update
        raise RuntimeError("our update did not step the optimizer")
    return stats


# --- TRL ----------------------------------------------------------------------------------------------------------
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""The Qwen chat format exactly as ``Policy.prompt_ids`` writes it (system, then the image before the question)."""


def image_text_processor(policy: Policy) -> Any:
    """A ``Qwen2_5_VLProcessor`` over our tokenizer and PIL image processor, without the video processor (the stock
    class insists on one, and it needs torchvision, which CPU torch here cannot import). TRL takes the VLM path only
    for a ``ProcessorMixin``; this one is what lets it see the same images as our rollout."""
    from transformers import Qwen2_5_VLProcessor
    from transformers.processing_utils import ProcessorMixin

    class ImageTextProcessor(Qwen2_5_VLProcessor):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            self.image_token, self.video_token = "<|image_pad|>", "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    return ImageTextProcessor(policy.image_processor, policy.tokenizer, chat_template=CHAT_TEMPLATE)


@dataclass
class Prompt:
    """Record ``i``'s prompt as our rollout builds it: the env's view of the image, our token ids, and the same
    prompt as TRL's conversational ``messages``."""

    index: int
    image: Any
    ids: list[int]
    encoded: Any
    messages: list[dict[str, Any]]


def prompt_for(o: Ours, i: int) -> Prompt:
    env = tr.make_env(o.cfg)
    rec = o.examples[i]
    obs = env.reset(o.examples.image(i), rec.question)
    enc = o.policy.encode_image(obs.image)
    system = env_system_prompt(env, obs.image)
    messages = [
        {"role": "system", "content": system},
        {"role": "user", "content": [{"type": "image", "image": obs.image}, {"type": "text", "text": rec.question}]},
    ]  # fmt: skip
    return Prompt(i, obs.image, o.policy.prompt_ids(system, rec.question, enc), enc, messages)


class TrlReward:
    """TRL reward function doing our outcome scoring: ``parse_turn`` the completion, ``score_record`` it. Keeps the
    seconds spent in it (``seconds``) so TRL's generation time can be split from its reward time."""

    __name__ = "virl_outcome"

    def __init__(self, o: Ours) -> None:
        self.o, self.seconds = o, 0.0
        self.env: CropEnv = tr.make_env(o.cfg)

    def __call__(self, completions: list[Any], record_index: list[int], **kw: Any) -> list[float]:
        t0 = time.perf_counter()
        out = []
        for completion, i in zip(completions, record_index):
            text = completion[-1]["content"] if isinstance(completion, list) else completion  # conversational
            rec = self.o.examples[i]
            size = (rec.image.width, rec.image.height)
            action = parse_turn(text, turn=0, convention=self.env.convention, image_size=size,
                                resized=self.env.view_size(*size), fmt=self.env.fmt)  # fmt: skip
            answer = action.answer if action.kind is ActionKind.ANSWER else None
            ep = Episode(record_id=rec.id, actions=(action,), answer=answer, n_turns=1)
            out.append(score_record(ep, rec, self.o.rewards).total)
        self.seconds += time.perf_counter() - t0
        return out


def build_trl(o: Ours, out_dir: Path, threads: int):
    """A real ``trl.GRPOTrainer`` on our initial weights (same seed), with our batch, tokens and optimiser settings.
    Its dataset is a placeholder: the benchmark hands it each batch itself."""
    import trl
    from datasets import Dataset

    g, opt = o.cfg.grpo, o.cfg.optim
    args = trl.GRPOConfig(
        output_dir=str(out_dir), report_to="none", use_cpu=True,
        per_device_train_batch_size=g.batch_size * g.group_size, num_generations=g.group_size,
        max_completion_length=g.max_new_tokens, temperature=g.temperature, top_p=g.top_p, beta=0.0,
        epsilon=g.clip_eps, epsilon_high=g.clip_eps_high or g.clip_eps, loss_type="bnpo", learning_rate=opt.lr,
        weight_decay=opt.weight_decay, max_grad_norm=opt.grad_clip, optim="adamw_torch", lr_scheduler_type="constant",
        save_strategy="no", seed=o.cfg.run.seed, bf16=False, dataloader_num_workers=0,
        gradient_checkpointing=o.cfg.model.gradient_checkpointing,  # TRL's default is True, ours False
    )  # fmt: skip
    model = load_policy(o.cfg.model, seed=o.cfg.run.seed).model  # identical initial weights
    reward = TrlReward(o)
    data = Dataset.from_dict({"prompt": [[{"role": "user", "content": "-"}]] * 2, "record_index": [0, 1]})
    trainer = trl.GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=data,
                              processing_class=image_text_processor(o.policy))  # fmt: skip
    trainer.create_optimizer_and_scheduler(num_training_steps=100)
    trainer.current_gradient_accumulation_steps = 1  # set by the Trainer loop; we drive the phases ourselves
    torch.set_num_threads(threads)  # TrainingArguments may reset it
    return trainer, reward


def trl_update(trainer, inputs: dict) -> float:
    """HF Trainer's inner step without the generation: compute_loss, backward, clip, optimizer step."""
    model = trainer.model
    model.train()
    loss = trainer.compute_loss(model, inputs)
    trainer.accelerator.backward(loss)
    trainer.accelerator.clip_grad_norm_(model.parameters(), trainer.args.max_grad_norm)
    trainer.optimizer.step()
    trainer.lr_scheduler.step()
    trainer.optimizer.zero_grad()
    return float(loss.detach())


def rollouts_from_trl(inputs: dict, prompts: list[Prompt]) -> list[Rollout]:
    """TRL's generated batch as our rollouts (row ``r`` is ``prompts[r]``): the same tokens, masks and images.
    Raises if TRL's prompt ids or pixels differ from ours (the comparison would not be like for like)."""
    out = []
    rows = zip(inputs["prompt_ids"], inputs["prompt_mask"], inputs["completion_ids"], inputs["completion_mask"])
    for (p_ids, p_mask, c_ids, c_mask), p in zip(rows, prompts, strict=True):
        prompt = [int(t) for t in p_ids[p_mask.bool()]]  # TRL left-pads prompts
        if prompt != p.ids:
            raise RuntimeError(f"TRL's prompt for record {p.index} differs from ours ({len(prompt)} vs {len(p.ids)})")
        n = int(c_mask.sum())
        ep = Episode(record_id="trl", prompt_ids=tuple(prompt), completion_ids=tuple(int(t) for t in c_ids[:n]),
                     loss_mask=(1,) * n, n_turns=1)  # fmt: skip
        out.append(Rollout(ep, (p.encoded,), "trl"))
    ours = torch.cat([r.images[0].pixel_values for r in out])
    if ours.shape != inputs["pixel_values"].shape or not torch.allclose(ours, inputs["pixel_values"]):
        raise RuntimeError("TRL's pixel values differ from ours")
    return out


# --- reward and rollout micro-benchmarks --------------------------------------------------------------------------
def synthetic_episodes(o: Ours, n: int, seed: int = 0) -> list[tuple[Episode, Any]]:
    """``n`` (episode, record) pairs: 0-4 crops each, a mix of hits on chain boxes, repeats, random misses and
    malformed turns, then an answer (right half the time)."""
    rng = random.Random(seed)
    out = []
    for k in range(n):
        rec = o.examples[k % len(o.examples)]
        w, h = rec.image.width, rec.image.height
        acts = []
        for t in range(rng.randint(0, 4)):
            r = rng.random()
            if r < 0.4:
                box = rng.choice([b for step in rec.chain for b in step.boxes])
            elif r < 0.55 and acts:
                box = acts[-1].box
            elif r < 0.9:
                x, y = rng.uniform(0, w - 30), rng.uniform(0, h - 30)
                box = Box(x, y, x + rng.uniform(28, w - x), y + rng.uniform(28, h - y))
            else:
                box = None
            acts.append(Action(t, ActionKind.CROP, box=box) if box else Action(t, ActionKind.INVALID, error="x"))
        answer = rec.answer if rng.random() < 0.5 else "purple"
        acts.append(Action(len(acts), ActionKind.ANSWER, answer=answer))
        out.append((Episode(record_id=rec.id, actions=tuple(acts), answer=answer, n_turns=len(acts)), rec))
    return out


def generate_loop(policy: Policy, rollouts: list[Rollout], images: list[Any], seed: int) -> int:
    """Plain ``model.generate`` (sampling, batch 1) on each rollout's first prompt + image, for exactly as many new
    tokens as that episode sampled; returns the number of tokens generated."""
    total = 0
    torch.manual_seed(seed)
    for r, enc in zip(rollouts, images):
        n = sum(r.episode.loss_mask)
        ids = torch.tensor([list(r.episode.prompt_ids)])
        out = policy.model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=enc.pixel_values,
            image_grid_thw=enc.image_grid_thw, mm_token_type_ids=(ids == policy.image_token_id).to(torch.int32),
            do_sample=True, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=n, min_new_tokens=n,
        )  # fmt: skip
        total += out.shape[1] - ids.shape[1]
    return total


# --- the run ------------------------------------------------------------------------------------------------------
def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    THREADS[0] = args.threads
    data = demo_data(tmp)
    o = build_ours(bench_config(data, tmp / "ours", args))
    trainer, reward = build_trl(o, tmp / "trl", args.threads)
    idx = tr.batch_indices(0, len(o.examples), args.batch, o.cfg.run.seed)
    res: dict[str, Any] = {"setting": {
        "model": o.cfg.model.name_or_path, "dtype": o.cfg.model.dtype, "batch": args.batch, "group": args.group,
        "max_new_tokens": args.tokens, "threads": torch.get_num_threads(), "repeats": args.repeats,
        "cpu_count": os.cpu_count(), "load_avg_start": os.getloadavg()[0],
    }}  # fmt: skip

    # generation, side by side: ours as train.train runs it; TRL on the same image prompts (as chat messages)
    prompts = [prompt_for(o, i) for i in idx for _ in range(args.group)]
    batch = [{"prompt": p.messages, "record_index": p.index} for p in prompts]
    reward_seconds: list[float] = []

    def trl_generation():
        reward.seconds = 0.0
        out = trainer._generate_and_score_completions(batch)
        reward_seconds.append(reward.seconds)
        return out

    step = iter(range(1, 10_000))
    gen = race({"ours": lambda: our_generation(o, idx, next(step)), "trl": trl_generation}, args.repeats)
    (t_gen, (rollouts, records)), (t_tgen, inputs) = gen["ours"], gen["trl"]
    t_trew = statistics.median(reward_seconds[1:])  # the warm-up call left out, as in race

    # our reward and advantages (TRL's are inside its generation call: its reward time is split off above)
    t_rew, scores = median_time(lambda: our_reward(o, rollouts, records), args.repeats)
    t_adv, adv = median_time(lambda: our_advantages(o, rollouts, scores), args.repeats)

    # the update, side by side: each on its own batch, and ours on TRL's exact batch (same ids, pixels, completions)
    same = rollouts_from_trl(inputs, prompts)
    adv_same = inputs["advantages"].reshape(-1, 1).expand(-1, inputs["completion_ids"].shape[1]).contiguous()
    upd = race({"ours": lambda: our_update(o, rollouts, adv), "trl": lambda: trl_update(trainer, inputs),
                "ours_same": lambda: our_update(o, same, adv_same)}, args.repeats)  # fmt: skip
    t_upd, t_tupd, t_same = upd["ours"][0], upd["trl"][0], upd["ours_same"][0]

    res["ours"] = {"generation_s": t_gen, "reward_s": t_rew, "advantages_s": t_adv, "update_s": t_upd,
                   "step_s": t_gen + t_rew + t_adv + t_upd, "update_same_inputs_s": t_same, "episodes": len(rollouts),
                   "sampled_tokens": sum(sum(r.episode.loss_mask) for r in rollouts),
                   "prompt_tokens": [len(rollouts[k * args.group].episode.prompt_ids) for k in range(len(idx))]}
    res["trl"] = {"generation_s": t_tgen - t_trew, "reward_s": t_trew, "update_s": t_tupd, "step_s": t_tgen + t_tupd,
                  "sampled_tokens": int(inputs["completion_mask"].sum()),
                  "prompt_tokens": [int(inputs["prompt_mask"][k * args.group].sum()) for k in range(len(idx))],
                  "trl_version": _version("trl"), "gradient_checkpointing": bool(trainer.args.gradient_checkpointing)}
    res["reward_1k"] = reward_bench(o, args.repeats)
    res["reward_1k"]["step_per_episode_ms"] = 1000 * res["ours"]["step_s"] / res["ours"]["episodes"]
    res["rollout"] = rollout_bench(data, tmp, args)
    res["setting"]["load_avg_end"] = os.getloadavg()[0]
    return res


def reward_bench(o: Ours, repeats: int) -> dict[str, float]:
    pairs = synthetic_episodes(o, 1000)
    out = {"n": len(pairs), "mean_actions": statistics.mean(len(e.actions) - 1 for e, _ in pairs)}
    for preset in ("outcome", "full"):
        cfg = RewardConfig.preset(preset)
        t, _ = median_time(lambda: [score_record(e, r, cfg) for e, r in pairs], repeats)
        out[f"{preset}_ms"] = t * 1000
    return out


def rollout_bench(data: Path, tmp: Path, args: argparse.Namespace) -> dict[str, float]:
    """Multi-turn ``rollout_episode`` (max_actions=2), the same episodes as one ``rollout_batch``, and
    ``model.generate`` on the same prompts and token counts."""
    cfg = bench_config(data, tmp / "mt", args, "env.max_actions=2")
    policy = load_policy(cfg.model, seed=cfg.run.seed)
    examples = ExampleSet.load(cfg.data.path, cfg.data.train_split, limit=args.episodes)

    def ours():
        out = []
        for i in range(len(examples)):
            gen = torch.Generator().manual_seed(i)
            out.append(rollout_episode(policy, tr.make_env(cfg), examples[i], examples.image(i),
                                       max_new_tokens=cfg.grpo.max_new_tokens, generator=gen))
        return out

    def batched():
        return rollout_batch(
            policy, [tr.make_env(cfg) for _ in range(len(examples))], [examples[i] for i in range(len(examples))],
            [examples.image(i) for i in range(len(examples))], max_new_tokens=cfg.grpo.max_new_tokens,
            generator=[torch.Generator().manual_seed(i) for i in range(len(examples))],
        )  # fmt: skip

    rollouts = ours()  # seeded per episode: every call samples the same episodes
    if [r.episode for r in batched()] != [r.episode for r in rollouts]:
        raise RuntimeError("the batched rollouts differ from the same episodes sampled one by one")
    tokens = sum(sum(r.episode.loss_mask) for r in rollouts)
    images = [r.images[0] for r in rollouts]
    timed = race({"ours": ours, "batched": batched, "generate": lambda: generate_loop(policy, rollouts, images, 0)},
                 args.repeats)  # fmt: skip
    (t_ours, _), (t_batch, _), (t_gen, gen_tokens) = timed["ours"], timed["batched"], timed["generate"]
    if gen_tokens != tokens:
        raise RuntimeError(f"model.generate made {gen_tokens} tokens, the rollouts sampled {tokens}")
    return {"episodes": len(rollouts), "mean_turns": statistics.mean(r.episode.n_turns for r in rollouts),
            "policy_tokens": tokens, "env_tokens": sum(len(r.episode.loss_mask) - sum(r.episode.loss_mask)
                                                       for r in rollouts),
            "crops": sum(len(r.images) - 1 for r in rollouts),
            "ours_s": t_ours, "batched_s": t_batch, "generate_s": t_gen, "ours_tok_s": tokens / t_ours,
            "batched_tok_s": tokens / t_batch, "generate_tok_s": tokens / t_gen}


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


# --- output -------------------------------------------------------------------------------------------------------
def table_rows(res: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """``(what, virl-train, TRL / generate, ratio ours/theirs)`` rows."""
    o, t, rw, ro = res["ours"], res["trl"], res["reward_1k"], res["rollout"]
    ms = lambda s: f"{s * 1000:,.1f} ms"  # noqa: E731
    ratio = lambda a, b: f"{a / b:.2f}" if b > 0 else "–"  # noqa: E731
    share = lambda t_ms: f"{100 * t_ms / rw['n'] / rw['step_per_episode_ms']:.2f}%"  # noqa: E731
    of_step = lambda t_ms: f"{t_ms:,.1f} ms ({100 * t_ms / 1000 / o['step_s']:.1f}% of a step)"  # noqa: E731
    rows = [
        ("generation (image prompts, single turn)", ms(o["generation_s"]), ms(t["generation_s"]),
         ratio(o["generation_s"], t["generation_s"])),
        ("reward functions (outcome)", ms(o["reward_s"]), ms(t["reward_s"]), ratio(o["reward_s"], t["reward_s"])),
        ("batch padding + advantages", ms(o["advantages_s"]), "(in generation)", ""),
        ("update (each on its own batch)", ms(o["update_s"]), ms(t["update_s"]), ratio(o["update_s"], t["update_s"])),
        ("step = generation + reward + advantages + update", ms(o["step_s"]), ms(t["step_s"]),
         ratio(o["step_s"], t["step_s"])),
        ("update on identical inputs (TRL's batch)", ms(o["update_same_inputs_s"]), ms(t["update_s"]),
         ratio(o["update_same_inputs_s"], t["update_s"])),
        ("sampled tokens in the step", str(o["sampled_tokens"]), str(t["sampled_tokens"]), ""),
        ("prompt tokens per record", str(o["prompt_tokens"]), str(t["prompt_tokens"]), ""),
        (f"reward, {rw['n']} trajectories, outcome preset", of_step(rw["outcome_ms"]), "", ""),
        (f"reward, {rw['n']} trajectories, full preset", of_step(rw["full_ms"]), "", ""),
        ("reward per trajectory / step time per episode", f"{share(rw['full_ms'])} (full), "
         f"{share(rw['outcome_ms'])} (outcome)", "", ""),
        (f"rollout tokens/s ({ro['episodes']} ep., {ro['mean_turns']:.1f} turns, {ro['crops']} crops)",
         f"{ro['ours_tok_s']:,.0f}", f"{ro['generate_tok_s']:,.0f}", ratio(ro["ours_s"], ro["generate_s"])),
        ("same episodes as one batch (vs generate at batch 1)", f"{ro['batched_tok_s']:,.0f}",
         f"{ro['generate_tok_s']:,.0f}", ratio(ro["batched_s"], ro["generate_s"])),
    ]  # fmt: skip
    return rows


HEADER = ("measure", "virl-train", "TRL GRPOTrainer / model.generate", "ratio ours/theirs (time)")


def markdown(res: dict[str, Any]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(res)]
    return "\n".join(lines)


def print_table(res: dict[str, Any], console: Console) -> None:
    s = res["setting"]
    table = Table(title=f"trainer speed: {s['model']} {s['dtype']}, {s['batch']}×{s['group']} episodes, "
                        f"{s['max_new_tokens']} new tokens, {s['threads']} thread(s), median of {s['repeats']}")
    for h in HEADER:
        table.add_column(h, justify="left" if h == "measure" else "right")
    for row in table_rows(res):
        table.add_row(*row)
    console.print(table)


HELD_EQUAL = (
    "**Held equal**: the model and its initial weights (same seed), the batch (records × generations), the image "
    "prompts (token ids and pixel values checked equal), `max_new_tokens`, the torch thread count, outcome-only "
    "reward, single turn, no KL, one update per batch, token-mean loss, AdamW learning rate and weight decay, gradient "
    "clipping, no gradient checkpointing (TRL's default is on).\n\n"
    "**Still differs**: both sample the batch together, but we pre-fill each record's prompt once for its group "
    "(TRL pre-fills every row) and decode with our own multi-turn loop (each row its own generator, stop rule and "
    "budget), TRL with one `model.generate`; our sampler never draws the vision tokens and stops a turn "
    "at a closing action tag, TRL stops at EOS only (sampled token counts above); TRL's loss also computes token "
    "entropies and uses a chunked log-prob head; TRL's reward call parses the completion, ours was parsed by the env "
    "during the rollout. The multi-turn rollout rows compare policy tokens/s (the batched row samples the same "
    "seeded episodes as the one-by-one row, checked equal; `model.generate` runs at batch 1); ours also pre-fills "
    "the env's replies (a random model rarely writes a valid crop, so they carry text, not crops)."
)


def write_outputs(res: dict[str, Any], json_path: Path, md_path: Path) -> None:
    write_json(res, json_path)
    s = res["setting"]
    text = (
        "# Trainer speed, side by side\n\n"
        "Produced by `python benchmarks/bench_trainer.py` (see its docstring for exactly what each row compares). "
        f"One process, {s['cpu_count']} CPU cores, {s['threads']} torch thread(s), load average "
        f"{s['load_avg_start']:.1f} → {s['load_avg_end']:.1f} (a shared machine: compare the ratios, both "
        "sides were measured in the same run). Times are medians of "
        f"{s['repeats']} after one warm-up; ratio < 1 means virl-train is faster.\n\n" + markdown(res) + "\n\n"
        + HELD_EQUAL + "\n"
    )
    with atomic_path(md_path) as tmp:
        Path(tmp).write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=2, help="prompts per step")
    parser.add_argument("--group", type=int, default=4, help="generations per prompt")
    parser.add_argument("--tokens", type=int, default=32, help="max new tokens (per turn)")
    parser.add_argument("--episodes", type=int, default=4, help="episodes in the rollout tokens/s comparison")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per phase (after one warm-up)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads, both sides")
    parser.add_argument("--json", type=Path, default=REPO / "docs" / "assets" / "bench_trainer.json")
    parser.add_argument("--md", type=Path, default=REPO / "docs" / "bench_trainer.md")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        res = run(args, Path(tmp))
    console = Console()
    print_table(res, console)
    write_outputs(res, args.json, args.md)
    console.print(f"wrote {args.json} and {args.md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
