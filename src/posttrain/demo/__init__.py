"""``posttrain demo``: the flywheel end to end on the simulated product, with a report."""

from posttrain.demo.report import acceptance, render_html, write_report
from posttrain.demo.run import DemoConfig, recipe, run_demo

__all__ = ["DemoConfig", "acceptance", "recipe", "render_html", "run_demo", "write_report"]
