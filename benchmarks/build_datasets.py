"""Dataset build time: ``posttrain.datasets.build`` for sft and preference over a large warehouse.

    /work/main/.venv/bin/python benchmarks/build_datasets.py [--quick] [--rows N]

Generates 1,000,000 interactions (``--quick`` 50,000) over a fifth as many distinct prompts, so
each prompt has about five responses, with feedback on most of them: thumbs (~55%), ratings
(~20%), edits (~3%) and pairwise choices (~5%). About 2% of prompts carry PII (an email, a phone
number or a card number) for the scrubber to find. The rows are made as Arrow tables (DuckDB
generates them in memory, cast to ``capture.SCHEMAS``) and inserted into a fresh project's
warehouse in one statement each, then the builds are timed.

Baseline: the same selection's DuckDB query alone (``datasets.query``: no PII scrub, no Parquet
write, no hash); target: each full build <= 10 s on 2 cores. It reports; it never fails.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import duckdb
import pyarrow as pa
from harness import Figure, print_header, print_table, verdict

import posttrain
from posttrain import capture, datasets

TARGET_S = 10.0
PROMPTS_PER_ROW = 5  # responses per distinct prompt

_INTERACTIONS = """
SELECT
    'i' || lpad(n::VARCHAR, 8, '0') AS id,
    TIMESTAMP '2025-06-01' + to_seconds(n) AS "timestamp",
    TIMESTAMP '2025-07-01' AS received_at,
    'user_' || (hash(n % $prompts) % 20000) AS user_id,
    'sess_' || (n // 3) AS session_id,
    ['free', 'pro', 'enterprise'][1 + n % 3] AS cohort,
    '[{"role":"system","content":"You are a helpful support assistant. Answer briefly and cite the policy."},'
        || '{"role":"user","content":"' || sentences[1 + n % $prompts % 37] || ' ' || sentences[1 + n % $prompts % 41]
        || ' (ticket ' || (n % $prompts) || ')'
        || CASE WHEN n % $prompts % 150 = 0 THEN ' write to jane.doe' || n % $prompts || '@example.com'
                WHEN n % $prompts % 150 = 1 THEN ' call me on +1 (555) 201-' || lpad((n % 9000 + 1000)::VARCHAR, 4, '0')
                WHEN n % $prompts % 150 = 2 THEN ' my card is 4111 1111 1111 1111'
                ELSE '' END || '"}]' AS messages,
    sentences[1 + n % 43] || ' ' || sentences[1 + n % 47] || ' (answer ' || n || ')' AS response,
    ['gpt-4o-mini', 'llama-3.1-8b-sft-v3', 'qwen2.5-7b-dpo-v1'][1 + n % 3] AS model,
    NULL AS experiment, NULL AS variant, NULL::DOUBLE AS assignment_prob, 850.0 AS latency_ms,
    120 AS prompt_tokens, 60 AS completion_tokens, 0.0003 AS cost,
    [['support', 'billing', 'code'][1 + n % 3]] AS tags,
    '{"app":"web","answer":"' || (n % $prompts) || '"}' AS metadata, '{}' AS consent, '[]' AS media,
    'import' AS source
FROM range($rows) t(n), (SELECT list(s) AS sentences FROM (
    SELECT 'Could you explain why the ' || w1 || ' ' || w2 || ' fails after the second retry of the ' || w3 AS s
    FROM unnest(['order', 'refund', 'invoice', 'account', 'password', 'cache', 'query']) a(w1),
         unnest(['service', 'export', 'import', 'report', 'payment', 'login']) b(w2),
         unnest(['nightly job', 'checkout', 'sync']) c(w3)))
"""

# One feedback row per interaction at most, by kind: thumbs, ratings, edits, choices.
_FEEDBACK = """
SELECT 'f' || lpad(n::VARCHAR, 8, '0') AS id, 'i' || lpad(n::VARCHAR, 8, '0') AS interaction_id,
    TIMESTAMP '2025-06-02' + to_seconds(n) AS "timestamp", TIMESTAMP '2025-07-01' AS received_at,
    CASE WHEN r < 95 THEN 'user' ELSE 'annotator' END AS source,
    CASE WHEN r < 55 THEN 'thumb' WHEN r < 75 THEN 'rating' WHEN r < 78 THEN 'edit' ELSE 'choice' END AS kind,
    CASE WHEN r < 55 THEN (CASE WHEN r < 38 THEN '1' ELSE '-1' END)
         WHEN r < 75 THEN (1 + n % 5)::VARCHAR
         WHEN r < 78 THEN NULL
         ELSE '"i' || lpad(((n + $prompts) % $rows)::VARCHAR, 8, '0') || '"' END AS value,
    CASE WHEN r < 55 THEN (CASE WHEN r < 38 THEN 1.0 ELSE -1.0 END) WHEN r < 75 THEN 1 + n % 5 END AS score,
    CASE WHEN r BETWEEN 75 AND 77 THEN 'A corrected answer for ticket ' || n || ', citing policy 4.2.' END AS text,
    NULL AS author, '{}' AS metadata
FROM (SELECT n, hash(n * 7919) % 100 AS r FROM range($rows) t(n))
WHERE r < 83
"""


def generate(rows: int) -> dict[str, pa.Table]:
    """Return the interactions and feedback as Arrow tables in ``capture.SCHEMAS``."""
    con = duckdb.connect()
    try:
        params = {"rows": rows, "prompts": max(rows // PROMPTS_PER_ROW, 1)}
        return {
            table: con.sql(sql, params=params).to_arrow_table().select(capture.SCHEMAS[table].names)
            for table, sql in (("interactions", _INTERACTIONS), ("feedback", _FEEDBACK))
        }
    finally:
        con.close()


def load(project: posttrain.Project, tables: dict[str, pa.Table]) -> None:
    """Insert the Arrow tables into the warehouse, one statement each."""
    cur = project.cursor()
    for name, table in tables.items():
        cur.register("_bench_rows", table.cast(capture.SCHEMAS[name]))
        cur.execute(f"INSERT INTO {name} BY NAME SELECT * FROM _bench_rows")
        cur.unregister("_bench_rows")
    cur.execute("CHECKPOINT")


def time_kind(
    project: posttrain.Project, kind: datasets.DatasetKind
) -> tuple[float, float, posttrain.records.DatasetVersion]:
    """Return (query-only s, full build s, the version) for one kind."""
    config = datasets.BuildConfig()
    started = time.perf_counter()
    datasets.query(project, kind, config)
    query_s = time.perf_counter() - started
    started = time.perf_counter()
    version = datasets.build(project, kind, f"bench-{kind}", config)
    return query_s, time.perf_counter() - started, version


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small run (< 30 s) for the smoke test")
    parser.add_argument("--rows", type=int, help="interactions (default 1,000,000; quick 50,000)")
    args = parser.parse_args()
    rows = args.rows or (50_000 if args.quick else 1_000_000)
    with tempfile.TemporaryDirectory(prefix="posttrain-bench-") as tmp:
        started = time.perf_counter()
        tables = generate(rows)
        gen_s = time.perf_counter() - started
        project = posttrain.init_project(Path(tmp) / "project")
        started = time.perf_counter()
        load(project, tables)
        load_s = time.perf_counter() - started
        feedback = tables["feedback"].num_rows
        del tables  # the builds should not share the machine's memory with the generated rows
        print_header(
            "posttrain datasets: build",
            [
                ("warehouse", f"{rows:,} interactions ({rows // PROMPTS_PER_ROW:,} prompts), {feedback:,} feedback"),
                ("setup", f"generated as Arrow in {gen_s:.1f} s, inserted in {load_s:.1f} s"),
            ],
        )
        figures, notes = [], []
        for kind in ("sft", "preference"):
            query_s, build_s, version = time_kind(project, kind)
            figures.append(
                Figure(
                    f"datasets.build {kind}",
                    build_s,
                    "s",
                    f"query alone {query_s:.2f} s",
                    f"<= {TARGET_S:.0f} s",
                    verdict(build_s, TARGET_S, higher_is_better=False),
                )
            )
            figures.append(Figure(f"  {kind} rows/s (of interactions scanned)", rows / build_s, "rows/s"))
            notes.append(
                f"  {version.ref}: {version.row_count:,} rows, {version.scrubbed:,} PII values scrubbed, "
                f"by source {version.stats.get('by_source')}"
            )
        project.close()
    print_table(figures)
    for line in notes:
        print(line)


if __name__ == "__main__":
    main()
