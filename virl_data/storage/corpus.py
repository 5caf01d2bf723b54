"""Corpus storage: Parquet through polars (canonical), JSONL for interchange; atomic writes; image-root resolution.

A corpus is a frame with exactly ``schema.polars_schema()``. On disk:

- ``*.parquet``: canonical. Key-value metadata ``virl.schema_version`` and, when declared, ``virl.image_root``
  (stored relative to the file's folder when the root lies under it, so a corpus folder can be moved whole).
- ``*.jsonl``: one record per line, the same nested layout as ``schema.record_to_row``.
- a folder: every ``*.parquet`` file directly inside it, in name order (e.g. ``train.parquet``, ``val.parquet``).

Every write goes to a temporary file in the target folder and is renamed into place (``os.replace``), so readers
never see a half-written corpus; the file then gets the permissions the umask gives a new file (``shared_mode``:
0644 under umask 022), not ``tempfile``'s private 0600, so a team can share a corpus.

Reading a file of another schema version, with missing columns or columns of the wrong type, or a malformed file,
raises a ``CorpusReadError`` subclass whose message names the file and the problem.

Example:
    >>> import tempfile, pathlib
    >>> from virl_data.core import schema
    >>> from virl_data.storage import corpus
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "c.parquet"
    >>> _ = corpus.write(schema.empty_frame(), path, image_root=path.parent / "images")
    >>> corpus.read(path).height, corpus.image_root(path) == path.parent / "images"
    (0, True)
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import orjson
import polars as pl

from virl_data.core.errors import CorpusReadError, SchemaMismatchError
from virl_data.core.schema import (
    COLUMNS,
    STATUSES,
    arrow_schema,
    check_versions,
    frame_to_records,
    records_to_frame,
    rows_to_frame,
    validate_schema,
)
from virl_data.core.types import SCHEMA_VERSION, RationaleRecord

# Fields a JSONL line may leave out (interchange files written by other tools); everything else is required.
JSONL_DEFAULTS: dict[str, object] = {
    "answer_type": None,
    "question_type": None,
    "checks": [],
    "status": "mined",
    "reviews": [],
    "split": None,
}
# Columns that must hold a value in every row.
REQUIRED = ("id", "schema_version", "image", "question", "answer", "chain", "provenance", "status")
META_VERSION = "virl.schema_version"
META_IMAGE_ROOT = "virl.image_root"
FORMATS = ("parquet", "jsonl")


# --- atomic writes ---------------------------------------------------------------------------------------------------
def current_umask() -> int:
    """The process's umask. Read from ``/proc/self/status`` (Linux >= 4.7) without changing it; elsewhere
    ``os.umask`` is set and put back at once (the only portable way, racy only against a thread creating files in
    that instant)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def shared_mode(path: str | os.PathLike[str]) -> None:
    """Give ``path`` the mode a plain ``open`` / ``mkdir`` would have: ``0o666 & ~umask`` for a file,
    ``0o777 & ~umask`` for a folder (``tempfile`` creates them 0600 / 0700).

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> shared_mode(folder); oct(folder.stat().st_mode & 0o777) == oct(0o777 & ~current_umask())
    True
    """
    full = 0o777 if Path(path).is_dir() else 0o666
    os.chmod(path, full & ~current_umask())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, on error remove it.

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text()
    'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        shared_mode(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def format_of(path: str | os.PathLike[str]) -> str:
    """``parquet`` or ``jsonl`` from the file suffix (``.jsonl``/``.ndjson`` → jsonl); anything else is an error."""
    suffix = Path(path).suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    raise CorpusReadError(f"{path}: unknown corpus format {suffix or '(no suffix)'!r}; use .parquet or .jsonl")


# --- write -----------------------------------------------------------------------------------------------------------
def _as_frame(data: pl.DataFrame | pl.LazyFrame | Iterable[RationaleRecord]) -> pl.DataFrame:
    if isinstance(data, pl.LazyFrame):
        data = data.collect()
    if isinstance(data, pl.DataFrame):
        validate_schema(data.schema, "frame to write")
        return data.select(COLUMNS)
    return records_to_frame(data)


def _root_meta(path: Path, image_root: str | os.PathLike[str] | None) -> dict[str, str]:
    if image_root is None:
        return {}
    root = Path(image_root).resolve()
    base = path.parent.resolve()
    try:
        value = str(root.relative_to(base)) or "."
    except ValueError:
        value = str(root)
    return {META_IMAGE_ROOT: value}


def write(
    data: pl.DataFrame | pl.LazyFrame | Iterable[RationaleRecord],
    path: str | os.PathLike[str],
    *,
    image_root: str | os.PathLike[str] | None = None,
) -> Path:
    """Write a corpus atomically as Parquet or JSONL (by suffix). Returns the path written.

    ``image_root`` declares where the images' relative paths resolve; Parquet keeps it in its metadata, JSONL cannot
    (pass ``--image-root`` when reading JSONL, or it defaults to the file's folder).
    """
    path = Path(path)
    fmt = format_of(path)
    df = _as_frame(data)
    with atomic_path(path) as tmp:
        if fmt == "parquet":
            meta = {META_VERSION: str(SCHEMA_VERSION), **_root_meta(path, image_root)}
            df.write_parquet(tmp, metadata=meta, statistics=True)
        else:
            with open(tmp, "wb") as fh:
                for row in df.iter_rows(named=True):
                    fh.write(orjson.dumps(row))
                    fh.write(b"\n")
    return path


def write_json(obj: object, path: str | os.PathLike[str]) -> Path:
    """Write a JSON document atomically (indented, UTF-8); numpy scalars and dates are serialised by orjson."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    return path


def write_records(records: Iterable[RationaleRecord], path: str | os.PathLike[str], **kw: object) -> Path:
    """Records → corpus file (see ``write``)."""
    return write(records, path, **kw)  # type: ignore[arg-type]


# --- read ------------------------------------------------------------------------------------------------------------
def corpus_files(path: str | os.PathLike[str]) -> list[Path]:
    """The corpus files behind ``path``: the file itself, or the ``*.parquet`` files directly in a folder."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.parquet"))
        if not files:
            raise CorpusReadError(f"{path}: folder holds no *.parquet corpus files")
        return files
    if not path.exists():
        raise CorpusReadError(f"{path}: no such file or folder")
    format_of(path)
    return [path]


def _read_parquet(path: Path) -> pl.DataFrame:
    try:
        meta = pl.read_parquet_metadata(path)
        schema = pl.read_parquet_schema(path)
    except Exception as exc:  # polars raises several error types for bad files
        raise CorpusReadError(f"{path}: not a readable Parquet file ({type(exc).__name__}: {exc})") from None
    if META_VERSION in meta and meta[META_VERSION] != str(SCHEMA_VERSION):
        check_versions([int(meta[META_VERSION])], str(path))
    validate_schema(schema, str(path))
    try:
        df = pl.read_parquet(path, columns=list(COLUMNS))
    except Exception as exc:
        raise CorpusReadError(f"{path}: Parquet data cannot be read ({type(exc).__name__}: {exc})") from None
    check_versions(df["schema_version"].unique().to_list(), str(path))
    return df


def _read_jsonl(path: Path) -> pl.DataFrame:
    rows = []
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise CorpusReadError(f"{path}:{lineno}: malformed JSON ({exc})") from None
            if not isinstance(row, dict):
                raise CorpusReadError(f"{path}:{lineno}: expected a JSON object, found {type(row).__name__}")
            for key, default in JSONL_DEFAULTS.items():
                row.setdefault(key, default)
            missing = [c for c in COLUMNS if c not in row]
            if missing:
                raise SchemaMismatchError(f"{path}:{lineno}: missing fields: {', '.join(missing)}")
            rows.append(row)
    check_versions((r.get("schema_version") for r in rows), str(path))
    return _rows_to_frame(rows, path)


def _rows_to_frame(rows: list[dict], path: Path) -> pl.DataFrame:
    import pyarrow as pa

    arrow = arrow_schema()
    try:
        return rows_to_frame(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
        for field in arrow:  # only on the error path: find the column and line to name
            for lineno, row in enumerate(rows, 1):
                try:
                    pa.array([row[field.name]], type=field.type)
                except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
                    raise SchemaMismatchError(
                        f"{path}: record {lineno}: field {field.name!r} has the wrong type ({exc})"
                    ) from None
        raise SchemaMismatchError(f"{path}: a field has the wrong type ({exc})") from None


def _check_values(df: pl.DataFrame, where: Path) -> pl.DataFrame:
    bad_status = df.filter(~pl.col("status").is_in(STATUSES))
    if bad_status.height:
        raise SchemaMismatchError(
            f"{where}: unknown status {bad_status['status'][0]!r} (record {bad_status['id'][0]}); "
            f"expected one of {', '.join(STATUSES)}"
        )
    nulls = [c for c in REQUIRED if df[c].null_count()]
    if nulls:
        raise SchemaMismatchError(f"{where}: null values in required columns: {', '.join(nulls)}")
    return df


def read(path: str | os.PathLike[str]) -> pl.DataFrame:
    """Read a corpus file or folder into a frame with exactly ``schema.polars_schema()``."""
    frames = []
    for file in corpus_files(path):
        df = _read_parquet(file) if format_of(file) == "parquet" else _read_jsonl(file)
        frames.append(_check_values(df, file))
    return pl.concat(frames, how="vertical") if len(frames) > 1 else frames[0]


def scan(path: str | os.PathLike[str]) -> pl.LazyFrame:
    """A lazy scan of a Parquet corpus (schema and version checked up front), for inputs too big to read whole."""
    files = corpus_files(path)
    for file in files:
        if format_of(file) != "parquet":
            return read(path).lazy()
        validate_schema(pl.read_parquet_schema(file), str(file))
    return pl.scan_parquet(files).select(COLUMNS)


def read_records(path: str | os.PathLike[str]) -> list[RationaleRecord]:
    """Corpus file or folder → records."""
    return frame_to_records(read(path))


def declared_image_root(path: str | os.PathLike[str], override: str | os.PathLike[str] | None = None) -> Path | None:
    """The image root a corpus has: ``override`` if given, else the one declared in its Parquet metadata (relative
    to the file's folder), else None. A corpus mined without ``--images`` has none: ``virl-data verify`` then skips
    the image checks, as ``virl-data run`` does for a source without ``images`` (one rule for one input), and
    ``filter`` / ``split`` / pulls keep it without one."""
    if override is not None:
        return Path(override)
    first = corpus_files(path)[0]
    if format_of(first) == "parquet":
        declared = pl.read_parquet_metadata(first).get(META_IMAGE_ROOT)
        if declared:
            root = Path(declared)
            return root if root.is_absolute() else (first.parent / root)
    return None


def image_root(path: str | os.PathLike[str], override: str | os.PathLike[str] | None = None) -> Path:
    """Where a corpus's image paths resolve: ``override`` if given, else the root declared in the Parquet metadata
    (relative to the file's folder), else the corpus file's own folder."""
    declared = declared_image_root(path, override)
    return declared if declared is not None else corpus_files(path)[0].parent
