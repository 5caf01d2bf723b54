"""virl_train.actions: table-driven parsing of model turns, adversarial strings, convention conversion."""

from __future__ import annotations

import pytest

from virl_data.core.errors import ConfigError
from virl_data.core.types import Box
from virl_train.actions import ERRORS, crop_of_crop, parse_numbers, parse_turn
from virl_train.types import ActionKind

CROP, ANSWER, INVALID = ActionKind.CROP, ActionKind.ANSWER, ActionKind.INVALID


def tag(text, **kw):
    """Parse in the tag format, absolute pixels of a 100 x 80 image unless told otherwise."""
    kw = {"turn": 0, "convention": "abs", "image_size": (100, 80), **kw}
    return parse_turn(text, **kw)


# (text, kind, box or answer or error code)
TAG_CASES = [
    ("<crop>[10, 20, 30, 40]</crop>", CROP, (10, 20, 30, 40)),
    (
        "I look left.\n<crop>\n[10,20,30,40]\n</crop>\nthen think",
        CROP,
        (10, 20, 30, 40),
    ),
    ("<CROP>[10, 20, 30, 40]</Crop>", CROP, (10, 20, 30, 40)),
    ("<crop>  [ 10.5 ,  20.25,30 ,   40.0 ]  </crop>", CROP, (10.5, 20.25, 30, 40)),
    ("<crop>(10 20 30 40)</crop>", CROP, (10, 20, 30, 40)),
    ("<crop>10, 20, 30, 40</crop>", CROP, (10, 20, 30, 40)),
    ("<crop>[1e1, 2E1, +30, 4.0e1]</crop>", CROP, (10, 20, 30, 40)),
    # several crops: the first wins
    ("<crop>[1, 2, 3, 4]</crop> and <crop>[10, 20, 30, 40]</crop>", CROP, (1, 2, 3, 4)),
    # crop and answer in one turn: whichever comes first
    ("<crop>[1, 2, 3, 4]</crop><answer>red</answer>", CROP, (1, 2, 3, 4)),
    ("<answer>red</answer><crop>[1, 2, 3, 4]</crop>", ANSWER, "red"),
    (
        "<think>hmm <b>bold</b></think>\n<answer>\n  a red square \n</answer>",
        ANSWER,
        "a red square",
    ),
    ("<answer>line one\nline two</answer>", ANSWER, "line one\nline two"),
    # an unclosed answer before a crop does not hide the crop
    ("<answer>maybe <crop>[1, 2, 3, 4]</crop>", CROP, (1, 2, 3, 4)),
    # slightly out of the image (tolerance 2% of 100 px = 2 px): clipped
    ("<crop>[-1.5, -2, 101, 81.9]</crop>", CROP, (0, 0, 100, 80)),
    # malformed
    ("", INVALID, "no_action"),
    ("The answer is red.", INVALID, "no_action"),
    (
        "<crop>[1, 2, 3, 4]",
        INVALID,
        "no_action",
    ),  # unclosed: the stop string must stay in the text
    ("<crop>[1, 2, 3]</crop>", INVALID, "malformed_box"),
    ("<crop>[1, 2, 3, 4, 5]</crop>", INVALID, "malformed_box"),
    ("<crop>[a, b, c, d]</crop>", INVALID, "malformed_box"),
    ("<crop>the red square</crop>", INVALID, "malformed_box"),
    ("<crop>[1, 2, 3, 4] please</crop>", INVALID, "malformed_box"),
    ("<crop>[1,, 2, 3, 4]</crop>", INVALID, "malformed_box"),
    ("<crop></crop>", INVALID, "malformed_box"),
    (
        "<crop>[\u0661, 2, 3, 4]</crop>",
        INVALID,
        "malformed_box",
    ),  # non-ASCII digits are not numbers here
    ("<crop>[nan, 2, 3, 4]</crop>", INVALID, "malformed_box"),
    ("<crop>[1e999, 2, 3, 4]</crop>", INVALID, "non_finite"),
    (
        "<crop>[0, 0, 1" + "0" * 300 + ", 50]</crop>",
        INVALID,
        "out_of_image",
    ),  # huge but finite
    ("<crop>[30, 20, 10, 40]</crop>", INVALID, "inverted_box"),
    ("<crop>[10, 40, 30, 20]</crop>", INVALID, "inverted_box"),
    ("<crop>[10, 20, 10, 40]</crop>", INVALID, "empty_box"),
    ("<crop>[-10, 0, 50, 50]</crop>", INVALID, "out_of_image"),
    ("<crop>[0, 0, 50, 90]</crop>", INVALID, "out_of_image"),
    ("<crop>[-5, -5, -3, -3]</crop>", INVALID, "out_of_image"),
    (
        "<crop>[100.5, 10, 101.5, 20]</crop>",
        INVALID,
        "out_of_image",
    ),  # within tolerance but clipped to nothing
    ("<crop><crop>[1, 2, 3, 4]</crop></crop>", INVALID, "nested_tags"),
    ("<answer>see <crop>[1, 2, 3, 4]</crop></answer>", INVALID, "nested_tags"),
    ("<answer><answer>red</answer></answer>", INVALID, "nested_tags"),
    ("<answer>   </answer>", INVALID, "empty_answer"),
]


@pytest.mark.parametrize(("text", "kind", "expected"), TAG_CASES)
def test_tag_format(text, kind, expected):
    action = tag(text, turn=3)
    assert action.kind is kind, action
    assert action.turn == 3 and action.raw == text
    if kind is CROP:
        assert (
            action.box == Box(*expected)
            and action.error is None
            and action.answer is None
        )
    elif kind is ANSWER:
        assert action.answer == expected and action.box is None and action.error is None
    else:
        assert action.error == expected and action.box is None
        assert expected in ERRORS


JSON_CASES = [
    (
        '{"name": "crop", "arguments": {"bbox_2d": [10, 20, 30, 40]}}',
        CROP,
        (10, 20, 30, 40),
    ),
    (
        '<tool_call>\n{"name": "crop", "arguments": {"bbox_2d": [10, 20, 30, 40]}}\n</tool_call>',
        CROP,
        (10, 20, 30, 40),
    ),
    (
        'think {not json} {"name": "crop", "arguments": {"bbox": [1.5, 2, 3, 4]}}',
        CROP,
        (1.5, 2, 3, 4),
    ),
    (
        '{"name": "crop", "arguments": {"bbox_2d": [1, 2, 3, 4]}} {"name": "crop", "arguments": {"bbox_2d": [5, 6, 7, 8]}}',
        CROP,
        (1, 2, 3, 4),
    ),
    ('{"name": "answer", "arguments": {"answer": "red"}}', ANSWER, "red"),
    (
        '<answer>red</answer> {"name": "crop", "arguments": {"bbox_2d": [1, 2, 3, 4]}}',
        ANSWER,
        "red",
    ),
    (
        '{"name": "crop", "arguments": {"bbox_2d": [1, 2, 3, 4]}} <answer>red</answer>',
        CROP,
        (1, 2, 3, 4),
    ),
    ('{"name": "crop", "arguments": {"bbox_2d": [1, 2, 3]}}', INVALID, "malformed_box"),
    (
        '{"name": "crop", "arguments": {"bbox_2d": ["1", "2", "3", "4"]}}',
        INVALID,
        "malformed_box",
    ),
    (
        '{"name": "crop", "arguments": {"bbox_2d": [true, 2, 3, 4]}}',
        INVALID,
        "malformed_box",
    ),
    ('{"name": "crop", "arguments": "bbox_2d"}', INVALID, "malformed_box"),
    (
        '{"name": "crop", "arguments": {"bbox_2d": [3, 2, 1, 4]}}',
        INVALID,
        "inverted_box",
    ),
    (
        '{"name": "crop", "arguments": {"bbox_2d": [1, 2, 3, 4e999]}}',
        INVALID,
        "non_finite",
    ),
    (
        '{"name": "zoom", "arguments": {"bbox_2d": [1, 2, 3, 4]}}',
        INVALID,
        "unknown_tool",
    ),
    ('{"name": "answer", "arguments": {"answer": 3}}', INVALID, "empty_answer"),
    (
        '{"name": "crop", "arguments": {"bbox_2d": [1, 2, 3, 4]}',
        INVALID,
        "malformed_json",
    ),
    (
        "<crop>[1, 2, 3, 4]</crop>",
        INVALID,
        "no_action",
    ),  # tag crops are not the json format
    ("nothing here", INVALID, "no_action"),
]


@pytest.mark.parametrize(("text", "kind", "expected"), JSON_CASES)
def test_json_format(text, kind, expected):
    action = tag(text, fmt="json")
    assert action.kind is kind, action
    if kind is CROP:
        assert action.box == Box(*expected)
    elif kind is ANSWER:
        assert action.answer == expected
    else:
        assert action.error == expected


@pytest.mark.parametrize(
    ("convention", "values", "kw", "expected"),
    [
        # 0-1000 of a 200 x 100 image
        ("qwen2_norm1000", "[100, 200, 500, 600]", {}, (20, 20, 100, 60)),
        ("qwen3_norm1000", "[100, 200, 500, 600]", {}, (20, 20, 100, 60)),
        (
            "qwen3_norm1000",
            "[0, 0, 999, 999]",
            {"params": {"scale": 999}},
            (0, 0, 200, 100),
        ),
        # pixels of the image as resized to 400 x 50 (the model saw that)
        (
            "qwen25_abs_resized",
            "[40, 10, 200, 50]",
            {"resized": (400, 50)},
            (20, 20, 100, 100),
        ),
        ("rel_xyxy", "[0.1, 0.2, 0.5, 0.6]", {}, (20, 20, 100, 60)),
        ("abs", "[20, 20, 100, 60]", {}, (20, 20, 100, 60)),
    ],
)
def test_conventions_convert_to_original_pixels(convention, values, kw, expected):
    action = parse_turn(
        f"<crop>{values}</crop>",
        turn=0,
        convention=convention,
        image_size=(200, 100),
        **kw,
    )
    assert action.kind is CROP
    assert action.box.as_tuple() == pytest.approx(expected)


def test_qwen25_without_resized_uses_smart_resize():
    # a 1000 x 500 image is seen at 1008 x 504
    action = parse_turn("<crop>[100.8, 50.4, 302.4, 252]</crop>", turn=0, convention="qwen25_abs_resized",
                        image_size=(1000, 500))  # fmt: skip
    assert action.box.as_tuple() == pytest.approx((100, 50, 300, 250))


def test_norm1000_edge_is_inside_and_beyond_tolerance_is_not():
    kw = {"turn": 0, "convention": "qwen2_norm1000", "image_size": (200, 100)}
    assert parse_turn("<crop>[0, 0, 1000, 1000]</crop>", **kw).box == Box(
        0, 0, 200, 100
    )
    assert parse_turn("<crop>[0, 0, 1010, 1000]</crop>", **kw).box == Box(
        0, 0, 200, 100
    )  # 2 px out: clipped
    assert (
        parse_turn("<crop>[0, 0, 1030, 1000]</crop>", **kw).error == "out_of_image"
    )  # 6 px > 4 px tolerance
    assert (
        parse_turn("<crop>[0, 0, 1030, 1000]</crop>", oob_tol=0.05, **kw).kind is CROP
    )


def test_crop_of_crop_maps_back_to_the_original():
    assert crop_of_crop(Box(0, 0, 10, 10), Box(50, 20, 150, 120)) == Box(50, 20, 60, 30)
    assert crop_of_crop(Box(5, 5, 100, 100), Box(0, 0, 100, 100)) == Box(5, 5, 100, 100)


def test_frame_parses_in_the_crop_coordinates():
    frame = Box(50, 20, 150, 120)  # a 100 x 100 crop, seen at 200 x 200
    kw = {"turn": 1, "image_size": (640, 480), "frame": frame}
    a = parse_turn("<crop>[0, 0, 500, 500]</crop>", convention="qwen2_norm1000", **kw)
    assert a.box == Box(50, 20, 100, 70)
    b = parse_turn(
        "<crop>[20, 40, 200, 200]</crop>",
        convention="qwen25_abs_resized",
        resized=(200, 200),
        **kw,
    )
    assert b.box == Box(60, 40, 150, 120)
    # out of the frame is out of what the model can see, even though it is inside the original image
    c = parse_turn("<crop>[0, 0, 1500, 500]</crop>", convention="qwen2_norm1000", **kw)
    assert c.error == "out_of_image"


def test_parse_numbers():
    assert parse_numbers("[1, 2.5, 3e1, -4]") == [1.0, 2.5, 30.0, -4.0]
    assert parse_numbers("[1, 2]") == "malformed_box"
    assert parse_numbers("[1, 2, inf, 4]") == "malformed_box"


def test_configuration_errors_raise():
    with pytest.raises(ConfigError, match="unknown model box convention"):
        parse_turn(
            "<crop>[1, 2, 3, 4]</crop>",
            turn=0,
            convention="coco_xywh",
            image_size=(10, 10),
        )
    with pytest.raises(ConfigError, match="action format"):
        parse_turn("x", turn=0, convention="abs", image_size=(10, 10), fmt="xml")
    with pytest.raises(ConfigError, match="unexpected"):
        parse_turn("<crop>[1, 2, 3, 4]</crop>", turn=0, convention="qwen2_norm1000", image_size=(10, 10),
                   params={"scale": 999})  # fmt: skip


def test_adversarial_text_is_fast_and_safe():
    text = "{" * 10_000 + "<crop>" * 2_000 + "<answer>ok</answer>"
    assert tag(text, fmt="json").answer == "ok"
    assert tag(text).answer == "ok"
    assert tag("\x00<crop>\x00[1,2,3,4]</crop>").error == "malformed_box"
