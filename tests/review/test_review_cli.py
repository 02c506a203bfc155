"""``imagery-watch review`` through the real entry point."""

from __future__ import annotations

import csv

import geopandas as gpd

from imagery_watch.cli import main
from imagery_watch.review.store import PatchStore
from imagery_watch.review.users import UserStore

from review_fixtures import FAST_HASHER


def test_users_add_list_disable(job_dir, tmp_path, capsys, monkeypatch):
    # the CLI uses the default (strong) Argon2 parameters; make them cheap here
    monkeypatch.setattr("imagery_watch.review.users.PasswordHasher", lambda: FAST_HASHER)
    pw = tmp_path / "pw.txt"
    pw.write_text("surveyor-pass-1\n", encoding="utf-8")
    assert main(["review", "users", "add", "zhang", "--role", "admin", "--password-file", str(pw),
                 "--job", str(job_dir)]) == 0
    assert "added admin zhang" in capsys.readouterr().out
    store = UserStore(job_dir / "review.sqlite", hasher=FAST_HASHER)
    assert store.authenticate("zhang", "surveyor-pass-1", address="cli") is not None
    # run inside the job folder: --job defaults to "."
    monkeypatch.chdir(job_dir)
    assert main(["review", "users", "add", "li", "--password-file", str(pw)]) == 0
    assert main(["review", "users", "add", "li", "--password-file", str(pw)]) == 10
    assert "exists already" in capsys.readouterr().err
    assert main(["review", "users", "list"]) == 0
    out = capsys.readouterr().out
    assert "zhang" in out and "admin" in out and "li" in out and "reviewer" in out
    assert main(["review", "users", "disable", "li"]) == 0
    assert main(["review", "users", "list"]) == 0
    assert "disabled" in capsys.readouterr().out
    assert main(["review", "users", "disable", "nobody"]) == 10
    short = tmp_path / "short.txt"
    short.write_text("abc\n")
    assert main(["review", "users", "add", "wang", "--password-file", str(short)]) == 10
    assert "shorter than 8" in capsys.readouterr().err


def test_users_add_asks_for_the_password(job_dir, monkeypatch):
    monkeypatch.setattr("imagery_watch.review.users.PasswordHasher", lambda: FAST_HASHER)
    from click.testing import CliRunner

    from imagery_watch.cli import cli

    result = CliRunner().invoke(cli, ["review", "users", "add", "chen", "--job", str(job_dir)],
                                input="chen-password\nchen-password\n")
    assert result.exit_code == 0, result.output
    assert UserStore(job_dir / "review.sqlite", hasher=FAST_HASHER).get("chen").role == "reviewer"


def test_export(job_dir, tmp_path, capsys):
    PatchStore(job_dir / "patches.gpkg").decide("p0002", "false_alarm", reviewer="zhang", version=0, note="shadow")
    out = tmp_path / "export"
    assert main(["review", "export", str(job_dir), "--out", str(out), "--sheets", "--status", "false_alarm"]) == 0
    rows = list(csv.DictReader((out / "decisions.csv").open(encoding="utf-8-sig")))
    assert [(r["patch_id"], r["status"], r["note"]) for r in rows] == [("p0002", "false_alarm", "shadow")]
    assert len(list(csv.DictReader((out / "decision_log.csv").open(encoding="utf-8-sig")))) == 1
    assert list(gpd.read_file(out / "decisions.gpkg", layer="decisions")["patch_id"]) == ["p0002"]
    assert [p.name for p in (out / "evidence").iterdir()] == ["p0002.png"]


def test_serve_binds_loopback_and_says_so(job_dir, capsys, monkeypatch):
    calls = {}
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: calls.update(kw))
    assert main(["review", "serve", str(job_dir)]) == 0
    assert calls["host"] == "127.0.0.1" and calls["port"] == 8000
    captured = capsys.readouterr()
    assert "http://127.0.0.1:8000/" in captured.out and "this computer only" in captured.out
    assert "No accounts yet" in captured.err
    assert main(["review", "serve", str(job_dir), "--host", "0.0.0.0", "--port", "8080"]) == 0
    assert calls["host"] == "0.0.0.0" and "other computers" in capsys.readouterr().out


def test_serve_fails_clearly_on_a_folder_that_is_no_job(tmp_path, capsys):
    assert main(["review", "serve", str(tmp_path)]) == 3
    assert "job.json not found" in capsys.readouterr().err


def test_missing_review_extra_is_named_with_the_install_command(job_dir, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("fastapi", "argon2")
                        else real(name, *a))
    assert main(["review", "serve", str(job_dir)]) == 1
    err = capsys.readouterr().err
    assert "fastapi, argon2-cffi" in err and "pip install -e '.[review]'" in err
    assert main(["review", "users", "list", "--job", str(job_dir)]) == 1
    assert "argon2-cffi" in capsys.readouterr().err
