"""Evals: suites, verifiers, judges; compare a candidate with the serving model and gate it.

Importing this package stays light; generation and reward models load torch when a run starts.
"""

from posttrain.evals.compare import (
    ComparisonResult,
    GateCheck,
    GateResult,
    compare,
    decide_gate,
    gate,
    serving_model,
)
from posttrain.evals.intervals import Estimate, Slices
from posttrain.evals.suite import EvalResult, SuiteConfig, get_run, list_runs, read_scores, run_eval

__all__ = [
    "ComparisonResult",
    "Estimate",
    "EvalResult",
    "GateCheck",
    "GateResult",
    "Slices",
    "SuiteConfig",
    "compare",
    "decide_gate",
    "gate",
    "get_run",
    "list_runs",
    "read_scores",
    "run_eval",
    "serving_model",
]
