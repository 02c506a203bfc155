"""Change masks for plain image pairs without georeferencing (``detect-pairs``).

Each pair is treated as a tiny mosaic: the same normalisation, threshold fitting and
detection kernels as :func:`imagery_watch.pipeline.run_detect`, fitted on the pair itself
(no farmland layer: rules restricted to farmland apply to the whole image, rules restricted
to the outside of farmland are skipped).

Two kinds of evidence (``evidence``):

``"segments"`` (default)
    Rules that turn something else into built land (construction) are answered by
    :func:`imagery_watch.buildings.find_new_buildings`, rules that turn built land into
    something else (demolition) by :func:`~imagery_watch.buildings.find_demolished_buildings`:
    roof-like segments of one image that the other lacks, which on real imagery is far more
    reliable than a class transition pixel by pixel. Other rules (afforestation,
    reclamation) use the pixel rules.
``"pixels"``
    Every rule through the pixel rules of :mod:`imagery_watch.detect`, as ``detect`` does on
    mosaics.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from .buildings import FINEST_USEFUL_M, BuildingParams, find_demolished_buildings, find_new_buildings, turns_into
from .classes import LandCover
from .config import default_rules, load_config
from .detect import detect_block, fit_detector
from .errors import ConfigError, InputFileError, OutputError
from .io.images import list_images, read_image, write_mask_png
from .normalise import apply_normalisation, fit_normalisation

log = logging.getLogger(__name__)

#: values of ``evidence`` (``detect-pairs --evidence``)
EVIDENCE = ("segments", "pixels")


def select_rules(rules: tuple, rule_names: tuple | None) -> tuple:
    """Rules to mark: the named ones, or every rule whose after-class is built."""
    if rule_names is None:
        chosen = tuple(r for r in rules if LandCover.BUILT in r.after and r.where != "outside_farmland")
    else:
        known = {r.name: r for r in rules}
        missing = [n for n in rule_names if n not in known]
        if missing:
            raise ConfigError(f"--rules: unknown rule {missing[0]!r}; known rules: {', '.join(known)}")
        chosen = tuple(known[n] for n in rule_names)
    if not chosen:
        raise ConfigError("--rules: no rule selected; name at least one rule")
    return chosen


def detect_pair(before: np.ndarray, after: np.ndarray, *, rules: tuple, pixel_size_m: float,
                sensitivity: float = 1.0, evidence: str = "segments", min_area_m2: float | None = None,
                shadow_check: bool = True, valid: np.ndarray | None = None) -> np.ndarray:
    """Boolean (y, x) mask of pixels flagged by ``rules`` in one image pair.

    Parameters
    ----------
    before, after : ndarray (band, y, x), uint8
        The pair, same shape; bands red, green, blue and optionally near infra-red.
    rules : tuple of Rule
        Rules to mark (see :func:`select_rules`).
    pixel_size_m : float
        Ground pixel size in metres.
    sensitivity : float
        ``[detection] sensitivity`` of the pixel rules.
    evidence : {"segments", "pixels"}
        See the module docstring. With segments, a construction or demolition rule's
        before (after) classes are not looked at: every new (demolished) building counts.
    min_area_m2 : float, optional
        Smallest change kept, m2, for every rule (default: each rule's ``min_area_m2``, and
        with segments at least ``BuildingParams.min_area_m2``, 30 m2).
    shadow_check : bool
        Segment evidence: keep only buildings with new shadow around them
        (:class:`~imagery_watch.buildings.BuildingParams`); False also keeps flat
        construction (hardstanding), with more false alarms. The check needs imagery that
        shows shadows (:data:`~imagery_watch.buildings.FINEST_USEFUL_M`, 2 m or finer).
    valid : ndarray (y, x) of bool, optional
        Usable pixels of both images (default: all); never flagged elsewhere.

    Raises
    ------
    InputFileError
        Images of different shapes.
    ConfigError
        An unknown ``evidence``.
    """
    if before.shape != after.shape:
        raise InputFileError(f"before {before.shape} and after {after.shape} images differ in size or bands")
    if evidence not in EVIDENCE:
        raise ConfigError(f"evidence: expected one of {', '.join(EVIDENCE)}, found {evidence!r}")
    if min_area_m2 is not None:
        rules = tuple(dataclasses.replace(r, min_area_m2=float(min_area_m2)) for r in rules)
    valid = np.ones(before.shape[1:], dtype=bool) if valid is None else np.asarray(valid, bool)
    mask = np.zeros(before.shape[1:], bool)
    if evidence == "segments":
        found = {}  # rules asking the same question share one answer
        for rule in rules:
            if rule.where == "outside_farmland":  # no farmland layer: never fires (as the pixel rules)
                continue
            find = (find_new_buildings if turns_into(rule, built=True)
                    else find_demolished_buildings if turns_into(rule, built=False) else None)
            if find is not None:
                smallest = (float(min_area_m2) if min_area_m2 is not None
                            else max(BuildingParams.min_area_m2, rule.min_area_m2))
                params = BuildingParams(min_area_m2=smallest, shadow_check=shadow_check)
                if (find, params) not in found:
                    found[find, params] = find(before, after, pixel_size_m=pixel_size_m, params=params, valid=valid)
                mask |= found[find, params]
        rules = tuple(r for r in rules if not (turns_into(r, built=True) or turns_into(r, built=False)))
        if not rules:
            return mask
    norm = fit_normalisation([before], [after], [valid])
    after_n = apply_normalisation(after, norm)
    params = fit_detector([before], [after_n], [valid], pixel_size_m=pixel_size_m, sensitivity=sensitivity)
    result = detect_block(before, after_n, valid, farmland=None, rules=rules, params=params,
                          pixel_size_m=pixel_size_m)
    return mask | ((result.rule > 0) & valid)


def run_pairs(before_dir, after_dir, out_dir, *, pixel_size_m: float, rule_names=None,
              config_path=None, model_path=None, evidence: str = "segments",
              min_area_m2: float | None = None, shadow_check: bool = True) -> dict:
    """Write one 0/255 PNG mask per pair of same-named images.

    With ``model_path`` (a file of ``imagery-watch train``) the masks come from that model
    (:func:`imagery_watch.learn.predict_change`) instead of the rules. ``evidence``,
    ``min_area_m2`` and ``shadow_check`` are those of :func:`detect_pair`.

    Raises
    ------
    InputFileError
        No images, a name missing from the after folder, unreadable images, a model file
        that cannot be used.
    ConfigError
        Rules, a minimum area, pixel evidence or no shadow check asked together with a
        model; an unknown ``evidence``.
    """
    before_dir, after_dir, out_dir = Path(before_dir), Path(after_dir), Path(out_dir)
    model = chosen = None
    if evidence not in EVIDENCE:
        raise ConfigError(f"--evidence: expected one of {', '.join(EVIDENCE)}, found {evidence!r}")
    if model_path is not None:
        if rule_names or config_path or min_area_m2 is not None or evidence != "segments" or not shadow_check:
            raise ConfigError("--model replaces the rules: leave out --rules, --config, --min-area, --evidence and "
                              "--no-shadow-check, or leave out --model")
        from .learn import load_model

        model = load_model(model_path)
    else:
        rules, sensitivity = default_rules(), 1.0
        if config_path:
            cfg = load_config(config_path)
            rules, sensitivity = cfg.rules, cfg.detection.sensitivity
        chosen = select_rules(rules, rule_names)
        if evidence == "segments" and pixel_size_m > FINEST_USEFUL_M:
            log.warning("--pixel-size %g m: coarser than %g m, buildings cast no visible shadow and the segment "
                        "evidence finds little; --no-shadow-check or --evidence pixels may suit this imagery",
                        pixel_size_m, FINEST_USEFUL_M)
    files = list_images(before_dir)
    if not files:
        raise InputFileError(f"{before_dir}: no images (png, bmp, tif, jpg) found")
    missing = [f.name for f in files if not (after_dir / f.name).exists()]
    if missing:
        raise InputFileError(f"{after_dir / missing[0]}: no after image for {missing[0]}; "
                             "both folders need the same file names")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out_dir}: cannot create the output folder ({exc})") from None
    for f in files:
        (before, valid_b), (after, valid_a) = read_image(f, with_valid=True), read_image(after_dir / f.name,
                                                                                        with_valid=True)
        if before.shape[1:] != after.shape[1:]:
            raise InputFileError(f"{after_dir / f.name}: {after.shape[2]} x {after.shape[1]} px, but the before image "
                                 f"is {before.shape[2]} x {before.shape[1]} px; both images of a pair must cover the "
                                 "same grid")
        bands, valid = min(before.shape[0], after.shape[0]), valid_b & valid_a  # transparent pixels: not valid
        if model is not None:
            from .learn import predict_change

            mask = predict_change(model, before[:bands], after[:bands], valid, pixel_size_m=pixel_size_m, name=str(f))
        else:
            mask = detect_pair(before[:bands], after[:bands], rules=chosen, pixel_size_m=pixel_size_m,
                               sensitivity=sensitivity, evidence=evidence, min_area_m2=min_area_m2,
                               shadow_check=shadow_check, valid=valid)
        write_mask_png(out_dir / (f.stem + ".png"), mask)
        log.info("%s: %.2f %% flagged", f.name, 100 * mask.mean())
    if model is not None:
        return {"pairs": len(files), "rules": [], "model": str(model_path), "threshold": model.threshold}
    return {"pairs": len(files), "rules": [r.name for r in chosen], "evidence": evidence}
