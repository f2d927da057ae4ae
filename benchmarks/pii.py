"""PII scrubbing quality and speed: the regex pass plus the NER pass on the planted PII set.

    /work/main/.venv/bin/python benchmarks/pii.py [--quick] [--seed N]

``posttrain.curation.planted.planted_set`` makes 30 sentences per kind (``--quick``: 10) with one
synthetic personal value each (emails, phones, cards, SSNs, IBANs, IPv4/IPv6, person names, street
addresses, API tokens, passport numbers), the value's span recorded, and 1,000 PII-free sentences
full of numbers (``--quick``: 300). They go through the full PII stage as a build runs it:
``curate.scrub_table`` (RE2) then ``curation.pii.scrub_table`` (Presidio + spaCy), as message
lists.

Figures, per kind:

- recall: the share of planted values *found*; a value is found when none of its letters and
  digits survive (aligning each sentence with its scrubbed form, placeholders read as one
  unmatched character, no alphanumeric character of the value's span lies in an unchanged stretch);
- precision: per placeholder kind, replacements whose replaced stretch overlaps a planted value over
  all its replacements, planted and clean sentences together;
- false positives: replacements in the PII-free sentences, and how many of them were touched;
- time: each pass's wall time (the NER's includes loading the engine once).

Targets: recall >= 0.95 on every regex kind, >= 0.8 on names and addresses; no false positives on
the clean sentences (baseline: the regex pass alone, without NER, for names and addresses: 0).
It reports; it never fails.
"""

from __future__ import annotations

import argparse
import os
import time

import pyarrow as pa
import pyarrow.compute as pc
from harness import Figure, print_header, print_table, verdict

from posttrain import curate
from posttrain.curation import pii
from posttrain.curation.config import PIIStage
from posttrain.curation.planted import KINDS, Scores, planted_set, score

NER_KINDS = ("person", "address")
TARGETS = {kind: 0.8 if kind in NER_KINDS else 0.95 for kind in KINDS}


def _as_messages(texts: list[str]) -> pa.Table:
    return pa.table({"prompt": [[{"role": "user", "content": t}] for t in texts]})


def _texts(table: pa.Table) -> list[str]:
    return [row[0]["content"] for row in table.column("prompt").to_pylist()]


def run(seed: int, per_kind: int, clean: int) -> None:
    """Scrub the planted set through both passes and print the figures."""
    planted, clean_texts = planted_set(seed, per_kind=per_kind, clean=clean)
    texts = [p.text for p in planted] + clean_texts
    print_header("PII: regex + NER on the planted set", [
        ("planted", f"{len(planted)} sentences ({per_kind} per kind, {len(KINDS)} kinds), seed {seed}"),
        ("clean", f"{len(clean_texts)} PII-free sentences full of numbers"),
        ("NER", f"Presidio + spaCy {pii.MODEL}, min_score {PIIStage().min_score}"),
    ])  # fmt: skip
    table = _as_messages(texts)
    started = time.perf_counter()
    table, regex_counts = curate.scrub_table(table)
    regex_s = time.perf_counter() - started
    regex_only = _texts(table)
    started = time.perf_counter()
    pii.engine()
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    table, ner_counts = pii.scrub_table(table, PIIStage())
    ner_s = time.perf_counter() - started
    out = _texts(table)
    n = len(planted)
    scores = score(planted, clean_texts, out[:n], out[n:])
    baseline = score(planted, clean_texts, regex_only[:n], regex_only[n:])
    _print(scores, baseline)
    gated = pc.sum(pc.match_substring_regex(pa.array(regex_only), pii.GATE)).as_py()
    print_table([
        Figure("regex pass", regex_s * 1000, "ms", target=f"{len(texts)} texts"),
        Figure("NER engine load", load_s, "s"),
        Figure("NER pass", ner_s, "s", target=f"{gated} of {len(texts)} texts past the gate"),
        Figure("NER throughput", gated / ner_s if ner_s else None, "texts/s"),
    ])  # fmt: skip
    print(f"  replaced: regex {regex_counts}, NER {ner_counts}")
    for miss in scores.missed[:12]:
        print(f"  missed {miss.kind}: {miss.value!r} in {miss.text!r}")


def _print(scores: Scores, baseline: Scores) -> None:
    figures = []
    for kind in KINDS:
        recall = scores.recall(kind)
        figures.append(Figure(f"{kind} recall", recall, "", baseline=f"regex alone {baseline.recall(kind):.2f}",
                              target=f">= {TARGETS[kind]}", verdict=verdict(recall, TARGETS[kind])))  # fmt: skip
    for kind in sorted(scores.replaced):
        precision = scores.precision(kind)
        figures.append(Figure(f"<{kind.upper()}> precision", precision, "",
                              target=f"{scores.replaced[kind]} replacements"))  # fmt: skip
    fps = sum(scores.clean_hits.values())
    regex_fps = sum(baseline.clean_hits.values())
    figures.append(Figure("false positives (clean)", fps, "", baseline=f"regex alone {regex_fps}",
                          target="0", verdict=verdict(fps, 0, higher_is_better=False)))  # fmt: skip
    figures.append(Figure("clean sentences touched", scores.clean_touched, ""))
    print_table(figures)
    if scores.clean_hits:
        print(f"  false positives by kind: {scores.clean_hits}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 per kind, 300 clean sentences")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    run(args.seed, 10 if args.quick else 30, 300 if args.quick else 1000)


if __name__ == "__main__":
    main()
