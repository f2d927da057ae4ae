"""The flywheel loop: turns of collect → datasets → train → evaluate → gate → experiment → decide.

``recipe`` says what a turn runs (YAML, with a default that works); ``runner`` runs and resumes
turns; ``turns`` holds a turn and its steps as the warehouse keeps them (``loop_turns``,
``loop_steps``); ``steps`` holds what each step does and ``results`` what each step reports;
``names`` derives file-safe names for what a turn makes from free-text cohorts.
"""

from posttrain.loop.recipe import Recipe, load_recipe
from posttrain.loop.results import STEPS
from posttrain.loop.runner import LoopStepFailed, run, run_turn, serving, status
from posttrain.loop.turns import StepRecord, Turn, TurnRecord

__all__ = [
    "STEPS",
    "LoopStepFailed",
    "Recipe",
    "StepRecord",
    "Turn",
    "TurnRecord",
    "load_recipe",
    "run",
    "run_turn",
    "serving",
    "status",
]
