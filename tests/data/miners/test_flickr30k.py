"""Flickr30k Entities miner: the real Sentences (no XML: rejected, phrase order kept), and XML boxes written here."""

from __future__ import annotations

import doctest

import pytest

from virl_data.core.errors import ConfigError, CorpusReadError
from virl_data.core.schema import frame_to_records, records_to_frame
from virl_data.core.types import Box, Status
from virl_data.miners import flickr30k


@pytest.fixture
def f30k(shared_data):
    return shared_data / "flickr30k_entities"


def _steps(rec):
    return [(s.phrase, s.source_ref) for s in rec.chain]


def _reasons(rec):
    return [c.reason.split(":")[0] for c in rec.checks]


def _xml(objects: str, width: int = 400, height: int = 300) -> str:
    """A file in the Flickr30k Entities ``Annotations/<id>.xml`` layout."""
    return (f"<annotation><filename>205842.jpg</filename><size><width>{width}</width><height>{height}</height>"
            f"<depth>3</depth></size>{objects}</annotation>")


def _obj(*names: str, box: tuple[int, int, int, int] | None = None, scene: int = 0) -> str:
    tags = "".join(f"<name>{n}</name>" for n in names)
    if box is None:
        return f"<object>{tags}<scene>{scene}</scene><nobndbox>1</nobndbox></object>"
    x1, y1, x2, y2 = box
    coords = f"<xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax>"
    return f"<object>{tags}<bndbox>{coords}</bndbox></object>"


# --- real sentences, no XML ------------------------------------------------------------------------------------------
def test_real_sentences_without_xml_rejected_with_phrase_order(f30k):
    recs = list(flickr30k.mine(sentences=f30k / "Sentences", images=f30k / "images", splits=f30k / "splits"))
    assert len(recs) == 6 * 5
    assert all(r.status is Status.REJECTED and _reasons(r) == ["no_box_annotations"] for r in recs)
    girl = next(r for r in recs if r.provenance.native_ids == (("image_id", "205842"), ("sentence", "0")))
    # [/EN#26283/people A little girl] wearing [/EN#26287/clothing a pink shirt] and [/EN#26288/clothing backpack]
    # is pushing [/EN#26285/people a little boy] wearing [/EN#26286/clothing a green shirt] in
    # [/EN#26284/other a blue stroller] .
    assert _steps(girl) == [("A little girl", "26283"), ("a pink shirt", "26287"), ("backpack", "26288"),
                            ("a little boy", "26285"), ("a green shirt", "26286"), ("a blue stroller", "26284")]
    assert all(s.boxes == () and s.role is None for s in girl.chain)
    assert girl.answer == ("A little girl wearing a pink shirt and backpack is pushing a little boy wearing a green "
                           "shirt in a blue stroller.")
    assert girl.question == flickr30k.QUESTION and girl.answer_type == "caption"
    assert girl.checks[0].reason == "no_box_annotations: 205842 (no annotations folder given)"
    assert (girl.image.path, girl.image.width, girl.image.height) == ("205842.jpg", 400, 300)
    assert girl.provenance.source_split == "train" and girl.provenance.miner == "flickr30k@1"
    assert frame_to_records(records_to_frame(recs)) == recs


def test_real_sentences_skip_notvisual_and_repeated_chains(f30k):
    recs = list(flickr30k.mine(sentences=f30k / "Sentences"))
    by_key = {tuple(v for _, v in r.provenance.native_ids): r for r in recs}
    # "... in [/EN#0/notvisual the background] ." adds no step
    assert _steps(by_key[("178045", "0")]) == [
        ("Four", "20332"), ("brightly dressed women", "20328"), ("long skirts", "20331"), ("the sunlight", "20334"),
        ("trees", "20337"), ("their movements", "20336")]
    # "[/EN#137645/other cards] while around [/EN#137645/other a green table]": one look at chain 137645
    assert _steps(by_key[("36979", "2")]) == [("Several men", "137644"), ("cards", "137645")]
    # no images and no XML: the size is unknown too
    assert _reasons(by_key[("36979", "2")]) == ["no_box_annotations", "image_size_unknown"]


# --- XML boxes (tiny files in the official layout) -------------------------------------------------------------------
@pytest.fixture
def annotations(tmp_path):
    folder = tmp_path / "Annotations"
    folder.mkdir()
    objects = "".join([
        _obj("26283", box=(30, 40, 120, 290)),           # the girl
        _obj("26285", box=(150, 100, 260, 280)),         # the boy
        _obj("26284", "26290", box=(140, 90, 330, 300)),  # the stroller, a second chain id on the same box
        _obj("26287", box=(40, 90, 110, 170)),
        _obj("26286", box=(170, 140, 240, 200)),
        _obj("26286", box=(160, 130, 180, 150)),         # a second box of the same chain (listed right to left)
        _obj("26288", scene=0),                          # backpack: no box
    ])
    (folder / "205842.xml").write_text(_xml(objects))
    return folder


def test_read_annotation_layout(annotations):
    ann = flickr30k.read_annotation(annotations / "205842.xml")
    assert (ann.width, ann.height) == (400, 300)
    assert ann.boxes["26290"] == ann.boxes["26284"] == (Box(140, 90, 330, 300),)
    assert ann.boxes["26286"] == (Box(160, 130, 180, 150), Box(170, 140, 240, 200))  # left to right
    assert ann.no_box == frozenset({"26288"})


def test_real_sentences_with_xml_boxes(f30k, annotations):
    recs = list(flickr30k.mine(sentences=f30k / "Sentences" / "205842.txt", annotations=annotations))
    assert len(recs) == 5
    first = recs[0]
    assert first.status is Status.MINED and first.checks == ()
    assert _steps(first) == [("A little girl", "26283"), ("a pink shirt", "26287"), ("a little boy", "26285"),
                             ("a green shirt", "26286"), ("a blue stroller", "26284")]  # backpack has no box
    assert [s.boxes for s in first.chain] == [
        (Box(30, 40, 120, 290),), (Box(40, 90, 110, 170),), (Box(150, 100, 260, 280),),
        (Box(160, 130, 180, 150), Box(170, 140, 240, 200)), (Box(140, 90, 330, 300),)]
    assert (first.image.width, first.image.height) == (400, 300)  # from the XML, no images needed
    # "[/EN#26283/people A girl] in [/EN#26287/clothing a pink outfit] pushing [/EN#26284/other a blue stroller]
    #  with [/EN#26285/people a boy] sitting in [/EN#0/notvisual it] ."
    assert _steps(recs[2]) == [("A girl", "26283"), ("a pink outfit", "26287"), ("a blue stroller", "26284"),
                               ("a boy", "26285")]


def test_unknown_chain_id_and_no_boxed_phrase(tmp_path):
    sentences, folder = tmp_path / "Sentences", tmp_path / "Annotations"
    sentences.mkdir(), folder.mkdir()
    (sentences / "9.txt").write_text("[/EN#1/people A man] holds [/EN#2/other a cup] .\n"
                                     "[/EN#3/scene A street] .\n")
    (folder / "9.xml").write_text(_xml(_obj("1", box=(1, 2, 30, 40)) + _obj("3", scene=1)))
    recs = list(flickr30k.mine(sentences=sentences, annotations=folder))
    assert recs[0].checks[0].reason == "unknown_object: chain 2 ('a cup') is not in the annotation"
    assert _steps(recs[0]) == [("A man", "1")]
    assert _reasons(recs[1]) == ["no_boxed_phrase"] and recs[1].chain == ()
    assert all(r.status is Status.REJECTED for r in recs)


def test_missing_xml_for_image_and_unrelated_caption(tmp_path, annotations):
    sentences, splits = tmp_path / "Sentences", tmp_path / "splits"
    sentences.mkdir(), splits.mkdir()
    (sentences / "205842.txt").write_text("[/EN#26283/people A girl] .\n[/EN#26285/people A boy] .\n")
    (sentences / "77.txt").write_text("[/EN#5/people A man] .\n")
    (splits / "val.txt").write_text("205842\n")
    (splits / "UNRELATED_CAPTIONS").write_text("# format: <imageID> <sentence number>\n205842 2\n")
    recs = list(flickr30k.mine(sentences=sentences, annotations=annotations, splits=splits))
    assert [tuple(v for _, v in r.provenance.native_ids) for r in recs] == [("77", "0"), ("205842", "0"),
                                                                            ("205842", "1")]  # numeric id order
    assert recs[0].checks[0].reason.startswith("no_box_annotations: 77 (no 77.xml in ")
    assert recs[1].status is Status.MINED and recs[1].provenance.source_split == "val"
    assert _reasons(recs[2]) == ["unrelated_caption"]
    assert recs[0].provenance.source_split is None


def test_malformed_sentence_and_files(tmp_path):
    (tmp_path / "1.txt").write_text("[/EN#1/people A man walks [/EN#2/animals a dog] .\n")
    rec = next(flickr30k.mine(sentences=tmp_path / "1.txt"))
    assert _reasons(rec)[0] == "malformed_sentence"
    assert _steps(rec) == [("a dog", "2")]
    bad = tmp_path / "Annotations"
    bad.mkdir()
    (bad / "1.xml").write_text("<annotation><size>")
    with pytest.raises(CorpusReadError, match="1.xml"):
        list(flickr30k.mine(sentences=tmp_path / "1.txt", annotations=bad))
    (bad / "1.xml").write_text(_xml("<object><name>1</name><bndbox><xmin>a</xmin></bndbox></object>"))
    with pytest.raises(CorpusReadError, match="bndbox"):
        list(flickr30k.mine(sentences=tmp_path / "1.txt", annotations=bad))
    with pytest.raises(CorpusReadError, match="does not exist"):
        list(flickr30k.mine(sentences=tmp_path / "Sentences"))
    with pytest.raises(CorpusReadError, match="annotations folder"):
        list(flickr30k.mine(sentences=tmp_path / "1.txt", annotations=tmp_path / "nope"))
    with pytest.raises(ConfigError):
        list(flickr30k.mine(sentences=tmp_path / "1.txt", limit=-2))


def test_parse_sentence_types_and_caption():
    s = flickr30k.parse_sentence("[/EN#9/people/other Two men] sit on [/EN#0/notvisual it] , smiling .")
    assert s.caption == "Two men sit on it, smiling."
    assert [(p.chain_id, p.types, p.text) for p in s.phrases] == [("9", ("people", "other"), "Two men"),
                                                                  ("0", ("notvisual",), "it")]
    assert s.error is None


def test_limit(f30k):
    assert len(list(flickr30k.mine(sentences=f30k / "Sentences", limit=7))) == 7


def test_docstring_examples():
    for module in (flickr30k,):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0
