"""Reward specs for GRPO and RLOO: parse ``--reward`` strings into TRL ``reward_funcs``.

A spec is one of, optionally followed by ``@WEIGHT`` (default 1):

- ``model:NAME``: a registered model of kind ``reward-model``, loaded as a sequence classifier.
- ``verifier:NAME``: a verifier (see ``posttrain.evals.verifiers``) scoring each completion
  against the row's ``answer``; ``verifier:row`` uses each row's own ``verifier`` column.
- ``function:NAME``: a TRL reward function ``f(prompts, completions, **columns) -> list[float | None]``
  registered in ``posttrain.toml`` ``[functions.rewards]``; a module path is never accepted.

Example: ``--reward verifier:exact_match --reward model:rm1@0.5``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel

from posttrain import functions
from posttrain.errors import InvalidInput
from posttrain.evals.verifiers import check_verifier_name, get_verifier
from posttrain.project import Project

_NOT_COLUMNS = ("trainer_state", "log_extra", "log_metric", "environments", "completion_ids")


class RewardSpec(BaseModel):
    """One parsed ``--reward``."""

    kind: Literal["model", "verifier", "function"]
    name: str
    weight: float = 1.0


class Rewards(NamedTuple):
    """What TRL's GRPO/RLOO trainers take: functions, their tokenizers, and weights (parallel lists)."""

    funcs: list[Any]
    processing_classes: list[Any]
    weights: list[float]


def parse_reward_spec(spec: str) -> RewardSpec:
    """Parse ``KIND:NAME[@WEIGHT]``; raise InvalidInput showing the accepted forms."""
    body, at, weight_text = spec.strip().rpartition("@") if "@" in spec else (spec.strip(), "", "")
    try:
        weight = float(weight_text) if at else 1.0
    except ValueError:
        raise InvalidInput(f"reward {spec!r}: weight {weight_text!r} is not a number, as in model:rm1@0.5") from None
    prefix, colon, name = body.partition(":")
    if not colon or prefix not in ("model", "verifier", "function") or not name:
        raise InvalidInput(
            f"reward {spec!r} must be model:NAME, verifier:NAME or function:NAME (optionally @WEIGHT); "
            "Python rewards are registered in posttrain.toml [functions.rewards], never named by module",
            field="reward",
        )
    if prefix == "verifier" and name != "row":
        try:
            check_verifier_name(name)
        except InvalidInput as exc:
            raise InvalidInput(f"reward {spec!r}: {exc.message}", field="reward") from None
    elif prefix == "function":
        functions.check_name(name, what="reward", field="reward")
    return RewardSpec(kind=prefix, name=name, weight=weight)  # type: ignore[arg-type]


def _completion_text(completion: Any) -> str:
    """Return a completion's text; conversational completions are lists of messages."""
    if isinstance(completion, list):
        return str(completion[-1]["content"]) if completion else ""
    return str(completion)


class VerifierReward:
    """A TRL reward function scoring each completion against its row's ``answer`` with a verifier."""

    def __init__(self, verifier_name: str, registry: Mapping[str, str] | None = None) -> None:
        self.verifier_name = verifier_name
        self.__name__ = f"verifier_{verifier_name}"  # TRL logs rewards/<__name__>/mean
        self._registry = registry
        self._verifier = None if verifier_name == "row" else get_verifier(verifier_name, registry)

    def __call__(self, prompts: list[Any], completions: list[Any], **columns: Any) -> list[float | None]:
        rows = [
            {k: v[i] for k, v in columns.items() if k not in _NOT_COLUMNS and isinstance(v, list)}
            for i in range(len(completions))
        ]
        return [self._score(_completion_text(c), row) for c, row in zip(completions, rows, strict=True)]

    def _score(self, completion: str, row: dict[str, Any]) -> float | None:
        verifier = self._verifier
        if verifier is None:
            if not row.get("verifier"):
                return None  # TRL drops a None reward for that sample
            verifier = get_verifier(row["verifier"], self._registry)
        answer = row.pop("answer", None)
        row.pop("verifier", None)
        return verifier(completion, answer, **row)


def load_reward_model(project: Project, name: str) -> tuple[Any, Any]:
    """Load a registered reward-model as (sequence classifier, tokenizer); refuse other kinds."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from posttrain.models.registry import get_model

    record = get_model(project, name)
    if record.kind != "reward-model":
        raise InvalidInput(
            f"model {name!r} is a {record.kind}, not a reward-model; train one with 'posttrain train reward'",
            field="reward",
        )
    model = AutoModelForSequenceClassification.from_pretrained(record.path, num_labels=1)
    model.eval()
    return model, AutoTokenizer.from_pretrained(record.path)


def _registered_reward(project: Project, spec: RewardSpec) -> Callable[..., Any]:
    function = functions.load(project.settings.functions.rewards, "rewards", spec.name, field="reward")

    def reward(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float | None]:
        try:
            return function(prompts=prompts, completions=completions, **columns)  # type: ignore[no-any-return]
        except Exception as exc:  # the registered function's own failure: name it, not a 500
            raise InvalidInput(f"reward function:{spec.name} failed: {type(exc).__name__}: {exc}") from None

    reward.__name__ = spec.name  # TRL logs rewards/<__name__>/mean
    return reward


def build_rewards(project: Project, specs: list[str]) -> Rewards:
    """Turn ``--reward`` specs into TRL ``reward_funcs``, ``reward_processing_classes`` and weights."""
    if not specs:
        raise InvalidInput("give at least one --reward, such as verifier:exact_match", field="reward")
    rewards = Rewards([], [], [])
    for spec in map(parse_reward_spec, specs):
        func, tokenizer = _build_one(project, spec)
        rewards.funcs.append(func)
        rewards.processing_classes.append(tokenizer)
        rewards.weights.append(spec.weight)
    return rewards


def _build_one(project: Project, spec: RewardSpec) -> tuple[Any, Any]:
    if spec.kind == "model":
        return load_reward_model(project, spec.name)
    if spec.kind == "verifier":
        return VerifierReward(spec.name, project.settings.functions.verifiers), None
    return _registered_reward(project, spec), None
