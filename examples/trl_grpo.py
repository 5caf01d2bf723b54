"""Train a VLM with TRL's ``GRPOTrainer`` on a virl corpus: the crop tool environment and the ViRL reward components.

    virl-data export corpus/curated.parquet --format trl --out export/trl
    # one GPU, or a CPU smoke run on the tiny random model (no tool calls expected from random weights):
    python examples/trl_grpo.py --data export/trl --model tiny-qwen2.5-vl --max-steps 2 --cpu
    # 8 GPUs, generation in vLLM colocated with training:
    accelerate launch --num_processes 8 examples/trl_grpo.py --data export/trl \\
        --model Qwen/Qwen2.5-VL-7B-Instruct --use-vllm --batch 8 --group 8 --max-steps 500

What it wires (``virl_train.interop.trl``): ``crop_environment(processor, family=...)`` (the crop tool, boxes in the
family's own convention), ``reward_funcs(RewardConfig.preset(preset), log_path=...)`` (accuracy, format, rationale,
shaping, credit: the ``virl-train`` scorer), and ``suppress_tokens`` for the vision placeholders. Each process writes
``OUT/trajectories.rank<k>.jsonl``, which ``virl-train score`` reads. ``build_trainer`` is what
``tests/train/test_interop_trl.py`` runs for 2 steps.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # environment_factory is marked experimental in TRL 1.16


def load_model(name: str, *, min_pixels: int, max_pixels: int, seed: int = 0) -> tuple[Any, Any]:
    """``(model, processor)``: a ``tiny-*`` name builds the family's tiny random model offline (float32, CPU),
    any other name loads the checkpoint (bfloat16) and its processor; a processor whose chat template cannot
    call tools gets TRL's Qwen3-VL template."""
    from trl.chat_template_utils import supports_tool_calling

    from virl_train.config import ModelConfig
    from virl_train.interop.trl import image_text_processor, tool_chat_template
    from virl_train.models import TINY_NAMES

    if name in TINY_NAMES:
        cfg = ModelConfig(name_or_path=name, dtype="float32", min_pixels=min_pixels, max_pixels=max_pixels)
        model, tokenizer, image_processor = TINY_NAMES[name].build_tiny(cfg, seed)
        return model, image_text_processor(tokenizer, image_processor)
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(name, min_pixels=min_pixels, max_pixels=max_pixels)
    if not supports_tool_calling(processor):
        processor.chat_template = processor.tokenizer.chat_template = tool_chat_template()
    model = AutoModelForImageTextToText.from_pretrained(name, dtype=torch.bfloat16)
    return model, processor


def build_trainer(args: argparse.Namespace) -> Any:
    """The ``GRPOTrainer`` of ``args`` (the options below), not yet trained."""
    import datasets
    from trl import GRPOConfig, GRPOTrainer

    from virl_train.interop.trl import crop_environment, never_sampled_ids, reward_funcs
    from virl_train.rewards import RewardConfig

    model, processor = load_model(args.model, min_pixels=args.min_pixels, max_pixels=args.max_pixels,
                                  seed=args.seed)
    data = datasets.load_from_disk(str(args.data))
    train = data[args.split] if isinstance(data, datasets.DatasetDict) else data
    out = Path(args.out)
    config = GRPOConfig(
        output_dir=str(out), max_steps=args.max_steps, per_device_train_batch_size=args.batch * args.group,
        num_generations=args.group, max_completion_length=args.max_completion_length,
        max_tool_calling_iterations=args.max_actions, learning_rate=args.lr, beta=0.0, seed=args.seed,
        bf16=not args.cpu, use_cpu=args.cpu, use_vllm=args.use_vllm, gradient_checkpointing=not args.cpu,
        logging_steps=1, report_to=[], save_strategy="no",
        generation_kwargs={"suppress_tokens": never_sampled_ids(processor.tokenizer, args.family)},
    )  # fmt: skip
    return GRPOTrainer(
        model=model, args=config, train_dataset=train, processing_class=processor,
        environment_factory=crop_environment(processor, family=args.family, max_actions=args.max_actions),
        reward_funcs=reward_funcs(RewardConfig.preset(args.preset), log_path=out / "trajectories.rank{rank}.jsonl"),
    )  # fmt: skip


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="a `virl-data export --format trl` folder")
    p.add_argument("--split", default="train")
    p.add_argument("--model", default="tiny-qwen2.5-vl", help="a checkpoint, or tiny-qwen2.5-vl / tiny-qwen2-vl "
                   "(random, offline)")
    p.add_argument("--family", default="qwen2_5_vl", help="qwen2_5_vl | qwen2_vl | qwen3_vl (box convention)")
    p.add_argument("--preset", default="full", help="reward preset: outcome | process | shaping | full")
    p.add_argument("--out", type=Path, default=Path("runs/trl"))
    p.add_argument("--max-steps", type=int, default=2)
    p.add_argument("--batch", type=int, default=2, help="prompts per device and step")
    p.add_argument("--group", type=int, default=2, help="generations per prompt (GRPO group)")
    p.add_argument("--max-actions", type=int, default=4, help="crop budget = TRL's max_tool_calling_iterations")
    p.add_argument("--max-completion-length", type=int, default=512)
    p.add_argument("--min-pixels", type=int, default=56 * 56)
    p.add_argument("--max-pixels", type=int, default=28 * 28 * 1280, help="the processor's pixel limit (crops too)")
    p.add_argument("--lr", type=float, default=1e-6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cpu", action="store_true", help="float32 on CPU (tiny models)")
    p.add_argument("--use-vllm", action="store_true", help="generate with vLLM (GPU)")
    return p


def main() -> None:
    args = parser().parse_args()
    trainer = build_trainer(args)
    trainer.train()
    print(f"trajectories: {Path(args.out) / 'trajectories.rank0.jsonl'}  (virl-train score reads it)")


if __name__ == "__main__":
    main()
