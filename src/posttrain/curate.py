"""Curation: scrub personal data (PII) from text before anything is trained on.

``scrub_text`` handles one string; ``scrub_table`` scrubs every text field of an Arrow table
(string columns and the ``content`` of chat-message lists) with vectorised RE2 kernels, running
Python only for card-number candidates (the Luhn check) and only on the rows that hold one.

Kinds, in the order they are replaced (earlier kinds win where patterns overlap):

- ``token``: API secrets: OpenAI ``sk-…``/``sk-proj-…``, AWS ``AKIA``/``ASIA`` + 16, GitHub
  ``ghp_``/``gho_``/``github_pat_…``, Slack ``xoxb-``/``xoxp-…``;
- ``email``; ``iban`` (2 letters, 2 check digits, 4-character groups);
- ``card``: 13–19 digits (first digit 1–9, spaces or dashes between) passing Luhn;
- ``ssn``: US 3-2-4 with dashes;
- ``passport``: the word *passport* (any case; optionally ``no.``, ``number``, ``#``, ``:``, ``is``)
  followed by 6–9 letters and digits holding at least one digit. Only the number is replaced:
  ``passport no. <PASSPORT>``;
- ``ipv6``, ``ipv4``;
- ``phone``: US/NANP numbers with separators, ``(555) 201-1234``, ``555-201-1234``,
  ``555.201.1234``, ``555 201 1234``, optionally ``+1``/``1-`` first (area code and exchange
  start with 2–9, as NANP numbers do); international numbers that start with ``+`` or ``00``
  and a country code, then 5 or more digits in groups (``+44 20 7946 0958``,
  ``+49 30 901820``, ``+33 1 42 68 53 00``, ``0044 20 7946 0958``).

Each value is replaced by a placeholder such as ``<EMAIL>``. Regexes miss some PII (names,
addresses): ``posttrain.curation.pii`` runs an NER pass after this one.

Deliberately not PII: dates (``2024-03-15``, ``15/03/2024``), versions (``v1.2.3``, ``3.11.4``),
times, prices, plain integers of any length (``5552011234`` without separators is not a phone),
and ``123 456 7890`` (NANP area codes never start with 0 or 1, so 3-3-4 groups starting with 0/1
stay). Known false positives: hex-only ``abc::def`` tokens read as IPv6; three space-, dot- or
dash-separated groups of 3, 3 and 4 digits starting with 2–9 read as a US phone number; ``+``
or ``00`` followed by a country-code-like number and two or more digit groups (``+12 345 678``)
reads as an international phone; national numbers without a country code outside NANP
(``020 7946 0958``) are missed.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_HEX = r"[0-9A-Fa-f]{1,4}"
_PHONE_US = r"(?:(?:\+|\b)1[ .\-]?)?(?:\([2-9]\d{2}\)[ .\-]?|\b[2-9]\d{2}[ .\-])[2-9]\d{2}[ .\-]\d{4}\b"
_PHONE_INTL = r"(?:\+|\b00)[1-9]\d{0,2}[ .\-]?(?:\(\d{1,4}\)[ .\-]?)?\d{1,4}(?:[ .\-]?\d{2,4}){2,5}\b"
# 6-9 letters and digits with at least one digit (RE2 has no look-ahead: one branch per count of leading letters)
_PASSPORT_NUMBER = "(?:" + "|".join(f"[A-Za-z]{{{k}}}\\d[A-Za-z0-9]{{{max(0, 5 - k)},{8 - k}}}" for k in range(9)) + ")"
# RE2 (Arrow) and Python's re both read these; RE2 has no look-arounds, so \b bounds them.
PATTERNS: dict[str, str] = {
    "token": r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_\-]{20,}|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b|\bgh[pousr]_[A-Za-z0-9]{30,}"
    r"|\bgithub_pat_[A-Za-z0-9_]{22,}|\bxox[abposr]-[A-Za-z0-9\-]{10,}",
    "email": r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}",
    "iban": r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b",
    "card": r"\b[1-9](?:[ \-]?\d){12,18}\b",
    "ssn": r"\b\d{3}-\d{2}-\d{4}\b",
    # group 1 (the word and its 'no.'/'#'/':') is kept; the number after it is replaced
    "passport": rf"(?i)(\bpassport(?:\s*(?:no\.?|nr\.?|number|num\.?|#))?(?:\s+is)?\s*[:#]?\s*){_PASSPORT_NUMBER}\b",
    "ipv6": rf"\b(?:(?:{_HEX}:){{7}}{_HEX}|(?:{_HEX}:){{1,6}}(?::{_HEX}){{1,6}})\b",
    "ipv4": rf"\b{_OCTET}(?:\.{_OCTET}){{3}}\b",
    "phone": rf"{_PHONE_US}|{_PHONE_INTL}",
}
PLACEHOLDERS = {kind: f"<{kind.upper()}>" for kind in PATTERNS}
# what a match becomes (the passport word stays: RE2 has no look-behind, so it is matched and put back)
_REPLACEMENTS = {**PLACEHOLDERS, "passport": r"\1<PASSPORT>"}
# A row can hold PII only if it has an '@', a run of digits, a '::'-style hex address, an IBAN-like
# start, a token prefix or the word passport.
_MAYBE = (
    r"@|\d[\d .()\-]{5,}\d|[0-9A-Fa-f]:[0-9A-Fa-f:]*:|[A-Z]{2}\d{2}|sk-|AKIA|ASIA|gh[pousr]_|github_pat_|xox[a-z]-"
    r"|(?i:passport)"
)
_COMPILED = {kind: re.compile(p) for kind, p in PATTERNS.items()}
_SKIP_COLUMNS = frozenset({"id", "interaction_id", "interaction_ids", "source", "verifier"})

Counts = dict[str, int]


def luhn_valid(digits: str) -> bool:
    """Return whether a digit string passes the Luhn checksum (card numbers do)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch)
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _card_replacer(counts: Counts) -> Callable[[re.Match[str]], str]:
    def replace(match: re.Match[str]) -> str:
        if luhn_valid(re.sub(r"\D", "", match.group())):
            counts["card"] += 1
            return PLACEHOLDERS["card"]
        return match.group()

    return replace


def scrub_text(text: str) -> tuple[str, int]:
    """Return ``text`` with PII replaced by placeholders, and how many values were replaced."""
    text, counts = _scrub_one(text)
    return text, sum(counts.values())


def _scrub_one(text: str) -> tuple[str, Counts]:
    counts = dict.fromkeys(PATTERNS, 0)
    for kind, pattern in _COMPILED.items():
        if kind == "card":
            text = pattern.sub(_card_replacer(counts), text)
        else:
            text, n = pattern.subn(_REPLACEMENTS[kind], text)
            counts[kind] += n
    return text, counts


def scrub_strings(values: pa.Array) -> tuple[pa.Array, Counts]:
    """Scrub a string array; return the new array and per-type counts."""
    counts = dict.fromkeys(PATTERNS, 0)
    maybe = pc.fill_null(pc.match_substring_regex(values, _MAYBE), False)
    if not pc.any(maybe).as_py():
        return values, counts
    subset = pc.filter(values, maybe)
    for kind, pattern in PATTERNS.items():
        if kind == "card":
            subset = _scrub_cards(subset, counts)
            continue
        found = pc.sum(pc.count_substring_regex(subset, pattern)).as_py() or 0
        if found:
            counts[kind] += found
            subset = pc.replace_substring_regex(subset, pattern, _REPLACEMENTS[kind])
    return pc.replace_with_mask(values, maybe, subset), counts


def _scrub_cards(values: pa.Array, counts: Counts) -> pa.Array:
    """Replace Luhn-valid card numbers; Python runs only on the rows holding a candidate."""
    candidate = pc.fill_null(pc.match_substring_regex(values, PATTERNS["card"]), False)
    if not pc.any(candidate).as_py():
        return values
    replace = _card_replacer(counts)
    fixed = [_COMPILED["card"].sub(replace, s) for s in pc.filter(values, candidate).to_pylist()]
    return pc.replace_with_mask(values, candidate, pa.array(fixed, type=values.type))


def _scrub_messages(values: pa.Array, counts: Counts) -> pa.Array:
    """Scrub the ``content`` of every message in a list<struct<role, content>> array."""
    offsets = pc.subtract(values.offsets, values.offsets[0])
    messages = values.flatten()
    fields = messages.flatten()  # children with the struct's offset and nulls applied
    index = messages.type.get_field_index("content")
    fields[index], found = scrub_strings(fields[index])
    for kind, n in found.items():
        counts[kind] += n
    rebuilt = pa.StructArray.from_arrays(fields, fields=list(messages.type), mask=messages.is_null())
    return pa.ListArray.from_arrays(offsets, rebuilt, type=values.type, mask=values.is_null())


def _is_messages(type_: pa.DataType) -> bool:
    return (
        pa.types.is_list(type_)
        and pa.types.is_struct(type_.value_type)
        and type_.value_type.get_field_index("content") >= 0
        and pa.types.is_string(type_.value_type.field("content").type)
    )


def scrub_table(table: pa.Table, *, skip: frozenset[str] = _SKIP_COLUMNS) -> tuple[pa.Table, Counts]:
    """Scrub every text field of ``table`` (ids excepted); return it with per-type counts."""
    counts = dict.fromkeys(PATTERNS, 0)
    for index, field in enumerate(table.schema):
        if field.name in skip:
            continue
        if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
            column, found = scrub_strings(table.column(index).combine_chunks())
            for kind, n in found.items():
                counts[kind] += n
        elif _is_messages(field.type):
            column = _scrub_messages(table.column(index).combine_chunks(), counts)
        else:
            continue
        table = table.set_column(index, field, column)
    return table, counts
