"""Box answers as strings: exact round trip of the canonical box, and what is not a box answer."""

from __future__ import annotations

import dataclasses
import doctest

import pytest

from tests.conftest import make_record
from virl_data.core import boxanswer
from virl_data.core.boxanswer import answer_box, format_box, parse_box
from virl_data.core.types import Box


@pytest.mark.parametrize("box", [Box(0, 0, 1, 1), Box(468.3, 0.91, 640.0, 117.03), Box(1 / 3, 2 / 7, 1e4, 1e4 + 0.5),
                                 Box(-2.5, 0, 3, 4)])
def test_format_then_parse_gives_the_box_back_exactly(box):
    assert parse_box(format_box(box)) == box


@pytest.mark.parametrize("text", ["", "red", "[1, 2, 3]", "[1, 2, 3, 4, 5]", "[5, 5, 1, 9]", "[1, 1, 1, 9]",
                                  "[1, 2, inf, 4]", "[nan, 2, 3, 4]", "1, 2, 3, 4", "[1, 2, 3, 4] or [5, 6, 7, 8]",
                                  "[1e999, 2, 3, 4]", None])
def test_what_is_not_a_box_answer(text):
    assert parse_box(text) is None


def test_answer_box_only_for_box_answer_records():
    rec = dataclasses.replace(make_record(0), answer="[1, 2, 3, 4]", answer_type="box")
    assert answer_box(rec) == Box(1, 2, 3, 4)
    assert answer_box(dataclasses.replace(rec, answer_type="object")) is None


def test_docstring_examples():
    assert doctest.testmod(boxanswer).failed == 0
