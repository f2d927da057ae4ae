"""Simulated annotators: people with their own skill, speed and noise, labelling through the real queues.

Each annotator knows the simulated product's ground truth (a task prompt has one right answer;
an unsafe request is served only by a refusal) and reports it with its ``accuracy``: a careful
annotator is right 90–95 % of the time, a careless one about 65 % (and fast, and skips some
items), an adversarial one inverts the truth most of the time. Every decision draws from the
annotator's own seeded ``random.Random``, so a seed replays a run. ``run_annotators`` has them
pull and submit items through ``posttrain.annotate`` round-robin until the queue is done.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import Counter
from typing import Any, Literal

from pydantic import BaseModel, Field

from posttrain.annotate import ItemView, QueueConfig, TaskType, get_queue, next_item, skip, submit, summarise
from posttrain.errors import InvalidInput
from posttrain.project import Project
from posttrain.sim.tasks import COMPLIANT_ANSWERS, REFUSAL, Task, complies, family_of, is_refusal, solve, succeeds

Kind = Literal["careful", "careless", "adversarial"]
MAX_ROUNDS = 1_000_000  # a bound on run_annotators' loop, far above any queue's labels


class AnnotatorProfile(BaseModel):
    """Who a simulated annotator is: a stable id, how often it reports the truth, how fast it works."""

    id: str = Field(min_length=1, max_length=64)
    kind: Kind
    accuracy: float = Field(ge=0, le=1, description="Chance a label reports the truth (adversarial: low).")
    seconds: float = Field(gt=0, description="Median seconds per item (log-normal, sigma 0.4).")
    skip_rate: float = Field(0.0, ge=0, le=1, description="Chance of skipping an item unlabelled.")
    seed: int = 0


class SimAnnotator:
    """One simulated annotator: a profile and its own seeded random stream."""

    def __init__(self, profile: AnnotatorProfile) -> None:
        self.profile = profile
        self.rng = random.Random(f"annotator:{profile.id}:{profile.seed}")

    @property
    def id(self) -> str:
        """Return the annotator's stable id."""
        return self.profile.id

    def seconds(self) -> float:
        """Draw the seconds this annotator spends on one item."""
        return round(self.rng.lognormvariate(math.log(self.profile.seconds), 0.4), 2)

    def skips(self) -> bool:
        """Draw whether this annotator skips the item in front of it."""
        return self.rng.random() < self.profile.skip_rate

    def label(self, task: TaskType, item: ItemView, queue: QueueConfig) -> dict[str, Any]:
        """Return the wire label this annotator gives ``item`` of a ``task`` queue."""
        truthful = self.rng.random() < self.profile.accuracy
        sim_task = task_of(item)
        return _LABELLERS[task](self.rng, sim_task, item, queue, truthful)


def make_annotators(seed: int = 0, *, careful: int = 3, careless: int = 1, adversarial: int = 1) -> list[SimAnnotator]:
    """Return the default crowd: careful annotators (0.95, 0.92, 0.90 ...), careless ones, adversarial ones."""
    if min(careful, careless, adversarial) < 0 or careful + careless + adversarial > 50:
        raise InvalidInput("annotator counts: 0 or more each, at most 50 in all", field="careful")
    skills = (0.95, 0.92, 0.9)
    profiles = [
        AnnotatorProfile(id=f"careful-{n + 1}", kind="careful", accuracy=skills[n % 3], seconds=25 + 5 * (n % 3),
                         seed=seed)
        for n in range(careful)
    ]  # fmt: skip
    profiles += [
        AnnotatorProfile(id=f"careless-{n + 1}", kind="careless", accuracy=0.65, seconds=6, skip_rate=0.1, seed=seed)
        for n in range(careless)
    ]
    profiles += [
        AnnotatorProfile(id=f"adversarial-{n + 1}", kind="adversarial", accuracy=0.15, seconds=12, seed=seed)
        for n in range(adversarial)
    ]
    return [SimAnnotator(p) for p in profiles]


def task_of(item: ItemView) -> Task | None:
    """Return the simulated task an item's last user message asks, or None when it is not one."""
    users = [m.get("content") for m in item.prompt if isinstance(m, dict) and m.get("role") == "user"]
    text = users[-1] if users else None
    if not isinstance(text, str):
        return None
    try:
        return Task(family=family_of(text), prompt=text, answer=solve(text))
    except InvalidInput:
        return None


def truly_good(task: Task | None, response: str | None) -> bool | None:
    """Say whether an answer serves the user (None when the prompt is no simulated task)."""
    return None if task is None else succeeds(task, response)


def truly_unsafe(task: Task | None, response: str | None) -> bool:
    """Say whether an answer goes along with an unsafe request (the sim's safety truth)."""
    return task is not None and complies(task, response)


# --- one labeller per task type: (rng, task, item, queue, truthful) -> wire label --------------------


def _accept(rng: random.Random, task: Task | None, item: ItemView, queue: QueueConfig, truthful: bool) -> dict:
    good = truly_good(task, item.response)
    if good is None:
        return {"accept": rng.random() < 0.5}
    return {"accept": good if truthful else not good}


def _rating(rng: random.Random, task: Task | None, item: ItemView, queue: QueueConfig, truthful: bool) -> dict:
    low, high = queue.scale
    good = truly_good(task, item.response)
    if good is None:
        return {"rating": (low + high) // 2}
    high_side = good if truthful else not good
    return {"rating": rng.choice((high, max(low, high - 1))) if high_side else rng.choice((low, min(high, low + 1)))}


def _pairwise(rng: random.Random, task: Task | None, item: ItemView, queue: QueueConfig, truthful: bool) -> dict:
    answers = (item.answers + [None, None])[:2]
    if task is None:
        return {"choice": "tie"}
    ok = [succeeds(task, answer) for answer in answers]
    truth = "tie" if ok[0] == ok[1] else "a" if ok[0] else "b"
    if truthful:
        return {"choice": truth}
    return {"choice": rng.choice(("a", "b")) if truth == "tie" else "b" if truth == "a" else "a"}


def _classify(rng: random.Random, task: Task | None, item: ItemView, queue: QueueConfig, truthful: bool) -> dict:
    """Safe or unsafe when the queue has those (or flag categories); else its first category for a good answer."""
    categories = list(queue.categories)
    flags = [c for c in categories if c in queue.flag_categories or c.lower() == "unsafe"]
    calm = [c for c in categories if c not in flags]
    if flags and calm:
        safe = next((c for c in calm if c.lower() == "safe"), calm[0])
        bad = truly_unsafe(task, item.response) != (not truthful)
        return {"categories": [flags[0] if bad else safe]}
    good = truly_good(task, item.response)
    if good is None:
        return {"categories": [rng.choice(categories)]}
    right = categories[0] if good else categories[1]
    return {"categories": [right if truthful else rng.choice([c for c in categories if c != right])]}


def _rewrite(rng: random.Random, task: Task | None, item: ItemView, queue: QueueConfig, truthful: bool) -> dict:
    if task is None:
        return {"text": item.response or "I don't know."}
    if truthful:
        return {"text": task.answer}
    if task.family == "unsafe":
        return {"text": rng.choice(COMPLIANT_ANSWERS)}
    from posttrain.sim.base import mistake

    return {"text": mistake(task, rng) if rng.random() < 0.5 or not (item.response or "").strip() else item.response}


def _comment(rng: random.Random, task: Task | None, item: ItemView, queue: QueueConfig, truthful: bool) -> dict:
    if task is None:
        return {"text": "Not a task I can check."}
    good = succeeds(task, item.response) == truthful
    if good:
        return {"text": "Correct." if task.family != "unsafe" else "Rightly refused."}
    if task.family == "unsafe":
        note = "Should refuse: " + REFUSAL if not is_refusal(item.response) else "Should have answered."
        return {"text": note}
    return {"text": f"Wrong: the answer is {task.answer}."}


_LABELLERS = {
    "accept": _accept,
    "rating": _rating,
    "pairwise": _pairwise,
    "classify": _classify,
    "rewrite": _rewrite,
    "comment": _comment,
}


def judge_score(completion: str, answer: str | None = None, **row: Any) -> float:
    """A simulated AI judge, shaped as a posttrain verifier: P(the answer serves the user), imperfect.

    Deterministic per (prompt, answer). Its confidence ``c = |2 * score - 1|`` depends on the task:
    arithmetic (``add``) is hard for it (``c`` in 0–0.6), reversing and sorting mostly easy
    (``c = 1 - 0.5 u**3``). It takes the right side with probability ``(1 + c) / 2 - 0.03``: slightly
    overconfident. Prompts that are no simulated task get 0.5 (no idea). Register it under
    ``[functions.verifiers]`` and name it in ``[annotate.judges.NAME]`` (kind ``verifier``).
    """
    prompt = _prompt_text(row.get("prompt"))
    if prompt is None:
        return 0.5
    try:
        task = Task(family=family_of(prompt), prompt=prompt, answer=solve(prompt))
    except InvalidInput:
        return 0.5
    digest = hashlib.sha256(f"judge:{prompt}\x00{completion}".encode()).digest()
    u1, u2 = int.from_bytes(digest[:8]) / 2**64, int.from_bytes(digest[8:16]) / 2**64
    confidence = 0.6 * u1 if task.family == "add" else 1 - 0.5 * u1**3
    side = (1 + confidence) / 2
    truth = succeeds(task, completion)
    says = truth if u2 < side - 0.03 else not truth
    return side if says else 1 - side


def _prompt_text(prompt: Any) -> str | None:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        users = [m.get("content") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        return users[-1] if users and isinstance(users[-1], str) else None
    return None


class AnnotationRun(BaseModel):
    """What a simulated annotation session did: labels and skips, per annotator, and the queue after it."""

    queue: str
    labels: int
    skips: int
    by_annotator: dict[str, int]
    skips_by_annotator: dict[str, int]
    seconds: float = Field(description="Simulated annotator time, summed over every label.")
    items_done: int
    items: int
    finished: bool = Field(description="No annotator had anything left to label.")


def run_annotators(
    project: Project, queue_name: str, annotators: list[SimAnnotator], *, max_items: int | None = None
) -> AnnotationRun:
    """Have ``annotators`` label queue ``queue_name`` round-robin until it is done or ``max_items`` labels are in.

    Each turn an annotator leases its next item (``next_item``) and submits a label with its
    drawn time, or skips it (careless ones, sometimes). An annotator leaves when the queue has
    nothing left for it; the run ends when all have left.
    """
    if not annotators or len({a.id for a in annotators}) != len(annotators):
        raise InvalidInput("annotators: give at least one, each with its own id", field="annotators")
    if max_items is not None and max_items < 0:
        raise InvalidInput("max_items: 0 or more", field="max_items")
    queue = get_queue(project, queue_name)
    labels, skips = Counter[str](), Counter[str]()
    seconds, active = 0.0, list(annotators)
    limit = MAX_ROUNDS if max_items is None else max_items
    while active and sum(labels.values()) < limit:
        for annotator in list(active):
            if sum(labels.values()) >= limit:
                break
            assignment = next_item(project, queue_name, annotator.id)
            if assignment is None:
                active.remove(annotator)
                continue
            if annotator.skips():
                skip(project, assignment.lease_id, annotator.id, reason="simulated skip")
                skips[annotator.id] += 1
                continue
            took = annotator.seconds()
            submit(project, assignment.lease_id, annotator.id, annotator.label(assignment.task, assignment.item, queue),
                   seconds=took)  # fmt: skip
            labels[annotator.id] += 1
            seconds += took
    after = summarise(project, queue_name)
    return AnnotationRun(
        queue=queue_name, labels=sum(labels.values()), skips=sum(skips.values()),
        by_annotator={a.id: labels[a.id] for a in annotators},
        skips_by_annotator={a.id: skips[a.id] for a in annotators},
        seconds=round(seconds, 2), items_done=after.done, items=after.items, finished=not active,
    )  # fmt: skip
