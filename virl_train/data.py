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

from PIL import Image

from virl_data.storage import corpus
from virl_data.review.merge import effective
from virl_data.core.errors import CorpusReadError, VirlError
from virl_data.core.schema import COLUMNS, record_from_row
from virl_data.core.types import RationaleRecord


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


def _hf_split(path: Path, split: str | None):  # -> datasets.Dataset
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
    return ds


def _load_hf(path: Path, split: str | None) -> list[RationaleRecord]:
    ds = _hf_split(path, split)
    keep = [c for c in ds.column_names if c in COLUMNS and c != "image"] + ["image_ref"]
    return [record_from_row(row) for row in ds.select_columns(keep)]


def load_split(path: str | Path, split: str | None = None) -> list[RationaleRecord]:
    """Records of one split of an export (or all records when ``split`` is None and the export is not split).

    Reviewed records come back as a person last corrected them (``virl_data.review.merge.effective``): the trainer sees
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


class ImageLoadError(VirlError):
    """An image of a training/eval record could not be opened."""


class ExampleSet:
    """The records of one split and their ORIGINAL images, opened on demand.

    Images come from the HF export's embedded ``image`` column, or, for Parquet/JSONL corpora, from
    ``image_root / record.image.path`` (``image_root`` defaults to the corpus's declared root). ``image(i)`` raises
    ``ImageLoadError`` naming the record and the cause; a record whose image size disagrees with the record's width
    and height is an error too (its boxes would be wrong).

    >>> examples = ExampleSet.load("virl_demo/export/hf", "train")   # doctest: +SKIP
    >>> examples[0].question, examples.image(0).size                 # doctest: +SKIP
    """

    def __init__(self, records: list[RationaleRecord], hf_split=None, image_root: Path | None = None) -> None:
        self.records, self._hf, self._root = records, hf_split, image_root

    @classmethod
    def load(
        cls, path: str | Path, split: str | None = None, *, limit: int | None = None, image_root: str | Path | None = None
    ) -> ExampleSet:
        """Load a split; ``limit`` keeps the first N records. A split with no records, or records without a
        rationale chain, is a ``CorpusReadError``."""
        path = Path(path)
        records = load_split(path, split)[:limit]
        if not records:
            raise CorpusReadError(f"{path}: split {split!r} has no records")
        bare = [r.id for r in records if not r.chain or not any(step.boxes for step in r.chain)]
        if bare:
            raise CorpusReadError(
                f"{path}: {len(bare)} of {len(records)} records have no rationale boxes (first: {bare[0]}); "
                "the trainer needs ground-truth chains (filter them out with virl-data filter)"
            )
        if is_hf_dataset_dir(path):
            hf = _hf_split(path, split).select_columns(["image"])
            return cls(records, hf_split=hf, image_root=Path(image_root) if image_root else None)
        root = Path(image_root) if image_root else corpus.image_root(path)
        return cls(records, image_root=root)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> RationaleRecord:
        return self.records[i]

    def image(self, i: int) -> Image.Image:
        """The original RGB image of record ``i``."""
        rec = self.records[i]
        try:
            if self._hf is not None and self._root is None:
                img = self._hf[i]["image"]
                if img is None:
                    raise OSError("the export holds no image for it (exported with missing_images=null)")
            else:
                assert self._root is not None
                img = Image.open(self._root / rec.image.path)
            img.load()
        except (OSError, ValueError) as exc:
            raise ImageLoadError(f"record {rec.id}: cannot load image {rec.image.path!r}: {exc}") from None
        if img.size != (rec.image.width, rec.image.height):
            raise ImageLoadError(
                f"record {rec.id}: image {rec.image.path!r} is {img.size[0]}x{img.size[1]}, "
                f"the record says {rec.image.width}x{rec.image.height}"
            )
        return img if img.mode == "RGB" else img.convert("RGB")
