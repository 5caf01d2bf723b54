"""Multi-turn rollouts of a ``Policy`` in the ``CropEnv``, and the padded batch the loss forward runs on.

One episode (``rollout_episode``)::

    prompt     = system prompt (the env's rules and box convention) + original image + question
    repeat:    the model samples one turn (mask 1) until a stop: </crop>, </answer>, <|im_end|>, eos, or the budget
               env.step(turn text) → Action (box in ORIGINAL pixels, via virl_train.actions / virl_data.boxconv)
               done? stop. Else the env's reply is appended (mask 0): tool text (+ the crop as a new image)

Token budget: ``max_new_tokens`` is PER TURN; the whole episode samples at most ``max_episode_tokens`` tokens
(default ``max_new_tokens × (env.max_actions + 1)``, the most turns the env allows). A turn that hits its budget
without an action tag still goes to ``env.step`` (which records INVALID ``no_action``); an episode whose budget runs
out before the env says done is cut there (``format_ok`` False, no answer). ``format_ok`` is False as well when a
turn was cut by its budget. Garbage text never raises: the env turns it into INVALID actions. The vision
placeholder tokens (``<|image_pad|>`` …) are never sampled, so every completion stays a valid model input.

Generation is our own loop over the model with a KV cache kept across turns: each env reply (with its crop) is
pre-filled once with its 3-D rotary positions, each sampled token is one cached step. Sampling takes
``torch.Generator`` (CPU), so a seeded generator gives the same episode; ``greedy`` (or ``temperature == 0``) takes
the arg-max. ``script`` teacher-forces the given turn texts instead (SFT, tests): no model call at all.
Measured on the tiny model (2 CPU cores, one intra-op thread): ~1000 sampled tokens/s over 3-turn episodes, vs
~950 tokens/s for ``model.generate`` on a single turn (which cannot carry its cache across env turns nor take a
``torch.Generator``).

Loss side (``batch_inputs`` + ``completion_logprobs``): rows ``prompt + completion`` right-padded, all images
concatenated in order; ``completion_logprobs[b, j]`` = log π(completion_j | everything before it) at the sampling
temperature, 0 where ``completion_mask`` is 0.

Example:
    >>> policy = load_policy(cfg.model)                                                    # doctest: +SKIP
    >>> r = rollout_episode(policy, make_env(cfg), record, image, max_new_tokens=64,
    ...                     generator=torch.Generator().manual_seed(0))                      # doctest: +SKIP
    >>> r.episode.loss_mask[:3], r.episode.actions[0].token_span                             # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from virl_data.errors import ConfigError
from virl_data.types import RationaleRecord
from virl_train.env import CropEnv, Observation, system_prompt
from virl_train.loss import token_logprobs
from virl_train.policy import EncodedImage, Policy
from virl_train.types import Action, ActionKind, Episode

STOP_TEXT = re.compile(r"</(?:crop|answer)\s*>", re.IGNORECASE)
"""A sampled turn ends at the first closing action tag (or a stop token)."""


@dataclass(frozen=True)
class Rollout:
    """One finished episode plus what the loss forward needs again.

    ``images``: the original first, then each crop in insertion order; ``turn_texts``: the decoded model turns;
    ``logprobs``: per completion token, log π of the sampled token at the sampling temperature (full softmax, as
    ``completion_logprobs`` computes it; 0 on env tokens), None for scripted rollouts.
    """

    episode: Episode
    images: tuple[EncodedImage, ...]
    record_id: str
    turn_texts: tuple[str, ...] = ()
    logprobs: tuple[float, ...] | None = None


@dataclass
class ModelBatch:
    """Right-padded model inputs of several rollouts.

    ``input_ids`` / ``attention_mask`` / ``mm_token_type_ids`` ``[B, T]`` (prompt + completion, 1 = image token),
    ``pixel_values`` ``[ΣP, D]`` and ``image_grid_thw`` ``[N, 3]`` (every image of row 0, then row 1, …),
    ``completion_ids`` / ``completion_mask`` ``[B, Tc]`` (mask = loss_mask, 0 on padding, float32),
    ``prompt_lengths`` / ``completion_lengths`` ``[B]``.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    mm_token_type_ids: torch.Tensor
    pixel_values: torch.Tensor | None
    image_grid_thw: torch.Tensor | None
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    prompt_lengths: torch.Tensor
    completion_lengths: torch.Tensor

    def to(self, device: torch.device | str) -> ModelBatch:
        return ModelBatch(**{
            f.name: None if getattr(self, f.name) is None else getattr(self, f.name).to(device)
            for f in dataclasses.fields(self)
        })  # fmt: skip


# --- sampling --------------------------------------------------------------------------------------------------------
def sample_token(
    logits: torch.Tensor, *, temperature: float = 1.0, top_p: float = 1.0, greedy: bool = False,
    generator: torch.Generator | None = None, banned: Sequence[int] = (),
) -> tuple[int, float]:  # fmt: skip
    """One token id from ``logits`` ``[V]`` and its log-probability under ``softmax(logits / temperature)``.

    ``banned`` ids are never drawn; ``top_p`` < 1 samples from the smallest set of tokens whose probability
    reaches ``top_p`` (nucleus); ``greedy`` or ``temperature == 0`` takes the arg-max (log-prob at temperature 1).
    The log-prob is over the full vocabulary, as the loss forward sees it.
    """
    logits = logits.detach().float().cpu()
    logp = torch.log_softmax(logits / (temperature if temperature > 0 else 1.0), dim=-1)
    allowed = logits.clone()
    if banned:
        allowed[list(banned)] = float("-inf")
    if greedy or temperature <= 0:
        tok = int(allowed.argmax())
        return tok, float(logp[tok])
    probs = torch.softmax(allowed / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        drop = sorted_p.cumsum(0) - sorted_p >= top_p  # keep every token needed to reach top_p (the first always)
        sorted_p[drop] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_p)
    tok = int(torch.multinomial(probs, 1, generator=generator))
    return tok, float(logp[tok])


class _Context:
    """The model's KV cache over the sequence so far, extended chunk by chunk with explicit 3-D positions."""

    def __init__(self, policy: Policy) -> None:
        self.policy, self.cache, self.next_pos = policy, None, 0

    def extend(self, ids: Sequence[int], images: Sequence[EncodedImage] = ()) -> torch.Tensor:
        """Feed ``ids`` (with the ``images`` their placeholders stand for); returns the last position's logits."""
        p, device = self.policy, self.policy.device
        input_ids = torch.tensor([list(ids)], dtype=torch.long, device=device)
        mm = (input_ids == p.image_token_id).to(torch.int32)
        grid = torch.cat([im.image_grid_thw for im in images]).to(device) if images else None
        pos = p.rope_positions(input_ids, mm, grid) + self.next_pos
        pixels = torch.cat([im.pixel_values for im in images]).to(device) if images else None
        out = p.model(
            input_ids=input_ids, position_ids=pos, pixel_values=pixels, image_grid_thw=grid, mm_token_type_ids=mm,
            cache=self.cache, use_cache=True, logits_to_keep=1,
        )  # fmt: skip
        self.cache, self.next_pos = out.cache, int(pos.max()) + 1
        return out.logits[0, -1]


@dataclass
class _Turn:
    ids: list[int]
    logprobs: list[float]
    cut: bool  # ended by the budget, not by a stop


def turn_stopped(policy: Policy, ids: Sequence[int]) -> bool:
    """Whether a turn whose tokens so far are ``ids`` is over: its last token is a stop token (``<|im_end|>``,
    eos) or it just completed a closing action tag (``</crop>``, ``</answer>``)."""
    tok = ids[-1]
    if tok in policy.stop_ids:
        return True
    if ">" not in policy.tokenizer.decode([tok]):  # cheap check before decoding the whole turn
        return False
    return STOP_TEXT.search(policy.tokenizer.decode(list(ids))) is not None


def _sample_turn(ctx: _Context, logits: torch.Tensor, budget: int, gen: dict) -> _Turn:
    """Sample up to ``budget`` tokens, the first from ``logits``; stop as ``turn_stopped`` says. The last sampled
    token is left out of the cache (it is fed with the env's reply)."""
    ids: list[int] = []
    logps: list[float] = []
    while True:
        tok, lp = sample_token(logits, banned=ctx.policy.banned_ids, **gen)
        ids.append(tok)
        logps.append(lp)
        stop = turn_stopped(ctx.policy, ids)
        if stop or len(ids) >= budget:
            return _Turn(ids, logps, cut=not stop)
        logits = ctx.extend([tok])


def env_system_prompt(env: CropEnv, image: Image.Image) -> str:
    """``env.system_prompt`` for this env's settings and ``image`` (its convention, view size, action budget)."""
    return system_prompt(
        env.convention, image.size, resized=env.view_size(*image.size), max_actions=env.max_actions, fmt=env.fmt,
        frame=env.frame_mode, scale=float(env.params.get("scale", 1000.0)),
    )  # fmt: skip


def _encode_view(policy: Policy, obs: Observation) -> EncodedImage:
    """Encode the env's image, checking the model sees it at exactly the size the env computed (the
    ``qwen25_abs_resized`` coordinates depend on it)."""
    assert obs.image is not None
    enc = policy.encode_image(obs.image)
    if enc.size != tuple(obs.resized):
        raise ConfigError(
            f"the policy's processor shows a {obs.image.width}x{obs.image.height} image at {enc.size}, the env "
            f"expects {obs.resized}: env and model must share min_pixels/max_pixels (make_env from the same config)"
        )
    return enc


class _Builder:
    """Accumulates the completion of one episode: tokens, mask, log-probs, actions, images."""

    def __init__(self, images: list[EncodedImage]) -> None:
        self.ids: list[int] = []
        self.mask: list[int] = []
        self.logps: list[float] = []
        self.actions: list[Action] = []
        self.texts: list[str] = []
        self.images = images

    def model_turn(self, ids: list[int], logps: list[float] | None, text: str) -> tuple[int, int]:
        start = len(self.ids)
        self.ids += ids
        self.mask += [1] * len(ids)
        self.logps += logps if logps is not None else [0.0] * len(ids)
        self.texts.append(text)
        return start, len(self.ids)

    def env_turn(self, ids: list[int]) -> None:
        self.ids += ids
        self.mask += [0] * len(ids)
        self.logps += [0.0] * len(ids)


def rollout_episode(
    policy: Policy, env: CropEnv, record: RationaleRecord, image: Image.Image, *, max_new_tokens: int,
    temperature: float = 1.0, top_p: float = 1.0, greedy: bool = False, generator: torch.Generator | None = None,
    script: Sequence[str] | None = None, max_episode_tokens: int | None = None,
) -> Rollout:  # fmt: skip
    """One multi-turn episode of ``policy`` on ``record`` (``image`` = its ORIGINAL image); see the module
    docstring for the loop, the stops and the budgets. ``script`` = teacher-forced turn texts (mask 1; the episode
    ends when the env is done or the script runs out, ``format_ok`` False then)."""
    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    budget = max_episode_tokens if max_episode_tokens is not None else max_new_tokens * (env.max_actions + 1)
    obs = env.reset(image, record.question)
    first = _encode_view(policy, obs)
    prompt = policy.prompt_ids(env_system_prompt(env, obs.image), record.question, first)
    b = _Builder([first])
    gen = {"temperature": temperature, "top_p": top_p, "greedy": greedy, "generator": generator}
    model = policy.model
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            answer, n_turns, format_ok = _run_turns(policy, env, b, prompt, script, max_new_tokens, budget, gen)
    finally:
        model.train(was_training)
    episode = Episode(
        record_id=record.id, prompt_ids=tuple(prompt), completion_ids=tuple(b.ids), loss_mask=tuple(b.mask),
        actions=tuple(b.actions), answer=answer, n_turns=n_turns, format_ok=format_ok,
    )  # fmt: skip
    logps = None if script is not None else tuple(b.logps)
    return Rollout(episode, tuple(b.images), record.id, tuple(b.texts), logps)


def _run_turns(policy, env, b: _Builder, prompt, script, max_new_tokens, budget, gen) -> tuple[str | None, int, bool]:
    """The turn loop; returns ``(answer, n_turns, format_ok)``."""
    ctx = _Context(policy)
    logits = ctx.extend(prompt, b.images) if script is None else None
    used, turn, format_ok = 0, 0, True
    while True:
        if script is not None:
            if turn >= len(script):
                return None, turn, False
            text = script[turn]
            ids, logps, cut = policy.text_ids(text), None, False
        else:
            limit = min(max_new_tokens, budget - used)
            if limit <= 0:
                return None, turn, False
            sampled = _sample_turn(ctx, logits, limit, gen)
            ids, logps, cut = sampled.ids, sampled.logprobs, sampled.cut
            used += len(ids)
            text = policy.tokenizer.decode(ids)
        format_ok &= not cut
        span = b.model_turn(ids, logps, text)
        result = env.step(text)
        turn += 1
        b.actions.append(dataclasses.replace(result.action, token_span=span))
        if result.done:
            answer = result.action.answer if result.action.kind is ActionKind.ANSWER else None
            return answer, turn, format_ok
        obs = result.observation
        crop = [_encode_view(policy, obs)] if obs.image is not None else []
        closed = bool(ids) and ids[-1] == policy.im_end_id
        env_ids = policy.env_ids(obs.text, crop[0] if crop else None, close_turn=not closed)
        b.env_turn(env_ids)
        b.images.extend(crop)
        if script is None:
            # the last sampled token is not in the cache yet: feed it together with the env reply
            logits = ctx.extend([ids[-1], *env_ids], crop)


def rollout_group(
    policy: Policy, env_factory: Callable[[], CropEnv], record: RationaleRecord, image: Image.Image, n: int, **gen
) -> list[Rollout]:
    """``n`` episodes of one record, each in a fresh env from ``env_factory``; ``gen`` as ``rollout_episode``
    (one generator drawn from in turn, so the group is deterministic given its seed)."""
    return [rollout_episode(policy, env_factory(), record, image, **gen) for _ in range(n)]


# --- the loss forward ------------------------------------------------------------------------------------------------
def batch_inputs(policy: Policy, rollouts: Sequence[Rollout], device: torch.device | str | None = None) -> ModelBatch:
    """Right-pad ``prompt + completion`` of each rollout into one batch (see ``ModelBatch``)."""
    if not rollouts:
        raise ValueError("batch_inputs: no rollouts")
    eps = [r.episode for r in rollouts]
    rows = [list(e.prompt_ids) + list(e.completion_ids) for e in eps]
    width, c_width = max(map(len, rows)), max(len(e.completion_ids) for e in eps)
    ids = torch.full((len(rows), width), policy.pad_id, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    comp = torch.full((len(rows), c_width), policy.pad_id, dtype=torch.long)
    cmask = torch.zeros((len(rows), c_width), dtype=torch.float32)
    for i, (row, e) in enumerate(zip(rows, eps)):
        ids[i, : len(row)] = torch.tensor(row)
        attn[i, : len(row)] = 1
        comp[i, : len(e.completion_ids)] = torch.tensor(e.completion_ids, dtype=torch.long)
        cmask[i, : len(e.loss_mask)] = torch.tensor(e.loss_mask, dtype=torch.float32)
    images = [im for r in rollouts for im in r.images]
    batch = ModelBatch(
        input_ids=ids, attention_mask=attn, mm_token_type_ids=(ids == policy.image_token_id).to(torch.int32),
        pixel_values=torch.cat([im.pixel_values for im in images]) if images else None,
        image_grid_thw=torch.cat([im.image_grid_thw for im in images]) if images else None,
        completion_ids=comp, completion_mask=cmask,
        prompt_lengths=torch.tensor([len(e.prompt_ids) for e in eps], dtype=torch.long),
        completion_lengths=torch.tensor([len(e.completion_ids) for e in eps], dtype=torch.long),
    )  # fmt: skip
    return batch.to(device) if device is not None else batch


def completion_logprobs(model: torch.nn.Module, batch: ModelBatch, temperature: float = 1.0) -> torch.Tensor:
    """``[B, Tc]`` log-probs of the completion tokens (``virl_train.loss.token_logprobs`` at ``temperature``),
    0 where ``completion_mask`` is 0. Only the logits from the shortest prompt on are computed
    (``logits_to_keep``), and each row's completion window is a view of them (no ``[B, Tc, V]`` gather copy)."""
    width, c_width = batch.input_ids.shape[1], batch.completion_ids.shape[1]
    if c_width == 0:  # nothing was generated (e.g. an empty script)
        return batch.completion_mask.clone()
    keep = width - int(batch.prompt_lengths.min()) + 1
    out = model(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, pixel_values=batch.pixel_values,
        image_grid_thw=batch.image_grid_thw, mm_token_type_ids=batch.mm_token_type_ids, use_cache=False,
        logits_to_keep=keep,
    )  # fmt: skip
    logits = out.logits
    rows = []
    for b in range(logits.shape[0]):
        start = int(batch.prompt_lengths[b]) - 1 - (width - keep)  # logits[start + j] predict completion token j
        n = min(c_width, keep - start)
        lp = token_logprobs(logits[b : b + 1, start : start + n], batch.completion_ids[b : b + 1, :n], temperature)
        rows.append(torch.nn.functional.pad(lp, (0, c_width - n)))
    return torch.cat(rows) * batch.completion_mask


__all__ = [
    "STOP_TEXT",
    "ModelBatch",
    "Rollout",
    "batch_inputs",
    "completion_logprobs",
    "env_system_prompt",
    "rollout_episode",
    "rollout_group",
    "sample_token",
    "turn_stopped",
]
