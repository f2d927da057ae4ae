"""The flywheel loop: turns of collect → datasets → train → evaluate → gate → experiment → decide.

``recipe`` says what a turn runs (YAML, with a default that works); ``runner`` runs and resumes
turns, recording every step in the warehouse (``loop_turns``, ``loop_steps``); ``steps`` holds
what each step does.
"""

from posttrain.loop.recipe import Recipe, load_recipe
from posttrain.loop.runner import STEPS, LoopStepFailed, StepRecord, Turn, TurnRecord, run, run_turn, serving, status

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
