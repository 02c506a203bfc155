"""Job folder: atomic state, fingerprints, unwritable output folders."""

import json
import pytest

from imagery_watch.errors import JobError, OutputError
from imagery_watch.jobs import JobFolder, fingerprint, write_json_atomic


def test_fingerprint_is_order_independent_and_sensitive():
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})


def test_state_round_trip_leaves_no_temp_files(tmp_path):
    folder = JobFolder(tmp_path / "job")
    folder.prepare()
    assert folder.load_state() == {}
    folder.save_state({"x": 1})
    folder.save_state({"x": 2})
    assert folder.load_state() == {"x": 2}
    assert sorted(p.name for p in folder.root.iterdir()) == ["job.json", "work"]


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "s.json"
    write_json_atomic(path, {"ok": True})

    def dump_then_fail(obj, fh, **kw):
        fh.write('{"half": ')
        raise KeyboardInterrupt  # killed mid-write

    monkeypatch.setattr(json, "dump", dump_then_fail)
    with pytest.raises(KeyboardInterrupt):
        write_json_atomic(path, {"ok": False})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"ok": True}
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]


def test_corrupt_state_names_the_fix(tmp_path):
    folder = JobFolder(tmp_path)
    folder.job_file.write_text("{not json")
    with pytest.raises(JobError, match="job.json: job state is unreadable.*delete it"):
        folder.load_state()


def test_output_path_is_a_file(tmp_path):
    blocker = tmp_path / "out"
    blocker.write_text("x")
    with pytest.raises(OutputError, match=r"out: output folder is not writable.*--out"):
        JobFolder(blocker).prepare()
