"""Visual Genome miner: exact chains hand-checked against the real VG files, ambiguity and malformed-input rejections."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from PIL import Image

from virl_data.core.errors import ConfigError, CorpusReadError
from virl_data.core.schema import frame_to_records, records_to_frame
from virl_data.core.types import Box, ImageRef, RationaleStep, Status, record_id
from virl_data.miners import vg


def _vg(shared_data: Path) -> Path:
    d = shared_data / "visual_genome"
    if not d.is_dir():
        pytest.skip(f"no Visual Genome sample at {d}")
    return d


def _image(root: Path, rel: str, size: tuple[int, int] = (800, 600)) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size).save(path)
    return root


def _mine(d: Path, n: int, **kw) -> dict[tuple[str, str], object]:
    recs = vg.mine(relationships=d / f"relationships_image{n}.json", attributes=d / f"attributes_image{n}.json", **kw)
    return {(r.provenance.native_id("relationship_id"), r.question_type): r for r in recs}


def _reasons(rec) -> list[str]:
    return [c.reason for c in rec.checks if c.name == "mining" and not c.passed]


# --- real records, hand-checked against relationships_image2.json / attributes_image2.json ---------------------------
@pytest.fixture
def image2(shared_data, tmp_path):
    return _mine(_vg(shared_data), 2, images=_image(tmp_path, "2.jpg"))


def test_relation_object_chain_is_subject_then_object(image2):
    rec = image2[("15964", "relation_object")]  # man 1023838 (324,320,142,255) carries backpack 5071 (359,362,72,81)
    assert (rec.question, rec.answer, rec.status) == ("What does the man carry?", "backpack", Status.MINED)
    assert rec.chain == (
        RationaleStep(boxes=(Box(324, 320, 466, 575),), phrase="man", role="context", source_ref="1023838"),
        RationaleStep(boxes=(Box(359, 362, 431, 443),), phrase="backpack", role="target", source_ref="5071"),
    )
    assert rec.image == ImageRef(path="2.jpg", width=800, height=600)
    assert rec.checks == ()
    assert rec.provenance.native_ids == (("image_id", "2"), ("relationship_id", "15964"), ("template", "relation_object"))
    assert rec.id == record_id("vg", "2", "15964", "relation_object")
    assert (rec.provenance.source, rec.provenance.miner, rec.answer_type) == ("vg", "vg@1", "object")


@pytest.mark.parametrize(
    ("rel", "question", "answer", "subject", "obj"),
    [
        # backpack 5071 attributes ["silver"]
        ("15947", "What colour is the backpack that the man wears?", "silver",
         ("man", Box(324, 320, 466, 575)), ("backpack", Box(359, 362, 431, 443))),
        # bike 5089 (415,403,33,69) next to car 1023836 (239,347,136,126), car attributes ["red", "parked"]
        ("15965", "What colour is the car that the bike is next to?", "red",
         ("bike", Box(415, 403, 448, 472)), ("car", Box(239, 347, 375, 473))),
        # crosswalk 5077 (0,492,366,107) ON road 1023841 (3,321,372,279), road attributes ["grey"] -> "gray"
        ("15971", "What colour is the road that the crosswalk is on?", "gray",
         ("crosswalk", Box(0, 492, 366, 599)), ("road", Box(3, 321, 375, 600))),
    ],
)
def test_relation_color_chains(image2, rel, question, answer, subject, obj):
    rec = image2[(rel, "relation_color")]
    assert (rec.question, rec.answer, rec.status, rec.answer_type) == (question, answer, Status.MINED, "color")
    assert [(s.phrase, s.boxes, s.role) for s in rec.chain] == [
        (subject[0], (subject[1],), "context"), (obj[0], (obj[1],), "target")]


def test_relationship_box_is_the_one_the_relationship_draws(shared_data):
    # rel 15927: sidewalk 1058534 is drawn (78,308,722,290) here, (77,331,722,266) in other relationships.
    rec = _mine(_vg(shared_data), 1)[("15927", "relation_object")]
    assert (rec.question, rec.answer) == ("What is the shade on?", "sidewalk")
    assert [s.boxes for s in rec.chain] == [(Box(119, 338, 393, 530),), (Box(78, 308, 800, 598),)]
    assert [s.source_ref for s in rec.chain] == ["5045", "1058534"]


# --- rejections ------------------------------------------------------------------------------------------------------
def test_no_images_means_image_size_unknown(shared_data):
    recs = list(vg.mine(relationships=_vg(shared_data) / "relationships_image2.json"))
    assert recs and all(r.status is Status.REJECTED for r in recs)
    assert all(r.image == ImageRef("2.jpg", 0, 0) for r in recs)
    assert all("image_size_unknown: VG image 2 (no images directory given)" in _reasons(r) for r in recs)


def test_image_found_in_vg_subdir(shared_data, tmp_path):
    recs = _mine(_vg(shared_data), 1, images=_image(tmp_path, "VG_100K_2/1.jpg", (800, 600)))
    assert recs[("15927", "relation_object")].image == ImageRef("VG_100K_2/1.jpg", 800, 600)
    missing = _mine(_vg(shared_data), 2, images=tmp_path)[("15964", "relation_object")]
    assert _reasons(missing) == [f"image_size_unknown: VG image 2: no 2.jpg under {tmp_path}"]


def _image_data(folder: Path, entries: list[dict]) -> Path:
    path = folder / "image_data.json"
    path.write_bytes(orjson.dumps(entries))
    return path


def test_image_data_gives_sizes_without_image_files(shared_data, tmp_path):
    """VG's image_data.json (VG 1.2 keys image 1 by ``image_id``; VG 1.0 keys by ``id``) sizes the images: the
    records of both real sample images come out as with the image files, none opened (there are none)."""
    url = "https://cs.stanford.edu/people/rak248/VG_100K_2/{}.jpg"
    data = _image_data(tmp_path, [{"image_id": 1, "width": 800, "height": 600, "url": url.format(1)},
                                  {"id": 2, "width": 640, "height": 480, "url": "http://x/elsewhere/2.jpg"}])
    from_data = {n: _mine(_vg(shared_data), n, image_data=data) for n in (1, 2)}
    assert {r.image for r in from_data[1].values()} == {ImageRef("VG_100K_2/1.jpg", 800, 600)}
    assert {r.image for r in from_data[2].values()} == {ImageRef("2.jpg", 640, 480)}
    with_files = _mine(_vg(shared_data), 1, images=_image(tmp_path / "img", "VG_100K_2/1.jpg", (800, 600)))
    assert records_to_frame(from_data[1].values()).equals(records_to_frame(with_files.values()))
    assert not any("image_size_unknown" in " ".join(_reasons(r)) for d in from_data.values() for r in d.values())


def test_docstring_examples():
    import doctest

    assert doctest.testmod(vg).failed == 0


def test_image_data_falls_back_to_files_and_rejects_bad_files(shared_data, tmp_path):
    data = _image_data(tmp_path, [{"image_id": 1, "width": 0, "height": 600}, {"image_id": 9, "width": 5}])
    assert vg.read_image_data(data) == {}  # no usable size: left out
    recs = _mine(_vg(shared_data), 1, image_data=data, images=_image(tmp_path / "img", "1.jpg", (320, 200)))
    assert {r.image for r in recs.values()} == {ImageRef("1.jpg", 320, 200)}
    bad = tmp_path / "bad.json"
    bad.write_text('{"image_id": 1}')
    with pytest.raises(CorpusReadError, match="must hold a list of image objects"):
        vg.read_image_data(bad)
    with pytest.raises(CorpusReadError, match="cannot read VG image data file"):
        vg.read_image_data(tmp_path / "absent.json")


@pytest.mark.parametrize(
    ("n", "rel", "template", "reason"),
    [
        (2, "15949", "relation_object", "ambiguous_referent: tree (3 objects)"),  # trees 5074, 5075, 5076
        (2, "15948", "relation_object", "ambiguous_referent: car (2 objects)"),  # cars 1023836, 5085
        # four "man" ids in image 1, but 1058532~3798576 and 1058529~3798577 are duplicates (IoU 0.77, 0.82)
        (1, "3186257", "relation_object", "ambiguous_referent: man (2 objects)"),
        (2, "15947", "relation_object", "ambiguous_answer: 'man wears' has 2 answers (backpack, sneakers)"),
        # shoes 1058525 merged sneakers 5048: brown + grey
        (1, "15928", "relation_color", "ambiguous_answer: shoes has 2 colours (brown, gray)"),
        (1, "15937", "relation_object", "duplicate_question: asked already for relationship 15928"),
        (2, "15972", "relation_object", "self_relation: walk sign says itself"),
    ],
)
def test_rejections_on_real_graph(shared_data, tmp_path, n, rel, template, reason):
    rec = _mine(_vg(shared_data), n, images=_image(tmp_path, f"{n}.jpg"))[(rel, template)]
    assert rec.status is Status.REJECTED
    assert reason in _reasons(rec)


def test_unambiguous_records_of_image2(image2):
    mined = sorted((k, r.question, r.answer) for k, r in image2.items() if r.status is Status.MINED)
    assert [k for k, _, _ in mined] == sorted([
        ("15947", "relation_color"), ("15952", "relation_object"), ("15959", "relation_object"),
        ("15959", "relation_color"), ("15964", "relation_object"), ("15964", "relation_color"),
        ("15965", "relation_object"), ("15965", "relation_color"), ("15970", "relation_object"),
        ("15970", "relation_color"), ("15971", "relation_object"), ("15971", "relation_color")])
    # the man is never asked about by colour (his "white" attribute is not a colour to ground)
    assert ("15952", "relation_color") not in image2


def test_several_objects_same_name_fill_one_target_step(image2):
    rec = image2[("15953", "relation_object")]  # the building has five windows
    assert rec.answer == "window"
    assert rec.chain[1].source_ref == "5084,5082,5080,5081,5083"  # left to right by x1
    assert [b.x1 for b in rec.chain[1].boxes] == [628, 644, 645, 742, 746]
    assert _reasons(rec) == ["ambiguous_referent: building (2 objects)"]


def _write(tmp_path: Path, rels: list[dict], name: str = "rel.json") -> Path:
    path = tmp_path / name
    path.write_bytes(orjson.dumps([{"image_id": 9, "relationships": rels}]))
    return path


def _obj(oid, name, x, w=20, **kw):
    return {"object_id": oid, "names": [name], "x": x, "y": 10, "w": w, "h": 30, **kw}


def test_colour_referent_ambiguous_among_the_subjects_objects(tmp_path):
    rels = [{"relationship_id": k, "predicate": "has", "subject": _obj(1, "building", 0, 300),
             "object": _obj(oid, "window", x, attributes=["white"])} for k, (oid, x) in enumerate([(2, 10), (3, 200)])]
    recs = {(r.provenance.native_id("relationship_id"), r.question_type): r
            for r in vg.mine(relationships=_write(tmp_path, rels), images=_image(tmp_path, "9.jpg"))}
    rec = recs[("0", "relation_color")]
    assert rec.question == "What colour is the window that the building has?"
    assert _reasons(rec) == ["ambiguous_referent: window that the building has (2 objects)"]
    assert recs[("0", "relation_object")].status is Status.MINED  # the answer "window" is fixed anyway


def test_one_object_under_two_names_is_an_ambiguous_answer(tmp_path):
    # object 3 was merged into object 2 by VG; the two relationships name it differently
    rels = [{"relationship_id": 0, "predicate": "wears", "subject": _obj(1, "man", 0, 100),
             "object": _obj(2, "sneakers", 10, merged_object_ids=[3])},
            {"relationship_id": 1, "predicate": "wears", "subject": _obj(1, "man", 0, 100),
             "object": _obj(3, "shoes", 12)}]
    recs = list(vg.mine(relationships=_write(tmp_path, rels), images=_image(tmp_path, "9.jpg")))
    assert [r.answer for r in recs] == ["sneakers", "shoes"]
    assert all("ambiguous_answer: 'man wears' has 2 answers (shoes, sneakers)" in _reasons(r) for r in recs)
    assert recs[1].chain[1].boxes == (Box(12, 10, 32, 40),) and recs[1].chain[1].source_ref == "3"


@pytest.mark.parametrize(
    ("subject", "obj", "reason"),
    [
        ({"names": ["cup"], "x": 0, "y": 0, "w": 5, "h": 5}, _obj(2, "table", 50),
         "malformed_relationship: object without object_id"),
        (_obj(1, "cup", 0, w=0), _obj(2, "table", 50), "bad_box: object 1 box (0.0, 10.0, 0.0, 40.0) is empty"),
        ({"object_id": 1, "name": "cup", "x": 0}, _obj(2, "table", 50), "bad_box: object 1 has no numeric x, y, w, h"),
        (_obj(1, "", 0), _obj(2, "table", 50), "malformed_relationship: object 1 has no name"),
    ],
)
def test_malformed_relationships_are_rejected_not_dropped(tmp_path, subject, obj, reason):
    rels = [{"relationship_id": 5, "predicate": "on", "subject": subject, "object": obj}]
    (rec,) = vg.mine(relationships=_write(tmp_path, rels), images=_image(tmp_path, "9.jpg"))
    assert rec.status is Status.REJECTED and _reasons(rec) == [reason] and rec.chain == ()


def test_malformed_files_raise(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'[{"image_id": 1, "relationships": [')
    with pytest.raises(CorpusReadError, match="bad.json"):
        list(vg.mine(relationships=bad))
    bad.write_bytes(b'[{"relationships": []}]')
    with pytest.raises(CorpusReadError, match="entry 0 lacks image_id"):
        list(vg.mine(relationships=bad))
    with pytest.raises(CorpusReadError, match="missing.json"):
        list(vg.mine(relationships=tmp_path / "missing.json"))
    with pytest.raises(ConfigError):
        list(vg.mine(relationships=bad, limit=-1))


@pytest.mark.parametrize(
    ("subject", "predicate", "question", "clause"),
    [
        ("man", "wears", "What does the man wear?", "the man wears"),
        ("building", "has", "What does the building have?", "the building has"),
        ("man", "carries", "What does the man carry?", "the man carries"),
        ("bikes", "near", "What are the bikes near?", "the bikes are near"),
        ("bikes", "has", "What do the bikes have?", "the bikes have"),
        ("man", "is holding", "What is the man holding?", "the man is holding"),
        ("parking meter", "on top of", "What is the parking meter on top of?", "the parking meter is on top of"),
        ("cat", "across", "What is the cat across?", "the cat is across"),
    ],
)
def test_relation_wording(subject, predicate, question, clause):
    assert vg.relation_clause(subject, predicate) == (question, clause)


def test_every_relationship_yields_a_record_and_ids_are_unique(shared_data):
    d = _vg(shared_data)
    for n in (1, 2):
        raw = orjson.loads((d / f"relationships_image{n}.json").read_bytes())["relationships"]
        recs = list(vg.mine(relationships=d / f"relationships_image{n}.json"))
        assert {r.provenance.native_id("relationship_id") for r in recs} == {str(r["relationship_id"]) for r in raw}
        assert len({r.id for r in recs}) == len(recs)


def test_limit_and_schema_round_trip(shared_data):
    recs = list(vg.mine(relationships=_vg(shared_data) / "relationships_image1.json",
                        attributes=_vg(shared_data) / "attributes_image1.json", limit=5))
    assert len(recs) == 5
    assert frame_to_records(records_to_frame(recs)) == recs


def test_cli_mine_vg_with_image_data(shared_data, tmp_path):
    from typer.testing import CliRunner

    from virl_data.cli import app
    from virl_data.storage import corpus

    d = _vg(shared_data)
    data = _image_data(tmp_path, [{"image_id": 2, "width": 640, "height": 480}])
    out = tmp_path / "vg.parquet"
    result = CliRunner().invoke(app, ["mine", "vg", "--relationships", str(d / "relationships_image2.json"),
                                      "--image-data", str(data), "--out", str(out)])
    assert result.exit_code == 0, result.output
    images = corpus.read(out)["image"].struct.unnest()
    assert images.height > 0 and set(zip(images["width"], images["height"])) == {(640, 480)}
