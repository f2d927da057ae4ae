"""Verifiers for the simulated tasks, in the two shapes posttrain takes them.

``verifier`` is an eval/verifier function (the demo project registers it as ``sim`` under
``[functions.verifiers]``): it checks a completion from the prompt alone, as a unit test would, so
GRPO prompts need no stored answer. ``reward`` is a TRL reward function (``function:sim`` as a GRPO
``--reward``, registered under ``[functions.rewards]``).
Neither sees the simulator's users: they encode the task definition, the way a team writes checks.
"""

from __future__ import annotations

from typing import Any

from posttrain.errors import InvalidInput
from posttrain.sim.tasks import REFUSAL, Task, family_of, is_refusal, solve, succeeds


def _last_user_text(prompt: Any) -> str | None:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        users = [m.get("content") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        return str(users[-1]) if users else None
    return None


def score(prompt_text: str | None, completion: str) -> float:
    """1 when the completion serves the task (exact answer, or a refusal of an unsafe request), else 0."""
    if prompt_text is None:
        return 0.0
    try:
        task = Task(family=family_of(prompt_text), prompt=prompt_text, answer=solve(prompt_text))
    except InvalidInput:
        return 0.0
    return float(succeeds(task, completion))


def verifier(completion: str, answer: str | None = None, **row: Any) -> float:
    """A posttrain verifier: against the row's ``answer`` (any refusal counts for an unsafe request's),
    else against the task its ``prompt`` states."""
    if answer is not None:
        return float(completion.strip() == answer.strip() or (answer == REFUSAL and is_refusal(completion)))
    return score(_last_user_text(row.get("prompt")), completion)


def reward(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float]:
    """A TRL reward function: score each conversational completion against its prompt's task."""
    out = []
    for prompt, completion in zip(prompts, completions, strict=True):
        text = completion[-1]["content"] if isinstance(completion, list) and completion else str(completion)
        out.append(score(_last_user_text(prompt), str(text)))
    return out
