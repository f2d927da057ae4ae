"""Experiments on real warehouse rows: assignment, analysis, decisions, state, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from posttrain import experiments as ex
from posttrain.capture import capture
from posttrain.cli import app
from posttrain.errors import Conflict, NotFound
from posttrain.experiments.records import MAX_COHORTS, MAX_VARIANTS
from posttrain.models.registry import get_model, register_model
from posttrain.project import Project, init_project

pytestmark = pytest.mark.warehouses("duckdb", "postgresql")


def _config(name: str = "exp", **kwargs: Any) -> ex.ExperimentConfig:
    variants = [ex.Variant(name="control", model="base", share=0.5), ex.Variant(name="new", model="cand", share=0.5)]
    return ex.ExperimentConfig(name=name, variants=kwargs.pop("variants", variants), **kwargs)


def _running(project: Project, **kwargs: Any) -> ex.Experiment:
    ex.create_experiment(project, _config(**kwargs))
    return ex.start(project, "exp")


def _register(project: Project, tmp_path: Path, *names: str) -> None:
    for name in names:
        folder = tmp_path / "models" / name
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
        register_model(project, name, folder)


def _traffic(
    project: Project,
    variant: str,
    *,
    up: int,
    down: int,
    cohort: str | None = None,
    none: int = 0,
    latency: float = 100.0,
    exp: str = "exp",
) -> list[str]:
    """Capture up + down + none interactions; thumbs up/down on the first up + down of them."""
    n = up + down + none
    events = [
        {"messages": [{"role": "user", "content": "hi"}], "experiment": exp, "variant": variant, "cohort": cohort,
         "user_id": f"{variant}-{cohort}-{i}", "latency_ms": latency + (i % 7), "cost": 0.01}
        for i in range(n)
    ]  # fmt: skip
    ids = [r.id for r in capture(project, "interactions", events) if r.id]
    thumbs = [
        {"interaction_id": ids[i], "kind": "thumb", "value": "up" if i < up else "down"} for i in range(up + down)
    ]
    if thumbs:
        capture(project, "feedback", thumbs)
    return ids


# --- assignment ---------------------------------------------------------------------------


def test_assign_is_sticky_and_deterministic() -> None:
    config = _config()
    assert all(ex.assign(config, f"u{i}") == ex.assign(config, f"u{i}") for i in range(200))
    other = _config(name="other")
    assert [ex.assign(config, f"u{i}")[0] for i in range(200)] != [ex.assign(other, f"u{i}")[0] for i in range(200)]


def test_assign_matches_shares_over_10000_users() -> None:
    variants = [ex.Variant(name=n, model=n, share=s) for n, s in [("a", 0.2), ("b", 0.3), ("c", 0.5)]]
    config = _config(variants=variants)
    picks = [ex.assign(config, f"user-{i}") for i in range(10_000)]
    for v in variants:
        count = sum(1 for name, _ in picks if name == v.name)
        sd = (10_000 * v.share * (1 - v.share)) ** 0.5
        assert abs(count - 10_000 * v.share) < 4 * sd
    assert {name: p for name, p in picks} == {"a": 0.2, "b": 0.3, "c": 0.5}


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"variants": [ex.Variant(name="a", model="m", share=1.0)]}, "at least 2"),
        ({"variants": [ex.Variant(name="a", model="m", share=0.5), ex.Variant(name="b", model="m", share=0.4)]},
         "sum to 1"),
        ({"metric": "clicks"}, "thumbs_up_rate"),
    ],
)  # fmt: skip
def test_config_rejects_bad_input_with_the_fix(kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        _config(**kwargs)


def test_config_direction_defaults_from_metric() -> None:
    assert _config(metric="latency_ms").direction == "lower"
    assert _config().direction == "higher"


# --- state ----------------------------------------------------------------------------------


def test_create_get_list_round_trip(project: Project) -> None:
    created = ex.create_experiment(project, _config(cohorts=["free"], guardrails=[ex.Guardrail(metric="cost")]))
    got = ex.get_experiment(project, "exp")
    assert got.config == created.config and got.state == "draft"
    assert [e.name for e in ex.list_experiments(project)] == ["exp"]
    with pytest.raises(Conflict, match="exists"):
        ex.create_experiment(project, _config())
    with pytest.raises(NotFound, match="posttrain experiments list"):
        ex.get_experiment(project, "nope")


def test_state_transitions_are_checked(project: Project) -> None:
    ex.create_experiment(project, _config())
    with pytest.raises(Conflict, match="it is draft.*posttrain experiments start exp"):
        ex.stop(project, "exp")
    with pytest.raises(Conflict, match="cannot promote"):
        ex.promote(project, "exp")
    assert ex.start(project, "exp").state == "running"
    with pytest.raises(Conflict, match="it is running"):
        ex.start(project, "exp")
    stopped = ex.stop(project, "exp")
    assert stopped.state == "stopped" and stopped.stopped_at is not None
    assert ex.rollback(project, "exp").state == "rolled_back"
    with pytest.raises(Conflict, match="create a new experiment"):
        ex.promote(project, "exp", "new")


# --- analysis -------------------------------------------------------------------------------


def test_analyse_matches_hand_counts(project: Project) -> None:
    _running(project)
    ids = _traffic(project, "control", up=3, down=1, none=2, cohort="free", latency=100)
    _traffic(project, "new", up=4, down=0, none=1, cohort="pro", latency=200)
    # a later thumb overrides an earlier one; an edit and a rating count too
    capture(project, "feedback", [{"interaction_id": ids[0], "kind": "thumb", "value": "down",
                                   "timestamp": "2099-01-01T00:00:00Z"}])  # fmt: skip
    capture(project, "feedback", [{"interaction_id": ids[4], "kind": "edit", "text": "better"}])
    capture(project, "feedback", [{"interaction_id": ids[5], "kind": "rating", "value": 4}])
    analysis = ex.analyse(project, "exp")
    control, new = analysis.variants
    assert (control.variant, control.interactions, new.interactions) == ("control", 6, 5)
    assert control.metrics["thumbs_up_rate"].n == 4 and control.metrics["thumbs_up_rate"].mean == 0.5
    assert new.metrics["thumbs_up_rate"].mean == 1.0
    assert control.metrics["edit_rate"].mean == pytest.approx(1 / 6)
    assert control.metrics["mean_rating"].n == 1 and control.metrics["mean_rating"].mean == 4
    assert control.metrics["latency_ms"].mean == pytest.approx(sum(100 + i % 7 for i in range(6)) / 6)
    assert control.users == 6 and new.users == 5
    # every measured user of "new" liked it: zero variance is no certainty; it borrows the control's
    test = new.comparisons["thumbs_up_rate"].test
    assert test is not None and test.se > 0 and not test.significant
    assert test.se == pytest.approx((0.25 * 4 / 3 / 4 * 2) ** 0.5)  # both arms at the control's variance, 4 users each
    assert [(r.variant, r.cohort) for r in analysis.cohorts] == [("control", "free"), ("new", "pro")]
    assert ex.get_experiment(project, "exp").analyses == [analysis]


def test_analyse_flags_sample_ratio_mismatch_at_large_n(project: Project) -> None:
    _running(project)
    _traffic(project, "control", up=0, down=0, none=4800)
    _traffic(project, "new", up=0, down=0, none=5200)
    srm = ex.analyse(project, "exp").srm
    assert srm is not None and srm.mismatch and srm.p_value < 0.001


# --- decisions ------------------------------------------------------------------------------


def test_clear_winner_is_promoted(project: Project, tmp_path: Path) -> None:
    _register(project, tmp_path, "base", "cand")
    _running(project, min_samples=200, guardrails=[ex.Guardrail(metric="latency_ms", margin=50)])
    _traffic(project, "control", up=120, down=180)
    _traffic(project, "new", up=190, down=110)
    decision = ex.decide(project, "exp", apply=True)
    assert (decision.action, decision.variant, decision.applied) == ("promote", "new", True)
    stored = ex.get_experiment(project, "exp")
    assert stored.state == "promoted" and stored.decision is not None
    assert stored.decision.analysis.variants[1].comparisons["thumbs_up_rate"].better
    assert get_model(project, "cand").status == "serving"


def test_too_few_samples_continues(project: Project) -> None:
    _running(project, min_samples=1000)
    _traffic(project, "control", up=120, down=180)
    _traffic(project, "new", up=190, down=110)
    decision = ex.decide(project, "exp")
    assert decision.action == "continue" and "min_samples" in decision.reasons[0]
    assert ex.get_experiment(project, "exp").decision == decision


def test_guardrail_breach_in_one_cohort_rolls_back(project: Project, tmp_path: Path) -> None:
    _register(project, tmp_path, "base", "cand")
    _running(project, min_samples=100, guardrails=[ex.Guardrail(metric="latency_ms", margin=20)])
    for cohort in ("free", "pro"):
        _traffic(project, "control", up=60, down=90, cohort=cohort, latency=100)
    _traffic(project, "new", up=95, down=55, cohort="free", latency=100)
    _traffic(project, "new", up=95, down=55, cohort="pro", latency=300)  # slow only for pro users
    decision = ex.decide(project, "exp", apply=True)
    assert decision.action == "rollback"
    assert any("cohort pro" in r for r in decision.reasons)
    assert not any("cohort free" in r for r in decision.reasons)
    assert ex.get_experiment(project, "exp").state == "rolled_back"
    assert get_model(project, "base").status == "serving"
    assert get_model(project, "cand").status == "candidate"


def test_unproven_guardrail_blocks_promotion(project: Project) -> None:
    # latency is noisy and close: neither a breach nor shown within a margin of 0
    _running(project, min_samples=100, guardrails=[ex.Guardrail(metric="latency_ms", margin=0)])
    _traffic(project, "control", up=120, down=180, latency=100)
    _traffic(project, "new", up=190, down=110, latency=100)
    decision = ex.decide(project, "exp")
    assert decision.action == "continue"
    assert any("latency_ms not shown within margin" in r for r in decision.reasons)


# --- CLI ------------------------------------------------------------------------------------


def test_cli_create_start_status_promote(tmp_path: Path) -> None:
    proj = init_project(tmp_path / "proj")
    _register(proj, tmp_path, "base", "cand")
    _traffic(proj, "control", up=12, down=18)
    _traffic(proj, "new", up=19, down=11)
    proj.close()
    runner, p = CliRunner(), ["--project", str(proj.root)]
    create = ["experiments", "create", "exp", "--variant", "control=base:0.5", "--variant", "new=cand:0.5",
              "--guardrail", "latency_ms:50", "--min-samples", "10", *p]  # fmt: skip
    for args in (create, ["experiments", "start", "exp", *p]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["experiments", "status", "exp", *p])
    assert result.exit_code == 0, result.output
    assert "0.6333" in result.output and "sample ratio: ok" in result.output
    assert "users" in result.output
    page = proj.root / "artifacts" / "experiments" / "exp" / "status.html"
    assert "<svg" in page.read_text()
    result = runner.invoke(app, ["experiments", "status", "exp", "--json", *p])
    assert json.loads(result.output)["variants"][0]["interactions"] == 30
    result = runner.invoke(app, ["experiments", "promote", "exp", *p])
    assert result.exit_code == 0 and "promoted" in result.output
    result = runner.invoke(app, ["experiments", "list", *p])
    assert "promoted" in result.output


def test_cli_bad_variant_says_the_format(tmp_path: Path) -> None:
    proj = init_project(tmp_path / "proj")
    proj.close()
    result = CliRunner().invoke(
        app, ["experiments", "create", "e", "--variant", "oops", "--variant", "b=m:0.5", "--project", str(proj.root)]
    )
    assert result.exit_code != 0 and "NAME=MODEL:SHARE" in str(result.exception)


def test_http_routes_list_analyse_and_decide(project: Project, tmp_path: Path, client: Any) -> None:
    _register(project, tmp_path, "base", "cand")
    _running(project, min_samples=200)
    _traffic(project, "control", up=120, down=180)
    _traffic(project, "new", up=190, down=110)
    assert [e["config"]["name"] for e in client.get("/api/experiments").json()] == ["exp"]
    assert client.get("/api/experiments/exp").json()["state"] == "running"
    analysis = client.get("/api/experiments/exp/analysis").json()
    assert {v["variant"] for v in analysis["variants"]} >= {"control", "new"}
    decided = client.post("/api/experiments/exp/decide", params={"apply": True})
    assert decided.status_code == 200, decided.text
    assert (decided.json()["action"], decided.json()["variant"]) == ("promote", "new")
    assert client.get("/api/experiments/exp").json()["state"] == "promoted"
    assert client.get("/api/experiments/nope").status_code == 404


def test_cli_decide_prints_the_action_and_reasons(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from posttrain.cli import app
    from posttrain.project import init_project

    proj = init_project(tmp_path / "p")
    _running(proj, min_samples=200)
    _traffic(proj, "control", up=10, down=10)
    _traffic(proj, "new", up=12, down=8)
    proj.close()
    out = CliRunner().invoke(app, ["experiments", "decide", "exp", "--project", str(proj.root)])
    assert out.exit_code == 0, out.output
    assert out.output.startswith("exp: continue")


# --- side by side, over time, automatic rollback ------------------------------------------


def _pairs(project: Project, battles: list[tuple[str, str, str]], exp: str = "exp") -> None:
    """Capture one side-by-side pair per battle (a, b, winner) with a choice on its first member."""
    for i, (a, b, winner) in enumerate(battles):
        events = [
            {"messages": [{"role": "user", "content": "hi"}], "experiment": exp, "variant": v, "cohort": "adult",
             "metadata": {"pair_id": f"pair-{i}", "position": p, "side_by_side": True}}
            for p, v in enumerate((a, b))
        ]  # fmt: skip
        ids = [r.id for r in capture(project, "interactions", events)]
        chosen = ids[0] if winner == a else ids[1]
        capture(project, "feedback", [{"interaction_id": ids[0], "kind": "choice", "value": chosen}])


def test_side_by_side_win_rates_and_bradley_terry(project: Project) -> None:
    variants = [ex.Variant(name=n, model=n, share=s) for n, s in [("x", 0.4), ("y", 0.3), ("z", 0.3)]]
    _running(project, variants=variants, metric="win_rate")
    battles = [("x", "y", "y")] * 30 + [("x", "y", "x")] * 10 + [("y", "z", "y")] * 30 + [("y", "z", "z")] * 10
    battles += [("z", "x", "z")] * 20 + [("z", "x", "x")] * 20
    _pairs(project, battles)
    analysis = ex.analyse(project, "exp")
    assert analysis.pairwise is not None
    overall = {(p.a, p.b): p.win_rate for p in analysis.pairwise.pairs if p.cohort is None}
    assert overall[("x", "y")].rate == pytest.approx(10 / 40) and overall[("x", "y")].n == 40
    assert overall[("x", "z")].rate == pytest.approx(0.5)  # oriented by variant order: x before z
    assert {p.cohort for p in analysis.pairwise.pairs} == {None, "adult"}
    ratings = analysis.pairwise.ratings
    assert list(ratings)[0] == "y" and abs(ratings["x"].rating - ratings["z"].rating) < 40  # y wins 3:1; x, z even
    assert ratings["y"].rating > 1000 and ratings["y"].ci_low < ratings["y"].rating < ratings["y"].ci_high
    assert all(v.interactions == 0 for v in analysis.variants)  # pairs are not assignment units


def test_timeline_accumulates_and_the_sequence_covers_the_effect(project: Project) -> None:
    _running(project)
    _traffic(project, "control", up=120, down=180)
    _traffic(project, "new", up=180, down=120)
    timeline = ex.timeline(project, "exp", buckets=5)
    control, new = timeline.variants["control"], timeline.variants["new"]
    assert [p.n for p in control][-1] == 300 and [p.n for p in new][-1] == 300
    assert all(a.n <= b.n for a, b in zip(new, new[1:], strict=False))  # cumulative
    assert new[-1].mean == pytest.approx(0.6) and control[-1].mean == pytest.approx(0.4)
    last = timeline.differences["new"][-1]
    assert last.effect == pytest.approx(0.2) and last.cs_low < 0.2 < last.cs_high
    assert last.cs_low > 0  # 0.2 on 600 units is clear even for an always-valid sequence
    page = ex.write_status_page(project, ex.analyse(project, "exp"), timeline)
    text = page.read_text()
    assert text.count('id="series-') == 3 and "confidence sequence" in text  # two variants + one difference


def test_check_guardrails_rolls_back_only_on_a_proven_breach(project: Project, tmp_path: Path) -> None:
    _register(project, tmp_path, "base", "cand")
    guard = [ex.Guardrail(metric="thumbs_up_rate", margin=0.02)]
    _running(project, metric="mean_rating", guardrails=guard)
    _traffic(project, "control", up=50, down=50)
    _traffic(project, "new", up=45, down=55)  # a little worse, not proven
    assert ex.check_guardrails(project, "exp") is None
    assert ex.get_experiment(project, "exp").state == "running"
    _traffic(project, "new", up=20, down=380)  # now clearly worse, but 400 users against 100
    assert ex.check_guardrails(project, "exp") is None  # a failed SRM check blocks the rollback
    blocked = ex.decide(project, "exp")
    assert blocked.action == "continue" and "sample-ratio mismatch" in blocked.reasons[0]
    _traffic(project, "control", up=200, down=200)  # 400 users each again
    decision = ex.check_guardrails(project, "exp")
    assert decision is not None and decision.action == "rollback" and decision.applied
    assert decision.reasons[0].startswith("automatic: thumbs_up_rate worse beyond margin 0.02")
    stored = ex.get_experiment(project, "exp")
    assert stored.state == "rolled_back" and get_model(project, "base").status == "serving"
    assert ex.check_guardrails(project, "exp") is None  # no longer running


def test_servers_checking_guardrails_at_once_roll_back_and_record_once(project: Project, tmp_path: Path) -> None:
    """Every server runs the periodic check; a breach is acted on once (PostgreSQL: two projects, as two servers)."""
    import threading

    from posttrain.project import open_project

    _register(project, tmp_path, "base", "cand")
    _running(project, metric="mean_rating", guardrails=[ex.Guardrail(metric="thumbs_up_rate", margin=0.02)])
    _traffic(project, "control", up=200, down=200)
    _traffic(project, "new", up=40, down=360)
    other = open_project(project.root) if project.is_postgres else project
    made: list[Any] = []
    threads = [threading.Thread(target=lambda p=p: made.extend(ex.check_running(p))) for p in (project, other)]  # type: ignore[misc]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        if other is not project:
            other.close()
    assert [d.action for d in made] == ["rollback"]
    stored = ex.get_experiment(project, "exp")
    assert stored.state == "rolled_back" and len(stored.analyses) == 1


def _variants(n: int) -> list[dict[str, Any]]:
    return [{"name": f"v{i}", "model": "m", "share": 1 / n} for i in range(n)]


_OVER_BOUNDS = [
    ({"variants": _variants(MAX_VARIANTS + 1)}, "variants"),
    ({"variants": _variants(10_000)}, "variants"),
    ({"cohorts": [f"c{i}" for i in range(MAX_COHORTS + 1)]}, "cohorts"),
    ({"cohorts": ["x" * 513]}, "cohorts.0"),
    ({"cohorts": [""]}, "cohorts.0"),
    ({"guardrails": [{"metric": "cost"}] * 8}, "guardrails"),
    ({"variants": [{"name": "a" * 129, "model": "m", "share": 0.5}, {"name": "b", "model": "m", "share": 0.5}]},
     "variants.0.name"),
    ({"variants": [{"name": "a", "model": "m" * 513, "share": 0.5}, {"name": "b", "model": "m", "share": 0.5}]},
     "variants.0.model"),
]  # fmt: skip


@pytest.mark.parametrize(("overrides", "field"), _OVER_BOUNDS, ids=[f for _, f in _OVER_BOUNDS])
def test_create_over_a_bound_is_400_naming_the_field(client: Any, overrides: dict[str, Any], field: str) -> None:
    body = {"name": "bounded", "variants": _variants(2), **overrides}
    reply = client.post("/api/experiments", json=body)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["field"] == field
    assert client.get("/api/experiments").json() == []


def test_create_at_the_bounds_is_accepted(client: Any) -> None:
    body = {"name": "widest", "variants": _variants(MAX_VARIANTS), "cohorts": [f"c{i}" for i in range(MAX_COHORTS)],
            "guardrails": [{"metric": m} for m in ex.METRICS[1:]]}  # fmt: skip
    assert client.post("/api/experiments", json=body).status_code == 201


# --- per user: the unit the gateway randomises ----------------------------------------------


def _user_traffic(project: Project, variant: str, thumbs: dict[str, list[bool]]) -> None:
    """Capture, per user, one interaction per thumb (True = up)."""
    events = [
        {"messages": [{"role": "user", "content": "hi"}], "experiment": "exp", "variant": variant, "user_id": user}
        for user, ups in thumbs.items()
        for _ in ups
    ]
    ids = [r.id for r in capture(project, "interactions", events)]
    ups = [up for values in thumbs.values() for up in values]
    capture(project, "feedback", [{"interaction_id": i, "kind": "thumb", "value": "up" if u else "down"}
                                  for i, u in zip(ids, ups, strict=True)])  # fmt: skip


def test_analyse_counts_users_for_srm_and_the_delta_method_for_rates(project: Project) -> None:
    from posttrain import stats

    _running(project)
    control = {f"c{i}": [i % 3 == 0] for i in range(100)}
    # as many users, but each sends 4 requests: 400 interactions against 100
    new = {f"n{i}": [(i + k) % 2 == 0 or i % 5 == 0 for k in range(4)] for i in range(100)}
    _user_traffic(project, "control", control)
    _user_traffic(project, "new", new)
    analysis = ex.analyse(project, "exp")
    assert analysis.srm is not None and not analysis.srm.mismatch  # 100 users each: no mismatch
    assert [v.users for v in analysis.variants] == [100, 100]
    rate = analysis.variants[1].metrics["thumbs_up_rate"]
    expected = stats.ratio_summary([sum(v) for v in new.values()], [len(v) for v in new.values()])
    assert rate.n == 100 and rate.mean == pytest.approx(expected.mean)
    assert rate.variance == pytest.approx(expected.variance)
    control_variance = analysis.variants[0].metrics["thumbs_up_rate"].variance or 0.0
    test = analysis.variants[1].comparisons["thumbs_up_rate"].test
    assert test is not None and test.se == pytest.approx(math.sqrt((expected.variance + control_variance) / 100))


def test_decide_early_uses_the_always_valid_p_value(project: Project) -> None:
    # 0.40 → 0.49 on 300 users each: p ≈ 0.03 at a fixed horizon, not yet always-valid
    _running(project, min_samples=200)
    _traffic(project, "control", up=120, down=180)
    _traffic(project, "new", up=146, down=154)
    decision = ex.decide(project, "exp")
    comparison = decision.analysis.variants[1].comparisons["thumbs_up_rate"]
    assert comparison.test is not None and comparison.test.p_value < 0.05
    assert comparison.always_valid_p is not None and comparison.always_valid_p > 0.05
    assert decision.action == "continue" and "always-valid p" in decision.reasons[0]


def test_guardrail_rollback_needs_the_always_valid_interval_beyond_the_margin(project: Project) -> None:
    # thumbs 0.50 → 0.39 with margin 0.02: the fixed interval lies beyond the margin, the always-valid one not
    _running(project, metric="mean_rating", guardrails=[ex.Guardrail(metric="thumbs_up_rate", margin=0.02)])
    _traffic(project, "control", up=150, down=150)
    _traffic(project, "new", up=117, down=183)
    decision = ex.decide(project, "exp")
    comparison = decision.analysis.variants[1].comparisons["thumbs_up_rate"]
    assert comparison.test is not None and comparison.test.ci_high < -0.02
    assert comparison.always_valid_ci_high is not None and comparison.always_valid_ci_high > -0.02
    assert decision.action == "continue"


def test_default_guardrail_margin_is_non_inferiority(project: Project, tmp_path: Path) -> None:
    assert ex.Guardrail(metric="latency_ms").margin_for(200.0) == pytest.approx(20.0)
    _register(project, tmp_path, "base", "cand")
    _running(project, min_samples=200, guardrails=[ex.Guardrail(metric="latency_ms")])
    _traffic(project, "control", up=120, down=180)
    _traffic(project, "new", up=190, down=110)  # a clear win; latency unchanged
    decision = ex.decide(project, "exp")
    assert (decision.action, decision.variant) == ("promote", "new")


def test_side_by_side_win_rate_is_tested_as_paired_choices(project: Project) -> None:
    _running(project, metric="win_rate")
    _pairs(project, [("control", "new", "new")] * 60 + [("control", "new", "control")] * 40)
    comparison = ex.analyse(project, "exp").variants[1].comparisons["win_rate"]
    test = comparison.test
    # d = ±½ per pair: effect 0.6 − ½, SE = sd(d)/√100, not two arms of 100 each (which doubles the effect)
    assert test is not None and test.method == "paired" and test.effect == pytest.approx(0.1)
    assert test.se == pytest.approx(math.sqrt((0.25 - 0.1**2) * 100 / 99 / 100))
    assert 0.04 < test.p_value < 0.06
