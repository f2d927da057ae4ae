"""Dataset versions: immutable Parquet files with a manifest, built from warehouse rows.

Row formats (conversational, as TRL's trainers take them; a message is OpenAI's, as recorded:
``role``, ``content`` — a string, or a list of parts where any message of the version has parts —
and ``tool_calls`` / ``tool_call_id`` / ``name`` where a message has them, so an agent's
trajectory trains as it ran; a reply kept whole in ``metadata.response_message`` is the completion):

- ``sft``: ``prompt`` (messages), ``completion`` (one assistant message), ``source``
  (``accepted`` | ``edit``), ``interaction_id``.
- ``preference``: ``prompt``, ``chosen``, ``rejected`` (each one assistant message), ``source``
  (``choice`` | ``edit`` | ``accepted_vs_rejected``), ``confidence`` (0..1), ``interaction_ids``.
- ``prompts``: ``prompt``, ``answer`` (reference answer or null), ``verifier`` (name or null).
- ``eval``: ``prompt``, ``answer``, ``completion``, ``cohort``, ``user_id``, ``session_id``.

``build(project, kind, name, BuildConfig(...))`` selects the rows in one DuckDB query over the
warehouse (filters shared by every kind, then the kind's parameters), scrubs PII from every text
field (``posttrain.curate``), and writes the next version; ``export`` writes one as JSONL, Parquet
or a Hugging Face ``save_to_disk`` folder.

A version lives in ``artifacts/datasets/NAME/vN/``: ``data.parquet``, ``sources.parquet`` (the ids
of the interactions and feedback it came from) and ``manifest.json``. Its ``content_hash`` covers
the rows only, so rebuilding the same recipe over the same data gives the same hash.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any, Literal

import duckdb
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from posttrain import compute, curate
from posttrain.curation.config import CurationConfig
from posttrain.errors import DependencyMissing, InvalidInput
from posttrain.evals.verifiers import validated_name
from posttrain.names import check_name
from posttrain.project import Project
from posttrain.records import DatasetKind, DatasetVersion, FeedbackSource, UtcTime
from posttrain.validation import invalid_input

# re-exported: the names callers of this module have always used
from posttrain.versions import content_hash as content_hash
from posttrain.versions import list_versions as list_versions
from posttrain.versions import read_path as read_path
from posttrain.versions import read_rows as read_rows
from posttrain.versions import resolve as resolve
from posttrain.versions import write_version as write_version
from posttrain.warehouse import analytics
from posttrain.where import check_where as check_where
from posttrain.where import check_where_binds as check_where_binds

# --- building versions from the warehouse ------------------------------------------------

PairSource = Literal["choice", "edit", "accepted_vs_rejected"]
PAIR_SOURCES: tuple[PairSource, ...] = ("choice", "edit", "accepted_vs_rejected")
_MESSAGES = """'[{"role": "VARCHAR", "content": "VARCHAR"}]'"""
_TEXT_MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
_MESSAGE_COLUMNS = ("prompt", "completion", "chosen", "rejected")
# A message with more than a role and text content; such keys cannot occur inside a JSON string
# (its quotes are escaped there), so this finds rich rows without parsing any
_RICH = r'"content"\s*:\s*\[|"(?:tool_calls|tool_call_id|name|refusal|audio|function_call)"\s*:'
_ANSWER_FROM = re.compile(r"^(response|metadata(\.[A-Za-z_][A-Za-z0-9_]*)+)$")


class BuildConfig(BaseModel):
    """What to build a dataset version from: shared filters, then each kind's parameters.

    Acceptance (sft, and the two sides of ``accepted_vs_rejected`` pairs): an interaction is
    *accepted* when it has a positive signal (thumb up, or rating >= ``min_rating``) and no
    negative one (thumb down, flag, or rating <= ``max_rejected_rating``); *rejected* when it has
    a negative signal and no positive one. Mixed signals count as neither.

    Consensus: a product sees its common requests many times, answered the same way. An accepted
    interaction counts only when at least ``min_agreement`` of the judged interactions with the
    identical prompt and response were accepted too (a rejected one, when that share of them were
    rejected), so a few flipped thumbs cannot smuggle in an answer most users turned down. An answer
    judged once is its own consensus.
    """

    model_config = ConfigDict(extra="forbid")

    since: UtcTime | None = Field(None, description="Interactions at or after this time.")
    until: UtcTime | None = Field(None, description="Interactions before this time.")
    cohort: list[str] = Field(default_factory=list, description="Only these cohorts.")
    model: list[str] = Field(default_factory=list, description="Only interactions served by these models.")
    tags: list[str] = Field(default_factory=list, description="Interactions with any of these tags.")
    source: list[FeedbackSource] = Field(default_factory=list, description="Only feedback from these sources.")
    where: str | None = Field(None, description="One extra SQL condition over the interactions, alias i.")
    split: Literal["train"] | None = Field(
        None, description="'train': leave out the users/sessions an eval build with the same seed holds out."
    )
    min_rating: float = Field(4, description="A rating at or above this accepts a response.")
    max_rejected_rating: float = Field(2, description="A rating at or below this rejects a response.")
    rating_scale: float = Field(5, gt=1, description="The highest rating (ratings run 1..rating_scale).")
    include_edits: bool = Field(True, description="sft: edited responses become completions.")
    dedupe: bool = Field(
        True, description="sft: one row per identical (prompt, completion); false weighs them by how often users asked."
    )
    min_agreement: float = Field(
        0.6, ge=0, le=1, description="Share of verdicts on identical answers to a prompt that must agree (0: off)."
    )
    include: list[PairSource] = Field(
        default_factory=lambda: list(PAIR_SOURCES), description="preference: pair sources."
    )
    max_pairs_per_prompt: int = Field(2, ge=1, description="preference: accepted-vs-rejected pairs per prompt.")
    verifier: str | None = Field(None, description="prompts: the verifier name stored on each row.")
    answer_from: str | None = Field("metadata.answer", description="prompts/eval: 'metadata.KEY' or 'response'.")
    fraction: float = Field(0.1, gt=0, lt=1, description="eval: the share of users/sessions held out.")
    split_by: Literal["user_id", "session_id"] = Field("user_id", description="eval: what no split may share.")
    seed: int = Field(0, description="eval: the seed of the held-out hash.")
    exclude: list[str] = Field(default_factory=list, description="eval: training versions whose prompts to drop.")
    curate: CurationConfig | None = Field(
        None,
        description="Curation stages (pii, dedup, decontaminate, quality, safety, select); none: PII regexes only.",
    )

    @field_validator("where")
    @classmethod
    def _where_is_one_condition(cls, value: str | None) -> str | None:
        return check_where(value)

    @field_validator("verifier")
    @classmethod
    def _verifier_name(cls, value: str | None) -> str | None:
        return value if value == "row" else validated_name(value)

    @field_validator("answer_from")
    @classmethod
    def _answer_path(cls, value: str | None) -> str | None:
        if value is not None and not _ANSWER_FROM.match(value):
            raise ValueError(f"answer_from {value!r} must be 'response' or 'metadata.KEY', e.g. metadata.answer")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> BuildConfig:
        if self.since and self.until and self.since >= self.until:
            raise ValueError(f"since ({self.since}) must be before until ({self.until}); swap them")
        if self.max_rejected_rating >= self.min_rating:
            raise ValueError("max_rejected_rating must be below min_rating, e.g. 2 and 4")
        if not self.include:
            raise ValueError("include needs at least one of choice, edit, accepted_vs_rejected")
        return self

    @classmethod
    def parse(cls, **values: Any) -> BuildConfig:
        """Return a config from loose values (CLI flags); raise InvalidInput naming the fix."""
        try:
            return cls.model_validate({k: v for k, v in values.items() if v is not None})
        except ValidationError as exc:
            raise invalid_input(exc) from None


class _Sql:
    """Collects named parameters while a query is assembled (DuckDB refuses unused ones)."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}

    def __call__(self, name: str, value: Any) -> str:
        self.params[name] = value
        return f"${name}"


def _heldout(config: BuildConfig, p: _Sql) -> str:
    """Return SQL true for interactions whose user (or session) the eval split holds out."""
    key = f"coalesce(i.{config.split_by}, i.id)"
    cut = p("cut", int(config.fraction * 1_000_000))
    return f"(md5_number(concat({p('seed', str(config.seed))}, ':', {key})) % 1000000) < {cut}"


def _interaction_filter(config: BuildConfig, p: _Sql, kind: DatasetKind) -> str:
    clauses = ["TRUE"]
    if config.since:
        clauses.append(f'i."timestamp" >= {p("since", config.since)}')
    if config.until:
        clauses.append(f'i."timestamp" < {p("until", config.until)}')
    if config.cohort:
        clauses.append(f"list_contains({p('cohort', config.cohort)}, i.cohort)")
    if config.model:
        clauses.append(f"list_contains({p('model', config.model)}, i.model)")
    if config.tags:
        clauses.append(f"list_has_any(i.tags, {p('tags', config.tags)})")
    if config.where:
        clauses.append(f"({config.where})")
    if kind == "eval":
        clauses.append(_heldout(config, p))
    elif config.split == "train":
        clauses.append(f"NOT {_heldout(config, p)}")
    return " AND ".join(clauses)


def _answer(config: BuildConfig, p: _Sql) -> str:
    if config.answer_from is None:
        return "NULL::VARCHAR"
    if config.answer_from == "response":
        return "i.response"
    return f"json_extract_string(i.metadata, {p('answer_path', '$' + config.answer_from[len('metadata') :])})"


def _common_ctes(config: BuildConfig, p: _Sql, kind: DatasetKind) -> str:
    """Return the CTEs every kind starts from: filtered interactions, feedback, judgements, edits."""
    sources = f"list_contains({p('sources', config.source)}, f.source)" if config.source else "TRUE"
    # only what the kind needs: each column costs at a million rows; preference pairs carry ids and
    # hashes until the end, when the texts of the pairs kept join back
    columns = "i.id, i.messages::VARCHAR AS messages, hash(i.messages::VARCHAR) AS prompt_key, i.response"
    if kind in ("sft", "eval"):
        columns += f", {_reply('i')} AS reply"
    if kind == "preference":
        columns = f"i.id, hash(i.messages::VARCHAR) AS prompt_key, {_response_key('i')} AS response_key"
        columns += ", i.response IS NOT NULL AS answered, i.metadata ->> '$.pair_id' AS pair_id"
    elif kind in ("prompts", "eval"):
        columns += f", i.user_id, i.session_id, i.cohort, {_answer(config, p)} AS answer"
    return f"""
    base AS (
        SELECT {columns}
        FROM interactions i WHERE {_interaction_filter(config, p, kind)}
    ),
    fb AS (
        SELECT f.id, f.interaction_id, f.source, f.kind, f.score, f.text, f."timestamp",
               CASE WHEN f.kind = 'choice' THEN f.value->>'$' END AS chosen_id
        FROM feedback f WHERE f.kind IN ('thumb', 'rating', 'flag', 'edit', 'choice') AND {sources}
    ),
    judged AS (
        SELECT interaction_id,
            bool_or(kind = 'thumb' AND score > 0 OR kind = 'rating' AND score >= {p("min_rating", config.min_rating)})
                AS positive,
            bool_or(kind = 'thumb' AND score < 0 OR kind = 'flag'
                    OR kind = 'rating' AND score <= {p("max_rejected", config.max_rejected_rating)}) AS negative,
            avg(CASE WHEN kind = 'thumb' THEN (score > 0)::DOUBLE
                     WHEN kind = 'rating'
                     THEN least(greatest((score - 1) / ({p("scale", config.rating_scale)} - 1), 0), 1)
                END) AS quality,
            list(id) AS feedback_ids
        FROM fb WHERE kind IN ('thumb', 'rating', 'flag') GROUP BY interaction_id
    ),
    edits AS (
        SELECT interaction_id, arg_max(text, ("timestamp", id)) AS text, arg_max(id, ("timestamp", id)) AS feedback_id
        FROM fb WHERE kind = 'edit' AND source IN ('user', 'annotator') AND text IS NOT NULL
        GROUP BY interaction_id
    ){_verdicts(config, p, kind) if kind in ("sft", "preference") else ""}"""


def _verdicts(config: BuildConfig, p: _Sql, kind: DatasetKind) -> str:
    """Return the CTE ``verdicts``: each judged interaction accepted (true) or rejected (false).

    Mixed signals give no verdict, nor does one that too few of the identical answers to the same
    prompt share (``min_agreement``).
    """
    answer, answered = (
        ("b.response_key", "b.answered") if kind == "preference" else ("hash(b.response)", "b.response IS NOT NULL")
    )
    return f"""
    , labelled AS (
        SELECT b.id, j.positive AS accepted, j.quality,
               avg(j.positive::DOUBLE) OVER (PARTITION BY b.prompt_key, {answer}) AS accepted_share
        FROM base b JOIN judged j ON j.interaction_id = b.id
        WHERE {answered} AND j.positive <> j.negative
    ),
    verdicts AS (
        SELECT id, accepted, quality FROM labelled
        WHERE CASE WHEN accepted THEN accepted_share ELSE 1 - accepted_share END
              >= {p("min_agreement", config.min_agreement)}
    )"""


def _assistant(expr: str) -> str:
    """Return SQL for a text as a one-assistant-message list, in JSON."""
    return f"CASE WHEN {expr} IS NULL THEN NULL ELSE to_json([{{'role': 'assistant', 'content': {expr}}}])::VARCHAR END"


def _reply(alias: str) -> str:
    """Return SQL for an interaction's reply as a message list in JSON: the message kept whole, else its text."""
    kept = f"({alias}.metadata -> '$.response_message')"
    text = _assistant(f"{alias}.response")
    return f"CASE WHEN json_type({kept}) = 'OBJECT' THEN '[' || {kept}::VARCHAR || ']' ELSE {text} END"


def _response_key(alias: str) -> str:
    """Return SQL for a hash of an interaction's reply: its text's, unless a whole message was kept."""
    kept = f"({alias}.metadata -> '$.response_message')"
    return f"CASE WHEN json_type({kept}) = 'OBJECT' THEN hash({kept}::VARCHAR) ELSE hash({alias}.response) END"


def _sft_sql(config: BuildConfig, p: _Sql) -> str:
    edits = "LEFT JOIN edits e ON e.interaction_id = b.id" if config.include_edits else ""
    edit_text = "e.text" if config.include_edits else "NULL::VARCHAR"
    edit_id = "e.feedback_id" if config.include_edits else "NULL::VARCHAR"
    return f"""
    WITH {_common_ctes(config, p, "sft")},
    candidates AS (
        SELECT b.id AS interaction_id, b.messages,
               CASE WHEN {edit_text} IS NOT NULL THEN {_assistant(edit_text)} ELSE b.reply END AS completion,
               CASE WHEN {edit_text} IS NOT NULL THEN 'edit' ELSE 'accepted' END AS source,
               CASE WHEN {edit_id} IS NULL THEN j.feedback_ids ELSE [{edit_id}] END AS feedback_ids
        FROM base b LEFT JOIN judged j ON j.interaction_id = b.id LEFT JOIN verdicts v ON v.id = b.id {edits}
        WHERE {edit_text} IS NOT NULL OR v.accepted
    ),
    firsts AS (  -- one row per identical (prompt, completion), keyed by two 64-bit hashes: the lowest id
        SELECT min(interaction_id) AS interaction_id FROM candidates
        GROUP BY hash(messages), hash(completion)
    ),
    picked AS (SELECT * FROM candidates {"SEMI JOIN firsts USING (interaction_id)" if config.dedupe else ""})
    SELECT messages AS prompt, completion, source, interaction_id, feedback_ids
    FROM picked ORDER BY interaction_id"""


def _pair_ctes(config: BuildConfig) -> list[str]:
    """Return one SELECT per pair source: ids and hashes only, the texts join back at the end.

    ``prompt_id`` is the interaction whose messages (and, unless ``chosen_text``, response) give
    the prompt and the chosen side; ``rejected_id`` is the one whose response is the rejected side.
    """
    parts = []
    if "choice" in config.include:  # both sides in the filtered interactions, with the same prompt
        parts.append("""
        SELECT 'choice' AS source, 1 AS priority, CASE WHEN c.source = 'judge' THEN 0.9 ELSE 1.0 END AS confidence,
               y.id AS prompt_id, NULL::VARCHAR AS chosen_text, c.interaction_id AS rejected_id, y.prompt_key,
               y.response_key AS chosen_key, c.rejected_key, [y.id, c.interaction_id] AS interaction_ids,
               [c.id] AS feedback_ids
        FROM choices c JOIN base y ON y.id = c.chosen_id AND y.prompt_key = c.prompt_key
        WHERE y.answered AND y.id <> c.interaction_id""")
    if "edit" in config.include:
        parts.append("""
        SELECT 'edit' AS source, 2 AS priority, 0.9 AS confidence, b.id AS prompt_id, e.text AS chosen_text,
               b.id AS rejected_id, b.prompt_key, hash(e.text) AS chosen_key, b.response_key AS rejected_key,
               [b.id] AS interaction_ids, [e.feedback_id] AS feedback_ids
        FROM edits e JOIN base b ON b.id = e.interaction_id WHERE b.answered""")
    if "accepted_vs_rejected" in config.include:
        parts.append("""
        SELECT 'accepted_vs_rejected' AS source, 3 AS priority, round(a.quality - r.quality, 4) AS confidence,
               a.id AS prompt_id, NULL::VARCHAR AS chosen_text, r.id AS rejected_id, a.prompt_key,
               a.response_key AS chosen_key, r.response_key AS rejected_key, [a.id, r.id] AS interaction_ids,
               list_concat(ja.feedback_ids, jr.feedback_ids) AS feedback_ids
        FROM slots s
        JOIN ranks a ON a.prompt_key = s.prompt_key AND a.accepted AND a.k = s.ka
        JOIN ranks r ON r.prompt_key = s.prompt_key AND NOT r.accepted AND r.k = s.kr
        JOIN judged ja ON ja.interaction_id = a.id JOIN judged jr ON jr.interaction_id = r.id
        WHERE a.quality > r.quality""")
    return parts


def _preference_sql(config: BuildConfig, p: _Sql) -> str:
    return f"""
    WITH {_common_ctes(config, p, "preference")},
    ranks AS (
        SELECT b.id, b.prompt_key, b.response_key, v.quality, v.accepted,
               row_number() OVER (PARTITION BY b.prompt_key, v.accepted
                                  ORDER BY CASE WHEN v.accepted THEN -v.quality ELSE v.quality END, b.id) AS k
        FROM base b JOIN verdicts v ON v.id = b.id
    ),
    choices AS MATERIALIZED (  -- first alone: joined with both sides at once, the planner pairs every response
        SELECT f.id, f.source, f.interaction_id, f.chosen_id, x.prompt_key, x.response_key AS rejected_key
        FROM fb f JOIN base x ON x.id = f.interaction_id WHERE f.kind = 'choice' AND x.answered
        UNION ALL  -- side-by-side: a choice given on the chosen answer rejects the other one of its pair
        SELECT f.id, f.source, o.id AS interaction_id, f.chosen_id, o.prompt_key, o.response_key AS rejected_key
        FROM fb f JOIN base x ON x.id = f.interaction_id AND x.id = f.chosen_id AND x.pair_id IS NOT NULL
        JOIN base o ON o.pair_id = x.pair_id AND o.id <> x.id
        WHERE f.kind = 'choice' AND o.answered
    ),
    sides AS (
        SELECT prompt_key, count(*) FILTER (accepted) AS accepted, count(*) FILTER (NOT accepted) AS rejected
        FROM ranks GROUP BY prompt_key HAVING bool_or(accepted) AND bool_or(NOT accepted)
    ),
    slots AS (  -- pair n takes the n-th best accepted and the n-th worst rejected, cycling the shorter side
        SELECT prompt_key, (n - 1) % accepted + 1 AS ka, (n - 1) % rejected + 1 AS kr
        FROM sides, range(1, {p("max_pairs", config.max_pairs_per_prompt)} + 1) t(n)
        WHERE n <= greatest(accepted, rejected)
    ),
    pairs AS (
        SELECT *, concat_ws(':', priority, interaction_ids, feedback_ids) AS pair_id
        FROM ({" UNION ALL ".join(_pair_ctes(config))})
        WHERE chosen_key <> rejected_key
    ),
    firsts AS (  -- one pair per identical (prompt, chosen, rejected): choice > edit > accepted_vs_rejected
        SELECT arg_min(pair_id, (priority, -confidence, pair_id)) AS pair_id
        FROM pairs GROUP BY prompt_key, chosen_key, rejected_key
    ),
    kept AS (SELECT * FROM pairs SEMI JOIN firsts USING (pair_id))
    SELECT pi.messages::VARCHAR AS prompt,
           CASE WHEN k.chosen_text IS NOT NULL THEN {_assistant("k.chosen_text")} ELSE {_reply("pi")} END AS chosen,
           {_reply("ri")} AS rejected,
           k.source, k.confidence::DOUBLE AS confidence, k.interaction_ids, k.feedback_ids
    FROM kept k JOIN interactions pi ON pi.id = k.prompt_id JOIN interactions ri ON ri.id = k.rejected_id
    ORDER BY k.interaction_ids[1], k.interaction_ids[2] NULLS FIRST, k.priority"""


def _prompts_sql(config: BuildConfig, p: _Sql) -> str:
    return f"""
    WITH {_common_ctes(config, p, "prompts")},
    trimmed AS (
        SELECT id, answer, CASE WHEN messages->>'$[#-1].role' = 'assistant'
                                THEN to_json(json_extract(messages, '$[*]')[:-2])::VARCHAR ELSE messages END AS prompt
        FROM base
    ),
    picked AS (
        SELECT id AS interaction_id, prompt, answer FROM trimmed WHERE json_array_length(prompt) > 0
        QUALIFY row_number() OVER (PARTITION BY md5(prompt) ORDER BY answer IS NULL, id) = 1
    )
    SELECT prompt, answer, {p("verifier", config.verifier)}::VARCHAR AS verifier, interaction_id,
           []::VARCHAR[] AS feedback_ids
    FROM picked ORDER BY interaction_id"""


def _eval_sql(config: BuildConfig, p: _Sql) -> str:
    return f"""
    WITH {_common_ctes(config, p, "eval")}
    SELECT messages AS prompt, answer, reply AS completion,
           cohort, user_id, session_id, id AS interaction_id, []::VARCHAR[] AS feedback_ids
    FROM base ORDER BY id"""


_BUILDERS = {"sft": _sft_sql, "preference": _preference_sql, "prompts": _prompts_sql, "eval": _eval_sql}
# Columns that carry lineage to the sources file, not into the rows.
_LINEAGE = {
    "sft": ["feedback_ids"],
    "preference": ["feedback_ids"],
    "prompts": ["feedback_ids", "interaction_id"],
    "eval": ["feedback_ids", "interaction_id"],
}


def _describe(kind: DatasetKind, config: BuildConfig) -> str:
    filters = config.model_dump(exclude_defaults=True, mode="json")
    return f"{kind} from {filters or 'every interaction'}"


def _lineage(table: pa.Table) -> dict[str, list[str]]:
    """Return the sorted, distinct ids of the interactions and feedback behind the rows."""
    names = table.column_names
    ids = table.column("interaction_ids").combine_chunks().flatten() if "interaction_ids" in names else None
    if "interaction_id" in names:
        ids = table.column("interaction_id").combine_chunks()
    out: dict[str, list[str]] = {}
    for key, column in (("interactions", ids), ("feedback", _flat(table, "feedback_ids"))):
        if column is not None:
            distinct = pc.unique(column.drop_null())
            out[key] = pc.take(distinct, pc.sort_indices(distinct)).to_pylist()
    return out


def _flat(table: pa.Table, name: str) -> pa.Array | None:
    return table.column(name).combine_chunks().flatten() if name in table.column_names else None


def _mean_chars(column: pa.ChunkedArray) -> float:
    """Return the mean characters per row of a string or message-list column (content parts' text counted)."""
    values: pa.Array | None = column.combine_chunks()
    for name in ("content", "text"):  # messages, then their content parts
        if values is not None and pa.types.is_list(values.type):
            values = _struct_field(values.flatten(), name)
    if values is None or not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        return 0.0  # no text at all (tool calls only, or every value null)
    total = pc.sum(pc.utf8_length(values)).as_py() or 0
    return round(total / max(len(column), 1), 1)


def _struct_field(values: pa.Array, name: str) -> pa.Array | None:
    if not pa.types.is_struct(values.type) or values.type.get_field_index(name) < 0:
        return None
    return values.field(name)


def _stats(kind: DatasetKind, table: pa.Table, pii: dict[str, int], dropped: int) -> dict[str, Any]:
    stats: dict[str, Any] = {"rows": table.num_rows, "pii_scrubbed": pii}
    if "source" in table.column_names:
        counts = pc.value_counts(table.column("source")).to_pylist()
        stats["by_source"] = {c["values"]: c["counts"] for c in sorted(counts, key=lambda c: c["values"])}
    for name in ("prompt", "completion", "chosen", "rejected", "answer"):
        if name in table.column_names:
            stats[f"mean_{name}_chars"] = _mean_chars(table.column(name))
    if "confidence" in table.column_names:
        stats["mean_confidence"] = round(pc.mean(table.column("confidence")).as_py() or 0.0, 4)
    if kind == "eval":
        stats["users"] = pc.count_distinct(table.column("user_id")).as_py()
        stats["sessions"] = pc.count_distinct(table.column("session_id")).as_py()
        stats["dropped_duplicate_prompts"] = dropped
    return stats


def _drop_seen(project: Project, table: pa.Table, refs: list[str]) -> tuple[pa.Table, int]:
    """Drop rows whose prompt appears exactly in any of the training versions ``refs``."""
    # read through Arrow, not DuckDB's read_parquet: the server runs DuckDB without file access
    seen = pa.concat_tables([pq.read_table(read_path(project, ref), columns=["prompt"]) for ref in refs])
    cur = duckdb.connect()  # private: the two tables are Arrow, nothing of the warehouse is read
    try:
        cur.register("_candidate_rows", table.append_column("_row", pa.array(range(table.num_rows), pa.int64())))
        cur.register("_seen_prompts", seen)
        kept = cur.sql(
            "SELECT * EXCLUDE (_row) FROM _candidate_rows WHERE md5(to_json(prompt)::VARCHAR) NOT IN "
            "(SELECT md5(to_json(prompt)::VARCHAR) FROM _seen_prompts) ORDER BY _row"
        ).to_arrow_table()
    finally:
        cur.close()
    return kept, table.num_rows - kept.num_rows


def query(project: Project, kind: DatasetKind, config: BuildConfig) -> pa.Table:
    """Return the rows a build would write, before PII scrubbing, with their lineage columns."""
    if kind not in _BUILDERS:
        raise InvalidInput(f"unknown dataset kind {kind!r}; choose sft, preference, prompts or eval", field="kind")
    params = _Sql()
    sql = _BUILDERS[kind](config, params)
    with analytics.duckdb_over(project, sql) as cur:  # PostgreSQL: the tables it reads, copied out to DuckDB
        check_where_binds(cur, config.where)
        return _conversations(cur.sql(sql, params=params.params).to_arrow_table())


def _conversations(table: pa.Table) -> pa.Table:
    """Turn the JSON message columns into lists of messages: typed by DuckDB when every message is
    role and text, else inferred from the messages as recorded (parts, tool calls, tool results)."""
    names = [n for n in _MESSAGE_COLUMNS if n in table.column_names]
    rich = any(pc.any(pc.match_substring_regex(table.column(n), _RICH)).as_py() for n in names)
    if not rich:
        con = duckdb.connect()  # private, default settings: the scan keeps the rows in order
        try:
            con.register("_rows", table)
            casts = ", ".join(f"from_json({n}, {_MESSAGES}) AS {n}" for n in names)
            return con.sql(f"SELECT * REPLACE ({casts}) FROM _rows").to_arrow_table()
        finally:
            con.close()
    rows = {n: [None if v is None else orjson.loads(v) for v in table.column(n).to_pylist()] for n in names}
    parts = any(isinstance(m.get("content"), list) for n in names for row in rows[n] for m in row or [])
    for n in names:
        for row in rows[n]:
            if not row:
                continue
            for index, message in enumerate(row):
                _normalise(message, parts=parts)
                row[index] = _no_empty_objects(message)
        try:
            array = pa.array(rows[n]) if any(rows[n]) else pa.array(rows[n], type=_TEXT_MESSAGES)
            if (typed := _no_null_type(array.type)) != array.type:
                array = pa.array(rows[n], type=typed)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise InvalidInput(f"{n}: the recorded messages do not share one shape ({exc}); narrow the "
                               "filters to interactions whose messages agree", field="filters") from None  # fmt: skip
        table = table.set_column(table.column_names.index(n), n, array)
    return table


def _scrub_rows(table: pa.Table) -> tuple[pa.Table, dict[str, int]]:
    """Scrub PII by regex from every text of the rows (a build's per-row step: any batch of them, anywhere).

    Module-level, so Ray pickles it by reference; a row's text never depends on another row's.
    """
    table, pii = curate.scrub_table(table)
    table, more = _scrub_parts_and_calls(table)
    return table, {key: n + more.get(key, 0) for key, n in pii.items()}


def _scrub_parts_and_calls(table: pa.Table) -> tuple[pa.Table, dict[str, int]]:
    """Scrub PII from the text that ``curate.scrub_table`` does not reach: content parts, tool call arguments."""
    counts: dict[str, int] = {}
    for n in [n for n in _MESSAGE_COLUMNS if n in table.column_names and _has_parts_or_calls(table.schema.field(n))]:
        rows = table.column(n).to_pylist()
        leaves = [leaf for row in rows for message in row or [] for leaf in _texts_beyond_content(message)]
        if not leaves:
            continue
        scrubbed, found = curate.scrub_strings(pa.array([holder[key] for holder, key in leaves], pa.string()))
        for (holder, key), text in zip(leaves, scrubbed.to_pylist(), strict=True):
            holder[key] = text
        counts = {kind: counts.get(kind, 0) + found[kind] for kind in found}
        table = table.set_column(table.column_names.index(n), n, pa.array(rows, type=table.schema.field(n).type))
    return table, counts


def _has_parts_or_calls(field: pa.Field) -> bool:
    """Return whether a message-list column has content parts or tool calls (else curate scrubbed it all)."""
    message = field.type.value_type if pa.types.is_list(field.type) else None
    if message is None or not pa.types.is_struct(message):
        return False
    content = message.field("content").type if message.get_field_index("content") >= 0 else pa.string()
    return pa.types.is_list(content) or message.get_field_index("tool_calls") >= 0


def _texts_beyond_content(message: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
    """Return (holder, key) of each text part and tool call argument string of a message."""
    found = []
    content = message.get("content")
    for part in content if isinstance(content, list) else []:
        if isinstance(part, dict) and isinstance(part.get("text"), str):
            found.append((part, "text"))
    for call in message.get("tool_calls") or []:
        function = (call or {}).get("function")
        if isinstance(function, dict) and isinstance(function.get("arguments"), str):
            found.append((function, "arguments"))
    return found


def _no_empty_objects(value: Any) -> Any:
    """Return ``value`` without the empty JSON objects inside it (keys and list items whose value is ``{}``,
    once emptied themselves): Parquet has no struct of no fields, and Arrow's null type inside such
    structs breaks its own validation. An empty object says nothing a missing key does not."""
    if isinstance(value, dict):
        cleaned = {key: _no_empty_objects(item) for key, item in value.items()}
        return {key: item for key, item in cleaned.items() if item != {}}
    if isinstance(value, list):
        return [item for item in (_no_empty_objects(v) for v in value) if item != {}]
    return value


def _no_null_type(type_: pa.DataType) -> pa.DataType:
    """Return ``type_`` with every field that only ever held null typed as a string: a field of Arrow's
    null type (``"content": null`` in every message) breaks Arrow's own casts of the column later."""
    if pa.types.is_null(type_):
        return pa.string()
    if pa.types.is_list(type_):
        return pa.list_(type_.value_field.with_type(_no_null_type(type_.value_type)))
    if pa.types.is_struct(type_):
        return pa.struct([field.with_type(_no_null_type(field.type)) for field in type_])
    return type_


def _normalise(message: dict[str, Any], *, parts: bool) -> None:
    """Give one message the shape every row of a column shares: text as a part where any message has
    parts, tool call arguments as OpenAI's JSON string."""
    if parts and isinstance(message.get("content"), str):
        message["content"] = [{"type": "text", "text": message["content"]}]
    for call in message.get("tool_calls") or []:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict) and not isinstance(function.get("arguments"), str | None):
            function["arguments"] = orjson.dumps(function["arguments"]).decode()


def build(project: Project, kind: DatasetKind, name: str, config: BuildConfig | None = None) -> DatasetVersion:
    """Build the next version of dataset ``name`` from the warehouse: select, scrub PII, write.

    The selection runs as one DuckDB query; rows are ordered by interaction id, so the same recipe
    over the same data gives the same ``content_hash``. The PII scrub and curation's per-row steps
    run where ``[compute]`` says (here, or on the Ray cluster batch by batch), with the same rows
    either way. Raise InvalidInput when no rows match.
    """
    check_name(name, what="dataset name")
    config = config or BuildConfig()
    # the selection stays in this process on either backend: the warehouse is this project's DuckDB
    # file, which only the driver opens; the workers get the selected rows
    table = query(project, kind, config)
    if table.num_rows == 0:
        raise InvalidInput(f"no rows match: {_describe(kind, config)}; loosen the filters", field="filters")
    scrubbed, pii = compute.map_batches(project, table, _scrub_rows, what="the PII scrub of the build")
    # on Ray the rows went through Parquet, which names a list's items 'element' (DuckDB: 'l'); the
    # selection's schema keeps the file's stored Arrow schema, so its bytes, the same on both backends
    table = scrubbed.cast(table.schema)
    dropped = 0
    if kind == "eval" and config.exclude:
        table, dropped = _drop_seen(project, table, config.exclude)
        if table.num_rows == 0:
            raise InvalidInput(f"no rows match: every eval prompt is in {config.exclude}; loosen the filters")
    files: dict[str, pa.Table] = {}
    curation = None
    strict = set(project.settings.curate.strict_cohorts)
    if config.curate is not None or (config.cohort and set(config.cohort) <= strict):
        from posttrain.curation.pipeline import curate as run_curation

        curated = run_curation(
            project, kind, name, table, config.curate or CurationConfig(), build_cohorts=config.cohort
        )
        table, curation, files["curation.parquet"] = curated.table, curated.report, curated.details
        if table.num_rows == 0:
            raise InvalidInput(f"no rows left after curation ({curation.removed()}); loosen the curation recipe",
                               field="curate")  # fmt: skip
    sources = _lineage(table)
    table = table.drop_columns(_LINEAGE[kind])
    recipe = {"kind": kind, **config.model_dump(mode="json")}
    stats = _stats(kind, table, pii, dropped)
    if curation is not None:
        stats["curation"] = curation.model_dump(mode="json")
        for stage in curation.stages:
            if stage.stage == "pii":
                replaced = stage.details.get("replaced", {})
                stats["pii_scrubbed"] = {**stats["pii_scrubbed"], **replaced}
    return write_version(project, name, kind, table, recipe=recipe, sources=sources, stats=stats,
                         scrubbed=sum(stats["pii_scrubbed"].values()), files=files)  # fmt: skip


ExportFormat = Literal["jsonl", "parquet", "hf"]


def export(project: Project, ref: str, fmt: ExportFormat, output: Path | str) -> Path:
    """Write version ``ref`` to ``output`` as JSONL, Parquet or a Hugging Face ``save_to_disk`` folder.

    JSONL and Parquet load with ``datasets.load_dataset("json" | "parquet", data_files=...)``; the
    columns are the row format above, which TRL's trainers take as they are.
    """
    if fmt not in ("jsonl", "parquet", "hf"):
        raise InvalidInput(f"unknown format {fmt!r}; choose jsonl, parquet or hf", field="format")
    source, output = read_path(project, ref), Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        shutil.copyfile(source, output)
    elif fmt == "jsonl":
        con = duckdb.connect()  # a private connection: default settings keep the row order
        try:
            con.execute(
                "COPY (SELECT * FROM read_parquet($src)) TO '" + str(output).replace("'", "''") + "' (FORMAT json)",
                {"src": source},
            )
        finally:
            con.close()
    else:
        try:
            from datasets import Dataset
        except ImportError:
            raise DependencyMissing(
                "exporting to hf needs the 'datasets' package; pip install 'posttrain[train]'"
            ) from None
        Dataset.from_parquet(source).save_to_disk(str(output))
    return output


class DatasetPreview(BaseModel):
    """A version's manifest with its first rows."""

    version: DatasetVersion
    rows: list[dict[str, Any]]


def preview(project: Project, ref: str, *, rows: int = 5) -> DatasetPreview:
    """Return version ``ref`` with its first ``rows`` rows."""
    version = resolve(project, ref)
    head = pq.ParquetFile(read_path(project, ref)).iter_batches(batch_size=max(rows, 1))
    sample = next(head, None)
    return DatasetPreview(version=version, rows=sample.to_pylist()[:rows] if sample is not None and rows else [])
