"""Curation at scale: 1,000,000 interactions through the full curation recipe, beside the plain build.

    /work/main/.venv/bin/python benchmarks/curation.py [--quick] [--rows N]

The warehouse holds ``rows`` interactions (``--quick`` 50,000) over a quarter as many distinct
prompts (so four answers each), with a thumb on most of them (about two in three up). Prompts and
answers are 8–30 words drawn from a 200-word vocabulary, so unrelated rows share few shingles, and
the data carries what curation is for, planted at known rates:

- near-duplicates: 3% of prompts are another prompt with a word added, answered the same way;
- contamination: an eval version of 2,000 prompts, 1% of the training prompts copied from it;
- garbled answers (a U+FFFD or mojibake) on 1%, truncated long answers on 0.5%;
- PII: a person's name and street address in 0.5% of prompts, an email or phone in 1%.

Timed: the plain ``datasets build sft`` of the same rows (the baseline: query, regex PII, write)
and the same build with the recipe ``pii`` (NER), ``dedup``, ``decontaminate``, ``quality`` and
``select`` (30%, static embeddings, stratified by cohort and family), with each stage's own time
from the version's manifest. Target: the curated build <= 60 s end to end on 2 cores. It reports;
it never fails.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from build_datasets import load
from harness import Figure, print_header, print_table, verdict

import posttrain
from posttrain import capture, datasets
from posttrain.curation import embed

TARGET_S = 60.0
ANSWERS_PER_PROMPT = 4
EVAL_PROMPTS = 2_000
RECIPE: dict[str, Any] = {
    "pii": {},
    "dedup": {"threshold": 0.8},
    "decontaminate": {},
    "quality": {"max_repetition": 0.5},
    "select": {"fraction": 0.3, "embedder": "static", "stratify": ["cohort", "family"]},
}

_WORDS = """
time person year way day thing man world life hand part child eye woman place work week case point government
company number group problem fact be have do say get make go know take see come think look want give use find
tell ask seem feel try leave call good new first last long great little own other old right big high different
small large next early young important few public bad same able to of in for on with at by from up about into
over after beneath under above the and a that I it not he you this but his they her she or an will my one all
would there their what so out if who which go me when can like no just him people your some could them than then
now only its also back two how our well even because any these most us cache query order refund invoice account
password service export import report payment login nightly job checkout sync retry policy ticket server latency
deploy branch commit review build test release schedule budget quota region cluster backup restore migrate table
index column schema vector model prompt token sample batch epoch loss metric score label queue judge
""".split()  # noqa: SIM905 (a word list reads better as text)

# {p} is the distinct prompt number (so its four answers share the prompt), n the interaction number.
_INTERACTIONS = """
WITH words AS (SELECT $words AS w),
base AS (  -- a near-duplicate row: prompt p + 50's words and k-th answer, with a word added to the prompt
    SELECT n, n % $prompts AS p, (n % $prompts) % 100 < 3 AND n % $prompts + 50 < $prompts AS near,
           CASE WHEN (n % $prompts) % 100 < 3 AND n % $prompts + 50 < $prompts THEN n % $prompts + 50
                ELSE n % $prompts END AS src
    FROM range($rows) t(n)
),
hashed AS (SELECT n, p, near, hash(src) AS h, hash(src * 7919 + n // $prompts) AS a FROM base),
texts AS (
    SELECT n, p, h, a, near,
        ['add', 'explain', 'summarise', 'fix', 'translate', 'plan'][(1 + h % 6)::BIGINT] || ' '
        || array_to_string([w[(1 + hash(h + k) % len(w))::BIGINT] FOR k IN range((7 + h % 22)::BIGINT)], ' ') AS prompt,
        array_to_string([w[(1 + hash(a + k) % len(w))::BIGINT] FOR k IN range((8 + a % 22)::BIGINT)], ' ') AS answer
    FROM hashed, words
),
planted AS (
    SELECT n, p, h, a,
        CASE WHEN near THEN prompt || ' please'
             WHEN p % 100 = 3 THEN 'eval question ' || (p % $eval_prompts) || ': ' || $eval_text
             WHEN p % 200 = 4 THEN prompt || ' I am Maria Gonzalez and I live at 42 Elm Street, Springfield'
             WHEN p % 100 = 5 THEN prompt || ' write to jane.doe' || p || '@example.com or call (555) 201-4477'
             ELSE prompt END AS prompt,
        CASE WHEN a % 100 = 0 THEN answer || ' Ã© â€™ ' || chr(65533)
             WHEN a % 200 = 1 THEN answer || ' ' || repeat(answer || ' ', 8) || 'and then the'
             ELSE answer || '.' END AS answer
    FROM texts
)
SELECT
    'i' || lpad(n::VARCHAR, 8, '0') AS id,
    TIMESTAMP '2025-06-01' + to_seconds(n) AS "timestamp",
    TIMESTAMP '2025-07-01' AS received_at,
    'user_' || (hash(n) % 50000) AS user_id,
    'sess_' || (n // 3) AS session_id,
    ['adult', 'adult', 'adult', 'minor'][(1 + n % 4)::BIGINT] AS cohort,
    to_json([{'role': 'user', 'content': prompt}])::VARCHAR AS messages,
    answer AS response,
    'assistant-v1' AS model,
    NULL AS experiment, NULL AS variant, NULL::DOUBLE AS assignment_prob, 500.0 AS latency_ms,
    40 AS prompt_tokens, 30 AS completion_tokens, 0.0001 AS cost,
    []::VARCHAR[] AS tags, '{}' AS metadata, '{}' AS consent, '[]' AS media, 'import' AS source
FROM planted
"""

_FEEDBACK = """
SELECT 'f' || lpad(n::VARCHAR, 8, '0') AS id, 'i' || lpad(n::VARCHAR, 8, '0') AS interaction_id,
    TIMESTAMP '2025-06-02' + to_seconds(n) AS "timestamp", TIMESTAMP '2025-07-01' AS received_at,
    'user' AS source, 'thumb' AS kind,
    CASE WHEN r < 60 THEN '1' ELSE '-1' END AS value, CASE WHEN r < 60 THEN 1.0 ELSE -1.0 END AS score,
    NULL AS text, NULL AS author, '{}' AS metadata
FROM (SELECT n, hash(n * 31 + 7) % 100 AS r FROM range($rows) t(n)) WHERE r < 90
"""


def generate(rows: int) -> tuple[dict[str, pa.Table], pa.Table]:
    """Return the warehouse tables (``capture.SCHEMAS``) and the eval suite's rows."""
    con = duckdb.connect()
    try:
        eval_text = "which " + " ".join(_WORDS[10:22])
        params = {"rows": rows, "prompts": max(rows // ANSWERS_PER_PROMPT, 1), "words": _WORDS,
                  "eval_prompts": EVAL_PROMPTS, "eval_text": eval_text}  # fmt: skip
        interactions = con.sql(_INTERACTIONS, params=params).to_arrow_table()
        feedback = con.sql(_FEEDBACK, params={"rows": rows}).to_arrow_table()
        suite = pa.table({
            "prompt": [[{"role": "user", "content": f"eval question {k}: {eval_text}"}] for k in range(EVAL_PROMPTS)],
            "answer": ["yes"] * EVAL_PROMPTS, "completion": [None] * EVAL_PROMPTS,
            "cohort": ["adult"] * EVAL_PROMPTS, "user_id": [f"e{k}" for k in range(EVAL_PROMPTS)],
            "session_id": [f"e{k}" for k in range(EVAL_PROMPTS)],
        })  # fmt: skip
        tables = {
            "interactions": interactions.select(capture.SCHEMAS["interactions"].names),
            "feedback": feedback.select(capture.SCHEMAS["feedback"].names),
        }
        return tables, suite
    finally:
        con.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small run for the smoke test")
    parser.add_argument("--rows", type=int, help="interactions (default 1,000,000; quick 50,000)")
    args = parser.parse_args()
    rows = args.rows or (50_000 if args.quick else 1_000_000)
    with tempfile.TemporaryDirectory(prefix="posttrain-bench-") as tmp:
        started = time.perf_counter()
        tables, suite = generate(rows)
        gen_s = time.perf_counter() - started
        project = posttrain.init_project(Path(tmp) / "project")
        load(project, tables)
        datasets.write_version(project, "suite", "eval", suite, recipe={"source": "benchmark"}, sources={})
        del tables
        started = time.perf_counter()
        embed.embed(["warm the static embedder"], "static")  # distilled once per machine, then cached
        warm_s = time.perf_counter() - started
        print_header("posttrain datasets: curation", [
            ("warehouse", f"{rows:,} interactions, {rows // ANSWERS_PER_PROMPT:,} prompts"),
            ("eval suite", f"{EVAL_PROMPTS:,} prompts"),
            ("setup", f"generated and loaded in {gen_s:.1f} s; static embedder ready in {warm_s:.1f} s "
                      "(distilled from MiniLM once per machine, then loaded from the cache)"),
            ("recipe", str(RECIPE)),
        ])  # fmt: skip
        started = time.perf_counter()
        plain = datasets.build(project, "sft", "plain", datasets.BuildConfig())
        plain_s = time.perf_counter() - started
        started = time.perf_counter()
        curated = datasets.build(project, "sft", "curated", datasets.BuildConfig.parse(curate=RECIPE))
        curated_s = time.perf_counter() - started
        report = curated.stats["curation"]
        figures = [
            Figure(
                "datasets.build sft, curated",
                curated_s,
                "s",
                f"plain build {plain_s:.1f} s",
                f"<= {TARGET_S:.0f} s",
                verdict(curated_s, TARGET_S, higher_is_better=False),
            ),  # fmt: skip
        ]
        for stage in report["stages"]:
            figures.append(Figure(f"  {stage['stage']} ({stage['rows_in']:,} rows in, -{stage['removed']:,})",
                                  stage["seconds"], "s"))  # fmt: skip
        project.close()
    print_table(figures)
    print(f"  plain: {plain.row_count:,} rows; curated: {curated.row_count:,} rows "
          f"({report['rows_in']:,} in), PII replaced {curated.stats['pii_scrubbed']}")  # fmt: skip


if __name__ == "__main__":
    main()
