"""``virl-data``: the command line of the data half. Each command parses options, calls one library function and
prints a summary. User errors (``VirlError``, unreadable paths, options out of range) print one line and exit with
code 2 (``virl_data.cli.boundary``); set ``VIRL_DEBUG=1`` to see their traceback. Anything else is a bug and keeps
its traceback.

    virl-data demo --out DIR
    virl-data mine shapes --out CORPUS.parquet --images DIR
    virl-data verify IN --out OUT [--image-root DIR]
    virl-data stats IN [--plot stats.png] [--json stats.json]
    virl-data filter IN --where "pl.col('n_steps') >= 2" --out OUT
    virl-data dedup IN --out OUT
    virl-data split IN --out OUT [--ratios train=0.8,val=0.1,test=0.1] [--seed 0]
    virl-data export IN --format hf|parquet|jsonl|coco --out DIR
    virl-data run pipelines/NAME.yaml [--out DIR] [--intermediate mined,verified]
                                      [--engine ray [--address ADDR] [--num-cpus N]]
    virl-data schema
    virl-data fiftyone push CORPUS --dataset NAME | pull NAME --corpus CORPUS --out OUT
    virl-data app CORPUS | --dataset NAME [--remote]
    virl-data labelstudio push CORPUS --project TITLE | pull TITLE --corpus CORPUS --out OUT
    virl-data queue TRAJECTORIES --corpus CORPUS [--top N] [--to fiftyone|labelstudio]
    virl-data diff BEFORE AFTER [--queue queue.jsonl]
"""

from __future__ import annotations

import typer

from virl_data.cli import corpus, fiftyone, labelstudio, mine, pipeline, queue
from virl_data.cli.boundary import OneLineErrors

app = typer.Typer(
    cls=OneLineErrors,
    no_args_is_help=True,
    add_completion=False,
    help="Mine, verify, curate and export visual rationale records (question + answer + image + ordered box chain).",
)

# One module per command group; this table is the whole command line (the review tools import FiftyOne and
# Label Studio only when their commands run).
COMMANDS = {
    "demo": pipeline.demo, "run": pipeline.run_cmd, "verify": corpus.verify, "stats": corpus.stats,
    "filter": corpus.filter_cmd, "dedup": corpus.dedup, "split": corpus.split, "export": corpus.export,
    "schema": pipeline.schema_cmd, "app": fiftyone.app_command, "queue": queue.queue_command,
    "diff": queue.diff_command,
}  # fmt: skip
GROUPS = {
    "mine": (mine.mine_app, "Turn a source dataset's own files into a rationale corpus."),
    "fiftyone": (fiftyone.fiftyone_app, "Look at and fix chains in FiftyOne: push a corpus, pull reviews."),
    "labelstudio": (labelstudio.labelstudio_app, "Human review in Label Studio: push tasks, pull annotations."),
}
for name, command in COMMANDS.items():
    app.command(name)(command)
for name, (group, text) in GROUPS.items():
    app.add_typer(group, name=name, help=text)


def main() -> None:
    """Console-script entry point (the one-line error boundary is ``boundary.OneLineErrors``)."""
    app()
