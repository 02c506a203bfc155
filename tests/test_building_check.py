"""``[detection] building_check``: construction patches of ``detect`` checked by the segments."""

import shutil

import numpy as np
import pytest

from imagery_watch.building_check import building_shares
from imagery_watch.buildings import BuildingParams
from imagery_watch.io.patches import read_patches
from imagery_watch.patch_model import open_mosaic_pair
from imagery_watch.pipeline import run_detect

CONSTRUCTION = ("construction_on_farmland", "construction_elsewhere")


@pytest.fixture(scope="module")
def checked(scene_config, reference_job, tmp_path_factory):
    """The reference job rerun with the check: its chunk files are reused, only the merge runs again."""
    job = shutil.copytree(reference_job.out_dir, tmp_path_factory.mktemp("checked") / "job")
    config = scene_config.replace("job", out=job).replace("detection", building_check="construction")
    return run_detect(config)


def test_the_check_drops_only_construction_patches_and_counts_them(checked, reference_job):
    ref = read_patches(reference_job.patches_path)
    out = read_patches(checked.patches_path)
    figures = checked.summary["building_check"]
    assert figures["mode"] == "construction"
    assert figures["construction_patches"] == int(ref["rule"].isin(CONSTRUCTION).sum()) > 0
    assert 0 < figures["kept"] <= figures["construction_patches"]
    other = ref[~ref["rule"].isin(CONSTRUCTION)]
    assert sorted(out.loc[~out["rule"].isin(CONSTRUCTION), "patch_id"]) == sorted(other["patch_id"])
    kept = out[out["rule"].isin(CONSTRUCTION)]
    assert len(kept) == figures["kept"] and set(kept["patch_id"]) <= set(ref["patch_id"])
    assert checked.summary["chunks_reused"] == checked.summary["chunks_total"]


def test_shares_depend_on_the_patch_alone_and_follow_the_segments(checked, change_scene, tmp_path):
    patches = read_patches(checked.patches_path)
    patches = patches[patches["rule"].isin(CONSTRUCTION)].head(6)
    before, after = open_mosaic_pair(change_scene / "before", change_scene / "after", work_dir=tmp_path)
    flat = BuildingParams(shadow_check=False)
    shares = building_shares(list(patches.geometry), before, after, analysis_m=0.8, params=flat)
    assert ((shares >= 0.25) & (shares <= 1)).all()  # every kept patch passed the check
    # one at a time, in reverse order: the same shares
    again = [building_shares([g], before, after, analysis_m=0.8, params=flat)[0] for g in patches.geometry[::-1]]
    assert np.array_equal(shares, np.array(again[::-1]))
    assert np.isnan(building_shares([patches.geometry.iloc[0].buffer(-1e6)], before, after, analysis_m=0.8)).all()


def test_an_unknown_building_check_is_a_config_error(make_config_file, tmp_path):
    from imagery_watch.config import load_config
    from imagery_watch.errors import ConfigError

    path = make_config_file(tmp_path / "job.toml", out=tmp_path / "out")
    path.write_text(path.read_text().replace("[detection]", '[detection]\nbuilding_check = "roofs"'))
    if '[detection]' not in path.read_text():
        path.write_text(path.read_text() + '\n[detection]\nbuilding_check = "roofs"\n')
    with pytest.raises(ConfigError, match='building_check.*"off", "buildings" or "construction"'):
        load_config(path)
