"""Evaluate: compare change patches with truth polygons, per rule and overall.

Object level (the usual practice for change leads):

* a truth polygon is **found** when at least ``min_overlap`` (50 %) of its area is
  covered by patches of its rule;
* a patch is **correct** when at least ``min_overlap`` of its area lies inside truth
  polygons of its rule.

``recall = found / truth polygons``, ``precision = correct / patches``. Area level:
truth area, flagged area, the area both share, and the total-area error
``flagged / truth - 1`` (how far the flagged area is from the true changed area).

Matching goes through a spatial index (:class:`shapely.STRtree`): cost grows with the
number of overlapping pairs, not with patches x truth polygons.
"""

from __future__ import annotations

import logging

import numpy as np
import shapely

from .errors import VectorLayerError

log = logging.getLogger(__name__)

#: fraction of a polygon's area that must be covered to count as a match
MIN_OVERLAP = 0.5


def _covered_area(targets: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Area of each target geometry covered by the union of ``others`` (spatial index)."""
    out = np.zeros(targets.size, np.float64)
    if targets.size == 0 or others.size == 0:
        return out
    tree = shapely.STRtree(others)
    i_target, i_other = tree.query(targets, predicate="intersects")
    if i_target.size == 0:
        return out
    order = np.argsort(i_target, kind="stable")
    i_target, i_other = i_target[order], i_other[order]
    bounds = np.flatnonzero(np.diff(i_target)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [i_target.size]])
    single = (ends - starts) == 1
    # one candidate: a vectorised pairwise intersection
    s = starts[single]
    out[i_target[s]] = shapely.area(shapely.intersection(targets[i_target[s]], others[i_other[s]]))
    # several candidates: intersect with their union (so overlapping candidates count once)
    for a, b in zip(starts[~single], ends[~single]):
        t = i_target[a]
        out[t] = shapely.intersection(targets[t], shapely.union_all(others[i_other[a:b]])).area
    return out


def _ratio(num: float, den: float):
    return float(num / den) if den > 0 else None


def _metrics(truth: np.ndarray, patches: np.ndarray, min_overlap: float) -> dict:
    """Counts and areas for one rule (or, summed, for all)."""
    truth_area = shapely.area(truth) if truth.size else np.zeros(0)
    patch_area = shapely.area(patches) if patches.size else np.zeros(0)
    truth_cov = _covered_area(truth, patches)
    patch_cov = _covered_area(patches, truth)
    found = int(np.sum(truth_cov >= min_overlap * truth_area - 1e-9 * truth_area)) if truth.size else 0
    correct = int(np.sum(patch_cov >= min_overlap * patch_area - 1e-9 * patch_area)) if patches.size else 0
    return {
        "truth_polygons": int(truth.size),
        "patches": int(patches.size),
        "found": found,
        "correct": correct,
        "truth_area_m2": float(truth_area.sum()),
        "flagged_area_m2": float(patch_area.sum()),
        "overlap_area_m2": float(patch_cov.sum()),
    }


def _finish(m: dict) -> dict:
    m = dict(m)
    m["recall"] = _ratio(m["found"], m["truth_polygons"])
    m["precision"] = _ratio(m["correct"], m["patches"])
    m["area_recall"] = _ratio(m["overlap_area_m2"], m["truth_area_m2"])
    m["area_precision"] = _ratio(m["overlap_area_m2"], m["flagged_area_m2"])
    m["area_error"] = (m["flagged_area_m2"] / m["truth_area_m2"] - 1.0) if m["truth_area_m2"] > 0 else None
    return m


def evaluate_patches(patches_gdf, truth_gdf, *, rule_field: str = "rule",
                     min_overlap: float = MIN_OVERLAP) -> dict:
    """Object-level and area metrics of patches against truth polygons, per rule.

    Parameters
    ----------
    patches_gdf : geopandas.GeoDataFrame
        Patches with a ``rule`` column (as written by the detect job).
    truth_gdf : geopandas.GeoDataFrame
        Truth polygons with a ``rule`` column. Reprojected to the patches' CRS if the
        two differ.
    rule_field : str
        Name of the rule column in both tables.
    min_overlap : float
        Fraction of a polygon's area that must be covered to count as matched.

    Returns
    -------
    dict
        ``{"rules": {rule: metrics}, "overall": metrics, "min_overlap": float}``, where
        metrics holds ``truth_polygons``, ``patches``, ``found``, ``correct``,
        ``recall``, ``precision``, ``truth_area_m2``, ``flagged_area_m2``,
        ``overlap_area_m2``, ``area_recall``, ``area_precision`` and ``area_error``
        (``flagged / truth - 1``). Ratios with a zero denominator are ``None``.
        Areas are planar, in CRS units squared (m2 for a projected CRS).

    Raises
    ------
    VectorLayerError
        If a table has no ``rule`` column.

    Notes
    -----
    Overlap areas assume the polygons of one rule do not overlap each other within a
    table (true of patches, which are disjoint connected components). The overall
    figures match patches and truth polygons of the same rule only.
    """
    if not 0 < min_overlap <= 1:
        raise ValueError(f"min_overlap: expected a fraction in (0, 1], found {min_overlap}")
    for name, frame in (("patches", patches_gdf), ("truth", truth_gdf)):
        if rule_field not in frame.columns:
            raise VectorLayerError(f"{name}: no {rule_field!r} column; found {', '.join(map(str, frame.columns))}. "
                                   f"Each polygon needs the name of its rule in {rule_field!r}")
    if patches_gdf.crs is not None and truth_gdf.crs is not None and patches_gdf.crs != truth_gdf.crs:
        log.info("reprojecting truth polygons from %s to %s", truth_gdf.crs, patches_gdf.crs)
        truth_gdf = truth_gdf.to_crs(patches_gdf.crs)
    elif (patches_gdf.crs is None) != (truth_gdf.crs is None):
        log.warning("one of patches/truth has no CRS; assuming both share the same coordinates")

    def by_rule(frame) -> dict:
        geoms = np.asarray(frame.geometry.values, dtype=object)
        keep = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
        rules = np.asarray(frame[rule_field].astype(str))
        return {r: geoms[keep & (rules == r)] for r in np.unique(rules[keep])}

    truth, patches = by_rule(truth_gdf), by_rule(patches_gdf)
    empty = np.empty(0, dtype=object)
    per_rule, total = {}, None
    for rule in sorted(set(truth) | set(patches)):
        m = _metrics(truth.get(rule, empty), patches.get(rule, empty), min_overlap)
        per_rule[rule] = _finish(m)
        total = dict(m) if total is None else {k: total[k] + m[k] for k in m}
    if total is None:
        total = _metrics(empty, empty, min_overlap)
    return {"rules": per_rule, "overall": _finish(total), "min_overlap": float(min_overlap)}


def format_table(report: dict) -> str:
    """Plain-text table of an :func:`evaluate_patches` report, one line per rule."""
    head = (f"{'rule':<26} {'truth':>6} {'found':>6} {'recall':>7} {'patches':>8} {'correct':>8} "
            f"{'precision':>9} {'truth m2':>12} {'flagged m2':>12} {'area err':>9}")

    def pct(v):
        return f"{v * 100:.1f}%" if v is not None else "-"

    def line(name, m):
        err = f"{m['area_error'] * 100:+.1f}%" if m["area_error"] is not None else "-"
        return (f"{name:<26} {m['truth_polygons']:>6} {m['found']:>6} {pct(m['recall']):>7} {m['patches']:>8} "
                f"{m['correct']:>8} {pct(m['precision']):>9} {m['truth_area_m2']:>12.1f} "
                f"{m['flagged_area_m2']:>12.1f} {err:>9}")

    lines = [head, "-" * len(head)]
    lines += [line(rule, m) for rule, m in report["rules"].items()]
    lines += ["-" * len(head), line("overall", report["overall"])]
    return "\n".join(lines)


__all__ = ["evaluate_patches", "format_table", "MIN_OVERLAP"]
