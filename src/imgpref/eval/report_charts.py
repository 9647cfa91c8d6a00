"""Inline SVG charts for the HTML report: score histograms and win-rate interval bars (no JavaScript, no fetch)."""
from __future__ import annotations

import html
import math
from collections.abc import Mapping

import numpy as np

SERIES_COLORS = ("#3b6fd8", "#e0792b")  # A / B (and the single series of a score report)


def esc(value: object) -> str:
    """HTML-escape any value (None -> empty)."""
    return html.escape("" if value is None else str(value), quote=True)


def fmt_num(x: object) -> str:
    """4 significant digits; '—' for missing values."""
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "—"
    return f"{v:.4g}" if math.isfinite(v) else "—"


def histogram_svg(series: Mapping[str, np.ndarray], *, title: str = "", width: int = 560, height: int = 210) -> str:
    """Inline SVG histogram of one or more score series (shared bins, overlaid, dashed line at each mean)."""
    clean = {k: np.asarray(v, dtype=np.float64) for k, v in series.items()}
    clean = {k: v[np.isfinite(v)] for k, v in clean.items()}
    every = np.concatenate([v for v in clean.values()] or [np.zeros(0)])
    if every.size == 0:
        return '<p class="muted">no scores to plot</p>'
    n_bins = int(min(40, max(6, math.ceil(math.sqrt(every.size)) * 2)))
    edges = np.histogram_bin_edges(every, bins=n_bins)
    counts = {k: np.histogram(v, bins=edges)[0] for k, v in clean.items()}
    ymax = max(int(c.max(initial=0)) for c in counts.values()) or 1
    ml, mr, mt, mb = 44, 12, 10, 30
    pw, ph = width - ml - mr, height - mt - mb
    x0, x1 = float(edges[0]), float(edges[-1])

    def sx(v: float) -> float:
        return ml + (v - x0) / (x1 - x0) * pw

    def sy(c: float) -> float:
        return mt + ph - c / ymax * ph

    parts = [
        f'<svg class="histogram" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
        f"<title>{esc(title or 'score histogram')}</title>",
        f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="#fafbfc" stroke="#e3e6ea"/>',
    ]
    for y_tick in np.unique(np.linspace(0, ymax, num=min(ymax, 4) + 1).round().astype(int)):
        y = sy(float(y_tick))
        parts.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e6ea"/>')
        parts.append(f'<text x="{ml - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{y_tick}</text>')
    for x_tick in np.linspace(x0, x1, 5):
        x = sx(float(x_tick))
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{mt + ph}" y2="{mt + ph + 4}" stroke="#8a9099"/>')
        parts.append(f'<text x="{x:.1f}" y="{mt + ph + 17}" text-anchor="middle" class="tick">{fmt_num(x_tick)}</text>')
    for i, (name, c) in enumerate(counts.items()):
        color = SERIES_COLORS[i % len(SERIES_COLORS)]
        opacity = 0.85 if len(counts) == 1 else 0.55
        for j, cnt in enumerate(c):
            if cnt == 0:
                continue
            xa, xb = sx(float(edges[j])), sx(float(edges[j + 1]))
            y = sy(float(cnt))
            tip = f"{name}: {cnt} in [{fmt_num(edges[j])}, {fmt_num(edges[j + 1])}]"
            parts.append(
                f'<rect class="bar" x="{xa + 0.5:.1f}" y="{y:.1f}" width="{max(xb - xa - 1, 1):.1f}" '
                f'height="{mt + ph - y:.1f}" fill="{color}" fill-opacity="{opacity}"><title>{esc(tip)}</title></rect>'
            )
        xm = sx(float(clean[name].mean()))
        parts.append(
            f'<line x1="{xm:.1f}" x2="{xm:.1f}" y1="{mt}" y2="{mt + ph}" stroke="{color}" '
            f'stroke-width="1.5" stroke-dasharray="4 3"><title>{esc(name)} mean {fmt_num(clean[name].mean())}</title></line>'
        )
    if len(counts) > 1:
        for i, name in enumerate(counts):
            lx = ml + 10 + i * 120
            parts.append(f'<rect x="{lx}" y="{mt + 8}" width="10" height="10" fill="{SERIES_COLORS[i % 2]}"/>')
            parts.append(f'<text x="{lx + 14}" y="{mt + 17}" class="tick">{esc(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def ci_bar_svg(rate: float, lo: float, hi: float, width: int = 180, height: int = 18) -> str:
    """A 0..1 axis with the win rate as a dot, its CI as a bar and 0.5 (no preference) as a tick."""
    if not all(math.isfinite(v) for v in (rate, lo, hi)):
        return ""
    pad = 6

    def sx(v: float) -> float:
        return pad + v * (width - 2 * pad)

    mid = height / 2
    return (
        f'<svg class="cibar" width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
        f'<line x1="{sx(0)}" x2="{sx(1)}" y1="{mid}" y2="{mid}" stroke="#d5d9de" stroke-width="2"/>'
        f'<line x1="{sx(0.5)}" x2="{sx(0.5)}" y1="2" y2="{height - 2}" stroke="#8a9099"/>'
        f'<line x1="{sx(lo):.1f}" x2="{sx(hi):.1f}" y1="{mid}" y2="{mid}" stroke="{SERIES_COLORS[0]}" stroke-width="5"'
        ' stroke-linecap="round"/>'
        f'<circle cx="{sx(rate):.1f}" cy="{mid}" r="4" fill="#1d2733"/></svg>'
    )
