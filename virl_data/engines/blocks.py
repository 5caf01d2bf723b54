"""Sources cut into blocks that mine independently: what a distributed engine needs to mine in parallel.

A miner with a global index (GQA's scene graphs keyed by image, VG's attributes and sizes keyed by image, COCO's
annotations, images block and categories) cannot simply be run on a slice of its input: each slice needs its part
of the index. ``plan_blocks`` reads the source once and cuts it into blocks of about ``block_size`` items, each a
``Block`` whose orjson ``payload`` (bytes travel through any engine's object store) says what to mine.
``mine_block`` turns one payload into the canonical frame of its records, with the miner's own per-item function
(``gqa.mine_question``, ``vg.mine_image``), so a block gives exactly the records the whole-file miner would.

GQA, the largest source (1.4 GB of questions, 0.4 GB of scene graphs), is never whole in memory, and the planner
parses almost none of it: it finds where each entry of both files lies (``jsonspans``, a vectorised scan), writes
the scene graphs' texts to a SQLite index in ``workdir`` (by a second process when the file is large), and a block
is a run of consecutive questions whose payload names its byte range of the questions file, its ``_seq`` range
and the index; the worker parses its questions and only their images' scene graphs (``_mine_gqa``). VG and COCO
blocks carry their items and only the index entries they need
(VG: packed whole images with their attribute objects and sizes).

Every record carries ``_seq`` (``SEQ``), its position in the whole-file miner's output order: sorting the union of
all blocks by ``_seq`` gives the local engine's corpus row for row, and "first in input order" (dedup) means
"smallest ``_seq``". GQA: ``_seq`` = the question's index in the file (one record per question). VG and COCO: the
blocks are runs of consecutive images and ``_seq = block << 32 | i`` with ``i`` the record's index in the block.

RefCOCO, TreeBench (one record per line: ``_seq`` = the line's index) and Flickr30k (runs of sentence files, each
block with its images' splits; ``_seq`` as VG's) have no global index: their blocks are runs of items. Miners
without a planner (VisCoT, whose ``LentSizes`` lend image sizes across files, and the shapes demo world) mine whole
on one process; ``frame_blocks`` cuts their output into blocks with ``_seq`` = the record's index.

Example:
    >>> import orjson, tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> sg = {"7": {"width": 100, "height": 80, "objects": {"1": {"name": "cup", "x": 10, "y": 20, "w": 30, "h": 40}}}}
    >>> q = {str(i): {"imageId": "7", "question": "Is there a cup?", "answer": "yes", "semantic": [
    ...     {"operation": "select", "dependencies": [], "argument": "cup (1)"}]} for i in range(3)}
    >>> _ = (d / "q.json").write_bytes(orjson.dumps(q)); _ = (d / "sg.json").write_bytes(orjson.dumps(sg))
    >>> blocks = list(plan_blocks("gqa", {"questions": d / "q.json", "scene_graphs": d / "sg.json"}, block_size=2))
    >>> [b.n_items for b in blocks], [b.seq_range for b in blocks]  # runs of consecutive questions
    ([2, 1], [(0, 1), (2, 2)])
    >>> [mine_block(b.payload)["_seq"].to_list() for b in blocks]
    [[0, 1], [2]]
"""

from __future__ import annotations

import atexit
import gc
import itertools
import multiprocessing
import os
import pickle
import shutil
import sqlite3
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import polars as pl

from virl_data.core.errors import ConfigError, CorpusReadError
from virl_data.engines import jsonspans
from virl_data.miners import coco, flickr30k, gqa, refcoco, treebench, vg, viscot
from virl_data.miners._common import check_limit
from virl_data.miners._kinds import SAMPLE, expect_stream
from virl_data.core.schema import records_to_frame
from virl_data.core.types import ImageRef, RationaleRecord

SEQ = "_seq"
"""The column holding a record's position in the whole-file miner's output (UInt64)."""
DEFAULT_BLOCK_SIZE = 4096
SEQ_SHIFT = 32  # VG, COCO: _seq = block << 32 | index in block (a block yields far fewer than 2**32 records)
_LOOKUP_IDS = 900  # GQA index: image ids per lookup (under SQLite's bound on parameters)
_INDEX_IDS = itertools.count()
APART_BYTES = 64 * 2**20
"""GQA planner: a scene graphs file this large is indexed by a second process while the questions are indexed
(``_plan_gqa``)."""


@dataclass(frozen=True)
class Block:
    """One unit of mining work: ``payload`` (orjson bytes, decoded by ``mine_block``) and how many source items
    (questions, images) it holds."""

    index: int
    n_items: int
    payload: bytes
    seq_range: tuple[int, int] = (0, 0)  # smallest and largest _seq of the block's items


def in_order(planned: Iterable[Block]) -> bool:
    """Whether the blocks, one after the other, already give their records in ``_seq`` order (each block's items
    come after the previous block's). True for GQA files that list an image's questions together, as GQA's do."""
    last = -1
    for b in planned:
        if b.n_items and b.seq_range[0] <= last:
            return False
        last = max(last, b.seq_range[1])
    return True


def _frame(seqs: Iterable[int], records: Iterable[RationaleRecord]) -> pl.DataFrame:
    frame = records_to_frame(records)
    return frame.with_columns(pl.Series(SEQ, list(seqs), dtype=pl.UInt64))


# --- GQA: questions cut into byte ranges of consecutive entries; scene graphs indexed in SQLite as they are --------
def _object_file(path: Path, what: str) -> None:
    """Check that the GQA ``what`` file ``path`` holds a JSON object (what the entry scanner reads) from its first
    bytes; anything else is read whole by the whole-file reader, whose checks say what it is (``WrongFileKind`` for
    another dataset's file, ``CorpusReadError`` for a list or unreadable JSON)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096).lstrip()
    except OSError as e:
        raise CorpusReadError(f"cannot read GQA {what} file {path}: {e}") from None
    if head and not head.startswith(b"{"):
        gqa._checked(gqa._read(path, what), path, what)


def _check_kind(text: bytes, spans: np.ndarray, path: Path, what: str, offset: int = 0) -> None:
    """The whole-file miner's kind check (``WrongFileKind``: "are the files swapped?") on the first entries; ``text``
    is the file's bytes from ``offset``, ``spans`` the entries' offsets in ``text``."""
    head = spans[:SAMPLE]
    if len(head):
        data = _parse(b"{" + text[int(head[0, 0]):int(head[-1, 1])] + b"}", path, what, offset + int(head[0, 0]))
        gqa._checked(data, path, what)


def _parse(text: bytes, path: Path | str, what: str, at: int) -> Any:
    """``text`` ("{" + the GQA ``what`` file's entries from byte ``at``) parsed; ``CorpusReadError`` naming the file
    and the byte where it is malformed."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as e:
        # ``text`` is "{" + the file's bytes from ``at``: its character ``e.pos`` is the file's byte at + pos - 1
        raise CorpusReadError(f"cannot read GQA {what} file {path}: {e.msg} at byte {at + e.pos - 1}") from None


_SQLITE_FAST = "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;"  # a scratch index: rebuilt, never recovered


def _index_graphs(scene_graphs: str, db: str) -> None:
    """The scene graphs file's entries written to the SQLite file ``db`` (``graphs``: image id → the graph's JSON
    text, as in the file: parsed by the worker that needs it), one scanned chunk at a time (``jsonspans``)."""
    path = Path(scene_graphs)
    _object_file(path, "scene graphs")
    con = sqlite3.connect(db)
    checked = False
    try:
        con.executescript(_SQLITE_FAST + "CREATE TABLE graphs (id TEXT PRIMARY KEY, body BLOB) WITHOUT ROWID;")
        with open(path, "rb") as f:
            for spans in jsonspans.object_spans(path, f"GQA scene graphs file {path}"):
                if not len(spans):
                    continue
                lo = int(spans[0, 0])
                f.seek(lo)
                text = f.read(int(spans[-1, 1]) - lo)
                if not checked:
                    _check_kind(text, spans - lo, path, "scene graphs", offset=lo)
                    checked = True
                rows = []
                for start, end in (spans - lo).tolist():
                    try:
                        key, value = jsonspans.split_entry(text[start:end])
                        rows.append((orjson.loads(key), value))
                    except (ValueError, orjson.JSONDecodeError):
                        _parse(b"{" + text[start:end] + b"}", path, "scene graphs", lo + start)
                        raise
                con.executemany("INSERT OR REPLACE INTO graphs VALUES (?, ?)", rows)  # a repeated id: the last wins
        con.commit()
    finally:
        con.close()


def _can_spawn() -> bool:
    """Whether a spawned process can start here: not from a daemonic process (a ``multiprocessing.Pool`` worker),
    and not when ``__main__`` is a script read from stdin (the new process re-runs it from its file)."""
    if multiprocessing.current_process().daemon:
        return False
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    return main_file is None or Path(main_file).is_file()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0  # the reader says what is wrong with it


def _question_runs(path: Path, limit: int | None, block_size: int) -> Iterator[np.ndarray]:
    """The questions file's entries (``(start, end)`` byte offsets), ``block_size`` at a time (the last run
    shorter), at most ``limit`` in all; the first run's entries pass the kind check."""
    pending: list[np.ndarray] = []
    held = taken = 0
    first = True
    for spans in jsonspans.object_spans(path, f"GQA questions file {path}"):
        if limit is not None:
            spans = spans[:limit - taken]
        taken += len(spans)
        pending.append(spans)
        held += len(spans)
        while held >= block_size or (limit is not None and taken >= limit and held):
            run = np.concatenate(pending)
            out, rest = run[:block_size], run[block_size:]
            if first:
                _check_kind(jsonspans.read_range(path, 0, int(out[-1, 1])), out, path, "questions")
                first = False
            yield out
            pending, held = [rest], len(rest)
        if limit is not None and taken >= limit:
            return
    if held:
        run = np.concatenate(pending)
        if first:
            _check_kind(jsonspans.read_range(path, 0, int(run[-1, 1])), run, path, "questions")
        yield run


def _plan_gqa(options: Mapping[str, Any], limit: int | None, block_size: int, workdir: Path) -> Iterator[Block]:
    """GQA's blocks: runs of ``block_size`` consecutive questions, each a byte range of the questions file that the
    worker reads and parses itself (``_mine_gqa``): the planner only finds where the entries lie (``jsonspans``: a
    vectorised scan, no value parsed but the first few, for the kind check). The scene graphs, which any block may
    need, are written to a SQLite index in ``workdir`` (image id → the graph's text). So the planner's memory is
    flat in the input size; the price is one copy of the scene graphs on disk while the run lasts (``workdir``
    and the questions file must be readable by every worker). A scene graphs file of ``APART_BYTES`` or more is
    indexed by a second process meanwhile; the blocks come once the index is complete."""
    questions, scene_graphs = Path(options["questions"]).resolve(), Path(options["scene_graphs"])
    workdir.mkdir(parents=True, exist_ok=True)
    graphs_db = f"{workdir / f'gqa-{os.getpid()}-{next(_INDEX_IDS)}'}-graphs.sqlite"
    apart = _size(scene_graphs) >= APART_BYTES and _can_spawn()
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) if apart else None
    planned: list[Block] = []
    try:
        indexed = pool.submit(_index_graphs, str(scene_graphs), graphs_db) if pool else None
        if pool is None:
            _index_graphs(str(scene_graphs), graphs_db)
        _object_file(questions, "questions")
        base = {"miner": "gqa", "split": gqa.split_of(questions), "graphs": graphs_db, "questions": str(questions)}
        seq = 0
        for run in _question_runs(questions, limit, block_size):
            lo, hi = seq, seq + len(run) - 1
            where = [int(run[0, 0]), int(run[-1, 1])]
            planned.append(Block(len(planned), len(run), orjson.dumps({**base, "seqs": [lo, hi], "bytes": where}),
                                 (lo, hi)))
            seq += len(run)
        if indexed is not None:
            indexed.result()  # the child's CorpusReadError / WrongFileKind, raised here
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    yield from planned


def _read_only(db: str) -> sqlite3.Connection:
    return sqlite3.connect(f"{Path(db).as_uri()}?mode=ro", uri=True)


def _block_questions(payload: dict[str, Any]) -> list[tuple[int, str, Any]]:
    """A GQA block's ``(seq, question id, question)``: its byte range of the questions file parsed (one object;
    each entry apart when a key repeats inside the range, so every entry of the file is one question, as
    planned)."""
    path, (lo, hi), (first, last) = payload["questions"], payload["bytes"], payload["seqs"]
    text = b"{" + jsonspans.read_range(path, lo, hi) + b"}"
    data = _parse(text, path, "questions", lo)
    if len(data) == last - first + 1:
        return [(first + i, qid, q) for i, (qid, q) in enumerate(data.items())]
    spans = np.concatenate(list(jsonspans.object_spans(text, f"GQA questions file {path}")))
    entries = [jsonspans.split_entry(text[s:e]) for s, e in spans.tolist()]
    return [(first + i, orjson.loads(k), orjson.loads(v)) for i, (k, v) in enumerate(entries)]


def _mine_gqa(payload: dict[str, Any], images: Path | None) -> pl.DataFrame:
    questions = _block_questions(payload)
    ids = sorted({str(i) for _, _, q in questions if type(q) is dict and type(i := q.get("imageId")) in (str, int)})
    graphs: dict[str, Any] = {}
    con = _read_only(payload["graphs"])
    try:
        for at in range(0, len(ids), _LOOKUP_IDS):
            chunk = ids[at:at + _LOOKUP_IDS]
            for k, body in con.execute(f"SELECT id, body FROM graphs WHERE id IN ({','.join('?' * len(chunk))})",
                                       chunk):
                try:
                    graphs[k] = orjson.loads(body)
                except orjson.JSONDecodeError as e:
                    raise CorpusReadError(f"cannot read the GQA scene graph of image {k!r} (its entry in the scene "
                                          f"graphs file is not valid JSON): {e}") from None
    finally:
        con.close()
    index = gqa.SceneIndex(graphs, images)
    records = (gqa.mine_question(qid, q, index, payload["split"]) for _, qid, q in questions)
    return _frame((s for s, _, _ in questions), records)


# --- VG: runs of consecutive images, each block with only its images' attribute objects and sizes ------------------
def _plan_vg(options: Mapping[str, Any], limit: int | None, block_size: int) -> Iterator[Block]:
    entries = vg._load_images(Path(options["relationships"]), "relationships")
    objects: dict[str, list[Any]] = {}
    if options.get("attributes") is not None:
        for entry in vg._load_images(Path(options["attributes"]), "attributes"):
            objects.setdefault(str(entry["image_id"]), []).extend(entry["attributes"])
    sizes = vg.read_image_data(Path(options["image_data"])) if options.get("image_data") is not None else {}
    per_block = max(1, block_size // 16)  # ~16 relationships (records) per VG image
    for index, start in enumerate(range(0, len(entries), per_block)):
        batch = entries[start:start + per_block]
        ids = dict.fromkeys(str(e["image_id"]) for e in batch)
        payload = {
            "miner": "vg", "block": index, "dup_iou": options.get("dup_iou", vg.DUP_IOU),
            "entries": batch, "objects": {i: objects[i] for i in ids if i in objects},
            "sizes": {i: [sizes[i].path, sizes[i].width, sizes[i].height] for i in ids if i in sizes},
        }
        base = index << SEQ_SHIFT
        yield Block(index, len(batch), orjson.dumps(payload), (base, base + (1 << SEQ_SHIFT) - 1))


def _mine_vg(payload: dict[str, Any], images: Path | None) -> pl.DataFrame:
    cache: dict[str, vg.SizedImage] = {}
    sizes = {i: ImageRef(*ref) for i, ref in payload["sizes"].items()}
    records: list[RationaleRecord] = []
    for entry in payload["entries"]:
        image_id = str(entry["image_id"])
        image, size_reason = vg._image_ref(image_id, images, cache, sizes)
        records.extend(vg.mine_image(entry, payload["objects"].get(image_id, []), image, size_reason,
                                     payload["dup_iou"]))
    base = payload["block"] << SEQ_SHIFT
    return _frame(range(base, base + len(records)), records)


# --- COCO: runs of images (annotations grouped by image, as the miner reads them), with their lent sizes -----------
def _plan_coco(options: Mapping[str, Any], limit: int | None, block_size: int) -> Iterator[Block]:
    instances = Path(options["instances"])
    small_frac, margin = options.get("small_frac", coco.SMALL_FRAC), options.get("margin", coco.MARGIN)
    if not 0 < small_frac < 1 or not 0 <= margin < 1:  # the miner's own check, before any file is read
        raise ConfigError(f"need 0 < small_frac < 1 and 0 <= margin < 1, got {small_frac}, {margin}")
    if instances.suffix == ".jsonl":
        infos, cats = list(coco._read_llava(instances)), None
    else:
        infos, cats = coco._read_coco(instances)
    captions = options.get("captions")
    lent = coco._images_block(coco._read_json(Path(captions)), Path(captions)) if captions is not None else {}
    per_block = max(1, block_size // 8)  # ~8 questions per COCO image
    for index, start in enumerate(range(0, len(infos), per_block)):
        batch = infos[start:start + per_block]
        payload = {
            "miner": "coco", "block": index, "split": coco.split_of(instances.name),
            "cats": None if cats is None else list(cats.items()), "small_frac": small_frac, "margin": margin,
            "infos": batch, "lent": {i.image_id: lent[i.image_id] for i in batch if i.image_id in lent},
        }
        base = index << SEQ_SHIFT
        yield Block(index, len(batch), orjson.dumps(payload), (base, base + (1 << SEQ_SHIFT) - 1))


def _mine_coco(payload: dict[str, Any], images: Path | None) -> pl.DataFrame:
    cats = None if payload["cats"] is None else {int(k): v for k, v in payload["cats"]}
    lent = {k: coco.ImageInfo(**v) for k, v in payload["lent"].items()}
    records: list[RationaleRecord] = []
    for raw in payload["infos"]:
        info = coco.ImageInfo(**raw)
        image, size_reason = coco._resolve(info, lent, images)
        records.extend(coco._record(info, image, payload["split"], q) for q in
                       coco.mine_image(info, image, size_reason, cats, payload["small_frac"], payload["margin"]))
    base = payload["block"] << SEQ_SHIFT
    return _frame(range(base, base + len(records)), records)


# --- one item per line or file (RefCOCO, TreeBench, Flickr30k): no global index, so a block is a run of items -----
# RefCOCO and TreeBench lines are parsed on the driver (cheap) and their records made on the workers (the image
# sizing, which opens files, is the costly part); Flickr30k blocks are runs of sentence files, read on the workers.
# Their payloads carry the parsed items as pickle (made by this run's driver for its own workers: trusted).
_PICKLED = b"\x80"  # the first byte of a pickle (protocol >= 2); orjson payloads start with "{"


def _item_blocks(miner: str, items: Iterable[Any], block_size: int, **context: Any) -> Iterator[Block]:
    batch: list[Any] = []
    start = index = 0
    for i, item in enumerate(items):
        batch.append(item)
        if len(batch) == block_size:
            yield _item_block(miner, index, start, batch, context)
            batch, start, index = [], i + 1, index + 1
    if batch:
        yield _item_block(miner, index, start, batch, context)


def _item_block(miner: str, index: int, start: int, items: list[Any], context: dict[str, Any]) -> Block:
    payload = pickle.dumps({"miner": miner, "block": index, "start": start, "items": items, **context}, protocol=5)
    if miner == "flickr30k":  # records per file vary: _seq = block << 32 | i, as VG's
        seq_range = (index << SEQ_SHIFT, (index + 1 << SEQ_SHIFT) - 1)
    else:
        seq_range = (start, start + len(items) - 1)
    return Block(index, len(items), payload, seq_range)


def _plan_refcoco(options: Mapping[str, Any], limit: int | None, block_size: int) -> Iterator[Block]:
    answer, variant = options.get("answer", refcoco.BOX), options.get("variant")
    if answer not in refcoco.ANSWERS:  # the miner's own checks, before any file is read
        raise ConfigError(f"unknown RefCOCO answer {answer!r}; use one of {', '.join(refcoco.ANSWERS)}")
    if variant is not None and variant not in refcoco.VARIANTS:
        raise ConfigError(f"unknown RefCOCO variant {variant!r}; known: {', '.join(refcoco.VARIANTS)}")
    items = (e for path in refcoco._files(Path(options["refs"])) for e in refcoco.read_expressions(path))
    return _item_blocks("refcoco", itertools.islice(items, limit), block_size, variant=variant, answer=answer)


def _mine_refcoco(payload: dict[str, Any], images: Path | None) -> pl.DataFrame:
    cache: dict[str, Any] = {}
    items = payload["items"]
    records = (refcoco._record(e, payload["variant"], images, cache, payload["answer"]) for e in items)
    return _frame(range(payload["start"], payload["start"] + len(items)), records)


def _plan_treebench(options: Mapping[str, Any], limit: int | None, block_size: int) -> Iterator[Block]:
    files, root = treebench._files(Path(options["annotations"]))
    items = (q for path in files for q in treebench.read_questions(path, root))
    return _item_blocks("treebench", itertools.islice(items, limit), block_size, root=root)


def _mine_treebench(payload: dict[str, Any], images: Path | None) -> pl.DataFrame:
    items = payload["items"]
    records = (treebench._record(q, images if images is not None else (payload["root"] if q.source == "vstar"
                                                                        else None)) for q in items)
    return _frame(range(payload["start"], payload["start"] + len(items)), records)


def _plan_flickr30k(options: Mapping[str, Any], limit: int | None, block_size: int) -> Iterator[Block]:
    sentences, annotations, splits = (options.get(k) for k in ("sentences", "annotations", "splits"))
    if annotations is not None and not Path(annotations).is_dir():  # the miner's own checks
        raise CorpusReadError(f"Flickr30k annotations folder {annotations} does not exist")
    for path, role, expected in ((sentences, "sentences", flickr30k.SENTENCES),
                                 (annotations, "annotations", flickr30k.ANNOTATIONS),
                                 (splits, "splits", flickr30k.SPLITS)):
        if path is not None:
            flickr30k._expect(Path(path), role, expected)
    split_of, unrelated = flickr30k.read_splits(Path(splits)) if splits is not None else ({}, set())
    files = flickr30k._sentence_files(Path(sentences))
    per_block = max(1, block_size // 5)  # 5 sentences (records) per Flickr30k image
    for index, start in enumerate(range(0, len(files), per_block)):
        batch = files[start:start + per_block]
        ids = {f.stem for f in batch}
        context = {"annotations": annotations, "split_of": {i: split_of[i] for i in ids if i in split_of},
                   "unrelated": {u for u in unrelated if u[0] in ids}}
        yield _item_block("flickr30k", index, start, batch, context)


def _mine_flickr30k(payload: dict[str, Any], images: Path | None) -> pl.DataFrame:
    records: list[RationaleRecord] = []
    annotations = payload["annotations"]
    for file in payload["items"]:
        xml = Path(annotations) / f"{file.stem}.xml" if annotations is not None else None
        ann = flickr30k.read_annotation(xml) if xml is not None and xml.is_file() else None
        missing = "no annotations folder given" if xml is None else f"no {xml.name} in {annotations}"
        image, size_reason = flickr30k._image(file.stem, ann, images)
        records.extend(flickr30k.mine_image(file.stem, flickr30k.read_sentences(file), ann, image, size_reason,
                                            payload["split_of"].get(file.stem), payload["unrelated"], missing))
    base = payload["block"] << SEQ_SHIFT
    return _frame(range(base, base + len(records)), records)


# --- VisCoT: runs of questions, each with the size the global table of lent sizes gives it ------------------------
@dataclass(frozen=True)
class _LentOne:
    """The size ``viscot.LentSizes.size_of`` gave one item on the driver (None: none lent), standing in for the whole
    table on the worker (``viscot._record`` asks it for that one item only)."""

    size: tuple[int, int] | None

    def size_of(self, item: viscot.Item) -> tuple[int, int] | None:  # noqa: ARG002 - the item it was looked up for
        return self.size


def _plan_viscot(options: Mapping[str, Any], limit: int | None, block_size: int) -> Iterator[Block]:
    """VisCoT's blocks: runs of consecutive questions (across its files, in the miner's order), each item parsed on
    the driver with its lent size looked up there (``--sizes``: a table across files, the global index a block could
    not rebuild); the workers make the records, sizing the images the files and the table leave unsized."""
    sizes = options.get("sizes")
    lent = viscot.lent_sizes(Path(sizes)) if sizes is not None else viscot.LentSizes({}, {}, {})

    def items() -> Iterator[tuple[viscot.Item, tuple[int, int] | None]]:
        for path in viscot._files(Path(options["annotations"])):
            records = expect_stream(viscot.read_records(path), path, role="VisCoT annotations",
                                    expected=viscot.LAYOUTS)
            for index, obj in enumerate(records):
                item = viscot.parse_item(obj, path, index)
                yield item, lent.size_of(item)

    return _item_blocks("viscot", itertools.islice(items(), limit), block_size)


def _mine_viscot(payload: dict[str, Any], images: Path | None) -> pl.DataFrame:
    cache: dict[str, viscot.SizedImage] = {}
    items = payload["items"]
    records = (viscot._record(item, images, _LentOne(size), cache) for item, size in items)
    return _frame(range(payload["start"], payload["start"] + len(items)), records)


_PLANNERS: dict[str, Callable[[Mapping[str, Any], int | None, int], Iterator[Block]]] = {
    "gqa": _plan_gqa,
    "vg": _plan_vg,
    "coco": _plan_coco,
    "refcoco": _plan_refcoco,
    "treebench": _plan_treebench,
    "flickr30k": _plan_flickr30k,
    "viscot": _plan_viscot,
}
_MINERS: dict[str, Callable[[dict[str, Any], Path | None], pl.DataFrame]] = {
    "gqa": _mine_gqa, "vg": _mine_vg, "coco": _mine_coco, "refcoco": _mine_refcoco, "treebench": _mine_treebench,
    "flickr30k": _mine_flickr30k, "viscot": _mine_viscot,
}
SPILLS = frozenset({"gqa"})
"""Planners that stream their input into an index on disk (``plan_blocks``'s ``workdir``) instead of holding it."""
EXACT_LIMIT = frozenset({"gqa", "refcoco", "treebench", "viscot"})
"""Planners that apply ``limit`` themselves (one record per item); for the others the engine keeps the first
``limit`` records by ``_seq``."""


def plannable(miner: str) -> bool:
    """Whether ``miner`` has a block planner (else it mines whole on one process: ``frame_blocks``)."""
    return miner in _PLANNERS


def plan_blocks(miner: str, options: Mapping[str, Any], *, limit: int | None = None,
                block_size: int = DEFAULT_BLOCK_SIZE, workdir: str | Path | None = None) -> Iterator[Block]:
    """The blocks of a source, in input order; ``options`` are the miner's keyword arguments (paths as str or
    Path). ``workdir``: where a planner that spills its index to disk (GQA: ``_plan_gqa``) writes it, a folder every
    worker can read, which the caller removes when the blocks are mined; None: a temporary folder removed when this
    process exits. Raises ``CorpusReadError`` for unreadable files like the miner, ``ConfigError`` for a bad size."""
    check_limit(limit)
    if block_size < 1:
        raise ConfigError(f"block_size must be >= 1, got {block_size}")
    if miner not in _PLANNERS:
        raise ConfigError(f"miner {miner!r} has no block planner (planned: {', '.join(_PLANNERS)})")
    if miner not in SPILLS:
        return _PLANNERS[miner](options, limit, block_size)
    if workdir is None:
        workdir = tempfile.mkdtemp(prefix="virl-plan-")
        atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    return _PLANNERS[miner](options, limit, block_size, Path(workdir))


def mine_block(payload: bytes, images: str | Path | None = None) -> pl.DataFrame:
    """One block's records: the canonical columns plus ``_seq``. Pure given the files under ``images``.

    The cycle collector is off meanwhile, as in the whole-file miners (``gqa.mine``): the block's parse and
    records are acyclic, and collecting would traverse them again and again (a third of the time)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        data = pickle.loads(payload) if payload[:1] == _PICKLED else orjson.loads(payload)
        return _MINERS[data["miner"]](data, None if images is None else Path(images))
    finally:
        if enabled:
            gc.enable()


def frame_blocks(frame: pl.DataFrame, block_size: int = DEFAULT_BLOCK_SIZE) -> list[pl.DataFrame]:
    """A whole-file miner's frame cut into blocks of ``block_size`` rows, ``_seq`` = the row's index.

    >>> [b[SEQ].to_list() for b in frame_blocks(pl.DataFrame({"id": ["a", "b", "c"]}), 2)]
    [[0, 1], [2]]
    """
    seq = frame.with_columns(pl.int_range(pl.len(), dtype=pl.UInt64).alias(SEQ))
    return [seq.slice(i, block_size) for i in range(0, frame.height, block_size)] or [seq]


__all__ = ["DEFAULT_BLOCK_SIZE", "EXACT_LIMIT", "SEQ", "SPILLS", "Block", "frame_blocks", "in_order", "mine_block",
           "plan_blocks", "plannable"]
