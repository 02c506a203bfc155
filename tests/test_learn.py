"""The supervised change model (imagery_watch.learn, pair_features) on generated scenes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from imagery_watch import learn
from imagery_watch.errors import InputFileError
from imagery_watch.io.labels import read_label
from imagery_watch.pair_features import OBJECT_FEATURES, PreparedPair, feature_names, pair_features
from imagery_watch.synthetic import generate_scene
from imagery_watch.synthetic.labelled_pairs import write_labelled_pairs

PIXEL_M = 0.2


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Labelled PNG pairs (four 512 px tiles each) of two generated scenes: train and test."""
    root = tmp_path_factory.mktemp("learn")
    out = {}
    for role, seed in (("train", 41), ("test", 42)):
        scene = generate_scene(root / role, seed=seed, width_px=1024, height_px=1024, changes_per_km2=160)
        d = write_labelled_pairs(scene, root / f"{role}_pairs")
        out[role] = learn.read_labelled_pairs(d["before"], d["after"], d["label"])
    return out


@pytest.fixture(scope="module")
def model(scenes):
    return learn.fit_change_model(scenes["train"], pixel_size_m=PIXEL_M, seed=3, max_samples=4000)


def _f1(pred_true_pairs) -> float:
    tp = fp = fn = 0
    for pred, truth in pred_true_pairs:
        a = int((pred & truth).sum())
        tp, fp, fn = tp + a, fp + int(pred.sum()) - a, fn + int(truth.sum()) - a
    return 2 * tp / max(2 * tp + fp + fn, 1)


def test_model_beats_flagging_everything_on_an_unseen_scene(scenes, model):
    results, everything = [], []
    for p in scenes["test"]:
        pred = learn.predict_change(model, p.before, p.after, p.valid, pixel_size_m=PIXEL_M)
        assert pred.shape == p.label.shape and pred.dtype == bool
        assert not (pred & ~p.valid).any()
        truth = p.label & p.valid
        results.append((pred, truth))
        everything.append((p.valid.copy(), truth))
    f1, baseline = _f1(results), _f1(everything)
    assert f1 > baseline + 0.07, (f1, baseline)
    oof = model.summary["out_of_fold"]
    assert 0 < model.threshold < 1 and oof["threshold"] == model.threshold and oof["f1"] > 0.3
    assert model.summary["folds_by"] == "pairs" and len(model.summary["pairs"]) == 4


def _small_estimator(seed):
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(max_iter=10, max_leaf_nodes=7, early_stopping=False, random_state=seed)


def test_training_is_reproducible_and_leaves_the_inputs_alone(scenes, monkeypatch):
    monkeypatch.setattr(learn, "_new_estimator", _small_estimator)  # the pipeline's determinism, cheaply
    pairs = scenes["train"][:2]
    copies = [(p.before.copy(), p.after.copy(), p.label.copy()) for p in pairs]
    a = learn.fit_change_model(pairs, pixel_size_m=PIXEL_M, seed=3, max_samples=1000)
    b = learn.fit_change_model(pairs, pixel_size_m=PIXEL_M, seed=3, max_samples=1000)
    assert a.summary["folds_by"] == "quarters of pairs"
    assert a.threshold == b.threshold
    p = scenes["test"][0]
    assert np.array_equal(learn.change_probability(a, p.before, p.after, pixel_size_m=PIXEL_M),
                          learn.change_probability(b, p.before, p.after, pixel_size_m=PIXEL_M))
    for q, (before, after, label) in zip(pairs, copies):
        assert np.array_equal(q.before, before) and np.array_equal(q.after, after)
        assert np.array_equal(q.label, label)


def test_save_and_load_round_trip_exactly(scenes, model, tmp_path):
    path = learn.save_model(model, tmp_path / "m" / "change.iwm")
    loaded = learn.load_model(path)
    assert loaded.header() == model.header()
    assert loaded.feature_names == feature_names(3, objects=True) and loaded.bands == 3
    assert loaded.pixel_size_m == PIXEL_M and loaded.analysis_m == model.analysis_m
    p = scenes["test"][1]
    assert np.array_equal(learn.change_probability(loaded, p.before, p.after, pixel_size_m=PIXEL_M),
                          learn.change_probability(model, p.before, p.after, pixel_size_m=PIXEL_M))
    assert learn.read_model_header(path)["summary"] == json.loads(json.dumps(model.summary))


def test_a_model_file_of_another_version_is_refused_before_unpickling(model, tmp_path):
    path = learn.save_model(model, tmp_path / "change.iwm")
    lines = path.read_bytes().split(b"\n", 2)
    header = json.loads(lines[1])
    header["format_version"] = learn.FORMAT_VERSION + 1
    path.write_bytes(lines[0] + b"\n" + json.dumps(header).encode() + b"\n" + b"not a pickle")
    with pytest.raises(InputFileError, match=r"change\.iwm: model file format version 2, .*train the model again"):
        learn.load_model(path)
    other = tmp_path / "notes.txt"
    other.write_text("hello\n")
    with pytest.raises(InputFileError, match="notes.txt: not an imagery-watch change model"):
        learn.load_model(other)


def test_features_do_not_depend_on_the_strips(scenes):
    p = scenes["test"][2]
    before, after = p.before[:, :320, :288], p.after[:, :320, :288]
    prepared = PreparedPair(before, after, None, pixel_size_m=PIXEL_M, analysis_m=0.8)
    whole = np.concatenate([x for _, _, x in prepared.strips(rows=10_000)], axis=1)
    thin = np.concatenate([x for _, _, x in prepared.strips(rows=7)], axis=1)
    assert whole.shape == (len(feature_names(3)), 80, 72)
    assert np.array_equal(whole, thin)
    assert np.array_equal(whole, pair_features(before, after, pixel_size_m=PIXEL_M))
    assert np.isfinite(whole).all()


def test_nir_pairs_have_ndvi_features_and_an_rgb_pair_needs_an_rgb_model(scenes, model):
    p = scenes["test"][0]
    nir = np.concatenate([p.before[:, :128, :128], p.before[1:2, :128, :128]])
    x = pair_features(nir, nir.copy(), pixel_size_m=PIXEL_M)
    assert x.shape[0] == len(feature_names(4)) > len(feature_names(3)) and "a_ndvi" in feature_names(4)
    four = learn.ChangeModel(estimator=model.estimator, feature_names=feature_names(4), bands=4,
                             pixel_size_m=PIXEL_M)
    with pytest.raises(InputFileError, match="trained on 4 bands .* images have 3"):
        learn.predict_change(four, p.before, p.after, pixel_size_m=PIXEL_M, name="x.png")
    # an RGB model ignores a NIR band
    with_nir = np.concatenate([p.before, p.before[1:2]])
    assert np.array_equal(learn.predict_change(model, with_nir, np.concatenate([p.after, p.after[1:2]]),
                                               pixel_size_m=PIXEL_M),
                          learn.predict_change(model, p.before, p.after, pixel_size_m=PIXEL_M))


def test_labels_in_either_encoding(tmp_path):
    truth = np.zeros((6, 5), bool)
    truth[1:3, 2:4] = True
    Image.fromarray(truth.astype(np.uint8)).save(tmp_path / "ones.png")
    Image.fromarray(np.where(truth, 255, 0).astype(np.uint8)).convert("RGB").save(tmp_path / "rgb.bmp")
    assert np.array_equal(read_label(tmp_path / "ones.png"), truth)
    assert np.array_equal(read_label(tmp_path / "rgb.bmp"), truth)


def test_training_needs_both_classes(scenes):
    p = scenes["train"][0]
    empty = learn.LabelledPair("empty", p.before, p.after, np.zeros_like(p.label))
    with pytest.raises(ValueError, match="0 change .* training needs both"):
        learn.fit_change_model([empty], pixel_size_m=PIXEL_M)


def test_a_model_adds_to_the_segments_new_buildings_and_an_older_model_still_works(scenes, model, tmp_path):
    from imagery_watch.buildings import find_new_buildings

    p = scenes["test"][0]
    assert model.feature_names[-len(OBJECT_FEATURES):] == OBJECT_FEATURES
    found = find_new_buildings(p.before, p.after, pixel_size_m=PIXEL_M)
    assert found.any()
    mask = learn.predict_change(model, p.before, p.after, pixel_size_m=PIXEL_M)
    assert not (found & ~mask).any()  # every segment building is kept; the model only adds
    # a model file of the feature list before the object features (same format version) still loads
    old = learn.fit_change_model(scenes["train"], pixel_size_m=PIXEL_M, seed=3, max_samples=2000, objects=False)
    assert old.feature_names == feature_names(3)
    loaded = learn.load_model(learn.save_model(old, tmp_path / "old.iwm"))
    older = learn.predict_change(loaded, p.before, p.after, pixel_size_m=PIXEL_M)
    assert older.shape == mask.shape and not np.array_equal(older | found, older)
