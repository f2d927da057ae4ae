"""Selection: keep a budget of rows (a share, a count or tokens), chosen for diversity, quality or difficulty.

The budget is shared over strata (cohort and/or task family, per ``stage.stratify``) in proportion
to their sizes (rows; for a token budget, their tokens) by the largest-remainder method, every
non-empty stratum getting at least one row when the budget allows. Within a stratum:

* ``diversity``: greedy k-center over the prompt embeddings. The first pick is the best-judged row
  (judged quality; NaN counts 0.5); each next one maximises
  ``(1 - quality_weight) * d / 2 + quality_weight * quality`` where ``d`` is the cosine distance
  (in [0, 2], halved to [0, 1] so it weighs like quality) to the nearest row picked so far. Exact
  k-center costs ``n * k`` distance rows, so a stratum with ``n * k`` over ``PIECE_LIMIT`` is first
  split by its k-means clusters (split again by k-means while a part is still too big), the
  budget shared over the parts by size the same way, and k-center runs within each part on the
  embeddings projected to their first ``REDUCED_DIMS`` principal components (renormalised). The
  approximations: a pick only keeps its distance from the picks of its own part, so two picks on
  either side of a cluster border may lie closer than exact k-center would allow, and distances
  are those of the projection; every cluster is still covered in proportion to its size.
* ``quality``: best judged first (NaN counts 0.5), ties in row order.
* ``hardest``: the prompts the current model fails most first. For each row, every interaction
  in the warehouse whose user messages have the same text is evidence: failed when it has a
  thumb down, a rating of 2 or less or a flag; succeeded when it has a thumb up or a rating of 4
  or more (and no failure). Rows rank by failure rate, then number of failures, then row order;
  rows with no evidence come last, in row order.

Rows of ``[curate] strict_cohorts`` (the minors') are all kept unless ``stage.strict_cohorts`` is
set: the budget (a share counted on the other rows) applies to the rest. Selection thins what is
repeated, and a strict cohort's model learns to refuse from the repetition.

With a token budget (whitespace words of prompt and answer) rows are taken in the chosen order
while they fit; a row too long for what is left is passed over so shorter ones can fill it.

Every step is deterministic given ``stage.seed`` (k-means, the PCA sample). Besides the verdict
the stage returns a 2-D PCA map of the embeddings and k-means cluster ids for the report.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pyarrow as pa

from posttrain import compute
from posttrain.curation.config import SelectStage
from posttrain.curation.embed import embed, normalise
from posttrain.curation.frame import Frame, Verdict, message_text
from posttrain.errors import DependencyMissing
from posttrain.warehouse import analytics

PIECE_LIMIT = 500_000  # n * k above which a stratum's k-center runs per cluster (see the module docstring)
MAX_SPLIT_DEPTH = 4
MAX_CLUSTERS = 50
FIT_SAMPLE = 20_000  # rows PCA and k-means are fitted on (all rows are projected / assigned)
REDUCED_DIMS = 64  # principal components k-means and the big-strata k-center work in


@dataclass
class Selection:
    """The verdict and, aligned with the frame's rows, the embedding map (x, y) and cluster ids."""

    verdict: Verdict
    x: np.ndarray
    y: np.ndarray
    cluster: np.ndarray


@dataclass
class _Context:
    """What the per-stratum pickers read: all aligned with the frame's rows."""

    stage: SelectStage
    vectors: np.ndarray
    reduced: np.ndarray  # the embeddings on their first principal components (centred)
    offset: np.ndarray  # the mean's projection: reduced + offset is the uncentred projection
    quality: np.ndarray
    cluster: np.ndarray
    tokens: np.ndarray | None
    order: np.ndarray | None  # quality/hardest: each row's rank (lower first)
    splits: list[str] = field(default_factory=list)


def run(frame: Frame, stage: SelectStage) -> Selection:
    """Return which rows of ``frame`` to keep under ``stage``'s budget, with the map and clusters for the report."""
    n = len(frame)
    if n == 0:
        empty = np.zeros(0)
        verdict = Verdict(keep=np.zeros(0, dtype=bool), reasons=[], note="no rows to select from")
        return Selection(verdict, empty, empty, np.zeros(0, dtype=np.int64))
    vectors = _embed(frame, stage)
    reduced, offset = principal_components(vectors, stage.seed, REDUCED_DIMS)
    x, y = reduced[:, 0].astype(np.float64), reduced[:, 1].astype(np.float64)
    cluster = cluster_ids(reduced, stage.seed)
    quality = np.where(np.isnan(frame.quality), 0.5, frame.quality).astype(np.float32)
    tokens = token_counts(frame) if stage.tokens is not None else None
    context = _Context(stage, vectors, reduced, offset, quality, cluster, tokens, None)
    details: dict[str, object] = {"budget": budget_label(stage), "by": stage.by, "embedder": stage.embedder}
    if stage.by == "quality":
        context.order = _rank(np.argsort(-quality, kind="stable"))
    elif stage.by == "hardest":
        failures, judged = failure_counts(frame)
        context.order = _rank(hardest_order(failures, judged))
        details["rows_with_evidence"] = int((judged > 0).sum())
    names, inverse = strata(frame, stage.stratify)
    by_stratum = np.argsort(inverse, kind="stable")
    members = np.split(by_stratum, np.cumsum(np.bincount(inverse, minlength=len(names)))[:-1])
    keep = exempt_rows(frame, stage)
    if keep.any():
        details["kept_strict_cohorts"] = int(keep.sum())
        members = [rows[~keep[rows]] for rows in members]
    allowances = _stratum_allowances(members, stage, tokens)
    reasons: list[str | None] = [None] * n
    kept_of: dict[str, list[int]] = {}
    for name, rows, allowance in zip(names, members, allowances, strict=True):
        if len(rows) == 0:
            continue
        kept = _pick(rows, int(allowance), context)
        keep[kept] = True
        kept_of[str(name)] = [len(kept), len(rows)]
        reason = f"not selected: budget {details['budget']} of stratum {name} ({len(kept)} of {len(rows)})"
        for i in rows[~keep[rows]]:
            reasons[i] = reason
    details["strata"] = kept_of
    details["clusters"] = int(cluster.max()) + 1
    if context.splits:
        details["split_by_cluster"] = len(context.splits)
    note = None
    if "kept_strict_cohorts" in details:
        note = (f"{details['kept_strict_cohorts']} rows of strict cohorts kept whole "
                "(select.strict_cohorts: true selects among them too)")  # fmt: skip
    return Selection(Verdict(keep=keep, reasons=reasons, details=details, note=note), x, y, cluster)


def _embed(frame: Frame, stage: SelectStage) -> np.ndarray:
    """Return the prompts' embeddings: ``hashing`` here or batch by batch on the Ray cluster, the models here.

    Only the hashing embedder is a pure function of each text. MiniLM pads each batch to its longest
    text, so a text's vector changes in the last bits (about 1e-7) with the texts beside it, and
    k-center may then pick other rows; the static model is a folder distilled into this machine's
    cache, which a worker elsewhere would distill again for itself. Both stay in this process.
    """
    texts = [str(p) for p in frame.prompt]
    if stage.embedder != "hashing":
        return embed(texts, stage.embedder)
    table = pa.table({"text": pa.array(texts, pa.string())})
    found, _ = compute.map_batches(frame.project, table, _embed_rows, what="curation's select stage (embeddings)")
    return found.column("vector").combine_chunks().flatten().to_numpy().reshape(len(texts), -1)


def _embed_rows(table: pa.Table) -> tuple[pa.Table, dict[str, int]]:
    """Return the hashing embedding of each row's ``text`` as a fixed-size list (a per-row step)."""
    vectors = embed(table.column("text").to_pylist(), "hashing")
    return pa.table({"vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1])}), {}


def exempt_rows(frame: Frame, stage: SelectStage) -> np.ndarray:
    """Return the rows selection keeps whatever the budget: a strict cohort's, unless the stage says otherwise."""
    if stage.strict_cohorts or not frame.strict_cohorts:
        return np.zeros(len(frame), dtype=bool)
    return np.isin(frame.cohort.astype(str), sorted(frame.strict_cohorts))


def budget_label(stage: SelectStage) -> str:
    """Return the budget as the reasons say it: ``30%``, ``100 rows`` or ``5000 tokens``."""
    if stage.fraction is not None:
        return f"{stage.fraction * 100:g}%"
    if stage.rows is not None:
        return f"{stage.rows} rows"
    return f"{stage.tokens} tokens"


def token_counts(frame: Frame) -> np.ndarray:
    """Return each row's tokens: whitespace-separated words of its prompt plus its answer."""
    return np.fromiter(
        (
            len(str(p or "").split()) + len(str(a or "").split())
            for p, a in zip(frame.prompt, frame.answer, strict=True)
        ),
        dtype=np.int64,
        count=len(frame),
    )


def strata(frame: Frame, stratify: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Return the strata's names (cohort and/or family joined by '/', or 'all') and each row's stratum index.

    Hash-encoded with Arrow and combined as integers: sorting 300k strings takes a second.
    """
    n = len(frame)
    if not stratify:
        return ["all"], np.zeros(n, dtype=np.int64)
    code = np.zeros(n, dtype=np.int64)
    parts: list[list[str]] = []
    for part in stratify:
        values = frame.cohort if part == "cohort" else frame.family
        encoded = pa.array([str(v) for v in values], pa.string()).dictionary_encode()
        parts.append(encoded.dictionary.to_pylist())
        code = code * len(parts[-1]) + encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    used, inverse = np.unique(code, return_inverse=True)
    keys = []
    for value in used.tolist():
        names = []
        for part_names in reversed(parts):
            value, index = divmod(value, len(part_names))
            names.append(part_names[index])
        keys.append("/".join(reversed(names)))
    order = np.argsort(np.array(keys, dtype=object), kind="stable")  # strata in name order
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return [keys[i] for i in order], rank[inverse]


def share(sizes: np.ndarray, total: int, minimums: np.ndarray) -> np.ndarray:
    """Return integer allowances summing to ``total`` (at most ``sizes.sum()``) in proportion to ``sizes``.

    Largest remainder; when ``total`` covers every part's minimum, a part whose proportional share
    falls below its minimum gets the minimum and the rest is shared among the others.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    minimums = np.minimum(np.asarray(minimums, dtype=np.int64), sizes)
    total = int(min(total, sizes.sum()))
    out = np.zeros(len(sizes), dtype=np.int64)
    free = sizes > 0
    if total <= 0 or not free.any():
        return out
    if total >= minimums[free].sum():
        while True:
            left = total - out[~free].sum()
            quota = left * sizes / max(sizes[free].sum(), 1)
            below = free & (quota < minimums)
            if not below.any():
                break
            out[below] = minimums[below]
            free &= ~below
    left = int(total - out[~free].sum())
    if not free.any() or left <= 0:
        return out
    quota = left * sizes[free] / sizes[free].sum()
    base = np.floor(quota).astype(np.int64)
    extra = left - int(base.sum())
    if extra > 0:
        order = np.lexsort((np.arange(len(quota)), -sizes[free], -(quota - base)))
        base[order[:extra]] += 1
    out[free] = base
    return out


def _stratum_allowances(members: list[np.ndarray], stage: SelectStage, tokens: np.ndarray | None) -> np.ndarray:
    """Return each stratum's allowance: rows, or tokens for a token budget."""
    if tokens is not None and stage.tokens is not None:
        sizes = np.array([tokens[m].sum() for m in members])
        return share(sizes, stage.tokens, np.array([tokens[m].min() if len(m) else 0 for m in members]))
    n = sum(len(m) for m in members)
    total = min(stage.rows, n) if stage.rows is not None else max(1, math.floor((stage.fraction or 0) * n + 0.5))
    return share(np.array([len(m) for m in members]), total, np.ones(len(members), dtype=np.int64))


def _pick(rows: np.ndarray, allowance: int, context: _Context) -> np.ndarray:
    """Return the rows of one stratum (or part of one) to keep within ``allowance``."""
    if allowance <= 0 or len(rows) == 0:
        return rows[:0]
    if context.order is not None:
        ranked = rows[np.argsort(context.order[rows], kind="stable")]
        return _fill(ranked, allowance, context.tokens)
    return _diverse(rows, allowance, context, 0)


def _fill(ranked: np.ndarray, allowance: int, tokens: np.ndarray | None) -> np.ndarray:
    """Return the first ``allowance`` rows, or for a token budget the rows taken in order while they fit."""
    if tokens is None:
        return ranked[:allowance]
    taken, left = [], allowance
    for i in ranked:
        if tokens[i] <= left:
            taken.append(i)
            left -= int(tokens[i])
    return np.array(taken, dtype=np.int64)


def _diverse(rows: np.ndarray, allowance: int, context: _Context, depth: int) -> np.ndarray:
    """k-center over ``rows``; a big stratum is split into clusters first (see the module docstring)."""
    tokens = context.tokens
    picks = allowance if tokens is None else math.ceil(allowance / max(float(tokens[rows].mean()), 1.0))
    if tokens is None and allowance >= len(rows):
        return rows
    if len(rows) * min(picks, len(rows)) <= PIECE_LIMIT or depth >= MAX_SPLIT_DEPTH:
        vectors = context.vectors[rows] if depth == 0 else normalise(context.reduced[rows] + context.offset)
        local = k_center(vectors, context.quality[rows], context.stage.quality_weight,
                         k=None if tokens is not None else allowance,
                         tokens=None if tokens is None else tokens[rows], allowance=allowance)  # fmt: skip
        return rows[local]
    labels = _split(rows, picks, context, depth)
    parts = [rows[labels == label] for label in np.unique(labels)]
    if len(parts) == 1:  # nothing to split on (identical vectors): exact, however slow
        return _diverse(rows, allowance, context, MAX_SPLIT_DEPTH)
    if depth == 0:
        context.splits.append(str(len(parts)))
    if tokens is None:
        sizes, minimums = np.array([len(p) for p in parts]), np.ones(len(parts), dtype=np.int64)
    else:
        sizes = np.array([tokens[p].sum() for p in parts])
        minimums = np.array([tokens[p].min() for p in parts])
    chosen = [
        _diverse(p, int(a), context, depth + 1)
        for p, a in zip(parts, share(sizes, allowance, minimums), strict=True)
        if a > 0
    ]
    return np.sort(np.concatenate(chosen)) if chosen else rows[:0]


def _split(rows: np.ndarray, picks: int, context: _Context, depth: int) -> np.ndarray:
    """Return a part label per row: the frame's k-means clusters first, then k-means within the part."""
    if depth == 0 and len(np.unique(context.cluster[rows])) > 1:
        return context.cluster[rows]
    parts = min(64, max(2, math.ceil(math.sqrt(len(rows) * min(picks, len(rows)) / PIECE_LIMIT)) + 1))
    return _kmeans(context.reduced[rows], parts, context.stage.seed + depth)


def k_center(
    vectors: np.ndarray,
    quality: np.ndarray,
    weight: float,
    *,
    k: int | None,
    tokens: np.ndarray | None = None,
    allowance: int = 0,
) -> np.ndarray:
    """Return greedy k-center picks (indices, in pick order): ``k`` of them, or for ``tokens`` as many as fit.

    The score of a candidate is ``(1 - weight) * d / 2 + weight * quality``, ``d`` its cosine
    distance to the nearest pick; before any pick ``d`` is 2 for all, so the first is the best judged.
    """
    n = len(vectors)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    nearest = np.full(n, 2.0, dtype=np.float32)
    closed = np.zeros(n, dtype=np.float32)  # -inf where a row is picked or (token budget) no longer fits
    if tokens is not None:
        closed[tokens > allowance] = -np.inf
    bonus = (weight * quality).astype(np.float32)
    spread = np.float32((1 - weight) / 2)
    score = np.empty(n, dtype=np.float32)
    distance = np.empty(n, dtype=np.float32)
    left = allowance
    picks: list[int] = []
    limit = n if k is None else min(k, n)
    while len(picks) < limit:
        np.multiply(nearest, spread, out=score)
        score += bonus
        score += closed
        i = int(np.argmax(score))
        if score[i] == -np.inf:
            break
        picks.append(i)
        closed[i] = -np.inf
        np.matmul(vectors, vectors[i], out=distance)
        np.subtract(1.0, distance, out=distance)
        np.minimum(nearest, distance, out=nearest)
        if tokens is not None:
            left -= int(tokens[i])
            closed[tokens > left] = -np.inf
    return np.array(picks, dtype=np.int64)


def _rank(order: np.ndarray) -> np.ndarray:
    """Return each row's position in ``order``."""
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank


def principal_components(vectors: np.ndarray, seed: int, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the rows on their first ``dims`` principal components (centred; fitted on a sample for big n) and
    the projection of the mean (add it back for the uncentred projection). The map is the first two."""
    n, width = vectors.shape
    sample = vectors
    if n > FIT_SAMPLE:
        sample = vectors[np.sort(np.random.default_rng(seed).choice(n, FIT_SAMPLE, replace=False))]
    mean = sample.mean(axis=0, dtype=np.float64).astype(np.float32)
    components = np.zeros((dims, width), dtype=np.float32)
    if n >= 2:  # the covariance's eigenvectors (a 256 x 256 problem, where an SVD of the sample takes seconds)
        centred = (sample - mean).astype(np.float64)
        values, vectors_ = np.linalg.eigh(centred.T @ centred)
        top = np.argsort(-values, kind="stable")[: min(dims, n - 1, width)]
        components[: len(top)] = vectors_[:, top].T
    # a component's sign is arbitrary: make its largest loading positive, so the map is stable
    signs = np.sign(components[np.arange(dims), np.argmax(np.abs(components), axis=1)])
    components *= np.where(signs == 0, 1, signs)[:, None]
    offset = mean @ components.T
    return vectors @ components.T - offset, offset


def cluster_ids(vectors: np.ndarray, seed: int) -> np.ndarray:
    """Return k-means cluster ids (k ~ sqrt(n), at most 50), numbered by size, largest first."""
    n = len(vectors)
    k = min(MAX_CLUSTERS, max(1, round(math.sqrt(n))))
    if k <= 1:
        return np.zeros(n, dtype=np.int64)
    labels = _kmeans(vectors, k, seed)
    counts = np.bincount(labels, minlength=k)
    by_size = np.argsort(-counts, kind="stable")
    renumber = np.empty(k, dtype=np.int64)
    renumber[by_size] = np.arange(k)
    return renumber[labels]


def _kmeans(vectors: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Return MiniBatchKMeans labels (fitted on a sample for big n; every row assigned)."""
    try:
        from sklearn.cluster import MiniBatchKMeans
    except ImportError:
        raise DependencyMissing("selection needs scikit-learn: pip install 'posttrain[curate]'") from None
    n = len(vectors)
    k = min(k, n)
    sample = vectors
    if n > FIT_SAMPLE:
        sample = vectors[np.sort(np.random.default_rng(seed).choice(n, FIT_SAMPLE, replace=False))]
    model = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=1, batch_size=4096, max_iter=50)
    with warnings.catch_warnings():  # fewer distinct points than clusters is fine here
        warnings.simplefilter("ignore")
        model.fit(sample)
        return np.asarray(model.predict(vectors), dtype=np.int64)


def hardest_order(failures: np.ndarray, judged: np.ndarray) -> np.ndarray:
    """Return row indices hardest first: failure rate, then failures, then row order; no evidence last."""
    rate = np.divide(failures, judged, out=np.full(len(judged), -1.0), where=judged > 0)
    return np.lexsort((np.arange(len(rate)), -failures, -rate))


def failure_counts(frame: Frame) -> tuple[np.ndarray, np.ndarray]:
    """Return, per row, the failed and the judged interactions in the warehouse with the same user messages."""
    table = pa.table({"row": pa.array(np.arange(len(frame)), pa.int64()), "user_text": _user_texts(frame)})
    sql = f"""
            WITH outcome AS (
                SELECT interaction_id,
                       bool_or(kind = 'thumb' AND score < 0 OR kind = 'rating' AND score <= 2 OR kind = 'flag')
                           AS failed,
                       bool_or(kind = 'thumb' AND score > 0 OR kind = 'rating' AND score >= 4) AS succeeded
                FROM feedback WHERE kind IN ('thumb', 'rating', 'flag') GROUP BY interaction_id
            ),
            seen AS (
                SELECT {_USER_TEXT.format(messages="i.messages")} AS user_text, o.failed, o.succeeded
                FROM interactions i JOIN outcome o ON o.interaction_id = i.id
            ),
            stats AS (
                SELECT user_text, count(*) FILTER (WHERE failed) AS failures,
                       count(*) FILTER (WHERE failed OR succeeded) AS judged
                FROM seen WHERE user_text IN (SELECT user_text FROM _select_prompts) GROUP BY user_text
            )
            SELECT p.row, coalesce(s.failures, 0), coalesce(s.judged, 0)
            FROM _select_prompts p LEFT JOIN stats s USING (user_text) ORDER BY p.row"""
    with analytics.duckdb_over(frame.project, sql) as cur:  # PostgreSQL: the tables it reads, copied out
        cur.register("_select_prompts", table)
        try:
            rows = cur.sql(sql).fetchall()
        finally:
            cur.unregister("_select_prompts")
    failures = np.array([r[1] for r in rows], dtype=np.int64)
    judged = np.array([r[2] for r in rows], dtype=np.int64)
    return failures, judged


# the text of a JSON message list's user messages, newline-joined (the same on both sides of the match)
_USER_TEXT = (
    "array_to_string(list_transform(list_filter(json_extract({messages}, '$[*]'), "
    "lambda m: m ->> 'role' = 'user'), lambda m: m ->> 'content'), chr(10))"
)


def _user_texts(frame: Frame) -> pa.Array:
    """Return each row's user messages' text, read as the warehouse's messages are (JSON), or the prompt text."""
    column = frame.table.column("prompt") if "prompt" in frame.table.column_names else None
    if column is None or not pa.types.is_list(column.type):
        return message_text(pa.array([str(p) for p in frame.prompt], pa.string()))
    cur = duckdb.connect()  # private: nothing of the warehouse is read
    try:
        cur.register("_select_messages", pa.table({"prompt": column}))
        texts = cur.sql(
            f"SELECT {_USER_TEXT.format(messages='to_json(prompt)')} AS t FROM _select_messages"
        ).to_arrow_table()
    finally:
        cur.close()
    return texts.column("t").combine_chunks()
