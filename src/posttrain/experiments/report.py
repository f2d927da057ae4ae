"""The status page: each variant's primary metric with its interval, and the metric over time.

One self-contained HTML file (no scripts, no network), so it opens anywhere. Its charts come from
``posttrain.plots`` (matplotlib SVG inlined), the plotting path the console and the reports share;
the console's experiment page draws the same charts with ``interval_chart`` and ``timeline_charts``.
Each line of a chart over time carries an SVG id ``series-…`` (one per variant, one per difference).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import TypeVar

from posttrain import plots
from posttrain.experiments.records import _PROPORTIONS, Analysis, DifferencePoint, Timeline, TimePoint
from posttrain.project import Project

P = TypeVar("P", TimePoint, DifferencePoint)


def write_status_page(project: Project, analysis: Analysis, timeline: Timeline | None = None) -> Path:
    """Write ``artifacts/experiments/NAME/status.html``: the primary metric per variant with its CI,
    and, given a ``timeline``, the metric over time and each treatment's difference with its
    always-valid confidence sequence."""
    path = project.artifacts / "experiments" / analysis.experiment / "status.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_page(analysis, timeline), encoding="utf-8")
    return path


def interval_chart(analysis: Analysis) -> str:
    """Return the SVG of each variant's primary metric (overall, then per cohort) with its 95% CI."""
    several = len({r.cohort for r in analysis.cohorts}) > 1  # one cohort repeats the overall rows
    rows = [
        plots.Interval(label=f"{r.variant}{f' · {r.cohort}' if r.cohort else ''} (n={s.n})", value=s.mean,
                       low=s.ci_low, high=s.ci_high, group=r.variant)
        for r in analysis.variants + (analysis.cohorts if several else [])
        if (s := r.metrics[analysis.metric]).mean is not None
    ]  # fmt: skip
    return plots.intervals(
        rows,
        title=f"{analysis.metric} per variant (mean, 95% CI)",
        x_label=f"{analysis.metric} ({analysis.direction} is better)",
        percent=analysis.metric in _PROPORTIONS,
    )


def timeline_charts(timeline: Timeline) -> tuple[str, str]:
    """Return the SVGs of the metric over time (cumulative mean per variant, 95% CI) and of each
    treatment's difference from the control (always-valid 95% confidence sequence)."""
    percent = timeline.metric in _PROPORTIONS
    variants = {name: _last_per_time(points) for name, points in timeline.variants.items()}
    differences = {name: _last_per_time(points) for name, points in timeline.differences.items()}
    # traffic that arrived all at once is one look: draw it against the users so far, not a lone date
    counts = [len(points) for points in variants.values()] + [len(points) for points in differences.values()]
    instant = all(count <= 1 for count in counts)
    means = [
        plots.Series(name=name, x=[p.n if instant else p.at for p in points], y=[p.mean for p in points],
                     low=[p.ci_low for p in points], high=[p.ci_high for p in points],
                     style={"gid": f"series-mean-{i}"})
        for i, (name, points) in enumerate(variants.items())
    ]  # fmt: skip
    diffs = [
        plots.Series(name=f"{name} − control", x=[p.n if instant else p.at for p in points],
                     y=[p.effect for p in points], low=[p.cs_low for p in points], high=[p.cs_high for p in points],
                     style={"gid": f"series-diff-{i}"})
        for i, (name, points) in enumerate(differences.items())
        if points
    ]  # fmt: skip
    x_label = "users so far (all traffic at one instant)" if instant and means else None
    over_time = plots.lines(
        means,
        title=f"{timeline.metric} over time (cumulative mean, 95% CI)",
        x_label=x_label,
        y_label=timeline.metric,
        percent=percent,
    )
    difference = plots.lines(
        diffs,
        title="treatment − control over time (always-valid 95% confidence sequence)",
        x_label=x_label,
        y_label=f"difference in {timeline.metric}",
        hline=0.0,
    )
    return over_time, difference


def _last_per_time(points: list[P]) -> list[P]:
    """Keep the last point of each time (an instant's buckets repeat one cumulative look)."""
    return list({p.at: p for p in points}.values())


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


def _variants(analysis: Analysis) -> str:
    """A table of the numbers the interval chart draws (so the page reads without the picture)."""
    rows = "".join(
        f"<tr><td>{html.escape(r.variant)}</td><td>{r.users}</td><td>{s.n}</td>"
        + (f"<td>{s.mean:.4g}</td>" if s.mean is not None else "<td>–</td>")
        + (
            f"<td>[{s.ci_low:.4g}, {s.ci_high:.4g}]</td>"
            if s.ci_low is not None and s.ci_high is not None
            else "<td>–</td>"
        )  # fmt: skip
        + "</tr>"
        for r in analysis.variants
        for s in [r.metrics[analysis.metric]]
    )
    head = "<tr><th>variant</th><th>users</th><th>measured</th><th>mean</th><th>95% CI</th></tr>"
    return f"<table border='1' cellpadding='4'>{head}{rows}</table>"


def _page(analysis: Analysis, timeline: Timeline | None) -> str:
    title = html.escape(f"{analysis.experiment}: {analysis.metric} ({analysis.direction} is better)")
    srm = (
        ""
        if analysis.srm is None
        else f"<p>sample ratio mismatch check: p = {analysis.srm.p_value:.3g}"
        + (" — MISMATCH</p>" if analysis.srm.mismatch else "</p>")
    )
    over_time = ""
    if timeline is not None:
        means, diffs = timeline_charts(timeline)
        over_time = f"<figure>{means}</figure><figure>{diffs}</figure>"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
        f"<body style='font-family:sans-serif'><h1>{title}</h1><p>as of {analysis.at:%Y-%m-%d %H:%M:%S} UTC; "
        f"dots are means, lines 95% CIs</p><figure>{interval_chart(analysis)}</figure>{_variants(analysis)}"
        f"{srm}{over_time}{_pairwise(analysis)}</body></html>"
    )
