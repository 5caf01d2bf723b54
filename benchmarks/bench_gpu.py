"""A GRPO step of virl-train at real model size on one GPU: a random-init Qwen2.5-VL-3B with LoRA in bf16.

    python benchmarks/bench_gpu.py                       # needs CUDA; without it prints "skipped" and exits 0
    python benchmarks/bench_gpu.py --size check --device cpu --steps 1 --json /tmp/g.json --md /tmp/g.md

No weights can be downloaded here, so the model is Qwen2.5-VL-3B-Instruct's architecture built from its published
config values (``QWEN25_3B_TEXT``, ``QWEN25_3B_VISION``: 36 text layers of width 2048, GQA 16/2 heads, a 32-block
vision tower of width 1280, a 151,936-token embedding) with random weights, and the project's offline tokenizer (its
~1k tokens are a subset of that vocabulary; ids it lacks decode to nothing, which a random model writes anyway).
``--size check`` builds the same thing with tiny widths and depths but the real vocabulary, to run the script end to
end on a CPU.

One step is exactly what ``virl_train.train`` does per step, with the trainer's own functions (called through
``bench_trainer``'s ``our_generation`` / ``our_reward`` / ``our_advantages`` / ``our_update``) and
``configs/qwen25vl_3b.yaml`` (LoRA r 64 on every projection, gradient checkpointing, bf16 weights, AdamW):
1. **rollout**: ``train._rollouts``: ``--batch`` shapes-world records x ``--group`` episodes sampled together with a
   KV cache, up to ``--actions`` crops each, ``--tokens`` new tokens per turn, ``--image`` px images;
2. **reward**: ``score_record`` per episode + ``advantages_for`` (full ViRL);
3. **update**: ``train._update`` (loss forward + backward + clip + AdamW step).
Step 1 is a warm-up (kernels, allocator); the next ``--steps`` are timed (median). Reports the step time and each
phase, the policy tokens sampled and rollout tokens/s, the peak GPU memory (``torch.cuda.max_memory_allocated``) and
the parameter counts. Writes ``--json`` and ``--md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("MPLBACKEND", "Agg")
REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

QWEN25_3B_TEXT: dict[str, Any] = {
    "hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36, "num_attention_heads": 16,
    "num_key_value_heads": 2, "max_position_embeddings": 128000, "rms_norm_eps": 1e-6, "vocab_size": 151936,
    "tie_word_embeddings": True,
    "rope_parameters": {"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1_000_000.0},
}  # fmt: skip
"""Qwen2.5-VL-3B-Instruct's text config (``config.json`` of the public checkpoint; head size 128)."""
QWEN25_3B_VISION: dict[str, Any] = {
    "depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "out_hidden_size": 2048,
    "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112,
    "fullatt_block_indexes": [7, 15, 23, 31],
}  # fmt: skip
"""Its vision tower."""
CHECK_TEXT = dict(QWEN25_3B_TEXT, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1_000_000.0})
CHECK_VISION = dict(QWEN25_3B_VISION, depth=2, hidden_size=64, intermediate_size=128, num_heads=4,
                    out_hidden_size=64, fullatt_block_indexes=[1])
SIZES = {"3b": (QWEN25_3B_TEXT, QWEN25_3B_VISION), "check": (CHECK_TEXT, CHECK_VISION)}


def build_model(size: str, device: str, tokenizer: Any, family: Any, cfg: Any) -> Any:
    """The random-init model of ``size`` on ``device`` (weights created there), in ``cfg.dtype``: the family's tiny
    text config (its token ids) with the dimensions of ``SIZES[size]``, finished as the tiny models are."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from virl_train.models.base import finish_tiny

    text, vision = SIZES[size]
    config = Qwen2_5_VLConfig(text_config={**family.tiny_text(tokenizer), **text}, vision_config=vision,
                              **family.tiny_ids(tokenizer))  # fmt: skip
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration(config)
    return finish_tiny(model, tokenizer, cfg, "<|im_end|>", "<|endoftext|>")


def records_and_images(n: int, image: int, tmp: Path):
    """``n`` shapes-world records with ``image`` px images written under ``tmp`` (no HF export needed)."""
    from virl_data.miners.shapes import ShapesConfig, generate
    from virl_train.data import ExampleSet

    cfg = ShapesConfig(image_size=(image, image), min_shapes=3, max_shapes=5)
    return ExampleSet(list(generate(n, seed=0, image_dir=tmp, config=cfg)), image_root=tmp)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from accelerate import Accelerator

    import virl_train.train as tr
    from bench_trainer import Ours, our_advantages, our_generation, our_reward, our_update
    from virl_train.config import load_config
    from virl_train.models import FAMILIES
    from virl_train.policy import Policy, enable_checkpointing, with_lora

    cuda = args.device == "cuda"
    cfg = load_config(REPO / "configs" / "qwen25vl_3b.yaml", [
        f"grpo.batch_size={args.batch}", f"grpo.group_size={args.group}", f"grpo.max_new_tokens={args.tokens}",
        f"env.max_actions={args.actions}", "optim.grad_accum=1", f"model.max_pixels={args.image * args.image}",
        "model.family=qwen2_5_vl", "data.path=unused", f"run.out_dir={args.out}",
    ])  # fmt: skip
    family = FAMILIES["qwen2_5_vl"]
    tokenizer = family.tiny_tokenizer()
    t0 = time.perf_counter()
    model = build_model(args.size, args.device, tokenizer, family, cfg.model)
    build_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in model.parameters())
    enable_checkpointing(model)
    model = with_lora(model, cfg.model.lora)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    policy = Policy.from_parts(model, tokenizer, family.image_processor(cfg.model), cfg.model, None, family)
    accelerator = Accelerator(mixed_precision="bf16" if cuda else "no", cpu=not cuda)
    optimizer, scheduler = tr._optimizer_and_schedule(policy.model, cfg)
    model, optimizer = accelerator.prepare(policy.model, optimizer)
    with tempfile.TemporaryDirectory() as tmp:
        examples = records_and_images(args.batch * (args.steps + 1), args.image, Path(tmp))
        o = Ours(cfg, policy, model, optimizer, scheduler, accelerator, examples, tr.reward_config(cfg))
        steps = []
        for step in range(args.steps + 1):
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            t = time.perf_counter()
            rollouts, recs = our_generation(o, list(range(step * args.batch, (step + 1) * args.batch)), step)
            if cuda:
                torch.cuda.synchronize()
            t_roll = time.perf_counter()
            adv = our_advantages(o, rollouts, our_reward(o, rollouts, recs))
            t_rew = time.perf_counter()
            stats = our_update(o, rollouts, adv)
            if cuda:
                torch.cuda.synchronize()
            t_end = time.perf_counter()
            tokens = sum(sum(r.episode.loss_mask) for r in rollouts)
            seq = [len(r.episode.loss_mask) for r in rollouts]
            steps.append({
                "step_s": t_end - t, "rollout_s": t_roll - t, "reward_s": t_rew - t_roll, "update_s": t_end - t_rew,
                "policy_tokens": tokens, "rollout_tok_s": tokens / (t_roll - t), "mean_turns":
                statistics.fmean(r.episode.n_turns for r in rollouts), "max_seq_tokens": max(seq),
                "crops": sum(len(r.images) - 1 for r in rollouts), "grad_norm": stats["grad_norm"],
                "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan"),
            })  # fmt: skip
            print(f"step {step}{' (warm-up)' if step == 0 else ''}: " + "  ".join(
                f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in steps[-1].items()), flush=True)
    timed = steps[1:]
    med = {k: statistics.median(s[k] for s in timed) for k in timed[0]}
    return {
        "size": args.size, "device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
        "params": n_params, "trainable_params": n_train, "build_s": build_s, "batch": args.batch,
        "group": args.group, "episodes": args.batch * args.group, "max_new_tokens": args.tokens,
        "max_actions": args.actions, "image_px": args.image, "lora_r": cfg.model.lora.r, "dtype": "bfloat16",
        "gradient_checkpointing": True, "timed_steps": len(timed), "median": med, "steps": steps,
    }  # fmt: skip


def markdown(res: dict[str, Any]) -> str:
    m = res["median"]
    rows = [
        ("model", f"Qwen2.5-VL {res['size']} architecture, random init, {res['params'] / 1e9:.2f} B parameters, "
                  f"LoRA r {res['lora_r']} ({res['trainable_params'] / 1e6:.1f} M trainable), bf16, checkpointing"),
        ("device", f"{res['device']}, torch {res['torch']}"),
        ("batch", f"{res['batch']} prompts x {res['group']} episodes, {res['image_px']} px images, up to "
                  f"{res['max_actions']} crops, {res['max_new_tokens']} new tokens per turn"),
        ("GRPO step (median of %d)" % res["timed_steps"], f"{m['step_s']:.2f} s"),
        ("  rollout / reward / update", f"{m['rollout_s']:.2f} / {m['reward_s']:.3f} / {m['update_s']:.2f} s"),
        ("rollout tokens/s (policy tokens)", f"{m['rollout_tok_s']:.0f} ({m['policy_tokens']:.0f} tokens, "
                                             f"{m['mean_turns']:.2f} turns per episode)"),
        ("peak GPU memory", f"{m['peak_mem_gib']:.1f} GiB"),
    ]  # fmt: skip
    return "| | value |\n|---|---|\n" + "\n".join(f"| {a} | {b} |" for a, b in rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="3b", choices=list(SIZES))
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64, help="max new tokens per turn")
    parser.add_argument("--actions", type=int, default=2, help="env.max_actions")
    parser.add_argument("--image", type=int, default=448, help="image side in px")
    parser.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up step")
    parser.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "virl_bench_gpu"))
    parser.add_argument("--json", type=Path, default=REPO / "docs" / "assets" / "bench_gpu.json")
    parser.add_argument("--md", type=Path, default=REPO / "docs" / "bench_gpu.md")
    args = parser.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("skipped: no CUDA device (this benchmark times a real-size GRPO step on a GPU)")
        return 0
    warnings.filterwarnings("ignore")
    res = run(args)
    from virl_data.storage.corpus import write_json

    write_json(res, args.json)
    args.md.write_text(markdown(res))
    print(markdown(res))
    print(f"wrote {args.json} and {args.md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
