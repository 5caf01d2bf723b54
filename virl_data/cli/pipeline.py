"""``virl-data demo | run | schema``: whole pipelines (the demo world, a pipeline YAML on the local or the Ray
engine) and the record schema."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from virl_data.cli.boundary import user_errors
from virl_data.core.errors import ConfigError

console = Console()


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
    from virl_data.engines.pipeline import run_demo

    started = time.perf_counter()
    result = run_demo(out, n=n, seed=seed, image_size=image_size, console=console, overwrite=overwrite)
    table = Table(title=f"virl demo: {n} records in {time.perf_counter() - started:.1f}s")
    table.add_column("what")
    table.add_column("where")
    for what, path in result.items():
        table.add_row(what, str(path))
    console.print(table)


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
    from virl_data.engines.pipeline import check_run_paths, load_pipeline, run_pipeline, stages_table
    from virl_data.storage.locks import folder_lock

    if engine not in ("local", "ray"):
        raise ConfigError(f"--engine must be 'local' or 'ray', got {engine!r}")
    cfg = load_pipeline(pipeline)
    check_run_paths(cfg, out, pipeline)
    if engine == "local" and (address is not None or num_cpus is not None):
        raise ConfigError("--address and --num-cpus apply to --engine ray only")
    chosen = None if intermediate is None else [n.strip() for n in intermediate.split(",") if n.strip()]
    with folder_lock(out if out is not None else cfg.out):  # one run per run folder, whatever the engine
        if engine == "ray":
            try:
                from virl_data.engines.ray import run_pipeline_ray
            except ImportError as exc:
                raise ConfigError(f"--engine ray needs Ray Data: pip install 'virl[ray]' ({exc})") from None
            report = run_pipeline_ray(cfg, out=out, address=address, num_cpus=num_cpus, intermediate=chosen,
                                      console=console)
            if report.config["engine"].get("dashboard_url"):
                console.print(f"Ray dashboard: {report.config['engine']['dashboard_url']}")
        else:
            report = run_pipeline(cfg, out=out, console=console, intermediate=chosen)
    console.print(stages_table(report))
    console.print(f"report → {report.report_path}")


def schema_cmd() -> None:
    """Print the record schema (the on-disk corpus columns and their types)."""
    from virl_data.core.schema import polars_schema
    from virl_data.core.types import SCHEMA_VERSION

    table = Table(title=f"virl rationale record, schema v{SCHEMA_VERSION}")
    table.add_column("column")
    table.add_column("type")
    for name, dtype in polars_schema().items():
        table.add_row(name, str(dtype))
    console.print(table)
