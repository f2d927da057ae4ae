"""The reliability diagram renders as embeddable SVG."""

from __future__ import annotations

import pytest

from posttrain.annotate.agreement import calibration
from posttrain.annotate.plots import reliability_svg

pytestmark = pytest.mark.warehouses("duckdb", "postgresql")


def test_reliability_svg_embeds_the_title_and_counts() -> None:
    cal = calibration([(1, 0.95, 1), (0, 0.9, 1), (1, 0.55, 1), (0, 0.6, 0), (1, 0.25, 0)], bins=10)
    svg = reliability_svg(cal, title="judge gpt-small")
    assert svg.startswith("<svg")
    assert svg.rstrip().endswith("</svg>")
    assert "<?xml" not in svg and "DOCTYPE" not in svg
    assert "judge gpt-small" in svg
    assert "ECE" in svg


def test_reliability_svg_without_confidences() -> None:
    svg = reliability_svg(calibration([("a", None, "a")]), title="no confidences")
    assert "<svg" in svg
    assert "no confidences" in svg
