"""posttrain's one plotting path: charts drawn server-side by matplotlib as SVG.

Every chart posttrain shows (the console's pages, the experiment status page, the demo's and the
curation's reports, the judges' reliability diagram) is drawn here or with these primitives:
matplotlib's object API (no pyplot state, so threads may draw at once), text kept as text, no
date stamp (the same data draws the same bytes). Pages embed a chart either inline (static report
files) or as an ``<img>`` of a ``data:`` URI (the console, whose Content-Security-Policy forbids
inline styles; an image is its own document, so matplotlib's styles inside it are allowed).

Why server-side SVG rather than a JavaScript charting library: the pages stay under a strict CSP
(no eval, no inline style), work in saved report files and without a script, and nothing has to be
vendored or fetched. Charts are cached by their data (``cached``), so a page drawn again is cheap.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

PALETTE = ["#3b5bdb", "#e8590c", "#2b8a3e", "#ae3ec9", "#c92a2a", "#1098ad", "#f59f00", "#5c940d", "#868e96"]
_RC: dict[str, Any] = {
    "svg.fonttype": "none",
    "svg.hashsalt": "posttrain",
    "font.size": 9,
    "axes.edgecolor": "#adb5bd",
    "axes.titlesize": 10,
    "legend.frameon": False,
}
_METADATA = re.compile(r"<metadata>.*?</metadata>", re.DOTALL)
_CACHE_SIZE = 256
_cache: OrderedDict[str, str] = OrderedDict()
_cache_lock = threading.Lock()


def figure(width: float = 6.4, height: float = 3.0) -> tuple[Any, Any]:
    """Return a new (figure, axes) on an SVG canvas, ``width`` x ``height`` inches at 100 dpi."""
    import matplotlib
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure

    with matplotlib.rc_context(_RC):  # type: ignore[arg-type]
        fig = Figure(figsize=(width, height), dpi=100)
        FigureCanvasSVG(fig)
        axes = fig.add_subplot()
    return fig, axes


def to_svg(fig: Any) -> str:
    """Return ``fig`` as an SVG string without the XML prolog or metadata block (it embeds directly in HTML)."""
    import matplotlib

    with matplotlib.rc_context(_RC):  # type: ignore[arg-type]
        fig.tight_layout()
        buffer = io.StringIO()
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return _METADATA.sub("", text[text.index("<svg") :])


def data_uri(svg: str) -> str:
    """Return ``svg`` as a ``data:image/svg+xml;base64,...`` URI for an ``<img src>``."""
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")


def cached(key: Any, draw: Callable[[], str]) -> str:
    """Return ``draw()``, remembered by ``key`` (any repr-able data the chart is a function of)."""
    digest = hashlib.sha256(repr(key).encode("utf-8")).hexdigest()
    with _cache_lock:
        found = _cache.get(digest)
        if found is not None:
            _cache.move_to_end(digest)
            return found
    svg = draw()
    with _cache_lock:
        _cache[digest] = svg
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return svg


def _style(axes: Any, title: str | None, x_label: str | None, y_label: str | None) -> None:
    import matplotlib

    with matplotlib.rc_context(_RC):  # type: ignore[arg-type]
        axes.set_axisbelow(True)
        axes.grid(True, color="#e9ecef", linewidth=0.8)
        for side in ("top", "right"):
            axes.spines[side].set_visible(False)
        if title:
            axes.set_title(title, fontsize=10, fontweight="bold", loc="left")
        if x_label:
            axes.set_xlabel(x_label)
        if y_label:
            axes.set_ylabel(y_label)


@dataclass
class Series:
    """One line: its name, x values (numbers or datetimes), y values, and an optional band around it."""

    name: str
    x: Sequence[Any]
    y: Sequence[float | None]
    low: Sequence[float | None] | None = None
    high: Sequence[float | None] | None = None
    style: dict[str, Any] = field(default_factory=dict)  # extra matplotlib plot() keywords (marker, linestyle)


def lines(
    series: Sequence[Series],
    *,
    title: str | None = None,
    x_label: str | None = None,
    y_label: str | None = None,
    y_range: tuple[float, float] | None = None,
    percent: bool = False,
    hline: float | None = None,
    width: float = 6.4,
    height: float = 3.0,
) -> str:
    """Draw ``series`` as lines (with shaded bands where given) and return the SVG."""

    def draw() -> str:
        fig, axes = figure(width, height)
        _style(axes, title, x_label, y_label)
        for i, s in enumerate(series):
            color = s.style.get("color", PALETTE[i % len(PALETTE)])
            kwargs = {"marker": "o", "markersize": 3, "linewidth": 1.6} | s.style | {"color": color}
            ys = [float("nan") if v is None else v for v in s.y]
            axes.plot(list(s.x), ys, label=s.name, **kwargs)
            if s.low is not None and s.high is not None:
                low = [float("nan") if v is None else v for v in s.low]
                high = [float("nan") if v is None else v for v in s.high]
                axes.fill_between(list(s.x), low, high, color=color, alpha=0.15, linewidth=0)
        if hline is not None:
            axes.axhline(hline, color="#868e96", linewidth=0.8, linestyle="--")
        if y_range is not None:
            axes.set_ylim(*y_range)
        if percent:
            from matplotlib.ticker import PercentFormatter

            axes.yaxis.set_major_formatter(PercentFormatter(1.0))
        if any(isinstance(v, datetime) for s in series for v in list(s.x)[:1]):
            fig.autofmt_xdate()
        if len(series) > 1 or any(s.name for s in series):
            axes.legend(fontsize=8, loc="best")
        if not series:
            axes.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=axes.transAxes, color="#868e96")
        return to_svg(fig)

    key = ("lines", [(s.name, list(s.x), list(s.y), s.low, s.high, s.style) for s in series], title, x_label,
           y_label, y_range, percent, hline, width, height)  # fmt: skip
    return cached(key, draw)


@dataclass
class Interval:
    """One estimate with its interval, drawn as a dot with a bar; ``group`` colours it."""

    label: str
    value: float
    low: float | None = None
    high: float | None = None
    group: str = ""


def intervals(
    rows: Sequence[Interval],
    *,
    title: str | None = None,
    x_label: str | None = None,
    percent: bool = False,
    vline: float | None = None,
    width: float = 6.4,
) -> str:
    """Draw estimates with intervals as horizontal dot-and-whisker rows and return the SVG."""

    def draw() -> str:
        height = max(1.6, 0.9 + 0.32 * len(rows))
        fig, axes = figure(width, height)
        _style(axes, title, x_label, None)
        groups = list(dict.fromkeys(r.group for r in rows))
        for i, r in enumerate(rows):
            y = len(rows) - 1 - i
            color = PALETTE[groups.index(r.group) % len(PALETTE)]
            if r.low is not None and r.high is not None:
                axes.plot([r.low, r.high], [y, y], color=color, linewidth=2.2, solid_capstyle="round")
            axes.plot([r.value], [y], "o", color=color, markersize=5)
        axes.set_yticks(range(len(rows)))
        axes.set_yticklabels([r.label for r in reversed(rows)])
        axes.grid(True, axis="x", color="#e9ecef")
        axes.grid(False, axis="y")
        if vline is not None:
            axes.axvline(vline, color="#868e96", linewidth=0.8, linestyle="--")
        if percent:
            from matplotlib.ticker import PercentFormatter

            axes.xaxis.set_major_formatter(PercentFormatter(1.0))
        if not rows:
            axes.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=axes.transAxes, color="#868e96")
        return to_svg(fig)

    key = ("intervals", [(r.label, r.value, r.low, r.high, r.group) for r in rows], title, x_label, percent, vline,
           width)  # fmt: skip
    return cached(key, draw)


def bars(
    categories: Sequence[str],
    stacks: dict[str, Sequence[float]],
    *,
    title: str | None = None,
    y_label: str | None = None,
    width: float = 6.4,
    height: float = 3.0,
) -> str:
    """Draw stacked bars: one bar per category, one coloured segment per key of ``stacks``."""

    def draw() -> str:
        fig, axes = figure(width, height)
        _style(axes, title, None, y_label)
        bottom = [0.0] * len(categories)
        for i, (name, values) in enumerate(stacks.items()):
            axes.bar(list(range(len(categories))), list(values), bottom=bottom, label=name,
                     color=PALETTE[i % len(PALETTE)], width=0.8)  # fmt: skip
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        step = max(1, len(categories) // 10)
        axes.set_xticks(list(range(0, len(categories), step)))
        axes.set_xticklabels(list(categories)[::step], rotation=30, ha="right")
        axes.grid(False, axis="x")
        if stacks:
            axes.legend(fontsize=8, loc="best")
        else:
            axes.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=axes.transAxes, color="#868e96")
        return to_svg(fig)

    key = ("bars", list(categories), {k: list(v) for k, v in stacks.items()}, title, y_label, width, height)
    return cached(key, draw)
