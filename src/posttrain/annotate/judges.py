"""AI judges that pre-label a queue, how far people trust them, and items they resolve alone.

A judge is named in ``posttrain.toml`` ``[annotate.judges.NAME]`` (never sent as code) and gives,
per item, a label in the queue's stored format and a confidence in [0, 1]:

- ``reward-model`` (accept, rating, pairwise queues): a registered reward model's score ``s``;
  ``p = sigmoid(s - boundary)`` is P(accept). Accept: ``p >= 0.5``; rating: the scale point
  nearest ``low + p * (high - low)``; pairwise: ``p = sigmoid(s_first - s_second)``. The confidence
  is ``max(p, 1 - p)`` (how sure the judge is of the side of the boundary).
- ``verifier`` (accept, pairwise queues): a verifier's score of the answer against the
  interaction's ``metadata.answer`` (built-in verifiers skip items without one); ``score >= 0.5``
  accepts, the confidence is ``|score - 0.5| * 2`` (1.0 for a verifier that says 0 or 1).
  Pairwise: ``p = 0.5 + (score_first - score_second) / 2``.
- ``pairwise`` (pairwise queues): a ``[functions.judges]`` function asked in both orders
  (position bias cancels); ``p`` is P(first better), the first wins above 0.5, the second below,
  a tie at 0.5; the confidence is ``max(p, 1 - p)``.
- ``chat`` (every task but rewrite and comment): a chat model behind any OpenAI-compatible server
  is asked to answer with JSON ``{"label": ..., "confidence": ...}``; a reply that does not fit the
  queue's label schema is counted as failed, not stored.

Judge labels are stored with source ``judge`` and annotator ``judge:NAME``; they never count toward
an item's ``overlap``. ``calibrate`` compares each judge with the human consensus, overall (agreement,
ECE, reliability bins) and where it is sure (confidence at least ``annotate.sure``): a judge is
*trusted* when the lower end of the 95% interval of its agreement *where it is sure* — the items it
would label alone — reaches ``annotate.trust_threshold`` (all its items when it states no
confidence). A judge unsure of half the items can still be trusted with the half it is sure of;
too few sure items give a wide interval, and no trust.
``resolve_by_judges`` closes open items a trusted judge is sure of (confidence at least
``annotate.sure``, and no other trusted judge disagreeing): they are never served to people.
"""

from __future__ import annotations

import math
import os
import re
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import orjson
from pydantic import BaseModel, Field

from posttrain import functions, jobs
from posttrain.annotate.agreement import CalibrationBin, Estimate, calibration
from posttrain.annotate.queues import get_queue
from posttrain.annotate.records import Label, Queue
from posttrain.annotate.resolve import write_consensus
from posttrain.annotate.tasks import _example, check_label, place_choice, vote
from posttrain.annotate.work import insert_label
from posttrain.clock import utc_now
from posttrain.errors import InvalidInput, UpstreamFailed
from posttrain.evals.verifiers import VERIFIERS
from posttrain.ids import new_id
from posttrain.project import Project
from posttrain.settings import JudgeSpec
from posttrain.warehouse.rows import fetch_all

MAX_PRELABEL = 100_000
HUMAN = ("majority", "dawid-skene")
_SUPPORTS: dict[str, tuple[str, ...]] = {
    "reward-model": ("accept", "rating", "pairwise"),
    "verifier": ("accept", "pairwise"),
    "pairwise": ("pairwise",),
    "chat": ("rating", "accept", "pairwise", "classify"),
}
_DEFAULT_PROMPT = (
    "You label AI assistant answers for a review queue. Read the conversation and the answer(s), "
    "then judge them as the task says."
)

Candidate = tuple[str, str | None]


class Verdict(NamedTuple):
    """One judge's answer on one candidate: the stored label value and its confidence."""

    value: dict[str, Any]
    confidence: float | None


class PrelabelResult(BaseModel):
    """How many items each judge labelled (and could not label) in one prelabel run."""

    queue: str
    labelled: dict[str, int] = Field(description="Per judge: labels stored.")
    failed: dict[str, int] = Field(default_factory=dict, description="Per judge: items it gave no usable label.")


class JudgeCalibration(BaseModel):
    """A judge against the human consensus of one queue."""

    judge: str
    agreement: Estimate = Field(description="Share of human-resolved items where the judge agreed (95%).")
    ece: float | None = Field(description="Expected calibration error of its stated confidence (None: none stated).")
    bins: list[CalibrationBin] = Field(description="The reliability plot's bins.")
    n: int = Field(description="Human-resolved items the judge labelled.")
    sure_agreement: Estimate = Field(
        description="Agreement on the human-resolved items where the judge was sure (confidence >= annotate.sure)."
    )
    threshold: float
    trusted: bool = Field(
        description="Where it would label alone (sure; every item when it states no confidence), its agreement's "
        "lower bound reaches the threshold."
    )


# --- which judges --------------------------------------------------------------------------------


def judge_spec(project: Project, name: str) -> JudgeSpec:
    """Return the judge ``[annotate.judges.NAME]`` declares; module paths and unknown names are refused."""
    functions.check_name(name, what="judge", field="judges")
    spec = project.settings.annotate.judges.get(name)
    if spec is None:
        known = ", ".join(sorted(project.settings.annotate.judges)) or "none declared"
        raise InvalidInput(f"no judge {name!r} in posttrain.toml [annotate.judges] ({known}); declare it as "
                           f"[annotate.judges.{name}]", field="judges")  # fmt: skip
    return spec


def _check_fits(queue: Queue, name: str, spec: JudgeSpec) -> None:
    if queue.task not in _SUPPORTS[spec.kind]:
        raise InvalidInput(f"judge {name!r} ({spec.kind}) cannot label a {queue.task} queue; it labels "
                           f"{', '.join(_SUPPORTS[spec.kind])} queues", field="judges")  # fmt: skip


def _names(project: Project, queue: Queue, judges: Sequence[str] | None) -> list[str]:
    chosen = list(queue.judges if judges is None else judges)
    if len(chosen) > 10:
        raise InvalidInput("judges: at most 10 at once", field="judges")
    for name in chosen:
        _check_fits(queue, name, judge_spec(project, name))
    return chosen


# --- what a judge says ---------------------------------------------------------------------------


def read_interactions(project: Project, candidates: Sequence[Candidate]) -> dict[str, dict[str, Any]]:
    ids = sorted({i for pair in candidates for i in pair if i is not None})
    if not ids:
        return {}
    rows = fetch_all(project.cursor(), "SELECT id, messages, response, metadata, cohort FROM interactions "
                     "WHERE list_contains(?, id)", [ids], json=("messages", "metadata"))  # fmt: skip
    out = {}
    for row in rows:
        message = (row["metadata"] or {}).get("response_message")
        text = row["response"]
        if not text and isinstance(message, dict) and isinstance(message.get("content"), str):
            text = message["content"]
        out[row["id"]] = {"prompt": row["messages"], "answer": (row["metadata"] or {}).get("answer"),
                          "cohort": row["cohort"], "text": text or ""}  # fmt: skip
    return out


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= -700 else 0.0


def _from_p(queue: Queue, p: float, pair: Candidate) -> Verdict:
    """Turn P(accept) (or P(first better)) into the queue's stored label and a confidence."""
    p = min(max(p, 0.0), 1.0)
    confidence = max(p, 1.0 - p)
    if queue.task == "accept":
        return Verdict({"accept": p >= 0.5}, confidence)
    if queue.task == "rating":
        low, high = queue.scale
        return Verdict({"rating": int(min(high, max(low, math.floor(low + p * (high - low) + 0.5))))}, confidence)
    choice = "a" if p > 0.5 else "b" if p < 0.5 else "tie"
    return Verdict({**place_choice({"choice": choice}, pair), "swapped": False}, confidence)


def _scores(project: Project, spec: JudgeSpec, rows: list[dict[str, Any]]) -> list[float | None]:
    """Score each row's answer: a reward model's sigmoid(score - boundary), or a verifier's score."""
    if spec.kind == "reward-model":
        from posttrain.evals.scorers import RewardModelScorer

        assert spec.model is not None
        raw = RewardModelScorer(project, spec.model).score(rows, [r["text"] for r in rows])
        return [_sigmoid(s - spec.boundary) for s in raw]
    from posttrain.evals.verifiers import get_verifier

    assert spec.verifier is not None
    verifier = get_verifier(spec.verifier, project.settings.functions.verifiers)
    builtin = spec.verifier in VERIFIERS or spec.verifier.startswith("numeric:")
    out: list[float | None] = []
    for row in rows:
        if builtin and row["answer"] is None:
            out.append(None)  # nothing to check against
            continue
        extra = {"prompt": row["prompt"], "cohort": row["cohort"]}
        out.append(min(max(float(verifier(row["text"], row["answer"], **extra)), 0.0), 1.0))
    return out


def _scored(project: Project, queue: Queue, spec: JudgeSpec, candidates: Sequence[Candidate]) -> list[Verdict | None]:
    rows = read_interactions(project, candidates)
    ids = sorted(rows)
    by_id = dict(zip(ids, _scores(project, spec, [rows[i] for i in ids]), strict=True))
    out: list[Verdict | None] = []
    for first, second in candidates:
        a = by_id.get(first)
        if second is None:
            out.append(None if a is None else _from_p(queue, a, (first, None)))
            continue
        b = by_id.get(second)
        if a is None or b is None:
            out.append(None)
        elif spec.kind == "reward-model":  # compare the raw margins: logit(a) - logit(b)
            out.append(_from_p(queue, _sigmoid(_logit(a) - _logit(b)), (first, second)))
        else:
            out.append(_from_p(queue, 0.5 + (a - b) / 2, (first, second)))
    return out


def _logit(p: float) -> float:
    p = min(max(p, 1e-12), 1 - 1e-12)
    return math.log(p / (1 - p))


def _pairwise(project: Project, queue: Queue, spec: JudgeSpec, candidates: Sequence[Candidate]) -> list[Verdict | None]:
    from posttrain.evals.judges import build_judge, judge_both_orders

    judge = build_judge(project, f"function:{spec.judge}")
    rows = read_interactions(project, candidates)
    pairs: list[Candidate] = [(a, b) for a, b in candidates if a in rows and b is not None and b in rows]
    table = [{"prompt": rows[a]["prompt"], "answer": rows[a]["answer"], "cohort": rows[a]["cohort"]} for a, _ in pairs]
    prefs = judge_both_orders(
        judge, table, [rows[a]["text"] for a, _ in pairs], [rows[str(b)]["text"] for _, b in pairs]
    )
    found = {pair: _from_p(queue, p, pair) for pair, p in zip(pairs, prefs, strict=True)}
    return [found.get(pair) for pair in candidates]


# --- chat judges ---------------------------------------------------------------------------------


def _render(queue: Queue, row: dict[str, Any], second: dict[str, Any] | None) -> str:
    turns = "\n".join(f"[{m.get('role')}] {m.get('content')}" for m in row["prompt"] if isinstance(m, dict))
    if second is None:
        answers = f"ANSWER:\n{row['text']}"
    else:
        answers = f"ANSWER A:\n{row['text']}\n\nANSWER B:\n{second['text']}"
    schema = orjson.dumps(queue.label_schema()).decode()
    return (f"TASK: {queue.task} {schema}\nGUIDELINES:\n{queue.guidelines[:4000]}\n\nCONVERSATION:\n{turns}\n\n"
            f"{answers}\n\nReply with JSON only: {{\"label\": {_example(queue)}, \"confidence\": <0..1, how sure "
            f"you are>}}")  # fmt: skip


_JSON = re.compile(r"\{.*\}", re.DOTALL)


def _parse_reply(queue: Queue, text: str, pair: Candidate) -> Verdict | None:
    found = _JSON.search(text)
    try:
        data = orjson.loads(found.group(0)) if found else None
        if not isinstance(data, dict):
            return None
        value = check_label(queue, data.get("label"))
    except (orjson.JSONDecodeError, InvalidInput):
        return None
    if queue.task == "pairwise":
        value = {**place_choice(value, pair), "swapped": False}
    conf = data.get("confidence")
    if not isinstance(conf, int | float) or isinstance(conf, bool) or not math.isfinite(conf):
        return Verdict(value, None)
    return Verdict(value, min(max(float(conf), 0.0), 1.0))


def _chat(project: Project, queue: Queue, spec: JudgeSpec, candidates: Sequence[Candidate]) -> list[Verdict | None]:
    import httpx

    gateway = project.settings.gateway
    base = spec.upstream or gateway.upstream_url
    if not base:
        raise InvalidInput("chat judge: give upstream in [annotate.judges.NAME] or set gateway.upstream_url",
                           field="judges")  # fmt: skip
    url = f"{base.rstrip('/')}/chat/completions"
    key_env = spec.api_key_env or gateway.upstream_api_key_env
    headers = {"Authorization": f"Bearer {os.environ[key_env]}"} if key_env and os.environ.get(key_env) else {}
    rows = read_interactions(project, candidates)
    system = spec.prompt or _DEFAULT_PROMPT

    def ask(client: httpx.Client, pair: Candidate) -> Verdict | None:
        first, second = pair
        if first not in rows or (second is not None and second not in rows):
            return None
        user = _render(queue, rows[first], rows[second] if second else None)
        body = {"model": spec.model, "temperature": 0, "max_tokens": 256, "stream": False,
                "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]}  # fmt: skip
        try:
            reply = client.post(url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise UpstreamFailed(f"chat judge: {url} failed: {type(exc).__name__}: {exc}", field="judges") from None
        if reply.status_code >= 400:
            raise UpstreamFailed(f"chat judge: {url} answered {reply.status_code}: {reply.text[:300]}",
                                 field="judges")  # fmt: skip
        try:
            text = reply.json()["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError):
            return None
        return _parse_reply(queue, str(text), pair)

    with httpx.Client(timeout=gateway.upstream_timeout_seconds) as client, ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda pair: ask(client, pair), candidates))


def judge_candidates(
    project: Project, queue: Queue, name: str, candidates: Sequence[Candidate]
) -> list[Verdict | None]:
    """Return judge ``name``'s verdict on each candidate (None where it gives none), storing nothing."""
    spec = judge_spec(project, name)
    _check_fits(queue, name, spec)
    if not candidates:
        return []
    if spec.kind in ("reward-model", "verifier"):
        return _scored(project, queue, spec, candidates)
    if spec.kind == "pairwise":
        return _pairwise(project, queue, spec, candidates)
    return _chat(project, queue, spec, candidates)


# --- storing, calibrating, resolving -------------------------------------------------------------


def store_verdicts(
    cur: Any, queue: Queue, name: str, items: Sequence[dict[str, Any]], verdicts: Sequence[Verdict | None]
) -> dict[str, str]:
    """Insert the judge's labels of ``items`` (rows with id, interaction_id); return item id -> label id."""
    now, stored = utc_now(), {}
    for item, verdict in zip(items, verdicts, strict=True):
        if verdict is None:
            continue
        label = Label(id=new_id(), queue_id=queue.id, item_id=item["id"], interaction_id=item["interaction_id"],
                      annotator=f"judge:{name}", source="judge", value=verdict.value, confidence=verdict.confidence,
                      queue_version=queue.version, guidelines_version=queue.guidelines_version,
                      created_at=now)  # fmt: skip
        insert_label(cur, label)
        stored[item["id"]] = label.id
    return stored


def prelabel(
    project: Project, name: str, *, judges: Sequence[str] | None = None, limit: int = 10_000
) -> PrelabelResult:
    """Have each judge (default: the queue's) label up to ``limit`` items of queue ``name`` it has not labelled."""
    if not 1 <= limit <= MAX_PRELABEL:
        raise InvalidInput(f"limit: from 1 to {MAX_PRELABEL}", field="limit")
    queue = get_queue(project, name)
    labelled, failed = {}, {}
    for judge in _names(project, queue, judges):
        items = fetch_all(project.cursor(), """
            SELECT i.id, i.interaction_id, i.second_interaction_id FROM annotation_items i
            WHERE i.queue_id = ? AND i.gold IS NULL AND NOT EXISTS
                (SELECT 1 FROM labels l WHERE l.item_id = i.id AND l.annotator = ?)
            ORDER BY i.priority DESC, i.id LIMIT ?""", [queue.id, f"judge:{judge}", limit])  # fmt: skip
        verdicts = judge_candidates(project, queue, judge, [(i["interaction_id"], i["second_interaction_id"])
                                                            for i in items])  # fmt: skip
        cur = project.cursor()
        cur.begin()
        try:
            labelled[judge] = len(store_verdicts(cur, queue, judge, items, verdicts))
            cur.commit()
        except BaseException:
            cur.rollback()
            raise
        failed[judge] = len(items) - labelled[judge]
    return PrelabelResult(queue=queue.name, labelled=labelled, failed=failed)


def _judge_labels(project: Project, queue: Queue, where: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    return fetch_all(project.cursor(), f"""
        SELECT l.id, l.item_id, l.annotator, l.value, l.confidence, i.consensus, i.status, i.resolved_by
        FROM labels l JOIN annotation_items i ON i.id = l.item_id
        WHERE l.queue_id = ? AND l.source = 'judge' AND i.gold IS NULL AND {where}
        ORDER BY l.created_at, l.id""", [queue.id, *params], json=("value", "consensus"))  # fmt: skip


def _consensus_vote(queue: Queue, consensus: dict[str, Any]) -> Any:
    value = consensus.get("value")
    return tuple(value) if isinstance(value, list) else value


class PrelabelOutcome(PrelabelResult):
    """What the judges labelled, and how many items trusted judges then resolved alone."""

    resolved_by_judges: int = 0


def prelabel_and_resolve(
    project: Project,
    name: str,
    *,
    judges: Sequence[str] | None = None,
    limit: int = 10_000,
    resolve: bool = True,
    on_job: jobs.JobFn | None = None,
) -> PrelabelOutcome:
    """Pre-label queue ``name`` with its judges, then let trusted sure judges resolve items, as a job row.

    Raises InvalidInput for an unknown or unfitting judge before the job exists; ``on_job(id)`` is
    told the job's id as soon as it does (the server answers 202 with it).
    """
    if not 1 <= limit <= MAX_PRELABEL:
        raise InvalidInput(f"limit: from 1 to {MAX_PRELABEL}", field="limit")
    chosen = _names(project, get_queue(project, name), judges)
    config = {"queue": name, "judges": chosen, "limit": limit, "resolve": resolve}

    def work(job: jobs.JobHandle) -> PrelabelOutcome:
        done = prelabel(project, name, judges=chosen, limit=limit)
        job.log(f"labelled: {done.labelled}; could not label: {done.failed}")
        job.progress(0.9)
        resolved = resolve_by_judges(project, name) if resolve else 0
        job.log(f"resolved by trusted judges alone: {resolved}")
        return PrelabelOutcome(**done.model_dump(), resolved_by_judges=resolved)

    return jobs.run_as_job(project, "annotate.prelabel", config, work, on_job=on_job)


def calibrate(project: Project, name: str, *, threshold: float | None = None) -> dict[str, JudgeCalibration]:
    """Compare each judge of queue ``name`` with the human consensus; say which judges are trusted."""
    if threshold is None:
        threshold = project.settings.annotate.trust_threshold
    if not 0 <= threshold <= 1:
        raise InvalidInput("threshold: from 0 to 1", field="threshold")
    queue = get_queue(project, name)
    pairs: dict[str, list[tuple[Any, float | None, Any]]] = defaultdict(list)
    for judge in queue.judges:
        pairs[judge] = []
    rows = _judge_labels(project, queue, "i.resolved_by IN ('majority', 'dawid-skene')")
    for row in rows:
        judge = row["annotator"].removeprefix("judge:")
        pairs[judge].append((vote(queue.task, row["value"]), row["confidence"],
                             _consensus_vote(queue, row["consensus"])))  # fmt: skip
    sure = project.settings.annotate.sure
    out = {}
    for judge in sorted(pairs):
        result = calibration(pairs[judge])
        on_sure, trusted = trust(pairs[judge], threshold=threshold, sure=sure)
        out[judge] = JudgeCalibration(judge=judge, agreement=result.agreement, ece=result.ece, bins=result.bins,
                                      n=result.n, sure_agreement=on_sure, threshold=threshold,
                                      trusted=trusted)  # fmt: skip
    return out


def trust(pairs: Sequence[tuple[Any, float | None, Any]], *, threshold: float, sure: float) -> tuple[Estimate, bool]:
    """Return a judge's agreement where it is sure, and whether its lower bound reaches ``threshold``.

    ``pairs`` are (judge's vote, its confidence, the human consensus); a judge that states no
    confidence is judged on every item.
    """
    stated = any(confidence is not None for _, confidence, _ in pairs)
    sure_pairs = [p for p in pairs if p[1] is not None and p[1] >= sure] if stated else list(pairs)
    on_sure = calibration(sure_pairs).agreement
    return on_sure, on_sure.low is not None and on_sure.low >= threshold


def trusted_judges(project: Project, name: str) -> list[str]:
    """Return the judges of queue ``name`` trusted to label alone."""
    return [j for j, c in calibrate(project, name).items() if c.trusted]


def sure_votes(
    task: str, verdicts: dict[str, list[Verdict | None]], trusted: Sequence[str], sure: float, index: int
) -> tuple[str, Verdict] | None:
    """Return (judge, verdict) when a trusted judge is sure of candidate ``index`` and no trusted judge disagrees."""
    said = [(j, verdicts[j][index]) for j in trusted if j in verdicts and verdicts[j][index] is not None]
    votes = {repr(vote(task, v.value)) for _, v in said if v is not None}  # type: ignore[arg-type]
    if len(votes) != 1:
        return None
    confident = [(j, v) for j, v in said if v is not None and v.confidence is not None and v.confidence >= sure]
    if not confident:
        return None
    return max(confident, key=lambda jv: jv[1].confidence or 0.0)


def resolve_by_judges(project: Project, name: str) -> int:
    """Close open items a trusted judge is sure of (no trusted judge disagreeing); return how many."""
    queue = get_queue(project, name)
    trusted = trusted_judges(project, name)
    if not trusted:
        return 0
    sure = project.settings.annotate.sure
    with project.lease_lock:
        rows = _judge_labels(project, queue, """i.status = 'open' AND NOT EXISTS (SELECT 1 FROM annotation_leases s
            WHERE s.item_id = i.id AND s.state = 'active' AND s.expires_at > ?)""", [utc_now()])  # fmt: skip
        by_item: dict[str, dict[str, tuple[str, Verdict]]] = defaultdict(dict)
        for row in rows:
            judge = row["annotator"].removeprefix("judge:")
            if judge in trusted:
                by_item[row["item_id"]][judge] = (row["id"], Verdict(row["value"], row["confidence"]))
        cur = project.cursor()
        cur.begin()
        try:
            done = 0
            for item_id, said in by_item.items():
                verdicts: dict[str, list[Verdict | None]] = {j: [v] for j, (_, v) in said.items()}
                chosen = sure_votes(queue.task, verdicts, trusted, sure, 0)
                if chosen is None:
                    continue
                judge, verdict = chosen
                write_consensus(cur, queue, item_id, vote(queue.task, verdict.value), support=verdict.confidence or 0.0,
                                source="judge", resolved_by="judge", label_ids=[said[judge][0]])  # fmt: skip
                done += 1
            cur.commit()
        except BaseException:
            cur.rollback()
            raise
    return done
