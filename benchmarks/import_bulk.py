"""Bulk import throughput: ``posttrain.capture.import_file`` beside DuckDB's own JSON reader.

    /work/main/.venv/bin/python benchmarks/import_bulk.py [--quick] [--rows N]

Writes a JSONL file (default 1,000,000 rows; --quick 50,000) mixing posttrain records (with
client-side ids) and OpenAI-style chat logs (``{"messages": [..., {"role": "assistant", ...}]}``),
then times, each into a fresh database:

- the baseline: ``CREATE TABLE t AS SELECT * FROM read_json(file, format='newline_delimited')``;
- the same with posttrain's declared columns (what parsing alone costs, without the transforms);
- ``posttrain.capture.import_file`` into a fresh project (what ``posttrain capture import`` runs).

It reports figures beside their baseline and target; it never fails on a missed target.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import duckdb
import orjson
from harness import Figure, print_header, print_table, verdict
from workload import Workload

import posttrain
from posttrain import capture

TARGET_ROWS_PER_S = 300_000
TARGET_RATIO = 2.0  # import_file time / DuckDB read_json time, at most
OPENAI_SHARE = 0.4  # the rest are posttrain records with client-side ids


def write_jsonl(path: Path, rows: int, seed: int = 0) -> tuple[int, int]:
    """Write ``rows`` lines; return (posttrain records, OpenAI chat logs) written."""
    workload, ours = Workload(seed), 0
    with path.open("wb") as f:
        chunk: list[bytes] = []
        for i in range(rows):
            if i % 5 < 5 * OPENAI_SHARE:  # 2 lines in 5
                record = workload.openai_log(i)
            else:
                record, ours = workload.interaction(i), ours + 1
            chunk.append(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
            if len(chunk) == 10_000:
                f.write(b"".join(chunk))
                chunk = []
        f.write(b"".join(chunk))
    return ours, rows - ours


def _literal(path: Path) -> str:
    return str(path).replace("'", "''")


def time_duckdb(db_path: Path, source: Path, *, columns: str = "") -> tuple[float, float, int]:
    """Time CREATE TABLE AS SELECT * FROM read_json(...) in a fresh DuckDB file.

    Return (statement s, close+checkpoint s, rows).
    """
    con = duckdb.connect(str(db_path))
    try:
        started = time.perf_counter()
        con.execute(
            f"CREATE TABLE t AS SELECT * FROM read_json('{_literal(source)}', format='newline_delimited'{columns})"
        )
        seconds = time.perf_counter() - started
        rows = con.execute("SELECT count(*) FROM t").fetchone()[0]  # type: ignore[index]
    finally:
        closing = time.perf_counter()
        con.close()
    return seconds, time.perf_counter() - closing, int(rows)


def posttrain_columns() -> str:
    """Return the ``columns=`` option import_file passes to read_json, for the parse-only baseline."""
    declared = capture._IMPORT_COLUMNS["interactions"]  # the exact columns import_file declares
    return ", columns={" + ", ".join(f"'{k}': '{v}'" for k, v in declared.items()) + "}"


def time_import(root: Path, source: Path) -> tuple[float, float, posttrain.records.ImportReport]:
    """Time import_file into a fresh project; return (import s, close+checkpoint s, report)."""
    project = posttrain.init_project(root)
    try:
        started = time.perf_counter()
        report = capture.import_file(project, source)
        seconds = time.perf_counter() - started
    finally:
        closing = time.perf_counter()
        project.close()
    return seconds, time.perf_counter() - closing, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small run (< 30 s) for the smoke test")
    parser.add_argument("--rows", type=int, help="rows in the file (default 1,000,000; quick 50,000)")
    args = parser.parse_args()
    rows = args.rows or (50_000 if args.quick else 1_000_000)
    with tempfile.TemporaryDirectory(prefix="posttrain-bench-") as tmp:
        source = Path(tmp) / "chat_logs.jsonl"
        started = time.perf_counter()
        ours, openai = write_jsonl(source, rows)
        size_mb = source.stat().st_size / 1e6
        print_header(
            "posttrain capture: bulk import",
            [
                (
                    "file",
                    f"{rows:,} rows ({ours:,} posttrain records with ids, {openai:,} OpenAI chat logs), "
                    f"{size_mb:,.0f} MB, written in {time.perf_counter() - started:.1f} s",
                ),
            ],
        )
        duck_s, duck_close_s, duck_rows = time_duckdb(Path(tmp) / "auto.duckdb", source)
        typed_s, _, typed_rows = time_duckdb(Path(tmp) / "typed.duckdb", source, columns=posttrain_columns())
        import_s, close_s, report = time_import(Path(tmp) / "project", source)
    duck_rate, typed_rate, import_rate = rows / duck_s, rows / typed_s, rows / import_s
    ratio = import_s / duck_s
    print_table(
        [
            Figure("DuckDB read_json -> CREATE TABLE (auto schema)", duck_rate, "rows/s", "the baseline"),
            Figure("DuckDB read_json -> CREATE TABLE (posttrain columns)", typed_rate, "rows/s", "parse only"),
            Figure(
                "posttrain.capture.import_file",
                import_rate,
                "rows/s",
                f"{duck_rate:,.0f} rows/s",
                f">= {TARGET_ROWS_PER_S:,} rows/s",
                verdict(import_rate, TARGET_ROWS_PER_S),
            ),
            Figure(
                "import_file time / DuckDB read_json time",
                ratio,
                "x",
                "1.00 x",
                f"<= {TARGET_RATIO:.1f} x",
                verdict(ratio, TARGET_RATIO, higher_is_better=False),
            ),
            Figure("import_file throughput", size_mb / import_s, "MB/s", f"{size_mb / duck_s:,.0f} MB/s"),
            Figure(
                "until durable (statement + close/checkpoint)",
                rows / (import_s + close_s),
                "rows/s",
                f"{rows / (duck_s + duck_close_s):,.0f} rows/s",
            ),
        ]
    )
    print(
        f"  DuckDB: {duck_rows:,} rows in {duck_s:.2f} s (+ {duck_close_s:.2f} s close); "
        f"with posttrain columns {typed_rows:,} in {typed_s:.2f} s"
    )
    print(
        f"  import_file: {report.rows:,} rows, {report.created:,} created, {report.duplicates:,} duplicates, "
        f"{report.rejected:,} rejected in {import_s:.2f} s (+ {close_s:.2f} s close/checkpoint)"
    )
    for line in report.errors:
        print(f"    {line}")


if __name__ == "__main__":
    main()
