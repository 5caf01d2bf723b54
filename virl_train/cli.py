"""``virl-train``: the command line of the trainer half.

    virl-train data EXPORT [--split train]     what the trainer will read from an export
    virl-train score TRAJ.jsonl [--preset full] [-p KEY=VALUE]   score logged trajectories with the training reward
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from virl_data.cli import user_errors

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Train VLMs against ground-truth visual rationales.")
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
    trajectories: Annotated[Path, typer.Argument(help="JSONL of logged trajectories (format: virl_train.score).")],
    preset: Annotated[str, typer.Option(help="Reward preset: outcome | process | shaping | full.")] = "full",
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="Override a reward/matching parameter: KEY=VALUE.")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output JSONL (default: stdout).")] = None,
) -> None:
    """Score logged trajectories with the training reward: per-action labels, reward components, total."""
    import sys

    import yaml

    from virl_data.corpus import atomic_path
    from virl_data.errors import ConfigError
    from virl_train.rewards import RewardConfig
    from virl_train.score import score_file

    params = {}
    for item in param or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--param expects KEY=VALUE, got {item!r}")
        params[key.strip()] = yaml.safe_load(value)
    cfg = RewardConfig.from_params(preset, params)
    if out is None:
        score_file(trajectories, cfg, sys.stdout.buffer)
        return
    with atomic_path(out) as tmp, tmp.open("wb") as fh:
        n = score_file(trajectories, cfg, fh)
    console.print(f"scored {n} trajectories ({preset}) → {out}")


def main() -> None:
    """Console-script entry point."""
    app()
