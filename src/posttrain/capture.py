"""Capture: validate events, commit them durably and idempotently; bulk import and export.

Every ingest path (HTTP, SDK through HTTP, ``capture import``, direct library calls) goes
through ``validate_events`` and ``commit``: a row is acknowledged only after the transaction
holding it has committed, and an id already stored is reported as ``duplicate``, never stored twice.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import duckdb
import orjson
import pyarrow as pa
from pydantic import BaseModel, ValidationError

from posttrain.clock import utc_now
from posttrain.errors import InvalidInput, NotFound, Overloaded, PayloadTooLarge, Unavailable
from posttrain.ids import new_id
from posttrain.keys import Caller, feedback_source_error
from posttrain.project import Project
from posttrain.records import CaptureKind as Kind
from posttrain.records import EventResult, ExportReport, Feedback, ImportReport, Interaction
from posttrain.settings import CaptureSettings
from posttrain.validation import error_field, error_message

Row = dict[str, Any]
_MODELS: dict[str, type[BaseModel]] = {"interactions": Interaction, "feedback": Feedback}

_JSON = pa.string()
_TS = pa.timestamp("us")
SCHEMAS: dict[str, pa.Schema] = {
    "interactions": pa.schema(
        [
            ("id", pa.string()),
            ("timestamp", _TS),
            ("received_at", _TS),
            ("user_id", pa.string()),
            ("session_id", pa.string()),
            ("cohort", pa.string()),
            ("messages", _JSON),
            ("response", pa.string()),
            ("model", pa.string()),
            ("experiment", pa.string()),
            ("variant", pa.string()),
            ("assignment_prob", pa.float64()),
            ("latency_ms", pa.float64()),
            ("prompt_tokens", pa.int64()),
            ("completion_tokens", pa.int64()),
            ("cost", pa.float64()),
            ("tags", pa.list_(pa.string())),
            ("metadata", _JSON),
            ("consent", _JSON),
            ("media", _JSON),
            ("source", pa.string()),
        ]
    ),
    "feedback": pa.schema(
        [
            ("id", pa.string()),
            ("interaction_id", pa.string()),
            ("timestamp", _TS),
            ("received_at", _TS),
            ("source", pa.string()),
            ("kind", pa.string()),
            ("value", _JSON),
            ("score", pa.float64()),
            ("text", pa.string()),
            ("author", pa.string()),
            ("metadata", _JSON),
        ]
    ),
}


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _interaction_row(ev: Interaction, now: datetime) -> Row:
    row = ev.__dict__.copy()
    row["id"] = ev.id or new_id()
    row["timestamp"] = ev.timestamp or now
    row["received_at"] = now
    row["messages"] = _dumps(ev.messages)
    row["metadata"] = _dumps(ev.metadata)
    row["consent"] = _dumps(ev.consent)
    row["media"] = _dumps([m.model_dump(exclude_none=True) for m in ev.media])
    row["source"] = "capture"
    return row


def _feedback_row(ev: Feedback, now: datetime) -> Row:
    row = ev.__dict__.copy()
    row["id"] = ev.id or new_id()
    row["timestamp"] = ev.timestamp or now
    row["received_at"] = now
    row["value"] = None if ev.value is None else _dumps(ev.value)
    row["score"] = ev.score
    row["metadata"] = _dumps(ev.metadata)
    return row


_ROW_BUILDERS: dict[str, Callable[[Any, datetime], Row]] = {
    "interactions": _interaction_row,
    "feedback": _feedback_row,
}


def _error_result(raw: Any, exc: ValidationError) -> EventResult:
    err = exc.errors(include_url=False)[0]
    field, message = error_field(err), error_message(err)
    if not field and ": " in message:  # checks across fields say which field they mean
        field, message = message.split(": ", 1)
    event_id = raw.get("id") if isinstance(raw, dict) and isinstance(raw.get("id"), str) else None
    return EventResult(id=event_id, status="error", error=f"{field}: {message}", field=field or None)


def _as_sent_by(raw: Any, row: Row, caller: Caller) -> EventResult | None:
    """Refuse feedback from a source the caller's role may not claim; make the caller its author."""
    if (error := feedback_source_error(caller.role, row["source"])) is not None:
        sent_id = row["id"] if isinstance(raw, dict) and raw.get("id") else None
        return EventResult(id=sent_id, status="error", error=f"source: {error}", field="source")
    row["author"] = caller.key_id
    return None


def validate_events(
    kind: Kind,
    events: Sequence[Any],
    limits: CaptureSettings,
    *,
    check_size: bool = True,
    caller: Caller | None = None,
) -> tuple[list[EventResult | None], list[tuple[int, Row]]]:
    """Validate raw events; return per-event errors (None where valid) and the valid rows.

    With ``caller`` (every HTTP request), feedback must come from a source the caller's role may
    claim (``keys.FEEDBACK_SOURCES``) and its ``author`` is the caller's key id, whatever was sent.
    """
    if len(events) > limits.max_batch_events:
        raise PayloadTooLarge(
            f"{len(events)} events in one request; the limit is {limits.max_batch_events} (capture.max_batch_events)",
            field=kind,
        )
    model, build, now = _MODELS[kind], _ROW_BUILDERS[kind], utc_now()
    results: list[EventResult | None] = [None] * len(events)
    rows: list[tuple[int, Row]] = []
    for i, raw in enumerate(events):
        try:
            row = build(model.model_validate(raw), now)
        except ValidationError as exc:
            results[i] = _error_result(raw, exc)
            continue
        if caller is not None and kind == "feedback" and (refused := _as_sent_by(raw, row, caller)) is not None:
            results[i] = refused
            continue
        if check_size and (size := _row_size(row)) > limits.max_event_bytes:
            results[i] = EventResult(
                id=row["id"] if isinstance(raw, dict) and raw.get("id") else None,
                status="error",
                field="event",
                error=f"event is {size} bytes; the limit is {limits.max_event_bytes} (capture.max_event_bytes)",
            )
            continue
        rows.append((i, row))
    return results, rows


def _row_size(row: Row) -> int:
    """Return the size of an event as stored: its text and JSON columns (cheaper than re-encoding it)."""
    text = sum(len(v) for v in row.values() if isinstance(v, str))
    return text + sum(len(t) for t in row.get("tags") or ()) + 8 * len(row)


def _insert(cur: duckdb.DuckDBPyConnection, table: str, rows: list[Row], *, fast: bool) -> set[str]:
    source = f"_capture_{table}"
    if fast:  # the primary key refuses an id already stored; the caller then takes the slow path
        cur.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {source}")
        return {row["id"] for row in rows}
    created = cur.execute(f"INSERT OR IGNORE INTO {table} BY NAME SELECT * FROM {source} RETURNING id").fetchall()
    return {r[0] for r in created}


def _store(cur: duckdb.DuckDBPyConnection, by_table: dict[str, list[Row]], *, fast: bool) -> dict[str, set[str]]:
    tables = [t for t, rows in by_table.items() if rows]
    for table in tables:  # outside the transaction: an aborted one refuses even unregister
        cur.register(f"_capture_{table}", pa.Table.from_pylist(by_table[table], schema=SCHEMAS[table]))
    try:
        cur.begin()
        try:
            created = {t: _insert(cur, t, by_table[t], fast=fast) for t in tables}
            cur.commit()
        except BaseException:
            cur.rollback()
            raise
    finally:
        for table in tables:
            cur.unregister(f"_capture_{table}")
    return created


def commit(cur: Any, submissions: Sequence[tuple[str, list[Row]]]) -> list[list[str]]:
    """Store several submissions in one transaction; return 'created'/'duplicate' per row.

    ``cur`` is a DuckDB cursor, or a PostgreSQL warehouse's cursor or psycopg connection.

    New ids take a plain INSERT, whose cost stays flat as the table grows; a group holding an id
    already stored is rolled back and redone with ``INSERT OR IGNORE … RETURNING`` (resends are rare).
    """
    by_table: dict[str, dict[str, Row]] = {}
    for table, rows in submissions:
        unique = by_table.setdefault(table, {})
        for row in rows:
            unique.setdefault(row["id"], row)  # the first of several rows with one id wins
    firsts = {table: list(unique.values()) for table, unique in by_table.items()}
    if not isinstance(cur, duckdb.DuckDBPyConnection):  # a PostgreSQL warehouse (many servers)
        from posttrain.warehouse import postgres

        columns = {t: SCHEMAS[t].names for t in firsts}
        if hasattr(cur, "borrow"):  # a PgCursor: its transaction's connection, or one from the pool
            with cur.borrow() as con:
                created = postgres.store_rows(con, firsts, columns)
        else:
            created = postgres.store_rows(cur, firsts, columns)
    else:
        try:
            created = _store(cur, firsts, fast=True)
        except duckdb.ConstraintException:
            created = _store(cur, firsts, fast=False)
    claimed: set[tuple[str, str]] = set()
    statuses = []
    for table, rows in submissions:
        out = []
        for row in rows:
            key = (table, row["id"])
            fresh = row["id"] in created.get(table, ()) and key not in claimed
            claimed.add(key)
            out.append("created" if fresh else "duplicate")
        statuses.append(out)
    return statuses


def result_dicts(
    results: list[EventResult | None], rows: list[tuple[int, Row]], statuses: list[str]
) -> list[dict[str, Any]]:
    """Return the per-event results as plain dicts, valid events filled with their stored status."""
    out: list[dict[str, Any]] = [r.model_dump() if r is not None else {} for r in results]
    for (i, row), status in zip(rows, statuses, strict=True):
        out[i] = {"id": row["id"], "status": status, "error": None, "field": None}
    return out


def merge_results(
    results: list[EventResult | None], rows: list[tuple[int, Row]], statuses: list[str]
) -> list[EventResult]:
    """Return one EventResult per event, in order."""
    return [EventResult.model_construct(**d) for d in result_dicts(results, rows, statuses)]


def capture(project: Project, kind: Kind, events: Sequence[Any]) -> list[EventResult]:
    """Validate and store events directly (no server); return one result per event, in order."""
    results, rows = validate_events(kind, events, project.settings.capture)
    statuses = commit(project.cursor(), [(kind, [r for _, r in rows])])[0]
    return merge_results(results, rows, statuses)


class Ingestor:
    """The server's single writer: groups concurrent requests into one transaction (group commit).

    The backlog of events waiting to commit is bounded; past the bound ``submit`` raises
    Overloaded, which the server answers with 429 and Retry-After.
    """

    def __init__(self, project: Project, limits: CaptureSettings) -> None:
        self._project = project
        self._limits = limits
        self._queue: deque[tuple[str, list[Row], Future[list[str]]]] = deque()
        self._cond = threading.Condition()
        self._pending = 0
        self._in_flight: dict[str, Future[list[str]]] = {}  # interaction id -> its commit, until it lands
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="posttrain-ingest", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Return how many events wait to be committed."""
        return self._pending

    def submit(self, table: str, rows: list[Row]) -> Future[list[str]]:
        """Queue rows for the next commit; the future resolves once they are durable."""
        future: Future[list[str]] = Future()
        if not rows:
            future.set_result([])
            return future
        with self._cond:
            if self._closed:
                raise Unavailable("the server is shutting down; retry against the new one")
            bound = self._limits.max_backlog_events
            if self._pending and self._pending + len(rows) > bound:
                raise Overloaded(
                    f"ingest backlog is full ({self._pending} events waiting, bound {bound}); "
                    "retry after the Retry-After delay",
                    retry_after=self._limits.retry_after_seconds,
                )
            self._queue.append((table, rows, future))
            self._pending += len(rows)
            if table == "interactions":
                self._in_flight.update((row["id"], future) for row in rows if row.get("id"))
            self._cond.notify()
        return future

    def wait_for(self, interaction_id: str, timeout: float) -> bool:
        """Wait until a queued interaction is committed; False when none with that id is queued.

        So a client may read back what it was just answered (read-your-writes) while logging
        stays off the response path.
        """
        with self._cond:
            future = self._in_flight.get(interaction_id)
        if future is None:
            return False
        try:
            future.result(timeout)
        except Exception:  # its commit failed or is slow: the read answers with what is stored
            return False
        return True

    def _next_group(self) -> list[tuple[str, list[Row], Future[list[str]]]]:
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            group = list(self._queue)
            self._queue.clear()
            return group

    def _run(self) -> None:
        cur = self._project.cursor()
        while group := self._next_group():
            try:
                statuses = commit(cur, [(t, rows) for t, rows, _ in group])
            except duckdb.Error as exc:
                self._settle(group, Unavailable(f"storage failed, nothing was stored; retry: {exc}"))
            except Exception as exc:  # fail these requests (500) rather than end the writer and hang all
                self._settle(group, exc)
            else:
                self._settle(group, statuses)

    def _settle(self, group: list[tuple[str, list[Row], Future[list[str]]]], outcome: Any) -> None:
        with self._cond:
            self._pending -= sum(len(rows) for _, rows, _ in group)
            for table, rows, _ in group:
                if table == "interactions":
                    for row in rows:
                        self._in_flight.pop(row.get("id"), None)  # type: ignore[arg-type]
        for i, (_, _, future) in enumerate(group):
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome[i])

    def close(self) -> None:
        """Commit what is queued, then stop the writer thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()


# --- bulk import and export --------------------------------------------------------------

_IMPORT_COLUMNS = {
    "interactions": {
        "id": "VARCHAR",
        "timestamp": "VARCHAR",
        "user_id": "VARCHAR",
        "session_id": "VARCHAR",
        "cohort": "VARCHAR",
        "messages": "JSON",
        "response": "VARCHAR",
        "model": "VARCHAR",
        "experiment": "VARCHAR",
        "variant": "VARCHAR",
        "assignment_prob": "DOUBLE",
        "latency_ms": "DOUBLE",
        "prompt_tokens": "BIGINT",
        "completion_tokens": "BIGINT",
        "cost": "DOUBLE",
        "tags": "VARCHAR[]",
        "metadata": "JSON",
        "consent": "JSON",
        "media": "JSON",
    },
    "feedback": {
        "id": "VARCHAR",
        "interaction_id": "VARCHAR",
        "timestamp": "VARCHAR",
        "source": "VARCHAR",
        "kind": "VARCHAR",
        "value": "JSON",
        "text": "VARCHAR",
        "author": "VARCHAR",
        "metadata": "JSON",
    },
}

# Records without an id get one derived from their content, so importing a file twice adds nothing.
# OpenAI-style chat logs carry the response as the last assistant message: it is split off, as
# openai_to_record does: its text is the response; one with more (tool calls, parts) is also kept
# whole in metadata.response_message.
_IMPORT_SELECT = {
    "interactions": """
        WITH src AS (
            SELECT *, response IS NULL AND json_type(messages) = 'ARRAY'
                      AND messages->>'$[#-1].role' = 'assistant' AS _openai,
                   coalesce(json_type(messages, '$[#-1].content'), 'NULL') AS _content_type,
                   len(list_filter(json_keys(messages, '$[#-1]'), lambda k: k NOT IN ('role', 'content'))) > 0
                       OR _content_type NOT IN ('VARCHAR', 'NULL') AS _whole
            FROM {reader}
        ), norm AS (
            SELECT * EXCLUDE (messages, response, metadata, _openai, _content_type, _whole),
                CASE WHEN _openai THEN to_json(json_extract(messages, '$[*]')[:-2])
                     ELSE messages END AS messages,
                CASE WHEN NOT _openai THEN response
                     WHEN _content_type = 'ARRAY' THEN array_to_string(
                         json_extract_string(messages, '$[#-1].content[*].text'), chr(10))
                     ELSE messages->>'$[#-1].content' END AS response,
                -- spliced as text: json_merge_patch would drop the message's null members
                CASE WHEN NOT (_openai AND _whole) OR coalesce(json_type(metadata), 'OBJECT') <> 'OBJECT'
                         THEN metadata
                     WHEN metadata IS NULL OR len(json_keys(metadata)) = 0
                         THEN ('{{"response_message":' || (messages->'$[#-1]')::VARCHAR || '}}')::JSON
                     ELSE ('{{"response_message":' || (messages->'$[#-1]')::VARCHAR || ','
                           || ltrim(metadata::VARCHAR, ' {{'))::JSON END AS metadata
            FROM src
        )
        SELECT
            coalesce(id, 'imp_' || md5(concat_ws(chr(31), messages::VARCHAR, response, user_id,
                                                 session_id, "timestamp"))) AS id,
            coalesce(timezone('UTC', try_cast("timestamp" AS TIMESTAMPTZ)), $now) AS "timestamp",
            $now AS received_at,
            user_id, session_id, cohort, messages, response, model, experiment, variant,
            assignment_prob, latency_ms, prompt_tokens, completion_tokens, cost,
            coalesce(tags, []) AS tags, coalesce(metadata, '{{}}') AS metadata,
            coalesce(consent, '{{}}') AS consent, coalesce(media, '[]') AS media, 'import' AS source,
            coalesce(json_type(messages) = 'ARRAY' AND json_array_length(messages) > 0, false)
                AS _valid
        FROM norm
    """,
    "feedback": """
        WITH src AS (
            SELECT *,
                -- the same rules as records.Feedback: thumbs become 1/-1, ratings must be numbers
                CASE WHEN kind = 'thumb' THEN
                         CASE value::VARCHAR WHEN 'true' THEN 1 WHEN '1' THEN 1 WHEN '1.0' THEN 1
                                             WHEN '"up"' THEN 1 WHEN 'false' THEN -1 WHEN '-1' THEN -1
                                             WHEN '-1.0' THEN -1 WHEN '"down"' THEN -1 END
                     WHEN kind = 'rating' AND json_type(value) IN ('BIGINT', 'UBIGINT', 'DOUBLE')
                         THEN try_cast(value::VARCHAR AS DOUBLE)
                END AS _score
            FROM {reader}
        )
        SELECT
            -- the source counts unless it is 'user' (ids of users' feedback as before): an annotator's
            -- thumb on the answer a user also liked is a second event, not a duplicate
            coalesce(id, 'imp_' || md5(concat_ws(chr(31), interaction_id, kind, value::VARCHAR,
                                                 text, author, "timestamp",
                                                 nullif(coalesce(source, 'user'), 'user')))) AS id,
            interaction_id,
            coalesce(timezone('UTC', try_cast("timestamp" AS TIMESTAMPTZ)), $now) AS "timestamp",
            $now AS received_at,
            coalesce(source, 'user') AS source, kind,
            CASE WHEN kind = 'thumb' THEN _score::INTEGER::VARCHAR::JSON ELSE value END AS value,
            _score AS score,
            text, author, coalesce(metadata, '{{}}') AS metadata,
            coalesce(interaction_id IS NOT NULL
                     AND kind IN ('thumb', 'rating', 'edit', 'choice', 'comment', 'flag', 'regenerate')
                     AND coalesce(source, 'user') IN ('user', 'annotator', 'judge', 'verifier')
                     AND (kind NOT IN ('thumb', 'rating') OR _score IS NOT NULL)
                     AND (kind NOT IN ('edit', 'comment') OR coalesce(text, '') <> '')
                     AND (kind <> 'choice' OR json_type(value) = 'VARCHAR'), false)
                AS _valid
        FROM src
    """,
}


def _count_lines(path: Path) -> int:
    count = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 24):
            count += chunk.count(b"\n")
    return count


def import_file(
    project: Project,
    path: Path,
    *,
    kind: Kind = "interactions",
    on_progress: Callable[[int, int], None] | None = None,
) -> ImportReport:
    """Bulk-load a JSONL file of records (or OpenAI chat logs) inside DuckDB, never row by row.

    DuckDB's JSON reader parses the file once into a temporary table, normalised in SQL (UTC
    times, OpenAI logs split, content-derived ids); one INSERT with an anti-join on the ids already
    stored moves the valid rows in. ``on_progress(rows_done, rows_total)`` is called a few times a
    second while it runs.
    """
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"no file {path}", field="path")
    started = time.perf_counter()
    total = _count_lines(path) + (1 if path.stat().st_size and not _ends_with_newline(path) else 0)
    columns = ", ".join(f"'{k}': '{v}'" for k, v in _IMPORT_COLUMNS[kind].items())
    literal = str(path).replace("'", "''")
    reader = (
        f"read_json('{literal}', format='newline_delimited', columns={{{columns}}}, "
        "ignore_errors=true, maximum_object_size=67108864)"
    )
    source = _IMPORT_SELECT[kind].format(reader=reader)
    # on a PostgreSQL warehouse DuckDB still parses and normalises the file (in memory); the valid rows
    # then go through the capture store, which skips the ids already stored
    cur = duckdb.connect() if project.is_postgres else project.cursor()
    cur.execute("SET preserve_insertion_order = false")  # lets DuckDB parallelise the writes
    try:
        with _progress(cur, total, on_progress, start=0.0, end=0.6):  # parse and normalise once
            cur.execute(f"CREATE OR REPLACE TEMP TABLE _import AS {source}", {"now": utc_now()})
    except duckdb.Error as exc:
        raise InvalidInput(f"cannot read {path} as JSONL: {exc}", field="path") from None
    try:
        rows, invalid, repeats = cur.execute(
            "SELECT count(*), count(*) FILTER (NOT _valid), count(id) FILTER (_valid) - "
            "count(DISTINCT id) FILTER (_valid) FROM _import"
        ).fetchall()[0]  # all, not one: DuckDB keeps a half-read result open
        # one row per id: the window costs ~15% of an import, so only when the file repeats ids
        once = "QUALIFY row_number() OVER (PARTITION BY s.id) = 1" if repeats else ""
        if project.is_postgres:
            created = _import_to_postgres(project, cur, kind, once, rows - invalid, total, on_progress)
        else:
            with _progress(cur, total, on_progress, start=0.6, end=1.0):
                created = cur.execute(
                    f"INSERT INTO {kind} BY NAME SELECT * EXCLUDE (_valid) FROM _import s "
                    f"WHERE _valid AND NOT EXISTS (SELECT 1 FROM {kind} t WHERE t.id = s.id) {once}"
                ).fetchone()[0]  # type: ignore[index]
    finally:
        cur.execute("DROP TABLE IF EXISTS _import")
        if project.is_postgres:
            cur.close()
    unreadable = max(total - rows, 0)
    errors = []
    if invalid:
        errors.append(f"{invalid} records lack a valid field (messages / interaction_id / kind)")
    if unreadable:
        errors.append(f"{unreadable} lines are not JSON objects")
    return ImportReport(
        path=str(path),
        rows=rows + unreadable,
        created=created,
        duplicates=rows - invalid - created,
        rejected=invalid + unreadable,
        errors=errors,
        seconds=round(time.perf_counter() - started, 3),
    )


def _import_to_postgres(
    project: Project,
    cur: duckdb.DuckDBPyConnection,
    kind: Kind,
    once: str,
    valid: int,
    total: int,
    on_progress: Callable[[int, int], None] | None,
) -> int:
    """Store the valid rows of DuckDB's ``_import`` table in the PostgreSQL warehouse; return how many were new."""
    from posttrain.warehouse import postgres

    reader = cur.sql(f"SELECT * EXCLUDE (_valid) FROM _import s WHERE _valid {once}").to_arrow_reader(20_000)
    created, done = 0, 0
    columns: dict[str, list[str]] = {kind: SCHEMAS[kind].names}
    with project.cursor().borrow() as con:  # type: ignore[attr-defined]
        for batch in reader:
            rows = batch.to_pylist()
            created += len(postgres.store_rows(con, {kind: rows}, columns).get(kind, ()))
            done += len(rows)
            if on_progress is not None and valid:
                on_progress(int(total * (0.6 + 0.4 * min(done / valid, 1.0))), total)
    if on_progress is not None:
        on_progress(total, total)
    return created


@contextlib.contextmanager
def _progress(
    cur: duckdb.DuckDBPyConnection,
    total: int,
    on_progress: Callable[[int, int], None] | None,
    *,
    start: float,
    end: float,
) -> Iterator[None]:
    """Report a running statement's progress, as the share ``start``..``end`` of ``total``."""
    if on_progress is None:
        yield
        return
    cur.execute("SET enable_progress_bar = true")
    cur.execute("SET enable_progress_bar_print = false")
    done = threading.Event()

    def poll() -> None:
        while not done.wait(0.25):
            if (percent := cur.query_progress()) >= 0:
                on_progress(int(total * (start + (end - start) * percent / 100)), total)

    thread = threading.Thread(target=poll, name="posttrain-import-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        on_progress(int(total * end), total)


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as f:
        f.seek(-1, 2)
        return f.read(1) == b"\n"


def export_file(
    project: Project, path: Path, *, kind: Kind = "interactions", fmt: Literal["jsonl", "parquet"] = "jsonl"
) -> ExportReport:
    """Write every record of ``kind`` to ``path`` as JSONL or Parquet, oldest first."""
    if fmt not in ("jsonl", "parquet"):
        raise InvalidInput(f"unknown format {fmt!r}; choose jsonl or parquet", field="format")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if project.is_postgres:  # the rows stream out of PostgreSQL; DuckDB writes the Parquet
        return export_stream(export_lines(project, kind=kind), path, fmt=fmt)
    option = "FORMAT json" if fmt == "jsonl" else "FORMAT parquet"
    literal = str(path).replace("'", "''")
    cur = project.cursor()
    cur.execute(f"COPY (SELECT * FROM {kind} ORDER BY \"timestamp\", id) TO '{literal}' ({option})")
    rows = cur.execute(f"SELECT count(*) FROM {kind}").fetchone()[0]  # type: ignore[index]
    return ExportReport(path=str(path), format=fmt, rows=rows)


def export_lines(project: Project, *, kind: Kind = "interactions", batch_rows: int = 10_000) -> Iterator[bytes]:
    """Yield every record of ``kind`` as JSON lines, oldest first, a batch at a time."""
    json_columns = {"messages", "metadata", "consent", "media", "value"}
    cur = project.cursor()
    sql = f'SELECT * FROM {kind} ORDER BY "timestamp", id'
    if project.is_postgres:
        batches: Iterator[list[dict[str, Any]]] = cur.batches(sql, rows=batch_rows)  # type: ignore[attr-defined]
    else:
        batches = (batch.to_pylist() for batch in cur.sql(sql).to_arrow_reader(batch_rows))
    for rows in batches:
        lines = []
        for row in rows:
            for name in json_columns.intersection(row):
                if isinstance(row[name], str):
                    row[name] = orjson.loads(row[name])
            lines.append(orjson.dumps(row, option=orjson.OPT_NAIVE_UTC | orjson.OPT_APPEND_NEWLINE))
        yield b"".join(lines)


Sender = Callable[[list[dict[str, Any]]], list[str]]


def openai_to_record(raw: dict[str, Any]) -> dict[str, Any]:
    """Split an OpenAI-style chat log's last assistant message off as the response.

    Its text is the response (text parts joined by newlines); a message with more than text (tool
    calls, refusal, other parts) is also kept whole in ``metadata.response_message``.
    """
    messages = raw.get("messages")
    if raw.get("response") is None and isinstance(messages, list) and messages:
        last = messages[-1]
        if isinstance(last, dict) and last.get("role") == "assistant":
            content = last.get("content")
            text = content if not isinstance(content, list) else "\n".join(
                str(part["text"]) for part in content if isinstance(part, dict) and "text" in part)  # fmt: skip
            raw = {**raw, "messages": messages[:-1], "response": text}
            if set(last) - {"role", "content"} or isinstance(content, list):
                metadata = raw.get("metadata") or {}
                if isinstance(metadata, dict):  # anything else is refused by validation, as sent
                    raw["metadata"] = {**metadata, "response_message": last}
    return raw


def import_through(
    send: Sender,
    path: Path,
    *,
    kind: Kind = "interactions",
    batch_events: int = 1000,
    on_progress: Callable[[int, int], None] | None = None,
) -> ImportReport:
    """Import a JSONL file through ``send`` (the HTTP capture API when a server owns the warehouse)."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"no file {path}", field="path")
    started, total = time.perf_counter(), _count_lines(path)
    counts = {"created": 0, "duplicate": 0, "error": 0}
    unreadable, done, batch = 0, 0, []
    with path.open("rb") as f:
        for line in f:
            done += 1
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                unreadable += line.strip() != b""
                continue
            if isinstance(record, dict):
                batch.append(openai_to_record(record) if kind == "interactions" else record)
            else:
                unreadable += 1
            if len(batch) >= batch_events:
                for status in send(batch):
                    counts[status] += 1
                batch = []
                if on_progress:
                    on_progress(done, max(total, done))
    for status in send(batch) if batch else []:
        counts[status] += 1
    errors = [f"{counts['error']} records failed validation"] if counts["error"] else []
    if unreadable:
        errors.append(f"{unreadable} lines are not JSON objects")
    return ImportReport(
        path=str(path),
        rows=sum(counts.values()) + unreadable,
        created=counts["created"],
        duplicates=counts["duplicate"],
        rejected=counts["error"] + unreadable,
        errors=errors,
        seconds=round(time.perf_counter() - started, 3),
    )


def export_stream(chunks: Iterator[bytes], path: Path, *, fmt: Literal["jsonl", "parquet"]) -> ExportReport:
    """Write JSON-lines chunks (from the export API) to ``path`` as JSONL or Parquet."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    jsonl = path if fmt == "jsonl" else path.with_suffix(path.suffix + ".jsonl.tmp")
    rows = 0
    with jsonl.open("wb") as f:
        for chunk in chunks:
            rows += chunk.count(b"\n")
            f.write(chunk)
    if fmt == "parquet":
        con = duckdb.connect()
        try:
            src, dst = (str(p).replace("'", "''") for p in (jsonl, path))
            con.execute(f"COPY (SELECT * FROM read_json_auto('{src}')) TO '{dst}' (FORMAT parquet)")
        finally:
            con.close()
            jsonl.unlink()
    return ExportReport(path=str(path), format=fmt, rows=rows)
