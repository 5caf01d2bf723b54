"""The shapes world: determinism, slices, pixel-exact boxes, answers recomputed independently from the scene."""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from virl_data.curation import checks
from virl_data.core.errors import ConfigError, VirlError
from virl_data.miners import MINERS
from virl_data.miners import shapes
from virl_data.miners.shapes import COLORS, FAMILIES, KINDS, SIZES, ShapesConfig, generate, make_scene, render_scene
from virl_data.core.schema import frame_to_records, records_to_frame
from virl_data.core.types import Box, Status, record_id

CFG = ShapesConfig(image_size=(128, 128))
N = 400  # 100 scenes at 4 questions each
LOOKS = {"color_of": 1, "shape_of": 1, "count": 1, "nearest_color": 2, "compare_size": 2, "closer_to": 3,
         "same_color_nearest": 3}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    records = list(generate(N, seed=0, image_dir=root, config=CFG))
    scenes = {i: make_scene(i, seed=0, config=CFG) for i in range(N // CFG.questions_per_image)}
    return root, records, scenes


def scene_of(rec, scenes):
    return scenes[int(rec.provenance.native_id("scene"))]


# --- an independent reading of the questions -------------------------------------------------------------------------
def matching(scene, phrase: str) -> list[int]:
    """Indices of the shapes a phrase such as "large red square", "red object", "circles" describes."""
    words = phrase.split()
    want = {}
    for w in words:
        w = w[:-1] if w.endswith("s") and w[:-1] in KINDS else w
        if w in SIZES:
            want["size"] = w
        elif w in COLORS:
            want["color"] = w
        elif w in KINDS:
            want["kind"] = w
        else:
            assert w in ("object", "objects"), f"unexpected word {w!r} in {phrase!r}"
    return [i for i, s in enumerate(scene.shapes) if all(getattr(s, a) == v for a, v in want.items())]


def the(scene, phrase: str) -> int:
    found = matching(scene, phrase)
    assert len(found) == 1, f"{phrase!r} names {len(found)} shapes"
    return found[0]


def centres(scene) -> np.ndarray:
    return np.array([[s.x + s.side / 2, s.y + s.side / 2] for s in scene.shapes])


def nearest(scene, anchor: int, among: list[int]) -> int:
    """Nearest by centre distance; also asserts the winner is clear (runner-up >= 1.3x farther)."""
    d = np.linalg.norm(centres(scene)[among] - centres(scene)[anchor], axis=1)
    order = np.argsort(d)
    if len(among) > 1:
        assert d[order[1]] >= CFG.nearest_margin * d[order[0]]
    return among[order[0]]


def expected(rec, scene) -> tuple[str, str, list[list[int]]]:
    """(family, answer, chain as shape indices per step) recomputed from the question text and the scene alone."""
    q, n = rec.question, len(scene.shapes)
    if m := re.fullmatch(r"What colour is the shape nearest to the (.+)\?", q):
        a = the(scene, m[1])
        tgt = nearest(scene, a, [j for j in range(n) if j != a])
        return "nearest_color", scene.shapes[tgt].color, [[a], [tgt]]
    if m := re.fullmatch(r"What shape is nearest to the other object that has the same colour as the (.+)\?", q):
        r = the(scene, m[1])
        (mid,) = [j for j in range(n) if j != r and scene.shapes[j].color == scene.shapes[r].color]
        tgt = nearest(scene, mid, [j for j in range(n) if j != mid])
        assert tgt != r
        return "same_color_nearest", scene.shapes[tgt].kind, [[r], [mid], [tgt]]
    if m := re.fullmatch(r"What colour is the (.+)\?", q):
        i = the(scene, m[1])
        return "color_of", scene.shapes[i].color, [[i]]
    if m := re.fullmatch(r"What shape is the (.+)\?", q):
        i = the(scene, m[1])
        return "shape_of", scene.shapes[i].kind, [[i]]
    if m := re.fullmatch(r"How many (.+) are there\?", q):
        idx = sorted(matching(scene, m[1]), key=lambda i: scene.shapes[i].x)
        return "count", str(len(idx)), [idx]
    if m := re.fullmatch(r"Is the (.+) larger than the (.+)\?", q):
        a, b = the(scene, m[1]), the(scene, m[2])
        ra, rb = SIZES.index(scene.shapes[a].size), SIZES.index(scene.shapes[b].size)
        assert ra != rb
        return "compare_size", ("yes" if ra > rb else "no"), [[a], [b]]
    if m := re.fullmatch(r"Which is closer to the (.+): the (.+) or the (.+)\?", q):
        a, b, c = (the(scene, g) for g in m.groups())
        win = nearest(scene, a, [b, c])
        return "closer_to", (m[2] if win == b else m[3]), [[a], [b], [c]]
    raise AssertionError(f"unparsed question {q!r}")


# --- tests -----------------------------------------------------------------------------------------------------------
def test_answers_and_chains_recomputed_from_scene(world):
    _, records, scenes = world
    for rec in records:
        scene = scene_of(rec, scenes)
        family, answer, chain = expected(rec, scene)
        assert (rec.question_type, rec.answer) == (family, answer), rec.question
        assert [[int(k) for k in s.source_ref.split(",")] for s in rec.chain] == chain, rec.question
        assert [list(s.boxes) for s in rec.chain] == [[scene.shapes[i].box for i in step] for step in chain]


def test_every_family_appears_with_its_chain_length(world):
    _, records, _ = world
    families = Counter(r.question_type for r in records)
    assert set(families) == set(FAMILIES)
    assert min(families.values()) >= 5, families
    for r in records:
        assert len(r.chain) == LOOKS[r.question_type]
        assert r.answer_type == {"color_of": "color", "nearest_color": "color", "shape_of": "shape",
                                 "same_color_nearest": "shape", "count": "number", "compare_size": "yes/no",
                                 "closer_to": "choice"}[r.question_type]
        assert [s.role for s in r.chain].count("target") == (2 if r.question_type == "compare_size" else 1)


def test_counts_are_exact_and_boxes_left_to_right(world):
    _, records, scenes = world
    counted = [r for r in records if r.question_type == "count"]
    assert len(counted) >= 20 and {r.answer for r in counted} >= {"1", "2", "3"}
    for r in counted:
        (step,) = r.chain
        assert int(r.answer) == len(step.boxes) == len(matching(scene_of(r, scenes), step.phrase))
        xs = [b.x1 for b in step.boxes]
        assert xs == sorted(xs)


def test_yes_no_balanced_and_answer_vocabulary_small(world):
    _, records, _ = world
    yn = Counter(r.answer for r in records if r.answer_type == "yes/no")
    assert yn["yes"] >= 10 and yn["no"] >= 10
    vocab = {w for r in records for w in r.answer.split()}
    assert vocab <= {*COLORS, *KINDS, *SIZES, "yes", "no", *"0123456789"}, vocab


def test_boxes_are_the_drawn_pixels(world):
    root, records, scenes = world
    gap = CFG.min_gap // 2
    for i in range(40):
        scene = scenes[i]
        pixels = np.asarray(Image.open(root / shapes.image_path(i, 0)).convert("RGB"))
        assert (pixels == np.asarray(render_scene(scene))).all()
        drawn = (pixels != np.array(scene.background)).any(axis=2)
        for s in scene.shapes:
            x1, y1, x2, y2 = (int(v) for v in s.box.as_tuple())
            wx, wy = max(x1 - gap, 0), max(y1 - gap, 0)
            window = drawn[wy:y2 + gap, wx:x2 + gap]  # other shapes are >= min_gap away: none falls in here
            ys, xs = np.nonzero(window)
            got = (wx + xs.min(), wy + ys.min(), wx + xs.max() + 1, wy + ys.max() + 1)
            assert np.allclose(got, s.box.as_tuple(), atol=1), (s, got)
            assert (pixels[wy:y2 + gap, wx:x2 + gap][window] == COLORS[s.color]).all()
            drawn[y1:y2, x1:x2] = False
        assert not drawn.any(), "pixels drawn outside every recorded box"


def test_shapes_never_overlap_and_keep_the_gap(world):
    _, _, scenes = world
    for scene in scenes.values():
        assert CFG.min_shapes <= len(scene.shapes) <= CFG.max_shapes
        for i, a in enumerate(scene.shapes):
            assert 0 <= a.box.x1 and a.box.x2 <= scene.width and 0 <= a.box.y1 and a.box.y2 <= scene.height
            for b in scene.shapes[i + 1:]:
                sep = max(b.box.x1 - a.box.x2, a.box.x1 - b.box.x2, b.box.y1 - a.box.y2, a.box.y1 - b.box.y2)
                assert sep >= CFG.min_gap


def test_size_classes_are_clearly_different():
    assert CFG.sides() == (12, 19, 32) and ShapesConfig().sides() == (20, 34, 56)
    s, m, lg = CFG.sides()
    assert m / s >= 1.5 and lg / m >= 1.5


def test_image_files_match_image_refs(world):
    root, records, _ = world
    refs = {r.image for r in records}
    assert len(refs) == N // CFG.questions_per_image
    for ref in refs:
        data = (root / ref.path).read_bytes()
        assert hashlib.sha1(data).hexdigest() == ref.sha1
        assert Image.open(root / ref.path).size == (ref.width, ref.height) == CFG.image_size


def test_provenance_ids_and_status(world):
    _, records, _ = world
    assert len({r.id for r in records}) == N
    for k, r in enumerate(records):
        assert r.provenance.source == "shapes" and r.provenance.source_split is None
        assert r.provenance.miner == "shapes@1" and r.status is Status.MINED and r.checks == ()
        assert r.provenance.native_ids == (("scene", str(k // 4)), ("question", str(k % 4)))
        assert r.id == record_id("shapes", "0", str(k // 4), str(k % 4))
    per_scene = Counter(r.image.path for r in records)
    assert set(per_scene.values()) == {4}
    assert len({(r.image.path, r.question) for r in records}) == N  # no question asked twice of one scene


def test_deterministic_records_and_image_bytes(tmp_path):
    a = list(generate(24, seed=7, image_dir=tmp_path / "a", config=CFG))
    b = list(generate(24, seed=7, image_dir=tmp_path / "b", config=CFG))
    assert a == b
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    assert len(files) == 6
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    c = list(generate(24, seed=8, image_dir=tmp_path / "c", config=CFG))
    assert [r.question for r in c] != [r.question for r in a]
    assert {r.image.sha1 for r in c}.isdisjoint({r.image.sha1 for r in a})
    assert {r.id for r in c}.isdisjoint({r.id for r in a})


def test_slices_are_independent(tmp_path):
    whole = list(generate(30, seed=3, image_dir=None, config=CFG))
    assert list(generate(11, seed=3, start=17, image_dir=None, config=CFG)) == whole[17:28]
    part = list(generate(5, seed=3, start=6, image_dir=tmp_path, config=CFG))
    full = list(generate(11, seed=3, image_dir=tmp_path / "full", config=CFG))
    assert part == full[6:]
    assert all(r.image.sha1 is None for r in whole)
    assert make_scene(4, seed=3, config=CFG) == make_scene(4, seed=3, config=CFG)
    assert make_scene(4, seed=3, config=CFG) != make_scene(5, seed=3, config=CFG)


@pytest.mark.parametrize("n", [0, 1, 3, 4, 7, 13])
def test_exactly_n_records(n):
    recs = list(generate(n, seed=1, config=CFG))
    assert len(recs) == n
    assert len({r.image.path for r in recs}) == math.ceil(n / 4)


def test_default_size_and_restricted_families(tmp_path):
    recs = list(generate(8, image_dir=tmp_path))
    assert Image.open(tmp_path / recs[0].image.path).size == (224, 224) == (recs[0].image.width, recs[0].image.height)
    only = list(generate(40, config=ShapesConfig(image_size=(128, 128), families=("count", "compare_size"))))
    assert {r.question_type for r in only} == {"count", "compare_size"}


def test_records_pass_the_checks_and_round_trip_the_schema(world):
    root, records, _ = world
    df = records_to_frame(records)
    assert frame_to_records(df) == records
    verified = checks.verify(df, checks.CheckConfig(), image_root=root)
    assert verified.height == N and (verified["status"] == "accepted").all()


def test_mine_is_the_registered_miner(tmp_path):
    assert MINERS["shapes"] is shapes.mine
    recs = list(shapes.mine(tmp_path, limit=6))
    assert len(recs) == 6 and all((tmp_path / r.image.path).is_file() for r in recs)
    assert len(list(shapes.mine(None))) == 200


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_shapes": 5, "max_shapes": 3},
        {"families": ("colour",)},
        {"families": ()},
        {"image_size": (32, 32)},
        {"image_size": (128,)},
        {"background": COLORS["red"]},
        {"questions_per_image": 0},
        {"nearest_margin": 0.5},
    ],
)
def test_bad_config_is_a_user_error(kwargs):
    with pytest.raises(ConfigError):
        ShapesConfig(**kwargs)


def test_bad_counts_are_user_errors():
    with pytest.raises(VirlError, match="n_records"):
        generate(-1)
    with pytest.raises(ValueError, match="unknown shape"):
        shapes.Shape("hexagon", "red", "small", 0, 0, 10)
    assert shapes.Shape("circle", "red", "small", 3, 4, 10).box == Box(3, 4, 13, 14)


def test_grid_world_centres_each_shape_in_its_own_cell():
    cfg = ShapesConfig(image_size=(112, 112), min_shapes=2, max_shapes=3, grid=2, size_fractions=(0.18, 0.27, 0.38))
    for i in range(20):
        scene = make_scene(i, seed=3, config=cfg)
        cells = set()
        for s in scene.shapes:
            cx, cy = (s.box.x1 + s.box.x2) / 2, (s.box.y1 + s.box.y2) / 2
            col, row = int(cx // 56), int(cy // 56)
            assert abs(s.x + s.side / 2 - (col * 56 + 28)) <= 1 and abs(s.y + s.side / 2 - (row * 56 + 28)) <= 1
            cells.add((row, col))
        assert len(cells) == len(scene.shapes) and 2 <= len(scene.shapes) <= 3
    assert make_scene(5, seed=3, config=cfg) == make_scene(5, seed=3, config=cfg)


@pytest.mark.parametrize("kwargs, words", [
    ({"grid": 1, "max_shapes": 3}, "g*g >= max_shapes"),
    ({"grid": 3, "size_fractions": (0.1, 0.2, 0.4)}, "does not fit a grid cell"),
])
def test_grid_world_refuses_layouts_that_cannot_fit(kwargs, words):
    with pytest.raises(ConfigError, match=words):
        ShapesConfig(image_size=(112, 112), **kwargs)


def test_neighbour_questions_are_opt_in_and_chain_the_named_shape_then_its_neighbour_in_the_next_cell():
    cfg = ShapesConfig(image_size=(112, 112), min_shapes=2, max_shapes=3, questions_per_image=1, grid=2,
                       families=("neighbour_color",), size_fractions=(0.36, 0.41, 0.46))
    assert "neighbour_color" not in ShapesConfig().families  # the default stream of records is unchanged
    steps = {"right of": (1, 0), "left of": (-1, 0), "above": (0, -1), "below": (0, 1)}
    records = list(generate(120, seed=0, config=cfg))
    assert {r.question_type for r in records} == {"neighbour_color"} and len(records) == 120
    seen = set()
    for rec in records:
        m = re.fullmatch(r"What colour is the shape (right of|left of|above|below) the (.+)\?", rec.question)
        assert m, rec.question
        anchor, target = (step.boxes[0] for step in rec.chain)
        cell = lambda b: (int((b.x1 + b.x2) / 2 // 56), int((b.y1 + b.y2) / 2 // 56))  # noqa: E731
        (ax, ay), (tx, ty) = cell(anchor), cell(target)
        assert (tx - ax, ty - ay) == steps[m[1]]  # on the 2 x 2 grid: the next cell on that side
        assert [s.role for s in rec.chain] == ["context", "target"] and rec.answer in COLORS
        scene = make_scene(int(rec.provenance.native_id("scene")), seed=0, config=cfg)
        assert rec.answer == next(s.color for s in scene.shapes if s.box == target)
        seen.add(m[1])
    assert seen == set(steps)
    with pytest.raises(ConfigError, match="neighbour_color"):
        ShapesConfig(families=("nearest_colour",))
