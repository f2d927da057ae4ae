"""The curation report of a dataset version: one self-contained HTML page.

What each stage removed (counts, time, notes, example rows with their reasons) from the
manifest's ``stats["curation"]``, and plots drawn from the version's ``curation.parquet``: rows
removed per stage, the embedding map coloured by cohort and by family (selected rows solid,
the others faint crosses; at most 5,000 points), cluster sizes and the share of each cluster
kept. Plots are inline SVG drawn by matplotlib (its object API, no pyplot state); the page loads
nothing from anywhere (no scripts at all), and every text that comes from data is escaped.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from posttrain import plots
from posttrain import versions as datasets
from posttrain.project import Project

MAP_POINTS = 5_000
TOP_GROUPS = 9  # colours on a map; the rest are "other"
COLOURS = ["#4878d0", "#ee854a", "#6acc64", "#d65f5f", "#956cb4", "#8c613c", "#dc7ec0", "#797979", "#d5bb67",
           "#82c6e2"]  # fmt: skip
STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; } h3 { font-size: 1.05em; }
table { border-collapse: collapse; margin: .5em 0 1em; } td, th { border: 1px solid #ddd; padding: .3em .6em;
vertical-align: top; text-align: left; } th { background: #f4f4f4; } td.n { text-align: right; }
.plots { display: flex; flex-wrap: wrap; gap: 1em; } .plots figure { margin: 0; } .muted { color: #777; }
td.text { max-width: 28em; white-space: pre-wrap; word-break: break-word; }
"""


def render(project: Project, ref: str) -> str:
    """Return the HTML report of version ``ref`` (``NAME`` or ``NAME@V``); a plain page when it had no curation."""
    version = datasets.resolve(project, ref)
    curation = version.stats.get("curation")
    title = f"Curation of {version.ref}"
    if not curation:
        body = f"<p>{_e(version.ref)} ({_e(version.kind)}, {version.row_count} rows) was built without curation.</p>"
        return _page(title, body)
    details_path = Path(version.path).parent / "curation.parquet"
    details = pq.read_table(details_path).to_pydict() if details_path.is_file() else None
    parts = [_summary(version, curation), _plots(curation, details), _stages(curation)]
    return _page(title, "\n".join(parts))


def render_to(project: Project, ref: str, path: Path | str) -> Path:
    """Write the report of ``ref`` to ``path`` (folders made) and return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render(project, ref), encoding="utf-8")
    return target


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{STYLE}</style></head>\n"
        f"<body><h1>{_e(title)}</h1>\n{body}\n</body></html>\n"
    )


def _summary(version: datasets.DatasetVersion, curation: dict[str, Any]) -> str:
    rows_in, rows_out = curation.get("rows_in", 0), curation.get("rows_out", 0)
    share = f" ({rows_out / rows_in:.1%} kept)" if rows_in else ""
    strict = "on (the strict safety threshold applied)" if curation.get("strict") else "off"
    return (
        "<h2>Summary</h2><table>"
        f"<tr><th>version</th><td>{_e(version.ref)} ({_e(version.kind)})</td></tr>"
        f'<tr><th>rows in</th><td class="n">{rows_in}</td></tr>'
        f'<tr><th>rows out</th><td class="n">{rows_out}{_e(share)}</td></tr>'
        f"<tr><th>strict</th><td>{strict}</td></tr>"
        f"<tr><th>stages</th><td>{_e(', '.join(s['stage'] for s in curation.get('stages', [])) or 'none')}</td></tr>"
        "</table>"
    )


def _stages(curation: dict[str, Any]) -> str:
    """One table per stage: its figures, then the example rows it removed with their reasons."""
    out = ["<h2>Stages</h2>"]
    for stage in curation.get("stages", []):
        name = _e(stage["stage"])
        out.append(f'<h3 id="stage-{name}">{name}</h3><table class="stage">')
        out.append(f'<tr><th>rows in</th><td class="n">{stage.get("rows_in", 0)}</td></tr>')
        out.append(f'<tr><th>removed</th><td class="n">{stage.get("removed", 0)}</td></tr>')
        out.append(f'<tr><th>seconds</th><td class="n">{stage.get("seconds", 0):.3f}</td></tr>')
        if stage.get("note"):
            out.append(f"<tr><th>note</th><td>{_e(stage['note'])}</td></tr>")
        if stage.get("details"):
            shown = json.dumps(stage["details"], ensure_ascii=False, sort_keys=True)
            shown = shown if len(shown) <= 2000 else shown[:1999] + "…"
            out.append(f'<tr><th>details</th><td class="text">{_e(shown)}</td></tr>')
        out.append("</table>")
        examples = stage.get("examples") or []
        if examples:
            out.append("<table><tr><th>interaction</th><th>prompt</th><th>answer</th><th>reason</th></tr>")
            out.extend(
                f"<tr><td>{_e(x.get('interaction_id'))}</td><td class='text'>{_e(x.get('prompt'))}</td>"
                f"<td class='text'>{_e(x.get('answer'))}</td><td class='text'>{_e(x.get('reason'))}</td></tr>"
                for x in examples
            )
            out.append("</table>")
        elif stage.get("removed"):
            out.append('<p class="muted">no examples kept</p>')
    return "\n".join(out)


def _plots(curation: dict[str, Any], details: dict[str, list[Any]] | None) -> str:
    figures = [("Rows removed per stage", _removed_svg(curation))]
    if details is not None:
        mapped = [i for i, x in enumerate(details.get("x", [])) if x is not None]
        if mapped:
            sample = _sample(mapped)
            figures.append(("Embedding map by cohort", _map_svg(details, sample, "cohort")))
            figures.append(("Embedding map by family", _map_svg(details, sample, "family")))
            figures.append(("Clusters: size and share kept", _clusters_svg(details, mapped)))
        note = "" if mapped else '<p class="muted">No selection stage ran: no embedding map.</p>'
    else:
        note = '<p class="muted">The per-row details (curation.parquet) are missing: only the counts are shown.</p>'
    shown = "".join(f'<figure aria-label="{_e(t)}">{svg}</figure>' for t, svg in figures)
    return f'<h2>Plots</h2>{note}<div class="plots">{shown}</div>'


def _sample(rows: list[int]) -> np.ndarray:
    """Return at most MAP_POINTS of the rows (a fixed random subset, in order)."""
    index = np.array(rows, dtype=np.int64)
    if len(index) <= MAP_POINTS:
        return index
    return np.sort(np.random.default_rng(0).choice(index, MAP_POINTS, replace=False))


def _figure(width: float = 5.2, height: float = 4.2) -> tuple[Any, Any]:
    return plots.figure(width, height)


def _svg(figure: Any) -> str:
    return plots.to_svg(figure)


def _removed_svg(curation: dict[str, Any]) -> str:
    stages = curation.get("stages", [])
    figure, axes = _figure()
    names = [s["stage"] for s in stages]
    removed = [s.get("removed", 0) for s in stages]
    bars = axes.bar(range(len(names)), removed, color="#4878d0")
    axes.bar_label(bars, fontsize=8)
    axes.set_xticks(range(len(names)), names, rotation=30, ha="right")
    axes.set_ylabel("rows removed")
    axes.set_title(f"{curation.get('rows_in', 0)} rows in, {curation.get('rows_out', 0)} out", fontsize=10)
    return _svg(figure)


def _groups(values: list[Any]) -> tuple[list[str], list[str]]:
    """Return each value's legend group (the most common ones; the rest 'other') and the groups in order."""
    text = [str(v) if v is not None else "(none)" for v in values]
    names, counts = np.unique(np.array(text, dtype=object), return_counts=True)
    top = [str(n) for n in names[np.argsort(-counts, kind="stable")][:TOP_GROUPS]]
    keep = set(top)
    grouped = [t if t in keep else "other" for t in text]
    return grouped, top + (["other"] if len(keep) < len(names) else [])


def _map_svg(details: dict[str, list[Any]], sample: np.ndarray, by: str) -> str:
    x = np.array([details["x"][i] for i in sample], dtype=float)
    y = np.array([details["y"][i] for i in sample], dtype=float)
    kept = np.array([bool(details["kept"][i]) for i in sample])
    grouped, order = _groups([details[by][i] for i in sample])
    labels = np.array(grouped, dtype=object)
    figure, axes = _figure(5.6, 4.6)
    rasterized = len(sample) > 1000  # thousands of markers: a bitmap inside the SVG keeps the page small
    for colour, name in zip(COLOURS, order, strict=False):
        mine = labels == name
        axes.scatter(x[mine & ~kept], y[mine & ~kept], s=14, marker="x", color=colour, alpha=0.3, linewidths=0.8,
                     rasterized=rasterized)  # fmt: skip
        axes.scatter(x[mine & kept], y[mine & kept], s=16, marker="o", color=colour, alpha=0.9, label=name,
                     edgecolors="none", rasterized=rasterized)  # fmt: skip
    axes.set_xticks([])
    axes.set_yticks([])
    axes.set_xlabel("first principal component")
    axes.set_ylabel("second principal component")
    shown = f"{len(sample)} points" + (" (a sample)" if len(sample) == MAP_POINTS else "")
    axes.set_title(f"by {by}: dots selected, crosses not; {shown}", fontsize=9)
    axes.legend(fontsize=7, loc="best", markerscale=1.2, title=by, title_fontsize=8)
    return _svg(figure)


def _clusters_svg(details: dict[str, list[Any]], mapped: list[int]) -> str:
    clusters = np.array([details["cluster"][i] if details["cluster"][i] is not None else -1 for i in mapped])
    kept = np.array([bool(details["kept"][i]) for i in mapped])
    ids, sizes = np.unique(clusters, return_counts=True)
    share = np.array([kept[clusters == c].mean() for c in ids])
    figure, axes = _figure(6.4, 4.2)
    positions = np.arange(len(ids))
    axes.bar(positions, sizes, color="#4878d0", label="rows")
    axes.bar(positions, [kept[clusters == c].sum() for c in ids], color="#6acc64", label="selected")
    axes.set_xticks(positions, [str(c) for c in ids], fontsize=7 if len(ids) > 20 else 9)
    axes.set_xlabel("cluster (largest first)")
    axes.set_ylabel("rows")
    right = axes.twinx()
    right.plot(positions, share, "o-", color="#d65f5f", ms=3, linewidth=1, label="share kept")
    right.set_ylim(0, 1.05)
    right.set_ylabel("share kept")
    handles = axes.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    axes.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="upper right")
    axes.set_title(f"{len(ids)} clusters of the rows that reached selection", fontsize=10)
    return _svg(figure)
