"""``virl-data``: the command line of the data half. Each command parses options, calls one library function and
prints a summary. User errors (``VirlError``, unreadable paths, options out of range) print one line and exit with
code 2 (``virl_data.cli_boundary``); set ``VIRL_DEBUG=1`` to see their traceback. Anything else is a bug and keeps
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

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from virl_data.cli_boundary import OneLineErrors, err_console, user_errors
from virl_data.errors import ConfigError

app = typer.Typer(
    cls=OneLineErrors,
    no_args_is_help=True,
    add_completion=False,
    help="Mine, verify, curate and export visual rationale records (question + answer + image + ordered box chain).",
)
mine_app = typer.Typer(no_args_is_help=True, help="Turn a source dataset's own files into a rationale corpus.")
app.add_typer(mine_app, name="mine")

console = Console()


# --- shared option types ---------------------------------------------------------------------------------------------
InPath = Annotated[Path, typer.Argument(help="Corpus file (.parquet/.jsonl) or folder of .parquet files.")]
OutPath = Annotated[Path, typer.Option("--out", "-o", help="Output corpus file (.parquet or .jsonl).")]
ImageRoot = Annotated[
    Path | None,
    typer.Option(help="Folder the image paths are relative to (default: declared in the corpus, else its folder)."),
]


def _parse_ratios(text: str) -> dict[str, float]:
    ratios: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            ratios[name.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"--ratios: {part!r} is not NAME=FRACTION (e.g. train=0.8,val=0.1,test=0.1)") from None
        if not sep or not name.strip():
            raise ConfigError(f"--ratios: {part!r} is not NAME=FRACTION")
    return ratios


def _status_table(df: Any, title: str) -> Table:
    table = Table(title=title)
    table.add_column("status")
    table.add_column("records", justify="right")
    for status, n in df.group_by("status").len().sort("status").iter_rows():
        table.add_row(status, str(n))
    table.add_row("[bold]total[/]", f"[bold]{df.height}[/]")
    return table


# --- commands --------------------------------------------------------------------------------------------------------
@app.command()
@user_errors
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write everything under.")] = Path("virl_demo"),
    n: Annotated[int, typer.Option(help="Number of demo records (questions).", min=1)] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the shapes world and the split.")] = 0,
    image_size: Annotated[int, typer.Option(help="Side of the square demo images, pixels.", min=64)] = 224,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a previous demo in --out (only what the demo wrote).")
    ] = False,
) -> None:
    """Run the whole data flow on the embedded shapes world: generate → verify → stats → split → export (HF)."""
    from virl_data.pipeline import run_demo

    started = time.perf_counter()
    result = run_demo(out, n=n, seed=seed, image_size=image_size, console=console, overwrite=overwrite)
    table = Table(title=f"virl demo: {n} records in {time.perf_counter() - started:.1f}s")
    table.add_column("what")
    table.add_column("where")
    for what, path in result.items():
        table.add_row(what, str(path))
    console.print(table)


@app.command("run")
@user_errors
def run_cmd(
    pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML (see pipelines/*.yaml).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run folder (default: the YAML's `out`).")] = None,
    engine: Annotated[str, typer.Option(help="local (one process) or ray (Ray Data; needs the [ray] extra).")] = "local",
    address: Annotated[str | None, typer.Option(help="Ray cluster address (e.g. auto); default: a local instance.")]
    = None,
    num_cpus: Annotated[int | None, typer.Option(help="CPUs of the local Ray instance (default: all).", min=1)] = None,
    intermediate: Annotated[str | None, typer.Option(
        help="Intermediate corpora to write besides curated: mined,verified (default: the YAML's `intermediate`, "
             "else both under --engine local, none under --engine ray).")] = None,
) -> None:
    """Run a declarative pipeline: mine → verify → filters → dedup → split → exports, with a per-stage report."""
    from virl_data.pipeline import run_pipeline, stages_table

    if engine not in ("local", "ray"):
        raise ConfigError(f"--engine must be 'local' or 'ray', got {engine!r}")
    if engine == "local" and (address is not None or num_cpus is not None):
        raise ConfigError("--address and --num-cpus apply to --engine ray only")
    chosen = None if intermediate is None else [n.strip() for n in intermediate.split(",") if n.strip()]
    if engine == "ray":
        try:
            from virl_data.engine_ray import run_pipeline_ray
        except ImportError as exc:
            raise ConfigError(f"--engine ray needs Ray Data: pip install 'virl[ray]' ({exc})") from None
        report = run_pipeline_ray(pipeline, out=out, address=address, num_cpus=num_cpus, intermediate=chosen,
                                  console=console)
        if report.config["engine"].get("dashboard_url"):
            console.print(f"Ray dashboard: {report.config['engine']['dashboard_url']}")
    else:
        report = run_pipeline(pipeline, out=out, console=console, intermediate=chosen)
    console.print(stages_table(report))
    console.print(f"report → {report.report_path}")


@mine_app.command("shapes")
@user_errors
def mine_shapes(
    out: OutPath,
    images: Annotated[Path, typer.Option(help="Folder to render the images into (the corpus's image root).")],
    n: Annotated[int, typer.Option(help="Number of records.", min=1)] = 1000,
    seed: Annotated[int, typer.Option(help="World seed.")] = 0,
    image_size: Annotated[int, typer.Option(help="Side of the square images, pixels.", min=64)] = 224,
) -> None:
    """Generate the synthetic shapes world: coloured shapes, 1–3-look questions, exact box chains."""
    from virl_data import corpus
    from virl_data.miners.shapes import ShapesConfig, generate

    config = ShapesConfig(image_size=(image_size, image_size))
    records = list(generate(n, seed=seed, image_dir=images, config=config, progress=True))
    corpus.write(records, out, image_root=images)
    console.print(f"mined {len(records)} shapes records → {out} (images under {images})")


def _write_mined(records: Any, out: Path, images: Path | None, source: str) -> None:
    """Stream a miner's records into a corpus file, with a progress counter and a status summary."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from virl_data import corpus

    collected = []
    # transient and only on a terminal: an error (or the summary) must not follow a leftover spinner line
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err_console,
                  transient=True, disable=not err_console.is_terminal) as bar:
        task = bar.add_task(f"mining {source}: 0 records", total=None)
        for i, record in enumerate(records, 1):
            collected.append(record)
            if i % 1000 == 0:
                bar.update(task, description=f"mining {source}: {i} records")
    corpus.write(collected, out, image_root=images)
    rejected = sum(r.status.value == "rejected" for r in collected)
    console.print(
        f"mined {len(collected)} {source} records ({rejected} rejected while mining) → {out}"
        + (f" (images under {images})" if images else " (no image folder: image checks will be skipped)")
    )


Images = Annotated[Path | None, typer.Option(help="The source's image folder (sizes are read from it; optional).")]
Limit = Annotated[int | None, typer.Option(help="Stop after this many records.", min=1)]


@mine_app.command("gqa")
@user_errors
def mine_gqa(
    questions: Annotated[Path, typer.Option(help="GQA questions JSON (e.g. val_balanced_questions.json).")],
    scene_graphs: Annotated[Path, typer.Option(help="GQA scene graphs JSON (e.g. val_sceneGraphs.json).")],
    out: OutPath,
    images: Images = None,
    limit: Limit = None,
) -> None:
    """GQA: each question's semantic program, walked in order, gives the chain of scene-graph objects."""
    from virl_data.miners import gqa

    records = gqa.mine(questions=questions, scene_graphs=scene_graphs, images=images, limit=limit)
    _write_mined(records, out, images, "gqa")


@mine_app.command("vg")
@user_errors
def mine_vg(
    relationships: Annotated[Path, typer.Option(help="Visual Genome relationships.json.")],
    out: OutPath,
    attributes: Annotated[Path | None, typer.Option(help="Visual Genome attributes.json (colour questions).")] = None,
    image_data: Annotated[Path | None, typer.Option(help="Visual Genome image_data.json (sizes: no image files "
                                                         "needed).")] = None,
    images: Images = None,
    limit: Limit = None,
) -> None:
    """Visual Genome: templated relation and colour questions whose answers the scene graph fixes."""
    from virl_data.miners import vg

    records = vg.mine(relationships=relationships, attributes=attributes, image_data=image_data, images=images,
                      limit=limit)
    _write_mined(records, out, images, "vg")


@mine_app.command("coco")
@user_errors
def mine_coco(
    instances: Annotated[Path, typer.Option(help="COCO instances JSON (or the LLaVA caps_boxes JSONL).")],
    out: OutPath,
    captions: Annotated[Path | None, typer.Option(help="COCO captions JSON (image names and sizes).")] = None,
    images: Images = None,
    limit: Limit = None,
    small_frac: Annotated[float, typer.Option(help="Targets under this image-area fraction are 'small'.")] = 0.01,
) -> None:
    """COCO: counting, left/right and small-object questions that the boxes themselves answer."""
    from virl_data.miners import coco

    records = coco.mine(instances=instances, captions=captions, images=images, limit=limit, small_frac=small_frac)
    _write_mined(records, out, images, "coco")


@mine_app.command("refcoco")
@user_errors
def mine_refcoco(
    refs: Annotated[Path, typer.Option(help="RefCOCO/+/g expressions (REC JSONL or Ground-R1 JSONL, or a folder).")],
    out: OutPath,
    images: Images = None,
    variant: Annotated[str | None, typer.Option(help="refcoco | refcoco+ | refcocog (default: from the file).")] = None,
    answer: Annotated[str, typer.Option(help="box: the answer is the target box; phrase: its head phrase.")] = "box",
    limit: Limit = None,
) -> None:
    """RefCOCO / RefCOCO+ / RefCOCOg: each referring expression grounds its target box."""
    from virl_data.miners import refcoco

    records = refcoco.mine(refs=refs, images=images, variant=variant, answer=answer, limit=limit)
    _write_mined(records, out, images, "refcoco")


@mine_app.command("flickr30k")
@user_errors
def mine_flickr30k(
    sentences: Annotated[Path, typer.Option(help="Flickr30k Entities Sentences/ folder.")],
    out: OutPath,
    annotations: Annotated[Path | None, typer.Option(help="Flickr30k Entities Annotations/ folder (XML).")] = None,
    splits: Annotated[Path | None, typer.Option(help="Folder with train/val/test.txt.")] = None,
    images: Images = None,
    limit: Limit = None,
) -> None:
    """Flickr30k Entities: captions whose phrases link to boxes; the chain follows phrase order."""
    from virl_data.miners import flickr30k

    records = flickr30k.mine(sentences=sentences, annotations=annotations, images=images, splits=splits, limit=limit)
    _write_mined(records, out, images, "flickr30k")


@mine_app.command("viscot")
@user_errors
def mine_viscot(
    annotations: Annotated[Path, typer.Option(help="VisCoT benchmark JSON / benchmark_det / cot_train JSONL.")],
    out: OutPath,
    images: Images = None,
    sizes: Annotated[Path | None, typer.Option(help="Files giving image width/height (e.g. benchmark_det/).")] = None,
    limit: Limit = None,
) -> None:
    """Visual-CoT: question, answer and the evidence box (padded-square boxes converted and cross-checked)."""
    from virl_data.miners import viscot

    _write_mined(viscot.mine(annotations=annotations, images=images, sizes=sizes, limit=limit), out, images, "viscot")


@mine_app.command("treebench")
@user_errors
def mine_treebench(
    annotations: Annotated[Path, typer.Option(help="TreeBench records or V* Bench per-image JSON files.")],
    out: OutPath,
    images: Images = None,
    limit: Limit = None,
) -> None:
    """TreeBench / V* Bench: multiple-choice questions with their target boxes."""
    from virl_data.miners import treebench

    _write_mined(treebench.mine(annotations=annotations, images=images, limit=limit), out, images, "treebench")


@app.command()
@user_errors
def verify(
    src: InPath,
    out: OutPath,
    image_root: ImageRoot = None,
    outside_policy: Annotated[str, typer.Option(help="Boxes beyond the tolerance: 'reject' or 'clip'.")] = "reject",
    tolerance_px: Annotated[float, typer.Option(help="Boxes sticking out by at most this are clipped.")] = 2.0,
    min_box_area: Annotated[float, typer.Option(help="Smallest accepted box area, px².")] = 4.0,
    max_steps: Annotated[int, typer.Option(help="Longest accepted chain.")] = 8,
    duplicate_iou: Annotated[float, typer.Option(help="Two steps with IoU at or above this are duplicates.")] = 0.9,
    no_images: Annotated[bool, typer.Option("--no-images", help="Skip the image-file check.")] = False,
) -> None:
    """Run the named checks; every record is kept, with status accepted/rejected and its reasons."""
    from virl_data import checks, corpus

    df = corpus.read(src)
    cfg = checks.CheckConfig(
        outside_policy=outside_policy,
        tolerance_px=tolerance_px,
        min_box_area=min_box_area,
        max_steps=max_steps,
        duplicate_iou=duplicate_iou,
    )
    root = None if no_images else corpus.image_root(src, image_root)
    verified = checks.verify(df, cfg, image_root=root, progress=True)
    corpus.write(verified, out, image_root=root)
    console.print(_status_table(verified, f"verified {df.height} records → {out}"))
    reasons = checks.rejection_reasons(verified)
    if reasons.height:
        table = Table(title="rejection reasons")
        for col in reasons.columns:
            table.add_column(col)
        for row in reasons.iter_rows():
            table.add_row(*map(str, row))
        console.print(table)


@app.command()
@user_errors
def stats(
    src: InPath,
    plot: Annotated[Path | None, typer.Option(help="Also write a PNG of the distributions here.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the statistics as JSON here.")] = None,
) -> None:
    """Counts by source, status, chain length, question type and split; box-area and zoom-need distributions;
    rejection reasons."""
    from virl_data import corpus, curate
    from virl_data.corpus import write_json

    result = curate.stats(corpus.read(src))
    curate.render_stats(result, console)
    if plot:
        curate.plot_stats(result, plot)
        console.print(f"plot → {plot}")
    if json_out:
        write_json(curate.stats_to_dict(result), json_out)
        console.print(f"statistics → {json_out}")


@app.command("filter")
@user_errors
def filter_cmd(
    src: InPath,
    where: Annotated[
        str,
        typer.Option(
            help="A polars expression selecting the rows to KEEP; helper columns: n_steps, n_boxes, source, "
            "zoom_need, min_box_area_frac. Example: \"(pl.col('n_steps') >= 2) & (pl.col('status') == 'accepted')\""
        ),
    ],
    out: OutPath,
) -> None:
    """Keep the records matching a polars expression."""
    from virl_data import corpus, curate

    df = corpus.read(src)
    kept = curate.filter_records(df, where).collect()
    corpus.write(kept, out, image_root=corpus.image_root(src))
    console.print(f"kept {kept.height} of {df.height} records ({df.height - kept.height} filtered out) → {out}")


@app.command()
@user_errors
def dedup(
    src: InPath,
    out: OutPath,
    image_root: ImageRoot = None,
    removed: Annotated[Path | None, typer.Option(help="Write the removed duplicates here (.parquet/.jsonl).")] = None,
) -> None:
    """Remove duplicate records: same image content (sha1) and same normalized question; the first one is kept."""
    from virl_data import corpus, curate

    df = corpus.read(src)
    root = corpus.image_root(src, image_root)
    result = curate.dedup(df, image_root=root)
    kept_df, dropped = result.kept.collect(), result.removed
    corpus.write(kept_df, out, image_root=root)
    if removed is not None:
        dropped.write_parquet(removed) if removed.suffix == ".parquet" else dropped.write_ndjson(removed)
    console.print(f"kept {kept_df.height} of {df.height} records ({dropped.height} duplicates removed) → {out}")
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")


@app.command()
@user_errors
def split(
    src: InPath,
    out: OutPath,
    ratios: Annotated[str, typer.Option(help="Split fractions, NAME=FRACTION, comma separated.")] = (
        "train=0.8,val=0.1,test=0.1"
    ),
    seed: Annotated[int, typer.Option(help="Seed of the assignment.")] = 0,
) -> None:
    """Assign train/val/test splits: grouped by image, stratified by source, seeded and deterministic."""
    import polars as pl

    from virl_data import corpus, curate

    df = corpus.read(src)
    result = curate.split(df, _parse_ratios(ratios), seed=seed).collect()
    corpus.write(result, out, image_root=corpus.image_root(src))
    table = Table(title=f"split {df.height} records → {out}")
    table.add_column("split")
    table.add_column("records", justify="right")
    table.add_column("images", justify="right")
    counts = (
        result.group_by("split")
        .agg(records=pl.len(), images=pl.col("image").struct.field("path").n_unique())
        .sort("split", nulls_last=True)
    )
    for name, n_rec, n_img in counts.iter_rows():
        table.add_row(str(name) if name is not None else "(none: not accepted)", str(n_rec), str(n_img))
    console.print(table)


@app.command()
@user_errors
def export(
    src: InPath,
    fmt: Annotated[str, typer.Option("--format", "-f", help="hf | parquet | jsonl | coco")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (one file or dataset split per split).")],
    image_root: ImageRoot = None,
    status: Annotated[
        str, typer.Option(help="Statuses to export, comma separated, or 'all'.")
    ] = "accepted,reviewed",
) -> None:
    """Write per-split exports: an HF dataset folder (images embedded), Parquet, JSONL or COCO JSON."""
    from virl_data import corpus
    from virl_data import export as export_mod

    df = corpus.read(src)
    statuses = None if status.strip() == "all" else tuple(s.strip() for s in status.split(",") if s.strip())
    result = export_mod.export(
        df, out, fmt, image_root=corpus.image_root(src, image_root), statuses=statuses, progress=True
    )
    console.print(export_mod.summary_table(result))


@app.command("schema")
def schema_cmd() -> None:
    """Print the record schema (the on-disk corpus columns and their types)."""
    from virl_data.schema import polars_schema
    from virl_data.types import SCHEMA_VERSION

    table = Table(title=f"virl rationale record, schema v{SCHEMA_VERSION}")
    table.add_column("column")
    table.add_column("type")
    for name, dtype in polars_schema().items():
        table.add_row(name, str(dtype))
    console.print(table)


def _review_tools() -> None:
    """The review-tool commands live in their own modules (they import FiftyOne / Label Studio lazily)."""
    from virl_data.cli_fiftyone import app_command, fiftyone_app
    from virl_data.cli_labelstudio import labelstudio_app

    app.add_typer(fiftyone_app, name="fiftyone", help="Look at and fix chains in FiftyOne: push a corpus, pull reviews.")
    app.command("app")(app_command)
    app.add_typer(labelstudio_app, name="labelstudio", help="Human review in Label Studio: push tasks, pull annotations.")
    from virl_data.cli_queue import diff_command, queue_command

    app.command("queue")(queue_command)
    app.command("diff")(diff_command)


_review_tools()


def main() -> None:
    """Console-script entry point (the one-line error boundary is ``cli_boundary.OneLineErrors``)."""
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
