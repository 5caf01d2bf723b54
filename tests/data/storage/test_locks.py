"""Nothing lost to a second writer, a killed export or a private umask: one writer per output folder (a lock naming
its holder, released by the OS when the holder is killed), stale export folders cleaned, outputs shared as the umask
says."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import kill9, make_record, spawn_python
from virl_data.storage import corpus
from virl_data import export
from virl_data.core import schema
from virl_data.cli import app
from virl_data.storage.locks import FolderBusyError, folder_lock, is_lock_file, sibling_lock

REPO = Path(__file__).resolve().parents[3]


def _cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def _error_line(result) -> str:
    """The command's stderr, asserted to be exactly one ``error:`` line after exit code 2."""
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not is_lock_file(p))


# --- item 5: one writer per folder -----------------------------------------------------------------------------------
def test_a_second_miner_into_a_held_image_folder_fails_naming_the_holder_until_it_is_killed(tmp_path):
    images = tmp_path / "images"
    holder = spawn_python(f"""
        import sys, time
        from pathlib import Path
        from virl_data.storage.locks import folder_lock
        with folder_lock({str(images)!r}):
            Path({str(images / "first.png")!r}).write_bytes(b"the first miner's image")
            print("ready", flush=True)
            time.sleep(120)
    """)
    try:
        line = _error_line(_cli("mine", "shapes", "--out", tmp_path / "second.parquet", "--images", images, "--n", 4))
        assert f"{images} is in use by another virl process (pid {holder.pid} on host" in line and "-c" in line
        assert _names(images) == ["first.png"] and not (tmp_path / "second.parquet").exists()  # nothing touched
        assert holder.poll() is None  # the first writer runs on
    finally:
        kill9(holder)
    # kill -9 released the OS lock: the next writer gets the folder at once, the stale holder note overwritten
    result = _cli("mine", "shapes", "--out", tmp_path / "second.parquet", "--images", images, "--n", 4,
                  "--image-size", 64)
    assert result.exit_code == 0, result.output
    assert len(corpus.read(tmp_path / "second.parquet")) == 4
    assert not (images / ".virl.lock.holder").exists()  # removed on a clean release


def test_the_holder_note_names_pid_host_and_command_and_a_lock_object_of_the_same_process_is_refused(tmp_path):
    with folder_lock(tmp_path / "run") as lock_file:
        note = (lock_file.parent / ".virl.lock.holder").read_text()
        assert note.startswith(f"pid {os.getpid()} on host ") and " since " in note
        with pytest.raises(FolderBusyError, match=f"pid {os.getpid()} on host"), folder_lock(tmp_path / "run"):
            pass
    with folder_lock(tmp_path / "run"):  # released: taken again at once
        pass


def test_demo_and_run_into_a_held_folder_are_refused_and_leave_it_untouched(tmp_path):
    demo_out, run_out = tmp_path / "demo", tmp_path / "run"
    with folder_lock(demo_out), folder_lock(run_out):
        line = _error_line(_cli("demo", "--out", demo_out, "--n", 4, "--image-size", 64))
        assert f"pid {os.getpid()}" in line
        line = _error_line(_cli("run", REPO / "pipelines" / "demo.yaml", "--out", run_out))
        assert f"{run_out} is in use by another virl process (pid {os.getpid()}" in line
        assert _names(demo_out) == [] and _names(run_out) == []
    result = _cli("demo", "--out", demo_out, "--n", 8, "--image-size", 64)  # a lock file alone is an empty folder
    assert result.exit_code == 0, result.output


def test_an_export_into_a_target_another_export_holds_is_refused(tmp_path):
    frame = schema.records_to_frame([make_record(i, status="accepted") for i in range(3)])
    with sibling_lock(tmp_path / "out"), pytest.raises(FolderBusyError, match="in use by another virl process"):
        export.export(frame, tmp_path / "out", "jsonl", image_root=None)
    assert not (tmp_path / "out").exists()


# --- item 9: a killed export leaves nothing behind for long ------------------------------------------------------------
def test_the_next_export_cleans_what_a_killed_export_left_and_only_that(tmp_path):
    records = tmp_path / "c.parquet"
    corpus.write([make_record(i, status="accepted") for i in range(3)], records)
    out = tmp_path / "out"
    child = spawn_python(f"""
        import time
        from virl_data.storage import corpus
        from virl_data import export
        real = corpus.write
        def stalled(*args, **kw):
            real(*args, **kw)
            print("ready", flush=True)  # one split written into the staging folder, then killed there
            time.sleep(120)
        corpus.write = stalled
        export.export(corpus.read({str(records)!r}), {str(out)!r}, "parquet", image_root=None)
    """)
    kill9(child)
    (stale,) = [p for p in tmp_path.iterdir() if p.name.startswith("out.tmp-")]
    assert list(stale.iterdir())  # the killed export's half-written staging folder
    unrelated = [tmp_path / "out.tmp-notes", tmp_path / "out.tmp-ABCDEFGH", tmp_path / "outer.tmp-abcdefgh",
                 tmp_path / "out.tmp-abcd1234.bak"]
    for p in unrelated:
        p.mkdir()
    export.export(corpus.read(records), out, "parquet", image_root=None)
    assert not stale.exists() and all(p.is_dir() for p in unrelated)
    assert _names(out) == ["all.parquet", export.MANIFEST]


def test_an_export_killed_between_its_two_renames_gets_the_previous_export_back(tmp_path, monkeypatch):
    frame = schema.records_to_frame([make_record(i, status="accepted") for i in range(3)])
    out = tmp_path / "out"
    export.export(frame, out, "jsonl", image_root=None)
    before = (out / "all.jsonl").read_bytes()
    os.replace(out, tmp_path / "out.old-0123abcd")  # what the kill left: the old export renamed away, no new one
    monkeypatch.setattr(export, "_write_coco", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        export.export(frame, out, "coco", image_root=None)
    assert (out / "all.jsonl").read_bytes() == before  # restored, then kept by the failed export
    assert _names(tmp_path) == ["out"]


# --- item 11: outputs as shareable as the umask says -------------------------------------------------------------------
@pytest.fixture(params=[0o022, 0o027], ids=["umask022", "umask027"])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_outputs_get_the_permissions_the_umask_gives(umask, tmp_path):
    assert corpus.current_umask() == umask
    recs = [make_record(i, status="accepted") for i in range(3)]
    files = [corpus.write(recs, tmp_path / "c.parquet"), corpus.write(recs, tmp_path / "c.jsonl"),
             corpus.write_json({"a": 1}, tmp_path / "r.json")]
    assert {p.name: _mode(p) for p in files} == {p.name: 0o666 & ~umask for p in files}
    result = export.export(schema.records_to_frame(recs), tmp_path / "ex", "parquet", image_root=None)
    assert _mode(result.out_dir) == 0o777 & ~umask
    assert {_mode(p) for p in result.out_dir.iterdir()} == {0o666 & ~umask}


def test_current_umask_matches_os_umask_and_leaves_it_unchanged(umask):
    assert corpus.current_umask() == umask
    assert os.umask(umask) == umask

