"""The rows under curation, with the views every filter reads (aligned with the table's rows).

A filter gets a ``Frame`` and returns a ``Verdict``: one keep flag per row and, for each removed
row, why. The pipeline applies the verdict (``Frame.take``) before the next filter runs, so each
filter sees only the rows the ones before it kept and its count is its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from posttrain.project import Project
from posttrain.records import DatasetKind
from posttrain.warehouse import analytics

NO_VALUE = "(none)"
_WORD = re.compile(r"[A-Za-z]+")
# which column holds the prompt and the answer, per dataset kind
PROMPT_COLUMN = "prompt"
ANSWER_COLUMN: dict[str, str] = {"sft": "completion", "preference": "chosen", "prompts": "answer", "eval": "answer"}


@dataclass
class Verdict:
    """What a filter decided: ``keep[i]`` for row i; ``reasons[i]`` says why a removed row went."""

    keep: np.ndarray
    reasons: list[str | None] | None = None
    note: str | None = None  # e.g. why the filter did nothing ("skipped: no classifier trained")
    details: dict[str, Any] = field(default_factory=dict)  # small, JSON-able figures for the manifest


@dataclass
class Frame:
    """Rows of one build under curation.

    ``prompt``/``answer`` are the texts (message contents joined by newlines; the answer is the
    completion of sft rows, the chosen side of preference pairs, the reference answer of prompt
    and eval rows), ``cohort``/``family`` the interaction's cohort and task family (``(none)``
    when unknown), ``quality`` its judged quality in [0, 1] (NaN when nobody judged it),
    ``interaction_id`` the first interaction behind the row. Arrays are numpy (object for text).
    """

    project: Project
    kind: DatasetKind
    name: str
    table: pa.Table
    prompt: np.ndarray
    answer: np.ndarray
    cohort: np.ndarray
    family: np.ndarray
    quality: np.ndarray
    interaction_id: np.ndarray
    strict: bool = False
    strict_cohorts: frozenset[str] = frozenset()

    def __len__(self) -> int:
        return self.table.num_rows

    def take(self, keep: np.ndarray) -> Frame:
        """Return the frame of the rows where ``keep`` is true, in order."""
        index = np.flatnonzero(keep)
        return Frame(
            project=self.project,
            kind=self.kind,
            name=self.name,
            table=self.table.take(pa.array(index, pa.int64())),
            prompt=self.prompt[index],
            answer=self.answer[index],
            cohort=self.cohort[index],
            family=self.family[index],
            quality=self.quality[index],
            interaction_id=self.interaction_id[index],
            strict=self.strict,
            strict_cohorts=self.strict_cohorts,
        )

    def text(self) -> np.ndarray:
        """Return prompt and answer as one text per row."""
        joined = pc.binary_join_element_wise(
            pa.array(self.prompt.tolist(), pa.string()).fill_null(""),
            pa.array(self.answer.tolist(), pa.string()).fill_null(""),
            "\n",
        )
        return np.array(joined.to_pylist(), dtype=object)


def message_text(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Return one string per row: the text of a message list (contents and text parts, newline-joined),
    or the string itself for a string column; null rows give ''."""
    values = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        return pc.fill_null(values.cast(pa.string()), "")
    if not (pa.types.is_list(values.type) and pa.types.is_struct(values.type.value_type)):
        return pa.nulls(len(values), pa.string()).fill_null("")
    messages = values.flatten()
    index = messages.type.get_field_index("content")
    if index < 0:
        contents = pa.nulls(len(messages), pa.string())
    else:
        contents = messages.field(index)
        if pa.types.is_list(contents.type):  # content parts: their text, joined
            parts = contents.flatten()
            text = parts.field("text") if parts.type.get_field_index("text") >= 0 else pa.nulls(len(parts), pa.string())
            rebuilt = pa.ListArray.from_arrays(_offsets(contents), pc.fill_null(text, ""))
            contents = pc.binary_join(rebuilt, " ")
    rows = pa.ListArray.from_arrays(_offsets(values), pc.fill_null(contents.cast(pa.string()), ""))
    return pc.fill_null(pc.binary_join(rows, "\n"), "")


def _offsets(values: pa.Array) -> pa.Array:
    """Return a list array's offsets starting at 0 (a sliced array's start at its first value)."""
    offsets = values.offsets
    return pc.subtract(offsets, offsets[0])


def _first_ids(table: pa.Table) -> np.ndarray:
    if "interaction_id" in table.column_names:
        ids = table.column("interaction_id").combine_chunks()
    elif "interaction_ids" in table.column_names:
        ids = pc.list_element(table.column("interaction_ids").combine_chunks(), 0)
    else:
        ids = pa.nulls(table.num_rows, pa.string())
    return np.array(ids.cast(pa.string()).to_pylist(), dtype=object)


def _family(prompt_last_user: str) -> str:
    found = _WORD.search(prompt_last_user or "")
    return found.group(0).lower() if found else NO_VALUE


def build_frame(project: Project, kind: DatasetKind, name: str, table: pa.Table) -> Frame:
    """Return the frame of a build's rows, reading each row's cohort, family and quality from the warehouse.

    Family: the interaction's ``metadata.family``, else the first word of the prompt's last user
    message (as eval suites group by). Not tags: the gateway tags every request it serves ``gateway``.
    Quality: the mean of its thumbs (1/0) and ratings (scaled to [0, 1]); an edited answer counts 1.0;
    a preference pair's confidence.
    """
    prompt = np.array(message_text(table.column(PROMPT_COLUMN)).to_pylist(), dtype=object)
    answer_name = ANSWER_COLUMN.get(kind)
    if answer_name and answer_name in table.column_names:
        answer = np.array(message_text(table.column(answer_name)).to_pylist(), dtype=object)
    else:
        answer = np.full(table.num_rows, "", dtype=object)
    ids = _first_ids(table)
    meta = _warehouse_meta(project, ids)
    cohort = np.array([meta.get(i, (None, None, None))[0] or NO_VALUE for i in ids], dtype=object)
    if "cohort" in table.column_names:
        own = table.column("cohort").to_pylist()
        cohort = np.array([c or cohort[n] for n, c in enumerate(own)], dtype=object)
    family = np.array(
        [meta.get(i, (None, None, None))[1] or _family(_last_user(p)) for i, p in zip(ids, prompt, strict=True)],
        dtype=object,
    )
    quality = np.array([np.nan if (q := meta.get(i, (None, None, None))[2]) is None else q for i in ids], dtype=float)
    if "source" in table.column_names and kind == "sft":
        quality[np.array(table.column("source").to_pylist(), dtype=object) == "edit"] = 1.0
    if "confidence" in table.column_names:
        quality = np.array(pc.fill_null(table.column("confidence"), np.nan).to_pylist(), dtype=float)
    return Frame(project=project, kind=kind, name=name, table=table, prompt=prompt, answer=answer, cohort=cohort,
                 family=family, quality=quality, interaction_id=ids)  # fmt: skip


def _last_user(prompt: str) -> str:
    return prompt.rsplit("\n", 1)[-1]


def _warehouse_meta(project: Project, ids: np.ndarray) -> dict[str, tuple[str | None, str | None, float | None]]:
    """Return interaction id -> (cohort, family, quality) for the ids that are interactions."""
    known = [i for i in ids if isinstance(i, str)]
    if not known:
        return {}
    sql = """
            WITH q AS (
                SELECT f.interaction_id AS id,
                       avg(CASE WHEN f.kind = 'thumb' THEN (f.score > 0)::DOUBLE
                                ELSE least(greatest((f.score - 1) / 4, 0), 1) END) AS quality
                FROM feedback f JOIN _curation_ids c ON c.id = f.interaction_id
                WHERE f.kind IN ('thumb', 'rating') GROUP BY f.interaction_id
            )
            SELECT i.id, i.cohort, i.metadata ->> '$.family' AS family, q.quality
            FROM interactions i SEMI JOIN _curation_ids USING (id) LEFT JOIN q USING (id)"""
    with analytics.duckdb_over(project, sql) as cur:  # PostgreSQL: the tables it reads, copied out
        cur.register("_curation_ids", pa.table({"id": pa.array(sorted(set(known)), pa.string())}))
        try:
            rows = cur.sql(sql).fetchall()
        finally:
            cur.unregister("_curation_ids")
    return {r[0]: (r[1], r[2], r[3]) for r in rows}
