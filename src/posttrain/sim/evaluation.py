"""Offline evaluation of a model on the simulated product, with no server: sampled and greedy success.

The product metric is the sampled success rate (T=1, what users are served) on a fixed,
seeded set of prompts drawn the way a cohort asks them; greedy success is reported beside it.
Success is the exact answer, or a refusal when the request is unsafe.
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from posttrain.sim.cohorts import DEFAULT_COHORTS, CohortConfig, cohort_named
from posttrain.sim.tasks import SKILLS, Family, Task, complies, make_prompt, succeeds

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

MAX_NEW_TOKENS = 32  # the refusal is 23 characters, one token each


class FamilyScore(BaseModel):
    """Success on one task family."""

    prompts: int
    sampled: float
    greedy: float


class Evaluation(BaseModel):
    """A model's success on a cohort's eval prompts: sampled (the product metric) and greedy."""

    model: str
    cohort: str
    prompts: int
    samples: int
    seed: int
    sampled: float
    greedy: float
    families: dict[str, FamilyScore]
    safety_violations: float | None = None  # share of sampled answers to unsafe requests that go along (complies)


def draw_tasks(count: int, cohort: CohortConfig, rng: random.Random) -> list[Task]:
    """Draw ``count`` tasks the way ``cohort`` asks them (unsafe ones at its ``unsafe_share``)."""
    tasks = []
    for _ in range(count):
        family: Family = "unsafe" if rng.random() < cohort.unsafe_share else rng.choice(SKILLS)
        tasks.append(make_prompt(family, rng))
    return tasks


def evaluate_model(
    path: Path | str,
    *,
    prompts: int = 300,
    samples: int = 4,
    seed: int = 0,
    cohort: str = "adult",
    cohorts: tuple[CohortConfig, ...] = DEFAULT_COHORTS,
    batch_size: int = 64,
) -> Evaluation:
    """Score the model at ``path`` on ``prompts`` seeded tasks of ``cohort``, ``samples`` sampled answers each."""
    import torch

    from posttrain.models.generation import load_causal_lm

    tasks = draw_tasks(prompts, cohort_named(cohorts, cohort), random.Random(seed))
    model, tokenizer = load_causal_lm(path)
    torch.manual_seed(seed)
    sampled = _answer(model, tokenizer, tasks, samples=samples, greedy=False, batch_size=batch_size)
    greedy = _answer(model, tokenizer, tasks, samples=1, greedy=True, batch_size=batch_size)
    return _score(str(path), cohort, seed, tasks, samples, sampled, greedy)


def _answer(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    tasks: list[Task],
    *,
    samples: int,
    greedy: bool,
    batch_size: int,
) -> list[list[str]]:
    """Return ``samples`` answers per task, in left-padded batches."""
    import torch

    answers: list[list[str]] = []
    per_batch = max(1, batch_size // samples)
    sampling: dict[str, Any] = {"do_sample": False} if greedy else {"do_sample": True, "temperature": 1.0}
    for start in range(0, len(tasks), per_batch):
        chats = [[{"role": "user", "content": t.prompt}] for t in tasks[start : start + per_batch]]
        texts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chats]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(  # type: ignore[operator]
                **enc, max_new_tokens=MAX_NEW_TOKENS, num_return_sequences=samples,
                pad_token_id=tokenizer.pad_token_id, top_k=None, top_p=None, **sampling,
            )  # fmt: skip
        decoded = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        answers += [decoded[i : i + samples] for i in range(0, len(decoded), samples)]
    return answers


def _score(
    model: str,
    cohort: str,
    seed: int,
    tasks: list[Task],
    samples: int,
    sampled: list[list[str]],
    greedy: list[list[str]],
) -> Evaluation:
    by_family: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for task, mine, best in zip(tasks, sampled, greedy, strict=True):
        hits = sum(succeeds(task, a) for a in mine) / samples
        by_family[task.family].append((hits, float(succeeds(task, best[0]))))
    families = {
        name: FamilyScore(
            prompts=len(scores),
            sampled=round(sum(s for s, _ in scores) / len(scores), 4),
            greedy=round(sum(g for _, g in scores) / len(scores), 4),
        )
        for name, scores in sorted(by_family.items())
    }
    every = [score for scores in by_family.values() for score in scores]
    unsafe = [complies(task, a) for task, mine in zip(tasks, sampled, strict=True) if task.family == "unsafe"
              for a in mine]  # fmt: skip
    return Evaluation(
        model=model, cohort=cohort, prompts=len(tasks), samples=samples, seed=seed,
        sampled=round(sum(s for s, _ in every) / len(every), 4), greedy=round(sum(g for _, g in every) / len(every), 4),
        families=families, safety_violations=round(sum(unsafe) / len(unsafe), 4) if unsafe else None,
    )  # fmt: skip
