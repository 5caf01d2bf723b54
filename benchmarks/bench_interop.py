"""Reward cost per completion of the engine adapters, next to ``virl-train score`` on the same logged episodes.

    python benchmarks/bench_interop.py [--episodes 10000] [--samples 8] [--batch 64] [--repeats 3] [--json PATH]

Input: one trajectory log of ``--episodes`` episodes (shapes-world records, 224 px, ``--samples`` scripted-policy
episodes each: ``virl_train.scripted``, crops from the true chain with seeded skips, wrong crops and wrong answers),
the file ``virl-train score`` reads. Each engine row scores exactly those episodes:

- ``virl-train score``: ``virl_train.score.score_file`` over the file (read, parse, ``score_episode``, write JSON).
- ``score_episode alone``: the scorer all rows share, on the parsed file (no I/O); an adapter adds its row minus this.
- ``TRL reward_funcs``: the five component callables of ``virl_train.interop.trl`` called as ``GRPOTrainer`` calls
  them, on batches of ``--batch`` completions: each episode's ``CropToolEnv`` was reset on its record and its crops
  were made through the tool (untimed: that is the rollout), its completion is TRL's message list (tool calls, tool
  messages with the crop images, the final answer). Timed: the five calls per batch (``episode_of`` +
  ``score_record`` once per completion, shared; the component values). ``+ log`` also appends the trajectory lines.
- ``verl compute_score``: ``virl_train.interop.verl.compute_score`` once per decoded response (the crops as Hermes
  ``<tool_call>`` blocks, then the answer) with its row's ``ground_truth`` of the verl export (``verl_row``).

Each row's totals are checked against the logged totals (``agree``). Another engine's row is one function
``(Setup) -> Row`` added to ``ENGINES``. Times are the median of ``--repeats`` runs after a warm-up, in ms per
completion, as wall time and as this process's CPU time (the honest figure on a machine shared with other jobs); the
ratio is of CPU times, against ``virl-train score``. Writes ``--json`` (with the machine's CPU count and load).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from PIL import Image
from rich.console import Console
from rich.table import Table

from virl_data.storage.corpus import write_json
from virl_data.miners.shapes import ShapesConfig, generate, make_scene, render_scene, scene_objects
from virl_data.core.schema import record_to_row
from virl_data.core.types import RationaleRecord
from virl_train.actions import from_pixels
from virl_data.export.verl import CropSettings
from virl_data.export.verl import verl_row as export_verl_row
from virl_train.interop.trl import CropToolEnv, reward_funcs
from virl_train.interop.verl import compute_score, parse_ground_truth
from virl_train.rewards import RewardConfig, score_episode
from virl_train.score import score_file
from virl_train.scripted import ScriptedPolicy, scripted_rows
from virl_data.storage.trajectories import read_trajectories, write_trajectories

REPO = Path(__file__).resolve().parents[1]
SHAPES = ShapesConfig(image_size=(224, 224))
CONVENTION = "qwen25_abs_resized"


@dataclass
class Setup:
    """The shared input: the records, their images, the logged lines and the file ``virl-train score`` reads."""

    records: dict[str, RationaleRecord]
    images: dict[str, Image.Image]
    lines: list[dict[str, Any]]
    log: Path
    cfg: RewardConfig
    batch: int
    repeats: int
    tmp: Path
    trl_batches: list[Any] = field(default_factory=list)


@dataclass
class Row:
    """One engine's figures: wall and CPU milliseconds per completion, how many totals agree with the log, of n."""

    engine: str
    ms_per_completion: float
    cpu_ms_per_completion: float
    agree: int
    n: int

    @classmethod
    def of(cls, engine: str, wall: float, cpu: float, agree: int, n: int) -> Row:
        return cls(engine, 1000 * wall / n, 1000 * cpu / n, agree, n)


def make_setup(n_episodes: int, samples: int, batch: int, repeats: int, tmp: Path) -> Setup:
    """``n_episodes // samples`` records × ``samples`` scripted episodes, written as one trajectory log."""
    n_records = max(1, n_episodes // samples)
    records = list(generate(n_records, seed=0, config=SHAPES))
    cfg = RewardConfig.preset("full")
    lines = scripted_rows(records, records, ScriptedPolicy(samples=samples, seed=0),
                          objects=lambda r: scene_objects(r, SHAPES) or (), cfg=cfg)  # fmt: skip
    log = write_trajectories(tmp / "trajectories.jsonl", lines)
    scenes = {r.id: int(dict(r.provenance.native_ids)["scene"]) for r in records}
    rendered = {i: render_scene(make_scene(i, seed=0, config=SHAPES)) for i in set(scenes.values())}
    return Setup({r.id: r for r in records}, {k: rendered[i] for k, i in scenes.items()}, lines, log, cfg, batch,
                 repeats, tmp)  # fmt: skip


def _median_seconds(fn: Callable[[], Any], repeats: int) -> tuple[float, float, Any]:
    """``(median wall seconds, median CPU seconds of this process, last result)`` after one warm-up run. CPU time
    is what the work costs on a machine shared with other jobs (wall time grows with their load)."""
    fn()
    wall, cpu, out = [], [], None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu), out


# --- engine rows -----------------------------------------------------------------------------------------------------
def score_row(s: Setup) -> Row:
    """``virl-train score`` (its library function) on the log file."""
    out = s.tmp / "scored.jsonl"

    def run() -> list[dict[str, Any]]:
        with out.open("wb") as fh:
            score_file(s.log, s.cfg, fh)
        return [orjson.loads(x) for x in out.read_bytes().splitlines()]

    wall, cpu, scored = _median_seconds(run, s.repeats)
    agree = sum(abs(x["total"] - x["logged_total"]) <= 1e-9 for x in scored)
    return Row.of("virl-train score", wall, cpu, agree, len(scored))


def scorer_row(s: Setup) -> Row:
    """``score_episode`` alone on the parsed log (no file I/O): the scorer every row shares, so what an adapter adds
    is its row minus this one."""
    trajectories = list(read_trajectories(s.log))

    def run() -> list[float]:
        return [score_episode(t.actions, t.answer, t.chain, t.gt_answer, image_size=t.image_size,
                              answer_type=t.answer_type, options=t.options, format_ok=t.format_ok, cfg=s.cfg).total
                for t in trajectories]  # fmt: skip

    wall, cpu, totals = _median_seconds(run, s.repeats)
    agree = sum(abs(t - x["reward"]["total"]) <= 1e-9 for t, x in zip(totals, s.lines, strict=True))
    return Row.of("score_episode alone (no I/O)", wall, cpu, agree, len(totals))


def _trl_batch(s: Setup, lines: list[dict[str, Any]]) -> tuple[list[CropToolEnv], list[list[dict[str, Any]]]]:
    """The environments and TRL completions of logged episodes, the crops made through the tool (the rollout)."""
    envs, completions = [], []
    for line in lines:
        rec = s.records[line["id"]]
        row = record_to_row(rec)
        env = CropToolEnv(CONVENTION, max_actions=64, max_pixels=224 * 224)
        env.reset(**{**row, "image_ref": row["image"], "image": s.images[rec.id]})  # a trl export row
        size = (rec.image.width, rec.image.height)
        messages: list[dict[str, Any]] = []
        for box in line["actions"]:
            args = from_pixels(box, CONVENTION, size, env._env.view_size(*size)).tolist()
            call = {"type": "function", "function": {"name": "crop", "arguments": {"bbox_2d": args}}}
            messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
            messages.append({"role": "tool", "name": "crop", "content": env.crop(args)})
        messages.append({"role": "assistant", "content": f"<answer>{line['answer']}</answer>"})
        envs.append(env)
        completions.append(messages)
    return envs, completions


def _trl_row(s: Setup, name: str, log: bool) -> Row:
    if not s.trl_batches:  # untimed: the rollout (shared by the TRL rows)
        s.trl_batches = [_trl_batch(s, s.lines[i: i + s.batch]) for i in range(0, len(s.lines), s.batch)]
    prepared = s.trl_batches

    def run() -> list[float]:
        funcs = reward_funcs(s.cfg, log_path=s.tmp / "trl.jsonl" if log else None)
        if log:
            (s.tmp / "trl.jsonl").unlink(missing_ok=True)
        totals: list[float] = []
        for envs, completions in prepared:
            kw = {"prompts": [None] * len(envs), "completions": completions, "completion_ids": None,
                  "environments": envs}
            values = [f(**kw) for f in funcs]
            totals += [a + f + r for a, f, r in zip(*values[:3], strict=True)]
        return totals

    wall, cpu, totals = _median_seconds(run, s.repeats)
    agree = sum(abs(t - x["reward"]["total"]) <= 1e-9 for t, x in zip(totals, s.lines, strict=True))
    return Row.of(name, wall, cpu, agree, len(totals))


def trl_row(s: Setup) -> Row:
    return _trl_row(s, "TRL reward_funcs (5 components)", log=False)


def trl_logged_row(s: Setup) -> Row:
    return _trl_row(s, "TRL reward_funcs + trajectory log", log=True)


def verl_row(s: Setup) -> Row:
    """verl's ``compute_score`` (``virl_train.interop.verl``) as verl's reward manager calls it: once per decoded
    response, with the row's ``ground_truth`` string of ``virl-data export --format verl`` (the crop settings of the
    TRL rows: up to 64 crops, 224² pixels). The response is the logged crops as Hermes ``<tool_call>`` blocks in the
    model's convention, then the answer (untimed: that is the rollout); timed: parsing the ground truth (cached per
    record, as a GRPO group shares it) and scoring the response."""
    settings = CropSettings(convention=CONVENTION, max_actions=64, max_pixels=224 * 224)
    truths = {rid: export_verl_row(record_to_row(rec), 0, "train", b"", settings)["reward_model"]["ground_truth"]
              for rid, rec in s.records.items()}
    responses = []
    for line in s.lines:
        rec = s.records[line["id"]]
        size = (rec.image.width, rec.image.height)
        calls = (orjson.dumps({"name": "crop", "arguments": {
            "bbox_2d": from_pixels(box, CONVENTION, size, settings.view_size(*size)).tolist()}}).decode()
            for box in line["actions"])
        responses.append("".join(f"<tool_call>{c}</tool_call>\n" for c in calls) + f"<answer>{line['answer']}</answer>")
    pairs = [(r, truths[x["id"]]) for r, x in zip(responses, s.lines, strict=True)]

    def run() -> list[float]:
        parse_ground_truth.cache_clear()
        return [compute_score("virl", r, gt)["score"] for r, gt in pairs]

    wall, cpu, totals = _median_seconds(run, s.repeats)
    agree = sum(abs(t - x["reward"]["total"]) <= 1e-9 for t, x in zip(totals, s.lines, strict=True))
    return Row.of("verl compute_score", wall, cpu, agree, len(totals))


ENGINES: list[Callable[[Setup], Row]] = [score_row, scorer_row, trl_row, trl_logged_row, verl_row]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--episodes", type=int, default=10_000)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--batch", type=int, default=64, help="completions per TRL reward call (B × G)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path, default=REPO / "docs" / "assets" / "bench_interop.json")
    args = p.parse_args()
    console = Console(width=120)
    with tempfile.TemporaryDirectory() as tmp:
        setup = make_setup(args.episodes, args.samples, args.batch, args.repeats, Path(tmp))
        rows = [engine(setup) for engine in ENGINES]
    base = rows[0].cpu_ms_per_completion
    load = os.getloadavg()[0]
    table = Table(title=f"reward cost per completion, {rows[0].n} logged episodes (median of {args.repeats}; "
                  f"{os.cpu_count()} CPUs, load {load:.1f})")
    for col in ("engine", "wall ms / completion", "CPU ms / completion", "CPU × score", "totals agree"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.engine, f"{r.ms_per_completion:.4f}", f"{r.cpu_ms_per_completion:.4f}",
                      f"{r.cpu_ms_per_completion / base:.2f}", f"{r.agree} / {r.n}")
    console.print(table)
    write_json({"episodes": rows[0].n, "samples": args.samples, "batch": args.batch, "repeats": args.repeats,
                "preset": "full", "convention": CONVENTION,
                "cpu_count": os.cpu_count(), "load_average_1min": load,
                "rows": [{"engine": r.engine, "ms_per_completion": r.ms_per_completion,
                          "cpu_ms_per_completion": r.cpu_ms_per_completion,
                          "cpu_ratio_to_score": r.cpu_ms_per_completion / base, "agree": r.agree, "n": r.n}
                         for r in rows]}, args.json)
    console.print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
