"""``virl-data fiftyone push|pull`` and ``virl-data app``: a corpus in FiftyOne and review results back.

    virl-data fiftyone push CORPUS --dataset NAME [--overwrite] [--image-root DIR]
    virl-data fiftyone pull NAME --corpus CORPUS --out OUT [--reviewer WHO] [--report report.json]
    virl-data app CORPUS [--dataset NAME] [--remote] [--port 5151]     (push, then open the App)
    virl-data app --dataset NAME [--remote]                            (open an existing dataset)

``fiftyone_app`` (push, pull) and ``app_command`` are wired into ``virl_data.cli``. FiftyOne is imported only when a
command runs, so ``virl-data --help`` stays fast and works without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from virl_data.cli.boundary import user_errors
from virl_data.cli.review import write_pulled
from virl_data.core.errors import ConfigError
from virl_data.storage.paths import refuse_clashes

fiftyone_app = typer.Typer(
    no_args_is_help=True,
    help="Look at a corpus in FiftyOne (chains as ordered boxes) and pull reviewers' tags and box edits back.",
)
console = Console()
CorpusArg = Annotated[Path, typer.Argument(help="Corpus file (.parquet/.jsonl) or folder of .parquet files.")]
ImageRootOpt = Annotated[
    Path | None,
    typer.Option(help="Folder the image paths are relative to (default: declared in the corpus, else its folder)."),
]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace a FiftyOne dataset of the same name.")]


def _push(src: Path, dataset: str, image_root: Path | None, overwrite: bool) -> None:
    from virl_data.integrations import fiftyone as fo_int
    from virl_data.storage import corpus

    records = corpus.read_records(src)
    root = corpus.image_root(src, image_root)
    result = fo_int.push(records, dataset, image_root=root, overwrite=overwrite, info={"corpus": str(src.resolve())})
    console.print(
        f"pushed {result.samples} records → FiftyOne dataset {result.dataset!r} in {result.seconds:.1f}s; "
        f"saved views: {', '.join(result.views)}"
    )


@fiftyone_app.command("push")
@user_errors
def push(
    src: CorpusArg,
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Name of the FiftyOne dataset to create.")],
    image_root: ImageRootOpt = None,
    overwrite: Overwrite = False,
) -> None:
    """Write a corpus to a FiftyOne dataset: chains as numbered Detections with an `order` attribute, a line
    through the step centres, record fields and tags, and saved curator views."""
    _push(src, dataset, image_root, overwrite)
    console.print(f"open it: virl-data app --dataset {dataset} [--remote]")


@fiftyone_app.command("pull")
@user_errors
def pull(
    dataset: Annotated[str, typer.Argument(help="Name of the FiftyOne dataset holding the reviews.")],
    src: Annotated[Path, typer.Option("--corpus", "-c", help="The corpus the dataset was pushed from.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output corpus: the input with review results merged.")],
    reviewer: Annotated[str | None, typer.Option(help="Who reviewed (default: $USER, else 'fiftyone').")] = None,
    report: Annotated[Path | None, typer.Option(help="Also write the merge report as JSON here.")] = None,
) -> None:
    """Merge tags (`reject`, `ok`) and edited, deleted or reordered boxes back into the corpus as reviews
    (append-only, matched by record id; pulling twice changes nothing)."""
    refuse_clashes(inputs={"--corpus": src}, outputs={"--out": out, "--report": report})
    from virl_data.integrations import fiftyone as fo_int
    from virl_data.storage import corpus

    records = corpus.read_records(src)
    merged, merge_report = fo_int.pull(dataset, records, reviewer=reviewer)
    write_pulled(merged, merge_report, src, out, report, console)


def app_command(
    src: Annotated[Path | None, typer.Argument(help="Corpus to push and open (omit with --dataset).")] = None,
    dataset: Annotated[
        str | None, typer.Option("--dataset", "-d", help="Dataset to open (with CORPUS: the name to push it to).")
    ] = None,
    remote: Annotated[bool, typer.Option("--remote", help="Headless: open no browser, print the URL.")] = False,
    port: Annotated[int, typer.Option(help="App server port.")] = 5151,
    address: Annotated[str, typer.Option(help="Address the App server binds to.")] = "127.0.0.1",
    image_root: ImageRootOpt = None,
    overwrite: Overwrite = False,
    wait: Annotated[bool, typer.Option(help="Keep serving until Ctrl-C (--no-wait: return at once).")] = True,
) -> None:
    """Open the FiftyOne App on a corpus (pushed to dataset `virl-<file stem>` unless --dataset names one) or on an
    existing dataset; prints the URL. Ctrl-C stops the App server."""
    from virl_data.integrations import fiftyone as fo_int

    if src is None and dataset is None:
        raise ConfigError("give a CORPUS to open, or --dataset NAME of an existing FiftyOne dataset")
    name = dataset or f"virl-{src.stem}"  # type: ignore[union-attr]
    if src is not None:
        _push(src, name, image_root, overwrite)
    session, url = fo_int.launch(name, remote=remote, port=port, address=address)
    console.print(f"FiftyOne App: {url}  (saved views in the view bar; Ctrl-C to stop)")
    if not wait:
        return
    try:
        session.wait(-1 if remote else 3)
    except KeyboardInterrupt:
        pass
    finally:
        fo_int.stop_app(port)


app_command = user_errors(app_command)

__all__ = ["app_command", "fiftyone_app", "pull", "push"]
