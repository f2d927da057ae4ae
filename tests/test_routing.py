"""Routing through a real ``posttrain serve`` with the official openai SDK: cohort rules, routes,
experiments (stickiness, traffic shares), side-by-side answers, automatic rollback; the CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from typer.testing import CliRunner

from conftest import LiveServer
from posttrain import keys, routing
from posttrain.cli import app
from posttrain.errors import InvalidInput
from posttrain.project import init_project
from upstream_stub import running_upstream

pytestmark = pytest.mark.warehouses("duckdb", "postgresql")

ASK = [{"role": "user", "content": "hi"}]


# --- conditions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "attributes", "expected"),
    [
        ("age < 18", {"age": "15"}, True),  # OpenAI metadata values are strings: compared as numbers
        ("age < 18", {"age": 18}, False),
        ("age < 18", {}, False),  # a missing attribute never matches
        ("age < 18", {"age": "unknown"}, False),
        ("plan in ('free', 'trial')", {"plan": "trial"}, True),
        ("plan in ('free', 'trial')", {"plan": "pro"}, False),
        ("country == 'DE' and not (age >= 18)", {"country": "DE", "age": "12"}, True),
        ("country == 'DE' or age < 13", {"country": "FR", "age": 12}, True),
        ("user.age <= 17", {"user": {"age": 17}}, True),
        ("beta == true", {"beta": "true"}, True),
        ('name != "bob"', {"name": "alice"}, True),
    ],
)
def test_conditions_match_user_attributes(condition: str, attributes: dict[str, Any], expected: bool) -> None:
    assert routing.parse_condition(condition)(attributes) is expected


@pytest.mark.parametrize(
    ("condition", "needle"),
    [("", "empty"), ("age <", "expected value"), ("age ~ 3", "cannot read"), ("(age < 3", "expected )"),
     ("age 3", "expected a comparison"), ("age < 3 age", "unexpected")],
)  # fmt: skip
def test_bad_conditions_say_what_is_wrong(condition: str, needle: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(needle)):
        routing.parse_condition(condition)


def test_routing_table_first_match_wins() -> None:
    table = routing.RoutingTable(
        cohort_rules=[
            routing.CohortRule(name="kids", cohort="minor", condition="age < 18"),
            routing.CohortRule(name="all", cohort="adult", condition="age >= 0"),
        ],
        routes=[
            routing.RouteRule(name="safe", cohort="minor", model="safe"),
            routing.RouteRule(name="alias", requested="assistant", model="main"),
        ],
    )
    assert [table.cohort_for({"age": a}) for a in ("9", "30")] + [table.cohort_for({})] == ["minor", "adult", None]
    assert table.route_for("minor", "assistant").name == "safe"  # type: ignore[union-attr]
    assert table.route_for("adult", "assistant").name == "alias"  # type: ignore[union-attr]
    assert table.route_for("adult", "other") is None


# --- through a real server --------------------------------------------------------------------


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with running_upstream() as url:
        yield url


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, upstream: str) -> Iterator[LiveServer]:
    proj = init_project(tmp_path_factory.mktemp("routing") / "proj")
    admin = keys.create_key(proj, "admin").key
    proj.close()
    env = {
        "POSTTRAIN_GATEWAY_UPSTREAM_URL": upstream,
        "POSTTRAIN_GATEWAY_UPSTREAM_MODELS": "stub-a,stub-b,stub-c,stub-safe",
        "POSTTRAIN_GATEWAY_EXPERIMENT_CHECK_SECONDS": "0.3",
    }
    live = LiveServer(root=proj.root, admin_key=admin, env=env).start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def sdk(server: LiveServer) -> openai.OpenAI:
    with server.http() as http:
        key = http.post("/api/keys", json={"role": "ingest"}).json()["key"]
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=30)


def _api(server: LiveServer, method: str, path: str, **kwargs: Any) -> Any:
    with server.http() as http:
        reply = http.request(method, path, **kwargs)
    assert reply.status_code < 300, reply.text
    return reply.json()


def _logged(server: LiveServer, ids: list[str]) -> dict[str, dict[str, Any]]:
    """Return the logged interactions once the background commits have made them all readable."""
    quoted = ", ".join(f"'{i}'" for i in ids)
    columns = "id, cohort, model, experiment, variant, assignment_prob, metadata"
    sql = f"SELECT {columns} FROM interactions WHERE id IN ({quoted})"
    for _ in range(100):
        rows = _api(server, "POST", "/api/sql", json={"sql": sql})["rows"]
        if len(rows) == len(ids):
            found = {r[0]: dict(zip(columns.split(", "), r, strict=True)) for r in rows}
            for row in found.values():
                row["metadata"] = json.loads(row["metadata"]) if isinstance(row["metadata"], str) else row["metadata"]
            return found
        time.sleep(0.05)
    raise AssertionError(f"only {len(rows)} of {len(ids)} interactions were logged")


def test_cohort_rules_and_routes_pick_the_model(server: LiveServer, sdk: openai.OpenAI) -> None:
    _api(server, "POST", "/api/routes/cohorts", json={"name": "kids", "cohort": "minor", "condition": "age < 18"})
    _api(server, "POST", "/api/routes", json={"name": "minors", "cohort": "minor", "requested": "assistant",
                                              "model": "stub-safe"})  # fmt: skip
    _api(server, "POST", "/api/routes", json={"name": "default", "requested": "assistant", "model": "stub-a"})
    cases = [  # (how the request says who it is for, expected cohort, expected model)
        ({"metadata": {"age": "15"}}, "minor", "stub-safe"),  # a rule on user attributes
        ({"metadata": {"age": "40"}}, None, "stub-a"),
        ({"extra_headers": {"X-Posttrain-Cohort": "minor"}}, "minor", "stub-safe"),  # the header
        ({"metadata": {"cohort": "minor", "age": "40"}}, "minor", "stub-safe"),  # metadata.cohort beats rules
        ({}, None, "stub-a"),
    ]
    ids = []
    for options, _cohort, model in cases:
        raw = sdk.chat.completions.with_raw_response.create(model="assistant", messages=ASK, user="u1", **options)
        assert raw.parse().model == model
        ids.append(raw.headers["X-Posttrain-Interaction-Id"])
    logged = _logged(server, ids)
    for interaction_id, (_options, cohort, model) in zip(ids, cases, strict=True):
        row = logged[interaction_id]
        assert (row["cohort"], row["model"]) == (cohort, model)
        assert row["metadata"]["route"] == ("minors" if model == "stub-safe" else "default")
    # a registered or upstream name is served as asked when no route covers it
    assert sdk.chat.completions.create(model="stub-b", messages=ASK).model == "stub-b"
    _api(server, "DELETE", "/api/routes/minors")
    _api(server, "DELETE", "/api/routes/default")
    _api(server, "DELETE", "/api/routes/kids")
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="assistant", messages=ASK)


def test_experiment_assignment_is_sticky_with_the_configured_shares(server: LiveServer, sdk: openai.OpenAI) -> None:
    config = {"name": "shares", "variants": [{"name": "a", "model": "stub-a", "share": 0.3},
                                             {"name": "b", "model": "stub-b", "share": 0.7}]}  # fmt: skip
    _api(server, "POST", "/api/experiments", json=config)
    _api(server, "POST", "/api/experiments/shares/start")
    _api(server, "POST", "/api/routes", json={"name": "main", "requested": "assistant", "experiment": "shares"})
    users = [f"user-{i}" for i in range(300)]

    def ask(user: str) -> tuple[str, str, str]:
        raw = sdk.chat.completions.with_raw_response.create(model="assistant", messages=ASK, user=user)
        return user, raw.parse().model, raw.headers["X-Posttrain-Interaction-Id"]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, users * 2))  # every user asks twice
    served: dict[str, set[str]] = {}
    for user, model, _ in answers:
        served.setdefault(user, set()).add(model)
    assert all(len(models) == 1 for models in served.values())  # sticky
    share_b = Counter(next(iter(m)) for m in served.values())["stub-b"] / len(users)
    assert abs(share_b - 0.7) < 3 * (0.7 * 0.3 / len(users)) ** 0.5  # within 3 standard errors
    logged = _logged(server, [i for _, _, i in answers])
    for _user, model, interaction_id in answers:
        row = logged[interaction_id]
        assert (row["experiment"], row["model"]) == ("shares", model)
        assert (row["variant"], row["assignment_prob"]) == (("a", 0.3) if model == "stub-a" else ("b", 0.7))
        assert row["metadata"]["route"] == "main"
    _api(server, "POST", "/api/experiments/shares/stop")
    _api(server, "DELETE", "/api/routes/main")


def test_side_by_side_answers_with_two_variants_and_a_choice_decides_the_pair(
    server: LiveServer, sdk: openai.OpenAI
) -> None:
    variants = [{"name": "a", "model": "stub-a", "share": 0.5}, {"name": "b", "model": "stub-b", "share": 0.5}]
    config = {"name": "sbs", "metric": "win_rate", "variants": variants}
    _api(server, "POST", "/api/experiments", json=config)
    with pytest.raises(openai.BadRequestError, match="side-by-side needs a running experiment"):
        sdk.chat.completions.create(model="stub-a", messages=ASK, extra_headers={"X-Posttrain-Side-By-Side": "true"})
    _api(server, "POST", "/api/experiments/sbs/start")
    choices = []
    for i in range(40):
        raw = sdk.chat.completions.with_raw_response.create(
            model="stub-a", messages=ASK, user=f"p{i}", extra_headers={"X-Posttrain-Side-By-Side": "true"}
        )
        body = raw.parse()
        extras = [c.model_extra or {} for c in body.choices]
        assert len(body.choices) == 2 and {e["posttrain_variant"] for e in extras} == {"a", "b"}
        ids = [e["posttrain_interaction_id"] for e in extras]
        assert raw.headers["X-Posttrain-Interaction-Id"] == ",".join(ids)
        chosen = next(e["posttrain_interaction_id"] for e in extras if e["posttrain_variant"] == "b")
        if i % 4 == 0:  # b is chosen 3 times in 4
            chosen = next(e["posttrain_interaction_id"] for e in extras if e["posttrain_variant"] == "a")
        choices.append({"interaction_id": ids[i % 2], "kind": "choice", "value": chosen})  # on either member
    _api(server, "POST", "/api/capture/feedback", json={"feedback": choices})
    logged = _logged(server, [c["interaction_id"] for c in choices])
    assert all(r["metadata"]["side_by_side"] and r["metadata"]["pair_id"] for r in logged.values())
    time.sleep(0.3)
    analysis = _api(server, "GET", "/api/experiments/sbs/analysis")
    pair = next(p for p in analysis["pairwise"]["pairs"] if p["cohort"] is None)
    assert (pair["a"], pair["b"], pair["win_rate"]["n"]) == ("a", "b", 40)
    assert pair["win_rate"]["rate"] == pytest.approx(0.25)
    assert pair["win_rate"]["ci_low"] < 0.25 < pair["win_rate"]["ci_high"] < 0.5
    b = next(v for v in analysis["variants"] if v["variant"] == "b")
    assert b["metrics"]["win_rate"]["n"] == 40 and b["interactions"] == 0  # pairs stay out of the SRM count
    with pytest.raises(openai.BadRequestError, match="cannot stream"):
        sdk.chat.completions.create(
            model="stub-a", messages=ASK, stream=True, extra_headers={"X-Posttrain-Side-By-Side": "true"}
        )
    _api(server, "POST", "/api/experiments/sbs/stop")


def test_guardrail_breach_rolls_back_a_running_experiment_automatically(server: LiveServer, sdk: openai.OpenAI) -> None:
    config = {"name": "guarded", "metric": "mean_rating", "guardrails": [{"metric": "thumbs_up_rate", "margin": 0.05}],
              "variants": [{"name": "control", "model": "stub-a", "share": 0.5},
                           {"name": "risky", "model": "stub-c", "share": 0.5}]}  # fmt: skip
    _api(server, "POST", "/api/experiments", json=config)
    _api(server, "POST", "/api/experiments/guarded/start")
    _api(server, "POST", "/api/routes", json={"name": "g", "requested": "chat", "experiment": "guarded"})
    feedback = []
    for i in range(400):
        raw = sdk.chat.completions.with_raw_response.create(model="chat", messages=ASK, user=f"g{i}")
        up = raw.parse().model == "stub-a" or i % 5 == 0  # the risky variant gets mostly thumbs down
        feedback.append({"interaction_id": raw.headers["X-Posttrain-Interaction-Id"], "kind": "thumb",
                         "value": "up" if up else "down"})  # fmt: skip
    _api(server, "POST", "/api/capture/feedback", json={"feedback": feedback})
    for _ in range(100):  # the server's watcher checks every 0.3 s
        experiment = _api(server, "GET", "/api/experiments/guarded")
        if experiment["state"] != "running":
            break
        time.sleep(0.1)
    assert experiment["state"] == "rolled_back"
    assert experiment["decision"]["action"] == "rollback" and experiment["decision"]["applied"]
    assert any(r.startswith("automatic: thumbs_up_rate worse") for r in experiment["decision"]["reasons"])
    time.sleep(1.1)  # the gateway re-reads experiments within a second; then the control serves everyone
    assert {sdk.chat.completions.create(model="chat", messages=ASK, user=f"g{i}").model for i in range(20)} == {
        "stub-a"
    }
    _api(server, "DELETE", "/api/routes/g")


def test_cli_routes_and_experiments_go_through_the_running_server(server: LiveServer, tmp_path: Path) -> None:
    runner = CliRunner()
    project = ["--project", str(server.root)]

    def run(*args: str) -> str:
        result = runner.invoke(app, [*args, *project], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    assert "cohort rule teens: age < 18 → cohort minor" in run("routes", "cohort", "teens", "--cohort", "minor",
                                                               "--when", "age < 18")  # fmt: skip
    assert "route safe: cohort minor, any model → model stub-safe" in run(
        "routes", "add", "safe", "--cohort", "minor", "--model", "stub-safe"
    )
    listing = run("routes", "list")
    assert "teens" in listing and "stub-safe" in listing
    run("experiments", "create", "cli-exp", "--variant", "a=stub-a:0.5", "--variant", "b=stub-b:0.5")
    assert "running" in run("experiments", "start", "cli-exp")
    status = run("experiments", "status", "cli-exp")
    page = Path(status.strip().splitlines()[-1].removeprefix("wrote "))
    assert page.exists() and "<svg" in page.read_text()
    assert "stopped" in run("experiments", "stop", "cli-exp")
    assert "removed route safe" in run("routes", "remove", "safe")
    assert "removed cohort rule teens" in run("routes", "remove", "teens")
    bad = subprocess.run(
        [sys.executable, "-m", "posttrain", "routes", "cohort", "x", "--cohort", "c", "--when", "age <", *project],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and bad.stderr.strip() == "error: condition 'age <': expected value, found the end"
    with httpx.Client(base_url=server.url) as http:  # the viewer may read routes but not change them
        viewer = http.post(
            "/api/keys", json={"role": "viewer"}, headers={"Authorization": f"Bearer {server.admin_key}"}
        ).json()["key"]
        auth = {"Authorization": f"Bearer {viewer}"}
        assert http.get("/api/routes", headers=auth).status_code == 200
        reply = http.post("/api/routes", json={"name": "x", "model": "stub-a"}, headers=auth)
        assert reply.status_code == 403


_LONG = "x" * 513
_OVER_BOUNDS = [
    ("/api/routes", {"name": "r", "cohort": _LONG, "model": "m"}, "cohort"),
    ("/api/routes", {"name": "r", "requested": _LONG, "model": "m"}, "requested"),
    ("/api/routes", {"name": "r", "model": _LONG}, "model"),
    ("/api/routes", {"name": "r", "experiment": _LONG}, "experiment"),
    ("/api/routes", {"name": "r" * 129, "model": "m"}, "name"),
    ("/api/routes/cohorts", {"name": "c", "cohort": _LONG, "condition": "age < 18"}, "cohort"),
    ("/api/routes/cohorts", {"name": "c", "cohort": "minor", "condition": "a" * 2001}, "condition"),
]


@pytest.mark.parametrize(("path", "body", "field"), _OVER_BOUNDS, ids=[f"{p} {f}" for p, _, f in _OVER_BOUNDS])
def test_rule_over_a_bound_is_400_naming_the_field(client: Any, path: str, body: dict[str, Any], field: str) -> None:
    reply = client.post(path, json=body)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["field"] == field


def test_routing_table_holds_a_bounded_number_of_rules(client: Any) -> None:
    project = client.app.state.project
    for i in range(routing.MAX_RULES):
        routing.add_cohort_rule(project, routing.CohortRule(name=f"c{i}", cohort="minor", condition="age < 18"))
    rule = {"name": "one-more", "cohort": "minor", "condition": "age < 18"}
    reply = client.post("/api/routes/cohorts", json=rule)
    assert reply.status_code == 400 and reply.json()["error"]["field"] == "name", reply.text
    assert f"at most {routing.MAX_RULES}" in reply.json()["error"]["message"]
    replaced = client.post("/api/routes/cohorts", params={"replace": "true"}, json={**rule, "name": "c0"})
    assert replaced.status_code == 201, replaced.text
