"""The figures the city's plan asks for, per county and city-wide (DESIGN.md §4).

Pure computation on a table of patches (no I/O): :func:`compute_indicators` turns the
patch table of a job (its review ``status`` included) into one long table of figures.

Definitions
-----------
*New construction on farmland* is the part inside farmland (``farmland_m2``) of the
patches of the construction rules, false alarms left out. Of it:

- *illegal* / *legal*: patches a reviewer judged so;
- *pending*: patches not decided yet (``pending`` and ``field_visit``); the part of a
  pending patch inside approved construction land is *pending approved*, the rest
  *pending unapproved*;
- *approved*: the part inside approved construction land, whatever the status.

A patch's farmland part inside approved land is not stored, only its bounds are known: it
is at least ``approved_m2 - (area_m2 - farmland_m2)`` (the approved part that cannot lie
outside farmland) and at most ``min(approved_m2, farmland_m2)``. The lower bound is used,
so the provisional violation rate stays an upper bound; for patches wholly inside
farmland, as the ``construction_on_farmland`` rule makes them, both bounds equal
``approved_m2``.

- violation rate, **provisional** = (illegal + pending unapproved) / (illegal + legal +
  pending): every undecided patch outside approved land counted as illegal, an upper
  bound;
- violation rate, **confirmed** = illegal / (illegal + legal): reviewed patches only.
  When every patch is decided the two are equal.
- afforestation (tree cover gained) and reclamation (farmland gained from built land),
  **provisional** = area of the patches of those rules that are not false alarms,
  **confirmed** = area of those a reviewer confirmed (``illegal`` or ``legal``; both say
  the change is real).

A rate with nothing to divide by is ``NaN``; it meets its target when there is no new
construction on farmland at all, and its ``target_met`` is unknown (``None``) when there is
some but none of it is reviewed yet. Every patch counts once, in the county of its ``county`` column (the county
holding the largest part of it, DESIGN.md §3), so the county figures add up to the
city-wide ones; patches outside every county count city-wide only, in the row
:data:`OUTSIDE`. Areas are given planar (``area_m2`` and the columns derived from it) and
ellipsoidal (each patch's planar figures scaled by ``area_ellipsoidal_m2 / area_m2``),
the basis of official land-survey figures; rates and targets are judged on the
ellipsoidal areas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from .classes import M2_PER_MU
from .errors import JobError

#: the row of the whole city
CITY = "City-wide"
#: the row of patches outside every county (counted city-wide only)
OUTSIDE = "(outside counties)"
#: every status a patch can have (DESIGN.md §3)
STATUSES = ("pending", "illegal", "legal", "false_alarm", "field_visit")
#: statuses of patches not decided yet
UNDECIDED = ("pending", "field_visit")
#: statuses of patches a reviewer confirmed as real change
CONFIRMED = ("illegal", "legal")
#: statuses of decided patches (review progress)
DECIDED = ("illegal", "legal", "false_alarm")

#: targets of the city's yearly plan
VIOLATION_RATE_MAX = 0.01
AFFORESTATION_MIN_MU = 9_320.0
RECLAMATION_MIN_MU = 15_000.0

#: columns of the indicator table, in order
COLUMNS = ("section", "county", "rule", "quantity", "patches", "m2", "mu", "ellipsoidal_m2", "ellipsoidal_mu",
           "rate", "ci95_low", "ci95_high", "target", "target_met")

_REQUIRED = ("rule", "area_m2")


@dataclass(frozen=True)
class RuleRoles:
    """Which rules feed which indicator.

    Attributes
    ----------
    construction : tuple of str
        Rules of new construction; their part inside farmland is the violation rate's base.
    afforestation : tuple of str
        Rules of tree cover gained.
    reclamation : tuple of str
        Rules of farmland gained by reclaiming built land.
    """

    construction: tuple = ("construction_on_farmland", "construction_elsewhere")
    afforestation: tuple = ("afforestation",)
    reclamation: tuple = ("reclamation",)


@dataclass(frozen=True)
class Targets:
    """The plan's targets (DESIGN.md §1).

    Attributes
    ----------
    violation_rate_max : float
        Largest violation rate allowed, as a fraction (0.01 = 1 %).
    afforestation_min_mu, reclamation_min_mu : float
        Yearly city-wide gains required, in mu.
    """

    violation_rate_max: float = VIOLATION_RATE_MAX
    afforestation_min_mu: float = AFFORESTATION_MIN_MU
    reclamation_min_mu: float = RECLAMATION_MIN_MU


@dataclass(frozen=True)
class Indicators:
    """The figures of a job.

    Attributes
    ----------
    table : DataFrame
        One row per figure, columns :data:`COLUMNS`. ``section`` is ``"areas"`` (per county
        and rule: ``flagged``, ``approved`` and one row per status) or ``"indicators"``
        (per county: the quantities of the module docstring); areas in ``m2``/``mu``
        (planar) and ``ellipsoidal_m2``/``ellipsoidal_mu``; rates as fractions in
        ``rate``; ``target`` is the target in the unit of the row (fraction or mu) and
        ``target_met`` is set where a target applies.
    counties : list of str
        Row order: the counties, then :data:`OUTSIDE` when patches lie outside them, then
        :data:`CITY`.
    rules : list of str
    progress : dict
        Review progress: ``{"patches", "decided", "area_m2", "decided_area_m2",
        "by_status": {status: {"patches", "area_m2"}}, "by_rule": {rule: {...}}}``.
    roles : RuleRoles
    targets : Targets
    """

    table: pd.DataFrame
    counties: list
    rules: list
    progress: dict
    roles: RuleRoles = field(default_factory=RuleRoles)
    targets: Targets = field(default_factory=Targets)

    def row(self, quantity: str, *, county: str = CITY, rule: str = "") -> pd.Series:
        """The row of one figure.

        Raises
        ------
        KeyError
            If there is no such figure.
        """
        t = self.table
        sel = t[(t["quantity"] == quantity) & (t["county"] == county) & (t["rule"] == rule)]
        if sel.empty:
            raise KeyError(f"no figure {quantity!r} for county {county!r}, rule {rule!r}")
        return sel.iloc[0]

    def value(self, quantity: str, *, county: str = CITY, rule: str = "", column: str = "ellipsoidal_m2") -> float:
        """One number of the table (default: the ellipsoidal area in m2)."""
        return float(self.row(quantity, county=county, rule=rule)[column])

    def records(self) -> list:
        """The table as a list of dicts, ``NaN`` as ``None`` (for JSON and CSV)."""
        out = []
        for rec in self.table.to_dict("records"):
            out.append({k: _plain(v) for k, v in rec.items()})
        return out


def _plain(v):
    """A JSON-friendly scalar: numpy scalars to Python, NaN to None."""
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return None if math.isnan(v) else float(v)
    if v is pd.NA:
        return None
    return v


def _county_names(counties) -> list:
    if counties is None:
        return []
    if isinstance(counties, pd.DataFrame):
        if "name" not in counties.columns:
            raise JobError("the counties table has no 'name' column; name the counties (layers.counties.name_field)")
        names = counties["name"]
    else:
        names = counties
    return list(dict.fromkeys(str(n) for n in names if n is not None and str(n) != ""))


def patch_measures(patches: pd.DataFrame) -> pd.DataFrame:
    """The per-patch numbers the indicators add up.

    Parameters
    ----------
    patches : DataFrame
        Patch table (DESIGN.md §3): ``rule``, ``area_m2`` and, when present, ``county``,
        ``status``, ``farmland_m2``, ``approved_m2``, ``area_ellipsoidal_m2``; missing or
        empty values read as: county outside, status ``pending``, areas 0, ellipsoidal =
        planar.

    Returns
    -------
    DataFrame
        Same index; columns ``county`` (:data:`OUTSIDE` for none), ``rule``, ``status``,
        ``area_m2``, ``farmland_m2``, ``approved_m2``, ``approved_farmland_m2`` (the lower
        bound of the module docstring) and ``ellipsoidal_factor``.

    Raises
    ------
    JobError
        If a required column is missing or a status is unknown.
    """
    missing = [c for c in _REQUIRED if c not in patches.columns]
    if missing:
        raise JobError(f"the patch table lacks column(s) {', '.join(missing)}; expected the patch layer written "
                       "by `imagery-watch detect`")

    def column(name, default):
        if name in patches.columns:
            return patches[name]
        return pd.Series(default, index=patches.index)

    county = column("county", "").astype(object).where(lambda s: s.notna(), "").astype(str)
    county = county.where(county.str.strip() != "", OUTSIDE)
    status = column("status", "pending").astype(object).where(lambda s: s.notna(), "pending").astype(str)
    status = status.where(status.str.strip() != "", "pending")
    unknown = sorted(set(status) - set(STATUSES))
    if unknown:
        raise JobError(f"unknown patch status(es) {', '.join(map(repr, unknown))}; expected one of "
                       f"{', '.join(STATUSES)}")
    area = pd.to_numeric(column("area_m2", 0.0), errors="coerce").fillna(0.0).astype(float)
    farm = pd.to_numeric(column("farmland_m2", 0.0), errors="coerce").fillna(0.0).astype(float).clip(0, None)
    appr = pd.to_numeric(column("approved_m2", 0.0), errors="coerce").fillna(0.0).astype(float).clip(0, None)
    farm = np.minimum(farm, area)
    appr = np.minimum(appr, area)
    appr_farm = (appr - (area - farm)).clip(lower=0.0)
    appr_farm = np.minimum(appr_farm, farm)
    ell = pd.to_numeric(column("area_ellipsoidal_m2", np.nan), errors="coerce").astype(float)
    factor = (ell / area.where(area > 0)).where(lambda s: np.isfinite(s) & (s > 0), 1.0)
    return pd.DataFrame({"county": county, "rule": column("rule", "").astype(str), "status": status,
                         "area_m2": area, "farmland_m2": farm, "approved_m2": appr,
                         "approved_farmland_m2": appr_farm, "ellipsoidal_factor": factor}, index=patches.index)


def _sum(m: pd.DataFrame, col: str) -> tuple:
    """Planar and ellipsoidal sums of one column, and the patch count with a positive value."""
    v = m[col].to_numpy(float)
    return float(v.sum()), float((v * m["ellipsoidal_factor"].to_numpy(float)).sum()), int((v > 0).sum())


def _row(section, county, rule, quantity, *, patches=0, m2=float("nan"), ell=float("nan"), rate=float("nan"),
         target=float("nan"), met=None) -> dict:
    return {"section": section, "county": county, "rule": rule, "quantity": quantity, "patches": int(patches),
            "m2": m2, "mu": m2 / M2_PER_MU, "ellipsoidal_m2": ell, "ellipsoidal_mu": ell / M2_PER_MU,
            "rate": rate, "ci95_low": float("nan"), "ci95_high": float("nan"), "target": target,
            "target_met": met}


def _area_rows(m: pd.DataFrame, county: str, rules: Sequence[str]) -> list:
    rows = []
    for rule in rules:
        r = m[m["rule"] == rule]
        m2, ell, _ = _sum(r, "area_m2")
        rows.append(_row("areas", county, rule, "flagged", patches=len(r), m2=m2, ell=ell))
        m2, ell, n = _sum(r, "approved_m2")
        rows.append(_row("areas", county, rule, "approved", patches=n, m2=m2, ell=ell))
        for status in STATUSES:
            s = r[r["status"] == status]
            m2, ell, _ = _sum(s, "area_m2")
            rows.append(_row("areas", county, rule, status, patches=len(s), m2=m2, ell=ell))
    return rows


def _rate(num: float, den: float) -> float:
    return num / den if den > 0 else float("nan")


def _indicator_rows(m: pd.DataFrame, county: str, roles: RuleRoles, targets: Targets) -> list:
    rows = []
    con = m[m["rule"].isin(roles.construction) & (m["status"] != "false_alarm") & (m["farmland_m2"] > 0)]
    illegal = con[con["status"] == "illegal"]
    legal = con[con["status"] == "legal"]
    pending = con[con["status"].isin(UNDECIDED)]
    fig = {}
    for name, part, col in (("farmland_construction", con, "farmland_m2"),
                            ("farmland_construction_approved", con, "approved_farmland_m2"),
                            ("farmland_construction_illegal", illegal, "farmland_m2"),
                            ("farmland_construction_legal", legal, "farmland_m2"),
                            ("farmland_construction_pending", pending, "farmland_m2"),
                            ("farmland_construction_pending_approved", pending, "approved_farmland_m2")):
        m2, ell, n = _sum(part, col)
        fig[name] = (m2, ell, n if col == "approved_farmland_m2" else len(part))
    p_m2 = fig["farmland_construction_pending"][0] - fig["farmland_construction_pending_approved"][0]
    p_ell = fig["farmland_construction_pending"][1] - fig["farmland_construction_pending_approved"][1]
    unappr_n = int((pending["farmland_m2"] - pending["approved_farmland_m2"] > 0).sum())
    fig["farmland_construction_pending_unapproved"] = (max(p_m2, 0.0), max(p_ell, 0.0), unappr_n)
    for name, (m2, ell, n) in fig.items():
        rows.append(_row("indicators", county, "", name, patches=n, m2=m2, ell=ell))

    _, ill_ell, ill_n = fig["farmland_construction_illegal"]
    _, leg_ell, leg_n = fig["farmland_construction_legal"]
    _, all_ell, all_n = fig["farmland_construction"]
    _, pu_ell, _ = fig["farmland_construction_pending_unapproved"]
    limit = targets.violation_rate_max
    for name, num, den, n in (("violation_rate_provisional", ill_ell + pu_ell, all_ell, all_n),
                              ("violation_rate_confirmed", ill_ell, ill_ell + leg_ell, ill_n + leg_n)):
        rate = _rate(num, den)
        # no rate: met when there is no new construction on farmland at all, unknown when
        # there is some but none of it is reviewed yet
        met = (rate <= limit) if not math.isnan(rate) else (True if all_ell == 0 else None)
        rows.append(_row("indicators", county, "", name, patches=n, rate=rate, target=limit, met=met))

    for role, rules, target_mu in (("afforestation", roles.afforestation, targets.afforestation_min_mu),
                                   ("reclamation", roles.reclamation, targets.reclamation_min_mu)):
        r = m[m["rule"].isin(rules)]
        for basis, statuses in (("provisional", UNDECIDED + CONFIRMED), ("confirmed", CONFIRMED)):
            part = r[r["status"].isin(statuses)]
            m2, ell, _ = _sum(part, "area_m2")
            city = county == CITY
            rows.append(_row("indicators", county, "", f"{role}_{basis}", patches=len(part), m2=m2, ell=ell,
                             target=target_mu if city else float("nan"),
                             met=bool(ell / M2_PER_MU >= target_mu) if city else None))
    return rows


def _progress(m: pd.DataFrame, rules: Sequence[str]) -> dict:
    def block(part):
        decided = part[part["status"].isin(DECIDED)]
        return {"patches": int(len(part)), "decided": int(len(decided)),
                "area_m2": float(part["area_m2"].sum()), "decided_area_m2": float(decided["area_m2"].sum()),
                "by_status": {s: {"patches": int((part["status"] == s).sum()),
                                  "area_m2": float(part.loc[part["status"] == s, "area_m2"].sum())}
                              for s in STATUSES}}

    out = block(m)
    out["by_rule"] = {rule: block(m[m["rule"] == rule]) for rule in rules}
    return out


def compute_indicators(patches: pd.DataFrame, *, counties=None, rules: Iterable[str] | None = None,
                       roles: RuleRoles = RuleRoles(), targets: Targets = Targets()) -> Indicators:
    """Per county and city-wide figures of a job's patches (see the module docstring).

    Parameters
    ----------
    patches : DataFrame or GeoDataFrame
        Patch table (DESIGN.md §3); geometry is not used. Not modified.
    counties : GeoDataFrame with a ``name`` column, or sequence of str, optional
        The counties to report, in this order, even those without patches.
    rules : iterable of str, optional
        Rules to report, in this order (default: the rules of ``patches``); rules found in
        ``patches`` but not listed are added after them.
    roles : RuleRoles
        Which rules feed the violation rate, afforestation and reclamation.
    targets : Targets

    Returns
    -------
    Indicators

    Raises
    ------
    JobError
        If the patch table lacks ``rule`` or ``area_m2``, or holds an unknown status.

    Examples
    --------
    >>> import pandas as pd
    >>> p = pd.DataFrame({"rule": ["construction_on_farmland"] * 2, "county": ["A", "A"],
    ...                   "area_m2": [300.0, 100.0], "farmland_m2": [300.0, 100.0],
    ...                   "approved_m2": [0.0, 0.0], "status": ["illegal", "legal"]})
    >>> ind = compute_indicators(p, counties=["A", "B"])
    >>> ind.value("violation_rate_confirmed", county="A", column="rate")
    0.75
    >>> ind.value("farmland_construction", county="B")
    0.0
    """
    m = patch_measures(patches)
    rule_list = list(dict.fromkeys([*(rules or []), *sorted(set(m["rule"]))]))
    county_list = _county_names(counties)
    county_list += sorted(set(m["county"]) - set(county_list) - {OUTSIDE})
    if (m["county"] == OUTSIDE).any():
        county_list.append(OUTSIDE)
    rows = []
    for county in [*county_list, CITY]:
        part = m if county == CITY else m[m["county"] == county]
        rows += _area_rows(part, county, rule_list)
        rows += _indicator_rows(part, county, roles, targets)
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    return Indicators(table=table, counties=[*county_list, CITY], rules=rule_list, progress=_progress(m, rule_list),
                      roles=roles, targets=targets)


__all__ = ["compute_indicators", "patch_measures", "Indicators", "RuleRoles", "Targets", "CITY", "OUTSIDE",
           "STATUSES", "UNDECIDED", "CONFIRMED", "DECIDED", "VIOLATION_RATE_MAX", "AFFORESTATION_MIN_MU",
           "RECLAMATION_MIN_MU", "COLUMNS"]
