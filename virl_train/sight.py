""""Can it see?": the policy's crops with the real pixels vs with every pixel set to one constant.

A policy that localises from the image places its crops better when it sees the pixels; one that guesses from the
question's words (and the answer prior) places them just as well on a blank image. Both runs use the same records,
prompts and per-record seeds (greedy by default), and the same environment: with the constant image the crops it
returns are constant too. Metrics are ``eval.grounding_metrics``' own (so they cannot drift from the reward):

- ``crop_iou``  = ``mean_fidelity``: each visual action's best IoU with a chain box, averaged (invalid → 0);
- ``hit_rate@0.5`` / ``hit_rate@0.3``: visual actions whose best IoU reaches 0.5 / 0.3;
- ``gain``      = crop IoU with pixels − crop IoU with the constant image;
- ``can_see``   = ``gain ≥ SIGHT_MARGIN`` (0.05). A start that cannot see is flagged in the SFT and eval output.

The constant is ``SIGHT_FILL`` = RGB (200, 200, 200), not 0: Idefics3 drops an all-zero image as padding.

Example:
    >>> sight_verdict({"mean_fidelity": 0.52, "hit_rate@0.5": 0.6, "hit_rate@0.3": 0.8, "n_actions": 10},
    ...               {"mean_fidelity": 0.30, "hit_rate@0.5": 0.2, "hit_rate@0.3": 0.5, "n_actions": 10})["can_see"]
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image

SIGHT_FILL = (200, 200, 200)
SIGHT_MARGIN = 0.05
KEYS = {"mean_fidelity": "crop_iou", "hit_rate@0.5": "hit_rate@0.5", "hit_rate@0.3": "hit_rate@0.3",
        "n_actions": "n_actions", "accuracy": "accuracy"}  # fmt: skip


def constant_image(image: Image.Image, fill: tuple[int, int, int] = SIGHT_FILL) -> Image.Image:
    """An RGB image of ``image``'s size with every pixel ``fill``.

    >>> constant_image(Image.new("RGB", (4, 3))).getpixel((1, 1))
    (200, 200, 200)
    """
    return Image.new("RGB", image.size, fill)


def sight_verdict(real: dict[str, float], blind: dict[str, float], margin: float = SIGHT_MARGIN) -> dict[str, Any]:
    """From two ``grounding_metrics`` dicts: ``{"pixels": {...}, "constant": {...}, "gain", "can_see", "margin"}``."""
    pick = lambda m: {new: float(m.get(old, 0.0)) for old, new in KEYS.items()}  # noqa: E731
    gain = float(real["mean_fidelity"]) - float(blind["mean_fidelity"])
    return {"pixels": pick(real), "constant": pick(blind), "gain": gain, "can_see": gain >= margin, "margin": margin}


def probe_sight(policy: Any, records: Sequence[Any], images: Sequence[Any] | Callable[[int], Any], cfg: Any, *,
                seed: int = 0, greedy: bool = True) -> dict[str, Any]:  # fmt: skip
    """Run ``policy`` on ``records`` twice (real images, then constant ones) in ``train.make_env(cfg)``; returns
    ``sight_verdict`` of the two runs' grounding metrics."""
    import torch

    from virl_train.eval import _images, _run, grounding_metrics
    from virl_train.rewards import RewardConfig
    from virl_train.train import make_env

    image_of = _images(images, len(records))
    rewards = RewardConfig.from_params(cfg.rewards.preset, cfg.rewards.params)
    was = policy.model.training
    policy.model.eval()
    try:
        with torch.no_grad():
            env = lambda i: make_env(cfg)  # noqa: E731
            real = _run(policy, records, image_of, env, cfg, seed=seed, greedy=greedy)
            blind = _run(policy, records, lambda i: constant_image(image_of(i)), env, cfg, seed=seed, greedy=greedy)
    finally:
        policy.model.train(was)
    return sight_verdict(grounding_metrics(real, records, rewards), grounding_metrics(blind, records, rewards))


def sight_line(sight: dict[str, Any]) -> str:
    """One line for a console: both runs' crop IoU and hit rate, and the flag when the policy cannot see."""
    p, c = sight["pixels"], sight["constant"]
    line = (f"can it see: crop IoU {p['crop_iou']:.3f} with pixels vs {c['crop_iou']:.3f} constant "
            f"(gain {sight['gain']:+.3f}); hit@0.5 {p['hit_rate@0.5']:.3f} vs {c['hit_rate@0.5']:.3f}")
    return line + ("" if sight["can_see"] else f"  WARNING: cannot see (gain < {sight['margin']})")




def sight_of_checkpoint(cfg: Any, policy_dir: Any, split: str, n: int, *, seed: int = 0) -> dict[str, Any]:
    """``probe_sight`` of the policy saved at ``policy_dir`` on the first ``n`` records of ``split``."""
    import dataclasses

    from virl_train.data import ExampleSet
    from virl_train.policy import load_policy

    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name_or_path=str(policy_dir)))
    examples = ExampleSet.load(cfg.data.path, split, limit=n)
    return {**probe_sight(load_policy(cfg.model), examples.records, examples.image, cfg, seed=seed),
            "split": split, "n_records": len(examples)}


__all__ = ["SIGHT_FILL", "SIGHT_MARGIN", "constant_image", "probe_sight", "sight_line", "sight_of_checkpoint",
           "sight_verdict"]
