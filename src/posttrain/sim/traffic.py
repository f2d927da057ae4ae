"""Simulated traffic: users send tasks through the real gateway and give feedback with the SDK.

``run_traffic`` sends ``requests`` chat completions to ``POST {base_url}/v1/chat/completions``
from a small thread pool (so the gateway's local batching has company), each as a stable user
of a cohort (``user`` and ``X-Posttrain-Cohort``), and posts that user's feedback on the
``posttrain_interaction_id`` the gateway returns through ``posttrain.Client``. In side-by-side
mode (``X-Posttrain-Side-By-Side: true``) the gateway answers with two choices, each with its
own interaction id, and the user posts one ``choice`` naming the preferred one.

Users, tasks and feedback decisions are seeded per request; the answers are sampled by the
server (T=1, unseeded so that requests batch), so the outcomes vary from run to run as they
would in a product.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from pydantic import BaseModel, computed_field

from posttrain.client import Client
from posttrain.errors import InvalidInput, PosttrainError, for_status
from posttrain.sim.cohorts import DEFAULT_COHORTS, CohortConfig, cohort_named
from posttrain.sim.evaluation import MAX_NEW_TOKENS, draw_tasks
from posttrain.sim.tasks import Task, complies, succeeds
from posttrain.sim.users import FeedbackEvent, User, choose, feedback_for, make_users

Progress = Callable[[int, int], None]
_RETRIES = 5  # resends of a request the gateway answers 429 or 503 (busy)


class Outcome(BaseModel):
    """One simulated request: who asked what, which answer the user kept and what feedback followed."""

    index: int
    user: str
    cohort: str
    family: str
    prompt: str
    interaction_id: str
    model: str
    response: str | None
    success: bool
    side_by_side: bool = False
    served: list[tuple[str, bool]] = []  # (model, success) of every answer shown
    feedback: list[str] = []  # the kinds sent


class Rate(BaseModel):
    """Successes out of requests."""

    requests: int = 0
    successes: int = 0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def rate(self) -> float:
        """Return successes / requests (0 when there were none)."""
        return self.successes / self.requests if self.requests else 0.0

    def add(self, success: bool) -> None:
        """Count one more request."""
        self.requests += 1
        self.successes += int(success)


class CohortTraffic(BaseModel):
    """What one cohort asked and got."""

    cohort: str
    requests: int
    success_rate: float
    unsafe_requests: int
    safety_violations: int  # unsafe requests the answer went along with (``tasks.complies``)
    safety_violation_rate: float  # safety_violations / unsafe_requests
    unrefused_rate: float  # unsafe requests not refused (violations and garbled answers) / unsafe_requests
    families: dict[str, Rate]
    models: dict[str, Rate]  # by served model: every answer shown, side-by-side ones included
    feedback: dict[str, int]  # feedback events sent, by kind
    side_by_side: int


class TrafficReport(BaseModel):
    """A traffic run: per-cohort results, feedback delivery and every request's outcome."""

    requests: int
    seed: int
    model: str
    seconds: float
    cohorts: dict[str, CohortTraffic]
    feedback_sent: int
    feedback_failed: int
    feedback_dropped: int
    outcomes: list[Outcome]


class _Plan(BaseModel):
    """What every request of a run shares."""

    seed: int
    people: list[User]
    cohorts: list[CohortConfig]
    model: str
    side_by_side_share: float
    max_tokens: int


class _Tally:
    """Counts finished requests across the pool's threads and reports progress."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total, self.progress, self.done, self.lock = total, progress, 0, threading.Lock()

    def tick(self, outcome: Outcome) -> Outcome:
        with self.lock:
            self.done += 1
            if self.progress is not None:
                self.progress(self.done, self.total)
        return outcome


def run_traffic(
    base_url: str,
    api_key: str,
    *,
    requests: int,
    seed: int = 0,
    cohorts: Sequence[CohortConfig] = DEFAULT_COHORTS,
    model: str = "base",
    side_by_side_share: float = 0.0,
    users: int = 100,
    workers: int = 8,
    max_tokens: int = MAX_NEW_TOKENS,
    timeout: float = 60.0,
    progress: Progress | None = None,
) -> TrafficReport:
    """Send ``requests`` simulated requests to the gateway at ``base_url`` and their users' feedback.

    ``base_url`` is the server's root (``http://127.0.0.1:8000``); ``api_key`` needs the gateway
    and feedback capture (an ingest key has both). ``progress`` gets (requests done, requests).
    Raises PosttrainError when the gateway refuses a request (after resending 429/503 a few times).
    """
    if requests < 1 or workers < 1 or not 0 <= side_by_side_share <= 1:
        raise InvalidInput("requests and workers must be at least 1, side_by_side_share between 0 and 1")
    started = time.perf_counter()
    plan = _Plan(
        seed=seed, people=make_users(users, cohorts), cohorts=list(cohorts), model=model,
        side_by_side_share=side_by_side_share, max_tokens=max_tokens,
    )  # fmt: skip
    tally = _Tally(requests, progress)
    http = httpx.Client(base_url=base_url.rstrip("/"), headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout)
    with http, Client(base_url, api_key) as sdk, ThreadPoolExecutor(workers) as pool:
        outcomes = list(pool.map(lambda i: tally.tick(_request(http, sdk, plan, i)), range(requests)))
        sdk.flush(timeout)
        sent, failed, dropped = sdk.sent, sdk.failed, sdk.dropped
    return TrafficReport(
        requests=requests, seed=seed, model=model, seconds=round(time.perf_counter() - started, 3),
        cohorts=summarise(outcomes, cohorts), feedback_sent=sent, feedback_failed=failed, feedback_dropped=dropped,
        outcomes=outcomes,
    )  # fmt: skip


def _request(http: httpx.Client, sdk: Client, plan: _Plan, index: int) -> Outcome:
    """Send request ``index``: draw its user and task, ask the gateway, send the user's feedback."""
    draw = random.Random(f"{plan.seed}:request:{index}")
    user = draw.choice(plan.people)
    cohort = cohort_named(plan.cohorts, user.cohort)
    task = draw_tasks(1, cohort, draw)[0]
    side_by_side = draw.random() < plan.side_by_side_share
    body = _ask(http, task, user, plan.model, side_by_side, plan.max_tokens)
    judge = random.Random(f"{plan.seed}:feedback:{index}")
    if side_by_side:
        outcome, events = _pick(index, user, task, body, cohort, judge)
    else:
        outcome, events = _single(index, user, task, body, cohort, judge)
    for event in events:
        sdk.log_feedback(outcome.interaction_id, event.kind, event.value, text=event.text, author=user.id,
                         metadata={"cohort": user.cohort, "simulated": True})  # fmt: skip
    outcome.feedback = [event.kind for event in events]
    return outcome


def _ask(http: httpx.Client, task: Task, user: User, model: str, side_by_side: bool, max_tokens: int) -> Any:
    payload = {
        "model": model,
        "messages": [{"role": "user", "content": task.prompt}],
        "temperature": 1.0,
        "max_tokens": max_tokens,
        "user": user.id,
        "metadata": {"cohort": user.cohort},
    }
    headers = {"X-Posttrain-Cohort": user.cohort}
    if side_by_side:
        headers["X-Posttrain-Side-By-Side"] = "true"
    for attempt in range(_RETRIES + 1):
        reply = http.post("/v1/chat/completions", json=payload, headers=headers)
        if reply.status_code not in (429, 503) or attempt == _RETRIES:
            break
        time.sleep(min(2.0, 0.1 * 2**attempt))
    if reply.status_code != 200:
        raise for_status(reply.status_code, f"the gateway answered {reply.status_code}: {reply.text[:300]}")
    return reply.json()


def _single(
    index: int, user: User, task: Task, body: Any, cohort: CohortConfig, judge: random.Random
) -> tuple[Outcome, list[FeedbackEvent]]:
    text = body["choices"][0]["message"]["content"]
    ok = succeeds(task, text)
    outcome = Outcome(
        index=index, user=user.id, cohort=user.cohort, family=task.family, prompt=task.prompt,
        interaction_id=body["posttrain_interaction_id"], model=body["model"], response=text, success=ok,
        served=[(body["model"], ok)],
    )  # fmt: skip
    return outcome, feedback_for(task, text, cohort, judge)


def _pick(
    index: int, user: User, task: Task, body: Any, cohort: CohortConfig, judge: random.Random
) -> tuple[Outcome, list[FeedbackEvent]]:
    shown = body["choices"]
    if len(shown) != 2 or not all("posttrain_interaction_id" in c for c in shown):
        raise PosttrainError(
            "a side-by-side answer must have 2 choices, each with posttrain_interaction_id; "
            f"got {len(shown)} (does this gateway support X-Posttrain-Side-By-Side?)"
        )
    answers = [(c["posttrain_interaction_id"], c["message"]["content"]) for c in shown]
    chosen = choose(task, answers, cohort, judge)
    picked = next(c for c in shown if c["posttrain_interaction_id"] == chosen)
    text = picked["message"]["content"]
    served = [(str(c.get("model") or body["model"]), succeeds(task, c["message"]["content"])) for c in shown]
    outcome = Outcome(
        index=index, user=user.id, cohort=user.cohort, family=task.family, prompt=task.prompt,
        interaction_id=chosen, model=str(picked.get("model") or body["model"]), response=text,
        success=succeeds(task, text), side_by_side=True, served=served,
    )  # fmt: skip
    return outcome, [FeedbackEvent(kind="choice", value=chosen)]


def summarise(outcomes: Sequence[Outcome], cohorts: Sequence[CohortConfig]) -> dict[str, CohortTraffic]:
    """Return per-cohort results of a list of outcomes (every cohort listed, even one with no requests)."""
    grouped: dict[str, list[Outcome]] = defaultdict(list)
    for outcome in outcomes:
        grouped[outcome.cohort].append(outcome)
    return {c.name: _cohort_traffic(c.name, grouped[c.name]) for c in cohorts}


def _cohort_traffic(name: str, outcomes: list[Outcome]) -> CohortTraffic:
    families: dict[str, Rate] = defaultdict(Rate)
    models: dict[str, Rate] = defaultdict(Rate)
    feedback = Counter[str]()
    for outcome in outcomes:
        families[outcome.family].add(outcome.success)
        for served_model, ok in outcome.served:
            models[served_model].add(ok)
        feedback.update(outcome.feedback)
    unsafe = families.get("unsafe", Rate())
    violations = sum(o.family == "unsafe" and _complies(o) for o in outcomes)
    return CohortTraffic(
        cohort=name, requests=len(outcomes),
        success_rate=sum(o.success for o in outcomes) / len(outcomes) if outcomes else 0.0,
        unsafe_requests=unsafe.requests, safety_violations=violations,
        safety_violation_rate=violations / unsafe.requests if unsafe.requests else 0.0,
        unrefused_rate=1 - unsafe.rate if unsafe.requests else 0.0,
        families=dict(sorted(families.items())), models=dict(sorted(models.items())),
        feedback=dict(sorted(feedback.items())),
        side_by_side=sum(o.side_by_side for o in outcomes),
    )  # fmt: skip


def _complies(outcome: Outcome) -> bool:
    return complies(Task(family=outcome.family, prompt=outcome.prompt, answer=""), outcome.response)
