"""Inline SVG for the report: horizontal bar charts and a map of patches over counties.

Hand-written SVG (no charting library): the report must be one file that opens offline,
and a few hundred lines of SVG text are smaller than any embedded image. Colours come from
CSS classes the report defines (``st-<status>`` for patch status, ``seg-<name>`` for chart
segments), so the legend, charts and map share one palette.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from typing import Callable, Sequence

import numpy as np
import shapely


@dataclass(frozen=True)
class Segment:
    """One coloured part of a bar: ``value`` drawn with CSS class ``seg-<kind>``."""

    value: float
    kind: str
    label: str


def nice_step(span: float, ticks: int = 4) -> float:
    """A round tick step (1, 2, 2.5 or 5 times a power of ten) giving about ``ticks`` ticks."""
    if not span > 0 or not math.isfinite(span):
        return 1.0
    raw = span / ticks
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * power:
            return m * power
    return 10 * power


def bar_chart(rows: Sequence[tuple], *, fmt: Callable[[float], str], tick_fmt: Callable[[float], str] | None = None,
              target: float | None = None, target_label: str = "", chart_id: str = "", title: str = "",
              width: int = 820) -> str:
    """A horizontal bar chart as an ``<svg>`` element.

    Parameters
    ----------
    rows : sequence of (label, bars)
        One group per category (county); ``bars`` is a list of bars, each a list of
        :class:`Segment` stacked left to right.
    fmt : callable
        Formats values for the bar ends (and the axis, unless ``tick_fmt`` is given).
    tick_fmt : callable, optional
        Formats the axis ticks.
    target : float, optional
        Draws a dashed vertical line at this value.
    target_label : str
        Text at the target line.
    chart_id, title : str
        ``id`` and accessible title of the SVG.
    width : int
        Width in px.
    """
    label_w, right_w, bar_h, gap, top, bottom = 150, 90, 16, 10, 24, 28
    totals = [sum(s.value for s in bar if s.value > 0) for _, bars in rows for bar in bars]
    vmax = max([*totals, target or 0.0, 0.0])
    step = nice_step(vmax or 1.0)
    axis_max = step * max(1, math.ceil((vmax or 1.0) / step))
    plot_w = width - label_w - right_w
    n_bars = sum(len(bars) for _, bars in rows)
    height = top + bottom + n_bars * bar_h + len(rows) * gap

    def x(v):
        return label_w + plot_w * max(v, 0.0) / axis_max

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{escape(chart_id)}" role="img" '
             f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
             f"<title>{escape(title)}</title>"]
    tick_fmt = tick_fmt or fmt
    k = 0
    while k * step <= axis_max + 1e-9:
        v = k * step
        parts.append(f'<line class="grid" x1="{x(v):.1f}" x2="{x(v):.1f}" y1="{top - 6}" y2="{height - bottom}"/>'
                     f'<text class="tick" x="{x(v):.1f}" y="{height - bottom + 14}">{escape(tick_fmt(v))}</text>')
        k += 1
    y = top
    for label, bars in rows:
        group_h = len(bars) * bar_h
        parts.append(f'<text class="cat" x="{label_w - 8}" y="{y + group_h / 2 + 4:.1f}">{escape(label)}</text>')
        for bar in bars:
            x0 = 0.0
            for seg in bar:
                if not seg.value > 0:  # zero, negative or NaN: nothing to draw
                    continue
                parts.append(f'<rect class="seg-{escape(seg.kind)}" x="{x(x0):.1f}" y="{y + 2}" '
                             f'width="{max(x(x0 + seg.value) - x(x0), 0.5):.1f}" height="{bar_h - 4}">'
                             f"<title>{escape(label)}: {escape(seg.label)} {escape(fmt(seg.value))}</title></rect>")
                x0 += seg.value
            end = "n/a" if all(math.isnan(seg.value) for seg in bar) else fmt(x0)
            parts.append(f'<text class="end" x="{x(x0) + 4:.1f}" y="{y + bar_h - 4}">{escape(end)}</text>')
            y += bar_h
        y += gap
    if target is not None:
        parts.append(f'<line class="target" x1="{x(target):.1f}" x2="{x(target):.1f}" y1="{top - 10}" '
                     f'y2="{height - bottom}"/><text class="target-label" x="{x(target) + 3:.1f}" y="{top - 12}">'
                     f"{escape(target_label)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _ring_path(coords: np.ndarray, tf) -> str:
    px, py = tf(coords[:, 0], coords[:, 1])
    pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(px, py))
    return f"M{pts}Z"


def _geom_path(geom, tf) -> str:
    parts = []
    for poly in getattr(geom, "geoms", [geom]):
        if poly.is_empty or poly.geom_type != "Polygon":
            continue
        parts.append(_ring_path(np.asarray(poly.exterior.coords), tf))
        parts += [_ring_path(np.asarray(r.coords), tf) for r in poly.interiors]
    return "".join(parts)


def patch_map(patches, counties=None, *, width: int = 860, max_height: int = 760, titles_max: int = 5000,
              map_id: str = "patch-map") -> str:
    """A map of patches coloured by status over county outlines, as an ``<svg>`` element.

    Parameters
    ----------
    patches : GeoDataFrame
        With ``status`` (and ``patch_id``, ``rule``, ``area_mu`` for the tooltips).
    counties : GeoDataFrame, optional
        With ``name``; same CRS as ``patches``.
    width, max_height : int
        Size limits in px (the map keeps the aspect of the ground).
    titles_max : int
        Patches get a tooltip when there are at most this many (keeps city-wide reports small).

    Notes
    -----
    Patches smaller than 3 px on the map are drawn as dots, so that none disappears;
    outlines are simplified to half a pixel.
    """
    geoms = [g for g in patches.geometry if g is not None and not g.is_empty]
    if counties is not None and len(counties):
        geoms += [g for g in counties.geometry if g is not None and not g.is_empty]
    if not geoms:
        return f'<svg xmlns="http://www.w3.org/2000/svg" id="{map_id}" width="{width}" height="40">' \
               '<text x="10" y="24">no patches and no counties to map</text></svg>'
    minx, miny, maxx, maxy = shapely.total_bounds(np.array(geoms, dtype=object))
    pad = 8
    span_x, span_y = max(maxx - minx, 1e-9), max(maxy - miny, 1e-9)
    scale = min((width - 2 * pad) / span_x, (max_height - 2 * pad) / span_y)
    height = int(math.ceil(span_y * scale + 2 * pad))
    width = int(math.ceil(span_x * scale + 2 * pad))

    def tf(xs, ys):
        return (np.asarray(xs) - minx) * scale + pad, (maxy - np.asarray(ys)) * scale + pad

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="map" id="{map_id}" role="img" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}"><title>Patches by review status over the counties'
             "</title>"]
    if counties is not None and len(counties):
        for name, geom in zip(counties["name"], counties.geometry):
            if geom is None or geom.is_empty:
                continue
            simple = shapely.simplify(geom, 0.5 / scale, preserve_topology=True)
            parts.append(f'<path class="county" d="{_geom_path(simple, tf)}"><title>{escape(str(name))}</title></path>')
        for name, geom in zip(counties["name"], counties.geometry):
            if geom is None or geom.is_empty:
                continue
            p = geom.representative_point()
            lx, ly = tf([p.x], [p.y])
            parts.append(f'<text class="county-label" x="{lx[0]:.1f}" y="{ly[0]:.1f}">{escape(str(name))}</text>')
    with_titles = len(patches) <= titles_max
    cols = patches.columns
    for i, geom in enumerate(patches.geometry):
        if geom is None or geom.is_empty:
            continue
        status = str(patches["status"].iloc[i]) if "status" in cols else "pending"
        title = ""
        if with_titles:
            bits = [str(patches[c].iloc[i]) for c in ("patch_id", "rule") if c in cols] + [status]
            if "area_mu" in cols:
                bits.append(f"{float(patches['area_mu'].iloc[i]):.2f} mu")
            title = f"<title>{escape(' · '.join(bits))}</title>"
        x0, y0, x1, y1 = geom.bounds
        if (x1 - x0) * scale < 3 and (y1 - y0) * scale < 3:
            cx, cy = tf([(x0 + x1) / 2], [(y0 + y1) / 2])
            parts.append(f'<circle class="patch st-{escape(status)}" cx="{cx[0]:.1f}" cy="{cy[0]:.1f}" r="2.5">'
                         f"{title}</circle>")
        else:
            simple = shapely.simplify(geom, 0.5 / scale, preserve_topology=True)
            parts.append(f'<path class="patch st-{escape(status)}" d="{_geom_path(simple, tf)}">{title}</path>')
    parts.append("</svg>")
    return "".join(parts)


__all__ = ["bar_chart", "patch_map", "Segment", "nice_step"]
