"""Multi-turn rollouts of a ``Policy`` in the ``CropEnv``, and the padded batch the loss forward runs on.

One episode::

    prompt     = system prompt (the env's rules and box convention) + original image + question
    repeat:    the model samples one turn (mask 1) until a stop: </crop>, </answer>, <|im_end|>, eos, or the budget
               env.step(turn text) → Action (box in ORIGINAL pixels, via virl_train.actions / virl_data.core.boxconv)
               done? stop. Else the env's reply is appended (mask 0): tool text (+ the crop as a new image)

Token budget: ``max_new_tokens`` is PER TURN; the whole episode samples at most ``max_episode_tokens`` tokens
(default ``max_new_tokens × (env.max_actions + 1)``, the most turns the env allows). A turn that hits its budget
without an action tag still goes to ``env.step`` (which records INVALID ``no_action``); an episode whose budget runs
out before the env says done is cut there (``format_ok`` False, no answer). ``format_ok`` is False as well when a
turn was cut by its budget. Garbage text never raises: the env turns it into INVALID actions. The vision
placeholder tokens (``<|image_pad|>`` …) are never sampled, so every completion stays a valid model input.

Generation is our own loop over the model with a KV cache kept across turns, batched over episodes
(``rollout_batch``; ``rollout_group`` for one record, ``rollout_episode`` for one episode)::

    prefill    each distinct prompt once (a GRPO group shares one), then copy its cache to the group's rows
    each step  every live row samples one token from its own logits (own ``torch.Generator``, own stop rule and
               budgets); ONE forward then feeds each row what follows: the token, or token + env reply (+ crop)
    ragged     rows whose chunks are shorter are right-padded; padding slots stay masked in the cache, and each
               row keeps its own rotary positions (the family's: 3-D M-RoPE for Qwen, text +1 and an image
               block ``(s, s+i, s+j)``; 1-D for Idefics3), so a row sees
               exactly the sequence it would alone
    finished   episodes leave the batch (their cache rows are dropped)

So a row's episode is the one ``rollout_episode`` samples with that row's generator (identical in tests, up to
float noise of batched matmuls). ``greedy`` (or ``temperature == 0``) takes the arg-max. ``script`` teacher-forces
the given turn texts instead (SFT, tests): no model call at all. A training step samples all its episodes as one
batch (``train._rollouts``), as TRL's ``generate`` does: the cache holds every live row, plus its padding slots.

Measured on the tiny model (2 shared CPU cores, one intra-op thread; ``benchmarks/bench_trainer.py``, table in
``docs/bench_trainer.md``; absolute times move with the machine's load, ratios hold): a GRPO step's generation
(2 records × 4 episodes, ≤ 32 tokens each) takes ~100 ms, 0.6-0.7× the time of TRL's batched ``model.generate``
(it took 2.1-2.3× when the episodes ran one at a time). Over 3-turn episodes one episode alone samples 550-780
tokens/s, about ``model.generate`` at batch 1 (which can neither carry its cache across env turns nor take a
generator per row); the same 4 episodes sampled as one batch 2.3-2.6× faster than that.

Loss side (``batch_inputs`` + ``completion_logprobs``): rows ``prompt + completion`` right-padded, all images
concatenated in order; ``completion_logprobs[b, j]`` = log π(completion_j | everything before it) at the sampling
temperature, 0 where ``completion_mask`` is 0.

Example:
    >>> policy = load_policy(cfg.model)                                                    # doctest: +SKIP
    >>> r = rollout_episode(policy, make_env(cfg), record, image, max_new_tokens=64,
    ...                     generator=torch.Generator().manual_seed(0))                      # doctest: +SKIP
    >>> r.episode.loss_mask[:3], r.episode.actions[0].token_span                             # doctest: +SKIP
    >>> group = rollout_group(policy, lambda: make_env(cfg), record, image, 8, max_new_tokens=64,
    ...                       generator=[torch.Generator().manual_seed(k) for k in range(8)])  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from virl_data.core.errors import ConfigError
from virl_data.core.types import Box, RationaleRecord
from virl_train.env import CropEnv, Observation, question_text, system_prompt
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

    ``input_ids`` / ``attention_mask`` ``[B, T]`` (prompt + completion); ``image_inputs``: the family's image
    keyword arguments for every image of row 0, then row 1, … (Qwen: ``pixel_values`` ``[ΣP, D]``,
    ``image_grid_thw`` ``[N, 3]``, ``mm_token_type_ids`` ``[B, T]``; Idefics3: ``pixel_values`` ``[1, N, 3, S, S]``);
    ``completion_ids`` / ``completion_mask`` ``[B, Tc]`` (mask = loss_mask, 0 on padding, float32),
    ``prompt_lengths`` / ``completion_lengths`` ``[B]``.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    image_inputs: dict[str, torch.Tensor | None]
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    prompt_lengths: torch.Tensor
    completion_lengths: torch.Tensor

    @property
    def pixel_values(self) -> torch.Tensor | None:
        return self.image_inputs.get("pixel_values")

    @property
    def image_grid_thw(self) -> torch.Tensor | None:
        return self.image_inputs.get("image_grid_thw")

    @property
    def mm_token_type_ids(self) -> torch.Tensor | None:
        return self.image_inputs.get("mm_token_type_ids")

    def to(self, device: torch.device | str) -> ModelBatch:
        def move(x):
            return None if x is None else x.to(device)

        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields["image_inputs"] = {k: move(v) for k, v in self.image_inputs.items()}
        return ModelBatch(**{k: v if k == "image_inputs" else move(v) for k, v in fields.items()})


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
    """The model's KV cache over a batch of rows, each row extended chunk by chunk with explicit 3-D positions.

    Rows may take chunks of different lengths in one forward: each chunk is right-padded to the longest, and the
    padding slots stay masked out (``mask``) from then on, so every row attends to exactly its own sequence.
    ``select`` keeps (or repeats) rows: one pre-filled prompt fans out to its group, finished episodes leave.
    """

    def __init__(self, policy: Policy) -> None:
        self.policy, self.cache, self.padded = policy, None, False
        self.next_pos = torch.zeros(0, dtype=torch.long)  # [B] each row's next rotary position
        self.mask = torch.zeros((0, 0), dtype=torch.long)  # [B, L] 1 = a real token, 0 = a padding slot

    def extend(self, chunks: Sequence[Sequence[int]], images: Sequence[Sequence[EncodedImage]] = ()) -> torch.Tensor:
        """Feed row ``r`` the ids ``chunks[r]`` (non-empty; with the ``images[r]`` its placeholders stand for);
        returns the logits ``[B, V]`` at each row's last token."""
        p, device = self.policy, self.policy.device
        images = images or [()] * len(chunks)
        if self.cache is None:
            self.next_pos = torch.zeros(len(chunks), dtype=torch.long)
            self.mask = torch.zeros((len(chunks), 0), dtype=torch.long, device=device)
        lengths = torch.tensor([len(c) for c in chunks])
        ids, pos = self._padded_rows(chunks, images)
        self.next_pos = pos.amax(dim=(0, 2)) + 1
        self.mask = torch.cat([self.mask, (torch.arange(ids.shape[1]) < lengths[:, None]).long().to(device)], dim=1)
        self.padded |= bool((lengths < ids.shape[1]).any())
        flat = [im for ims in images for im in ims]
        last = lengths - 1
        keep = torch.unique(last)  # the columns whose logits some row needs
        out = p.model(
            input_ids=ids.to(device), position_ids=(pos if pos.shape[0] > 1 else pos[0]).to(device),
            attention_mask=self.mask if self.padded else None, **p.image_inputs(flat, ids, device), cache=self.cache,
            use_cache=True, logits_to_keep=1 if len(keep) == 1 else keep.to(device),
        )  # fmt: skip
        self.cache = out.cache
        column = torch.searchsorted(keep, last) if len(keep) > 1 else torch.zeros_like(last)
        return out.logits[torch.arange(len(chunks), device=out.logits.device), column.to(out.logits.device)]

    def _padded_rows(self, chunks, images) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ids [B, W], positions [P, B, W])`` of the chunks right-padded to the longest (P = 3 for M-RoPE
        families, else 1); each row's positions continue from its ``next_pos`` (padding: the pad id, at the row's
        first position; masked anyway)."""
        p = self.policy
        n_pos = 3 if p.family.multimodal_rope else 1
        if all(len(c) == 1 for c in chunks) and not any(images):  # a decoding step: one text token per row
            return torch.tensor(chunks, dtype=torch.long), self.next_pos.view(1, -1, 1).expand(n_pos, -1, 1)
        ids = torch.full((len(chunks), max(map(len, chunks))), p.pad_id, dtype=torch.long)
        pos = torch.zeros((n_pos, *ids.shape), dtype=torch.long)
        for r, (chunk, ims) in enumerate(zip(chunks, images)):
            row = torch.tensor([list(chunk)], dtype=torch.long)
            ids[r, : row.shape[1]] = row[0]
            pos[:, r, : row.shape[1]] = p.positions(row, ims)[:, 0]
        return ids, pos + self.next_pos.view(1, -1, 1)

    def select(self, rows: Sequence[int]) -> None:
        """Keep the rows ``rows``, in that order (an index may repeat: that row is copied)."""
        idx = torch.tensor(list(rows), dtype=torch.long)
        self.cache.batch_select_indices(idx.to(self.policy.device))
        self.next_pos, self.mask = self.next_pos[idx], self.mask[idx.to(self.mask.device)]


def turn_stopped(policy: Policy, ids: Sequence[int]) -> bool:
    """Whether a turn whose tokens so far are ``ids`` is over: its last token is a stop token (``<|im_end|>``,
    eos) or it just completed a closing action tag (``</crop>``, ``</answer>``)."""
    tok = ids[-1]
    if tok in policy.stop_ids:
        return True
    if ">" not in policy.tokenizer.decode([tok]):  # cheap check before decoding the whole turn
        return False
    return STOP_TEXT.search(policy.tokenizer.decode(list(ids))) is not None


def env_system_prompt(env: CropEnv, image: Image.Image) -> str:
    """``env.system_prompt`` for this env's settings and ``image`` (its convention, view size, action budget)."""
    return system_prompt(
        env.convention, image.size, resized=env.view_size(*image.size), max_actions=env.max_actions, fmt=env.fmt,
        frame=env.frame_mode, scale=float(env.params.get("scale", 1000.0)),
    )  # fmt: skip


def _encode_view(policy: Policy, obs: Observation, enc: EncodedImage | None = None) -> EncodedImage:
    """Encode the env's image (or take ``enc``, its encoding already made), checking that a family whose processor
    sizes images by pixel count (Qwen) sees it at exactly the size the env computed (the ``qwen25_abs_resized``
    coordinates depend on it)."""
    assert obs.image is not None
    enc = enc if enc is not None else policy.encode_image(obs.image)
    if policy.family.sized_by_pixels and enc.size != tuple(obs.resized):
        raise ConfigError(
            f"the policy's processor shows a {obs.image.width}x{obs.image.height} image at {enc.size}, the env "
            f"expects {obs.resized}: env and model must share min_pixels/max_pixels (make_env from the same config)"
        )
    return enc


class _Episode:
    """One episode in progress: its env, prompt, and the completion so far (tokens, mask, log-probs, actions,
    turn texts, images)."""

    def __init__(self, policy: Policy, env: CropEnv, record_id: str, prompt: list[int], first: EncodedImage) -> None:
        self.policy, self.env, self.record_id, self.prompt = policy, env, record_id, prompt
        self.images = [first]
        self.ids: list[int] = []
        self.mask: list[int] = []
        self.logps: list[float] = []
        self.actions: list[Action] = []
        self.texts: list[str] = []
        self.answer: str | None = None
        self.answer_box: Box | None = None
        self.format_ok = True

    def _append(self, ids: list[int], mask: int, logps: list[float] | None = None) -> None:
        self.ids += ids
        self.mask += [mask] * len(ids)
        self.logps += logps if logps is not None else [0.0] * len(ids)

    def play(self, ids: list[int], logps: list[float] | None, text: str, cut: bool) -> tuple[list[int], list] | None:
        """Append one model turn (mask 1) and step the env with ``text``. Returns the env's reply ``(ids, crop
        images)``, already appended (mask 0), or None when the env says the episode is over."""
        start = len(self.ids)
        self._append(ids, 1, logps)
        self.texts.append(text)
        self.format_ok &= not cut
        result = self.env.step(text)
        self.actions.append(dataclasses.replace(result.action, token_span=(start, len(self.ids))))
        if result.done:
            answered = result.action.kind is ActionKind.ANSWER
            self.answer = result.action.answer if answered else None
            self.answer_box = result.action.box if answered else None
            return None
        obs = result.observation
        crop = [_encode_view(self.policy, obs)] if obs.image is not None else []
        closed = bool(ids) and ids[-1] == self.policy.im_end_id
        env_ids = self.policy.env_ids(obs.text, crop[0] if crop else None, close_turn=not closed)
        self._append(env_ids, 0)
        self.images += crop
        return env_ids, crop

    def cut_off(self) -> None:
        """End the episode before the env said done (budget or script spent): no answer, format broken."""
        self.answer, self.answer_box, self.format_ok = None, None, False

    def rollout(self, sampled: bool) -> Rollout:
        episode = Episode(
            record_id=self.record_id, prompt_ids=tuple(self.prompt), completion_ids=tuple(self.ids),
            loss_mask=tuple(self.mask), actions=tuple(self.actions), answer=self.answer, n_turns=len(self.texts),
            format_ok=self.format_ok, answer_box=self.answer_box,
        )  # fmt: skip
        return Rollout(episode, tuple(self.images), self.record_id, tuple(self.texts),
                       tuple(self.logps) if sampled else None)  # fmt: skip


class _Row:
    """One row of a sampled batch: its episode, generator, token budgets and the turn being sampled."""

    def __init__(self, episode: _Episode, generator: torch.Generator | None, max_new_tokens: int, budget: int):
        self.episode, self.generator = episode, generator
        self.max_new_tokens, self.left = max_new_tokens, budget  # left: tokens the episode may still sample
        self.ids: list[int] = []
        self.logps: list[float] = []

    @property
    def limit(self) -> int:
        """The current turn's token budget."""
        return min(self.max_new_tokens, self.left)

    def add(self, tok: int, logp: float) -> tuple[list[int], list[EncodedImage]] | None:
        """Append one sampled token. Returns what the model must take next: ``[tok]`` mid-turn, ``[tok, *env
        reply]`` and its crops after a turn, or None when the episode is over (the last token of a turn is only
        fed with what follows it)."""
        policy = self.episode.policy
        self.ids.append(tok)
        self.logps.append(logp)
        stop = turn_stopped(policy, self.ids)
        if not stop and len(self.ids) < self.limit:
            return [tok], []
        ids, logps, self.ids, self.logps = self.ids, self.logps, [], []
        self.left -= len(ids)
        reply = self.episode.play(ids, logps, policy.tokenizer.decode(ids), cut=not stop)
        if reply is None:
            return None
        if self.limit <= 0:
            self.episode.cut_off()
            return None
        return [tok, *reply[0]], reply[1]


@contextlib.contextmanager
def _sampling(model: torch.nn.Module):
    """Eval mode and no gradients while sampling; the model's mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _start(policy: Policy, envs: Sequence[CropEnv], records: Sequence[RationaleRecord],
           images: Sequence[Image.Image], n: int) -> list[_Episode]:  # fmt: skip
    """Reset every env (episode ``k`` plays record ``k // n``); each record's image is encoded once."""
    encoded: dict[int, EncodedImage] = {}
    episodes = []
    for k, env in enumerate(envs):
        record = records[k // n]
        question = question_text(record.question, record.answer_type)
        obs = env.reset(images[k // n], question)
        first = encoded[k // n] = _encode_view(policy, obs, encoded.get(k // n))
        prompt = policy.prompt_ids(env_system_prompt(env, obs.image), question, first)
        episodes.append(_Episode(policy, env, record.id, prompt, first))
    return episodes


def _prefill(ctx: _Context, rows: Sequence[_Row]) -> torch.Tensor:
    """Pre-fill each distinct prompt once (the same image and token ids), then give every row a copy of its
    prompt's cache; returns the rows' ``[B, V]`` logits."""
    index: dict[tuple, int] = {}  # (first image, prompt ids) → its row in the pre-fill
    which = [index.setdefault((id(r.episode.images[0]), tuple(r.episode.prompt)), len(index)) for r in rows]
    firsts = {j: r.episode.images[0] for j, r in zip(which, rows)}
    logits = ctx.extend([list(ids) for _, ids in index], [[firsts[j]] for j in range(len(index))])
    ctx.select(which)
    return logits[which]


def _decode(ctx: _Context, logits: torch.Tensor, rows: list[_Row], gen: dict) -> None:
    """Sample every row in lockstep until all episodes are over: at each step every live row draws one token from
    its own logits and generator, then ONE forward feeds each row what follows (a token, or a token + the env's
    reply); finished rows leave the batch."""
    banned = ctx.policy.banned_ids
    while rows:
        logits = logits.detach().float().cpu()
        feed, keep = [], []
        for i, row in enumerate(rows):
            tok, logp = sample_token(logits[i], banned=banned, generator=row.generator, **gen)
            nxt = row.add(tok, logp)
            if nxt is not None:
                feed.append(nxt)
                keep.append(i)
        if len(keep) < len(rows):
            rows = [rows[i] for i in keep]
            if rows:
                ctx.select(keep)
        if rows:
            logits = ctx.extend([ids for ids, _ in feed], [ims for _, ims in feed])


def rollout_batch(
    policy: Policy, envs: Sequence[CropEnv], records: Sequence[RationaleRecord], images: Sequence[Image.Image],
    n: int = 1, *, max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0, greedy: bool = False,
    generator: torch.Generator | Sequence[torch.Generator] | None = None, max_episode_tokens: int | None = None,
) -> list[Rollout]:  # fmt: skip
    """``n`` episodes of each of ``records`` (``images`` = their ORIGINAL images), sampled together (see the module
    docstring). ``envs``: one fresh env per episode, record-major, as the result (episodes ``i·n … i·n + n − 1``
    play record ``i``). ``generator``: one per episode (each row then draws as ``rollout_episode`` would with it), or
    one shared by all rows (drawn row by row at each step)."""
    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if len(images) != len(records) or len(envs) != n * len(records):
        raise ValueError(f"rollout_batch: {len(records)} records x {n} need as many images and {n * len(records)} "
                         f"envs, got {len(images)} images and {len(envs)} envs")  # fmt: skip
    gens = list(generator) if isinstance(generator, Sequence) else [generator] * len(envs)
    if len(gens) != len(envs):
        raise ValueError(f"rollout_batch: {len(gens)} generators for {len(envs)} episodes")
    episodes = _start(policy, envs, records, images, n)
    rows = [_Row(ep, g, max_new_tokens, max_episode_tokens if max_episode_tokens is not None
                 else max_new_tokens * (ep.env.max_actions + 1)) for ep, g in zip(episodes, gens)]  # fmt: skip
    for row in rows:
        if row.limit <= 0:  # no budget at all: over before the first token
            row.episode.cut_off()
    live = [row for row in rows if row.limit > 0]
    if live:
        with _sampling(policy.model):
            ctx = _Context(policy)
            gen = {"temperature": temperature, "top_p": top_p, "greedy": greedy}
            _decode(ctx, _prefill(ctx, live), live, gen)
    return [ep.rollout(sampled=True) for ep in episodes]


def rollout_episode(
    policy: Policy, env: CropEnv, record: RationaleRecord, image: Image.Image, *, max_new_tokens: int,
    temperature: float = 1.0, top_p: float = 1.0, greedy: bool = False, generator: torch.Generator | None = None,
    script: Sequence[str] | None = None, max_episode_tokens: int | None = None,
) -> Rollout:  # fmt: skip
    """One multi-turn episode of ``policy`` on ``record`` (``image`` = its ORIGINAL image): ``rollout_batch`` of
    one. ``script`` = teacher-forced turn texts (mask 1, no model call; the episode ends when the env is done or
    the script runs out, ``format_ok`` False then)."""
    if script is None:
        return rollout_batch(
            policy, [env], [record], [image], max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
            greedy=greedy, generator=generator, max_episode_tokens=max_episode_tokens,
        )[0]  # fmt: skip
    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    (ep,) = _start(policy, [env], [record], [image], 1)
    for text in script:
        if ep.play(policy.text_ids(text), None, text, cut=False) is None:
            break
    else:  # the script ran out before the env was done
        ep.cut_off()
    return ep.rollout(sampled=False)


def rollout_group(
    policy: Policy, env_factory: Callable[[], CropEnv], record: RationaleRecord, image: Image.Image, n: int, **gen
) -> list[Rollout]:
    """``n`` episodes of one record sampled together, each in a fresh env from ``env_factory``; ``gen`` as
    ``rollout_batch``: the prompt is pre-filled once and its cache shared by the ``n`` rows."""
    return rollout_batch(policy, [env_factory() for _ in range(n)], [record], [image], n, **gen)


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
        input_ids=ids, attention_mask=attn, image_inputs=policy.image_inputs(images, ids, "cpu"), completion_ids=comp,
        completion_mask=cmask,
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
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, **batch.image_inputs, use_cache=False,
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
    "rollout_batch",
    "rollout_episode",
    "rollout_group",
    "sample_token",
    "turn_stopped",
]
