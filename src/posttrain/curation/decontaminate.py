"""The decontamination stage: drop training rows whose prompt overlaps an eval version's prompts.

The eval prompts come from ``stage.against`` (``NAME`` or ``NAME@V``) or, when that is empty,
from every version of kind ``eval`` in the project other than versions of the dataset being built.
Prompts are tokenised as lowercase ``\\w+`` tokens.

- A training prompt of fewer than ``short_tokens`` tokens is contaminated when its tokens, joined
  by one space, equal an eval prompt's. Containment in a longer eval prompt does not count: short
  generic instructions ("summarise this", "translate to french") occur inside many unrelated eval
  prompts, and dropping them would cost real data for no leak.
- A longer prompt is contaminated when the share of its distinct ``n``-token n-grams found in any
  eval prompt's n-grams exceeds ``max_overlap`` (0: any shared n-gram).

Only prompts are compared, not answers: an eval item is its prompt (the model is scored on what
it answers to that prompt), so a training row leaks the item when it carries the prompt; answers
to different questions share phrasing ("here is a summary of the main points") that would read as
overlap without any leak.

N-grams are hashed to 64 bits (a polynomial over the tokens' hashes, vectorised over every prompt
at once); a collision between unrelated n-grams is about 2^-64 per pair.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from posttrain import versions as datasets
from posttrain.curation.config import DecontaminateStage
from posttrain.curation.frame import PROMPT_COLUMN, Frame, Verdict, message_text
from posttrain.errors import InvalidInput, NotFound
from posttrain.records import DatasetVersion

FIELD = "curate.decontaminate.against"
_TOKEN = re.compile(r"\w+")
_MUL = np.uint64(0x100000001B3)
_M1, _M2 = np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53)
_S33 = np.uint64(33)


@dataclass
class EvalPrompts:
    """The eval side: each ref, its whole normalised prompts and its n-gram hashes."""

    refs: list[str]
    whole: dict[str, int]  # normalised prompt -> index of the first ref holding it
    ngrams: list[np.ndarray]  # per ref, its sorted distinct n-gram hashes
    prompts: int


def run(frame: Frame, stage: DecontaminateStage) -> Verdict:
    """Drop the rows whose prompt matches an eval prompt whole (short prompts) or shares its n-grams (long ones)."""
    versions = eval_versions(frame, stage)
    keep = np.ones(len(frame), dtype=bool)
    if not versions:
        return Verdict(keep=keep, reasons=[None] * len(frame), note="no eval versions to check against",
                       details={"against": [], "eval_prompts": 0})  # fmt: skip
    evals = load_eval_prompts(versions, stage.n)
    details = {"against": evals.refs, "eval_prompts": evals.prompts}
    # each distinct prompt once: a product's prompts repeat (several answers to one request)
    encoded = pa.array(frame.prompt.tolist(), pa.string()).dictionary_encode()
    distinct = encoded.dictionary.to_pylist()
    fine = np.ones(len(distinct), dtype=bool)
    why: list[str | None] = [None] * len(distinct)
    tokens = [tokenise(p) for p in distinct]
    for row, words in enumerate(tokens):
        if len(words) < stage.short_tokens:
            found = evals.whole.get(" ".join(words))
            if found is not None:
                fine[row] = False
                why[row] = f"prompt in eval {evals.refs[found]} (whole match)"
    long_rows = np.flatnonzero(np.array([len(t) >= stage.short_tokens for t in tokens], dtype=bool))
    _check_overlap(long_rows, [tokens[i] for i in long_rows.tolist()], evals, stage, fine, why)
    index = encoded.indices.to_numpy(zero_copy_only=False)
    keep = fine[index]
    reasons = [why[i] for i in index.tolist()]
    return Verdict(keep=keep, reasons=reasons, details=details)


def eval_versions(frame: Frame, stage: DecontaminateStage) -> list[DatasetVersion]:
    """Return the versions to check against: the named ones, or every eval version but the frame's own dataset."""
    if stage.against:
        found = []
        for ref in stage.against:
            try:
                found.append(datasets.resolve(frame.project, ref))
            except (NotFound, InvalidInput) as exc:
                raise InvalidInput(f"eval version {ref!r} not found ({exc}); name one of 'posttrain datasets list' "
                                   "as NAME or NAME@V", field=FIELD) from None  # fmt: skip
        return found
    versions = [v for v in datasets.list_versions(frame.project) if v.kind == "eval" and v.name != frame.name]
    return sorted(versions, key=lambda v: (v.name, v.version))


def tokenise(text: str | None) -> list[str]:
    """Return the lowercase word tokens of a text."""
    return _TOKEN.findall(text.lower()) if text else []


def load_eval_prompts(versions: list[DatasetVersion], n: int) -> EvalPrompts:
    """Read every version's prompts: whole normalised texts and n-gram hashes, per ref."""
    whole: dict[str, int] = {}
    ngrams: list[np.ndarray] = []
    count = 0
    for index, version in enumerate(versions):
        table = datasets.read_rows(version)
        if PROMPT_COLUMN not in table.column_names:
            raise InvalidInput(f"{version.ref} has no prompt column to check against; name an eval version",
                               field=FIELD)  # fmt: skip
        tokens = [tokenise(p) for p in message_text(table.column(PROMPT_COLUMN)).to_pylist()]
        count += len(tokens)
        for words in tokens:
            if words:
                whole.setdefault(" ".join(words), index)
        hashes, _ = ngram_hashes(tokens, n)
        ngrams.append(np.unique(hashes))
    return EvalPrompts(refs=[v.ref for v in versions], whole=whole, ngrams=ngrams, prompts=count)


def ngram_hashes(tokens: list[list[str]], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the 64-bit hash of every n-gram of every token list and the list each comes from."""
    lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
    symbols = np.fromiter((hash(w) for words in tokens for w in words), dtype=np.int64, count=int(lengths.sum()))
    symbols = symbols.view(np.uint64)
    total = len(symbols)
    padded = np.concatenate([symbols, np.zeros(n, dtype=np.uint64)])
    h = np.zeros(total, dtype=np.uint64)
    for j in range(n):  # an n-gram that would run into the next list is dropped below
        h = (h ^ padded[j : j + total]) * _MUL
    h ^= h >> _S33
    h *= _M1
    h ^= h >> _S33
    h *= _M2
    h ^= h >> _S33
    counts = np.maximum(lengths - n + 1, 0)
    keep = np.repeat(
        np.tile(np.array([True, False]), len(lengths)), np.column_stack([counts, lengths - counts]).ravel()
    )
    owner = np.repeat(np.arange(len(tokens)), counts)
    return h[keep], owner


def _check_overlap(
    rows: np.ndarray,
    tokens: list[list[str]],
    evals: EvalPrompts,
    stage: DecontaminateStage,
    keep: np.ndarray,
    reasons: list[str | None],
) -> None:
    """Drop the long rows whose share of n-grams found in an eval version exceeds ``max_overlap``."""
    if not len(rows):
        return
    hashes, owner = ngram_hashes(tokens, stage.n)
    order = np.lexsort((hashes, owner))  # distinct n-grams per row: sorted, then adjacent repeats dropped
    owner, hashes = owner[order], hashes[order]
    first = np.ones(len(owner), dtype=bool)
    first[1:] = (owner[1:] != owner[:-1]) | (hashes[1:] != hashes[:-1])
    owner, hashes = owner[first], hashes[first]
    total = np.bincount(owner, minlength=len(rows))
    shared = np.zeros((len(evals.refs), len(rows)), dtype=np.int64)  # per eval version, for the reason
    anywhere = np.zeros(len(hashes), dtype=bool)
    for index, theirs in enumerate(evals.ngrams):
        hit = np.isin(hashes, theirs)
        anywhere |= hit
        shared[index] = np.bincount(owner[hit], minlength=len(rows))
    found = np.bincount(owner[anywhere], minlength=len(rows))
    for k in np.flatnonzero((found > 0) & (found > stage.max_overlap * total)).tolist():
        row = int(rows[k])
        ref = evals.refs[int(shared[:, k].argmax())]
        keep[row] = False
        reasons[row] = f"{stage.n}-gram overlap with {ref} ({found[k]} of {total[k]} n-grams)"
