"""Flickr30k Entities: each caption becomes a grounded-caption record whose chain follows its phrases in order.

Inputs:

- ``sentences``: the ``Sentences/`` folder (``<image_id>.txt``, five captions a file, one a line) or one such file.
  Phrases are marked ``[/EN#<chain id>/<type>[/<type>...] <words>]``; phrases of one coreference chain share the
  chain id; chain id 0 (type ``notvisual``) is not annotated.
- ``annotations``: the ``Annotations/`` folder (``<image_id>.xml``), PASCAL-VOC-like::

      <annotation><filename>36979.jpg</filename><size><width>500</width><height>375</height><depth>3</depth></size>
        <object><name>137644</name><bndbox><xmin>1</xmin><ymin>48</ymin><xmax>307</xmax><ymax>375</ymax></bndbox>
        </object>
        <object><name>137646</name><nobndbox>1</nobndbox><scene>0</scene></object> ...

  An object may carry several ``<name>`` (chain ids) sharing its box; a chain may have several boxes; objects
  without ``<bndbox>`` are marked ``<nobndbox>1</nobndbox>`` and/or ``<scene>1</scene>``. Boxes are taken as
  absolute xyxy pixels as written (the official loader subtracts 1 from each coordinate, reading them as 1-based;
  that sub-pixel convention is not applied here).
- ``images`` (optional): the image root (``<id>.jpg`` directly or under ``flickr30k-images/``), read for the size
  when there is no XML; ``splits`` (optional): the folder holding the official ``train.txt`` / ``val.txt`` /
  ``test.txt`` (→ ``provenance.source_split``) and ``UNRELATED_CAPTIONS`` (``<image id> <sentence number from 1>``).

Record per caption: ``question = QUESTION`` ("Describe the image in one sentence."), ``answer`` = the caption with
the markup removed (``clean_caption``), ``answer_type="caption"``, ``question_type="grounded_caption"``. The chain
has one step per visual entity in the order of first mention: ``phrase`` = the words of that first mention,
``source_ref`` = the chain id, ``boxes`` = every box of the chain (left to right as in the XML), ``role=None``.
A later phrase of a chain already in the chain ("a man ... he") adds no step: the caption looks at each entity
once. Entities the XML marks as scene / without a box add no step either.

REJECTED records (``CheckResult(name="mining")``): ``no_box_annotations`` (no XML for the image: the chain then
lists the entities with empty ``boxes``, so the phrase order is still visible), ``unknown_object`` (a chain id the
XML does not list), ``no_boxed_phrase`` (no entity of the caption has a box), ``malformed_sentence`` (unbalanced
markup), ``unrelated_caption`` (listed in ``UNRELATED_CAPTIONS``), ``image_size_unknown``. Unreadable sentence files
and malformed XML raise ``CorpusReadError`` naming the file.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "7.txt").write_text("[/EN#1/people A man] walks [/EN#2/animals a dog] .\\n")
    >>> rec = next(mine(sentences=d / "7.txt"))
    >>> rec.answer, [(s.phrase, s.source_ref, s.boxes) for s in rec.chain]
    ('A man walks a dog.', [('A man', '1', ()), ('a dog', '2', ())])
    >>> rec.status.value, rec.checks[0].reason.split(":")[0]
    ('rejected', 'no_box_annotations')
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from virl_data.core.errors import CorpusReadError, WrongFileKind
from virl_data.core.types import (
    Box,
    ImageRef,
    Provenance,
    RationaleRecord,
    RationaleStep,
    record_id,
)
from virl_data.miners._common import check_limit, image_side, mining_outcome, size_from_files

SOURCE = "flickr30k"
MINER = "flickr30k@1"
QUESTION = "Describe the image in one sentence."
IMAGE_SUBDIRS = ("", "flickr30k-images")
SPLIT_NAMES = ("train", "val", "test")

_PHRASE = re.compile(r"\[/EN#(\d+)((?:/[^\s/\]]+)+)\s+([^\[\]]*?)\]")
_SPACE_BEFORE = re.compile(r"\s+([.,;:!?])")


# --- sentences -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Phrase:
    """One marked phrase: its chain id, types (``("people",)``) and words, in caption order."""

    chain_id: str
    types: tuple[str, ...]
    text: str


@dataclass(frozen=True, slots=True)
class Sentence:
    """A parsed caption line: the plain caption and its phrases; ``error`` is set for unbalanced markup."""

    caption: str
    phrases: tuple[Phrase, ...]
    error: str | None = None


def clean_caption(words: str) -> str:
    """Collapse whitespace and drop the space Flickr30k's tokenisation puts before punctuation.

    >>> clean_caption("A man , with a dog .")
    'A man, with a dog.'
    """
    return _SPACE_BEFORE.sub(r"\1", " ".join(words.split()))


def parse_sentence(line: str) -> Sentence:
    """One ``Sentences/<id>.txt`` line → its caption and phrases.

    >>> s = parse_sentence("[/EN#9/people/other Two men] sit on [/EN#0/notvisual it] .")
    >>> s.caption, s.phrases[0]
    ('Two men sit on it.', Phrase(chain_id='9', types=('people', 'other'), text='Two men'))
    """
    phrases = tuple(Phrase(m[1], tuple(m[2].strip("/").split("/")), " ".join(m[3].split()))
                    for m in _PHRASE.finditer(line))
    plain = _PHRASE.sub(lambda m: m[3], line)
    error = None
    if "[" in plain or "]" in plain:
        error = f"malformed_sentence: unbalanced phrase markup in {line.strip()!r}"
    return Sentence(clean_caption(plain.replace("[", " ").replace("]", " ")), phrases, error)


def read_sentences(path: Path) -> list[Sentence]:
    """Every non-blank line of one sentences file, parsed."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise CorpusReadError(f"cannot read Flickr30k sentences file {path}: {e}") from None
    return [parse_sentence(line) for line in lines if line.strip()]


# --- annotations -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Annotation:
    """One ``Annotations/<id>.xml``: image size (0 when absent), boxes by chain id, and the box-less chain ids."""

    width: int
    height: int
    boxes: dict[str, tuple[Box, ...]] = field(default_factory=dict)
    no_box: frozenset[str] = frozenset()


def _int(node: ET.Element | None, tag: str) -> int:
    text = node.findtext(tag) if node is not None else None
    try:
        return (image_side(float(text)) or 0) if text is not None else 0
    except ValueError:
        return 0


def _bndbox(node: ET.Element, path: Path) -> Box:
    try:
        values = [float(node.findtext(k) or "nan") for k in ("xmin", "ymin", "xmax", "ymax")]
    except ValueError:
        values = [math.nan]
    if not all(map(math.isfinite, values)):
        raise CorpusReadError(f"{path}: a <bndbox> lacks numeric xmin, ymin, xmax, ymax")
    return Box(*values)  # absolute xyxy pixels as written: the canonical layout


def read_annotation(path: Path) -> Annotation:
    """Parse one Flickr30k Entities XML (see the module docstring for the layout)."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        raise CorpusReadError(f"cannot read Flickr30k annotation {path}: {e}") from None
    size = root.find("size")
    boxes: dict[str, list[Box]] = {}
    no_box: set[str] = set()
    for obj in root.iter("object"):
        names = [n.text.strip() for n in obj.findall("name") if n.text and n.text.strip()]
        node = obj.find("bndbox")
        if node is None:
            no_box.update(names)
            continue
        box = _bndbox(node, path)
        for name in names:
            boxes.setdefault(name, []).append(box)
    ordered = {k: tuple(sorted(v, key=lambda b: (b.x1, b.y1))) for k, v in boxes.items()}
    return Annotation(_int(size, "width"), _int(size, "height"), ordered, frozenset(no_box - set(ordered)))


# --- splits ----------------------------------------------------------------------------------------------------------
def read_splits(folder: Path) -> tuple[dict[str, str], set[tuple[str, int]]]:
    """``{image_id: split}`` from ``train/val/test.txt`` and ``{(image_id, sentence number from 1)}`` unrelated."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CorpusReadError(f"Flickr30k splits folder {folder} does not exist")
    split_of: dict[str, str] = {}
    for name in SPLIT_NAMES:
        file = folder / f"{name}.txt"
        if file.is_file():
            split_of.update((line.strip(), name) for line in file.read_text().splitlines() if line.strip())
    unrelated: set[tuple[str, int]] = set()
    file = folder / "UNRELATED_CAPTIONS"
    if file.is_file():
        for n, line in enumerate(file.read_text().splitlines(), 1):
            parts = line.split()
            if not parts or line.lstrip().startswith("#"):
                continue
            if len(parts) != 2 or not parts[1].isdigit():
                raise CorpusReadError(f"{file}: line {n} is not '<image id> <sentence number>': {line!r}")
            unrelated.add((parts[0], int(parts[1])))
    return split_of, unrelated


# --- records ---------------------------------------------------------------------------------------------------------
def chain_for(sentence: Sentence, ann: Annotation | None) -> tuple[tuple[RationaleStep, ...], list[str]]:
    """The caption's steps (first mention of each visual chain, in order) and the rejection reasons.

    Without ``ann`` the steps have empty ``boxes`` and no reason is given: the caller rejects the record.
    """
    steps: list[RationaleStep] = []
    reasons: list[str] = []
    seen: set[str] = set()
    for p in sentence.phrases:
        if p.chain_id == "0" or "notvisual" in p.types or p.chain_id in seen:
            continue
        seen.add(p.chain_id)
        if ann is None:
            steps.append(RationaleStep(boxes=(), phrase=p.text, source_ref=p.chain_id))
        elif p.chain_id in ann.boxes:
            steps.append(RationaleStep(boxes=ann.boxes[p.chain_id], phrase=p.text, source_ref=p.chain_id))
        elif p.chain_id not in ann.no_box:
            reasons.append(f"unknown_object: chain {p.chain_id} ({p.text!r}) is not in the annotation")
    if ann is not None and not steps and not reasons:
        reasons.append("no_boxed_phrase: no entity of the caption has a box")
    return tuple(steps), reasons


def _image(image_id: str, ann: Annotation | None, images: Path | None) -> tuple[ImageRef, str | None]:
    name = f"{image_id}.jpg"
    if ann is not None and ann.width > 0 and ann.height > 0:
        return ImageRef(name, ann.width, ann.height), None
    if images is None:
        return ImageRef(name, 0, 0), f"image_size_unknown: {name} (no size in an annotation, no images directory)"
    found = size_from_files(images, (f"{sub}/{name}" if sub else name for sub in IMAGE_SUBDIRS))
    if found is not None:
        return found
    return ImageRef(name, 0, 0), f"image_size_unknown: no size in an annotation and no {name} under {images}"


def mine_image(image_id: str, sentences: list[Sentence], ann: Annotation | None, image: ImageRef,
               size_reason: str | None, split: str | None = None,
               unrelated: set[tuple[str, int]] | frozenset = frozenset(),
               missing: str = "no annotations folder given") -> Iterator[RationaleRecord]:
    """The records of one image's captions (``missing`` says why ``ann`` is None, when it is)."""
    for i, s in enumerate(sentences):
        chain, reasons = chain_for(s, ann)
        if ann is None:
            reasons = [f"no_box_annotations: {image_id} ({missing})"]
        reasons = [*filter(None, [s.error]), *reasons, *filter(None, [size_reason])]
        if (image_id, i + 1) in unrelated:
            reasons.append(f"unrelated_caption: sentence {i + 1} of {image_id} is listed in UNRELATED_CAPTIONS")
        yield RationaleRecord(
            id=record_id(SOURCE, image_id, str(i)),
            image=image,
            question=QUESTION,
            answer=s.caption,
            chain=chain,
            provenance=Provenance(source=SOURCE, source_split=split, miner=MINER,
                                  native_ids=(("image_id", image_id), ("sentence", str(i)))),
            answer_type="caption",
            question_type="grounded_caption",
            **mining_outcome(reasons),
        )


# --- which input is which --------------------------------------------------------------------------------------------
SENTENCES = "Flickr30k Entities sentences (Sentences/)"
ANNOTATIONS = "Flickr30k Entities annotations (Annotations/, XML)"
SPLITS = "Flickr30k split lists (splits/)"
_MIXED_UP = "are the sentences, annotations and splits folders mixed up?"


def _head(path: Path, n: int = 2048) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(n).decode("utf-8", "replace")
    except OSError:
        return ""


def input_kind(path: Path) -> str | None:
    """Which Flickr30k Entities input ``path`` (a folder or one file) looks like, by content: ``SENTENCES`` (text
    with ``[/EN#`` phrase markup), ``ANNOTATIONS`` (``<annotation>`` XML), ``SPLITS`` (``train/val/test.txt``,
    ``UNRELATED_CAPTIONS``), else None. A folder is judged by its first files (sorted).

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "7.xml").write_text("<annotation><filename>7.jpg</filename></annotation>")
    >>> input_kind(d) == ANNOTATIONS
    True
    """
    path = Path(path)
    files = sorted(path.iterdir())[:200] if path.is_dir() else [path] if path.is_file() else []
    texts = {f: _head(f) for f in files[:20] if f.is_file() and f.suffix in (".txt", ".xml", "")}
    if any("[/EN#" in t for t in texts.values()):
        return SENTENCES
    if any(f.suffix == ".xml" and "<annotation" in t for f, t in texts.items()):
        return ANNOTATIONS
    if any(f.name in ("train.txt", "val.txt", "test.txt", "UNRELATED_CAPTIONS") for f in files):
        return SPLITS
    return None


def _expect(path: Path, role: str, expected: str) -> None:
    """``WrongFileKind`` when the ``role`` input looks like another Flickr30k input than ``expected``."""
    found = input_kind(path)
    if found is not None and found != expected:
        raise WrongFileKind(f"the Flickr30k {role} {path} looks like {found}, not {expected} ({_MIXED_UP})")


def _sentence_files(sentences: Path) -> list[Path]:
    sentences = Path(sentences)
    if sentences.is_dir():
        files = sorted(sentences.glob("*.txt"), key=lambda p: (len(p.stem), p.stem))
        if not files:
            raise CorpusReadError(f"no .txt files in the Flickr30k sentences folder {sentences}")
        return files
    if not sentences.is_file():
        raise CorpusReadError(f"Flickr30k sentences {sentences} does not exist")
    return [sentences]


def mine(
    *,
    sentences: Path,
    annotations: Path | None = None,
    images: Path | None = None,
    splits: Path | None = None,
    limit: int | None = None,
) -> Iterator[RationaleRecord]:
    """Stream one grounded-caption record per caption of ``sentences`` (images in numeric id order).

    ``annotations``: the ``Annotations/`` folder of ``<id>.xml`` (boxes and sizes); ``images``: the image root, for
    sizes; ``splits``: the folder with ``train/val/test.txt`` and ``UNRELATED_CAPTIONS``. ``limit`` caps the records.
    """
    check_limit(limit)
    if annotations is not None and not Path(annotations).is_dir():
        raise CorpusReadError(f"Flickr30k annotations folder {annotations} does not exist")
    for path, role, expected in ((sentences, "sentences", SENTENCES), (annotations, "annotations", ANNOTATIONS),
                                 (splits, "splits", SPLITS)):
        if path is not None:
            _expect(path, role, expected)
    split_of, unrelated = read_splits(splits) if splits is not None else ({}, set())
    n = 0
    for file in _sentence_files(sentences):
        image_id = file.stem
        xml = Path(annotations) / f"{image_id}.xml" if annotations is not None else None
        ann = read_annotation(xml) if xml is not None and xml.is_file() else None
        missing = "no annotations folder given" if xml is None else f"no {xml.name} in {annotations}"
        image, size_reason = _image(image_id, ann, images)
        for rec in mine_image(image_id, read_sentences(file), ann, image, size_reason, split_of.get(image_id),
                              unrelated, missing):
            if limit is not None and n >= limit:
                return
            n += 1
            yield rec


__all__ = ["MINER", "QUESTION", "SOURCE", "Annotation", "Phrase", "Sentence", "chain_for", "clean_caption", "mine",
           "mine_image", "parse_sentence", "read_annotation", "read_sentences", "read_splits"]
