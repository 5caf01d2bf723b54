"""The entry scanner of a top-level JSON object (virl_data/engines/jsonspans.py): for any object, written compact or
indented and scanned in chunks of any size (so escapes, strings and brackets are cut at every place), the spans are
exactly its entries, each parsing back to the entry orjson reads; broken files fail with a named reason."""

from __future__ import annotations

import doctest
import json

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from virl_data.core.errors import CorpusReadError
from virl_data.engines import jsonspans

# strings full of what a scanner can get wrong: quotes, backslashes, brackets, commas, non-ASCII
_TEXT = st.text(alphabet=st.sampled_from(list('ab"\\{}[],: é\n')), max_size=12)
_VALUE = st.recursive(st.none() | st.booleans() | st.integers(-5, 5) | _TEXT,
                      lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
                      max_leaves=8)


def _entries(text: bytes, chunk: int) -> list[tuple]:
    spans = np.concatenate([np.empty((0, 2), np.int64), *jsonspans.object_spans(text, chunk_bytes=chunk)])
    out = []
    for start, end in spans:
        key, value = jsonspans.split_entry(text[start:end])
        out.append((orjson.loads(key), orjson.loads(value)))
    return out


def test_docstring_examples():
    assert doctest.testmod(jsonspans).failed == 0


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(_TEXT, _VALUE, max_size=6), st.integers(1, 40), st.booleans())
def test_spans_are_the_objects_entries_whatever_the_chunks(obj, chunk, indent):
    text = json.dumps(obj, indent=2 if indent else None, ensure_ascii=False).encode()
    assert _entries(text, chunk) == list(obj.items())


def test_a_file_scanned_in_chunks(tmp_path):
    obj = {f"q{i}": {"question": f'is the "x\\" {i}}}', "ids": [i, {"a": [i]}]} for i in range(500)}
    path = tmp_path / "questions.json"
    path.write_bytes(orjson.dumps(obj))
    spans = np.concatenate(list(jsonspans.object_spans(path, chunk_bytes=997)))
    assert len(spans) == 500
    whole = b"{" + jsonspans.read_range(path, int(spans[0, 0]), int(spans[-1, 1])) + b"}"
    assert orjson.loads(whole) == obj
    for empty in (b"{}", b" { } \n"):
        assert sum(len(s) for s in jsonspans.object_spans(empty)) == 0


@pytest.mark.parametrize(("text", "reason"), [
    (b"", "empty"),
    (b" \n\t ", "empty"),
    (b"[1, 2]", "not a JSON object"),
    (b"    [1, 2]", "not a JSON object"),  # whatever chunk the first byte that is not whitespace falls in
    (b'{"a": {"b": 1}', "ends inside the object"),
    (b'{"a": "}', "ends inside the object"),
    (b'{"a": 1}}', "more after the object's closing brace"),
    (b'{"a": 1} {"b": 2}', "more after the object's closing brace"),
    (b'{"a": 1} x', "more after the object's closing brace"),
])
def test_broken_objects_are_named(text, reason):
    for chunk in (1, 3, 1 << 20):
        with pytest.raises(CorpusReadError, match=reason):
            list(jsonspans.object_spans(text, "GQA questions file q.json", chunk_bytes=chunk))


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(CorpusReadError, match="cannot read GQA questions file"):
        list(jsonspans.object_spans(tmp_path / "absent.json", "GQA questions file absent.json"))
