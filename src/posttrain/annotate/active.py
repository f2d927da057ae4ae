"""Active selection: fill a queue with the N items where a person's label is worth most.

Candidates are answered interactions matching ``where`` (and ``since``) not yet in the queue; when
there are more than the pool (``max(20 * budget, 2000)``, at most 50,000; 2,000 with self-consistency)
a seeded uniform sample of them. Each candidate gets a value in [0, 1], the weighted mean of the
terms that apply (each in [0, 1]):

- ``judges-disagree`` (weight 0.35, with two or more queue judges): how split the judges' votes are,
  ``(1 - top share) / (1 - 1 / judges that voted)``;
- ``near-boundary`` (0.25, with a judge): the judges' mean ``1 - |2p - 1|``, where ``p`` is a reward
  model's P(accept) (a confidence ``c`` counts as ``p = c``): 1 on the boundary, 0 when sure;
- ``self-inconsistent`` (0.2, when ``samples`` > 0 and ``model`` names a causal LM): the model answers
  the prompt ``samples`` times at temperature 1; ``(1 - share of the commonest normalised answer)
  / (1 - 1 / samples)``;
- ``feedback-conflict`` (0.2): the interaction got both a positive and a negative user signal (thumb
  up/down, rating >= 4 / <= 2, flag), or the same prompt and answer elsewhere did.

Candidates a *trusted* judge (see ``posttrain.annotate.judges.calibrate``) is sure of are added and
resolved by that judge alone: they cost no human label and are not counted in the budget. The
budget is split across cohorts in proportion to their candidates (at least one each when the budget
allows) and filled with each cohort's highest values. ``strategy="random"`` draws the budget
uniformly (seeded) from the same candidates, with no judges: the baseline active selection is
measured against.

On a pairwise queue a candidate is two different answers to the same prompt (each answer in one
pair at most): the judges' terms use the pairwise verdicts, self-consistency the prompt, and
``feedback-conflict`` holds when users' signals cannot order the two (both liked, both disliked, or
either answer judged both ways).
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from posttrain import datasets
from posttrain.annotate import judges
from posttrain.annotate.items import fill
from posttrain.annotate.queues import get_queue
from posttrain.annotate.records import Queue
from posttrain.annotate.resolve import write_consensus
from posttrain.annotate.tasks import vote
from posttrain.errors import InvalidInput
from posttrain.project import Project
from posttrain.warehouse import analytics
from posttrain.warehouse.rows import fetch_all

MAX_BUDGET = 100_000
MAX_POOL = 50_000
MAX_SAMPLED = 2_000
MAX_SAMPLES = 16
WEIGHTS = {"judges-disagree": 0.35, "near-boundary": 0.25, "self-inconsistent": 0.2, "feedback-conflict": 0.2}
NO_COHORT = "(none)"


class SelectionResult(BaseModel):
    """What one active (or random) selection added to a queue."""

    queue: str
    strategy: Literal["active", "random"]
    budget: int
    candidates: int = Field(description="Candidates considered (the pool).")
    added: int = Field(description="Items added for people.")
    judge_resolved: int = Field(0, description="Items added and resolved by a trusted judge alone.")
    by_cohort: dict[str, int] = Field(description="Items added for people, per cohort.")
    reasons: dict[str, int] = Field(description="Items added for people, per strongest reason.")


def _check(queue: Queue, budget: int, strategy: str, samples: int, model: str | None) -> None:
    if not 1 <= budget <= MAX_BUDGET:
        raise InvalidInput(f"budget: from 1 to {MAX_BUDGET}", field="budget")
    if strategy not in ("active", "random"):
        raise InvalidInput("strategy: active or random", field="strategy")
    if not 0 <= samples <= MAX_SAMPLES:
        raise InvalidInput(f"samples: from 0 to {MAX_SAMPLES}", field="samples")
    if samples > 0 and model is None:
        raise InvalidInput("model: self-consistency needs a registered causal LM to sample", field="model")


_CANDIDATES = """
WITH c AS (
    SELECT i.id, i.cohort, hash(i.messages::VARCHAR) AS pk, hash(coalesce(i.response, '')) AS rk
    FROM interactions i
    WHERE ({condition}) AND i.response IS NOT NULL AND {since}
      AND NOT EXISTS (SELECT 1 FROM annotation_items a WHERE a.queue_id = $queue AND a.interaction_id = i.id)
    ORDER BY hash(i.id || $seed), i.id LIMIT $pool
), fb AS (
    SELECT interaction_id,
        bool_or(kind = 'thumb' AND score > 0 OR kind = 'rating' AND score >= 4) AS pos,
        bool_or(kind = 'thumb' AND score < 0 OR kind = 'flag' OR kind = 'rating' AND score <= 2) AS neg
    FROM feedback WHERE source NOT IN ('annotator', 'judge') GROUP BY interaction_id
), grp AS (  -- the same prompt and answer, judged both ways across interactions
    SELECT hash(i.messages::VARCHAR) AS pk, hash(coalesce(i.response, '')) AS rk,
           bool_or(fb.pos) AS pos, bool_or(fb.neg) AS neg
    FROM interactions i JOIN fb ON fb.interaction_id = i.id GROUP BY ALL
)
SELECT c.id, coalesce(c.cohort, '{none}') AS cohort,
       coalesce(fb.pos AND fb.neg, false) OR coalesce(grp.pos AND grp.neg, false) AS conflict
FROM c LEFT JOIN fb ON fb.interaction_id = c.id LEFT JOIN grp ON grp.pk = c.pk AND grp.rk = c.rk
ORDER BY c.id"""


# a pairwise queue: consecutive different answers to one prompt among the single candidates above
_PAIRS = """
WITH single AS ({singles}),
one AS (  -- one interaction per distinct answer to a prompt
    SELECT hash(i.messages::VARCHAR) AS pk, arg_min(s.id, s.id) AS id, arg_min(s.cohort, s.id) AS cohort,
           bool_or(s.conflict) AS conflict, bool_or(fb.pos) AS pos, bool_or(fb.neg) AS neg
    FROM single s JOIN interactions i ON i.id = s.id
    LEFT JOIN (SELECT interaction_id, bool_or(kind = 'thumb' AND score > 0 OR kind = 'rating' AND score >= 4) AS pos,
                      bool_or(kind = 'thumb' AND score < 0 OR kind = 'flag' OR kind = 'rating' AND score <= 2) AS neg
               FROM feedback WHERE source NOT IN ('annotator', 'judge') GROUP BY interaction_id) fb
           ON fb.interaction_id = s.id
    GROUP BY hash(i.messages::VARCHAR), hash(coalesce(i.response, ''))
),
numbered AS (SELECT *, row_number() OVER (PARTITION BY pk ORDER BY id) AS n FROM one)
SELECT a.id, b.id AS second, a.cohort,
       a.conflict OR b.conflict OR coalesce(a.pos AND b.pos, false) OR coalesce(a.neg AND b.neg, false) AS conflict
FROM numbered a JOIN numbered b ON a.pk = b.pk AND b.n = a.n + 1 AND a.n % 2 = 1
WHERE NOT EXISTS (SELECT 1 FROM annotation_items q WHERE q.queue_id = $queue AND q.gold IS NULL
                  AND (q.interaction_id IN (a.id, b.id) OR q.second_interaction_id IN (a.id, b.id)))
ORDER BY a.id"""


def _candidates(
    project: Project, queue: Queue, where: str | None, since: datetime | None, pool: int, seed: int
) -> list[dict[str, Any]]:
    try:
        condition = datasets.check_where(where) or "true"
    except ValueError as exc:
        raise InvalidInput(f"where: {exc}", field="where") from None
    sql = _CANDIDATES.format(condition=condition, since='i."timestamp" >= $since' if since else "true",
                             none=NO_COHORT)  # fmt: skip
    if queue.task == "pairwise":
        sql = _PAIRS.format(singles=sql)
    params: dict[str, Any] = {"queue": queue.id, "seed": str(seed), "pool": pool}
    if since:
        params["since"] = since
    try:
        with analytics.duckdb_over(project, sql) as cur:  # PostgreSQL: a DuckDB copy; a user's condition runs there
            return fetch_all(cur, sql, params)
    except Exception as exc:  # a condition DuckDB refuses: a 400 naming it
        raise InvalidInput(f"where: {str(exc).splitlines()[0][:300]}", field="where") from None


def _disagreement(votes: list[Any]) -> float:
    if len(votes) < 2:
        return 0.0
    top = Counter(repr(v) for v in votes).most_common(1)[0][1] / len(votes)
    return (1.0 - top) / (1.0 - 1.0 / len(votes))


def _judge_terms(
    queue: Queue, verdicts: dict[str, list[judges.Verdict | None]], n: int
) -> tuple[list[float], list[float]]:
    """Return per candidate the judges' disagreement and their mean closeness to the boundary."""
    split, near = [], []
    for k in range(n):
        said = [v[k] for v in verdicts.values() if v[k] is not None]
        split.append(_disagreement([vote(queue.task, v.value) for v in said if v is not None]))
        confs = [v.confidence for v in said if v is not None and v.confidence is not None]
        near.append(sum(min(1.0, max(0.0, 2.0 * (1.0 - c))) for c in confs) / len(confs) if confs else 0.0)
    return split, near


_SPACE = re.compile(r"\s+")


def _normalise(text: str) -> str:
    return _SPACE.sub(" ", text.strip().lower()).rstrip(".")


def _self_inconsistency(project: Project, model: str, ids: Sequence[str], samples: int, seed: int) -> list[float]:
    """Sample ``samples`` answers to each candidate's prompt; return 0 (all agree) .. 1 (all differ)."""
    import torch

    from posttrain.models.generation import _sample_batch, load_causal_lm
    from posttrain.models.registry import get_model

    record = get_model(project, model)
    if record.kind != "causal-lm":
        raise InvalidInput(f"model {model!r} is a {record.kind}; self-consistency samples a causal-lm", field="model")
    lm, tokenizer = load_causal_lm(record.path)
    torch.manual_seed(seed)
    rows = judges.read_interactions(project, [(i, None) for i in ids])
    out: list[float] = []
    for start in range(0, len(ids), 16):
        batch = [rows[i]["prompt"] for i in ids[start : start + 16]]
        answers = _sample_batch(lm, tokenizer, batch, samples=samples, max_new_tokens=32, temperature=1.0)
        for j in range(len(batch)):
            texts = [_normalise(a[0]) for a in answers[j * samples : (j + 1) * samples]]
            out.append(_disagreement(texts))
    return out


def _allocate(counts: dict[str, int], budget: int) -> dict[str, int]:
    """Split ``budget`` across cohorts in proportion to ``counts`` (at least one each when it allows)."""
    total = sum(counts.values())
    if budget >= total:
        return dict(counts)
    share = {c: n * budget / total for c, n in counts.items()}
    alloc = {c: min(n, math.floor(share[c])) for c, n in counts.items()}
    if budget >= len(counts):
        alloc = {c: max(a, 1) for c, a in alloc.items()}
    while sum(alloc.values()) > budget:
        biggest = max(alloc, key=lambda c: (alloc[c] - share[c], alloc[c]))
        alloc[biggest] -= 1
    order = sorted(counts, key=lambda c: (-(share[c] - math.floor(share[c])), -counts[c], c))
    while sum(alloc.values()) < budget:
        for c in order:
            if alloc[c] < counts[c] and sum(alloc.values()) < budget:
                alloc[c] += 1
    return alloc


def _stratified(pool: list[dict[str, Any]], values: list[float], budget: int, seed: int) -> list[int]:
    """Return indices of the top values within each cohort, the budget split across cohorts."""
    rng = random.Random(seed)
    ties = [rng.random() for _ in pool]
    by_cohort: dict[str, list[int]] = defaultdict(list)
    for k, row in enumerate(pool):
        by_cohort[row["cohort"]].append(k)
    alloc = _allocate({c: len(v) for c, v in by_cohort.items()}, budget)
    chosen = []
    for cohort, members in by_cohort.items():
        members.sort(key=lambda k: (-values[k], ties[k]))
        chosen += members[: alloc[cohort]]
    return sorted(chosen, key=lambda k: (-values[k], ties[k]))


def _score(
    project: Project, queue: Queue, pool: list[dict[str, Any]], samples: int, model: str | None, seed: int
) -> tuple[list[float], list[str], dict[str, list[judges.Verdict | None]]]:
    """Return each candidate's value, its strongest reason, and the judges' verdicts."""
    pairs: list[judges.Candidate] = [(row["id"], row.get("second")) for row in pool]
    verdicts = {j: judges.judge_candidates(project, queue, j, pairs) for j in queue.judges}
    terms: dict[str, list[float]] = {"feedback-conflict": [float(row["conflict"]) for row in pool]}
    if verdicts:
        split, near = _judge_terms(queue, verdicts, len(pool))
        terms["near-boundary"] = near
        if len(verdicts) >= 2:
            terms["judges-disagree"] = split
    if samples > 0 and model is not None:
        terms["self-inconsistent"] = _self_inconsistency(project, model, [r["id"] for r in pool], samples, seed)
    weight = sum(WEIGHTS[t] for t in terms)
    values, reasons = [], []
    for k in range(len(pool)):
        parts = {t: WEIGHTS[t] * v[k] for t, v in terms.items()}
        values.append(sum(parts.values()) / weight)
        best = max(sorted(parts), key=lambda t: parts[t])
        reasons.append(best if parts[best] > 0 else "none")
    return values, reasons, verdicts


def _sure(
    project: Project, queue: Queue, verdicts: dict[str, list[judges.Verdict | None]], n: int
) -> dict[int, tuple[str, judges.Verdict]]:
    """Return the candidates a trusted judge is sure of, with that judge and its verdict."""
    if not verdicts:
        return {}
    trusted = [j for j in judges.trusted_judges(project, queue.name) if j in verdicts]
    sure = project.settings.annotate.sure
    found = {k: judges.sure_votes(queue.task, verdicts, trusted, sure, k) for k in range(n)} if trusted else {}
    return {k: v for k, v in found.items() if v is not None}


def _store(
    project: Project,
    queue: Queue,
    ids: list[str],
    index: dict[str, int],
    verdicts: dict[str, list[judges.Verdict | None]],
    sure: dict[int, tuple[str, judges.Verdict]],
) -> None:
    """Store the judges' labels of the added items; resolve the ones a trusted judge is sure of."""
    if not ids or not verdicts:
        return
    items = fetch_all(project.cursor(), "SELECT id, interaction_id FROM annotation_items WHERE queue_id = ? "
                      "AND gold IS NULL AND list_contains(?, interaction_id)", [queue.id, ids])  # fmt: skip
    cur = project.cursor()
    cur.begin()
    try:
        stored = {j: judges.store_verdicts(cur, queue, j, items, [v[index[i["interaction_id"]]] for i in items])
                  for j, v in verdicts.items()}  # fmt: skip
        for item in items:
            k = index[item["interaction_id"]]
            if k in sure:
                judge, verdict = sure[k]
                write_consensus(cur, queue, item["id"], vote(queue.task, verdict.value),
                                support=verdict.confidence or 0.0, source="judge", resolved_by="judge",
                                label_ids=[stored[judge][item["id"]]])  # fmt: skip
        cur.commit()
    except BaseException:
        cur.rollback()
        raise


def select(
    project: Project,
    name: str,
    budget: int,
    *,
    where: str | None = None,
    since: datetime | None = None,
    strategy: Literal["active", "random"] = "active",
    seed: int = 0,
    samples: int = 0,
    model: str | None = None,
) -> SelectionResult:
    """Add ``budget`` items to queue ``name`` where a label is worth most (or at random); return what was added."""
    queue = get_queue(project, name)
    _check(queue, budget, strategy, samples, model)
    size = MAX_SAMPLED if samples > 0 else min(MAX_POOL, max(20 * budget, 2_000))
    pool = _candidates(project, queue, where, since, size, seed)
    if strategy == "random":
        chosen = sorted(random.Random(seed).sample(range(len(pool)), min(budget, len(pool))))
        values, reasons = [0.0] * len(pool), ["random"] * len(pool)
        verdicts: dict[str, list[judges.Verdict | None]] = {}
        sure: dict[int, tuple[str, judges.Verdict]] = {}
    else:
        values, reasons, verdicts = _score(project, queue, pool, samples, model, seed)
        sure = _sure(project, queue, verdicts, len(pool))
        rest = [k for k in range(len(pool)) if k not in sure]
        picked = _stratified([pool[k] for k in rest], [values[k] for k in rest], budget, seed)
        chosen = [rest[k] for k in picked]
    order = chosen + sorted(sure)
    ids = [pool[k]["id"] for k in order]
    if ids:
        given: dict[str, Any] = {"interaction_ids": ids}
        if queue.task == "pairwise":
            given = {"pairs": [(pool[k]["id"], pool[k]["second"]) for k in order]}
        fill(project, name, **given, priorities=[values[k] for k in order], limit=len(ids),
             reasons=[reasons[k] if k not in sure else "judge-sure" for k in order], origin="active")  # fmt: skip
    _store(project, queue, ids, {pool[k]["id"]: k for k in order}, verdicts, sure)
    return SelectionResult(queue=queue.name, strategy=strategy, budget=budget, candidates=len(pool), added=len(chosen),
                           judge_resolved=len(sure), by_cohort=dict(Counter(pool[k]["cohort"] for k in chosen)),
                           reasons=dict(Counter(reasons[k] for k in chosen)))  # fmt: skip
