"""Consensus of several labels per item: majority vote and Dawid-Skene.

A label is ``(item_id, annotator, value)`` with a hashable value (int, float, bool, str, or a tuple
for a set of categories). Both functions are pure and deterministic.

Dawid-Skene (1979) is written here with numpy rather than taken from crowd-kit: crowd-kit pulls
pandas, scikit-learn and more for one EM loop of about sixty lines.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence
from typing import Any

from pydantic import BaseModel

LabelTuple = tuple[str, str, Any]

# added to every count of the Dawid-Skene M-step, so no class or confusion cell is ever certain to be 0
SMOOTHING = 0.01


class Resolved(BaseModel):
    """The consensus of one item.

    ``value`` is None when the vote is unresolved (a tie of non-numeric values). ``support`` is the
    share of votes for the value (majority) or its posterior probability (Dawid-Skene); ``n`` counts
    the labels.
    """

    value: Any
    support: float
    n: int


class DawidSkeneResult(BaseModel):
    """Dawid-Skene's items, each annotator's estimated accuracy, and the EM iterations run."""

    items: dict[str, Resolved]
    reliability: dict[str, float]
    iterations: int


def is_numeric(value: Any) -> bool:
    """Tell whether a value is an int or float (bools are not numbers here)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)


def value_key(value: Any) -> Hashable:
    """Return a key under which equal values meet and True never meets 1."""
    return (isinstance(value, bool), value)


def sort_key(value: Any) -> tuple[int, Any]:
    """Order values deterministically: numbers by size, everything else by its repr."""
    if is_numeric(value):
        return (0, float(value))
    return (1, f"{type(value).__name__}:{value!r}")


def _group(labels: Sequence[LabelTuple]) -> dict[str, list[Any]]:
    by_item: dict[str, list[Any]] = defaultdict(list)
    for item_id, _annotator, value in labels:
        by_item[item_id].append(value)
    return by_item


def _median_vote(votes: list[Any]) -> Any:
    """Return the vote nearest the median of all votes (the lower one when two are equally near)."""
    ordered = sorted(votes, key=float)
    mid = len(ordered) // 2
    median = float(ordered[mid]) if len(ordered) % 2 else (float(ordered[mid - 1]) + float(ordered[mid])) / 2
    return min(ordered, key=lambda vote: (abs(float(vote) - median), float(vote)))


def resolve_votes(votes: list[Any]) -> Resolved:
    """Resolve one item's votes by majority.

    A tie of numeric votes resolves to the median of all votes, rounded to the nearest existing vote
    (the lower one of two equally near); a tie of other values is unresolved (value None) and its
    support is the tied share.
    """
    counts = Counter(value_key(vote) for vote in votes)
    first = {value_key(vote): vote for vote in reversed(votes)}
    top = max(counts.values())
    winners = [first[key] for key, count in counts.items() if count == top]
    n = len(votes)
    if len(winners) == 1:
        return Resolved(value=winners[0], support=top / n, n=n)
    if all(is_numeric(vote) for vote in votes):
        chosen = _median_vote(votes)
        return Resolved(value=chosen, support=counts[value_key(chosen)] / n, n=n)
    return Resolved(value=None, support=top / n, n=n)


def majority(labels: Sequence[LabelTuple]) -> dict[str, Resolved]:
    """Resolve each item by majority vote (see ``resolve_votes`` for ties)."""
    return {item_id: resolve_votes(votes) for item_id, votes in _group(labels).items()}


def dawid_skene(labels: Sequence[LabelTuple], *, max_iter: int = 100, tol: float = 1e-6) -> DawidSkeneResult:
    """Resolve items by Dawid-Skene EM, started from the (soft) majority vote.

    Each annotator has a confusion matrix (true class -> given label), estimated with smoothing so no
    probability is ever 0. An annotator's reliability is its accuracy: the diagonal of its confusion
    matrix weighted by the class priors. Ties of the posterior go to the first class in ``sort_key`` order.
    """
    import numpy as np

    if not labels:
        return DawidSkeneResult(items={}, reliability={}, iterations=0)
    items = sorted({item for item, _, _ in labels})
    annotators = sorted({annotator for _, annotator, _ in labels})
    by_key: dict[Hashable, Any] = {}
    for _, _, value in labels:
        by_key.setdefault(value_key(value), value)
    classes = sorted(by_key.values(), key=sort_key)
    class_index = {value_key(value): k for k, value in enumerate(classes)}
    item_index = {item: i for i, item in enumerate(items)}
    annotator_index = {annotator: j for j, annotator in enumerate(annotators)}
    n_items, n_annotators, n_classes = len(items), len(annotators), len(classes)

    counts = np.zeros((n_items, n_annotators, n_classes))
    for item, annotator, value in labels:
        counts[item_index[item], annotator_index[annotator], class_index[value_key(value)]] += 1
    votes = counts.sum(axis=1)
    posterior = (votes + SMOOTHING) / (votes + SMOOTHING).sum(axis=1, keepdims=True)

    iterations = 0
    priors = np.full(n_classes, 1 / n_classes)
    confusion = np.full((n_annotators, n_classes, n_classes), 1 / n_classes)
    for iterations in range(1, max_iter + 1):  # noqa: B007 - the count is reported
        # M-step: class priors and each annotator's confusion matrix from the current posteriors
        priors = (posterior.sum(axis=0) + SMOOTHING) / (n_items + SMOOTHING * n_classes)
        confusion = np.einsum("ik,ijl->jkl", posterior, counts) + SMOOTHING
        confusion /= confusion.sum(axis=2, keepdims=True)
        # E-step: posterior of each item's true class given all its labels
        log_post = np.log(priors)[None, :] + np.einsum("ijl,jkl->ik", counts, np.log(confusion))
        log_post -= log_post.max(axis=1, keepdims=True)
        updated = np.exp(log_post)
        updated /= updated.sum(axis=1, keepdims=True)
        change = float(np.abs(updated - posterior).max())
        posterior = updated
        if change < tol:
            break

    chosen = posterior.argmax(axis=1)
    resolved = {
        item: Resolved(value=classes[int(chosen[i])], support=float(posterior[i, chosen[i]]), n=int(votes[i].sum()))
        for i, item in enumerate(items)
    }
    diagonal = np.diagonal(confusion, axis1=1, axis2=2)
    reliability = {annotator: float(diagonal[j] @ priors) for j, annotator in enumerate(annotators)}
    return DawidSkeneResult(items=resolved, reliability=reliability, iterations=iterations)
