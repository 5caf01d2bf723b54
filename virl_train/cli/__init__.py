"""``virl-train``: the command line of the trainer half.

    virl-train data EXPORT [--split train]     what the trainer will read from an export
    virl-train score TRAJ.jsonl [--preset full] [-p KEY=VALUE]   score logged trajectories with the training reward
    virl-train show-config [--config C.yaml] [KEY=VALUE ...]     the resolved config (defaults + file + overrides)
    virl-train sft --config C.yaml --steps N [--out DIR] [--save-every K]   warm start on ground-truth trajectories
    virl-train train --config C.yaml [KEY=VALUE ...]            GRPO with the ViRL reward; resumes from out_dir
    virl-train eval --config C.yaml [--checkpoint DIR] [KEY=VALUE ...]   accuracy, grounding, illusion probe
    virl-train compare BEFORE/eval AFTER/eval [--json OUT]      two evals (same config and seed) side by side
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from virl_data.cli.boundary import OneLineErrors, user_errors
from virl_data.storage.paths import refuse_clashes

app = typer.Typer(cls=OneLineErrors, no_args_is_help=True, add_completion=False, help="Train VLMs against ground-truth visual rationales.")
console = Console()


@app.callback()
def _group() -> None:
    """Train VLMs against ground-truth visual rationales (ViRL)."""


@app.command()
@user_errors
def data(
    export: Annotated[Path, typer.Argument(help="An HF dataset folder or corpus written by `virl-data export`.")],
    split: Annotated[str | None, typer.Option(help="Split to read (default: all / the only one).")] = None,
) -> None:
    """Summarise the records the trainer would read from an export: counts, sources, chain lengths."""
    from virl_train.data import available_splits, load_split

    splits = [split] if split else available_splits(export) or [None]
    table = Table(title=f"trainer view of {export}")
    for col in ("split", "records", "sources", "chain lengths", "mean boxes/record"):
        table.add_column(col)
    for name in splits:
        records = load_split(export, None if name == "all" else name)
        sources = Counter(r.provenance.source for r in records)
        lengths = Counter(len(r.chain) for r in records)
        mean_boxes = sum(len(r.boxes) for r in records) / max(len(records), 1)
        table.add_row(
            str(name or "all"),
            str(len(records)),
            ", ".join(f"{k}: {v}" for k, v in sorted(sources.items())),
            ", ".join(f"{k}: {v}" for k, v in sorted(lengths.items())),
            f"{mean_boxes:.2f}",
        )
    console.print(table)


@app.command()
@user_errors
def score(
    trajectories: Annotated[
        Path, typer.Argument(help="A trajectories.jsonl of a train / eval run (format: virl_train.trajectories).")
    ],
    preset: Annotated[str, typer.Option(help="Reward preset: outcome | process | shaping | full.")] = "full",
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="Override a reward/matching parameter: KEY=VALUE.")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output JSONL (default: stdout).")] = None,
) -> None:
    """Score logged trajectories with the training reward: per-action labels, reward components, total; with a run's
    log, the totals it logged beside them (re-score under another --preset to see what changes)."""
    import sys

    import yaml

    from virl_data.core.errors import ConfigError
    from virl_data.storage.corpus import atomic_path
    from virl_train.rewards import RewardConfig
    from virl_train.score import score_file

    refuse_clashes(inputs={"TRAJECTORIES": trajectories}, outputs={"--out": out})
    params = {}
    for item in param or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--param expects KEY=VALUE, got {item!r}")
        params[key.strip()] = yaml.safe_load(value)
    cfg = RewardConfig.from_params(preset, params)
    if out is None:
        summary = score_file(trajectories, cfg, sys.stdout.buffer)
        Console(stderr=True).print(f"{summary.describe()} ({preset})", soft_wrap=True)
        return
    with atomic_path(out) as tmp, tmp.open("wb") as fh:
        summary = score_file(trajectories, cfg, fh)
    console.print(f"{summary.describe()} ({preset}) → {out}", soft_wrap=True)


ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config (configs/*.yaml).")]
Overrides = Annotated[list[str] | None, typer.Argument(help="Dotted overrides, e.g. run.max_steps=3 grpo.group_size=4.")]


@app.command("show-config")
@user_errors
def show_config(config: ConfigOpt = None, overrides: Overrides = None) -> None:
    """Print the resolved config as YAML (defaults, then the file, then the overrides)."""
    import yaml

    from virl_train.config import config_to_dict, load_config

    cfg = load_config(config, overrides or [])
    typer.echo(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), nl=False)


@app.command()
@user_errors
def sft(
    config: ConfigOpt = None,
    overrides: Overrides = None,
    steps: Annotated[int, typer.Option(help="Optimizer steps.", min=1)] = 300,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (default: optim.lr).")] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Reference episodes per step (default: grpo.batch_size x grpo.group_size).")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder (default: run.out_dir).")] = None,
    save_every: Annotated[
        int | None, typer.Option(min=1, help="Checkpoint every N steps (default: run.save_every), and at the end.")
    ] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Ignore checkpoints in OUT (start over).")] = False,
    sight_n: Annotated[int, typer.Option(help="Eval-split records for the 'can it see' probe (0 = skip).", min=0)] = 100,
    decoys: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of records whose reference crops are "
                                          "decorative (off the rationale, answer kept).")] = 0.0,
    decoy_kind: Annotated[str, typer.Option(help="Decorative crop kind: 'elsewhere' (moved off every rationale box), "
                                            "'whole' (the whole image), 'centre' (the image centre, whatever the "
                                            "question) or 'first' (only a chain's first step moved off, the later "
                                            "steps kept).")] = "elsewhere",
) -> None:
    """Supervised warm start: the ground-truth crop chain and answer of each train record, played through the crop
    environment (real crops fed back), learned by next-token loss. Checkpoints to OUT/checkpoints and resumes from
    the newest one like `train`. RL then starts from OUT/final. Then the "can it see" probe (virl_train.sight) on
    the eval split, written to OUT/sight.json."""
    from virl_train.config import load_config
    from virl_train.sft import sft as run_sft

    cfg = load_config(config, overrides or [])
    every = max(1, steps // 20)

    def progress(step: int, m: dict[str, float]) -> None:
        if step % every == 0 or step == steps:
            console.print(f"sft step {step}/{steps}  loss {m['loss']:.4f}  lr {m['lr']:.2e}  {m['time/wall_s']:.0f}s",
                          soft_wrap=True)

    result = run_sft(cfg, steps, lr=lr, batch_size=batch_size, out_dir=out, save_every=save_every, resume=not fresh,
                     callbacks=[progress], decoys=decoys, decoy_kind=decoy_kind)
    console.print(f"SFT done → {result / 'final'}; start RL from it with model.name_or_path={result / 'final'}")
    if sight_n and cfg.data.eval_split:
        from virl_data.core.errors import VirlError
        from virl_data.storage.corpus import write_json
        from virl_train.sight import sight_line, sight_of_checkpoint

        try:
            sight = sight_of_checkpoint(cfg, result / "final", cfg.data.eval_split, sight_n, seed=cfg.run.seed)
        except VirlError as exc:  # e.g. the export has no eval split: the SFT itself is done and saved
            console.print(f"can it see: skipped ({exc})", soft_wrap=True)
        else:
            write_json(sight, result / "sight.json")
            console.print(sight_line(sight), soft_wrap=True)


@app.command()
@user_errors
def train(
    config: ConfigOpt = None,
    overrides: Overrides = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Ignore checkpoints in run.out_dir (start over).")] = False,
) -> None:
    """Train with GRPO and the ViRL reward; resumes from the newest checkpoint in run.out_dir unless --fresh."""
    from virl_train.config import load_config
    from virl_train.train import is_main_process
    from virl_train.train import train as run_training

    cfg = load_config(config, overrides or [])

    main_process = is_main_process()

    def progress(step: int, m: dict[str, float]) -> None:
        if not main_process:
            return
        console.print(
            f"step {step}/{cfg.run.max_steps}  reward {m['reward/total']:+.3f}  acc {m['reward/accuracy']:.2f}  "
            f"rationale {m['reward/rationale']:.2f}  actions/ep {m['actions/actions_per_episode']:.2f}  "
            f"loss {m.get('loss', float('nan')):+.4f}  {m['time/step_s']:.1f}s",
            soft_wrap=True,
        )

    result = run_training(cfg, callbacks=[progress], resume=not fresh)
    if not main_process:
        return
    where = f" (resumed at step {result.resumed_from})" if result.resumed_from else ""
    console.print(f"trained {result.steps} steps{where} → {result.out_dir} (log.jsonl, tb/, checkpoints/, final/)")


@app.command("eval")
@user_errors
def eval_cmd(
    config: ConfigOpt = None,
    overrides: Overrides = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="A policy saved by training (RUN/final) or a run folder; default: model.name_or_path.")
    ] = None,
    split: Annotated[str | None, typer.Option(help="Split to evaluate (default: data.eval_split).")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Evaluate the first N records.")] = None,
    out: Annotated[Path | None, typer.Option(help="Report folder (default: RUN.out_dir/eval).")] = None,
    probe: Annotated[str, typer.Option(help="Illusion probe: random | full | none.")] = "random",
    sample: Annotated[bool, typer.Option("--sample", help="Sample (grpo.temperature) instead of greedy decoding.")] = False,
    sight: Annotated[bool, typer.Option(help="Also run the 'can it see' probe (every pixel constant): sight.json.")] = True,
) -> None:
    """Answer accuracy, grounding metrics and the illusion probe; writes eval.json, eval.png and the greedy episodes
    as trajectories.jsonl (virl-train score reads it)."""
    import dataclasses

    from virl_train.config import load_config
    from virl_train.trajectories import FILE_NAME as TRAJECTORIES

    cfg = load_config(config, overrides or [])
    folder = out or Path(cfg.run.out_dir) / "eval"
    refuse_clashes(inputs={"--config": config, "--checkpoint": checkpoint, "data.path": cfg.data.path},
                   outputs={f"{folder}/{f}": folder / f for f in ("eval.json", "eval.png", TRAJECTORIES, "sight.json")})
    from virl_train.data import ExampleSet
    from virl_train.eval import evaluate, render_report, write_report
    from virl_train.policy import load_policy

    if checkpoint is not None:
        path = checkpoint / "final" if (checkpoint / "final").is_dir() else checkpoint
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name_or_path=str(path)))
    name = split or cfg.data.eval_split or cfg.data.train_split
    examples = ExampleSet.load(cfg.data.path, name, limit=limit or cfg.data.limit)
    policy = load_policy(cfg.model, seed=cfg.run.seed)
    report = evaluate(
        policy, examples.records, examples.image, cfg, probe=probe != "none",
        probe_kind="random" if probe == "none" else probe, seed=cfg.run.seed, greedy=not sample,
    )
    console.print(render_report(report))
    json_path, png_path = write_report(report, folder)
    console.print(f"evaluated {len(examples)} records of split {name!r} → {json_path}, {png_path}, "
                  f"{json_path.parent / TRAJECTORIES}", soft_wrap=True)
    if sight:
        from virl_data.storage.corpus import write_json
        from virl_train.sight import probe_sight, sight_line

        seen = probe_sight(policy, examples.records, examples.image, cfg, seed=cfg.run.seed, greedy=not sample)
        write_json(seen, json_path.parent / "sight.json")
        console.print(sight_line(seen), soft_wrap=True)


@app.command("compare")
@user_errors
def compare_cmd(
    before: Annotated[Path, typer.Argument(help="eval.json (or its folder) of the run before the review.")],
    after: Annotated[Path, typer.Argument(help="eval.json (or its folder) of the retrain on the reviewed split.")],
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the comparison as JSON here.")] = None,
    allow_config_diff: Annotated[
        bool, typer.Option("--allow-config-diff", help="Compare runs whose configs differ (listed).")
    ] = False,
) -> None:
    """Accuracy, rationale IoU and the illusion probe before and after a review, from two `virl-train eval` reports
    of runs with the same config and seed."""
    from virl_data.storage.corpus import write_json
    from virl_train.compare import compare_reports, load_report, render

    refuse_clashes(inputs={"BEFORE": before, "AFTER": after}, outputs={"--json": json_out})
    result = compare_reports(load_report(before), load_report(after), allow_config_diff=allow_config_diff)
    console.print(render(result))
    if result.differences:
        console.print(f"config differences: {', '.join(result.differences)}", soft_wrap=True)
    if json_out is not None:
        write_json(result.to_dict(), json_out)


def main() -> None:
    """Console-script entry point."""
    app()
