"""The status page: each variant's primary metric with its interval, and the metric over time.

Plain SVG in one self-contained HTML file (no scripts, no network), so it opens anywhere.
"""

from __future__ import annotations

import html
from datetime import datetime
from pathlib import Path

from posttrain.experiments.records import Analysis, Timeline
from posttrain.project import Project

COLOURS = ["#3366cc", "#dc3912", "#109618", "#ff9900", "#990099", "#0099c6"]


def write_status_page(project: Project, analysis: Analysis, timeline: Timeline | None = None) -> Path:
    """Write ``artifacts/experiments/NAME/status.html``: the primary metric per variant with its CI,
    and, given a ``timeline``, the metric over time and each treatment's difference with its
    always-valid confidence sequence."""
    path = project.artifacts / "experiments" / analysis.experiment / "status.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_page(analysis, timeline), encoding="utf-8")
    return path


def _intervals(analysis: Analysis) -> str:
    points = [(r.variant, r.metrics[analysis.metric]) for r in analysis.variants]
    bounds = [v for _, s in points for v in (s.ci_low, s.ci_high) if v is not None] or [0.0, 1.0]
    lo, hi = min(bounds), max(bounds)
    span = (hi - lo) or 1.0

    def x(value: float) -> float:
        return 150 + 400 * (value - lo) / span

    rows = []
    for i, (name, s) in enumerate(points):
        y = 30 + 30 * i
        colour = COLOURS[i % len(COLOURS)]
        rows.append(f'<text x="10" y="{y + 4}">{html.escape(name)} (n={s.n})</text>')
        if s.mean is not None and s.ci_low is not None and s.ci_high is not None:
            rows.append(f'<line x1="{x(s.ci_low):.1f}" x2="{x(s.ci_high):.1f}" y1="{y}" y2="{y}" stroke="{colour}"/>')
            rows.append(f'<circle cx="{x(s.mean):.1f}" cy="{y}" r="4" fill="{colour}"/>')
            rows.append(f'<text x="{x(s.ci_high) + 8:.1f}" y="{y + 4}">{s.mean:.4g}</text>')
    height = 40 + 30 * len(points)
    return f"<svg width='640' height='{height}' font-size='12'>{''.join(rows)}</svg>"


def _chart(title: str, series: list[tuple[str, list[tuple[datetime, float, float, float]]]], zero: bool) -> str:
    """A line per series (time, value) with a shaded band (low, high); a dashed zero line if asked."""
    points = [p for _, s in series for p in s]
    if not points:
        return f"<h3>{html.escape(title)}</h3><p>no data yet</p>"
    t0 = min(p[0] for p in points).timestamp()
    t1 = max(p[0] for p in points).timestamp()
    values = [v for p in points for v in p[1:]] + ([0.0] if zero else [])
    lo, hi = min(values), max(values)
    width, height, left, top = 560, 220, 60, 10
    tspan, vspan = (t1 - t0) or 1.0, (hi - lo) or 1.0

    def px(t: datetime) -> float:
        return left + width * (t.timestamp() - t0) / tspan

    def py(v: float) -> float:
        return top + height * (1 - (v - lo) / vspan)

    parts = [
        f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + height}" stroke="#999"/>',
        f'<line x1="{left}" x2="{left + width}" y1="{top + height}" y2="{top + height}" stroke="#999"/>',
        f'<text x="4" y="{top + 10}">{hi:.3g}</text><text x="4" y="{top + height}">{lo:.3g}</text>',
    ]
    if zero:
        parts.append(f'<line x1="{left}" x2="{left + width}" y1="{py(0):.1f}" y2="{py(0):.1f}" '
                     'stroke="#666" stroke-dasharray="4 3"/>')  # fmt: skip
    for i, (name, s) in enumerate(series):
        if not s:
            continue
        colour = COLOURS[i % len(COLOURS)]
        band = [f"{px(t):.1f},{py(h):.1f}" for t, _, _, h in s] + [
            f"{px(t):.1f},{py(low):.1f}" for t, _, low, _ in reversed(s)
        ]
        parts.append(f'<polygon points="{" ".join(band)}" fill="{colour}" fill-opacity="0.15" stroke="none"/>')
        line = " ".join(f"{px(t):.1f},{py(v):.1f}" for t, v, _, _ in s)
        parts.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts.append(
            f'<text x="{left + width + 6}" y="{py(s[-1][1]) + 4:.1f}" fill="{colour}">{html.escape(name)}</text>'
        )
    first, last = min(p[0] for p in points), max(p[0] for p in points)
    parts.append(f'<text x="{left}" y="{top + height + 16}">{first:%H:%M:%S}</text>')
    parts.append(f'<text x="{left + width - 50}" y="{top + height + 16}">{last:%H:%M:%S}</text>')
    svg = f"<svg width='{left + width + 120}' height='{height + 40}' font-size='12'>{''.join(parts)}</svg>"
    return f"<h3>{html.escape(title)}</h3>{svg}"


def _over_time(timeline: Timeline) -> str:
    means = [
        (name, [(p.at, p.mean, p.ci_low, p.ci_high) for p in points if p.mean is not None])
        for name, points in timeline.variants.items()
    ]  # type: ignore[misc]
    diffs = [
        (name, [(p.at, p.effect, p.cs_low, p.cs_high) for p in points]) for name, points in timeline.differences.items()
    ]
    return (
        _chart(f"{timeline.metric} over time (cumulative mean, 95% CI)", means, zero=False)  # type: ignore[arg-type]
        + _chart("treatment − control over time (always-valid 95% confidence sequence)", diffs, zero=True)
    )


def _pairwise(analysis: Analysis) -> str:
    if analysis.pairwise is None:
        return ""
    rows = "".join(
        f"<tr><td>{html.escape(p.a)} vs {html.escape(p.b)}</td><td>{html.escape(p.cohort or '(all)')}</td>"
        f"<td>{p.win_rate.n}</td><td>{p.win_rate.rate:.3f}</td>"
        f"<td>[{p.win_rate.ci_low:.3f}, {p.win_rate.ci_high:.3f}]</td></tr>"
        for p in analysis.pairwise.pairs
    )
    ratings = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{r.rating:.0f}</td><td>[{r.ci_low:.0f}, {r.ci_high:.0f}]</td></tr>"
        for name, r in analysis.pairwise.ratings.items()
    )
    head = "<tr><th>pair</th><th>cohort</th><th>n</th><th>win rate</th><th>95% CI</th></tr>"
    table = (
        f"<h3>side by side: how often the first is chosen</h3><table border='1' cellpadding='4'>{head}{rows}</table>"
    )
    if ratings:
        head = "<tr><th>variant</th><th>rating</th><th>95% CI</th></tr>"
        table += f"<h3>Bradley–Terry ratings</h3><table border='1' cellpadding='4'>{head}{ratings}</table>"
    return table


def _page(analysis: Analysis, timeline: Timeline | None) -> str:
    title = html.escape(f"{analysis.experiment}: {analysis.metric} ({analysis.direction} is better)")
    srm = (
        ""
        if analysis.srm is None
        else f"<p>sample ratio mismatch check: p = {analysis.srm.p_value:.3g}"
        + (" — MISMATCH</p>" if analysis.srm.mismatch else "</p>")
    )
    over_time = "" if timeline is None else _over_time(timeline)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
        f"<body style='font-family:sans-serif'><h1>{title}</h1><p>as of {analysis.at:%Y-%m-%d %H:%M:%S} UTC; "
        f"dots are means, lines 95% CIs</p>{_intervals(analysis)}{srm}{over_time}{_pairwise(analysis)}</body></html>"
    )
