"""The ``imagery-watch synthetic`` commands through the real entry point."""

from __future__ import annotations

import json

from PIL import Image

from imagery_watch.cli import main


def test_generate_and_preview(tmp_path, capsys):
    out = tmp_path / "scene"
    rc = main(["synthetic", "generate", str(out), "--seed", "2", "--width", "400", "--height", "300",
               "--sheet-px", "256", "--tile-px", "256", "--compress", "deflate", "--without", "jpeg",
               "--changes-per-km2", "150"])
    assert rc == 0
    assert "sheets per epoch" in capsys.readouterr().out
    meta = json.loads((out / "scene.json").read_text())
    assert meta["seed"] == 2 and meta["options"]["distractors"]["jpeg"] is False
    assert sorted(p.name for p in (out / "before").iterdir()) == sorted(meta["sheets"]["files"])
    rc = main(["synthetic", "preview", str(out), "--out-dir", str(tmp_path / "png"), "--truth", "--max-px", "200"])
    assert rc == 0
    for name in ("before.png", "after.png"):
        with Image.open(tmp_path / "png" / name) as im:
            assert max(im.size) == 200 and im.mode == "RGB"


def test_generate_rejects_bad_size(tmp_path, capsys):
    rc = main(["synthetic", "generate", str(tmp_path / "x"), "--width", "-3"])
    assert rc == 2
    assert "width_px" in capsys.readouterr().err


def test_preview_of_missing_scene(tmp_path, capsys):
    rc = main(["synthetic", "preview", str(tmp_path / "nothing"), "--out-dir", str(tmp_path / "p")])
    assert rc == 3
    assert "no before/ folder" in capsys.readouterr().err
