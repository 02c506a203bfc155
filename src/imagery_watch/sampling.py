"""A stratified random sample of patches, and area estimates with 95 % intervals from it.

When not every patch can be reviewed in time, a random sample is reviewed instead and the
city-wide totals are estimated from it (DESIGN.md §4), with the stratified estimators of
Olofsson et al. (2014), "Good practices for estimating area and assessing accuracy of land
change", Remote Sensing of Environment 148: 42-57, in the form Stehman (2014, "Estimating
area and map accuracy for stratified random sampling when the strata are different from
the map classes", IJRS 35: 4923-4939) gives for any measured value ``y``.

Sampling units are patches. Strata are the rules crossed with score bands: within each
rule the patches are ranked by score and cut into ``n_bands`` bands of (nearly) equal
count. In stratum ``h`` with ``N_h`` patches, ``n_h`` are drawn by simple random sampling
without replacement. Each sampled patch, once reviewed, gives a value ``y_i`` (e.g. its
farmland area when judged illegal, 0 otherwise), and the population total is estimated by

    Y = sum_h N_h * mean_h(y)
    V(Y) = sum_h N_h**2 * (1 - n_h / N_h) * var_h(y) / n_h        (var with n_h - 1)

with the 95 % interval ``Y +- 1.96 sqrt(V)``. For pixels as units and ``y`` a 0/1
indicator times the pixel area this is Olofsson et al.'s Eq. 9-11 (their Section 5 example
is reproduced in the tests); the finite population correction ``1 - n_h / N_h`` matters
here because strata hold tens to thousands of patches, not millions of pixels. A ratio
(the violation rate) is estimated as ``R = Y / X`` with the linearised variance
``V(R) = sum_h N_h**2 (1 - n_h/N_h) var_h(y - R x) / n_h / X**2`` (Stehman 2014, Eq. 27).

Only decided sample patches (illegal, legal, false alarm) count; undecided ones are
treated as not yet observed, so ``n_h`` is the number reviewed in the stratum. A stratum
with no reviewed patch makes the estimate unavailable; one with a single reviewed patch
(out of more) gives the total but no interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import pandas as pd

from .classes import M2_PER_MU
from .indicators import CITY, COLUMNS, CONFIRMED, DECIDED, RuleRoles, patch_measures

#: two-sided 95 % normal quantile
Z95 = 1.959963984540054
#: columns of a drawn sample
SAMPLE_COLUMNS = ("patch_id", "stratum", "rule", "score_band", "band_low", "band_high", "stratum_patches",
                  "stratum_sample")


@dataclass(frozen=True)
class Estimate:
    """A stratified estimate.

    Attributes
    ----------
    value : float
        The estimated total (or ratio); ``NaN`` when a stratum has no observation.
    se : float
        Standard error; ``NaN`` when a stratum has a single observation out of more.
    ci95_low, ci95_high : float
        ``value -+ 1.96 se``.
    n : int
        Observations used.
    population : int
        Units in the strata of the estimate.
    note : str
        Why the value or its interval is missing (empty when both are there).
    """

    value: float
    se: float
    n: int
    population: int
    note: str = ""

    @property
    def ci95_low(self) -> float:
        return self.value - Z95 * self.se

    @property
    def ci95_high(self) -> float:
        return self.value + Z95 * self.se

    def as_dict(self) -> dict:
        def num(v):
            return None if v is None or math.isnan(v) else float(v)

        return {"value": num(self.value), "se": num(self.se), "ci95_low": num(self.ci95_low),
                "ci95_high": num(self.ci95_high), "n": int(self.n), "population": int(self.population),
                "note": self.note}


def assign_strata(patches: pd.DataFrame, *, n_bands: int = 3) -> pd.DataFrame:
    """The stratum of every patch: its rule and its score band within the rule.

    Parameters
    ----------
    patches : DataFrame
        With ``patch_id``, ``rule`` and ``score``. Not modified.
    n_bands : int
        Score bands per rule (>= 1); a rule with fewer patches gets one band per patch.

    Returns
    -------
    DataFrame
        Same index; ``patch_id``, ``rule``, ``score_band`` (1 = lowest scores), ``band_low``
        and ``band_high`` (score range of the band) and ``stratum`` (``"rule/b2"``).
        Patches are ranked by score, ties broken by ``patch_id``, so the strata depend only
        on the patches, not on row order.
    """
    if n_bands < 1:
        raise ValueError(f"n_bands must be at least 1, not {n_bands}")
    for col in ("patch_id", "rule", "score"):
        if col not in patches.columns:
            raise ValueError(f"the patch table lacks column {col!r}")
    frame = pd.DataFrame({"patch_id": patches["patch_id"].astype(str), "rule": patches["rule"].astype(str),
                          "score": pd.to_numeric(patches["score"], errors="coerce").fillna(0.0).astype(float)},
                         index=patches.index)
    rule = frame["rule"].to_numpy(str)
    score = frame["score"].to_numpy(float)
    order = np.lexsort((frame["patch_id"].to_numpy(str), score, rule))   # by rule, then score, then id
    _, start, count = np.unique(rule[order], return_index=True, return_counts=True)
    first = np.repeat(start, count)                 # position of each sorted row's rule group
    size = np.repeat(count, count)
    rank = np.arange(len(order)) - first
    band = np.empty(len(order), np.int64)
    band[order] = rank * np.minimum(n_bands, size) // size + 1
    frame["score_band"] = band
    lims = frame.groupby(["rule", "score_band"])["score"].agg(["min", "max"])
    key = pd.MultiIndex.from_arrays([frame["rule"], frame["score_band"]])
    frame["band_low"] = lims["min"].reindex(key).to_numpy()
    frame["band_high"] = lims["max"].reindex(key).to_numpy()
    frame["stratum"] = frame["rule"] + "/b" + frame["score_band"].astype(str)
    return frame.drop(columns="score")


def allocate(population: Mapping, n: int, *, min_per_stratum: int = 2) -> dict:
    """Sample size per stratum: at least ``min_per_stratum``, the rest proportional to size.

    Parameters
    ----------
    population : mapping of stratum -> N_h
    n : int
        Total sample size; at least ``min_per_stratum`` per stratum (or all of a smaller
        stratum) is needed. ``n`` >= the population takes every patch.
    min_per_stratum : int
        Two give each stratum a variance.

    Returns
    -------
    dict of stratum -> n_h, summing to ``min(n, sum N_h)``.

    Raises
    ------
    ValueError
        If ``n`` cannot give every stratum its minimum.

    Examples
    --------
    >>> allocate({"a": 100, "b": 10, "c": 1}, 20)
    {'a': 16, 'b': 3, 'c': 1}
    """
    sizes = {k: int(v) for k, v in population.items() if int(v) > 0}
    total = sum(sizes.values())
    if n >= total:
        return dict(sizes)
    base = {k: min(v, min_per_stratum) for k, v in sizes.items()}
    if sum(base.values()) > n:
        raise ValueError(f"a sample of {n} cannot hold {min_per_stratum} patches in each of the {len(sizes)} strata; "
                         f"draw at least {sum(base.values())} (or fewer score bands)")
    alloc = dict(base)
    left = n - sum(base.values())
    while left > 0:
        room = {k: sizes[k] - alloc[k] for k in sizes if sizes[k] > alloc[k]}
        weight = sum(sizes[k] for k in room)
        share = {k: left * sizes[k] / weight for k in room}
        add = {k: min(int(math.floor(share[k])), room[k]) for k in room}
        given = sum(add.values())
        # largest remainders get the rest, one each, in a fixed order
        for k in sorted(room, key=lambda k: (-(share[k] - math.floor(share[k])), str(k))):
            if given >= left:
                break
            if add[k] < room[k]:
                add[k] += 1
                given += 1
        for k, v in add.items():
            alloc[k] += v
        left -= given
    return alloc


def draw_sample(patches: pd.DataFrame, n: int, *, seed: int, n_bands: int = 3,
                min_per_stratum: int = 2) -> pd.DataFrame:
    """A stratified random sample of ``n`` patches (strata: rule x score band).

    Parameters
    ----------
    patches : DataFrame
        With ``patch_id``, ``rule`` and ``score``. Not modified.
    n : int
        Sample size (>= 1).
    seed : int
        Seed of the random draw; the same patches and seed give the same sample.
    n_bands, min_per_stratum : int
        See :func:`assign_strata` and :func:`allocate`.

    Returns
    -------
    DataFrame
        One row per sampled patch, columns :data:`SAMPLE_COLUMNS` (``stratum_patches`` =
        N_h and ``stratum_sample`` = n_h, which the estimators need), ordered by stratum
        and patch id.

    Raises
    ------
    ValueError
        If ``n`` < 1, the patch ids are not unique, or ``n`` is too small for the strata.
    """
    if n < 1:
        raise ValueError(f"the sample size must be at least 1, not {n}")
    strata = assign_strata(patches, n_bands=n_bands)
    if strata["patch_id"].duplicated().any():
        dup = strata.loc[strata["patch_id"].duplicated(), "patch_id"].iloc[0]
        raise ValueError(f"patch ids are not unique (e.g. {dup!r}); the sample needs one row per patch")
    sizes = strata.groupby("stratum").size()
    alloc = allocate(sizes.to_dict(), n, min_per_stratum=min_per_stratum)
    if strata.empty:
        return pd.DataFrame({c: [] for c in SAMPLE_COLUMNS})
    rng = np.random.default_rng(seed)
    ordered = strata.iloc[np.lexsort((strata["patch_id"].to_numpy(str), strata["stratum"].to_numpy(str)))]
    names, start, count = np.unique(ordered["stratum"].to_numpy(str), return_index=True, return_counts=True)
    take, big_n, small_n = [], [], []
    for h, s0, size in zip(names, start, count):   # strata in sorted order: the draw depends on the seed only
        k = alloc[h]
        take.append(s0 + np.sort(rng.choice(size, size=k, replace=False)))
        big_n += [size] * k
        small_n += [k] * k
    out = ordered.iloc[np.concatenate(take)].assign(stratum_patches=big_n, stratum_sample=small_n)
    return out[list(SAMPLE_COLUMNS)].sort_values(["stratum", "patch_id"], ignore_index=True)


def stratified_total(y, strata, population: Mapping) -> Estimate:
    """Stratified estimate of a population total from a stratified random sample.

    Parameters
    ----------
    y : array-like of float
        The value of each observed sample unit.
    strata : array-like
        The stratum of each observed unit.
    population : mapping of stratum -> N_h
        Every stratum of the population the total covers (units of other strata in
        ``strata`` are ignored).

    Returns
    -------
    Estimate

    Examples
    --------
    Two strata of 10 and 4 units; 2 observed in each:

    >>> e = stratified_total([1.0, 3.0, 0.0, 2.0], ["a", "a", "b", "b"], {"a": 10, "b": 4})
    >>> e.value, round(e.se ** 2, 6)     # 10*2 + 4*1;  100*0.8*2/2 + 16*0.5*2/2
    (24.0, 88.0)
    """
    y = np.asarray(y, dtype=float)
    strata = np.asarray(strata, dtype=object)
    total, var, n_used, notes = 0.0, 0.0, 0, []
    for h, big_n in population.items():
        big_n = int(big_n)
        ys = y[strata == h]
        n_h = ys.size
        if big_n == 0:
            continue
        if n_h == 0:
            notes.append("no reviewed sample patch in a stratum")
            total = var = float("nan")
            continue
        n_used += n_h
        total += big_n * ys.mean()
        if n_h >= big_n:
            continue  # a census of the stratum: no sampling variance
        if n_h < 2:
            notes.append("a stratum has a single reviewed sample patch (no interval)")
            var = float("nan")
            continue
        var += big_n ** 2 * (1 - n_h / big_n) * ys.var(ddof=1) / n_h
    return Estimate(value=float(total), se=math.sqrt(var) if not math.isnan(var) else float("nan"), n=n_used,
                    population=int(sum(int(v) for v in population.values())), note="; ".join(dict.fromkeys(notes)))


def stratified_ratio(y, x, strata, population: Mapping) -> Estimate:
    """Stratified estimate of the ratio of two population totals, ``Y / X``.

    The variance is the linearised one (Stehman 2014, Eq. 27): that of the total of
    ``y - R x``, divided by ``X**2``.

    Parameters
    ----------
    y, x : array-like of float
        Numerator and denominator values of each observed unit.
    strata, population
        As for :func:`stratified_total`.

    Returns
    -------
    Estimate
        ``NaN`` when the estimated ``X`` is 0.
    """
    y = np.asarray(y, dtype=float)
    x = np.asarray(x, dtype=float)
    ty = stratified_total(y, strata, population)
    tx = stratified_total(x, strata, population)
    note = "; ".join(dict.fromkeys(n for n in (ty.note, tx.note) if n))
    if math.isnan(ty.value) or math.isnan(tx.value) or tx.value == 0:
        return Estimate(value=float("nan"), se=float("nan"), n=ty.n, population=ty.population,
                        note=note or "nothing in the denominator")
    ratio = ty.value / tx.value
    td = stratified_total(y - ratio * x, strata, population)
    return Estimate(value=ratio, se=td.se / tx.value, n=ty.n, population=ty.population, note=note)


@dataclass(frozen=True)
class SampleEstimates:
    """Estimates from a reviewed sample.

    Attributes
    ----------
    estimates : dict of str -> Estimate
        ``illegal_farmland_m2``, ``farmland_construction_m2`` (confirmed real),
        ``violation_rate``, ``afforestation_m2``, ``reclamation_m2``; empty when
        ``problems`` is not.
    sample_size, reviewed : int
        Patches in the sample, and those of them decided.
    problems : list of str
        Why the sample cannot be used (drawn on other patches).
    """

    estimates: dict
    sample_size: int
    reviewed: int
    problems: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"sample_size": self.sample_size, "reviewed": self.reviewed, "problems": list(self.problems),
                "estimates": {k: v.as_dict() for k, v in self.estimates.items()}}

    def table_rows(self, *, county: str = CITY) -> list:
        """The estimates as rows of the indicator table (:data:`imagery_watch.indicators.COLUMNS`).

        ``section`` is ``"estimates"``, ``patches`` the reviewed sample patches used; areas
        (planar) in ``m2``/``mu`` with ``ci95_low``/``ci95_high`` in m2, the violation rate
        in ``rate`` with its interval as fractions.
        """
        rows = []
        for key, e in self.estimates.items():
            d = e.as_dict()
            row = {c: None for c in COLUMNS}
            row.update(section="estimates", county=county, rule="", quantity=key.removesuffix("_m2"),
                       patches=e.n, ci95_low=d["ci95_low"], ci95_high=d["ci95_high"])
            if key.endswith("_m2"):
                row.update(m2=d["value"], mu=None if d["value"] is None else d["value"] / M2_PER_MU)
            else:
                row.update(rate=d["value"])
            rows.append(row)
        return rows


def check_sample(patches: pd.DataFrame, sample: pd.DataFrame) -> list:
    """Reasons why ``sample`` was not drawn on ``patches`` (empty when it was).

    The recorded stratum sizes must match the patches' strata now, and every sampled patch
    must still exist in its stratum (a re-run of the detection replaces the patches).
    """
    problems = []
    ids = set(patches["patch_id"].astype(str))
    gone = [p for p in sample["patch_id"].astype(str) if p not in ids]
    if gone:
        problems.append(f"{len(gone)} sampled patch(es) no longer exist (e.g. {gone[0]})")
    n_bands = int(sample["score_band"].max()) if len(sample) else 1
    now = assign_strata(patches, n_bands=n_bands)
    sizes_now = now.groupby("stratum").size().to_dict()
    sizes_then = sample.groupby("stratum")["stratum_patches"].first().astype(int).to_dict()
    differ = sorted(h for h in set(sizes_now) | set(sizes_then) if sizes_now.get(h, 0) != sizes_then.get(h, 0))
    if differ:
        problems.append(f"stratum sizes differ from those at the draw ({', '.join(differ[:3])}"
                        f"{', ...' if len(differ) > 3 else ''})")
    else:
        where = now.set_index("patch_id")["stratum"]
        moved = [p for p, h in zip(sample["patch_id"].astype(str), sample["stratum"]) if p in where.index
                 and where[p] != h]
        if moved:
            problems.append(f"{len(moved)} sampled patch(es) are now in another stratum (e.g. {moved[0]})")
    return problems


def estimate_from_sample(patches: pd.DataFrame, sample: pd.DataFrame, *, roles: RuleRoles = RuleRoles()
                         ) -> SampleEstimates:
    """City-wide estimates from the reviewed patches of a stratified sample.

    Parameters
    ----------
    patches : DataFrame
        The patch table with its current review ``status`` (see
        :func:`imagery_watch.indicators.patch_measures`). Not modified.
    sample : DataFrame
        As returned by :func:`draw_sample` (columns :data:`SAMPLE_COLUMNS`).
    roles : RuleRoles
        Which rules are construction, afforestation and reclamation.

    Returns
    -------
    SampleEstimates
        The values measured on each reviewed sample patch are those of
        :mod:`imagery_watch.indicators`: farmland part of illegal construction, farmland
        part of confirmed (illegal or legal) construction, area of confirmed afforestation
        and reclamation. Each total uses the strata of its rules only (the others
        contribute exactly 0).
    """
    problems = check_sample(patches, sample)
    if problems:
        return SampleEstimates(estimates={}, sample_size=len(sample), reviewed=0, problems=problems)
    m = patch_measures(patches)
    m.index = patches["patch_id"].astype(str).to_numpy()
    s = sample.assign(patch_id=sample["patch_id"].astype(str))
    s = s.join(m[["status", "farmland_m2", "area_m2"]], on="patch_id")
    obs = s[s["status"].isin(DECIDED)]
    reviewed = len(obs)
    population = s.groupby("stratum")["stratum_patches"].first().astype(int)
    rule_of = s.groupby("stratum")["rule"].first()

    def strata_of(rules):
        return {h: int(population[h]) for h in population.index if rule_of[h] in rules}

    con = obs["rule"].isin(roles.construction)
    illegal = np.where(con & (obs["status"] == "illegal"), obs["farmland_m2"], 0.0)
    real_con = np.where(con & obs["status"].isin(CONFIRMED), obs["farmland_m2"], 0.0)
    strata = obs["stratum"].to_numpy(object)
    pop_con = strata_of(roles.construction)
    est = {
        "illegal_farmland_m2": stratified_total(illegal, strata, pop_con),
        "farmland_construction_m2": stratified_total(real_con, strata, pop_con),
        "violation_rate": stratified_ratio(illegal, real_con, strata, pop_con),
    }
    for name, rules in (("afforestation_m2", roles.afforestation), ("reclamation_m2", roles.reclamation)):
        y = np.where(obs["rule"].isin(rules) & obs["status"].isin(CONFIRMED), obs["area_m2"], 0.0)
        est[name] = stratified_total(y, strata, strata_of(rules))
    return SampleEstimates(estimates=est, sample_size=len(sample), reviewed=reviewed)


__all__ = ["assign_strata", "allocate", "draw_sample", "stratified_total", "stratified_ratio", "check_sample",
           "estimate_from_sample", "Estimate", "SampleEstimates", "Z95", "SAMPLE_COLUMNS"]
