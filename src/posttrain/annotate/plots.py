"""Charts of label quality, drawn server-side with matplotlib as SVG to embed in HTML pages."""

from __future__ import annotations

from posttrain import plots
from posttrain.annotate.agreement import Calibration


def reliability_svg(cal: Calibration, *, title: str) -> str:
    """Draw a reliability diagram (accuracy per confidence bin against the diagonal) as an inline SVG (``plots``)."""
    figure, axes = plots.figure(5, 4.2)
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration")
    for b in cal.bins:
        axes.bar(b.low, b.accuracy, width=b.high - b.low, align="edge", color="#4878d0", edgecolor="white")
        axes.text((b.low + b.high) / 2, min(b.accuracy + 0.02, 0.97), str(b.count), ha="center", fontsize=7)
    if cal.bins:
        axes.plot([b.confidence for b in cal.bins], [b.accuracy for b in cal.bins], "o", color="#d65f5f", ms=4)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("stated confidence")
    axes.set_ylabel("accuracy (share equal to the truth)")
    ece = "n/a (no confidences)" if cal.ece is None else f"{cal.ece:.3f}"
    axes.set_title(f"{title}\nECE {ece}, n = {cal.n}", fontsize=10)
    axes.legend(loc="upper left", fontsize=8)
    return plots.to_svg(figure)
