"""End-to-end runs of the data flow. ``run_demo`` chains every stage on the embedded shapes world:

    generate (shapes) → verify (checks) → stats (curate) → split (curate) → export (HF dataset folder)

and writes each stage's output under one folder, so a newcomer can see the whole flow in under a minute:

    DIR/images/shapes/seed*/*.png    rendered scenes (DIR/images is the image root)
    DIR/corpus/mined.parquet         the mined records
    DIR/corpus/verified.parquet      every record, accepted or rejected with reasons
    DIR/corpus/split.parquet         accepted records with train/val/test assigned (grouped by image)
    DIR/reports/stats.json, .png     statistics and their plot
    DIR/export/hf/                   an HF DatasetDict (``datasets.load_from_disk``), images embedded
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from virl_data import checks, corpus, curate
from virl_data import export as export_mod
from virl_data.miners.shapes import ShapesConfig, generate


def run_demo(
    out: str | Path,
    *,
    n: int = 400,
    seed: int = 0,
    image_size: int = 224,
    console: Console | None = None,
) -> dict[str, Path]:
    """Run generate → verify → stats → split → export on ``n`` shapes records under ``out``; return the paths."""
    console = console or Console()
    out = Path(out)
    images = out / "images"
    config = ShapesConfig(image_size=(image_size, image_size))

    records = list(generate(n, seed=seed, image_dir=images, config=config, progress=True))
    mined = corpus.write(records, out / "corpus" / "mined.parquet", image_root=images)

    verified_df = checks.verify(corpus.read(mined), checks.CheckConfig(), image_root=images, progress=True)
    verified = corpus.write(verified_df, out / "corpus" / "verified.parquet", image_root=images)

    stats = curate.stats(verified_df)
    curate.render_stats(stats, console)
    stats_json = corpus.write_json(curate.stats_to_dict(stats), out / "reports" / "stats.json")
    stats_png = out / "reports" / "stats.png"
    curate.plot_stats(stats, stats_png)

    split_df = curate.split(verified_df, seed=seed).collect()
    split = corpus.write(split_df, out / "corpus" / "split.parquet", image_root=images)

    hf_dir = out / "export" / "hf"
    result = export_mod.export(split_df, hf_dir, "hf", image_root=images, progress=True)
    console.print(export_mod.summary_table(result))
    return {
        "images": images,
        "mined corpus": mined,
        "verified corpus": verified,
        "split corpus": split,
        "stats report": stats_json,
        "stats plot": stats_png,
        "HF export": hf_dir,
    }
