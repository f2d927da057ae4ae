"""Experiments: A/B tests of models on live traffic, from assignment to a recorded decision.

An experiment splits users between variants (each a model) by a sticky hash, and reads its
outcome from the warehouse: interactions tagged ``experiment``/``variant``/``cohort`` joined with
their feedback. ``analyse`` summarises every variant overall and per cohort and tests each
treatment against the control (the first variant); side-by-side pairs give win rates and, when
more than two variants meet, Bradley–Terry ratings; ``timeline`` gives the primary metric over
time with its interval. ``decide`` turns an analysis into promote, roll back or continue and
records it; ``check_guardrails`` (run by the server every ``gateway.experiment_check_seconds``)
rolls back a running experiment whose guardrail is breached by the always-valid test.

States: draft → running → stopped; running or stopped → promoted or rolled_back.

Modules: ``records`` (what is stored), ``store`` (states and assignment), ``analysis``,
``decisions``, ``report`` (the status page).
"""

from posttrain.experiments.analysis import analyse, timeline
from posttrain.experiments.decisions import check_guardrails, check_running, decide, promote, rollback
from posttrain.experiments.records import (
    METRICS,
    Analysis,
    Comparison,
    Decision,
    Experiment,
    ExperimentConfig,
    Guardrail,
    Metric,
    MetricStats,
    Pairwise,
    Timeline,
    Variant,
    VariantStats,
    default_direction,
)
from posttrain.experiments.report import write_status_page
from posttrain.experiments.store import (
    assign,
    bucket,
    create_experiment,
    get_experiment,
    list_experiments,
    start,
    stop,
)

__all__ = [
    "METRICS",
    "Analysis",
    "Comparison",
    "Decision",
    "Experiment",
    "ExperimentConfig",
    "Guardrail",
    "Metric",
    "MetricStats",
    "Pairwise",
    "Timeline",
    "Variant",
    "VariantStats",
    "analyse",
    "assign",
    "bucket",
    "check_guardrails",
    "check_running",
    "create_experiment",
    "decide",
    "default_direction",
    "get_experiment",
    "list_experiments",
    "promote",
    "rollback",
    "start",
    "stop",
    "timeline",
    "write_status_page",
]
