"""Where the entries of a top-level JSON object lie in its file, found without parsing them.

GQA ships each of its files as one JSON object keyed by id (``{"<id>": {...}, "<id>": {...}, ...}``), hundreds of MB
to GBs. The block planner (``blocks._plan_gqa``) needs only where each entry starts and ends: a block of questions is
then a byte range of the file that a worker reads and parses itself (``orjson``), and a scene graph is a byte range
the planner stores as it is. Parsing every entry into Python objects on the driver (``ijson``) to learn that was the
planner's whole cost (3 s per 100k questions; ``benchmarks/bench_plan.py``).

``object_spans`` scans the file in chunks with ``numpy``: it keeps only the bytes that change the structure (quotes,
backslashes, brackets, commas), works out which quotes are escaped (an odd run of backslashes before them), which
bytes are inside strings (the parity of the real quotes before them) and the nesting depth (a running sum of the
brackets outside strings); an entry ends at a comma at depth 1 or at the closing brace. So its memory is one chunk
and its time a few vectorised passes over it, whatever the file's size.

It checks the structure only (one object, balanced outside strings, nothing after it): an entry's own JSON is checked
by whoever parses it, and a malformed entry therefore fails there (``orjson.JSONDecodeError``), never silently.
No library offers this: ``ijson`` and ``json`` build every value, ``orjson`` and ``simdjson`` parse whole documents.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from virl_data.core.errors import CorpusReadError

CHUNK_BYTES = 1 << 20
"""Bytes read and scanned at a time (the scanner's memory is a few times this)."""

_QUOTE, _BACKSLASH, _COMMA, _OPEN, _CLOSE = 34, 92, 44, 123, 125
_STRUCTURAL = (34, 92, 123, 125, 91, 93, 44)  # " \ { } [ ] ,
_KEY = re.compile(rb'\s*("(?:[^"\\]|\\.)*")\s*:', re.S)
_WHITESPACE = b" \t\r\n"


class _Scanner:
    """The state carried from one chunk to the next: inside a string or not, the depth, the backslashes the last
    chunk ended with, the offset of the chunk, whether the object has closed."""

    def __init__(self, where: str) -> None:
        self.where, self.in_string, self.depth, self.backslashes, self.offset = where, 0, 0, 0, 0
        self.closed = False

    def delimiters(self, chunk: bytes) -> np.ndarray:
        """File offsets of the chunk's delimiters: the object's opening brace, the commas between its entries,
        its closing brace."""
        if self.closed and chunk.strip(_WHITESPACE):
            self._fail(len(chunk) - len(chunk.lstrip(_WHITESPACE)), "more after the object's closing brace")
        raw = np.frombuffer(chunk, np.uint8)
        structural = raw == _STRUCTURAL[0]  # compares: faster than a table lookup over every byte
        for char in _STRUCTURAL[1:]:
            structural |= raw == char
        at = np.flatnonzero(structural)
        c = raw[at]
        if not len(c):  # nothing structural: inside a long string or number, or whitespace
            self.backslashes, self.offset = 0, self.offset + len(chunk)
            return at.astype(np.int64)
        quote = c == _QUOTE
        backslash = c == _BACKSLASH
        if backslash.any() or self.backslashes:
            k = np.arange(len(c))
            # element k continues a run of backslashes when element k-1 is a backslash on the byte just before it
            continues = np.zeros(len(c), bool)
            continues[1:] = backslash[:-1] & (at[1:] == at[:-1] + 1)
            run_start = np.maximum.accumulate(np.where(continues, -1, k))
            run = k - run_start  # backslashes right before element k
            if self.backslashes:  # the run the last chunk ended with reaches the first bytes of this one
                run = run + np.where((run_start == 0) & (at[0] == 0), self.backslashes, 0)
            quote &= (run & 1) == 0
        parity = (np.cumsum(quote, dtype=np.int32) + self.in_string) & 1  # inside a string after element k
        before = np.empty(len(c), np.int32)
        before[0], before[1:] = self.in_string, parity[:-1]
        outside = before == 0
        # +1 for { and [, -1 for } and ] (compares: faster than a table lookup), 0 inside strings
        step = (((c == _OPEN) | (c == 91)).view(np.int8) - ((c == _CLOSE) | (c == 93)).view(np.int8)) * outside
        depth = np.cumsum(step, dtype=np.int32) + self.depth  # after element k
        delims = at[outside & (((c == _COMMA) & (depth == 1)) | ((c == _OPEN) & (depth == 1) & (step == 1))
                               | ((c == _CLOSE) & (depth == 0)))]
        self.in_string, self.depth = int(parity[-1]), int(depth[-1])
        closing = outside & (depth == 0)
        if closing.any() and not self.closed:
            end = int(at[np.argmax(closing)]) + 1
            if chunk[end:].strip(_WHITESPACE):
                self._fail(end + len(chunk[end:]) - len(chunk[end:].lstrip(_WHITESPACE)),
                           "more after the object's closing brace")
            self.closed = True
        trailing = len(chunk) - len(chunk.rstrip(b"\\"))
        self.backslashes = trailing + (self.backslashes if trailing == len(chunk) else 0)
        out = delims.astype(np.int64) + self.offset
        self.offset += len(chunk)
        return out

    def _fail(self, offset: int, what: str) -> None:
        raise CorpusReadError(f"cannot read {self.where}: {what} at byte {self.offset + offset}")


def _chunks(path: Path, where: str, chunk_bytes: int) -> Iterator[bytes]:
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below, after the generator's last chunk
    except OSError as e:
        raise CorpusReadError(f"cannot read {where}: {e}") from None
    with f:
        while chunk := f.read(chunk_bytes):
            yield chunk


def object_spans(source: str | Path | bytes, where: str | None = None, *,
                 chunk_bytes: int | None = None) -> Iterator[np.ndarray]:  # fmt: skip
    """The ``(start, end)`` byte offsets of each entry (``"key": value``, without the comma) of the JSON object that
    is the whole of ``source`` (a file, or the bytes themselves), as ``(n, 2)`` int64 arrays, a chunk's worth at a
    time, in file order (chunks of ``chunk_bytes``, default ``CHUNK_BYTES``). ``where`` names the source in errors
    (``CorpusReadError``: empty, not an object, unbalanced, truncated, something after it). An empty object has no
    entries.

    >>> text = b'{"a": {"s": "x}\\\\",\\\\""}, "b": [1, {"c": 2}],"c":3}'
    >>> [text[s:e].decode() for s, e in np.concatenate(list(object_spans(text)))]
    ['"a": {"s": "x}\\\\",\\\\""}', ' "b": [1, {"c": 2}]', '"c":3']
    """
    where = where or (f"JSON file {source}" if not isinstance(source, bytes) else "JSON text")
    scanner, chunk_bytes = _Scanner(where), chunk_bytes or CHUNK_BYTES
    chunks: Iterable[bytes] = ((source[i:i + chunk_bytes] for i in range(0, len(source), chunk_bytes))
                               if isinstance(source, bytes) else _chunks(Path(source), where, chunk_bytes))
    last: int | None = None  # the delimiter the next entry starts after
    started, seen = False, 0  # started: the first byte that is not whitespace was seen (and is "{")
    for chunk in chunks:
        if not started and (head := chunk.lstrip(_WHITESPACE)):
            if not head.startswith(b"{"):
                raise CorpusReadError(f"cannot read {where}: not a JSON object (it starts with {head[:20]!r})")
            started = True
        delims = scanner.delimiters(chunk)
        if last is not None:
            delims = np.concatenate([[last], delims])
        if len(delims) >= 2:
            spans = np.stack([delims[:-1] + 1, delims[1:]], axis=1)
            seen += len(spans)
            yield spans if seen > 1 or not scanner.closed or not _empty_object(source, spans[0]) else spans[:0]
        if len(delims):
            last = int(delims[-1])
    if not started:
        raise CorpusReadError(f"cannot read {where}: the file is empty (or only whitespace)")
    if scanner.in_string or scanner.depth or not scanner.closed:
        raise CorpusReadError(f"cannot read {where}: it ends inside the object (truncated?)")


def _empty_object(source: str | Path | bytes, span: np.ndarray) -> bool:
    """Whether the one span of an object holds nothing but whitespace (``{}``, ``{ }``)."""
    start, end = int(span[0]), int(span[1])
    if end - start > 64:
        return False
    return not read_range(source, start, end).strip(_WHITESPACE)


def read_range(source: str | Path | bytes, start: int, end: int) -> bytes:
    """Bytes ``start:end`` of ``source`` (a file, or the bytes themselves)."""
    if isinstance(source, bytes):
        return source[start:end]
    with open(source, "rb") as f:
        f.seek(start)
        return f.read(end - start)


def split_entry(entry: bytes) -> tuple[bytes, bytes]:
    """An entry's key (as its JSON string, quotes included) and its value's text.

    >>> split_entry(b' "23\\\\"x" : {"a": 1} ')
    (b'"23\\\\"x"', b'{"a": 1}')
    """
    m = _KEY.match(entry)
    if m is None:
        raise ValueError(f"not a JSON object entry: {entry[:40]!r}")
    return m.group(1), entry[m.end():].strip(_WHITESPACE)


__all__ = ["CHUNK_BYTES", "object_spans", "read_range", "split_entry"]
