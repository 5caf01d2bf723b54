"""virl_train.env: crops cut the right pixels, grow/clip/reject as specified, respect the budget, deterministically."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from virl_data.core.errors import ConfigError
from virl_data.core.types import Box
from virl_train.actions import ERRORS
from virl_train.env import CROP_TEXT, LAST_TEXT, CropEnv, crop_region, system_prompt
from virl_train.types import ActionKind

SMALL = {"min_pixels": 28 * 28, "max_pixels": 28 * 28 * 64}


def coordinate_image(w: int = 200, h: int = 120) -> Image.Image:
    """Pixel (x, y) has colour (x, y, 7): a crop's content reveals exactly where it was cut."""
    xs, ys = np.meshgrid(np.arange(w), np.arange(h))
    arr = np.stack([xs, ys, np.full_like(xs, 7)], axis=-1).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def make_env(convention: str = "abs", **kw) -> CropEnv:
    return CropEnv(convention, **{**SMALL, **kw})


def crop(env: CropEnv, box) -> object:
    return env.step(f"<crop>{list(box)}</crop>")


def test_crop_cuts_the_expected_pixels():
    env = make_env()
    obs = env.reset(coordinate_image(), "q?")
    assert (
        obs.image.size == (200, 120)
        and obs.text == "q?"
        and obs.frame == Box(0, 0, 200, 120)
    )
    result = crop(
        env, (28, 14, 84, 42)
    )  # 56 x 28: a multiple of 28, so shown unresized
    view = result.observation
    assert result.action.kind is ActionKind.CROP and not result.done
    assert (
        view.frame == Box(28, 14, 84, 42)
        and view.resized == (56, 28) == view.image.size
    )
    pixels = np.asarray(view.image)
    np.testing.assert_array_equal(pixels[0, :, 0], np.arange(28, 84))
    np.testing.assert_array_equal(pixels[:, 0, 1], np.arange(14, 42))
    assert view.text == CROP_TEXT.format(index=1, limit=4) and view.index == 1


def test_small_box_grows_around_its_centre():
    env = make_env()
    env.reset(coordinate_image(), "q")
    view = crop(env, (100, 50, 110, 60)).observation
    assert view.frame == Box(91, 41, 119, 69)
    assert tuple(np.asarray(view.image)[0, 0, :2]) == (91, 41)


@pytest.mark.parametrize(
    ("box", "size", "expected"),
    [
        (
            Box(0, 40, 10, 50),
            (100, 100),
            Box(0, 31, 28, 59),
        ),  # grown, then moved inside at the left border
        (
            Box(95, 95, 100, 100),
            (100, 100),
            Box(72, 72, 100, 100),
        ),  # bottom-right corner
        (
            Box(2, 2, 8, 8),
            (20, 10),
            Box(0, 0, 20, 10),
        ),  # image smaller than min_crop: the whole image
        (
            Box(10.4, 10.6, 50.2, 50.5),
            (100, 100),
            Box(10, 10, 51, 51),
        ),  # snapped outwards to whole pixels
        (Box(0, 0, 100, 1), (100, 100), Box(0, 0, 100, 28)),
        (
            Box(0, 0, 50, 42.000000000000004),
            (100, 100),
            Box(0, 0, 50, 42),
        ),  # float noise is not a pixel more  # thin box grown to min_crop: aspect 3.6 is fine
    ],
)
def test_crop_region_geometry(box, size, expected):
    assert crop_region(box, size, 28, 100) == expected


def test_crop_region_rejects_extreme_aspect():
    assert crop_region(Box(0, 0, 200, 1), (200, 200), 1, 100) == "aspect_ratio"
    assert crop_region(Box(0, 0, 200, 2), (200, 200), 1, 100) == Box(
        0, 0, 200, 2
    )  # exactly 100 is allowed


def test_env_aspect_reject_is_invalid():
    env = make_env(min_crop=1, max_aspect=10)
    env.reset(coordinate_image(), "q")
    result = crop(env, (0, 0, 200, 10))
    assert (
        result.action.kind is ActionKind.INVALID
        and result.action.error == "aspect_ratio"
    )
    assert (
        result.observation.image is None
        and ERRORS["aspect_ratio"] in result.observation.text
    )


def test_out_of_image_within_tolerance_is_clipped_and_resized():
    env = make_env()
    env.reset(coordinate_image(), "q")
    view = crop(env, (-2, -2, 50, 50)).observation  # 2 px out < 2% of 200 px
    assert view.frame == Box(0, 0, 50, 50)
    assert view.image.size == view.resized == (56, 56)  # smart_resize: 50 → 56


@pytest.mark.parametrize(
    "box", [(0, 0, 1000, 800), (0, 0, 1000, 30), (480, 380, 490, 390), (0, 0, 30, 800)]
)
def test_resize_keeps_pixels_in_bounds_and_aspect(box):
    lo, hi = 56 * 56, 28 * 28 * 64
    env = CropEnv("abs", min_pixels=lo, max_pixels=hi)
    env.reset(coordinate_image(1000, 800), "q")
    view = crop(env, box).observation
    w, h = view.image.size
    assert (w, h) == view.resized
    assert lo <= w * h <= hi and w % 28 == 0 and h % 28 == 0
    fw, fh = view.frame.w, view.frame.h
    assert (
        abs(np.log((w / h) / (fw / fh))) < 0.7
    )  # aspect kept up to rounding to 28-pixel multiples


def test_max_actions_then_the_next_turn_must_answer():
    env = make_env(max_actions=2)
    env.reset(coordinate_image(), "q")
    first = crop(env, (0, 0, 56, 56))
    assert first.observation.text == CROP_TEXT.format(index=1, limit=2)
    second = env.step("garbage")  # an INVALID action counts
    assert second.action.error == "no_action" and not second.done
    assert second.observation.text.endswith(LAST_TEXT) and second.observation.index == 2
    third = crop(env, (0, 0, 56, 56))
    assert third.done and third.observation is None
    assert (
        third.action.kind is ActionKind.INVALID and third.action.error == "action_limit"
    )
    assert [a.turn for a in env.actions] == [0, 1, 2] and env.done
    with pytest.raises(RuntimeError):
        env.step("<answer>x</answer>")


def test_answer_after_the_last_crop_ends_cleanly():
    env = make_env(max_actions=1)
    env.reset(coordinate_image(), "q")
    assert crop(env, (0, 0, 56, 56)).observation.text.endswith(LAST_TEXT)
    result = env.step("<answer>red</answer>")
    assert result.done and result.action.answer == "red" and len(env.actions) == 1


def test_zero_budget_means_answer_first():
    env = make_env(max_actions=0)
    env.reset(coordinate_image(), "q")
    result = crop(env, (0, 0, 56, 56))
    assert result.done and result.action.error == "action_limit"


def test_invalid_action_keeps_the_view_and_counts():
    env = make_env(max_actions=4)
    env.reset(coordinate_image(), "q")
    bad = crop(env, (30, 20, 10, 40))
    assert bad.action.error == "inverted_box" and bad.observation.image is None
    assert (
        bad.observation.text.startswith("<crop_error>Action 1 of 4")
        and ERRORS["inverted_box"] in bad.observation.text
    )
    assert bad.observation.frame == Box(0, 0, 200, 120)
    assert crop(env, (0, 0, 56, 56)).observation.index == 2


def test_answer_immediately():
    env = make_env()
    env.reset(coordinate_image(), "q")
    result = env.step("It is <answer>red</answer>")
    assert result.done and result.observation is None and env.actions == ()


def test_step_before_reset_raises():
    with pytest.raises(RuntimeError):
        make_env().step("<answer>x</answer>")


def test_deterministic():
    def run():
        env = CropEnv("qwen2_norm1000", min_pixels=56 * 56, max_pixels=28 * 28 * 16)
        env.reset(coordinate_image(333, 211), "q")
        return [
            np.asarray(crop(env, b).observation.image)
            for b in ([100, 100, 730, 420], [0, 0, 1000, 1000])
        ]

    for a, b in zip(run(), run(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_original_frame_uses_the_original_view_size_after_a_crop():
    # qwen25: boxes are pixels of the ORIGINAL as resized; a crop in between must not change that mapping
    env = CropEnv("qwen25_abs_resized", **SMALL)
    obs = env.reset(coordinate_image(1000, 500), "q")
    assert obs.resized == (
        308,
        140,
    )  # smart_resize(500, 1000) under 28*28*64 pixels: b = 3.157, 5 x 28, 11 x 28
    a = crop(env, (30.8, 14, 154, 70)).action
    b = crop(env, (30.8, 14, 154, 70)).action
    assert a.box.as_tuple() == pytest.approx((100, 50, 500, 250)) and a.box == b.box


def test_last_crop_frame_maps_back_to_the_original():
    env = CropEnv("qwen2_norm1000", frame="last_crop", **SMALL)
    env.reset(coordinate_image(), "q")
    # 0-1000 of 200 x 120 → [28, 12, 84, 42]
    assert crop(env, (140, 100, 420, 350)).observation.frame == Box(28, 12, 84, 42)
    inner = crop(env, (0, 0, 500, 1000))  # left half of the 56 x 30 view
    assert inner.action.box == Box(28, 12, 56, 42) == inner.observation.frame
    assert tuple(np.asarray(inner.observation.image)[0, 0, :2]) == (28, 12)


def test_bad_parameters_raise_config_error():
    with pytest.raises(ConfigError):
        CropEnv("coco_xywh")
    with pytest.raises(ConfigError):
        CropEnv("abs", fmt="xml")
    with pytest.raises(ConfigError):
        CropEnv("abs", max_actions=-1)


@pytest.mark.parametrize(
    ("convention", "needle"),
    [
        ("qwen2_norm1000", "0 to 1000"),
        ("qwen3_norm1000", "0 to 999"),
        ("qwen25_abs_resized", "224 x 112 pixels"),
        ("abs", "1000 x 500 pixels"),
        ("rel_xyxy", "0 to 1"),
    ],
)
def test_system_prompt_names_the_convention(convention, needle):
    text = system_prompt(
        convention, (1000, 500), resized=(224, 112), max_actions=3, scale=999
    )
    assert (
        needle in text
        and "<crop>[x1, y1, x2, y2]</crop>" in text
        and "at most 3 times" in text
    )
    assert "<answer>" in text


def test_system_prompt_json_and_frame():
    text = system_prompt("abs", (10, 10), fmt="json", frame="last_crop")
    assert '"bbox_2d"' in text and "currently looking at" in text
    with pytest.raises(ConfigError):
        system_prompt("coco_xywh", (10, 10))


def test_region_transform_changes_the_pixels_not_the_action():
    """The illusion-probe hook: the env cuts the transformed region, the action keeps the model's box."""
    seen = []

    def shift(region, image_size):
        seen.append((region, image_size))
        return Box(region.x1 + 100, region.y1 + 50, region.x2 + 100, region.y2 + 50)

    env = make_env(region_transform=shift)
    env.reset(coordinate_image(), "q")
    result = crop(env, (28, 14, 84, 42))
    assert seen == [(Box(28, 14, 84, 42), (200, 120))]  # called with the region crop_region chose
    assert result.action.kind is ActionKind.CROP and result.action.box == Box(28, 14, 84, 42)
    view = result.observation
    assert view.frame == Box(128, 64, 184, 92) and view.image.size == (56, 28)
    assert tuple(np.asarray(view.image)[0, 0, :2]) == (128, 64)  # pixels come from the shifted region
    plain = make_env()
    plain.reset(coordinate_image(), "q")
    assert crop(plain, (28, 14, 84, 42)).observation.frame == Box(28, 14, 84, 42)


def test_region_transform_must_stay_inside_the_image():
    env = make_env(region_transform=lambda region, size: Box(150, 0, 250, 50))
    env.reset(coordinate_image(), "q")
    with pytest.raises(ConfigError, match="region_transform"):
        crop(env, (28, 14, 84, 42))
