"""An annotator's work: lease the next item, submit its label or skip it; leases that expire return items.

``next_item`` serves the highest-priority item the annotator has never been served (labelled,
skipped or let expire), that still needs labels: fewer than the queue's ``overlap`` labels plus
live leases. With probability ``gold_share`` it serves a gold item the annotator has not seen
instead. The choice and the lease are made under the project's lease lock in one transaction,
so two annotators pulling at once never hold the same lease of an item that needs one label.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

import orjson

from posttrain.annotate.queues import get_queue, queue_by_id
from posttrain.annotate.records import Assignment, ItemView, Label, Progress, Queue
from posttrain.annotate.resolve import resolve_item
from posttrain.annotate.tasks import check_label, place_choice
from posttrain.clock import utc_now
from posttrain.errors import Conflict, InvalidInput, NotFound
from posttrain.ids import new_id
from posttrain.project import Project
from posttrain.warehouse.rows import fetch_all, fetch_one

MAX_SECONDS = 86_400.0
MAX_HELD = 20  # live leases one annotator may hold in a queue: one key cannot lock a queue's items away

_NEEDS_LABELS = """
    i.queue_id = $queue AND i.status = 'open' AND i.gold IS NULL
    AND NOT EXISTS (SELECT 1 FROM annotation_leases s WHERE s.item_id = i.id AND s.annotator = $who)
    AND (SELECT count(*) FROM annotation_leases s WHERE s.item_id = i.id
         AND (s.state = 'submitted' OR s.state = 'active' AND s.expires_at > $now)) < $overlap"""

_UNSEEN_GOLD = """
    i.queue_id = $queue AND i.gold IS NOT NULL
    AND NOT EXISTS (SELECT 1 FROM annotation_leases s WHERE s.item_id = i.id AND s.annotator = $who)"""


def expire_leases(project: Project, *, now: datetime | None = None) -> int:
    """Mark leases past their time expired, returning their items to the pool; return how many."""
    rows = (
        project.cursor()
        .execute(
            "UPDATE annotation_leases SET state = 'expired', ended_at = expires_at "
            "WHERE state = 'active' AND expires_at <= ? RETURNING id",
            [now or utc_now()],
        )
        .fetchall()
    )
    return len(rows)


def _pick(project: Project, queue: Queue, annotator: str, now: datetime) -> dict[str, Any] | None:
    params = {"queue": queue.id, "who": annotator, "now": now, "overlap": queue.overlap}
    cur = project.cursor()
    normal = fetch_one(
        cur, f"SELECT i.* FROM annotation_items i WHERE {_NEEDS_LABELS} ORDER BY i.priority DESC, i.id LIMIT 1", params
    )
    if normal is None:
        return None  # gold alone teaches nothing: the queue is done for this annotator
    if queue.gold_share > 0 and random.random() < queue.gold_share:
        gold_params = {k: params[k] for k in ("queue", "who")}
        gold = fetch_one(cur, f"SELECT i.* FROM annotation_items i WHERE {_UNSEEN_GOLD} ORDER BY random() LIMIT 1",
                         gold_params)  # fmt: skip
        if gold is not None:
            return gold
    return normal


def _progress(project: Project, queue: Queue, annotator: str, now: datetime, *, leased: int = 0) -> Progress:
    """Return what the annotator labelled and what is left for them, the ``leased`` item(s) in hand included."""
    cur = project.cursor()
    done = cur.execute(
        "SELECT count(*) FROM labels WHERE queue_id = ? AND annotator = ?", [queue.id, annotator]
    ).fetchone()[0]  # type: ignore[index]
    params = {"queue": queue.id, "who": annotator, "now": now, "overlap": queue.overlap}
    left = cur.execute(f"SELECT count(*) FROM annotation_items i WHERE {_NEEDS_LABELS}", params).fetchone()[0]  # type: ignore[index]
    return Progress(labelled_by_you=done, remaining=left + leased)


def _reply(message: Any, text: str | None) -> str | None:
    if isinstance(message, dict) and isinstance(message.get("content"), str) and not text:
        return str(message["content"])
    return text


def view_item(project: Project, item: dict[str, Any], *, swapped: bool) -> ItemView:
    """Return an item as shown: the conversation, and for a pair both answers in the shown order."""
    ids = [item["interaction_id"], item["second_interaction_id"]]
    rows = fetch_all(project.cursor(), "SELECT id, messages, response, metadata, cohort FROM interactions "
                     "WHERE id IN (?, ?)", [ids[0], ids[1] or ids[0]], json=("messages", "metadata"))  # fmt: skip
    by_id = {r["id"]: r for r in rows}
    first = by_id[ids[0]]
    answers = [_reply(by_id[i]["metadata"].get("response_message"), by_id[i]["response"]) for i in ids if i]
    if swapped:
        answers.reverse()
    return ItemView(
        item_id=item["id"],
        interaction_id=ids[0],
        second_interaction_id=ids[1],
        prompt=first["messages"],
        response=answers[0],
        answers=answers if ids[1] else [],
        cohort=first["cohort"],
    )


def _check_held(project: Project, queue: Queue, annotator: str) -> None:
    row = (
        project.cursor()
        .execute(
            "SELECT count(*) FROM annotation_leases WHERE queue_id = ? AND annotator = ? AND state = 'active'",
            [queue.id, annotator],
        )
        .fetchone()
    )
    if row is not None and row[0] >= MAX_HELD:
        raise Conflict(f"you hold {row[0]} items of queue {queue.name!r} already; submit or skip them first",
                       field="queue")  # fmt: skip


def next_item(project: Project, name: str, annotator: str) -> Assignment | None:
    """Lease the next item of queue ``name`` to ``annotator``; None when nothing is left for them."""
    queue = get_queue(project, name)
    if queue.state != "open":
        raise Conflict(f"queue {name!r} is {queue.state}; an admin reopens it with 'posttrain annotate queues "
                       f"open {name}'", field="queue")  # fmt: skip
    with project.lease_lock:
        now = utc_now()
        expire_leases(project, now=now)
        _check_held(project, queue, annotator)
        item = _pick(project, queue, annotator, now)
        if item is None:
            return None
        swapped = queue.task == "pairwise" and random.random() < 0.5
        lease_id, expires = new_id(), now + timedelta(seconds=queue.lease_seconds)
        project.cursor().execute(
            "INSERT INTO annotation_leases VALUES (?, ?, ?, ?, ?, ?, ?, 'active', NULL, NULL)",
            [lease_id, item["id"], queue.id, annotator, swapped, now, expires],
        )
    return Assignment(
        lease_id=lease_id,
        queue=queue.name,
        task=queue.task,
        started_at=now,
        expires_at=expires,
        item=view_item(project, item, swapped=swapped),
        label_schema=queue.label_schema(),
        guidelines_version=queue.guidelines_version,
        progress=_progress(project, queue, annotator, now, leased=1),
    )


def _read_lease(project: Project, lease_id: str, annotator: str, now: datetime) -> dict[str, Any] | None:
    """Return the annotator's lease with its state as of ``now`` (active past its time reads expired)."""
    lease = fetch_one(project.cursor(), "SELECT * FROM annotation_leases WHERE id = ?", [lease_id])
    if lease is None or lease["annotator"] != annotator:  # another's lease is not theirs to see
        return None
    if lease["state"] == "active" and lease["expires_at"] <= now:
        lease["state"] = "expired"
    return lease


def lease_expired(project: Project, lease_id: str, annotator: str) -> bool:
    """Say whether ``lease_id`` is the annotator's lease and its time ran out."""
    lease = _read_lease(project, lease_id, annotator, utc_now())
    return lease is not None and lease["state"] == "expired"


def _lease(project: Project, lease_id: str, annotator: str, now: datetime) -> dict[str, Any]:
    lease = _read_lease(project, lease_id, annotator, now)
    if lease is None:
        raise NotFound(f"no lease {lease_id[:64]!r} of yours; get an item with 'posttrain annotate next'",
                       field="lease_id")  # fmt: skip
    if lease["state"] != "active":
        raise Conflict(f"lease {lease_id} is {lease['state']}; get the next item", field="lease_id")
    return lease


def _seconds(seconds: float | None, lease: dict[str, Any], now: datetime) -> float:
    if seconds is None:
        return (now - lease["started_at"]).total_seconds()
    if not 0 <= seconds <= MAX_SECONDS:
        raise InvalidInput(f"seconds: from 0 to {MAX_SECONDS:.0f}", field="seconds")
    return float(seconds)


def submit(project: Project, lease_id: str, annotator: str, label: Any, *, seconds: float | None = None) -> Label:
    """Store an annotator's label for a leased item; resolve the item once it has enough labels."""
    with project.lease_lock:
        now = utc_now()
        lease = _lease(project, lease_id, annotator, now)
        queue = queue_by_id(project, lease["queue_id"])
        value = check_label(queue, label)
        item = fetch_one(project.cursor(), "SELECT * FROM annotation_items WHERE id = ?", [lease["item_id"]])
        assert item is not None
        if queue.task == "pairwise":
            first, second = item["interaction_id"], item["second_interaction_id"]
            value = place_choice(value, (second, first) if lease["swapped"] else (first, second))
            value["swapped"] = lease["swapped"]
        record = Label(id=new_id(), queue_id=queue.id, item_id=item["id"], lease_id=lease_id,
                       interaction_id=item["interaction_id"], annotator=annotator, source="annotator", value=value,
                       seconds=_seconds(seconds, lease, now), queue_version=queue.version,
                       guidelines_version=queue.guidelines_version, created_at=now)  # fmt: skip
        cur = project.cursor()
        cur.begin()
        try:
            insert_label(cur, record)
            cur.execute("UPDATE annotation_leases SET state = 'submitted', ended_at = ? WHERE id = ?", [now, lease_id])
            if item["gold"] is None:
                resolve_item(cur, queue, item["id"])
            cur.commit()
        except BaseException:
            cur.rollback()
            raise
    return record


def insert_label(cur: Any, label: Label) -> None:
    """Insert one label row."""
    cur.execute(
        "INSERT INTO labels VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [label.id, label.queue_id, label.item_id, label.lease_id, label.interaction_id, label.annotator,
         label.source, orjson.dumps(label.value).decode(), label.confidence, label.seconds, label.queue_version,
         label.guidelines_version, label.created_at],
    )  # fmt: skip


def skip(project: Project, lease_id: str, annotator: str, *, reason: str | None = None) -> None:
    """Give a leased item back unlabelled (it is not served to this annotator again); the skip is recorded."""
    if reason is not None and len(reason) > 500:
        raise InvalidInput("reason: at most 500 characters", field="reason")
    with project.lease_lock:
        now = utc_now()
        _lease(project, lease_id, annotator, now)
        project.cursor().execute(
            "UPDATE annotation_leases SET state = 'skipped', ended_at = ?, reason = ? WHERE id = ?",
            [now, reason, lease_id],
        )
