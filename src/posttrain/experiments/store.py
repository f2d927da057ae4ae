"""Storing experiments, their states, and the sticky assignment of users to variants."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from pydantic import BaseModel

from posttrain.clock import utc_now
from posttrain.errors import Conflict, NotFound
from posttrain.experiments.records import Experiment, ExperimentConfig, State
from posttrain.ids import new_id
from posttrain.project import Project
from posttrain.warehouse.rows import fetch_all, fetch_one

# --- storage ------------------------------------------------------------------------------


def _dumps(value: Any) -> str:
    def encode(v: Any) -> Any:
        return v.model_dump(mode="json") if isinstance(v, BaseModel) else str(v)

    return orjson.dumps(value, default=encode).decode()


_JSON = ("metrics", "variants", "targeting", "decision", "analyses")


def _to_experiment(data: dict[str, Any]) -> Experiment:
    config = ExperimentConfig(
        name=data["name"], variants=data["variants"], cohorts=data["targeting"]["cohorts"], **data["metrics"]
    )
    return Experiment(
        id=data["id"],
        config=config,
        state=data["state"],
        analyses=data["analyses"],
        decision=data["decision"] or None,
        created_at=data["created_at"],
        started_at=data["started_at"],
        stopped_at=data["stopped_at"],
    )


def _find(project: Project, name: str) -> Experiment | None:
    data = fetch_one(project.cursor(), "SELECT * FROM experiments WHERE name = ? OR id = ?", [name, name], json=_JSON)
    return None if data is None else _to_experiment(data)


KEEP_ANALYSES = 50  # snapshots kept per experiment; the timeline is recomputed from the warehouse


def _update(project: Project, experiment: Experiment, **fields: Any) -> None:
    if "analyses" in fields:
        fields["analyses"] = fields["analyses"][-KEEP_ANALYSES:]
    sets = ", ".join(f"{name} = ?" for name in fields)
    values = [_dumps(v) if name in ("analyses", "decision") and v is not None else v for name, v in fields.items()]
    project.cursor().execute(f"UPDATE experiments SET {sets} WHERE id = ?", [*values, experiment.id])


def create_experiment(project: Project, config: ExperimentConfig) -> Experiment:
    """Store a new experiment in the draft state; raise Conflict if the name is taken."""
    if _find(project, config.name) is not None:
        raise Conflict(
            f"an experiment named {config.name!r} exists; choose another name or see "
            f"'posttrain experiments status {config.name}'"
        )
    experiment = Experiment(id=new_id(), config=config, state="draft", created_at=utc_now())
    metrics = config.model_dump(include={"metric", "direction", "guardrails", "min_samples", "alpha"})
    project.cursor().execute(
        "INSERT INTO experiments (id, name, variants, targeting, metrics, state, analyses, created_at) "
        "VALUES (?, ?, ?, ?, ?, 'draft', '[]', ?)",
        [
            experiment.id,
            config.name,
            _dumps([v.model_dump() for v in config.variants]),
            _dumps({"cohorts": config.cohorts}),
            _dumps(metrics),
            experiment.created_at,
        ],
    )
    return experiment


def get_experiment(project: Project, name: str) -> Experiment:
    """Return one experiment by name (or id); raise NotFound naming the fix."""
    found = _find(project, name)
    if found is None:
        raise NotFound(
            f"no experiment {name!r}; run 'posttrain experiments list' or 'posttrain experiments create'",
            field="experiment",
        )
    return found


def list_experiments(project: Project, *, state: State | None = None, with_analyses: bool = True) -> list[Experiment]:
    """Return experiments newest first, optionally in one state (and without their analysis snapshots)."""
    where, params = ("WHERE state = ?", [state]) if state else ("", [])
    # DuckDB leaves the snapshots behind in the query; PostgreSQL has no * REPLACE, so they are dropped here
    select = "*" if with_analyses or project.is_postgres else "* REPLACE ('[]' AS analyses)"
    sql = f"SELECT {select} FROM experiments {where} ORDER BY created_at DESC, id DESC"
    rows = fetch_all(project.cursor(), sql, params, json=_JSON)
    return [_to_experiment(r if with_analyses else {**r, "analyses": []}) for r in rows]


_FIX = {
    "draft": "run 'posttrain experiments start {name}'",
    "running": "run 'posttrain experiments stop {name}', or promote or roll it back",
    "stopped": "promote or roll it back: 'posttrain experiments promote {name}'",
    "promoted": "it is finished; create a new experiment",
    "rolled_back": "it is finished; create a new experiment",
}


def _require(experiment: Experiment, allowed: tuple[State, ...], action: str) -> None:
    if experiment.state not in allowed:
        fix = _FIX[experiment.state].format(name=experiment.name)
        raise Conflict(
            f"cannot {action} experiment {experiment.name!r}: it is {experiment.state} "
            f"(needs {' or '.join(allowed)}); {fix}"
        )


def start(project: Project, name: str) -> Experiment:
    """Move a draft experiment to running: from now on the gateway may assign users to it."""
    experiment = get_experiment(project, name)
    _require(experiment, ("draft",), "start")
    _update(project, experiment, state="running", started_at=utc_now())
    return get_experiment(project, name)


def stop(project: Project, name: str) -> Experiment:
    """Stop assigning users to a running experiment; its data stays for analysis."""
    experiment = get_experiment(project, name)
    _require(experiment, ("running",), "stop")
    _update(project, experiment, state="stopped", stopped_at=utc_now())
    return get_experiment(project, name)


# --- assignment ---------------------------------------------------------------------------


def bucket(experiment: str, user_id: str) -> float:
    """Return the user's sticky uniform number in [0, 1) for this experiment (SHA-256 based)."""
    digest = hashlib.sha256(f"{experiment}\x00{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign(experiment: Experiment | ExperimentConfig, user_id: str) -> tuple[str, float]:
    """Return the user's variant and its assignment probability; the same user always gets the same one."""
    config = experiment.config if isinstance(experiment, Experiment) else experiment
    u = bucket(config.name, user_id)
    cumulative = 0.0
    for variant in config.variants:
        cumulative += variant.share
        if u < cumulative:
            return variant.name, variant.share
    last = config.variants[-1]  # shares sum to 1 only up to rounding
    return last.name, last.share
