"""From labels to one consensus label per item, written as the feedback dataset builders read.

An item resolves when it has ``overlap`` human labels: by majority (the default) or Dawid–Skene
over the whole queue (annotators weighted by their estimated reliability). The consensus becomes
one feedback row (``source`` annotator, or judge when a trusted judge resolved it alone):

    rating -> rating      accept -> thumb        rewrite -> edit (the first rewrite)
    pairwise -> choice on the rejected answer, its value the chosen one (a tie writes none)
    classify -> flag when a flag category wins    comment -> comment

The feedback's id is ``label:<item id>``, so resolving an item again replaces its feedback rather
than adding a second verdict. Its metadata names the queue, the item and the labels behind it: the
lineage from a dataset row (whose sources list feedback ids) back to who labelled it.
"""

from __future__ import annotations

from typing import Any

import orjson

from posttrain.annotate import consensus
from posttrain.annotate.records import Queue
from posttrain.annotate.tasks import vote
from posttrain.clock import utc_now

_NEEDS = "SELECT count(*) FROM labels WHERE item_id = ? AND source = 'annotator'"


def _labels(cur: Any, where: str, params: list[Any]) -> list[dict[str, Any]]:
    result = cur.execute(
        f"SELECT id, item_id, annotator, value, created_at FROM labels WHERE source = 'annotator' AND {where} "
        "ORDER BY created_at, id",
        params,
    )
    return [
        {"id": r[0], "item_id": r[1], "annotator": r[2], "value": orjson.loads(r[3]), "created_at": r[4]}
        for r in result.fetchall()
    ]


def _decide(queue: Queue, item_id: str, labels: list[dict[str, Any]], cur: Any) -> tuple[Any, float]:
    """Return the consensus vote of an item's labels and its support."""
    if queue.task in ("rewrite", "comment"):
        return labels[0]["value"]["text"], 1.0
    if queue.task == "classify" and queue.multi:
        chosen = []
        for category in queue.categories:
            votes = [(item_id, x["annotator"], category in x["value"]["categories"]) for x in labels]
            if consensus.majority(votes)[item_id].value:
                chosen.append(category)
        return tuple(chosen), 1.0
    if queue.consensus == "dawid-skene":
        everyone = _labels(cur, "queue_id = ?", [queue.id])
        votes = [(x["item_id"], x["annotator"], vote(queue.task, x["value"])) for x in everyone]
        resolved = consensus.dawid_skene(votes).items[item_id]
    else:
        votes = [(item_id, x["annotator"], vote(queue.task, x["value"])) for x in labels]
        resolved = consensus.majority(votes)[item_id]
    return resolved.value, resolved.support


def resolve_item(cur: Any, queue: Queue, item_id: str) -> bool:
    """Resolve an item that has enough labels (inside the caller's transaction); return whether it did."""
    if cur.execute(_NEEDS, [item_id]).fetchone()[0] < queue.overlap:
        return False
    labels = _labels(cur, "item_id = ?", [item_id])
    value, support = _decide(queue, item_id, labels, cur)
    write_consensus(cur, queue, item_id, value, support=support, source="annotator",
                    resolved_by=queue.consensus, label_ids=[x["id"] for x in labels])  # fmt: skip
    return True


def _feedback(queue: Queue, item: tuple[str, str | None], value: Any) -> dict[str, Any] | None:
    """Return the feedback fields a consensus writes, or None when it writes none."""
    first, second = item
    task = queue.task
    if value is None:
        return None
    if task == "rating":
        return {"interaction_id": first, "kind": "rating", "value": value, "score": float(value)}
    if task == "accept":
        return {"interaction_id": first, "kind": "thumb", "value": 1 if value else -1, "score": 1.0 if value else -1.0}
    if task in ("rewrite", "comment"):
        return {"interaction_id": first, "kind": "edit" if task == "rewrite" else "comment", "text": value}
    if task == "pairwise":
        if value == "tie" or value not in (first, second):
            return None
        rejected = second if value == first else first
        return {"interaction_id": rejected, "kind": "choice", "value": value}
    flagged = [c for c in value if c in queue.flag_categories]
    return {"interaction_id": first, "kind": "flag", "value": ",".join(flagged)} if flagged else None


def write_consensus(
    cur: Any,
    queue: Queue,
    item_id: str,
    value: Any,
    *,
    support: float,
    source: str,
    resolved_by: str,
    label_ids: list[str],
) -> str | None:
    """Mark an item done with its consensus and (re)write its feedback; return the feedback id or None."""
    first, second = cur.execute(
        "SELECT interaction_id, second_interaction_id FROM annotation_items WHERE id = ?", [item_id]
    ).fetchone()
    now, feedback_id = utc_now(), f"label:{item_id}"
    cur.execute("DELETE FROM feedback WHERE id = ?", [feedback_id])
    fields = _feedback(queue, (first, second), value)
    if fields is not None:
        metadata = {"queue": queue.name, "item": item_id, "labels": label_ids, "support": round(support, 4),
                    "resolved_by": resolved_by}  # fmt: skip
        cur.execute(
            "INSERT INTO feedback (id, interaction_id, timestamp, received_at, source, kind, value, score, text, "
            "author, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [feedback_id, fields["interaction_id"], now, now, source, fields["kind"],
             None if fields.get("value") is None else orjson.dumps(fields["value"]).decode(), fields.get("score"),
             fields.get("text"), f"queue:{queue.name}", orjson.dumps(metadata).decode()],
        )  # fmt: skip
    stored = {"value": list(value) if isinstance(value, tuple) else value, "support": round(support, 4)}
    cur.execute(
        "UPDATE annotation_items SET status = 'done', consensus = ?, resolved_by = ?, feedback_id = ?, "
        "resolved_at = ? WHERE id = ?",
        [orjson.dumps(stored).decode(), resolved_by, feedback_id if fields else None, now, item_id],
    )
    return feedback_id if fields else None


def resolve_queue(project: Any, queue: Queue) -> int:
    """Resolve again every item of a queue that has enough labels (after a change of consensus method)."""
    cur = project.cursor()
    items = [r[0] for r in cur.execute(
        "SELECT id FROM annotation_items WHERE queue_id = ? AND gold IS NULL AND coalesce(resolved_by, '') <> 'judge'",
        [queue.id]).fetchall()]  # fmt: skip
    cur.begin()
    try:
        done = sum(resolve_item(cur, queue, item) for item in items)
        cur.commit()
    except BaseException:
        cur.rollback()
        raise
    return done
