"""Helpers for the curation tests: frames made directly, and sft versions built from real warehouse rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from posttrain import datasets
from posttrain.capture import capture
from posttrain.curation.frame import Frame
from posttrain.project import Project

# three near-copies of one answer (an edit apart), and five distinct rows
NEAR_DUPLICATES = [
    ("How do I reset my password on the billing portal?", "Open Settings, then Security, then Reset password."),
    ("How do I reset my password on the billing portal??", "Open Settings, then Security, then Reset password."),
    ("how do I reset my password on the billing portal?", "Open Settings, then Security, then Reset password!"),
    ("What is the capital of France?", "Paris."),
    ("Translate 'good morning' into German.", "Guten Morgen."),
    ("Sort the letters of 'dcba'.", "abcd"),
    ("Write a haiku about rain on a tin roof.", "Drops drum on the tin, small hands applaud."),
    ("Which planet is known as the red planet?", "Mars."),
]  # fmt: skip


def make_frame(
    project: Project,
    prompts: Sequence[str],
    answers: Sequence[str | None] | None = None,
    *,
    cohorts: Sequence[str] | None = None,
    families: Sequence[str] | None = None,
    quality: Sequence[float] | None = None,
    kind: str = "sft",
    name: str = "curated",
    strict: bool = False,
) -> Frame:
    """Return a frame of sft-shaped rows (prompt, completion as message lists) with the given views."""
    n = len(prompts)
    answers = list(answers) if answers is not None else [f"answer {i}" for i in range(n)]
    table = pa.table({
        "prompt": [[{"role": "user", "content": p}] for p in prompts],
        "completion": [[{"role": "assistant", "content": a}] for a in answers],
        "source": ["accepted"] * n,
        "interaction_id": [f"i{k:06d}" for k in range(n)],
        "feedback_ids": [[] for _ in range(n)],
    })  # fmt: skip
    return Frame(
        project=project,
        kind=kind,  # type: ignore[arg-type]
        name=name,
        table=table,
        prompt=np.array(list(prompts), dtype=object),
        answer=np.array(answers, dtype=object),
        cohort=np.array(list(cohorts) if cohorts is not None else ["adult"] * n, dtype=object),
        family=np.array(list(families) if families is not None else ["(none)"] * n, dtype=object),
        quality=np.array(list(quality) if quality is not None else [np.nan] * n, dtype=float),
        interaction_id=np.array([f"i{k:06d}" for k in range(n)], dtype=object),
        strict=strict,
    )


def store_accepted(
    project: Project,
    pairs: Sequence[tuple[str, str]],
    *,
    cohort: str = "adult",
    prefix: str = "i",
    extra: dict[str, Any] | None = None,
) -> list[str]:
    """Capture one interaction per (prompt, answer), each with a thumb up; return the ids."""
    ids = [f"{prefix}{k:05d}" for k in range(len(pairs))]
    interactions = [
        {"id": i, "messages": [{"role": "user", "content": p}], "response": a, "user_id": f"u-{i}", "cohort": cohort,
         **(extra or {})}
        for i, (p, a) in zip(ids, pairs, strict=True)
    ]  # fmt: skip
    feedback = [{"id": f"f-{i}", "interaction_id": i, "kind": "thumb", "value": True} for i in ids]
    for kind, events in (("interactions", interactions), ("feedback", feedback)):
        results = capture(project, kind, events)  # type: ignore[arg-type]
        assert all(r.status == "created" for r in results), results
    return ids


def build_sft(
    project: Project, name: str, curate: dict[str, Any] | None = None, **config: Any
) -> datasets.DatasetVersion:
    """Build an sft version with a curation recipe, as the API and CLI do."""
    return datasets.build(project, "sft", name, datasets.BuildConfig.parse(curate=curate, **config))
