"""Image-pair detection (pairs.py): which evidence answers which rule."""

import numpy as np
import pytest

from imagery_watch.buildings import find_new_buildings
from imagery_watch.config import default_rules
from imagery_watch.errors import ConfigError
from imagery_watch.buildings import turns_into
from imagery_watch.pairs import detect_pair, select_rules

PX = 0.5


def _pair(seed=0):
    """A green field, and the same field with a 15 m x 20 m grey roof on it."""
    rng = np.random.default_rng(seed)
    field = lambda: np.clip(np.array([70, 110, 50], np.float32)[:, None, None]  # noqa: E731
                            + rng.normal(0, 3, (3, 200, 200)), 0, 255).astype(np.uint8)
    before, after = field(), field()
    after[:, 80:110, 60:100] = np.array([160, 158, 150], np.uint8)[:, None, None]
    return before, after


def test_only_pure_construction_and_demolition_rules_go_to_segments():
    kinds = {r.name: (turns_into(r, built=True), turns_into(r, built=False)) for r in default_rules()}
    assert kinds == {"construction_on_farmland": (True, False), "construction_elsewhere": (True, False),
                     "afforestation": (False, False),  # built land may turn into trees: not a demolition
                     "demolition": (False, True), "reclamation": (False, False)}


def test_segment_evidence_marks_the_new_roof_and_honours_the_minimum_area():
    before, after = _pair()
    rules = select_rules(default_rules(), None)
    assert [r.name for r in rules] == ["construction_on_farmland"]
    roof = find_new_buildings(before, after, pixel_size_m=PX)
    assert roof.sum() > 1000
    assert (detect_pair(before, after, rules=rules, pixel_size_m=PX, min_area_m2=30) == roof).all()
    # the roof is 300 m2: over the rule's 200 m2 unit, under an asked 400 m2
    assert (detect_pair(before, after, rules=rules, pixel_size_m=PX) == roof).all()
    assert not detect_pair(before, after, rules=rules, pixel_size_m=PX, min_area_m2=400).any()
    # backwards in time the roof is a demolition, not a construction
    demolition = select_rules(default_rules(), ("demolition",))
    assert (detect_pair(after, before, rules=demolition, pixel_size_m=PX) == roof).all()
    assert not detect_pair(after, before, rules=rules, pixel_size_m=PX).any()


def test_pixel_evidence_is_the_rules_path_and_unknown_evidence_is_refused():
    before, after = _pair()
    rules = select_rules(default_rules(), None)
    pixels = detect_pair(before, after, rules=rules, pixel_size_m=PX, evidence="pixels")
    assert pixels.shape == before.shape[1:] and pixels.dtype == bool
    assert not detect_pair(before, before, rules=rules, pixel_size_m=PX, evidence="pixels").any()
    with pytest.raises(ConfigError, match="evidence.*segments, pixels"):
        detect_pair(before, after, rules=rules, pixel_size_m=PX, evidence="objects")


def test_the_shadow_check_can_be_turned_off_for_flat_construction():
    rng = np.random.default_rng(1)
    field = lambda: np.clip(np.array([70, 110, 50], np.float32)[:, None, None]  # noqa: E731
                            + rng.normal(0, 3, (3, 200, 200)), 0, 255).astype(np.uint8)
    before, after = field(), field()
    after[:, 80:110, 60:100] = np.array([110, 110, 104], np.uint8)[:, None, None]  # a concrete yard, no shadow
    rules = select_rules(default_rules(), None)
    assert not detect_pair(before, after, rules=rules, pixel_size_m=PX, min_area_m2=30).any()
    flat = detect_pair(before, after, rules=rules, pixel_size_m=PX, min_area_m2=30, shadow_check=False)
    assert flat[80:110, 60:100].mean() > 0.9 and flat.sum() < 1.1 * 30 * 40


def test_an_explicit_minimum_area_is_used_as_given_and_transparent_pixels_are_never_flagged():
    rng = np.random.default_rng(2)
    field = lambda: np.clip(np.array([70, 110, 50], np.float32)[:, None, None]  # noqa: E731
                            + rng.normal(0, 3, (3, 200, 200)), 0, 255).astype(np.uint8)
    before, after = field(), field()
    after[:, 100:116, 100:116] = np.array([22, 28, 18], np.uint8)[:, None, None]  # the shadow (3 m) of
    after[:, 100:110, 100:110] = np.array([160, 158, 150], np.uint8)[:, None, None]  # a 25 m2 shed
    rules = select_rules(default_rules(), None)
    assert not detect_pair(before, after, rules=rules, pixel_size_m=PX, min_area_m2=30).any()
    assert detect_pair(before, after, rules=rules, pixel_size_m=PX, min_area_m2=10).any()
    b, a = _pair()
    a[:, 20:50, 140:180] = a[:, 80:110, 60:100]  # a second roof, in pixels that are transparent
    valid = np.ones(b.shape[1:], bool)
    valid[:60, 120:] = False
    found = detect_pair(b, a, rules=rules, pixel_size_m=PX, valid=valid)
    assert found[80:110, 60:100].mean() > 0.9 and not found[:60, 120:].any()
    assert detect_pair(b, a, rules=rules, pixel_size_m=PX)[20:50, 140:180].mean() > 0.9
