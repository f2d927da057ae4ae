"""The quality filter: drop answers too short or too long, repetitive, in another language, garbled or cut off,
boilerplate refusals (when refusing is not wanted), and rows a reward model scores too low.

Each removed row is attributed to the first check it fails, in this order (cheap checks first, so the
language identifier and the reward model only see rows the others kept); ``details`` counts rows per check
and the row's reason names the check and its figure:

- ``too_short``: the answer has fewer than ``min_chars`` characters (prompt and eval rows without a
  reference answer are not judged by it).
- ``too_long``: prompt + answer have more than ``max_chars`` characters.
- ``garbled`` (``drop_garbled``): the answer holds U+FFFD replacement characters, C0 control characters
  other than newline, tab and carriage return, mojibake (UTF-8 read as Latin-1/cp1252: "Ã©", "â€™", "Â "),
  an odd number of ``` code fences, or, in an answer of at least ``LONG_ANSWER`` characters, more than
  ``MAX_SYMBOL_SHARE`` of characters that are neither letters, digits nor whitespace.
- ``truncated`` (``drop_garbled``): an answer of at least ``LONG_ANSWER`` characters whose last non-space
  character is not terminal punctuation, a closing bracket or quote, markup (``*``, ``_``, ``|``, ``$``) or a
  code fence: it stops mid-word or mid-sentence. Short answers ("72", "abc") are never judged truncated.
- ``repetitive``: in an answer of at least ``MIN_REPETITION_WORDS`` words, the share of word 3-grams
  (lower-cased) that repeat an earlier one exceeds ``max_repetition`` (1: off).
- ``refusal`` (``drop_refusals``): the answer opens with a boilerplate refusal (``REFUSALS``: "I'm sorry,
  but I can't …", "I cannot help with …", "I can't assist with …", "As an AI language model …").
- ``language`` (``languages`` non-empty): py3langid on prompt + answer, decided once per distinct text.
  Only texts with at least ``MIN_LANGUAGE_LETTERS`` letters are judged, and a row is dropped only when the
  identifier's normalised probability of its top language is at least ``LANGUAGE_CONFIDENCE`` and that
  language is not listed: short, numeric or symbolic texts ("add 3 4", "7", "hgfe") are never judged.
- ``unverified`` (``verifier`` set): sft rows and preference pairs whose answer (a pair's chosen side) the
  verifier registered in ``[functions.verifiers]`` scores below ``min_verified``, called as evals call one
  without a reference answer: ``verifier(answer, None, prompt=messages)``, once per distinct prompt and
  answer (the built-ins need a reference answer and are refused). Prompt and eval rows hold reference
  answers, not a model's: they are not judged.
- ``low_reward`` (``min_reward`` set): a registered reward model (``reward_model``, else the newest of
  kind reward-model) scores prompt + answer on the CPU, in batches; rows below ``min_reward`` go.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from posttrain import compute
from posttrain.curation.config import QualityStage
from posttrain.curation.frame import PROMPT_COLUMN, Frame, Verdict
from posttrain.errors import InvalidInput

CHECKS = (
    "too_short", "too_long", "garbled", "truncated", "repetitive", "refusal", "language", "unverified", "low_reward",
)  # fmt: skip
LONG_ANSWER = 200
MAX_SYMBOL_SHARE = 0.5
MIN_REPETITION_WORDS = 10
MIN_LANGUAGE_LETTERS = 20
LANGUAGE_CONFIDENCE = 0.9
LANGUAGE_CHARS = 400  # the identifier reads this many characters of a text: enough to tell, bounded cost
REWARD_BATCH = 16

_CONTROL = r"[\x{00}-\x{08}\x{0B}\x{0C}\x{0E}-\x{1F}\x{7F}]"
# UTF-8 lead bytes C3/C2 read as Latin-1/cp1252, followed by a continuation byte read the same way; and E2 80
_MOJIBAKE = r"[ÃÂ][\x{80}-\x{BF}€‚ƒ„…†‡ˆ‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ]|â€"
_SYMBOL = r"[^\p{L}\p{N}\s]"
_ENDS_WELL = r"(?:[.!?…。！？;:)\]}>\"'”’»*_|$`~])\s*$"
_APOS = "['’]"
REFUSALS = (
    rf"I{_APOS}?m (?:very |so |truly )?sorry,? (?:but )?I (?:can{_APOS}?t|cannot|won{_APOS}t|am unable|am not able)",
    rf"I (?:can{_APOS}?t|cannot|won{_APOS}t|am unable to|am not able to) (?:help|assist|provide|comply|fulfil"
    rf"|do that|answer|support|engage|create|generate|share)",
    rf"I apologi[sz]e,? but I (?:can{_APOS}?t|cannot|won{_APOS}t|am unable|{_APOS}m unable)",
    rf"sorry,? (?:but )?I (?:can{_APOS}?t|cannot|won{_APOS}t|am unable)",
    r"as an AI (?:language model|assistant),? I",
)
_REFUSAL = r"(?i)^\s*(?:" + "|".join(REFUSALS) + ")"


def run(frame: Frame, stage: QualityStage) -> Verdict:
    """Return which rows pass every quality check; each removed row names its first failing check."""
    n = len(frame)
    prompt = _strings(frame.prompt)
    answer = _strings(frame.answer)
    reasons: list[str | None] = [None] * n
    details: dict[str, Any] = dict.fromkeys(CHECKS, 0)
    answer_len = pc.utf8_length(answer).to_numpy(zero_copy_only=False)
    total_len = answer_len + pc.utf8_length(prompt).to_numpy(zero_copy_only=False)

    def drop(check: str, failed: np.ndarray, why: Callable[[int], str]) -> None:
        for i in np.flatnonzero(failed):
            if reasons[i] is None:
                reasons[i] = why(int(i))
                details[check] += 1

    # prompt and eval rows may have no reference answer (a verifier judges the model's): none is not too short
    short = answer_len < stage.min_chars
    if frame.kind in ("prompts", "eval"):
        short &= answer_len > 0
    drop("too_short", short, lambda i: f"answer shorter than {stage.min_chars} characters")
    drop("too_long", total_len > stage.max_chars, lambda i: f"prompt + answer longer than {stage.max_chars} "
         f"characters ({int(total_len[i])})")  # fmt: skip
    if stage.drop_garbled:
        kinds = _garbled(answer, answer_len)
        drop("garbled", kinds != "", lambda i: f"garbled: {kinds[i]}")
        long = answer_len >= LONG_ANSWER
        ends_well = pc.match_substring_regex(answer, _ENDS_WELL).to_numpy(zero_copy_only=False)
        drop("truncated", long & ~ends_well, lambda i: "truncated: ends mid-sentence")
    if stage.max_repetition < 1:
        share = repetition(frame.answer, _pending(reasons))
        drop("repetitive", share > stage.max_repetition,
             lambda i: f"repeated 3-grams {share[i]:.2f} > {stage.max_repetition:g}")  # fmt: skip
    if stage.drop_refusals:
        head = pc.utf8_slice_codeunits(answer, 0, 300)
        refused = pc.match_substring_regex(head, _REFUSAL).to_numpy(zero_copy_only=False)
        drop("refusal", refused, lambda i: "boilerplate refusal")
    if stage.languages:
        found = languages(frame, _pending(reasons))
        wanted = set(stage.languages)
        off = np.array([lang is not None and lang not in wanted for lang in found], dtype=bool)
        drop("language", off, lambda i: f"language {found[i]!r} not in {sorted(wanted)}")
    if stage.verifier is not None and frame.kind in ("sft", "preference"):
        verified = verifier_scores(frame, stage.verifier, _pending(reasons))
        details["verifier"] = stage.verifier
        low = ~np.isnan(verified) & (verified < stage.min_verified)
        drop("unverified", low,
             lambda i: f"verifier {stage.verifier} scored {verified[i]:.3g} < {stage.min_verified:g}")  # fmt: skip
    if stage.min_reward is not None:
        name, scores = rewards(frame, stage.reward_model, _pending(reasons))
        details["reward_model"] = name
        low = ~np.isnan(scores) & (scores < stage.min_reward)
        drop("low_reward", low, lambda i: f"reward {scores[i]:.3g} < {stage.min_reward:g} under {name}")
    keep = np.array([r is None for r in reasons], dtype=bool)
    return Verdict(keep=keep, reasons=reasons, details=details)


def _strings(values: np.ndarray) -> pa.Array:
    """Return an arrow string array of the texts (None as '')."""
    return pc.fill_null(pa.array(values.tolist(), pa.string()), "")


def _pending(reasons: list[str | None]) -> np.ndarray:
    """Return which rows no check has removed yet (the costly checks look only at those)."""
    return np.array([r is None for r in reasons], dtype=bool)


def _garbled(answer: pa.Array, length: np.ndarray) -> np.ndarray:
    """Return per row what is broken in the answer ('' when nothing), the first finding of the checks."""
    out = np.full(len(answer), "", dtype=object)
    symbols = pc.count_substring_regex(answer, _SYMBOL).to_numpy(zero_copy_only=False)
    fences = pc.count_substring(answer, "```").to_numpy(zero_copy_only=False)
    findings = [
        ("replacement characters", pc.match_substring(answer, "\ufffd").to_numpy(zero_copy_only=False)),
        ("control characters", pc.match_substring_regex(answer, _CONTROL).to_numpy(zero_copy_only=False)),
        ("mojibake", pc.match_substring_regex(answer, _MOJIBAKE).to_numpy(zero_copy_only=False)),
        ("unbalanced code fences", fences % 2 == 1),
        ("mostly symbols", (length >= LONG_ANSWER) & (symbols > MAX_SYMBOL_SHARE * np.maximum(length, 1))),
    ]
    for name, hit in reversed(findings):  # the first finding in the list wins
        out[hit] = name
    return out


def repetition(answers: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Return per row the share of its answer's word 3-grams that repeat an earlier one (0 when not judged:
    not in ``rows``, or fewer than MIN_REPETITION_WORDS words)."""
    share = np.zeros(len(answers))
    for i in np.flatnonzero(rows):
        words = str(answers[i] or "").lower().split()
        if len(words) < MIN_REPETITION_WORDS:
            continue
        grams = list(zip(words, words[1:], words[2:], strict=False))
        share[i] = 1.0 - len(set(grams)) / len(grams)
    return share


@functools.lru_cache(maxsize=1)
def _identifier() -> Any:
    """Load py3langid's model once per process (normalised probabilities, every language)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def languages(frame: Frame, rows: np.ndarray) -> list[str | None]:
    """Return per row the language of prompt + answer, or None where it is not judged (not in ``rows``, fewer
    than MIN_LANGUAGE_LETTERS letters, or the identifier below LANGUAGE_CONFIDENCE); each distinct text once."""
    joined = pc.binary_join_element_wise(_strings(frame.prompt), _strings(frame.answer), "\n")
    text = pc.utf8_slice_codeunits(joined, 0, LANGUAGE_CHARS)
    letters = pc.count_substring_regex(text, r"\p{L}").to_numpy(zero_copy_only=False)
    index = np.flatnonzero(rows & (letters >= MIN_LANGUAGE_LETTERS))
    out: list[str | None] = [None] * len(frame)
    if not len(index):
        return out
    texts = pc.take(text, pa.array(index, pa.int64())).to_pylist()
    distinct = list(dict.fromkeys(texts))
    found, _ = compute.map_batches(
        frame.project, pa.table({"text": pa.array(distinct, pa.string())}), _identify_rows,
        what="curation's quality stage (language identification)",
    )  # fmt: skip
    decided = dict(zip(distinct, found.column("language").to_pylist(), strict=True))
    for i, t in zip(index, texts, strict=True):
        out[i] = decided[t]
    return out


def _identify_rows(table: pa.Table) -> tuple[pa.Table, dict[str, int]]:
    """Return the language of each row's ``text`` (a per-row step: any batch of texts, anywhere)."""
    return pa.table({"language": pa.array(identify(table.column("text").to_pylist()), pa.string())}), {}


def identify(texts: list[str], *, chunk: int = 8192) -> list[str | None]:
    """Return each text's language by py3langid, None where its probability is below LANGUAGE_CONFIDENCE.

    py3langid walks each text's bytes to count its features (in Python) and scores one text at a time; here
    the counts of a chunk of texts go into one sparse matrix and are scored with one product, as its
    ``classify`` would score them one by one (same normalisation, script aliases folded)."""
    from py3langid.langid import visit_counts
    from scipy.sparse import csr_matrix

    ider = _identifier()
    out: list[str | None] = []
    for start in range(0, len(texts), chunk):
        encoded = [ider._encode(t) for t in texts[start : start + chunk]]
        indptr, cols, counts = [0], list[int](), list[int]()
        for data in encoded:
            visits = visit_counts(ider.tk_nextmove, ider._rowbase, ider.tk_output, data) or {}
            cols.extend(visits.keys())
            counts.extend(visits.values())
            indptr.append(len(cols))
        features = csr_matrix((np.log1p(np.array(counts, dtype=np.float32)), cols, indptr),
                              shape=(len(encoded), ider.nb_ptc.shape[0]))  # fmt: skip
        scores = np.asarray(features @ ider.nb_ptc, dtype=np.float64) + ider.nb_pc
        scores[np.diff(indptr) == 0] = 0.0  # no features: uniform, so nothing is decided
        scores /= np.sqrt(np.maximum([len(d) for d in encoded], 1))[:, None]
        scores = np.exp(scores - scores.max(axis=1, keepdims=True))
        scores /= scores.sum(axis=1, keepdims=True)
        for i, j in ider._alias_pairs:
            scores[:, i] += scores[:, j]
            scores[:, j] = 0.0
        best = scores.argmax(axis=1)
        confidence = scores[np.arange(len(best)), best]
        out += [ider.nb_classes[b] if c >= LANGUAGE_CONFIDENCE else None for b, c in zip(best, confidence, strict=True)]
    return out


def verifier_scores(frame: Frame, name: str, rows: np.ndarray) -> np.ndarray:
    """Return the verifier's score of each row's answer in ``rows`` (NaN for the others), each distinct
    (prompt, answer) scored once."""
    from posttrain.evals.verifiers import get_verifier

    try:
        verifier = get_verifier(name, frame.project.settings.functions.verifiers)
    except InvalidInput as exc:
        raise InvalidInput(exc.message, field="curate.quality.verifier") from None
    index = np.flatnonzero(rows)
    scores = np.full(len(frame), np.nan)
    seen: dict[tuple[str, str], float] = {}
    for i, messages in zip(index, _conversations(frame, index), strict=True):
        answer = str(frame.answer[i] or "")
        key = (str(frame.prompt[i] or ""), answer)
        if key not in seen:
            try:
                seen[key] = float(verifier(answer, None, prompt=messages))
            except InvalidInput as exc:
                raise InvalidInput(exc.message, field="curate.quality.verifier") from None
        scores[i] = seen[key]
    return scores


def reward_model_name(frame: Frame, name: str | None) -> str:
    """Return the reward model to score with: ``name``, or the newest registered reward-model."""
    if name:
        return name
    from posttrain.models.registry import list_models

    for record in list_models(frame.project):
        if record.kind == "reward-model":
            return record.name
    raise InvalidInput(
        "min_reward needs a reward model: train one with 'posttrain train reward' or register one as a "
        "reward-model, or name it in quality.reward_model",
        field="curate.quality.reward_model",
    )


def rewards(frame: Frame, name: str | None, rows: np.ndarray) -> tuple[str, np.ndarray]:
    """Return the reward model's name and its score of each row in ``rows`` (NaN for the others)."""
    from posttrain.evals.scorers import RewardModelScorer

    model = reward_model_name(frame, name)
    index = np.flatnonzero(rows)
    scores = np.full(len(frame), np.nan)
    if not len(index):
        return model, scores
    scorer = RewardModelScorer(frame.project, model, batch_size=REWARD_BATCH)
    answers = [str(frame.answer[i] or "") for i in index]
    scores[index] = scorer.score([{"prompt": c} for c in _conversations(frame, index)], answers)
    return model, scores


def _conversations(frame: Frame, index: np.ndarray) -> list[list[dict[str, str]]]:
    """Return the prompt of each row as chat messages (role and text), from the table when it holds them."""
    column = frame.table.column(PROMPT_COLUMN) if PROMPT_COLUMN in frame.table.column_names else None
    messages = column.take(pa.array(index, pa.int64())).to_pylist() if column is not None else [None] * len(index)
    out = []
    for i, found in zip(index, messages, strict=True):
        if isinstance(found, list) and found and all(isinstance(m, dict) for m in found):
            out.append([{"role": str(m.get("role") or "user"), "content": _content(m.get("content"))} for m in found])
        else:
            out.append([{"role": "user", "content": str(frame.prompt[i] or "")}])
    return out


def _content(value: Any) -> str:
    """Return a message content's text (content parts joined)."""
    if isinstance(value, list):
        return " ".join(str(p.get("text") or "") for p in value if isinstance(p, dict))
    return "" if value is None else str(value)
