"""Annotation queues: create one, list them, pause, close or reopen one, revise its guidelines."""

from __future__ import annotations

from typing import Any

import orjson

from posttrain.annotate.records import Queue, QueueSummary
from posttrain.annotate.tasks import MAX_TEXT, QueueConfig, QueueState
from posttrain.clock import utc_now
from posttrain.errors import Conflict, InvalidInput, NotFound
from posttrain.ids import new_id
from posttrain.project import Project
from posttrain.warehouse.rows import fetch_all, fetch_one

_STATES: tuple[QueueState, ...] = ("open", "paused", "closed")


def _to_queue(data: dict[str, Any]) -> Queue:
    config = data.pop("config")
    return Queue(**{**config, **{k: v for k, v in data.items() if k not in ("task", "description", "guidelines")}},
                 task=data["task"], description=data["description"], guidelines=data["guidelines"])  # fmt: skip


def _config_json(config: QueueConfig) -> str:
    return orjson.dumps(config.model_dump(mode="json", exclude={"name", "task", "description", "guidelines"})).decode()


def create_queue(project: Project, config: QueueConfig, *, author: str | None = None) -> Queue:
    """Create a queue (open); raise Conflict if one of that name exists."""
    if project.cursor().execute("SELECT 1 FROM annotation_queues WHERE name = ?", [config.name]).fetchone():
        raise Conflict(
            f"queue {config.name!r} exists; run 'posttrain annotate queues show {config.name}'", field="name"
        )
    now = utc_now()
    project.cursor().execute(
        "INSERT INTO annotation_queues VALUES (?, ?, ?, ?, ?, ?, 1, 1, 'open', ?, ?, ?)",
        [new_id(), config.name, config.description, config.task, _config_json(config), config.guidelines, author,
         now, now],
    )  # fmt: skip
    return get_queue(project, config.name)


def get_queue(project: Project, name: str) -> Queue:
    """Return the queue ``name``; raise NotFound naming the fix."""
    data = fetch_one(project.cursor(), "SELECT * FROM annotation_queues WHERE name = ?", [name], json=("config",))
    if data is None:
        raise NotFound(f"no annotation queue {name[:64]!r}; run 'posttrain annotate queues list'", field="queue")
    return _to_queue(data)


def queue_by_id(project: Project, queue_id: str) -> Queue:
    """Return the queue with id ``queue_id``."""
    data = fetch_one(project.cursor(), "SELECT * FROM annotation_queues WHERE id = ?", [queue_id], json=("config",))
    if data is None:
        raise NotFound(f"no annotation queue with id {queue_id[:64]!r}", field="queue")
    return _to_queue(data)


_COUNTS = """
SELECT q.*,
    (SELECT count(*) FROM annotation_items i WHERE i.queue_id = q.id AND i.gold IS NULL) AS items,
    (SELECT count(*) FROM annotation_items i WHERE i.queue_id = q.id AND i.gold IS NULL AND i.status = 'done') AS done,
    (SELECT count(*) FROM annotation_items i WHERE i.queue_id = q.id AND i.gold IS NOT NULL) AS gold,
    (SELECT count(*) FROM labels l WHERE l.queue_id = q.id AND l.source = 'annotator') AS labels,
    (SELECT count(*) FROM annotation_leases e WHERE e.queue_id = q.id AND e.state = 'active' AND e.expires_at > ?)
        AS active_leases
FROM annotation_queues q"""


def list_queues(project: Project, *, state: QueueState | None = None) -> list[QueueSummary]:
    """Return every queue (of ``state`` if given) with its counts, newest first."""
    where, params = ("WHERE q.state = ?", [state]) if state else ("", [])
    rows = fetch_all(project.cursor(), f"{_COUNTS} {where} ORDER BY q.created_at DESC", [utc_now(), *params],
                     json=("config",))  # fmt: skip
    return [
        QueueSummary(**_to_queue({k: v for k, v in r.items() if k not in _COUNT_NAMES}).model_dump(),
                     **{k: r[k] for k in _COUNT_NAMES})
        for r in rows
    ]  # fmt: skip


_COUNT_NAMES = ("items", "done", "gold", "labels", "active_leases")


def summarise(project: Project, name: str) -> QueueSummary:
    """Return one queue with its counts."""
    queue = get_queue(project, name)
    row = fetch_one(project.cursor(), f"{_COUNTS} WHERE q.id = ?", [utc_now(), queue.id], json=("config",))
    assert row is not None
    return QueueSummary(**queue.model_dump(), **{k: row[k] for k in _COUNT_NAMES})


def set_state(project: Project, name: str, state: str) -> Queue:
    """Open, pause or close a queue; a paused or closed queue serves no items (labels of live leases still land)."""
    if state not in _STATES:
        raise InvalidInput(f"state {state[:20]!r}: choose one of {', '.join(_STATES)}", field="state")
    queue = get_queue(project, name)
    project.cursor().execute(
        "UPDATE annotation_queues SET state = ?, updated_at = ? WHERE id = ?", [state, utc_now(), queue.id]
    )
    return get_queue(project, name)


def update_guidelines(project: Project, name: str, text: str) -> Queue:
    """Replace a queue's guidelines; labels from now on record the new guidelines version."""
    if len(text) > MAX_TEXT:
        raise InvalidInput(f"guidelines: at most {MAX_TEXT} characters", field="guidelines")
    get_queue(project, name)
    project.cursor().execute(
        "UPDATE annotation_queues SET guidelines = ?, guidelines_version = guidelines_version + 1, updated_at = ? "
        "WHERE name = ?",
        [text, utc_now(), name],
    )
    return get_queue(project, name)
