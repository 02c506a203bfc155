"""Config parsing: the shipped configs load, and every error names the key path."""

from pathlib import Path

import pytest

from imagery_watch.classes import LandCover
from imagery_watch.config import default_rules, load_config, parse_config
from imagery_watch.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def minimal(**over):
    data = {
        "inputs": {"before": "a.tif", "after": "b.tif"},
        "rules": [{"name": "afforestation", "before": ["low_vegetation"], "after": ["tree"]}],
    }
    data.update(over)
    return data


@pytest.mark.parametrize("name", ["sample.toml", "jiaxing.toml"])
def test_shipped_configs_load(name):
    cfg = load_config(ROOT / "configs" / name)
    assert [r.name for r in cfg.rules] == [r.name for r in default_rules()]
    assert cfg.layers.farmland is not None
    assert cfg.inputs.bands[:3] == ("red", "green", "blue")


def test_relative_paths_resolve_against_config_folder(tmp_path):
    cfg = parse_config(minimal(), base_dir=tmp_path)
    assert cfg.inputs.before == (tmp_path / "a.tif").resolve()


def test_rule_classes_parsed():
    cfg = parse_config(minimal())
    rule = cfg.rules[0]
    assert rule.before == frozenset({LandCover.LOW_VEGETATION})
    assert rule.after == frozenset({LandCover.TREE})
    assert rule.where == "anywhere"


@pytest.mark.parametrize(
    "data, match",
    [
        (minimal(job={"nmae": "x"}), r"job\.nmae: unknown key"),
        (minimal(processing={"chunk_px": "big"}), r"processing\.chunk_px: expected an integer"),
        (minimal(processing={"chunk_px": 5}), r"processing\.chunk_px: expected 128\.\.16384"),
        ({"rules": []}, r"inputs\.before: missing required field"),
        (minimal(rules=[{"name": "r", "before": ["crop"], "after": ["palace"]}]), r"rules\[0\]\.after: unknown land-cover class 'palace'"),
        (minimal(rules=[{"name": "r", "before": ["crop"], "after": ["built"], "where": "farmland"}]), r"layers\.farmland: rule 'r' needs a farmland layer"),
        (minimal(rules=[{"name": "r", "before": ["crop"], "after": ["built"], "colour": 1}]), r"rules\[0\]\.colour: unknown key"),
        (minimal(inputs={"before": "a", "after": "b", "bands": ["red", "green"]}), r"inputs\.bands: .*'blue' exactly once"),
        (minimal(detection={"sensitivity": True}), r"detection\.sensitivity: expected a number, found a boolean"),
        (minimal(surprise={}), r"surprise: unknown key"),
    ],
)
def test_errors_name_the_key(data, match):
    with pytest.raises(ConfigError, match=match):
        parse_config(data)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[job\nname=1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_duplicate_rule_names():
    rule = {"name": "r", "before": ["crop"], "after": ["tree"]}
    with pytest.raises(ConfigError, match="appears twice"):
        parse_config(minimal(rules=[rule, rule]))
