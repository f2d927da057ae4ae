"""Scorers: what a suite measures each response with — verifiers and reward models.

A scorer takes a batch (dataset rows, their completions) and returns one float per completion.
Names, as a suite and ``posttrain evals run`` take them:

- a verifier name (``exact_match``, ``numeric:0.01``, ``regex``, or one registered in
  ``posttrain.toml`` ``[functions.verifiers]``; see ``posttrain.evals.verifiers``), or ``row`` for
  each row's own ``verifier`` column;
- ``model:NAME`` for a registered ``reward-model`` (its raw score, not bounded to [0, 1]).

``resolve_scorer(project, name)`` turns a name into a ``ScorerSpec`` on the side that holds the
project (the names a request gave, looked up in the project's own ``[functions.verifiers]``, a
reward model's folder); ``scorer_from_spec`` builds the scorer from it anywhere, a Ray worker
included, with no DuckDB connection. A worker imports only what the project registered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from posttrain.errors import InvalidInput
from posttrain.evals.verifiers import Verifier, check_verifier_name, get_verifier
from posttrain.models.registry import get_model
from posttrain.project import Project

_NOT_VERIFIER_COLUMNS = ("prompt", "answer", "completion", "verifier")


class Scorer(Protocol):
    """Scores completions of dataset rows; ``name`` is how results name it."""

    name: str

    def score(self, rows: Sequence[dict[str, Any]], completions: Sequence[str]) -> list[float]:
        """Return one score per completion."""
        ...


class VerifierScorer:
    """A verifier against each row's ``answer``; ``row`` uses each row's ``verifier`` column."""

    def __init__(self, name: str, registry: Mapping[str, str] | None = None) -> None:
        self.name = name
        self._registry = registry
        self._verifier: Verifier | None = None if name == "row" else get_verifier(name, registry)

    def score(self, rows: Sequence[dict[str, Any]], completions: Sequence[str]) -> list[float]:
        """Return each completion's verifier score."""
        return [self._one(row, completion) for row, completion in zip(rows, completions, strict=True)]

    def _one(self, row: dict[str, Any], completion: str) -> float:
        verifier = self._verifier
        if verifier is None:
            if not row.get("verifier"):
                raise InvalidInput("scorer 'row' needs a 'verifier' on every row; name a verifier instead")
            verifier = get_verifier(row["verifier"], self._registry)
        extra = {k: v for k, v in row.items() if k not in _NOT_VERIFIER_COLUMNS}
        return float(verifier(completion, row.get("answer"), **extra))


class RewardModelScorer:
    """A registered reward model's score of the conversation with the completion as the answer."""

    def __init__(self, project: Project | None, model: str, *, batch_size: int = 16, path: str | None = None) -> None:
        """Load reward model ``model`` of ``project``, or the copy of its folder at ``path`` (a Ray worker's)."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if path is None:
            if project is None:
                raise ValueError("give the project or the reward model's folder")
            path = reward_model_folder(project, model)
        self.name = f"model:{model}"
        self._model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
        self._model.eval()
        self._tokenizer: Any = AutoTokenizer.from_pretrained(path)
        self._batch_size = batch_size

    def score(self, rows: Sequence[dict[str, Any]], completions: Sequence[str]) -> list[float]:
        """Return the reward of each (prompt, completion), in batches."""
        texts = [
            self._tokenizer.apply_chat_template([*row["prompt"], {"role": "assistant", "content": c}], tokenize=False)
            for row, c in zip(rows, completions, strict=True)
        ]
        out: list[float] = []
        for start in range(0, len(texts), self._batch_size):
            out += self._forward(texts[start : start + self._batch_size])
        return out

    def _forward(self, texts: list[str]) -> list[float]:
        import torch

        enc = self._tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            logits = self._model(**enc).logits
        return [float(v) for v in logits[:, 0].tolist()]


def check_scorer_name(name: str) -> None:
    """Raise InvalidInput for a scorer name that is neither a verifier, ``row`` nor ``model:NAME``."""
    if name.startswith("model:"):
        if not name[len("model:") :]:
            raise InvalidInput("scorer 'model:' needs a reward model's name, as in model:rm1", field="scorers")
        return
    if name != "row":
        check_verifier_name(name)


class ScorerSpec(BaseModel):
    """A scorer resolved against a project: what building it needs, with no project (a Ray worker's copy).

    Only ``resolve_scorer`` makes one from a request's name: ``verifiers`` is the project's own
    ``[functions.verifiers]`` table, ``path`` a registered reward model's folder.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="The scorer's name, as a suite gives it (exact_match, row, model:rm ...).")
    verifiers: dict[str, str] = Field(default_factory=dict, description="The project's [functions.verifiers].")
    path: str | None = Field(None, description="model:NAME: the reward model's folder.")


def reward_model_folder(project: Project, name: str) -> str:
    """Return the folder of the registered reward model ``name``; refuse other kinds."""
    record = get_model(project, name)
    if record.kind != "reward-model":
        raise InvalidInput(
            f"model {name!r} is a {record.kind}, not a reward-model; train one with 'posttrain train reward'",
            field="reward",
        )
    return record.path


def resolve_scorer(project: Project, name: str) -> ScorerSpec:
    """Return what building scorer ``name`` needs; raise NotFound for an unknown reward model."""
    check_scorer_name(name)
    if name.startswith("model:"):
        return ScorerSpec(name=name, path=reward_model_folder(project, name[len("model:") :]))
    return ScorerSpec(name=name, verifiers=dict(project.settings.functions.verifiers))


def scorer_from_spec(spec: ScorerSpec, *, path: str | None = None) -> Scorer:
    """Build the scorer ``spec`` describes, here; ``path`` replaces its folder (a worker's local copy)."""
    check_scorer_name(spec.name)  # a worker re-checks: never a module path, whoever made the spec
    if spec.name.startswith("model:"):
        return RewardModelScorer(None, spec.name[len("model:") :], path=path or spec.path)
    return VerifierScorer(spec.name, spec.verifiers)


def build_scorer(project: Project, name: str) -> Scorer:
    """Return the scorer called ``name`` (loading a reward model's weights for ``model:NAME``)."""
    return scorer_from_spec(resolve_scorer(project, name))
