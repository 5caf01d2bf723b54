"""``virl-data labelstudio push|pull``: a corpus as Label Studio tasks, and the annotations back as reviews.

    virl-data labelstudio push CORPUS --project TITLE [--template review_chain|draw_chain]
                               [--image-root DIR] [--document-root DIR | --image-url-prefix URL]
    virl-data labelstudio pull TITLE --corpus CORPUS --out OUT [--report report.json]

The server comes from ``--url`` / ``--api-key`` or ``LABEL_STUDIO_URL`` / ``LABEL_STUDIO_API_KEY`` (prefer the
environment: a key on the command line shows in the process list). ``labelstudio_app`` is wired into
``virl_data.cli``; the SDK is imported only when a command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from virl_data.cli.boundary import user_errors
from virl_data.cli.review import write_pulled
from virl_data.storage.paths import refuse_clashes

labelstudio_app = typer.Typer(
    no_args_is_help=True,
    help="Review chains in Label Studio (pre-drawn, numbered boxes) and pull the annotations back as reviews.",
)
console = Console()
UrlOpt = Annotated[str | None, typer.Option("--url", help="Label Studio URL (default: $LABEL_STUDIO_URL).")]
KeyOpt = Annotated[
    str | None, typer.Option("--api-key", help="API token (default: $LABEL_STUDIO_API_KEY).", show_default=False)
]


@labelstudio_app.command("push")
@user_errors
def push(
    src: Annotated[Path, typer.Argument(help="Corpus file (.parquet/.jsonl) or folder of .parquet files.")],
    project: Annotated[str, typer.Option("--project", "-p", help="Project title: created when missing, else reused.")],
    template: Annotated[
        str, typer.Option(help="review_chain (chain pre-drawn), draw_chain (from scratch), or a .xml file.")
    ] = "review_chain",
    image_root: Annotated[
        Path | None, typer.Option(help="Folder the image paths are relative to (default: declared in the corpus).")
    ] = None,
    document_root: Annotated[
        Path | None,
        typer.Option(help="The server's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT (default: that env var)."),
    ] = None,
    image_url_prefix: Annotated[
        str | None, typer.Option(help="Serve images from URL/<image path> instead of local files.")
    ] = None,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Import a corpus as tasks (the chain as numbered-box predictions); records already in the project are skipped."""
    from virl_data.integrations import labelstudio as ls
    from virl_data.storage import corpus

    records = corpus.read_records(src)
    root = None if image_url_prefix else corpus.image_root(src, image_root)
    result = ls.push(records, project, template=template, image_root=root, document_root=document_root,
                     image_url_prefix=image_url_prefix, url=url, api_key=api_key)
    verb = "created" if result.created else "reused"
    console.print(
        f"{verb} project {result.project!r} (id {result.project_id}, template {result.template}): imported "
        f"{result.imported} tasks, {result.existing} already there, {len(result.skipped)} skipped "
        f"in {result.seconds:.1f}s",
        soft_wrap=True,
    )
    for rid, why in result.skipped[:5]:
        console.print(f"  skipped {rid}: {why}", highlight=False, soft_wrap=True)


@labelstudio_app.command("pull")
@user_errors
def pull(
    project: Annotated[str, typer.Argument(help="Title of the Label Studio project holding the annotations.")],
    src: Annotated[Path, typer.Option("--corpus", "-c", help="The corpus the project was pushed from.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output corpus: the input with the reviews merged.")],
    report: Annotated[Path | None, typer.Option(help="Also write the merge report as JSON here.")] = None,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Merge annotations (verdicts, moved/deleted/added/renumbered boxes, corrected answers) into the corpus as
    reviews: append-only, matched by record id, who and when kept; pulling twice changes nothing."""
    refuse_clashes(inputs={"--corpus": src}, outputs={"--out": out, "--report": report})
    from virl_data.integrations import labelstudio as ls
    from virl_data.storage import corpus

    records = corpus.read_records(src)
    merged, merge_report = ls.pull(project, records, url=url, api_key=api_key)
    write_pulled(merged, merge_report, src, out, report, console)


__all__ = ["labelstudio_app", "pull", "push"]
