"""The simulated product: checkable tasks, a base model with room to improve, users in cohorts.

Demos and benchmarks run the post-training loop against it end to end: ``cached_base_model``
builds (once) a tiny model that answers the tasks right about half the time when sampling;
``run_traffic`` sends users' requests through a real posttrain gateway and posts their noisy
feedback with the SDK; ``evaluate_model`` scores any model offline. torch is imported only by
the functions that train or generate.
"""

from posttrain.sim.annotators import AnnotationRun, AnnotatorProfile, SimAnnotator, make_annotators, run_annotators
from posttrain.sim.base import BaseRecipe, build_base_model, cached_base_model, default_cache_dir, noisy_rows
from posttrain.sim.cohorts import ADULT, DEFAULT_COHORTS, MINOR, CohortConfig
from posttrain.sim.evaluation import Evaluation, FamilyScore, draw_tasks, evaluate_model
from posttrain.sim.tasks import (
    COMPLIANT_ANSWERS,
    FAMILIES,
    REFUSAL,
    SKILLS,
    UNSAFE_PROMPTS,
    Family,
    Task,
    complies,
    family_of,
    is_correct,
    is_refusal,
    make_prompt,
    solve,
    succeeds,
)
from posttrain.sim.traffic import CohortTraffic, Outcome, Rate, TrafficReport, run_traffic, summarise
from posttrain.sim.users import FeedbackEvent, User, choose, feedback_for, make_users, rate

__all__ = [
    "AnnotationRun",
    "AnnotatorProfile",
    "SimAnnotator",
    "make_annotators",
    "run_annotators",
    "ADULT",
    "DEFAULT_COHORTS",
    "FAMILIES",
    "MINOR",
    "REFUSAL",
    "SKILLS",
    "UNSAFE_PROMPTS",
    "BaseRecipe",
    "CohortConfig",
    "CohortTraffic",
    "Evaluation",
    "Family",
    "FamilyScore",
    "FeedbackEvent",
    "Outcome",
    "Rate",
    "Task",
    "TrafficReport",
    "User",
    "build_base_model",
    "cached_base_model",
    "choose",
    "default_cache_dir",
    "draw_tasks",
    "evaluate_model",
    "family_of",
    "feedback_for",
    "is_correct",
    "is_refusal",
    "complies",
    "COMPLIANT_ANSWERS",
    "make_prompt",
    "make_users",
    "noisy_rows",
    "rate",
    "run_traffic",
    "solve",
    "succeeds",
    "summarise",
]
