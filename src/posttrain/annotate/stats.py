"""The quality of a queue's labels, read from the warehouse: counts, agreement, annotators and judges.

Agreement is computed per label field (``label_fields``): a rating is one numeric field (Krippendorff's
alpha at the interval and ordinal levels), accept, pairwise and single-choice classify are one
nominal field, a multi-choice classify queue has one yes/no field per category, and free text
(rewrite, comment) has none. Pairwise labels compare on the interaction chosen, never on the shown
position ("a"/"b" is randomised per lease); for agreement the chosen interaction is coded as the
item's first or second (the order stored at fill, the same for every annotator) or tie, so answers
pool across items into three values rather than one value per interaction. Gold items count only
for gold accuracy, not agreement.

An annotator's active time is the time spent on its submitted labels plus its skipped leases;
throughput is labels per hour of it. A judge is trusted when the lower bound of its agreement with
the human consensus, on the items where it was sure, reaches ``trust_threshold`` (``judges.trust``).
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from typing import Any

from pydantic import BaseModel, Field

from posttrain.annotate import agreement, judges
from posttrain.annotate.agreement import Calibration, Estimate, Level
from posttrain.annotate.queues import get_queue
from posttrain.annotate.records import Queue
from posttrain.annotate.tasks import TaskType, vote
from posttrain.clock import utc_now
from posttrain.errors import InvalidInput
from posttrain.project import Project
from posttrain.warehouse.rows import fetch_all

ONE_LABEL = "no item has two labels yet: agreement needs overlap 2 or more (queues create --overlap)"
FREE_TEXT = "free text: no agreement statistic"
MAX_BOOTSTRAP = 2000


class QueueCounts(BaseModel):
    """How much work a queue holds and has seen."""

    items: int
    done: int
    gold: int
    labels: int
    judge_labels: int
    skips: int
    expired_leases: int


class FieldAgreement(BaseModel):
    """Agreement on one label field among human annotators (items that are not gold)."""

    field: str
    alpha: dict[str, Estimate]
    fleiss: Estimate


class AnnotatorStats(BaseModel):
    """One annotator's volume, speed, agreement with the others and gold accuracy."""

    annotator: str
    name: str | None = Field(None, description="The name of the annotator's API key, when it has one.")
    labels: int
    skips: int
    median_seconds: float | None
    throughput_per_hour: float | None
    agreement: dict[str, Estimate]
    gold_accuracy: Estimate | None


class JudgeStats(BaseModel):
    """One judge against the human consensus: calibration, and whether it is trusted."""

    judge: str
    labels: int
    calibration: Calibration
    sure_agreement: Estimate = Field(description="Agreement where it was sure (confidence >= annotate.sure).")
    trusted: bool = Field(description="Its agreement where it was sure has a lower bound at the trust threshold.")


class QueueStats(BaseModel):
    """Everything about a queue's label quality."""

    queue: str
    task: TaskType
    counts: QueueCounts
    agreement: list[FieldAgreement]
    agreement_note: str | None
    annotators: list[AnnotatorStats]
    judges: list[JudgeStats]
    trust_threshold: float


def label_fields(task: TaskType, value: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Return the fields of a stored label that annotators agree or disagree on ({} for free text).

    rating -> {"rating": int}; accept -> {"accept": bool}; pairwise -> {"chosen": interaction id or
    "tie"}; classify -> {"category": name}, or with ``schema["multi"]`` one {"category:NAME": bool} per
    category of ``schema["categories"]``; rewrite and comment -> {}.
    """
    if task == "rating":
        return {"rating": value["rating"]}
    if task == "accept":
        return {"accept": value["accept"]}
    if task == "pairwise":
        return {"chosen": value.get("chosen") or "tie"}
    if task == "classify":
        chosen = list(value.get("categories") or [])
        if schema.get("multi"):
            return {f"category:{name}": name in chosen for name in schema.get("categories", [])}
        return {"category": chosen[0]} if chosen else {}
    return {}


def _levels(task: TaskType) -> list[Level]:
    return ["interval", "ordinal"] if task == "rating" else ["nominal"]


def _counts(project: Project, queue: Queue) -> QueueCounts:
    cur = project.cursor()
    items, done, gold = cur.execute(
        "SELECT count(*), count(*) FILTER (WHERE status = 'done'), count(*) FILTER (WHERE gold IS NOT NULL) "
        "FROM annotation_items WHERE queue_id = ?",
        [queue.id],
    ).fetchone()  # type: ignore[misc]
    human, judged = cur.execute(
        "SELECT count(*) FILTER (WHERE source = 'annotator'), count(*) FILTER (WHERE source = 'judge') "
        "FROM labels WHERE queue_id = ?",
        [queue.id],
    ).fetchone()  # type: ignore[misc]
    skips, expired = cur.execute(
        "SELECT count(*) FILTER (WHERE state = 'skipped'), "
        "count(*) FILTER (WHERE state = 'expired' OR state = 'active' AND expires_at <= ?) "
        "FROM annotation_leases WHERE queue_id = ?",
        [utc_now(), queue.id],
    ).fetchone()  # type: ignore[misc]
    return QueueCounts(items=items, done=done, gold=gold, labels=human, judge_labels=judged, skips=skips,
                       expired_leases=expired)  # fmt: skip


def _per_field(queue: Queue, labels: list[dict[str, Any]]) -> dict[str, list[tuple[str, str, Any]]]:
    """Return field -> (item, annotator, value) of the given labels."""
    schema = queue.label_schema()
    fields: dict[str, list[tuple[str, str, Any]]] = defaultdict(list)
    for label in labels:
        for field, value in label_fields(queue.task, label["value"], schema).items():
            if field == "chosen" and value != "tie":  # the item's stored order, never the order shown
                value = "first" if value == label["interaction_id"] else "second"
            fields[field].append((label["item_id"], label["annotator"], value))
    return fields


def _annotators(
    project: Project, queue: Queue, human: list[dict[str, Any]], fields: dict[str, list[tuple[str, str, Any]]],
    gold: dict[str, Any], bootstrap: int,
) -> list[AnnotatorStats]:  # fmt: skip
    skips = fetch_all(
        project.cursor(),
        "SELECT annotator, started_at, ended_at FROM annotation_leases WHERE queue_id = ? AND state = 'skipped'",
        [queue.id],
    )
    level: Level = "ordinal" if queue.task == "rating" else "nominal"  # ordinal: quadratic kappa
    per_field = {
        field: agreement.annotator_agreement(votes, level, bootstrap=bootstrap) for field, votes in fields.items()
    }
    gold_votes = [(x["item_id"], x["annotator"], vote(queue.task, x["value"])) for x in human if x["item_id"] in gold]
    accuracy = agreement.gold_accuracy(gold_votes, {item: vote(queue.task, answer) for item, answer in gold.items()})
    names = dict(project.cursor().execute("SELECT id, name FROM api_keys WHERE name IS NOT NULL").fetchall())
    out = []
    for annotator in sorted({x["annotator"] for x in human} | {x["annotator"] for x in skips}):
        mine = [x for x in human if x["annotator"] == annotator]
        seconds = [float(x["seconds"]) for x in mine if x["seconds"] is not None]
        skipped = [x for x in skips if x["annotator"] == annotator]
        skip_seconds = sum((x["ended_at"] - x["started_at"]).total_seconds() for x in skipped if x["ended_at"])
        active = sum(seconds) + skip_seconds
        out.append(
            AnnotatorStats(
                annotator=annotator,
                name=names.get(annotator),
                labels=len(mine),
                skips=len(skipped),
                median_seconds=statistics.median(seconds) if seconds else None,
                throughput_per_hour=len(mine) / (active / 3600) if active > 0 else None,
                agreement={field: by[annotator] for field, by in per_field.items() if annotator in by},
                gold_accuracy=accuracy.get(annotator),
            )
        )
    return out


def _judges(project: Project, queue: Queue, threshold: float) -> list[JudgeStats]:
    cur = project.cursor()
    truth = {
        row["id"]: row["consensus"]["value"]
        for row in fetch_all(
            cur,
            "SELECT id, consensus FROM annotation_items WHERE queue_id = ? AND gold IS NULL "
            "AND resolved_by IN ('majority', 'dawid-skene')",
            [queue.id],
            json=("consensus",),
        )  # fmt: skip
        if isinstance(row["consensus"], dict) and row["consensus"].get("value") is not None
    }
    judged = fetch_all(cur, "SELECT item_id, annotator, value, confidence FROM labels WHERE queue_id = ? "
                       "AND source = 'judge' ORDER BY created_at, id", [queue.id], json=("value",))  # fmt: skip
    by_judge: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for label in judged:
        by_judge[label["annotator"]].append(label)
    out = []
    for judge, labels in sorted(by_judge.items()):
        pairs = [
            (_hashable(vote(queue.task, x["value"])), x["confidence"], _hashable(truth[x["item_id"]]))
            for x in labels
            if x["item_id"] in truth
        ]
        cal = agreement.calibration(pairs)
        on_sure, trusted = judges.trust(pairs, threshold=threshold, sure=project.settings.annotate.sure)
        out.append(JudgeStats(judge=judge, labels=len(labels), calibration=cal, sure_agreement=on_sure,
                              trusted=trusted))  # fmt: skip
    return out


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def queue_stats(
    project: Project, name: str, *, trust_threshold: float | None = None, bootstrap: int = 1000
) -> QueueStats:
    """Return the label quality of queue ``name``: counts, agreement per field, annotators and judges.

    A judge is trusted when its agreement's lower bound reaches ``trust_threshold`` (default: the
    project's ``annotate.trust_threshold``).
    """
    if trust_threshold is None:
        trust_threshold = project.settings.annotate.trust_threshold
    if not 0 <= trust_threshold <= 1:
        raise InvalidInput("trust_threshold: a share from 0 to 1", field="trust_threshold")
    if not 0 <= bootstrap <= MAX_BOOTSTRAP:
        raise InvalidInput(f"bootstrap: 0 to {MAX_BOOTSTRAP} resamples", field="bootstrap")
    queue = get_queue(project, name)
    cur = project.cursor()
    gold = {
        row["id"]: row["gold"]
        for row in fetch_all(
            cur,
            "SELECT id, gold FROM annotation_items WHERE queue_id = ? AND gold IS NOT NULL",
            [queue.id],
            json=("gold",),
        )  # fmt: skip
    }
    human = fetch_all(cur, "SELECT item_id, interaction_id, annotator, value, seconds FROM labels WHERE queue_id = ? "
                      "AND source = 'annotator' ORDER BY created_at, id", [queue.id], json=("value",))  # fmt: skip
    fields = _per_field(queue, [x for x in human if x["item_id"] not in gold])
    levels = _levels(queue.task)
    field_agreement = [
        FieldAgreement(
            field=field,
            alpha={level: agreement.krippendorff_alpha(votes, level, bootstrap=bootstrap) for level in levels},
            fleiss=agreement.fleiss_kappa(votes, bootstrap=bootstrap),
        )
        for field, votes in sorted(fields.items())
    ]
    free_text = queue.task in ("rewrite", "comment")
    per_item = Counter(x["item_id"] for x in human if x["item_id"] not in gold)
    note = FREE_TEXT if free_text else None if any(n >= 2 for n in per_item.values()) else ONE_LABEL
    return QueueStats(
        queue=queue.name,
        task=queue.task,
        counts=_counts(project, queue),
        agreement=field_agreement,
        agreement_note=note,
        annotators=_annotators(project, queue, human, fields, gold, bootstrap),
        judges=_judges(project, queue, trust_threshold),
        trust_threshold=trust_threshold,
    )
