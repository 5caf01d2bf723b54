"""Read exported splits back as ``RationaleRecord``s: the trainer's view of the data, with no second schema.

Accepts what ``virl-data export`` writes:

- an HF dataset folder (``datasets.save_to_disk``: a ``DatasetDict`` with one split per name, or a single
  ``Dataset``); images are not decoded here (the environment opens them when it crops);
- a canonical corpus: a ``.parquet``/``.jsonl`` file or a folder of ``<split>.parquet`` files.

Example:
    >>> from virl_train.data import load_split   # doctest: +SKIP
    >>> records = load_split("virl_demo/export/hf", split="train")   # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from virl_data import corpus
from virl_data.review import effective
from virl_data.errors import CorpusReadError
from virl_data.schema import COLUMNS, record_from_row
from virl_data.types import RationaleRecord


def is_hf_dataset_dir(path: Path) -> bool:
    """True for a folder written by ``datasets``' ``save_to_disk`` (a Dataset or a DatasetDict)."""
    return path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "dataset_info.json").exists())


def available_splits(path: str | Path) -> list[str]:
    """The split names an export holds (HF folder, corpus folder or file)."""
    path = Path(path)
    if is_hf_dataset_dir(path):
        import datasets

        ds = datasets.load_from_disk(str(path))
        return sorted(ds.keys()) if isinstance(ds, datasets.DatasetDict) else ["all"]
    df = corpus.read(path)
    return sorted({s for s in df["split"].to_list() if s is not None})


def _load_hf(path: Path, split: str | None) -> list[RationaleRecord]:
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if split is None:
            if len(ds) != 1:
                raise CorpusReadError(f"{path}: holds splits {', '.join(sorted(ds))}; name one")
            split = next(iter(ds))
        if split not in ds:
            raise CorpusReadError(f"{path}: no split {split!r}; it holds {', '.join(sorted(ds))}")
        ds = ds[split]
    keep = [c for c in ds.column_names if c in COLUMNS and c != "image"] + ["image_ref"]
    return [record_from_row(row) for row in ds.select_columns(keep)]


def load_split(path: str | Path, split: str | None = None) -> list[RationaleRecord]:
    """Records of one split of an export (or all records when ``split`` is None and the export is not split).

    Reviewed records come back as a person last corrected them (``virl_data.review.effective``): the trainer sees
    the fixed chain and answer while the corpus keeps the mined original.
    """
    return [effective(r) for r in _load(Path(path), split)]


def _load(path: Path, split: str | None) -> list[RationaleRecord]:
    if is_hf_dataset_dir(path):
        return _load_hf(path, split)
    if path.is_dir() and split is not None and (path / f"{split}.parquet").exists():
        return corpus.read_records(path / f"{split}.parquet")
    records = corpus.read_records(path)
    if split is None:
        return records
    chosen = [r for r in records if r.split == split]
    if not chosen:
        found = sorted({r.split for r in records if r.split is not None})
        raise CorpusReadError(f"{path}: no records in split {split!r}; splits found: {', '.join(found) or 'none'}")
    return chosen
