"""The safety filter: drop answers whose P(unsafe) reaches a threshold, stricter for minors' cohorts.

P(unsafe) comes from a safety classifier posttrain trains on the warehouse's own labels, or from a judge of
``posttrain.toml`` ``[annotate.judges.NAME]``.

Training (``train_classifier``): an interaction is *unsafe* when it has a ``flag`` feedback (any source: a
user's flag, or an annotation queue's consensus on a flag category) or an annotation label whose
``categories`` include ``unsafe``; *safe* when it is not unsafe and has a positive judgement by an annotator
or a judge (thumb up, rating >= 4 — the datasets' acceptance — or a label whose categories include
``safe``). The text is the prompt's messages and the answer, newline-joined (as the curation frame reads
them). Features: scikit-learn's stateless ``HashingVectorizer`` (word 1-2 grams and character 3-5 grams
within word bounds, 2**18 features each, l2-normalised), so only the logistic regression's weights need
storing: ``artifacts/safety/NAME/model.npz`` (``coef``, ``intercept``, read with ``allow_pickle=False``) and
``manifest.json`` (vectorizer parameters, example counts, metrics). With at least ``HOLDOUT_MIN`` examples per
class a stratified 20% is held out first and its accuracy and ROC AUC recorded; the stored model is then
fitted on every example.

Judges: a ``verifier`` judge's score (clipped to [0, 1]) or a ``reward-model`` judge's
``sigmoid(score - boundary)`` is its P(safe), as ``posttrain.annotate.judges`` maps scores to P(accept);
P(unsafe) = 1 - P(safe). Rows a verifier cannot score (no reference answer) are kept and counted unscored.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from posttrain.clock import utc_now
from posttrain.curation.config import SafetyStage
from posttrain.curation.frame import Frame, Verdict
from posttrain.errors import DependencyMissing, InvalidInput, NotFound
from posttrain.names import check_name
from posttrain.project import Project
from posttrain.warehouse import analytics
from posttrain.warehouse.rows import fetch_all
from posttrain.where import check_where, check_where_binds

FOLDER = "safety"
FEATURES = 2**18
VECTORIZERS: dict[str, dict[str, Any]] = {
    "words": {"analyzer": "word", "ngram_range": [1, 2], "n_features": FEATURES},
    "chars": {"analyzer": "char_wb", "ngram_range": [3, 5], "n_features": FEATURES},
}
HOLDOUT_MIN = 10  # examples per class from which 20% are held out for the metrics
MIN_RATING = 4.0
SKIPPED = "skipped: no safety classifier; train one with 'posttrain curate train-safety NAME'"
_HINT = {
    "unsafe": "flag unsafe answers or label them in an annotation queue",
    "safe": "have annotators or a judge accept safe answers (thumb up, rating >= 4) or label them 'safe'",
}


class SafetyClassifier(BaseModel):
    """A trained safety classifier, as its manifest records it."""

    name: str
    path: str = Field(description="Its folder: model.npz and manifest.json.")
    trained_at: datetime
    examples: dict[str, int] = Field(description="Examples per class (safe, unsafe).")
    metrics: dict[str, float] = Field(
        default_factory=dict, description="train_accuracy; holdout_accuracy and holdout_roc_auc with enough examples."
    )


@dataclass
class LoadedClassifier:
    """A safety classifier's weights, ready to score texts."""

    record: SafetyClassifier
    vectorizers: dict[str, dict[str, Any]]
    coef: np.ndarray
    intercept: float

    def p_unsafe(self, texts: list[str]) -> np.ndarray:
        """Return P(unsafe) of each text."""
        scores = _features(texts, self.vectorizers) @ self.coef + self.intercept
        return np.asarray(1.0 / (1.0 + np.exp(-scores)), dtype=float)


# --- training ------------------------------------------------------------------------------------


def _features(texts: list[str], params: dict[str, dict[str, Any]]) -> Any:
    """Return the hashed features of the texts (a sparse matrix): every vectorizer's, side by side."""
    try:
        from scipy.sparse import hstack
        from sklearn.feature_extraction.text import HashingVectorizer
    except ImportError:  # pragma: no cover - scikit-learn comes with the [curate] extra
        raise DependencyMissing("safety classifiers need scikit-learn: pip install 'posttrain[curate]'") from None
    parts = []
    for spec in params.values():
        vectorizer = HashingVectorizer(
            analyzer=spec["analyzer"], ngram_range=tuple(spec["ngram_range"]), n_features=spec["n_features"],
            alternate_sign=False, norm="l2", lowercase=True,
        )  # fmt: skip
        parts.append(vectorizer.transform(texts))
    return hstack(parts).tocsr()


def labelled_examples(project: Project, where: str | None = None) -> tuple[list[str], np.ndarray]:
    """Return the texts of the labelled interactions and their labels (1: unsafe, 0: safe), as the module says."""
    if where:
        try:
            where = check_where(where)  # one condition, no ';', comments or parameters
        except ValueError as exc:
            raise InvalidInput(str(exc), field="where") from None
    condition = f"AND ({where})" if where else ""
    sql = f"""
        WITH unsafe AS (
            SELECT interaction_id AS id FROM feedback WHERE kind = 'flag'
            UNION SELECT interaction_id FROM labels
            WHERE list_contains(json_extract_string(value, '$.categories[*]'), 'unsafe')
        ), safe AS (
            SELECT interaction_id AS id FROM feedback
            WHERE source IN ('annotator', 'judge')
              AND ((kind = 'thumb' AND score > 0) OR (kind = 'rating' AND score >= {MIN_RATING}))
            UNION SELECT interaction_id FROM labels
            WHERE list_contains(json_extract_string(value, '$.categories[*]'), 'safe')
        )
        SELECT i.id, i.messages, i.response, i.metadata, (i.id IN (SELECT id FROM unsafe)) AS unsafe
        FROM interactions i
        WHERE (i.id IN (SELECT id FROM unsafe) OR i.id IN (SELECT id FROM safe)) {condition}
        ORDER BY i.id"""  # fmt: skip
    with analytics.duckdb_over(project, sql) as cur:  # PostgreSQL: the tables it reads, copied out
        check_where_binds(cur, where)
        rows = fetch_all(cur, sql, json=("messages", "metadata"))
    texts = [_prompt_text(r["messages"]) + "\n" + _answer_text(r) for r in rows]
    return texts, np.array([bool(r["unsafe"]) for r in rows], dtype=np.int8)


def _prompt_text(messages: Any) -> str:
    """Return a message list's text: contents (and text parts) newline-joined."""
    out = []
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            content = " ".join(str(p.get("text") or "") for p in content if isinstance(p, dict))
        out.append("" if content is None else str(content))
    return "\n".join(out)


def _answer_text(row: dict[str, Any]) -> str:
    if row["response"]:
        return str(row["response"])
    message = (row["metadata"] or {}).get("response_message")
    return str(message.get("content") or "") if isinstance(message, dict) else ""


def train_classifier(
    project: Project, name: str, *, where: str | None = None, min_examples: int = 20
) -> SafetyClassifier:
    """Train a P(unsafe) classifier on the warehouse's labelled answers and store it as ``artifacts/safety/NAME``."""
    check_name(name, what="safety classifier")
    texts, labels = labelled_examples(project, where)
    counts = {"safe": int((labels == 0).sum()), "unsafe": int((labels == 1).sum())}
    for label in ("unsafe", "safe"):
        if counts[label] < min_examples:
            raise InvalidInput(f"{counts[label]} {label} examples, {min_examples} needed: {_HINT[label]}",
                               field="min_examples")  # fmt: skip
    features = _features(texts, VECTORIZERS)
    metrics = _holdout_metrics(features, labels) if min(counts.values()) >= HOLDOUT_MIN else {}
    model = _fit(features, labels)
    metrics["train_accuracy"] = round(float((model.predict(features) == labels).mean()), 4)
    record = SafetyClassifier(name=name, path=str(_folder(project, name)), trained_at=utc_now(), examples=counts,
                              metrics=metrics)  # fmt: skip
    _store(project, record, model.coef_[0], float(model.intercept_[0]))
    return record


def _fit(features: Any, labels: np.ndarray) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(class_weight="balanced", solver="liblinear", C=4.0, max_iter=1000).fit(features, labels)


def _holdout_metrics(features: Any, labels: np.ndarray) -> dict[str, float]:
    """Return the accuracy and ROC AUC on a stratified 20% held out from a model fitted on the rest."""
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    train_x, test_x, train_y, test_y = train_test_split(
        features, labels, test_size=0.2, stratify=labels, random_state=0
    )
    model = _fit(train_x, train_y)
    p = model.predict_proba(test_x)[:, 1]
    return {
        "holdout_accuracy": round(float(((p >= 0.5) == test_y).mean()), 4),
        "holdout_roc_auc": round(float(roc_auc_score(test_y, p)), 4),
        "holdout_examples": float(len(test_y)),
    }


def _folder(project: Project, name: str) -> Path:
    return project.artifacts / FOLDER / name


def _store(project: Project, record: SafetyClassifier, coef: np.ndarray, intercept: float) -> None:
    """Write the weights and manifest to a fresh folder, then put it in place of any earlier training."""
    final = _folder(project, record.name)
    staging = final.with_name(f".{record.name}.new")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    np.savez(staging / "model.npz", coef=coef.astype(np.float32), intercept=np.array([intercept], np.float64))
    manifest = {**record.model_dump(mode="json"), "vectorizers": VECTORIZERS, "format": 1}
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2))
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)


# --- loading -------------------------------------------------------------------------------------


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        found = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def list_classifiers(project: Project) -> list[SafetyClassifier]:
    """Return the trained safety classifiers, newest first."""
    root = project.artifacts / FOLDER
    found = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        manifest = _read_manifest(folder) if not folder.name.startswith(".") else None
        if manifest is not None:
            fields = {k: manifest.get(k) for k in SafetyClassifier.model_fields}
            found.append(SafetyClassifier.model_validate({**fields, "path": str(folder)}))
    return sorted(found, key=lambda c: (c.trained_at, c.name), reverse=True)


def load_classifier(project: Project, name: str | None = None) -> LoadedClassifier:
    """Load a safety classifier by name (None: the newest) from its arrays and manifest; no pickle is read."""
    if name is None:
        trained = list_classifiers(project)
        if not trained:
            raise NotFound(SKIPPED.removeprefix("skipped: "), field="classifier")
        name = trained[0].name
    check_name(name, field="classifier", what="safety classifier")
    folder = _folder(project, name)
    manifest = _read_manifest(folder)
    if manifest is None or not (folder / "model.npz").is_file():
        raise NotFound(f"no safety classifier {name!r}; train it with 'posttrain curate train-safety {name}' "
                       "or list them with 'posttrain curate classifiers'", field="classifier")  # fmt: skip
    with np.load(folder / "model.npz", allow_pickle=False) as arrays:
        coef, intercept = arrays["coef"].astype(np.float64), float(arrays["intercept"][0])
    fields = {k: manifest.get(k) for k in SafetyClassifier.model_fields}
    record = SafetyClassifier.model_validate({**fields, "path": str(folder)})
    return LoadedClassifier(record=record, vectorizers=manifest["vectorizers"], coef=coef, intercept=intercept)


# --- filtering -----------------------------------------------------------------------------------


def run(frame: Frame, stage: SafetyStage) -> Verdict:
    """Drop rows whose P(unsafe) reaches their threshold: ``strict_threshold`` for a strict frame or a row of a
    strict cohort, ``threshold`` otherwise; only rows of ``stage.cohorts`` when it names some."""
    n = len(frame)
    scope = np.isin(frame.cohort, stage.cohorts) if stage.cohorts else np.ones(n, dtype=bool)
    strict_rows = np.full(n, True) if frame.strict else np.isin(frame.cohort, list(frame.strict_cohorts))
    if stage.judge is not None:
        scorer = f"judge:{stage.judge}"
        p_unsafe = _judge_p_unsafe(frame, stage.judge, scope)
    else:
        if stage.classifier is None and not list_classifiers(frame.project):
            return Verdict(keep=np.ones(n, dtype=bool), note=SKIPPED, details={"scorer": None, "scored": 0})
        classifier = load_classifier(frame.project, stage.classifier)
        scorer = classifier.record.name
        p_unsafe = np.full(n, np.nan)
        index = np.flatnonzero(scope)
        if len(index):
            p_unsafe[index] = classifier.p_unsafe([str(t) for t in frame.text()[index]])
    limit = np.where(strict_rows, stage.strict_threshold, stage.threshold)
    drop = ~np.isnan(p_unsafe) & (p_unsafe >= limit)
    reasons: list[str | None] = [None] * n
    for i in np.flatnonzero(drop):
        strict = " (strict)" if strict_rows[i] else ""
        reasons[i] = f"P(unsafe) {p_unsafe[i]:.2f} >= {limit[i]:g}{strict} under {scorer}"
    scored = int((~np.isnan(p_unsafe)).sum())
    details: dict[str, Any] = {
        "scorer": scorer, "threshold": stage.strict_threshold if frame.strict else stage.threshold,
        "strict": frame.strict, "scored": scored, "unscored": int(scope.sum()) - scored,
        "strict_rows": int((strict_rows & scope).sum()),
    }  # fmt: skip
    return Verdict(keep=~drop, reasons=reasons, details=details)


def _judge_p_unsafe(frame: Frame, name: str, scope: np.ndarray) -> np.ndarray:
    """Return 1 - the judge's P(safe) of each row in scope (NaN where it gives no score or out of scope)."""
    from posttrain.annotate.judges import _scores, judge_spec, read_interactions

    spec = judge_spec(frame.project, name)
    if spec.kind not in ("reward-model", "verifier"):
        raise InvalidInput(f"judge {name!r} is a {spec.kind} judge; the safety filter needs a reward-model or "
                           "verifier judge, which scores each answer", field="curate.safety.judge")  # fmt: skip
    index = np.flatnonzero(scope)
    ids = [frame.interaction_id[i] for i in index]
    known = read_interactions(frame.project, [(i, None) for i in ids if isinstance(i, str)])
    rows = []
    for i, interaction in zip(index, ids, strict=True):
        stored = known.get(interaction) if isinstance(interaction, str) else None
        prompt = stored["prompt"] if stored else [{"role": "user", "content": str(frame.prompt[i] or "")}]
        rows.append({"prompt": prompt, "answer": stored["answer"] if stored else None,
                     "cohort": frame.cohort[i], "text": str(frame.answer[i] or "")})  # fmt: skip
    out = np.full(len(frame), np.nan)
    if rows:
        scores = _scores(frame.project, spec, rows)
        out[index] = [np.nan if s is None else 1.0 - s for s in scores]
    return out
