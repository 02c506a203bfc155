"""The indicator report: one self-contained HTML page (no external assets, opens offline).

:func:`render_report` returns the page as a string (the CLI writes it): a headline panel
with each indicator against its target, bar charts per county, a map of the patches over
the county outlines coloured by review status, the review progress, the sample estimates
when a sample was drawn, the areas per county and rule, and the method and inputs (mosaics,
epochs, config, software version) so that every figure can be traced. Charts and map are
inline SVG (:mod:`imagery_watch.report_svg`); styles are inline; there is no script.
"""

from __future__ import annotations

import math
from html import escape
from typing import Mapping

from . import __version__
from .classes import M2_PER_MU
from .indicators import CITY, OUTSIDE, STATUSES, Indicators
from .report_svg import Segment, bar_chart, patch_map

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans","Noto Sans CJK SC",sans-serif;
 margin:0;color:#1f2328;background:#f6f8fa}
main{max-width:1180px;margin:0 auto;padding:16px 24px 48px}
header{background:#24323f;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;color:#c9d4de}
h2{font-size:17px;margin:28px 0 10px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
h3{font-size:14px;margin:16px 0 6px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(250px,1fr));gap:12px}
.card{background:#fff;border:1px solid #d0d7de;border-left:6px solid #8c959f;border-radius:6px;padding:10px 12px}
.card.met{border-left-color:#1a7f37}.card.not-met{border-left-color:#cf222e}.card.unknown{border-left-color:#bf8700}
.card .name{font-weight:600}.card .value{font-size:26px;font-weight:700;margin:2px 0}
.card .target{color:#57606a}.card .note{color:#57606a;font-size:12px;margin-top:4px}
.badge{display:inline-block;border-radius:10px;padding:0 8px;font-size:12px;font-weight:600;color:#fff;
 background:#8c959f}.met .badge{background:#1a7f37}.not-met .badge{background:#cf222e}
.unknown .badge{background:#bf8700}
.progress{height:10px;background:#eaeef2;border-radius:5px;overflow:hidden;margin-top:6px}
.progress span{display:block;height:100%;background:#0969da}
.panel{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:10px 12px;margin:10px 0;overflow-x:auto}
table{border-collapse:collapse;font-size:13px}th,td{padding:3px 8px;border-bottom:1px solid #eaeef2;text-align:right}
th:first-child,td:first-child,td.l,th.l{text-align:left}thead th{background:#f6f8fa;position:sticky;top:0}
tr.city td{font-weight:700;border-top:2px solid #d0d7de}
.legend span{display:inline-block;margin-right:14px}.legend i{display:inline-block;width:12px;height:12px;
 margin-right:4px;vertical-align:-1px;border-radius:2px}
pre{background:#f6f8fa;padding:8px;overflow-x:auto;font-size:12px}
svg text{font:12px system-ui,sans-serif;fill:#1f2328}svg .cat{text-anchor:end}svg .tick{text-anchor:middle;fill:#57606a}
svg .grid{stroke:#eaeef2}svg .target{stroke:#cf222e;stroke-width:1.5;stroke-dasharray:4 3}
svg .target-label{fill:#cf222e;font-size:11px}svg .end{fill:#57606a;font-size:11px}
.seg-illegal,.st-illegal{fill:#cf222e;background:#cf222e}
.seg-unapproved,.st-pending{fill:#fb8c00;background:#fb8c00}
.seg-approved{fill:#ffd591;background:#ffd591}
.seg-legal,.st-legal{fill:#1a7f37;background:#1a7f37}
.st-false_alarm{fill:#8c959f;background:#8c959f}.st-field_visit{fill:#0969da;background:#0969da}
.seg-provisional{fill:#fb8c00;background:#fb8c00}.seg-confirmed{fill:#cf222e;background:#cf222e}
.seg-aff{fill:#2da44e;background:#2da44e}.seg-aff-pending{fill:#aceebb;background:#aceebb}
.seg-rec{fill:#9a6700;background:#9a6700}.seg-rec-pending{fill:#f5d9a8;background:#f5d9a8}
svg .county{fill:#fbfcfd;stroke:#57606a;stroke-width:1.2;fill-rule:evenodd}
svg .county-label{fill:#57606a;font-size:13px;font-weight:600;text-anchor:middle;paint-order:stroke;
 stroke:#fff;stroke-width:3px}
svg .patch{stroke:#1f2328;stroke-width:.4;fill-rule:evenodd;fill-opacity:.85}
"""

_STATUS_LABELS = {"pending": "pending", "illegal": "illegal", "legal": "legal (approved)",
                  "false_alarm": "false alarm", "field_visit": "needs field visit"}


def fmt_mu(v) -> str:
    """Area in mu for display: thousands separators, 2 decimals below 1,000 mu."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:,.2f}"


def fmt_rate(v) -> str:
    """A fraction as a percentage with 2 decimals (``n/a`` for NaN)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{100 * v:.2f} %"


def _met_class(met) -> tuple:
    if met is None or (isinstance(met, float) and math.isnan(met)):
        return "unknown", "not known yet"
    return ("met", "met") if bool(met) else ("not-met", "not met")


def _card(key: str, name: str, value: str, target: str, met, note: str) -> str:
    cls, word = _met_class(met)
    return (f'<div class="card {cls}" data-indicator="{escape(key)}"><div class="name">{escape(name)}</div>'
            f'<div class="value">{escape(value)}</div><div class="target">{escape(target)} · '
            f'<span class="badge">{word}</span></div><div class="note">{escape(note)}</div></div>')


def _headline(ind: Indicators) -> str:
    t = ind.targets
    cards = []
    for basis, note in (("provisional", "upper bound: undecided patches outside approved land counted as illegal"),
                        ("confirmed", "reviewed patches only")):
        r = ind.row(f"violation_rate_{basis}")
        cards.append(_card(f"violation_rate_{basis}", f"Violation rate, {basis}", fmt_rate(r["rate"]),
                           f"target ≤ {100 * t.violation_rate_max:g} %", r["target_met"], note))
    for role, label, target in (("afforestation", "Afforestation", t.afforestation_min_mu),
                                ("reclamation", "Reclamation gain", t.reclamation_min_mu)):
        for basis, note in (("provisional", "every patch not judged a false alarm"),
                            ("confirmed", "patches a reviewer confirmed")):
            r = ind.row(f"{role}_{basis}")
            cards.append(_card(f"{role}_{basis}", f"{label}, {basis}", f"{fmt_mu(r['ellipsoidal_mu'])} mu",
                               f"target ≥ {fmt_mu(target)} mu a year", r["target_met"], note))
    p = ind.progress
    share = p["decided"] / p["patches"] if p["patches"] else 1.0
    cls = "met" if share >= 1 else "unknown"
    cards.append(f'<div class="card {cls}" data-indicator="review_progress"><div class="name">Review progress</div>'
                 f'<div class="value">{p["decided"]:,} / {p["patches"]:,}</div><div class="target">patches decided '
                 f"({100 * share:.0f} %)</div><div class=\"progress\"><span style=\"width:{100 * share:.1f}%\"></span>"
                 f'</div><div class="note">{p["by_status"]["field_visit"]["patches"]:,} waiting for a field visit'
                 "</div></div>")
    return f'<section id="headline"><h2>Headline (city-wide)</h2><div class="cards">{"".join(cards)}</div></section>'


def _legend(items) -> str:
    return '<div class="legend">' + "".join(f'<span><i class="{c}"></i>{escape(n)}</span>' for c, n in items) + \
        "</div>"


def _charts(ind: Indicators) -> str:
    counties = [c for c in ind.counties if c != CITY]
    rate_rows = []
    for c in [*counties, CITY]:
        rate_rows.append((c, [[Segment(ind.value("violation_rate_provisional", county=c, column="rate"),
                                       "provisional", "provisional")],
                              [Segment(ind.value("violation_rate_confirmed", county=c, column="rate"),
                                       "confirmed", "confirmed")]]))
    con_rows = []
    for c in counties:
        def v(q):
            return ind.value(q, county=c, column="ellipsoidal_mu")
        con_rows.append((c, [[Segment(v("farmland_construction_illegal"), "illegal", "illegal"),
                              Segment(v("farmland_construction_pending_unapproved"), "unapproved",
                                      "pending, outside approved land"),
                              Segment(v("farmland_construction_pending_approved"), "approved",
                                      "pending, inside approved land"),
                              Segment(v("farmland_construction_legal"), "legal", "legal")]]))
    gain_rows = []
    for c in counties:
        bars = []
        for role, kind in (("afforestation", "aff"), ("reclamation", "rec")):
            conf = ind.value(f"{role}_confirmed", county=c, column="ellipsoidal_mu")
            prov = ind.value(f"{role}_provisional", county=c, column="ellipsoidal_mu")
            bars.append([Segment(conf, kind, f"{role} confirmed"), Segment(prov - conf, f"{kind}-pending",
                                                                           f"{role} not yet reviewed")])
        gain_rows.append((c, bars))
    return (
        '<section id="charts"><h2>By county</h2>'
        '<div class="panel"><h3>Violation rate</h3>'
        + _legend([("seg-provisional", "provisional (upper bound)"), ("seg-confirmed", "confirmed (reviewed only)")])
        + bar_chart(rate_rows, fmt=fmt_rate, tick_fmt=lambda v: f"{100 * v:g} %",
                    target=ind.targets.violation_rate_max,
                    target_label=f"target {100 * ind.targets.violation_rate_max:g} %", chart_id="chart-violation",
                    title="Violation rate by county")
        + '</div><div class="panel"><h3>New construction on farmland (mu)</h3>'
        + _legend([("seg-illegal", "illegal (confirmed)"), ("seg-unapproved", "pending, outside approved land"),
                   ("seg-approved", "pending, inside approved land"), ("seg-legal", "legal")])
        + bar_chart(con_rows, fmt=fmt_mu, chart_id="chart-construction",
                    title="New construction on farmland by county, mu")
        + '</div><div class="panel"><h3>Afforestation and reclamation gained (mu)</h3>'
        + _legend([("seg-aff", "afforestation, confirmed"), ("seg-aff-pending", "afforestation, not yet reviewed"),
                   ("seg-rec", "reclamation, confirmed"), ("seg-rec-pending", "reclamation, not yet reviewed")])
        + bar_chart(gain_rows, fmt=fmt_mu, chart_id="chart-gains", title="Afforestation and reclamation by county, mu")
        + "</div>" + _county_table(ind) + "</section>")


def _county_table(ind: Indicators) -> str:
    head = ("<tr><th>County</th><th>New construction on farmland, mu</th><th>illegal (confirmed)</th>"
            "<th>pending, outside approved</th><th>inside approved land</th><th>Violation rate, provisional</th>"
            "<th>confirmed</th><th>≤ 1 %?</th><th>Afforestation, mu (prov. / conf.)</th>"
            "<th>Reclamation, mu (prov. / conf.)</th></tr>")
    body = []
    for c in ind.counties:
        def mu(q):
            return fmt_mu(ind.value(q, county=c, column="ellipsoidal_mu"))
        prov = ind.row("violation_rate_provisional", county=c)
        conf = ind.row("violation_rate_confirmed", county=c)
        _, word = _met_class(prov["target_met"])
        body.append(f'<tr class="{"city" if c == CITY else ""}"><td>{escape(c)}</td>'
                    f"<td>{mu('farmland_construction')}</td><td>{mu('farmland_construction_illegal')}</td>"
                    f"<td>{mu('farmland_construction_pending_unapproved')}</td>"
                    f"<td>{mu('farmland_construction_approved')}</td><td>{fmt_rate(prov['rate'])}</td>"
                    f"<td>{fmt_rate(conf['rate'])}</td><td>{word}</td>"
                    f"<td>{mu('afforestation_provisional')} / {mu('afforestation_confirmed')}</td>"
                    f"<td>{mu('reclamation_provisional')} / {mu('reclamation_confirmed')}</td></tr>")
    note = ("<p>Each patch counts in the county holding the largest part of it (its <code>county</code>); "
            f"{escape(OUTSIDE)} counts city-wide only. Areas are ellipsoidal, in mu (1 mu = 666.67 m²).</p>")
    return f'<div class="panel"><table id="county-table"><thead>{head}</thead><tbody>{"".join(body)}</tbody>' \
           f"</table>{note}</div>"


def _map(patches, counties) -> str:
    legend = _legend([(f"st-{s}", _STATUS_LABELS[s]) for s in STATUSES])
    return (f'<section id="map"><h2>Map of patches by review status</h2><div class="panel">{legend}'
            f"{patch_map(patches, counties)}</div></section>")


def _progress(ind: Indicators) -> str:
    head = "<tr><th>Rule</th><th>Patches</th><th>Decided</th>" + "".join(
        f"<th>{escape(_STATUS_LABELS[s])}</th>" for s in STATUSES) + "<th>Area decided</th></tr>"
    rows = []
    for name, p in [*ind.progress["by_rule"].items(), ("all rules", ind.progress)]:
        share = p["decided_area_m2"] / p["area_m2"] if p["area_m2"] else 1.0
        rows.append(f'<tr class="{"city" if name == "all rules" else ""}"><td>{escape(name)}</td>'
                    f"<td>{p['patches']:,}</td><td>{p['decided']:,}</td>"
                    + "".join(f"<td>{p['by_status'][s]['patches']:,}</td>" for s in STATUSES)
                    + f"<td>{100 * share:.0f} %</td></tr>")
    return (f'<section id="progress"><h2>Review progress</h2><div class="panel"><table><thead>{head}</thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div></section>")


_ESTIMATE_LABELS = {
    "illegal_farmland_m2": ("Illegal new construction on farmland", "mu"),
    "farmland_construction_m2": ("New construction on farmland (real change)", "mu"),
    "violation_rate": ("Violation rate", "rate"),
    "afforestation_m2": ("Afforestation", "mu"),
    "reclamation_m2": ("Reclamation gain", "mu"),
}


def _sample(estimates, sample_info: Mapping) -> str:
    if estimates is None:
        return ('<section id="sample"><h2>Estimates from a sample</h2><div class="panel"><p>No review sample drawn. '
                "When not every patch can be reviewed in time, draw one with <code>imagery-watch review sample "
                "JOB_DIR --n N --seed S</code>, review its patches, and run <code>imagery-watch indicators</code> "
                "again for area estimates with 95 % confidence intervals.</p></div></section>")
    info = (f"<p>Stratified random sample of {estimates.sample_size:,} patches (strata: rule × score band), drawn "
            f"{escape(str(sample_info.get('drawn_at', '?')))} with seed {escape(str(sample_info.get('seed', '?')))};"
            f" {estimates.reviewed:,} reviewed. Planar areas; estimators of Olofsson et al. (2014), see Method.</p>")
    if estimates.problems:
        return (f'<section id="sample"><h2>Estimates from a sample</h2><div class="panel">{info}<p><b>Not used:</b> '
                f"{escape('; '.join(estimates.problems))}. Draw a new sample with <code>--replace</code>.</p>"
                "</div></section>")
    rows = []
    for key, (label, unit) in _ESTIMATE_LABELS.items():
        e = estimates.estimates.get(key)
        if e is None:
            continue
        f = fmt_rate if unit == "rate" else (lambda v: fmt_mu(v / M2_PER_MU) + " mu")
        ci = "n/a" if math.isnan(e.se) else f"{f(e.ci95_low)} – {f(e.ci95_high)}"
        rows.append(f'<tr data-estimate="{escape(key)}"><td>{escape(label)}</td><td>{f(e.value)}</td><td>{ci}</td>'
                    f"<td>{e.n:,} / {e.population:,}</td><td class=\"l\">{escape(e.note)}</td></tr>")
    return (f'<section id="sample"><h2>Estimates from a sample</h2><div class="panel">{info}<table><thead><tr>'
            "<th>City-wide</th><th>Estimate</th><th>95 % interval</th><th>reviewed / patches</th><th class=\"l\">"
            f"note</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div></section>")


def _areas(ind: Indicators) -> str:
    t = ind.table[ind.table["section"] == "areas"]
    quantities = ["flagged", "approved", *STATUSES]
    head = "<tr><th>County</th><th class=\"l\">Rule</th><th>Patches</th>" + "".join(
        f"<th>{escape(q.replace('_', ' '))}</th>" for q in quantities) + "</tr>"
    rows = []
    for (county, rule), g in t.groupby(["county", "rule"], sort=False):
        by_q = g.set_index("quantity")
        rows.append(f'<tr class="{"city" if county == CITY else ""}"><td>{escape(county)}</td>'
                    f'<td class="l">{escape(rule)}</td><td>{int(by_q.loc["flagged", "patches"]):,}</td>'
                    + "".join(f"<td>{fmt_mu(by_q.loc[q, 'ellipsoidal_mu'])}</td>" for q in quantities) + "</tr>")
    return ('<section id="areas"><h2>Areas per county and rule (ellipsoidal, mu)</h2><div class="panel"><details>'
            f"<summary>{len(rows)} rows</summary><table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"
            "</details></div></section>")


def job_facts(state: Mapping, *, job_dir: str = "", config_path: str | None = None) -> list:
    """(label, value) pairs that trace the figures back to the job (from ``job.json``)."""
    job = state.get("job") or {}
    inputs = state.get("inputs") or {}
    grid = state.get("grid") or {}
    crs = ""
    if grid.get("crs_wkt"):
        from pyproj import CRS
        from pyproj.exceptions import CRSError

        try:
            c = CRS.from_wkt(grid["crs_wkt"])
            crs = f"{c.name} ({c.to_string()})"
        except CRSError:  # shown as recorded: an odd CRS must not stop the report
            crs = grid["crs_wkt"][:80]
    transform = grid.get("transform") or []
    facts = [("Job folder", job_dir), ("Job name", job.get("name", "")),
             ("Epochs", f"{job.get('epoch_before', '?')} → {job.get('epoch_after', '?')}"),
             ("Before mosaic", inputs.get("before", "")), ("After mosaic", inputs.get("after", "")),
             ("Bands", ", ".join(inputs.get("bands") or [])), ("Grid CRS", crs),
             ("Pixel size", f"{abs(transform[0])} m" if transform else ""),
             ("Grid size", f"{grid.get('width', '?')} × {grid.get('height', '?')} px" if grid else ""),
             ("Rules", ", ".join(state.get("rules") or [])), ("Counties", ", ".join(state.get("county_names") or [])),
             ("Config", str(config_path or state.get("config") or "")),
             ("Chunk key (job id)", str(state.get("chunk_key", ""))[:12]),
             ("Detected with", f"imagery_watch {state.get('version', '?')}"),
             ("Report made with", f"imagery_watch {__version__}")]
    return [(k, v) for k, v in facts if v not in ("", None)]


def _method(ind: Indicators, facts, config_text) -> str:
    roles = ind.roles
    items = [
        "New construction on farmland: the part inside farmland (<code>farmland_m2</code>) of the patches of the "
        f"rules {escape(', '.join(roles.construction))}, false alarms left out.",
        "Violation rate, provisional = (illegal + undecided outside approved land) / all new construction on "
        "farmland: an upper bound. Undecided = pending or waiting for a field visit. The approved part of an "
        "undecided patch is the least the patch's <code>approved_m2</code> implies inside farmland.",
        "Violation rate, confirmed = illegal / (illegal + legal): reviewed patches only. Equal to the provisional "
        "rate once every patch is decided.",
        f"Afforestation ({escape(', '.join(roles.afforestation))}) and reclamation "
        f"({escape(', '.join(roles.reclamation))}): provisional = every patch not judged a false alarm, confirmed = "
        "patches a reviewer judged illegal or legal (the change is real).",
        "Each patch counts once, in the county holding the largest part of it; county figures add up to the "
        "city-wide ones.",
        "Areas are ellipsoidal (official land-survey basis): each patch's planar figures scaled by its "
        "ellipsoidal / planar area; indicators.csv has both. 1 mu = 10,000 / 15 m².",
        "Targets are yearly (violation rate ≤ 1 % per county and city-wide, afforestation ≥ 9,320 mu, "
        "reclamation ≥ 15,000 mu city-wide); the figures cover the change between the two epochs.",
        "Sample estimates: stratified estimators of a total (Olofsson et al. 2014, Remote Sensing of Environment "
        "148: 42-57; Stehman 2014, IJRS 35: 4923-4939) with patches as units, strata = rule × score band, finite "
        "population correction, 95 % normal intervals; the violation rate as a ratio with linearised variance.",
    ]
    rows = "".join(f'<tr><td class="l">{escape(k)}</td><td class="l">{escape(str(v))}</td></tr>' for k, v in facts)
    config = (f"<details><summary>Config file</summary><pre>{escape(config_text)}</pre></details>"
              if config_text else "<p>The job's config file was not found next to the job; see its path above.</p>")
    return (f'<section id="method"><h2>Method and inputs</h2><div class="panel"><ul>'
            f"{''.join(f'<li>{i}</li>' for i in items)}</ul></div><div class=\"panel\"><table id=\"inputs\">"
            f"<tbody>{rows}</tbody></table>{config}</div></section>")


def render_report(ind: Indicators, *, patches, counties=None, estimates=None, sample_info: Mapping | None = None,
                  facts=(), config_text: str | None = None, title: str = "Change indicators",
                  generated_at: str = "") -> str:
    """The report page as one HTML string.

    Parameters
    ----------
    ind : Indicators
        From :func:`imagery_watch.indicators.compute_indicators`.
    patches : GeoDataFrame
        The patches (geometry and ``status``) for the map.
    counties : GeoDataFrame, optional
        County polygons with ``name``, same CRS as ``patches``.
    estimates : SampleEstimates, optional
        From :func:`imagery_watch.sampling.estimate_from_sample`.
    sample_info : mapping, optional
        ``seed`` and ``drawn_at`` of the sample.
    facts : sequence of (label, value)
        Inputs and provenance (:func:`job_facts`).
    config_text : str, optional
        The job's config file, shown verbatim.
    title : str
        Page title.
    generated_at : str
        When the report was made (shown in the header).

    Returns
    -------
    str
        A complete HTML document with no reference to any other file or address.
    """
    facts = list(facts)
    epochs = next((v for k, v in facts if k == "Epochs"), "")
    sub = " · ".join(x for x in (f"epochs {epochs}" if epochs else "", f"made {generated_at}" if generated_at else "",
                                 f"imagery_watch {__version__}") if x)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
            f"<header><h1>{escape(title)}</h1><p>{escape(sub)}</p></header><main>"
            + _headline(ind) + _charts(ind) + _map(patches, counties) + _progress(ind)
            + _sample(estimates, sample_info or {}) + _areas(ind) + _method(ind, facts, config_text)
            + "</main></body></html>\n")


__all__ = ["render_report", "job_facts", "fmt_mu", "fmt_rate"]
