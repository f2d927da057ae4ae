"""The dedup stage: exact duplicates, then near-duplicates by MinHash LSH; the best-judged copy stays.

Texts are normalised first (lowercase, whitespace collapsed): ``on="row"`` compares prompt and
answer (``prompt + "\\n" + answer``), ``on="prompt"`` the prompt alone. Rows with the same
normalised text are exact duplicates and are sketched once. The rest are MinHash-sketched over
shingles of ``shingle`` characters (or words) with datasketch's ``affine32`` permutations, applied
to every shingle of a chunk of rows at once in numpy (the same values ``MinHash.update_batch``
computes, without a Python call per row); candidate pairs come from LSH banding with the bands and
rows ``datasketch.MinHashLSH`` chooses for ``threshold`` and ``num_perm``, and a pair counts when
its MinHash Jaccard estimate reaches the threshold. Clusters are the connected components of those
pairs (in a bucket each member is paired with the bucket's first one, so a huge bucket costs
linear time). Each cluster keeps its best-judged row: highest ``quality`` (unjudged lowest), then
the longest answer, then the first row.

``against_earlier`` also drops rows near any row of an earlier version of the same dataset, so a
new version adds only new material.
"""

from __future__ import annotations

import functools
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from posttrain import compute
from posttrain import versions as datasets
from posttrain.curation.config import DedupStage
from posttrain.curation.frame import ANSWER_COLUMN, PROMPT_COLUMN, Frame, Verdict, message_text
from posttrain.errors import DependencyMissing, NotFound
from posttrain.project import Project

_INSTALL = "pip install 'posttrain[curate]'"
SEED = 1
CHUNK_DOCS = 10_000  # rows whose symbols are hashed together
THREADS = min(4, os.cpu_count() or 1)
CHUNK_SHINGLES = 4_096  # shingles permuted together (num_perm x this stays in cache)
_FNV = np.uint64(0x100000001B3)
_FNV32 = np.uint32(0x01000193)
_M1, _M2 = np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53)
_S33 = np.uint64(33)
_UNTIDY = r"[\t\n\v\f\r\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]|  |^ | $"


@dataclass
class Sketches:
    """MinHash signatures of texts: ``values[i]`` is text i's ``num_perm`` minimum hash values."""

    values: np.ndarray  # (texts, num_perm) unsigned ints

    def jaccard(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """Return the MinHash Jaccard estimate of each pair (left[k], right[k])."""
        out = np.empty(len(left), dtype=float)
        step = 65_536
        for start in range(0, len(left), step):
            a, b = left[start : start + step], right[start : start + step]
            out[start : start + step] = (self.values[a] == self.values[b]).mean(axis=1)
        return out


def run(frame: Frame, stage: DedupStage) -> Verdict:
    """Keep the best-judged row of each group of exact or near duplicates; say which row each removed one copies."""
    n = len(frame)
    if n == 0:
        return Verdict(keep=np.ones(0, dtype=bool), reasons=[], details={"clusters": 0, "largest": 0})
    texts = normalise(_frame_texts(frame, stage.on))
    encoded = texts.dictionary_encode()
    group = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    unique = encoded.dictionary.to_pylist()
    rank = _rank(frame)
    group_best = _best_by(group, rank, len(unique))  # best row of each exact group
    sketches = sketch_rows(frame.project, unique, stage)
    reasons: list[str | None] = [None] * n
    keep = np.ones(n, dtype=bool)
    live = np.ones(len(unique), dtype=bool)  # groups still in play after the earlier versions
    notes: list[str] = []
    if stage.against_earlier:
        live = _drop_near_earlier(frame, stage, sketches, group, keep, reasons, notes)
    left, right = candidate_pairs(sketches, stage, live)
    label = _components(len(unique), left, right)
    label_best = _best_by(label, rank[group_best], label.max() + 1)  # best group of each cluster
    kept_row = group_best[label_best[label[group]]]
    kept_group = group[kept_row]
    rows = np.flatnonzero(keep & (kept_row != np.arange(n)))
    similarity = sketches.jaccard(group[rows], kept_group[rows])
    for row, sim in zip(rows.tolist(), similarity.tolist(), strict=True):
        keep[row] = False
        other = frame.interaction_id[kept_row[row]]
        if group[row] == kept_group[row]:
            reasons[row] = f"exact duplicate of {other}"
        else:
            reasons[row] = f"near-duplicate of {other} (jaccard {sim:.2f})"
    sizes = np.bincount(label[group][np.flatnonzero(live[group])], minlength=label.max() + 1)
    details: dict[str, Any] = {"clusters": int((sizes > 1).sum()), "largest": int(sizes.max(initial=0))}
    return Verdict(keep=keep, reasons=reasons, details=details, note="; ".join(notes) or None)


def normalise(texts: pa.Array) -> pa.Array:
    """Return the texts lowercased with every run of whitespace one space, trimmed (vectorised in Arrow).

    Only the texts with something to collapse (a space run, other whitespace, an edge space) are split
    and joined again: a regex replace over every text would cost most of the stage.
    """
    lowered = pc.utf8_lower(pc.fill_null(texts.cast(pa.string()), ""))
    untidy = pc.match_substring_regex(lowered, pattern=_UNTIDY)
    if not pc.any(untidy).as_py():
        return lowered
    tidied = pa.array([" ".join(t.split()) for t in pc.filter(lowered, untidy).to_pylist()], pa.string())
    return pc.replace_with_mask(lowered, untidy, tidied)


def _frame_texts(frame: Frame, on: str) -> pa.Array:
    prompts = pa.array(frame.prompt.tolist(), pa.string())
    if on == "prompt":
        return prompts
    answers = pc.fill_null(pa.array(frame.answer.tolist(), pa.string()), "")
    return pc.binary_join_element_wise(pc.fill_null(prompts, ""), answers, " ")  # prompt + newline + answer, normalised


def _rank(frame: Frame) -> np.ndarray:
    """Return each row's place in the preference order: 0 is the best judged (quality, answer length, first)."""
    quality = np.where(np.isnan(frame.quality), -np.inf, frame.quality)
    length = np.fromiter((len(a) if isinstance(a, str) else 0 for a in frame.answer), dtype=np.int64, count=len(frame))
    order = np.lexsort((np.arange(len(frame)), -length, -quality))
    rank = np.empty(len(frame), dtype=np.int64)
    rank[order] = np.arange(len(frame))
    return rank


def _best_by(label: np.ndarray, rank: np.ndarray, count: int) -> np.ndarray:
    """Return, for each label 0..count-1, the index (into ``label``) with the lowest rank."""
    order = np.argsort(rank, kind="stable")
    labels, first = np.unique(label[order], return_index=True)
    best = np.full(count, -1, dtype=np.int64)
    best[labels] = order[first]
    return best


# --- MinHash sketches -------------------------------------------------------------------------


def _datasketch() -> Any:
    try:
        import datasketch
    except ImportError:
        raise DependencyMissing(f"the dedup stage needs datasketch: {_INSTALL}") from None
    return datasketch


def sketch(texts: list[str], stage: DedupStage) -> Sketches:
    """Return the MinHash signatures of normalised texts (shingles of ``stage.shingle`` characters or words)."""
    minhash = _datasketch().MinHash(num_perm=stage.num_perm, seed=SEED)
    scheme = getattr(minhash, "scheme", "legacy")
    if scheme not in ("affine32", "legacy"):  # pragma: no cover - the default of datasketch 2 is affine32
        raise DependencyMissing(f"unexpected datasketch MinHash scheme {scheme!r}: {_INSTALL}")
    a, b = (np.asarray(p) for p in minhash.permutations)
    dtype = np.uint32 if scheme == "affine32" else np.uint64

    def one_chunk(chunk: list[str]) -> np.ndarray:
        symbols, lengths = _symbols(chunk, stage.unit)
        hashes, counts = _shingles(symbols, lengths, stage.shingle)
        return _permute(hashes, counts, a, b, scheme)

    chunks = [texts[start : start + CHUNK_DOCS] for start in range(0, len(texts), CHUNK_DOCS)]
    if len(chunks) <= 1:
        parts = [one_chunk(c) for c in chunks]
    else:  # numpy releases the GIL in the big array operations: the cores share the chunks
        with ThreadPoolExecutor(max_workers=min(THREADS, len(chunks))) as pool:
            parts = list(pool.map(one_chunk, chunks))
    if not parts:
        return Sketches(np.empty((0, stage.num_perm), dtype=dtype))
    return Sketches(np.concatenate(parts))


def sketch_rows(project: Project, texts: list[str], stage: DedupStage) -> Sketches:
    """Return ``sketch(texts, stage)``, computed here or batch by batch on the Ray cluster (``[compute]``).

    A text's signature depends on that text alone, so any batching gives the same values; the LSH
    banding and the clusters need every signature at once and stay in this process.
    """
    table = pa.table({"text": pa.array(texts, pa.string())})
    signed, _ = compute.map_batches(
        project, table, functools.partial(_sketch_rows, stage=stage), what="curation's dedup stage (MinHash)"
    )
    column = signed.column("signature").combine_chunks()
    return Sketches(column.flatten().to_numpy().reshape(len(texts), stage.num_perm))


def _sketch_rows(table: pa.Table, *, stage: DedupStage) -> tuple[pa.Table, dict[str, int]]:
    """Return the MinHash signature of each row's ``text`` as a fixed-size list (a per-row step)."""
    values = sketch(table.column("text").to_pylist(), stage).values
    signature = pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), stage.num_perm)
    return pa.table({"signature": signature}), {}


def _symbols(texts: list[str], unit: str) -> tuple[np.ndarray, np.ndarray]:
    """Return the texts' symbols back to back (code points, or words' CRC-32: the same in every process, so
    the same rows give the same clusters and a rebuild the same content hash) and each text's count."""
    if unit == "chars":
        symbols = np.frombuffer("".join(texts).encode("utf-32-le"), dtype=np.uint32)
        return symbols, np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    words = [t.split() for t in texts]
    ids = [zlib.crc32(w.encode()) for ws in words for w in ws]
    return np.asarray(ids, dtype=np.uint32), np.fromiter(map(len, words), dtype=np.int64, count=len(words))


def _shingles(symbols: np.ndarray, lengths: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the 32-bit hash of every k-symbol shingle (texts shorter than k: one shingle of all of it), text
    after text, and each text's shingle count (0 only for an empty text)."""
    total = len(symbols)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    padded = np.concatenate([symbols, np.zeros(k, dtype=np.uint32)])
    h = np.full(total, 0x811C9DC5, dtype=np.uint32)
    short = (lengths < k) & (lengths > 0)
    whole = np.zeros(len(lengths), dtype=np.uint32)  # a short text's one shingle: the hash of all of it
    for j in range(k):  # FNV-1a over k symbols; a shingle that would cross into the next text is dropped below
        h ^= padded[j : j + total]
        h *= _FNV32
        done = np.flatnonzero(short & (lengths == j + 1))
        whole[done] = h[starts[done]]
    h[starts[short]] = whole[short]
    counts = np.where(lengths >= k, lengths - k + 1, np.minimum(lengths, 1))
    # each text: its first ``counts`` positions start a shingle, the rest (the last k-1) do not
    keep = np.repeat(
        np.tile(np.array([True, False]), len(lengths)), np.column_stack([counts, lengths - counts]).ravel()
    )
    return _mix32(h[keep]), counts


def _mix32(h: np.ndarray) -> np.ndarray:
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h


def _mix64(h: np.ndarray) -> np.ndarray:
    h ^= h >> _S33
    h *= _M1
    h ^= h >> _S33
    h *= _M2
    h ^= h >> _S33
    return h


def _permute(hashes: np.ndarray, counts: np.ndarray, a: np.ndarray, b: np.ndarray, scheme: str) -> np.ndarray:
    """Return each text's MinHash values: min over its shingles of datasketch's permutations a*h+b."""
    out = np.empty((len(a), len(counts)), dtype=a.dtype)  # permutation-major: whole chunks are contiguous
    if len(hashes) == 0:
        out[:] = np.iinfo(np.uint32).max
        return out.T
    ends = np.cumsum(counts)
    starts = ends - counts
    targets = np.arange(CHUNK_SHINGLES, len(hashes) + CHUNK_SHINGLES, CHUNK_SHINGLES)
    cut = np.unique(np.minimum(np.searchsorted(ends, targets) + 1, len(ends)))  # whole texts per chunk
    first = 0
    for last in cut.tolist():
        lo, hi = starts[first], ends[last - 1]
        if hi > lo:
            permuted = np.multiply.outer(a, hashes[lo:hi].astype(a.dtype, copy=False))
            permuted += b[:, None]
            if scheme == "legacy":
                permuted = (permuted % np.uint64((1 << 61) - 1)) & np.uint64((1 << 32) - 1)
            at = np.minimum(starts[first:last] - lo, hi - lo - 1)  # an empty text's slot is overwritten below
            np.minimum.reduceat(permuted, at, axis=1, out=out[:, first:last])
        first = last
    out[:, counts == 0] = np.iinfo(np.uint32).max  # an empty text: an empty MinHash (datasketch's max hash)
    return out.T


# --- LSH candidates and clusters ----------------------------------------------------------------


def _bands(stage: DedupStage) -> list[tuple[int, int]]:
    """Return the (start, end) signature ranges of the LSH bands datasketch picks for the threshold."""
    lsh = _datasketch().MinHashLSH(threshold=stage.threshold, num_perm=stage.num_perm)
    return [(int(s), int(e)) for s, e in lsh.hashranges]


def _band_keys(values: np.ndarray, start: int, end: int) -> np.ndarray:
    h = np.full(len(values), 0x9E3779B97F4A7C15, dtype=np.uint64)
    for column in range(start, end):
        h ^= values[:, column].astype(np.uint64)
        h = _mix64(h * _FNV)
    return h


def candidate_pairs(sketches: Sketches, stage: DedupStage, live: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the verified near pairs among the live texts: each bucket member with the bucket's first member,
    kept when their Jaccard estimate reaches the threshold."""
    index = np.flatnonzero(live)
    values = sketches.values[index]
    found: list[np.ndarray] = []
    for start, end in _bands(stage):
        keys = _band_keys(values, start, end)
        order = np.argsort(keys, kind="stable")
        ordered = keys[order]
        new_run = np.ones(len(order), dtype=bool)
        new_run[1:] = ordered[1:] != ordered[:-1]
        head = order[np.flatnonzero(new_run)[np.cumsum(new_run) - 1]]
        member = ~new_run
        found.append(index[head[member]] * len(live) + index[order[member]])
    if not found:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    pairs = np.unique(np.concatenate(found))
    left, right = pairs // len(live), pairs % len(live)
    near = sketches.jaccard(left, right) >= stage.threshold
    return left[near], right[near]


def _components(count: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Return the connected component of each of ``count`` nodes joined by the pairs."""
    try:
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components
    except ImportError:
        raise DependencyMissing(f"the dedup stage needs scipy: {_INSTALL}") from None
    graph = coo_matrix((np.ones(len(left), dtype=np.int8), (left, right)), shape=(count, count))
    _, label = connected_components(graph, directed=False)
    return np.asarray(label, dtype=np.int64)


# --- earlier versions ---------------------------------------------------------------------------


def _earlier_texts(frame: Frame, on: str, notes: list[str]) -> tuple[list[str], list[str]]:
    """Return the normalised texts of every earlier version of the frame's dataset and the ref of each."""
    texts: list[str] = []
    refs: list[str] = []
    for version in datasets.list_versions(frame.project, name=frame.name):
        try:
            table = datasets.read_rows(version)
        except NotFound:
            notes.append(f"{version.ref} skipped: its file is missing")
            continue
        if PROMPT_COLUMN not in table.column_names:
            continue
        prompts = message_text(table.column(PROMPT_COLUMN))
        if on == "row":
            column = ANSWER_COLUMN.get(version.kind)
            answers = message_text(table.column(column)) if column in table.column_names else None
            prompts = pc.binary_join_element_wise(prompts, answers if answers is not None else "", "\n")
        unique = pc.unique(normalise(prompts)).to_pylist()
        texts.extend(unique)
        refs.extend([version.ref] * len(unique))
    return texts, refs


def _drop_near_earlier(
    frame: Frame,
    stage: DedupStage,
    sketches: Sketches,
    group: np.ndarray,
    keep: np.ndarray,
    reasons: list[str | None],
    notes: list[str],
) -> np.ndarray:
    """Drop every row whose text is near one of an earlier version; return which groups are still live."""
    live = np.ones(len(sketches.values), dtype=bool)
    texts, refs = _earlier_texts(frame, stage.on, notes)
    if not texts:
        return live
    earlier = sketch_rows(frame.project, texts, stage)
    candidates: list[tuple[np.ndarray, np.ndarray]] = []
    for start, end in _bands(stage):
        theirs = _band_keys(earlier.values, start, end)
        order = np.argsort(theirs, kind="stable")
        ordered = theirs[order]
        ours = _band_keys(sketches.values, start, end)
        at = np.minimum(np.searchsorted(ordered, ours), len(ordered) - 1)
        hit = np.flatnonzero(ordered[at] == ours)
        candidates.append((hit, order[at[hit]]))
    mine = np.concatenate([c[0] for c in candidates])
    theirs_index = np.concatenate([c[1] for c in candidates])
    similarity = (sketches.values[mine] == earlier.values[theirs_index]).mean(axis=1)
    best: dict[int, tuple[float, str]] = {}
    for g, e, sim in zip(mine.tolist(), theirs_index.tolist(), similarity.tolist(), strict=True):
        if sim >= stage.threshold and sim > best.get(g, (-1.0, ""))[0]:
            best[g] = (sim, refs[e])
    for g in best:
        live[g] = False
    for row in np.flatnonzero(~live[group]).tolist():
        sim, ref = best[int(group[row])]
        keep[row] = False
        reasons[row] = f"near-duplicate of {ref} (jaccard {sim:.2f})"
    return live
