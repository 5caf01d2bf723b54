"""Label Studio integration: templates, converters, and push → annotate through the API → pull against a real server.

The server tests (marked ``integration``) share one session server
(``tests/data/integrations/conftest_labelstudio.py``); each uses its own project title. Pure tests (templates,
conversions, review rules, option errors) need no server.
``pytest -k label_studio`` selects every test here.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import uuid
from datetime import datetime

import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.conftest import make_record
from virl_data.core.errors import BoxConventionError, ConfigError
from virl_data.core.types import Box, RationaleStep, Review, Status
from virl_data.review.merge import effective
from virl_data.storage import corpus

ls = pytest.importorskip("virl_data.integrations.labelstudio")
pytest.importorskip("label_studio_sdk")
W, H = 100, 80  # make_record's image size
server = pytest.mark.integration


# --- helpers ---------------------------------------------------------------------------------------------------------
def _rect(rid, number, x, y, w, h, **extra):
    value = {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": [str(number)], **extra}
    return {"id": rid, "from_name": "chain", "to_name": "image", "type": "rectanglelabels", "value": value}


def _choice(verdict):
    return {"id": "v", "from_name": "verdict", "to_name": "image", "type": "choices", "value": {"choices": [verdict]}}


def _text(name, text, rid=None):
    return {"id": rid or name, "from_name": name, "to_name": "image", "type": "textarea", "value": {"text": [text]}}


def _review(ann, chain, answer="red"):
    return ls.annotation_review({"result": ann}, chain, answer, width=W, height=H, reviewer="ana", at="t")


def _images(root, records):
    for r in records:
        path = root / r.image.path
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (r.image.width or 1, r.image.height or 1), (200, 30, 30)).save(path)


def _title():
    return f"virl-test-{uuid.uuid4().hex[:10]}"


def _unused_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- templates (no server) -------------------------------------------------------------------------------------------
def test_label_studio_templates_number_steps_and_share_control_names():
    for name in ls.TEMPLATES:
        xml = ls.load_template(name)
        assert ls.template_steps(xml) == 12
        for control in ('name="chain"', 'name="phrase"', 'perRegion="true"', 'name="verdict"', 'name="answer"',
                        'name="note"', 'value="$image"', 'value="$question"'):
            assert control in xml, (name, control)
        assert '<RectangleLabels name="answer_box" toName="image"' in xml
    assert '<Choice value="accept"' in ls.load_template("review_chain")
    assert '<Choice value="accept"' not in ls.load_template("draw_chain")
    assert ls.template_path("review_chain") == ls.TEMPLATE_DIR / "review_chain.xml"


def test_label_studio_template_errors_and_config_comparison(tmp_path):
    with pytest.raises(ConfigError, match="use one of review_chain, draw_chain, review_queue"):
        ls.load_template("nope")
    with pytest.raises(ConfigError, match="not found"):
        ls.load_template(tmp_path / "missing.xml")
    bad = tmp_path / "bad.xml"
    bad.write_text(ls.load_template("review_chain").replace('<Label value="2"', '<Label value="two"'))
    with pytest.raises(ConfigError, match="must be the step numbers 1..N"):
        ls.load_template(bad)
    bad.write_text("<View><Image name='image' value='$image'/></View>")
    with pytest.raises(ConfigError, match='lacks <RectangleLabels name="chain"'):
        ls.load_template(bad)
    xml = ls.load_template("review_chain")
    reformatted = "<!-- another comment -->\n" + xml.replace("\n  <", "\n      <") + "\n"
    assert ls.same_config(xml, reformatted)
    assert not ls.same_config(xml, ls.load_template("draw_chain"))
    assert not ls.same_config(xml, xml.replace('value="12"', 'value="13"'))
    assert not ls.same_config(xml, "<View>")


# --- conversions and review rules (no server) ------------------------------------------------------------------------
def test_label_studio_chain_round_trips_through_results():
    rec = make_record(0, chain=[[(10, 10, 30, 30)], [(40, 20, 60, 50), (70, 10, 90, 30)], [(1 / 3, 0.1, 99.9, 79.7)]])
    results = ls.chain_to_results(rec.chain, W, H)
    rects = [r for r in results if r["from_name"] == "chain"]
    assert [(r["id"], r["value"]["rectanglelabels"]) for r in rects] == [
        ("s0b0", ["1"]), ("s1b0", ["2"]), ("s1b1", ["2"]), ("s2b0", ["3"])]
    assert rects[0]["value"] == {"x": 10.0, "y": 12.5, "width": 20.0, "height": 25.0, "rotation": 0,
                                 "rectanglelabels": ["1"]}
    assert [r["value"]["text"] for r in results if r["from_name"] == "phrase"] == [
        ["thing 0"], ["thing 1"], ["thing 1"], ["thing 2"]]
    assert ls.results_to_chain(results, W, H, rec.chain) == rec.chain  # exact: pushed boxes snap back
    assert _review(results + [_choice("accept")], rec.chain).verdict == "accept"
    assert _review(results, rec.chain) is None  # looked, changed nothing, said nothing


def test_label_studio_annotation_rules():
    chain = make_record(0).chain  # [(10,10,30,30)] [(40,20,60,50), (70,10,90,30)] on 100x80
    a, b, c = _rect("s0b0", 1, 10, 12.5, 20, 25), _rect("s1b0", 2, 40, 25, 20, 37.5), _rect("s1b1", 2, 70, 12.5, 20, 25)
    moved = _review([_rect("s0b0", 1, 15, 12.5, 20, 25), b, c], chain)
    assert (moved.verdict, moved.chain[0].boxes, moved.chain[1:], moved.answer) == (
        "fix", (Box(15, 10, 35, 30),), chain[1:], None)
    deleted = _review([a, b], chain)
    assert deleted.chain == (chain[0], dataclasses.replace(chain[1], boxes=(Box(40, 20, 60, 50),)))
    swapped = _review([_rect("s0b0", 2, 10, 12.5, 20, 25), _rect("s1b0", 1, 40, 25, 20, 37.5),
                       _rect("s1b1", 1, 70, 12.5, 20, 25)], chain)
    assert swapped.chain == (chain[1], chain[0])  # phrases and roles travel with their boxes
    drawn = _review([a, b, c, _rect("new", 3, 0, 0, 50, 50), _text("phrase", "the table", "new")], chain)
    assert drawn.chain[2] == RationaleStep(boxes=(Box(0, 0, 50, 40),), phrase="the table")
    rejected = _review([_rect("s0b0", 1, 50, 50, 5, 5), _choice("reject"), _text("note", " no such shape ")], chain)
    assert (rejected.verdict, rejected.chain, rejected.note) == ("reject", None, "no such shape")
    answered = _review([a, b, c, _choice("fix"), _text("answer", "blue")], chain)
    assert (answered.verdict, answered.chain, answered.answer) == ("fix", None, "blue")
    assert _review([a, b, c, _text("answer", " red ")], chain) is None  # the same answer is no correction
    accepted_edit = _review([a, b, _choice("accept")], chain)
    assert accepted_edit.verdict == "fix" and len(accepted_edit.chain[1].boxes) == 1
    assert _review([_choice("reject")], ()).verdict == "reject"
    assert _review([_choice("accept")], chain).chain == ()  # everything deleted: merge reports empty_chain


def test_label_studio_unreadable_annotations_raise():
    chain = make_record(0).chain
    ok = [_rect("s0b0", 1, 10, 12.5, 20, 25)]
    with pytest.raises(ls.LabelStudioError, match="fix_without_change"):
        _review([*ls.chain_to_results(chain, W, H), _choice("fix")], chain)
    with pytest.raises(ls.LabelStudioError, match="unknown_verdict"):
        _review([*ok, _choice("maybe")], chain)
    with pytest.raises(ls.LabelStudioError, match="unnumbered_region: region s0b0"):
        _review([_rect("s0b0", "first", 10, 12.5, 20, 25)], chain)
    with pytest.raises(BoxConventionError, match="rotated by 30"):
        _review([{**ok[0], "value": {**ok[0]["value"], "rotation": 30}}], chain)


def test_label_studio_box_answer_is_a_rectangle_and_a_moved_one_corrects_it():
    rec = dataclasses.replace(make_record(0, chain=[[(20, 20, 60, 60)]]), answer="[20, 20, 60, 60]",
                              answer_type="box")
    task = ls.record_to_task(rec, "u", predictions=True)
    results = task["predictions"][0]["result"]
    (answer,) = [r for r in results if r["from_name"] == "answer_box"]
    assert (answer["id"], answer["value"]["rectanglelabels"]) == ("answer", ["answer"])
    assert answer["value"]["x"] == 20.0 and answer["value"]["height"] == 50.0  # 40 px of 80
    assert ls.results_to_chain(results, W, H, rec.chain) == rec.chain  # the answer box is not a step

    def review(items, typed=None):
        extra = [_text("answer", typed)] if typed else []
        return ls.annotation_review({"result": items + extra}, rec.chain, rec.answer, width=W, height=H,
                                    reviewer="ana", at="t", answer_type="box")

    assert review(results) is None  # pushed as is: the percent round trip snaps back to the same box
    moved = dict(answer, value={**answer["value"], "x": 30.0})
    chain_items = [r for r in results if r["from_name"] != "answer_box"]
    fix = review(chain_items + [moved])
    assert (fix.verdict, fix.chain, fix.answer) == ("fix", None, "[30, 20, 70, 60]")
    assert review(chain_items + [moved], typed="[0, 0, 10, 10]").answer == "[0, 0, 10, 10]"  # typed wins
    with pytest.raises(ls.LabelStudioError, match="two_answer_boxes"):
        review(chain_items + [moved, dict(moved, id="other")])
    plain = ls.record_to_task(make_record(0), "u", predictions=True)["predictions"][0]["result"]
    assert not [r for r in plain if r["from_name"] == "answer_box"]  # no answer box for a word answer


def test_label_studio_task_carries_the_effective_chain():
    fixed = (RationaleStep(boxes=(Box(1, 1, 20, 20),), phrase="fixed"),)
    earlier = Review(tool="fiftyone", reviewer="bo", at="2025-01-01", verdict="fix", chain=fixed, answer="green")
    rec = dataclasses.replace(make_record(3), reviews=(earlier,), status=Status.REVIEWED)
    task = ls.record_to_task(rec, "/data/local-files/?d=x.png", predictions=True)
    assert task["data"]["answer"] == "green" and task["data"]["chain_text"] == "1. fixed"
    assert ls.pushed_from_json(task["data"]["virl_pushed"]) == (fixed, "green")
    assert [r["id"] for r in task["predictions"][0]["result"]] == ["s0b0", "s0b0"]
    assert "predictions" not in ls.record_to_task(rec, "u", predictions=False)
    assert ls.chain_text(make_record(0).chain) == "1. thing 0 | 2. thing 1 (2 boxes)"
    assert ls.local_files_url(ls.TEMPLATE_DIR / "a b#.png", ls.TEMPLATE_DIR.parent) == (
        "/data/local-files/?d=annotation_templates/a%20b%23.png")


def test_label_studio_option_errors_need_no_server(tmp_path, monkeypatch):
    for var in ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match="no Label Studio URL"):
        ls.connect()
    with pytest.raises(ConfigError, match="no Label Studio API key"):
        ls.connect("http://127.0.0.1:1")
    recs = [make_record(0)]
    with pytest.raises(ConfigError, match="images need --image-url-prefix, or a local-files document root"):
        ls.push(recs, "p", image_root=tmp_path, url="http://127.0.0.1:1", api_key="k")
    with pytest.raises(ConfigError, match="is not inside the Label Studio document root"):
        ls.push(recs, "p", image_root=tmp_path, document_root=tmp_path / "elsewhere", url="http://x", api_key="k")


def test_label_studio_unreachable_server_is_one_line_without_url_or_key():
    port, key = _unused_port(), "a" * 40
    with pytest.raises(ls.LabelStudioError) as err:
        ls.connect(f"http://127.0.0.1:{port}", key)
    assert str(err.value) == "cannot reach the Label Studio server given by --url / LABEL_STUDIO_URL (ConnectError)"
    with pytest.raises(ConfigError) as err:
        ls.connect("127.0.0.1:8080/secret-path", key)  # no scheme
    assert str(err.value) == "the Label Studio URL (--url / LABEL_STUDIO_URL) must look like http://host:port"
    with pytest.raises(ConfigError, match="must look like"):
        ls.connect("http://", key)


def test_label_studio_secrets_are_blanked_from_messages_reprs_and_http_logs():
    import logging

    url, key = "https://ls.internal.example:8443/base", "k" * 40
    secrets = ls._secrets(url, key)
    assert secrets[0] == key and set(secrets) == {key, url, "ls.internal.example:8443", "ls.internal.example"}
    assert ls._one_line(f"GET {url}/api/x\n  token {key}", secrets) == "GET ***/api/x token ***"
    conn = ls.Connection(client=object(), url=url, api_key=key)
    assert url not in repr(conn) and key not in repr(conn) and "ls.internal" not in repr(conn)
    record = logging.LogRecord("httpx", logging.INFO, __file__, 1, 'HTTP Request: GET %s "HTTP/1.1 200 OK"',
                               (f"{url}/api/projects",), None)
    assert ls._BlankSecrets(secrets).filter(record)
    assert record.getMessage() == 'HTTP Request: GET ***/api/projects "HTTP/1.1 200 OK"'


def test_label_studio_unreadable_pushed_state_is_reported_not_raised():
    rec = make_record(0)
    task = {"id": 7, "data": {"virl_id": rec.id, "virl_pushed": "{not json"}, "annotations": [{"result": []}]}
    assert ls.task_edits(task, rec, {}) == ([], [(rec.id, "unreadable_task: task 7 has no readable virl_pushed")])


def test_label_studio_binary_lookup_order(tmp_path, monkeypatch):
    from tests.data.integrations import conftest_labelstudio as lsc

    fake = tmp_path / "bin" / "label-studio"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("VIRL_LABEL_STUDIO", str(tmp_path / "nope"))
    assert lsc.label_studio_binary() == (None, f"VIRL_LABEL_STUDIO={tmp_path / 'nope'} is not an executable file")
    monkeypatch.setenv("VIRL_LABEL_STUDIO", str(fake))
    assert lsc.label_studio_binary() == (str(fake), "VIRL_LABEL_STUDIO")
    monkeypatch.delenv("VIRL_LABEL_STUDIO")
    monkeypatch.setattr(lsc, "REPO", tmp_path / "clean-clone")  # no .venv-labelstudio there
    monkeypatch.setenv("PATH", str(fake.parent))
    assert lsc.label_studio_binary() == (str(fake), "PATH")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    binary, why = lsc.label_studio_binary()
    assert binary is None and why.startswith("no Label Studio server binary: set VIRL_LABEL_STUDIO")
    venv = tmp_path / "clean-clone" / ".venv-labelstudio" / "bin"
    venv.mkdir(parents=True)
    (venv / "label-studio").write_text("")
    assert lsc.label_studio_binary() == (str(venv / "label-studio"), ".venv-labelstudio")


def test_label_studio_import_virl_data_does_not_import_the_sdk():
    code = "import sys, virl_data, virl_data.cli.labelstudio; print('label_studio_sdk' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- against a real server -------------------------------------------------------------------------------------------
@pytest.fixture
def lsx(label_studio_server):
    """``(server, client, image root)``: a fresh image folder under the server's document root."""
    from label_studio_sdk import LabelStudio

    images = label_studio_server.root / uuid.uuid4().hex[:8]
    images.mkdir()
    return label_studio_server, LabelStudio(base_url=label_studio_server.url, api_key=label_studio_server.token), images


def _records():
    """0-9 plain (2 steps, 3 boxes), 10 image of unknown size, 11 a 13-step chain (the templates number 12)."""
    recs = [make_record(i) for i in range(10)]
    recs.append(make_record(10, size=(0, 0)))
    recs.append(make_record(11, chain=[[(j, j, j + 5, j + 5)] for j in range(13)]))
    return recs


def _push(lsx, recs, title, **kw):
    srv, _, images = lsx
    _images(images, [r for r in recs if r.image.width])
    return ls.push(recs, title, image_root=images, document_root=srv.root, url=srv.url, api_key=srv.token, **kw)


def _tasks(client, project_id):
    """virl_id → task (with its predictions)."""
    return {t.data["virl_id"]: t for t in client.tasks.list(project=project_id, fields="all")}


def _pull(srv, title, recs):
    return ls.pull(title, recs, url=srv.url, api_key=srv.token)


@server
def test_label_studio_server_validates_both_templates(lsx):
    from label_studio_sdk.core.api_error import ApiError

    srv, client, _ = lsx
    for name in ls.TEMPLATES:
        xml = ls.load_template(name)
        project = client.projects.create(title=_title(), label_config=xml)
        assert ls.same_config(project.label_config, xml)
        client.projects.validate_label_config(project.id, label_config=xml)  # raises when the server disagrees
        with pytest.raises(ApiError) as err:  # the server really checks: a dangling control is refused
            client.projects.create(title=_title(), label_config=xml.replace('toName="image"', 'toName="img"', 1))
        assert err.value.status_code == 400


@server
def test_label_studio_push_predictions_images_and_no_duplicates(lsx):
    srv, client, images = lsx
    recs, title = _records(), _title()
    result = _push(lsx, recs, title)
    assert (result.created, result.template, result.imported, result.existing) == (True, "review_chain", 10, 0)
    assert result.skipped == ((recs[10].id, "unknown_image_size"),
                              (recs[11].id, "chain_too_long: 13 steps, the template numbers 12"))
    project = client.projects.get(result.project_id)
    assert project.model_version == ls.MODEL_VERSION  # the editor pre-labels tasks with the pushed chain
    tasks = _tasks(client, result.project_id)
    assert sorted(tasks) == sorted(r.id for r in recs[:10])
    task = tasks[recs[1].id]
    assert task.data["question"] == recs[1].question and task.data["answer"] == "red"
    assert task.predictions[0].result == ls.chain_to_results(recs[1].chain, W, H)
    import httpx

    served = httpx.get(srv.url + task.data["image"], headers={"Authorization": f"Token {srv.token}"})
    assert served.status_code == 200 and served.content == (images / recs[1].image.path).read_bytes()
    again = _push(lsx, recs, title)  # same corpus again: nothing new
    assert (again.created, again.imported, again.existing) == (False, 0, 10)
    more = _push(lsx, [*recs, make_record(12)], title)
    assert (more.imported, more.existing) == (1, 10)
    assert len(_tasks(client, result.project_id)) == 11


@server
def test_label_studio_http_logs_never_show_url_or_key(lsx, caplog):
    import logging

    srv, _, _ = lsx
    caplog.set_level(logging.DEBUG)
    recs, title = _records()[:2], _title()
    _push(lsx, recs, title)
    _pull(srv, title, recs)
    with pytest.raises(ls.LabelStudioError):
        ls.connect(srv.url, "0" * 40)
    logged = caplog.text
    assert "HTTP Request: GET ***/api/" in logged and "connect_tcp.started host='***'" in logged  # logs were on
    assert srv.url not in logged and srv.url.split("//")[1] not in logged
    assert srv.token not in logged and "0" * 40 not in logged
    assert not logging.getLogger("httpx").filters  # the blanking filters are gone after each call


def _annotate(client, tasks, recs, ana_id):
    """The edits of the main flow; returns record index → the created annotation."""
    def pred(i):
        return list(tasks[recs[i].id].predictions[0].result)

    def rect(result, rid):
        return next(r for r in result if r["id"] == rid and r["from_name"] == "chain")

    moved = pred(2)
    rect(moved, "s0b0")["value"] = {**rect(moved, "s0b0")["value"], "x": 15.0}
    deleted = [r for r in pred(3) if r["id"] != "s1b1"]
    swapped = pred(4)
    for r in swapped:
        if r["from_name"] == "chain":
            r["value"] = {**r["value"], "rectanglelabels": ["2" if r["id"] == "s0b0" else "1"]}
    edits = {
        1: dict(result=pred(1) + [_choice("accept")]),
        2: dict(result=moved),
        3: dict(result=deleted + [_choice("fix")]),
        4: dict(result=swapped),
        5: dict(result=pred(5) + [_choice("reject"), _text("note", "wrong image")]),
        6: dict(result=pred(6) + [_choice("fix"), _text("answer", "blue")]),
        7: dict(result=pred(7) + [_choice("accept")], completed_by=ana_id),
        8: dict(result=pred(8) + [_choice("reject")], was_cancelled=True),  # skipped: says nothing
        9: dict(result=pred(9)),  # submitted unchanged, no verdict: says nothing
    }
    return {i: client.annotations.create(id=tasks[recs[i].id].id, **kw) for i, kw in edits.items()}


@server
def test_label_studio_push_annotate_pull_gives_exactly_the_edits(lsx):
    srv, client, _ = lsx
    recs, title = _records(), _title()
    project_id = _push(lsx, recs, title).project_id
    same, report = _pull(srv, title, recs)  # nobody annotated: identity
    assert same == recs and report.summary() == "applied 0, unchanged 0, unknown ids 0, invalid 0"
    ana = client.users.create(username=f"ana-{uuid.uuid4().hex[:6]}", email=f"{uuid.uuid4().hex[:6]}@example.com")
    anns = _annotate(client, _tasks(client, project_id), recs, ana.id)
    merged, report = _pull(srv, title, recs)
    assert (report.applied, report.unchanged, report.unknown_ids, report.invalid) == (7, 0, [], [])
    assert len(merged) == len(recs) and [m.id for m in merged] == [r.id for r in recs]
    untouched = (0, 8, 9, 10, 11)
    assert all(merged[i] == recs[i] for i in untouched)
    got = {i: merged[i].reviews[-1] for i in range(1, 8)}
    assert {i: r.verdict for i, r in got.items()} == {
        1: "accept", 2: "fix", 3: "fix", 4: "fix", 5: "reject", 6: "fix", 7: "accept"}
    chain = recs[0].chain
    assert got[2].chain == (RationaleStep(boxes=(Box(15, 10, 35, 30),), phrase="thing 0", role="context"), chain[1])
    assert got[3].chain == (chain[0], dataclasses.replace(chain[1], boxes=chain[1].boxes[:1]))
    assert got[4].chain == (chain[1], chain[0])
    assert (got[5].note, got[5].chain, got[6].answer, got[6].chain) == ("wrong image", None, "blue", None)
    assert all(r.chain is None and r.answer is None for r in (got[1], got[7]))
    assert {got[i].reviewer for i in range(1, 7)} == {"virl-admin@example.com"} and got[7].reviewer == ana.email
    for i, review in got.items():  # when: the annotation's own time
        assert datetime.fromisoformat(review.at) == anns[i].updated_at and review.tool == "labelstudio"
    assert [m.status for m in merged[1:8]] == [Status.REVIEWED] * 4 + [Status.REJECTED] + [Status.REVIEWED] * 2
    assert effective(merged[2]).chain == got[2].chain and merged[2].chain == recs[2].chain  # mined kept
    assert effective(merged[6]).answer == "blue" and merged[6].answer == "red"
    twice, report2 = _pull(srv, title, merged)  # idempotent
    assert twice == merged and (report2.applied, report2.unchanged) == (0, 7)


@server
def test_label_studio_pull_reports_unknown_ids_and_invalid_edits(lsx):
    srv, client, _ = lsx
    recs, title = _records()[:4], _title()
    project_id = _push(lsx, recs, title).project_id
    tasks = _tasks(client, project_id)
    outside = list(tasks[recs[1].id].predictions[0].result)
    outside[0] = {**outside[0], "value": {**outside[0]["value"], "x": 90.0}}  # 90 % + 20 % wide: past the right edge
    client.annotations.create(id=tasks[recs[1].id].id, result=outside)
    emptied = [r for r in tasks[recs[2].id].predictions[0].result if r["from_name"] != "chain"]
    client.annotations.create(id=tasks[recs[2].id].id, result=[*emptied, _choice("accept")])
    client.annotations.create(id=tasks[recs[3].id].id, result=[_rect("x", "one", 1, 1, 5, 5)])
    stray = {"image": "u", "question": "stray", "answer": "a", "chain_text": ""}  # a task not pushed by virl
    client.projects.import_tasks(project_id, request=[{"data": stray}])
    subset = recs[1:]
    merged, report = _pull(srv, title, subset)
    assert merged == subset and report.applied == 0
    assert len(report.unknown_ids) == 2 and recs[0].id in report.unknown_ids
    assert any(u.startswith("(task ") and u.endswith(" has no virl_id)") for u in report.unknown_ids)
    reasons = dict(report.invalid)
    assert reasons[recs[1].id] == "box_outside_image_step_0" and reasons[recs[2].id] == "empty_chain"
    assert reasons[recs[3].id].startswith("annotation ") and "unnumbered_region" in reasons[recs[3].id]


@server
def test_label_studio_wrong_token_and_template_mismatch(lsx):
    srv, client, _ = lsx
    wrong = "f" * 40
    with pytest.raises(ls.LabelStudioError) as err:
        ls.connect(srv.url, wrong)
    message = str(err.value)
    assert message == ("Label Studio refused the API key (HTTP 401) while trying to check the API key; check "
                       "--api-key / LABEL_STUDIO_API_KEY")
    recs, title = _records()[:2], _title()
    _push(lsx, recs, title)
    with pytest.raises(ls.LabelStudioError) as err:
        _push(lsx, recs, title, template="draw_chain")
    assert str(err.value).endswith(
        "does not use template draw_chain (it uses template review_chain); push with that --template or to another "
        "--project")
    own = client.projects.create(title=_title(), label_config=ls.load_template("review_chain").replace("12", "99"))
    with pytest.raises(ls.LabelStudioError, match="a labeling config of its own"):
        _push(lsx, recs, own.title)
    with pytest.raises(ls.LabelStudioError, match="no Label Studio project titled 'nope-"):
        _pull(srv, f"nope-{title}", recs)
    foreign = client.projects.create(title=_title(), label_config=(
        '<View><Image name="image" value="$image"/><RectangleLabels name="box" toName="image">'
        '<Label value="cat"/></RectangleLabels></View>'))
    with pytest.raises(ls.LabelStudioError) as err:
        _pull(srv, foreign.title, recs)
    assert str(err.value) == (
        f"Label Studio project {foreign.title!r} (id {foreign.id}) does not use a virl template (no numbered 'chain' "
        "rectangles on 'image'); pull from a project made by virl-data labelstudio push")
    with pytest.raises(ls.LabelStudioError, match="does not use template review_chain"):
        _push(lsx, recs, foreign.title)


@server
def test_label_studio_draw_chain_from_scratch(lsx):
    srv, client, _ = lsx
    recs, title = [make_record(0, chain=[]), make_record(1)], _title()
    result = _push(lsx, recs, title, template="draw_chain")
    tasks = _tasks(client, result.project_id)
    assert result.template == "draw_chain" and all(not t.predictions for t in tasks.values())
    drawn = [_rect("a", 2, 40, 25, 20, 37.5), _text("phrase", "the circle", "a"), _rect("b", 1, 10, 12.5, 20, 25)]
    client.annotations.create(id=tasks[recs[0].id].id, result=drawn)
    client.annotations.create(id=tasks[recs[1].id].id, result=[_choice("reject"), _text("note", "ambiguous")])
    merged, report = _pull(srv, title, recs)
    assert report.summary() == "applied 2, unchanged 0, unknown ids 0, invalid 0"
    assert merged[0].reviews[0].chain == (RationaleStep(boxes=(Box(10, 10, 30, 30),)),
                                          RationaleStep(boxes=(Box(40, 20, 60, 50),), phrase="the circle"))
    assert (merged[1].reviews[0].verdict, merged[1].status) == ("reject", Status.REJECTED)


def _cli():
    import typer

    from virl_data.cli.labelstudio import labelstudio_app

    app = typer.Typer()
    app.add_typer(labelstudio_app, name="labelstudio")
    return app


@server
def test_label_studio_cli_push_pull_and_errors(lsx, tmp_path, monkeypatch):
    srv, client, images = lsx
    monkeypatch.setenv("LABEL_STUDIO_URL", srv.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", srv.token)
    monkeypatch.setenv("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", str(srv.root))
    recs, title = _records()[:3], _title()
    _images(images, recs)
    src = corpus.write(recs, tmp_path / "c.parquet", image_root=images)
    runner, app = CliRunner(), _cli()
    pushed = runner.invoke(app, ["labelstudio", "push", str(src), "--project", title])
    assert pushed.exit_code == 0, pushed.output
    assert f"created project '{title}'" in pushed.output and "imported 3 tasks, 0 already there" in pushed.output
    again = runner.invoke(app, ["labelstudio", "push", str(src), "-p", title])
    assert again.exit_code == 0 and "reused project" in again.output
    assert "imported 0 tasks, 3 already there" in again.output
    task = _tasks(client, ls.find_project(ls.connect(), title).id)[recs[0].id]
    client.annotations.create(id=task.id, result=[_choice("reject")])
    out = tmp_path / "out.parquet"
    args = ["labelstudio", "pull", title, "--corpus", str(src), "--out", str(out), "--report", str(tmp_path / "r.json")]
    pulled = runner.invoke(app, args)
    assert pulled.exit_code == 0, pulled.output
    merged = corpus.read_records(out)
    assert merged[0].status == Status.REJECTED and merged[1:] == recs[1:] and corpus.image_root(out) == images
    prefixed = runner.invoke(app, ["labelstudio", "push", str(src), "-p", _title(), "--template", "draw_chain",
                                   "--image-url-prefix", "https://img.example.org/v1/"])
    assert prefixed.exit_code == 0, prefixed.output
    project = ls.find_project(ls.connect(), prefixed.output.split("'")[1])
    urls = sorted(t.data["image"] for t in _tasks(client, project.id).values())
    assert urls == [f"https://img.example.org/v1/img/{i}.png" for i in range(3)]
    wrong = "0" * 40
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", wrong)
    refused = runner.invoke(app, ["labelstudio", "pull", title, "--corpus", str(src), "--out", str(out)])
    assert refused.exit_code == 2 and "error: Label Studio refused the API key (HTTP 401)" in refused.output
    assert len(refused.output.strip().splitlines()) == 1
    gone_port = _unused_port()
    gone = runner.invoke(app, ["labelstudio", "pull", title, "-c", str(src), "-o", str(out),
                               "--url", f"http://127.0.0.1:{gone_port}", "--api-key", wrong])
    assert gone.exit_code == 2 and "error: cannot reach the Label Studio server given by --url" in gone.output
    assert os.environ["LABEL_STUDIO_API_KEY"] == wrong
    for result in (pushed, again, pulled, prefixed, refused, gone):  # neither the URL nor a key is ever printed
        assert srv.url not in result.output and srv.token not in result.output and wrong not in result.output
        assert str(gone_port) not in result.output


@server
def test_label_studio_queue_push_draws_both_layers_and_pull_reads_only_the_chain(lsx):
    """``virl-data queue --to labelstudio``'s push: template review_queue, the chain and the policy's read-only crops
    in one prediction, the reason on the task; an annotation that moves a policy crop and fixes a chain box comes back
    as the chain fix alone."""
    from virl_data.review.queue import QueueEntry

    srv, client, _ = lsx
    recs, title = _records()[:3], _title()
    crops = (Box(5, 55, 25, 75), Box(10, 10, 30, 30))
    queue = [QueueEntry(recs[0].id, "unlisted_object", 1.0, {"unlisted_object": 1.0}, 4, crops, "red", 1)]
    result = _push(lsx, recs[:1], title, template="review_queue", queue=queue)
    assert (result.template, result.imported) == ("review_queue", 1)
    task = _tasks(client, result.project_id)[recs[0].id]
    assert task.data["queue_text"] == '#1 unlisted_object 1.00 · policy answered "red"'
    regions = task.predictions[0].result
    policy = [r for r in regions if r["from_name"] == "policy"]
    assert [r["value"]["rectanglelabels"] for r in policy] == [["crop 1"], ["crop 2"]]
    assert all(r["readonly"] for r in policy)
    assert sum(r["from_name"] == "chain" for r in regions) == 3
    edited = [dict(r, value=dict(r["value"], x=r["value"]["x"] + 10)) if r["id"] in ("p0", "s0b0") else r
              for r in regions]  # a policy crop and the first chain box moved right by 10% = 10 px
    client.annotations.create(id=task.id, result=[*edited, _choice("fix")])
    merged, report = _pull(srv, title, recs)
    assert report.summary() == "applied 1, unchanged 0, unknown ids 0, invalid 0"
    fixed = merged[0].reviews[0].chain
    assert fixed[0].boxes[0] == Box(20, 10, 40, 30) and fixed[1:] == recs[0].chain[1:]
