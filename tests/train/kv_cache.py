"""The KV-cache reference the rollout tests compare against: log-probs of an episode's completion fed turn by turn
through ``rollout._Context`` (model tokens one at a time, env replies with their crops in one go), as the sampler
sees them. Shared by ``test_rollout.py`` and the per-family ``test_families.py``."""

from __future__ import annotations

import torch

from virl_train.rollout import _Context


def cached_logprobs(policy, r, temperature: float = 1.0) -> torch.Tensor:
    """``[T]`` log-probs of ``r.episode.completion_ids`` under the cache path; 0 on env-inserted tokens."""
    e, ctx = r.episode, _Context(policy)
    crops = iter(r.images[1:])
    with torch.no_grad():
        logits = ctx.extend([e.prompt_ids], [r.images[:1]])[0]
        out, i, ids = [], 0, list(e.completion_ids)
        while i < len(ids):
            j = i
            while j < len(ids) and e.loss_mask[j] == e.loss_mask[i]:
                j += 1
            chunk = ids[i:j]
            if e.loss_mask[i]:
                for tok in chunk:
                    out.append(torch.log_softmax(logits.float() / temperature, -1)[tok].item())
                    logits = ctx.extend([[tok]])[0]
            else:
                out += [0.0] * len(chunk)
                logits = ctx.extend([chunk], [[next(crops) for _ in range(chunk.count(policy.vision_start_id))]])[0]
            i = j
    return torch.tensor(out)
