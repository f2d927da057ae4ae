"""How far annotators agree, and how accurate they and the judges are.

Every function takes labels as ``(item_id, annotator, value)`` and returns an ``Estimate`` with a
confidence interval. None of them raises on small data: a statistic that is undefined (too few
items, a single value) comes back with ``value=None``. When an annotator labelled an item twice, its
last label counts. Bootstrap intervals resample items (the unit of sampling) and use percentiles.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from posttrain.annotate.consensus import is_numeric, sort_key, value_key
from posttrain.errors import InvalidInput

if TYPE_CHECKING:
    import numpy as np

LabelTuple = tuple[str, str, Any]
Level = Literal["nominal", "ordinal", "interval"]
Weights = Literal["linear", "quadratic"] | None

MAX_BOOTSTRAP = 10_000


class Estimate(BaseModel):
    """A statistic with its interval (None where undefined) and what it was computed from."""

    value: float | None
    low: float | None
    high: float | None
    n_items: int
    n_labels: int
    method: str


class CalibrationBin(BaseModel):
    """One equal-width confidence bin: mean stated confidence against observed accuracy."""

    low: float
    high: float
    confidence: float
    accuracy: float
    count: int


class Calibration(BaseModel):
    """How often a judge matches the truth, and how well its confidence predicts that."""

    agreement: Estimate
    ece: float | None
    bins: list[CalibrationBin]
    n: int


def by_item(labels: Sequence[LabelTuple]) -> dict[str, dict[str, Any]]:
    """Return item -> annotator -> value (an annotator's last label on an item counts)."""
    grouped: dict[str, dict[str, Any]] = defaultdict(dict)
    for item_id, annotator, value in labels:
        grouped[item_id][annotator] = value
    return dict(grouped)


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _percentiles(samples: list[float], confidence: float) -> tuple[float | None, float | None]:
    import numpy as np

    if not samples:
        return None, None
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def _check_bootstrap(bootstrap: int, confidence: float) -> None:
    if not 0 <= bootstrap <= MAX_BOOTSTRAP:
        raise InvalidInput(f"bootstrap must be 0..{MAX_BOOTSTRAP} resamples", field="bootstrap")
    if not 0 < confidence < 1:
        raise InvalidInput("confidence must lie strictly between 0 and 1 (e.g. 0.95)", field="confidence")


def _domain(values: list[Any], level: Level) -> list[Any]:
    """Return the sorted distinct values; ordinal and interval levels need numbers."""
    distinct = {value_key(value): value for value in values}
    if level != "nominal" and not all(is_numeric(value) for value in distinct.values()):
        raise InvalidInput(f"{level} agreement needs numeric labels; use level 'nominal' for categories", field="level")
    return sorted(distinct.values(), key=sort_key)


def _alpha(counts: np.ndarray, domain: np.ndarray, level: Level) -> float | None:
    import krippendorff
    import numpy as np

    if (counts.sum(axis=1) >= 2).sum() < 1 or (counts.sum(axis=0) > 0).sum() < 2:
        return None
    with np.errstate(all="ignore"):
        try:
            return _finite(krippendorff.alpha(value_counts=counts, value_domain=domain, level_of_measurement=level))
        except (ValueError, ZeroDivisionError):
            return None


def _distance(level: Level, codes: np.ndarray, marginals: np.ndarray) -> np.ndarray:
    """Return Krippendorff's squared difference between every two values at a level of measurement."""
    import numpy as np

    if level == "nominal":
        return 1 - np.eye(len(codes))
    if level == "interval":
        return (codes[:, None] - codes[None, :]) ** 2
    # ordinal: the marginals from one value through the other, less half of each end, squared
    cumulative, positions = np.cumsum(marginals), np.arange(len(codes))
    low, high = np.minimum.outer(positions, positions), np.maximum.outer(positions, positions)
    between = cumulative[high] - cumulative[low] + marginals[low]
    return (between - (marginals[:, None] + marginals[None, :]) / 2) ** 2


def alpha_of_counts(counts: np.ndarray, codes: np.ndarray, level: Level, weights: np.ndarray) -> float | None:
    """Return Krippendorff's alpha of weighted items from their coincidence matrix (the bootstrap's fast path).

    ``counts`` holds each pairable item's count of each value; ``weights`` how often each item was drawn.
    Alpha = 1 - (n - 1) * sum(o * d) / sum(n_c * n_k * d), the coincidences o summing each item's
    (n_uc * n_uk - [c = k] * n_uc) / (m_u - 1).
    """
    import numpy as np

    scaled = counts * (weights / (counts.sum(axis=1) - 1))[:, None]
    coincidence = counts.T @ scaled - np.diag(scaled.sum(axis=0))
    marginals = coincidence.sum(axis=1)
    total = marginals.sum()
    distance = _distance(level, codes, marginals)
    expected = float((np.outer(marginals, marginals) * distance).sum())
    if total <= 1 or expected <= 1e-12:
        return None
    return 1 - (total - 1) * float((coincidence * distance).sum()) / expected


def krippendorff_alpha(
    labels: Sequence[LabelTuple],
    level: Level,
    *,
    bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Estimate:
    """Compute Krippendorff's alpha with a bootstrap interval over items.

    Only items with at least two labels are pairable and count. Nominal values of any hashable type
    are coded as integers; ordinal and interval values must be numbers. The value is None with fewer
    than two pairable items or a single value in all of them (alpha is undefined).
    """
    import numpy as np

    _check_bootstrap(bootstrap, confidence)
    method = f"krippendorff-alpha-{level}"
    grouped = {item: votes for item, votes in by_item(labels).items() if len(votes) >= 2}
    n_labels = sum(len(votes) for votes in grouped.values())
    if len(grouped) < 2:
        return Estimate(value=None, low=None, high=None, n_items=len(grouped), n_labels=n_labels, method=method)
    domain = _domain([value for votes in grouped.values() for value in votes.values()], level)
    index = {value_key(value): k for k, value in enumerate(domain)}
    counts = np.zeros((len(grouped), len(domain)))
    for i, votes in enumerate(grouped.values()):
        for value in votes.values():
            counts[i, index[value_key(value)]] += 1
    codes = np.array([float(v) for v in domain]) if level != "nominal" else np.arange(len(domain), dtype=float)
    value = _alpha(counts, codes, level)
    samples: list[float] = []
    if value is not None:
        rng = np.random.default_rng(seed)
        for _ in range(bootstrap):
            drawn = np.bincount(rng.integers(0, len(grouped), len(grouped)), minlength=len(grouped))
            if (sample := alpha_of_counts(counts, codes, level, drawn.astype(float))) is not None:
                samples.append(sample)
    low, high = _percentiles(samples, confidence)
    return Estimate(value=value, low=low, high=high, n_items=len(grouped), n_labels=n_labels, method=method)


def _table(pairs: list[tuple[Any, Any]], domain: list[Any]) -> np.ndarray:
    import numpy as np

    index = {value_key(value): k for k, value in enumerate(domain)}
    table = np.zeros((len(domain), len(domain)))
    for first, second in pairs:
        table[index[value_key(first)], index[value_key(second)]] += 1
    return table


def _kappa_domain(values: list[Any], weights: Weights) -> list[Any]:
    """Return the categories of a kappa table: for weighted kappa of integers, the whole range."""
    level: Level = "nominal" if weights is None else "interval"
    domain = _domain(values, level)
    if weights is not None and all(float(v).is_integer() for v in domain) and domain[-1] - domain[0] <= 1000:
        domain = list(range(int(domain[0]), int(domain[-1]) + 1))
    return domain


def _disagreement(domain: list[Any], weights: Weights) -> np.ndarray:
    import numpy as np

    if weights is None:
        return 1 - np.eye(len(domain))
    scores = np.array([float(v) for v in domain])
    spread = scores[-1] - scores[0]
    distance = np.abs(scores[:, None] - scores[None, :]) / spread
    return distance if weights == "linear" else distance**2


def kappa_of_table(table: np.ndarray, disagreement: np.ndarray) -> float | None:
    """Return (weighted) Cohen's kappa of a contingency table: 1 - observed / expected disagreement."""
    import numpy as np

    total = table.sum()
    if total == 0:
        return None
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / total
    denominator = float((disagreement * expected).sum())
    if denominator <= 1e-12:
        return None
    return 1 - float((disagreement * table).sum()) / denominator


def _shared(labels: Sequence[LabelTuple], first: str, second: str) -> list[tuple[Any, Any]]:
    return [(votes[first], votes[second]) for votes in by_item(labels).values() if first in votes and second in votes]


def cohen_kappa(labels: Sequence[LabelTuple], first: str, second: str, *, weights: Weights = None) -> Estimate:
    """Compute Cohen's kappa of two annotators on the items both labelled, with a 95% asymptotic interval.

    Weighted kappa (linear or quadratic) needs numeric labels and weighs disagreements by the distance
    of the values. The value is None with fewer than two shared items or when kappa is undefined
    (both annotators always gave one and the same value).
    """
    import numpy as np
    from statsmodels.stats.inter_rater import cohens_kappa

    method = "cohen-kappa" if weights is None else f"cohen-kappa-{weights}"
    pairs = _shared(labels, first, second)
    empty = Estimate(value=None, low=None, high=None, n_items=len(pairs), n_labels=2 * len(pairs), method=method)
    if len(pairs) < 2:
        return empty
    domain = _kappa_domain([value for pair in pairs for value in pair], weights)
    table = _table(pairs, domain)
    if len(domain) < 2 or kappa_of_table(table, _disagreement(domain, weights)) is None:
        return empty
    scores = np.array([float(v) for v in domain]) if weights is not None else None
    with np.errstate(all="ignore"):
        result = cohens_kappa(table, weights=scores, wt=weights, return_results=True)
    value, std = _finite(result.kappa), _finite(result.std_kappa)
    low = high = None
    if value is not None and std is not None:
        # kappa lies in [-1, 1]; the normal interval does not know that
        low, high = max(-1.0, value - 1.959963984540054 * std), min(1.0, value + 1.959963984540054 * std)
    return Estimate(value=value, low=low, high=high, n_items=len(pairs), n_labels=2 * len(pairs), method=method)


def fleiss_kappa(
    labels: Sequence[LabelTuple], *, bootstrap: int = 1000, seed: int = 0, confidence: float = 0.95
) -> Estimate:
    """Compute Fleiss' kappa (nominal) with a bootstrap interval over items.

    Fleiss' kappa needs the same number of raters per item: only items with exactly m labels count,
    where m is the most common number of labels per item (at least 2; the larger on a tie).
    """
    import numpy as np
    from statsmodels.stats.inter_rater import fleiss_kappa as statsmodels_fleiss

    _check_bootstrap(bootstrap, confidence)
    grouped = [votes for votes in by_item(labels).values() if len(votes) >= 2]
    sizes: dict[int, int] = defaultdict(int)
    for votes in grouped:
        sizes[len(votes)] += 1
    if not sizes:
        return Estimate(value=None, low=None, high=None, n_items=0, n_labels=0, method="fleiss-kappa")
    m = max(sizes, key=lambda size: (sizes[size], size))
    kept = [votes for votes in grouped if len(votes) == m]
    method = f"fleiss-kappa-{m}-raters"
    empty = Estimate(value=None, low=None, high=None, n_items=len(kept), n_labels=m * len(kept), method=method)
    if len(kept) < 2:
        return empty
    domain = _domain([value for votes in kept for value in votes.values()], "nominal")
    index = {value_key(value): k for k, value in enumerate(domain)}
    table = np.zeros((len(kept), len(domain)))
    for i, votes in enumerate(kept):
        for value in votes.values():
            table[i, index[value_key(value)]] += 1

    with np.errstate(all="ignore"):
        value = _finite(statsmodels_fleiss(table, method="fleiss")) if (table.sum(axis=0) > 0).sum() >= 2 else None
    if value is None:
        return empty
    rng = np.random.default_rng(seed)
    drawn = [np.bincount(rng.integers(0, len(kept), len(kept)), minlength=len(kept)) for _ in range(bootstrap)]
    samples = fleiss_of_weights(table, np.array(drawn, dtype=float)) if drawn else []
    low, high = _percentiles(samples, confidence)
    return Estimate(value=value, low=low, high=high, n_items=len(kept), n_labels=m * len(kept), method=method)


def fleiss_of_weights(table: np.ndarray, weights: np.ndarray) -> list[float]:
    """Return Fleiss' kappa of each row of item weights (how often each item was drawn); skip undefined ones.

    kappa = (P - Pe) / (1 - Pe): P the weighted mean agreement of an item's rater pairs, Pe the sum
    of squared category shares.
    """
    raters = table[0].sum()
    agreement_of_item = ((table**2).sum(axis=1) - raters) / (raters * (raters - 1))
    drawn = weights.sum(axis=1)
    observed = weights @ agreement_of_item / drawn
    shares = weights @ table / (drawn * raters)[:, None]
    chance = (shares**2).sum(axis=1)
    defined = 1 - chance > 1e-12
    return [float(x) for x in (observed[defined] - chance[defined]) / (1 - chance[defined])]


def _weighted_tables(rows: np.ndarray, weights_of_items: np.ndarray, size: int) -> np.ndarray:
    """Return one contingency table per row of item weights, from (item, first code, second code) rows."""
    import numpy as np

    cells, position = np.unique(rows[:, 1] * size + rows[:, 2], return_inverse=True)
    one_hot = np.zeros((len(rows), len(cells)))
    one_hot[np.arange(len(rows)), position.ravel()] = 1
    tables = np.zeros((len(weights_of_items), size * size))
    tables[:, cells] = weights_of_items[:, rows[:, 0]] @ one_hot
    return tables.reshape(len(weights_of_items), size, size)


def kappas_of_tables(tables: np.ndarray, disagreement: np.ndarray) -> np.ndarray:
    """Return (weighted) Cohen's kappa of each table of a stack; nan where kappa is undefined."""
    import numpy as np

    total = tables.sum(axis=(1, 2))
    with np.errstate(all="ignore"):
        expected = tables.sum(axis=2)[:, :, None] * tables.sum(axis=1)[:, None, :] / total[:, None, None]
        denominator = (disagreement * expected).sum(axis=(1, 2))
        kappa = 1 - (disagreement * tables).sum(axis=(1, 2)) / denominator
    return np.where((total > 0) & (denominator > 1e-12), kappa, np.nan)


def annotator_agreement(
    labels: Sequence[LabelTuple],
    level: Level,
    *,
    bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Estimate]:
    """Return each annotator's mean Cohen's kappa against every other annotator it shares >= 2 items with.

    Kappa is unweighted for nominal labels and quadratically weighted for ordinal and interval ones.
    The interval bootstraps the annotator's items: each resample recomputes every pairwise kappa on
    the resampled items and averages the defined ones. An annotator with no partner has value None.
    """
    import numpy as np

    _check_bootstrap(bootstrap, confidence)
    weights: Weights = None if level == "nominal" else "quadratic"
    grouped = by_item(labels)
    annotators = sorted({annotator for votes in grouped.values() for annotator in votes})
    all_values = [value for votes in grouped.values() for value in votes.values()]
    if not all_values:
        return {}
    domain = _kappa_domain(all_values, weights)
    index: dict[Hashable, int] = {value_key(value): k for k, value in enumerate(domain)}
    disagreement = _disagreement(domain, weights) if len(domain) >= 2 else np.zeros((1, 1))
    rng = np.random.default_rng(seed)
    method = "mean-cohen-kappa" if weights is None else "mean-cohen-kappa-quadratic"
    result: dict[str, Estimate] = {}
    for annotator in annotators:
        own = [votes for votes in grouped.values() if annotator in votes]
        # per partner: (own item index, own code, partner code) for every shared item
        partners: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
        for i, votes in enumerate(own):
            for other, value in votes.items():
                if other != annotator:
                    partners[other].append((i, index[value_key(votes[annotator])], index[value_key(value)]))
        shared = {other: np.array(rows) for other, rows in partners.items() if len(rows) >= 2}

        def mean_kappa(weights_of_items: np.ndarray, shared: dict[str, np.ndarray] = shared) -> np.ndarray:
            """Return the mean defined pairwise kappa for each row of item weights (nan where none is)."""
            kappas = [kappas_of_tables(_weighted_tables(rows, weights_of_items, len(domain)), disagreement)
                      for rows in shared.values()]  # fmt: skip
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a resample where no pair is defined
                return np.asarray(np.nanmean(np.stack(kappas), axis=0))

        value = _finite(float(mean_kappa(np.ones((1, len(own))))[0])) if shared and len(domain) >= 2 else None
        samples: list[float] = []
        if value is not None:
            for start in range(0, bootstrap, 100):
                drawn = [np.bincount(rng.integers(0, len(own), len(own)), minlength=len(own))
                         for _ in range(min(100, bootstrap - start))]  # fmt: skip
                means = mean_kappa(np.array(drawn, dtype=float))
                samples.extend(float(x) for x in means[np.isfinite(means)])
        low, high = _percentiles(samples, confidence)
        n_labels = sum(len(rows) for rows in shared.values())
        result[annotator] = Estimate(
            value=value, low=low, high=high, n_items=len(own), n_labels=n_labels, method=method
        )
    return result


def same(first: Any, second: Any) -> bool:
    """Tell whether two label values are equal (True is not 1)."""
    return bool(value_key(first) == value_key(second))


def wilson(successes: int, trials: int, method: str) -> Estimate:
    """Return a share with its 95% Wilson interval (None when there were no trials)."""
    from statsmodels.stats.proportion import proportion_confint

    if trials == 0:
        return Estimate(value=None, low=None, high=None, n_items=0, n_labels=0, method=method)
    low, high = proportion_confint(successes, trials, alpha=0.05, method="wilson")
    return Estimate(
        value=successes / trials, low=float(low), high=float(high), n_items=trials, n_labels=trials, method=method
    )


def gold_accuracy(labels: Sequence[LabelTuple], gold: Mapping[str, Any]) -> dict[str, Estimate]:
    """Return each annotator's share of gold items answered right, with a 95% Wilson interval.

    Annotators without a label on a gold item are left out.
    """
    right: dict[str, int] = defaultdict(int)
    seen: dict[str, int] = defaultdict(int)
    for item_id, votes in by_item(labels).items():
        if item_id not in gold:
            continue
        for annotator, value in votes.items():
            seen[annotator] += 1
            right[annotator] += same(value, gold[item_id])
    return {annotator: wilson(right[annotator], seen[annotator], "gold-accuracy-wilson") for annotator in sorted(seen)}


def calibration(pairs: Sequence[tuple[Any, float | None, Any]], *, bins: int = 10) -> Calibration:
    """Compare a judge's labels and stated confidence with the truth.

    Each pair is (judge value, confidence in [0, 1] or None, true value). ``agreement`` is the share
    of judge values equal to the truth (Wilson 95%). The expected calibration error sums, over equal-width
    confidence bins, the bin's share of pairs times |accuracy - mean confidence|; it is None when no
    pair states a confidence. Only bins holding pairs are listed.
    """
    if not 1 <= bins <= 100:
        raise InvalidInput("bins must be 1..100", field="bins")
    correct = [same(judged, truth) for judged, _, truth in pairs]
    agreement = wilson(sum(correct), len(pairs), "judge-agreement-wilson")
    stated = [
        (min(max(float(conf), 0.0), 1.0), ok)
        for (_, conf, _), ok in zip(pairs, correct, strict=True)
        if conf is not None and math.isfinite(conf)
    ]
    if not stated:
        return Calibration(agreement=agreement, ece=None, bins=[], n=len(pairs))
    groups: dict[int, list[tuple[float, bool]]] = defaultdict(list)
    for conf, ok in stated:
        groups[min(int(conf * bins), bins - 1)].append((conf, ok))
    out = []
    ece = 0.0
    for b in sorted(groups):
        members = groups[b]
        mean_conf = sum(conf for conf, _ in members) / len(members)
        accuracy = sum(ok for _, ok in members) / len(members)
        ece += len(members) / len(stated) * abs(accuracy - mean_conf)
        out.append(
            CalibrationBin(
                low=b / bins, high=(b + 1) / bins, confidence=mean_conf, accuracy=accuracy, count=len(members)
            )
        )
    return Calibration(agreement=agreement, ece=ece, bins=out, n=len(pairs))
