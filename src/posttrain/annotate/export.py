"""Exporting a queue's labels: one row per label, with its item's consensus, as JSON lines or Parquet.

A row holds the item and interaction(s) it labels, who labelled it (an annotator's key id or a
judge's name) and from which ``source``, the stored ``value``, the time spent, the queue and
guidelines versions it was given under, and the item's ``consensus`` and ``resolved_by`` once
resolved. In JSON lines ``value`` and ``consensus`` are objects; in Parquet they are JSON text
(their keys differ by task), so every file has the same columns.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import orjson

from posttrain.annotate.queues import get_queue
from posttrain.errors import InvalidInput
from posttrain.project import Project
from posttrain.records import ExportReport

ExportFormat = Literal["jsonl", "parquet"]
FORMATS: tuple[ExportFormat, ...] = ("jsonl", "parquet")
JSON_COLUMNS = ("value", "consensus")
COLUMNS = (
    "label_id", "item_id", "interaction_id", "second_interaction_id", "annotator", "source", "value",
    "confidence", "seconds", "queue_version", "guidelines_version", "created_at", "gold", "consensus",
    "resolved_by",
)  # fmt: skip

_ROWS = """
SELECT l.id AS label_id, l.item_id, i.interaction_id, i.second_interaction_id, l.annotator, l.source,
       l.value, l.confidence, l.seconds, l.queue_version, l.guidelines_version, l.created_at,
       i.gold IS NOT NULL AS gold, i.consensus, i.resolved_by
FROM labels l JOIN annotation_items i ON i.id = l.item_id
WHERE l.queue_id = ? ORDER BY l.created_at, l.id"""


def check_format(fmt: str) -> ExportFormat:
    """Return ``fmt`` if it is an export format; raise InvalidInput naming the choices."""
    if fmt not in FORMATS:
        raise InvalidInput(f"format {fmt[:20]!r}: choose jsonl or parquet", field="format")
    return fmt  # type: ignore[return-value]


def label_rows(project: Project, name: str, *, batch_rows: int = 10_000) -> Iterator[list[dict[str, Any]]]:
    """Yield the labels of queue ``name`` as row dicts (JSON columns parsed), oldest first, a batch at a time."""
    queue = get_queue(project, name)
    reader = project.cursor().sql(_ROWS, params=[queue.id]).to_arrow_reader(batch_rows)
    for batch in reader:
        rows = batch.to_pylist()
        for row in rows:
            for column in JSON_COLUMNS:
                if isinstance(row[column], str):
                    row[column] = orjson.loads(row[column])
        yield rows


def export_lines(project: Project, name: str, *, batch_rows: int = 10_000) -> Iterator[bytes]:
    """Yield the labels of queue ``name`` as JSON lines, a batch of lines per chunk (for a streaming response)."""
    option = orjson.OPT_NAIVE_UTC | orjson.OPT_APPEND_NEWLINE
    for rows in label_rows(project, name, batch_rows=batch_rows):
        yield b"".join(orjson.dumps(row, option=option) for row in rows)


def _parquet_schema() -> Any:
    import pyarrow as pa

    return pa.schema([
        ("label_id", pa.string()), ("item_id", pa.string()), ("interaction_id", pa.string()),
        ("second_interaction_id", pa.string()), ("annotator", pa.string()), ("source", pa.string()),
        ("value", pa.string()), ("confidence", pa.float64()), ("seconds", pa.float64()),
        ("queue_version", pa.int64()), ("guidelines_version", pa.int64()), ("created_at", pa.timestamp("us")),
        ("gold", pa.bool_()), ("consensus", pa.string()), ("resolved_by", pa.string()),
    ])  # fmt: skip


def _json_text(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def write_parquet(batches: Iterator[list[dict[str, Any]]], sink: Any) -> int:
    """Write row batches to ``sink`` (a path or a binary file) as Parquet; return how many rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema, rows = _parquet_schema(), 0
    with pq.ParquetWriter(sink, schema) as writer:
        for batch in batches:
            columns = {c: [_json_text(r[c]) if c in JSON_COLUMNS else r[c] for r in batch] for c in COLUMNS}
            writer.write_table(pa.table(columns, schema=schema))
            rows += len(batch)
    return rows


def parquet_bytes(project: Project, name: str) -> bytes:
    """Return the labels of queue ``name`` as one Parquet file's bytes (the format needs the whole file)."""
    buffer = io.BytesIO()
    write_parquet(label_rows(project, name), buffer)
    return buffer.getvalue()


def export_labels(project: Project, name: str, fmt: str, output: Path) -> ExportReport:
    """Write the labels of queue ``name`` (with each item's consensus) to ``output`` as JSONL or Parquet."""
    chosen = check_format(fmt)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    if chosen == "parquet":
        rows = write_parquet(label_rows(project, name), str(output))
    else:
        rows = 0
        with output.open("wb") as f:
            for chunk in export_lines(project, name):
                rows += chunk.count(b"\n")
                f.write(chunk)
    return ExportReport(path=str(output), format=chosen, rows=rows)


def export_stream(chunks: Iterator[bytes], output: Path, fmt: str) -> ExportReport:
    """Write an export the API streams (JSONL or Parquet bytes, as asked) to ``output``; count its rows."""
    chosen = check_format(fmt)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    newlines = 0
    with output.open("wb") as f:
        for chunk in chunks:
            newlines += chunk.count(b"\n")
            f.write(chunk)
    if chosen == "parquet":
        import pyarrow.parquet as pq

        newlines = pq.ParquetFile(output).metadata.num_rows
    return ExportReport(path=str(output), format=chosen, rows=newlines)
