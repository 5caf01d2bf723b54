"""``virl-data verify | stats | filter | dedup | split | export``: the corpus commands, one library call each
(``virl_data.curation``, ``virl_data.export``), reading and writing corpus files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from virl_data.cli.boundary import user_errors
from virl_data.core.errors import ConfigError
from virl_data.storage.paths import refuse_clashes

console = Console()


# --- option types shared by the corpus and mine commands --------------------------------------------------------------
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
    from virl_data.curation import checks
    from virl_data.storage import corpus

    refuse_clashes(inputs={"SRC": src, "--image-root": image_root}, outputs={"--out": out})
    df = corpus.read(src)
    cfg = checks.CheckConfig(
        outside_policy=outside_policy,
        tolerance_px=tolerance_px,
        min_box_area=min_box_area,
        max_steps=max_steps,
        duplicate_iou=duplicate_iou,
    )
    root = None if no_images else corpus.declared_image_root(src, image_root)
    verified = checks.verify(df, cfg, image_root=root, progress=True)
    corpus.write(verified, out, image_root=root)
    console.print(_status_table(verified, f"verified {df.height} records → {out}"))
    for name, (n, reason) in checks.skipped_checks(verified).items():
        why = "--no-images" if no_images else f"{src} declares no image root (e.g. mined without --images, or " \
            "JSONL); pass --image-root DIR to check the images"
        console.print(f"[yellow]note:[/] {name} skipped on {n} records ({reason}): "
                      + (why if reason == "skipped: no image root" else reason), soft_wrap=True)
    reasons = checks.rejection_reasons(verified)
    if reasons.height:
        table = Table(title="rejection reasons")
        for col in reasons.columns:
            table.add_column(col)
        for row in reasons.iter_rows():
            table.add_row(*map(str, row))
        console.print(table)


@user_errors
def stats(
    src: InPath,
    plot: Annotated[Path | None, typer.Option(help="Also write a PNG of the distributions here.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the statistics as JSON here.")] = None,
) -> None:
    """Counts by source, status, chain length, question type and split; box-area and zoom-need distributions;
    rejection reasons."""
    from virl_data.curation import curate
    from virl_data.storage import corpus
    from virl_data.storage.corpus import write_json

    refuse_clashes(inputs={"SRC": src}, outputs={"--plot": plot, "--json": json_out})
    result = curate.stats(corpus.read(src))
    curate.render_stats(result, console)
    if plot:
        curate.plot_stats(result, plot)
        console.print(f"plot → {plot}")
    if json_out:
        write_json(curate.stats_to_dict(result), json_out)
        console.print(f"statistics → {json_out}")


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
    from virl_data.curation import curate
    from virl_data.storage import corpus

    refuse_clashes(inputs={"SRC": src}, outputs={"--out": out})
    df = corpus.read(src)
    kept = curate.filter_records(df, where).collect()
    corpus.write(kept, out, image_root=corpus.declared_image_root(src))
    console.print(f"kept {kept.height} of {df.height} records ({df.height - kept.height} filtered out) → {out}")


@user_errors
def dedup(
    src: InPath,
    out: OutPath,
    image_root: ImageRoot = None,
    removed: Annotated[Path | None, typer.Option(help="Write the removed duplicates here (.parquet/.jsonl).")] = None,
) -> None:
    """Remove duplicate records: same image content (sha1) and same normalized question; the first one is kept."""
    from virl_data.curation import curate
    from virl_data.storage import corpus

    refuse_clashes(inputs={"SRC": src, "--image-root": image_root}, outputs={"--out": out, "--removed": removed})
    df = corpus.read(src)
    root = corpus.declared_image_root(src, image_root)
    result = curate.dedup(df, image_root=root)
    kept_df, dropped = result.kept.collect(), result.removed
    corpus.write(kept_df, out, image_root=root)
    if removed is not None:
        with corpus.atomic_path(removed) as tmp:  # like every other output: a reader never sees half a file
            dropped.write_parquet(tmp) if removed.suffix == ".parquet" else dropped.write_ndjson(tmp)
    console.print(f"kept {kept_df.height} of {df.height} records ({dropped.height} duplicates removed) → {out}")
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")


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

    from virl_data.curation import curate
    from virl_data.storage import corpus

    refuse_clashes(inputs={"SRC": src}, outputs={"--out": out})
    df = corpus.read(src)
    result = curate.split(df, _parse_ratios(ratios), seed=seed).collect()
    corpus.write(result, out, image_root=corpus.declared_image_root(src))
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


@user_errors
def export(
    src: InPath,
    fmt: Annotated[str, typer.Option("--format", "-f", help="hf | parquet | jsonl | coco | trl | verl")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (one file or dataset split per split).")],
    image_root: ImageRoot = None,
    status: Annotated[
        str, typer.Option(help="Statuses to export, comma separated, or 'all'.")
    ] = "accepted,reviewed",
    family: Annotated[
        str, typer.Option(help="verl only: the model family whose box convention the crop tool speaks.")
    ] = "qwen2_5_vl",
) -> None:
    """Write per-split exports: an HF dataset folder (images embedded), Parquet, JSONL, COCO JSON or verl Parquet."""
    from virl_data import export as export_mod
    from virl_data.storage import corpus

    refuse_clashes(inputs={"SRC": src, "--image-root": image_root}, replaced={"--out": out})
    df = corpus.read(src)
    statuses = None if status.strip() == "all" else tuple(s.strip() for s in status.split(",") if s.strip())
    result = export_mod.export(
        df, out, fmt, image_root=corpus.image_root(src, image_root), statuses=statuses, progress=True,
        options={"family": family} if fmt == "verl" else None,
    )
    console.print(export_mod.summary_table(result))
