"""virl_data.core.answers: table-driven answer scoring, hedges, not-applicable golds, adversarial strings."""

from __future__ import annotations

import pytest

from virl_data.core.answers import normalize_answer, parse_numbers, score_answer

OPTS = ["dog", "cat", "bird"]

# (pred, gold, kwargs, expected)
CASES = [
    # exact match after normalization
    ("red", "red", {}, 1.0),
    ("The Red.", "red", {}, 1.0),
    ("  RED \n", "red", {}, 1.0),
    ("a red car", "red car", {}, 1.0),
    ("blue", "red", {}, 0.0),
    ("red car", "red", {}, 0.0),
    ("Yes.", "yes", {}, 1.0),
    ("no", "yes", {}, 0.0),
    ("either red or blue", "red", {}, 0.0),
    ("red or blue", "red", {}, 0.0),
    ("red\nblue", "red", {}, 0.0),
    ("<answer>red</answer>", "red", {}, 1.0),
    ("<answer><answer>red</answer></answer>", "red", {}, 1.0),
    ("<answer>red</answer><answer>blue</answer>", "red", {}, 0.0),
    # numbers and number words
    ("Two", "2", {}, 1.0),
    ("2", "two", {}, 1.0),
    ("2.0", "2", {}, 1.0),
    ("there are 3 apples", "3", {}, 1.0),
    ("3", "2", {}, 0.0),
    ("2 or 3", "2", {}, 0.0),
    ("two or three", "2", {}, 0.0),
    ("1,000", "1000", {}, 1.0),
    ("-3.5", "-3.5", {}, 1.0),
    ("3.5", "-3.5", {}, 0.0),
    ("105", "100", {"rel_tol": 0.1}, 1.0),
    ("105", "100", {}, 0.0),
    ("none", "0", {}, 1.0),
    ("3 apples", "three", {"answer_type": "count"}, 1.0),
    ("9" * 400, "9", {}, 0.0),
    ("1e400", "1", {}, 0.0),
    # multiple choice with options
    ("B", "B", {"options": OPTS}, 1.0),
    ("(B)", "B", {"options": OPTS}, 1.0),
    ("B.", "B", {"options": OPTS}, 1.0),
    ("b)", "B", {"options": OPTS}, 1.0),
    ("B. cat", "B", {"options": OPTS}, 1.0),
    ("(B) cat", "cat", {"options": OPTS}, 1.0),
    ("cat", "B", {"options": OPTS}, 1.0),
    ("a cat", "(B)", {"options": OPTS}, 1.0),
    ("The answer is B", "B", {"options": OPTS}, 1.0),
    ("A", "B", {"options": OPTS}, 0.0),
    ("A or B", "B", {"options": OPTS}, 0.0),
    ("cat or dog", "B", {"options": OPTS}, 0.0),
    ("B. dog", "B", {"options": OPTS}, 0.0),
    ("B", "B", {"options": {"A": "yes", "B": "no"}}, 1.0),
    ("no", "B", {"options": {"A": "yes", "B": "no"}}, 1.0),
    # letters without options
    ("(C)", "C", {}, 1.0),
    ("c", "C", {}, 1.0),
    ("A or C", "C", {}, 0.0),
    # empty / missing predictions
    ("", "red", {}, 0.0),
    (None, "red", {}, 0.0),
    (None, "B", {"options": OPTS}, 0.0),
    (None, "2", {}, 0.0),
]


@pytest.mark.parametrize(("pred", "gold", "kw", "expected"), CASES)
def test_score_answer(pred, gold, kw, expected):
    assert score_answer(pred, gold, **kw) == expected


# golds that cannot be parsed for their type are not applicable (None), never 1.0/0.0 by accident
NOT_APPLICABLE = [
    ("red", "", {}),
    ("red", "   ", {}),
    ("the", "the", {}),  # normalizes to nothing
    ("2", "red", {"answer_type": "numeric"}),
    ("2", "2 or 3", {"answer_type": "numeric"}),
    ("B", "Z", {"options": OPTS}),
    ("B", "fish", {"options": OPTS}),
    ("B", "dog or cat", {"options": OPTS}),
]


@pytest.mark.parametrize(("pred", "gold", "kw"), NOT_APPLICABLE)
def test_unparseable_gold_is_not_applicable(pred, gold, kw):
    assert score_answer(pred, gold, **kw) is None


def test_semantic_answer_type_falls_back_to_auto():
    # records carry types like "color": not a scoring rule, so the gold decides (here: exact match)
    assert score_answer("Red", "red", answer_type="color") == 1.0
    assert score_answer("two", "2", answer_type="color") == 1.0


def test_normalize_and_parse_numbers():
    assert normalize_answer("  The <b>Two</b> red-ish CARS!\n") == "2 redish cars"
    assert normalize_answer("3.5, 1,000.") == "3.5 1,000"
    assert parse_numbers("two, 1,000 and -3.5 and 1e400") == [2.0, 1000.0, -3.5]


def test_huge_adversarial_input_is_fast_and_wrong():
    pred = ("<a>" * 5000) + "red " * 5000 + ("</a>" * 5000)
    assert score_answer(pred, "red") == 0.0
    assert score_answer("1 " * 10000, "1") == 1.0  # one distinct number repeated is not a hedge
    assert score_answer("1 2 " * 10000, "1") == 0.0


def test_choice_without_options_compares_option_text():
    from virl_data.core.answers import score_answer

    # the shapes world asks "Which is closer to X: the blue circle or the green square?" with the option text as gold
    assert score_answer("The blue circle.", "the blue circle", answer_type="choice") == 1.0
    assert score_answer("the green square", "the blue circle", answer_type="choice") == 0.0
    assert score_answer("B", "B", answer_type="choice") == 1.0
