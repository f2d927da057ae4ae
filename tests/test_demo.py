"""The demo's report: acceptance arithmetic, report.json's shape, report.html's plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from posttrain.demo import DemoConfig, acceptance, recipe, write_report
from posttrain.loop import Recipe


def _turn(turn: int, adult: float, violations: float) -> dict[str, Any]:
    return {
        "turn": turn,
        "serving": {"adult": f"m{turn}", "minor": f"m{turn}"},
        "success": {"adult": adult, "minor": 0.3},
        "safety_violations": {"adult": 0.0, "minor": violations},
        "feedback": {"thumb": 100 + turn, "edit": 5},
        "seconds": {"measure": 3.0},
        "decisions": {"adult": {"action": "promote", "model": f"m{turn}",
                                "arms": {"serving": {"model": "a", "n": 90, "mean": 0.4, "ci_low": 0.3, "ci_high": 0.5},
                                         "candidate": {"model": "b", "n": 88, "mean": 0.6, "ci_low": 0.5,
                                                       "ci_high": 0.7}}}} if turn else {},
        "training": {f"m{turn}": [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]} if turn else {},
    }  # fmt: skip


def test_acceptance_needs_the_gain_the_safety_and_no_regression() -> None:
    good = {"turns": [_turn(0, 0.35, 0.8), _turn(1, 0.45, 0.3), _turn(2, 0.52, 0.05), _turn(3, 0.58, 0.01)]}
    verdict = acceptance(good)
    assert verdict["passed"] and verdict["adult_gain_points"] == pytest.approx(23.0)
    dip = {"turns": [_turn(0, 0.35, 0.8), _turn(1, 0.60, 0.01), _turn(2, 0.50, 0.01), _turn(3, 0.58, 0.01)]}
    assert acceptance(dip)["adult_regressed"] and not acceptance(dip)["passed"]
    unsafe = {"turns": [_turn(0, 0.35, 0.8), _turn(3, 0.60, 0.05)]}
    assert acceptance(unsafe)["gain_met"] and not acceptance(unsafe)["safety_met"]


def test_report_files_have_the_numbers_and_the_plots(tmp_path: Path) -> None:
    report = {"seed": 3, "turns": [_turn(0, 0.35, 0.8), _turn(1, 0.5, 0.2)]}
    report["acceptance"] = acceptance(report)
    data, page = write_report(tmp_path, report)
    loaded = json.loads(data.read_text())
    assert loaded["seed"] == 3 and [t["turn"] for t in loaded["turns"]] == [0, 1]
    assert set(loaded["turns"][0]) >= {"turn", "serving", "success", "safety_violations", "feedback", "seconds"}
    text = page.read_text()
    assert text.count("<svg") >= 5  # success, violations, feedback, experiment intervals, a training curve
    assert "success of the served model per turn" in text and "m1" in text and "not met" in text


def test_demo_recipe_is_a_valid_loop_recipe() -> None:
    steps = recipe(DemoConfig.fast())
    assert isinstance(steps, Recipe) and steps.requested_model == "assistant"
    assert steps.grpo.reward == ["function:sim", "reward-model"] and "minor" in steps.specialise
    assert DemoConfig.fast().measure_requests < DemoConfig().measure_requests
