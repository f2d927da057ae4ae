"""compute.reporting: a build's per-row stages report their progress to the caller (the CLI's bars)."""

from __future__ import annotations

from curation.helpers import NEAR_DUPLICATES, build_sft, store_accepted
from posttrain import compute
from posttrain.project import Project


def test_a_curated_build_reports_each_per_row_stage_from_start_to_end(project: Project) -> None:
    store_accepted(project, NEAR_DUPLICATES)
    seen: list[tuple[str, int, int]] = []

    with compute.reporting(lambda what, done, total: seen.append((what, done, total))):
        build_sft(project, "chat", curate={"dedup": {}, "quality": {"languages": ["en"]}})

    stages = list(dict.fromkeys(what for what, _, _ in seen))
    assert stages == [
        "the PII scrub of the build",
        "curation's dedup stage (MinHash)",
        "curation's quality stage (language identification)",
    ]
    for stage in stages:
        points = [(done, total) for what, done, total in seen if what == stage]
        assert points[0][0] == 0 and points[-1][0] == points[-1][1] > 0, points
    assert seen[0][2] == len(NEAR_DUPLICATES)


def test_nothing_is_reported_outside_the_block(project: Project) -> None:
    store_accepted(project, NEAR_DUPLICATES)
    seen: list[str] = []
    with compute.reporting(lambda what, done, total: seen.append(what)):
        pass
    build_sft(project, "chat")
    assert seen == []
