"""``virl-data mine SOURCE``: turn a source dataset's own files into a rationale corpus, one command per miner."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from virl_data.cli.boundary import err_console, user_errors
from virl_data.cli.corpus import OutPath
from virl_data.core.errors import EmptyInputError
from virl_data.storage.paths import refuse_clashes

mine_app = typer.Typer(no_args_is_help=True, help="Turn a source dataset's own files into a rationale corpus.")
console = Console()


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
    from virl_data.miners.shapes import ShapesConfig, generate
    from virl_data.storage import corpus
    from virl_data.storage.locks import folder_lock

    refuse_clashes(outputs={"--out": out, "--images": images})
    config = ShapesConfig(image_size=(image_size, image_size))
    with folder_lock(images):  # two miners rendering into one folder would overwrite each other's images
        records = list(generate(n, seed=seed, image_dir=images, config=config, progress=True))
        corpus.write(records, out, image_root=images)
    console.print(f"mined {len(records)} shapes records → {out} (images under {images})")


def _write_mined(records: Any, out: Path, images: Path | None, source: str) -> None:
    """Stream a miner's records into a corpus file, with a progress counter and a status summary."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from virl_data.storage import corpus

    collected = []
    # transient and only on a terminal: an error (or the summary) must not follow a leftover spinner line
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err_console,
                  transient=True, disable=not err_console.is_terminal) as bar:
        task = bar.add_task(f"mining {source}: 0 records", total=None)
        for i, record in enumerate(records, 1):
            collected.append(record)
            if i % 1000 == 0:
                bar.update(task, description=f"mining {source}: {i} records")
    if not collected:  # every miner comes through here: an empty source never replaces a corpus
        raise EmptyInputError(f"mined 0 {source} records: the input holds no records the {source} miner reads"
                              + (f"; {out} left as it was" if out.exists() else "; nothing written"))
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

    refuse_clashes(inputs={"--questions": questions, "--scene-graphs": scene_graphs, "--images": images},
                   outputs={"--out": out})
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

    refuse_clashes(inputs={"--relationships": relationships, "--attributes": attributes, "--image-data": image_data,
                           "--images": images}, outputs={"--out": out})
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

    refuse_clashes(inputs={"--instances": instances, "--captions": captions, "--images": images},
                   outputs={"--out": out})
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

    refuse_clashes(inputs={"--refs": refs, "--images": images}, outputs={"--out": out})
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

    refuse_clashes(inputs={"--sentences": sentences, "--annotations": annotations, "--splits": splits,
                           "--images": images}, outputs={"--out": out})
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

    refuse_clashes(inputs={"--annotations": annotations, "--sizes": sizes, "--images": images}, outputs={"--out": out})
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

    refuse_clashes(inputs={"--annotations": annotations, "--images": images}, outputs={"--out": out})
    _write_mined(treebench.mine(annotations=annotations, images=images, limit=limit), out, images, "treebench")
