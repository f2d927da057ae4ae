"""The console's experiments pages: the list, an experiment's page, start/stop/promote/roll back with a confirmation."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from posttrain import experiments as ex
from posttrain import routing
from posttrain.server.ui.formats import num, pct
from ui.helpers import CSRF, Console

pytestmark = pytest.mark.warehouses("duckdb", "postgresql")

EXPERIMENT = "t-t1-ab-adult"  # promoted by the loop's first turn, with users in both arms


def _row(html: str, attribute: str, value: str, table: str | None = None) -> str:
    """Return the first table row marked ``attribute="value"`` (inside the table ``id="table"`` if given)."""
    if table is not None:
        html = html[html.index(f'id="{table}"') :]
    start = html.index(f'<tr {attribute}="{value}"')
    return html[start : html.index("</tr>", start)]


def _running(console: Console, name: str, *, route: bool = True) -> ex.Experiment:
    """Create and start an experiment of the adult cohort (t-t2-sft serving, t-t1-sft candidate), routed if asked."""
    project = console.project
    config = ex.ExperimentConfig(
        name=name,
        variants=[ex.Variant(name="serving", model="t-t2-sft", share=0.5),
                  ex.Variant(name="candidate", model="t-t1-sft", share=0.5)],
        cohorts=["adult"],
    )  # fmt: skip
    ex.create_experiment(project, config)
    if route:
        routing.add_route(project, routing.RouteRule(name=f"{name}-route", cohort="adult", requested="ui-asks",
                                                     experiment=name))  # fmt: skip
    return ex.start(project, name)


def _signed(console: Console, role: str) -> tuple[TestClient, str]:
    """Return a client signed in as ``role`` and its session's CSRF token (from the sign-out form of a page)."""
    client, _ = console.sign_in(role)
    found = CSRF.search(client.get("/ui/experiments").text)
    assert found is not None
    return client, found.group(1)


def _confirm(console: Console, url: str) -> tuple[str, str]:
    """Open a confirmation page as admin; return its text and its form's CSRF token."""
    client, _ = console.sign_in("admin")
    reply = client.get(url)
    assert reply.status_code == 200, reply.text
    found = CSRF.search(reply.text[reply.text.index('id="confirm"') :])
    assert found is not None
    return reply.text, found.group(1)


def test_the_list_shows_every_experiment_with_its_state_arms_and_users(console: Console) -> None:
    client, _ = console.sign_in("viewer")
    reply = client.get("/ui/experiments")
    assert reply.status_code == 200
    listed = ex.list_experiments(console.project)
    assert len(listed) == 4
    assert re.findall(r'<tr data-experiment="([^"]+)"', reply.text) == [e.name for e in listed]  # newest first
    for experiment in listed:
        row = _row(reply.text, "data-experiment", experiment.name)
        analysis = ex.analyse(console.project, experiment.name, keep=False)
        assert f'<span class="state {experiment.state}">' in row
        assert f"/ui/experiments/{experiment.name}" in row
        for variant, stats in zip(experiment.config.variants, analysis.variants, strict=True):
            assert stats.variant == variant.name
            assert f"<strong>{variant.name}</strong> → {variant.model} · {pct(variant.share)} · " in row
            assert f'<span class="users">{stats.users}</span> users' in row
        assert experiment.decision is not None and experiment.decision.reasons[0] in row
    only = client.get("/ui/experiments?state=running")
    assert (
        only.status_code == 200
        and "data-experiment=" not in only.text
        and "No experiments in state running" in (only.text)
    )


def test_the_list_pages_with_a_cursor(console: Console) -> None:
    client, _ = console.sign_in("admin")
    names = [e.name for e in ex.list_experiments(console.project)]
    first = client.get("/ui/experiments?limit=3")
    assert re.findall(r'<tr data-experiment="([^"]+)"', first.text) == names[:3]
    next_url = re.search(r'<a class="button" href="([^"]+)" rel="next">', first.text)
    assert next_url is not None
    second = client.get(next_url.group(1).replace("&amp;", "&"))
    assert re.findall(r'<tr data-experiment="([^"]+)"', second.text) == names[3:]
    assert "End of the list" in second.text


def test_an_experiments_page_shows_the_analysis_numbers(console: Console) -> None:
    client, _ = console.sign_in("viewer")
    before = len(ex.get_experiment(console.project, EXPERIMENT).analyses)
    reply = client.get(f"/ui/experiments/{EXPERIMENT}")
    assert reply.status_code == 200
    text = reply.text
    analysis = ex.analyse(console.project, EXPERIMENT, keep=False)
    metric = analysis.metric
    assert metric == "thumbs_up_rate"
    for stats in analysis.variants:  # each arm's estimate and 95% interval, as analyse() gives them
        row = _row(text, "data-variant", stats.variant, "arms-table")
        m = stats.metrics[metric]
        assert m.mean is not None and m.ci_low is not None and m.ci_high is not None
        assert f'<td class="num mean">{pct(m.mean)}</td>' in row
        assert f'<td class="ci">[{pct(m.ci_low)}, {pct(m.ci_high)}]</td>' in row
        assert f'<td class="num">{stats.users}</td>' in row
    candidate = next(r for r in analysis.variants if r.variant == "candidate")
    test = candidate.comparisons[metric].test
    assert test is not None
    row = _row(text, "data-variant", "candidate", "arms-table")
    assert f"{test.effect * 100:+.1f} pp" in row and f"[{test.ci_low * 100:+.1f}, {test.ci_high * 100:+.1f}] pp" in row
    assert '<span class="state good">better</span>' in row  # significant in the good direction
    # the charts: the intervals, the metric over time, the difference with its confidence sequence
    assert text.count('<img class="chart"') == 3 and text.count("data:image/svg+xml;base64,") == 3
    assert 'alt="thumbs_up_rate over time: cumulative mean per variant, 95% interval"' in text
    assert 'alt="treatment − control over time with the always-valid 95% confidence sequence"' in text
    timeline = ex.timeline(console.project, EXPERIMENT)
    last = timeline.differences["candidate"][-1]
    sequence = text[text.index('id="sequence"') :]
    assert f"[{last.cs_low * 100:+.1f}, {last.cs_high * 100:+.1f}] pp" in sequence
    # the SRM check: observed against expected users, its p-value and verdict
    assert analysis.srm is not None
    srm = text[text.index('id="srm"') : text.index('id="cohorts"')]
    assert f'<span class="srm-p">{num(analysis.srm.p_value, 3)}</span>' in srm
    assert "the split fits the plan" in srm and not analysis.srm.mismatch
    total = sum(r.users for r in analysis.variants)
    for stats in analysis.variants:
        row = _row(srm, "data-variant", stats.variant)
        assert f'<td class="num">{stats.users}</td>' in row and f'<td class="num">{num(total / 2, 4)}</td>' in row
    # per cohort, guardrails, the recorded decision and its reasons
    cohort_row = _row(text, "data-variant", "candidate", "cohorts-table")
    assert 'data-cohort="adult"' in cohort_row and f"{pct(candidate.metrics[metric].mean)}" in cohort_row
    assert "No guardrails declared." in text
    decision = ex.get_experiment(console.project, EXPERIMENT).decision
    assert decision is not None
    assert all(reason in text for reason in decision.reasons) and "applied" in text
    # viewing writes nothing (no analysis snapshot kept, no decision recorded); a viewer gets no buttons
    assert len(ex.get_experiment(console.project, EXPERIMENT).analyses) == before
    assert 'id="actions"' not in text and "/confirm/" not in text


def test_a_running_experiment_shows_guardrails_and_what_deciding_now_would_say(console: Console) -> None:
    project = console.project
    config = ex.ExperimentConfig(
        name="ui-guarded",
        variants=[ex.Variant(name="serving", model="t-t2-sft", share=0.5),
                  ex.Variant(name="candidate", model="t-t1-sft", share=0.5)],
        guardrails=[ex.Guardrail(metric="latency_ms", margin=50)],
    )  # fmt: skip
    ex.create_experiment(project, config)
    ex.start(project, "ui-guarded")
    client, _ = console.sign_in("admin")
    reply = client.get("/ui/experiments/ui-guarded")
    assert reply.status_code == 200
    assert "No treatment data yet." in reply.text  # a guardrail, but no users yet
    preview = reply.text[reply.text.index('id="preview"') :]
    assert "If decided now" in preview and "no data for the control and a treatment yet" in preview
    assert ex.get_experiment(project, "ui-guarded").decision is None  # the preview records nothing
    assert "No users yet." in reply.text  # no SRM check without users
    actions = re.findall(r'data-action="([a-z]+)"', reply.text)
    assert actions == ["stop", "promote", "rollback"]


def test_roles_on_the_experiments_pages(console: Console) -> None:
    for role, status in (("admin", 200), ("viewer", 200), ("annotator", 403), ("ingest", 403)):
        client, _ = console.sign_in(role)
        assert client.get("/ui/experiments").status_code == status, role
        assert client.get(f"/ui/experiments/{EXPERIMENT}").status_code == status, role
    for role in ("viewer", "annotator", "ingest"):
        client, _ = console.sign_in(role)
        assert client.get(f"/ui/experiments/{EXPERIMENT}/confirm/rollback").status_code == 403, role


def test_bad_query_parameters_are_a_400_naming_them(console: Console) -> None:
    _running(console, "ui-params")
    client, _ = console.sign_in("admin")
    for url, name in (
        ("/ui/experiments?state=bogus", "state"),
        ("/ui/experiments?limit=0", "limit"),
        ("/ui/experiments?limit=many", "limit"),
        ("/ui/experiments?cursor=%21%21%21", "cursor"),
        (f"/ui/experiments?cursor={'x' * 600}", "cursor"),
        (f"/ui/experiments/{EXPERIMENT}?done=explode", "done"),
        ("/ui/experiments/ui-params/confirm/promote?variant=nope", "variant"),
        (f"/ui/experiments?state={'a' * 30}", "state"),
    ):
        reply = client.get(url)
        assert reply.status_code == 400, url
        assert f"{name}:" in reply.text, url


def test_unknown_experiments_and_actions_are_404_and_a_wrong_state_409(console: Console) -> None:
    client, csrf = _signed(console, "admin")
    assert client.get("/ui/experiments/no-such").status_code == 404
    assert "there is no experiment" in client.get("/ui/experiments/no-such").text
    assert client.get("/ui/experiments/no-such/confirm/promote").status_code == 404
    assert client.get(f"/ui/experiments/{EXPERIMENT}/confirm/explode").status_code == 404
    form = {"csrf": csrf, "confirm": "yes"}
    assert client.post("/ui/experiments/no-such/rollback", data=form).status_code == 404
    assert client.post(f"/ui/experiments/{EXPERIMENT}/explode", data=form).status_code == 404
    reply = client.get(f"/ui/experiments/{EXPERIMENT}/confirm/rollback")  # already promoted
    assert reply.status_code == 409 and "it is promoted" in reply.text
    reply = client.post(f"/ui/experiments/{EXPERIMENT}/start", data=form)
    assert reply.status_code == 409 and "only a draft experiment can be started" in reply.text
    assert ex.get_experiment(console.project, EXPERIMENT).state == "promoted"


def test_admin_promotes_through_the_confirmation_and_the_route_serves_the_winner(console: Console) -> None:
    _running(console, "ui-promote")
    client, _ = console.sign_in("admin")
    gateway = client.app.state.gateway  # type: ignore[attr-defined]
    gateway.refresh()
    model, route, assignment = gateway.assign("ui-asks", "user-1", "adult")
    assert route == "ui-promote-route" and assignment is not None and assignment.experiment == "ui-promote"
    page = client.get("/ui/experiments/ui-promote").text
    assert re.findall(r'data-action="([a-z]+)"', page) == ["stop", "promote", "rollback"]
    assert "/ui/experiments/ui-promote/confirm/promote?variant=candidate" in page
    text, token = _confirm(console, "/ui/experiments/ui-promote/confirm/promote?variant=candidate")
    assert "Route ui-promote-route will serve model t-t1-sft for requests for &#39;ui-asks&#39; from cohort adult." in (
        text
    )
    assert "model t-t1-sft is marked serving" in text and 'name="confirm" value="yes"' in text
    assert 'href="/ui/experiments/ui-promote">Cancel</a>' in text
    reply = client.post("/ui/experiments/ui-promote/promote", data={"csrf": token, "confirm": "yes",
                                                                      "variant": "candidate"})  # fmt: skip
    assert reply.status_code == 303 and reply.headers["location"] == "/ui/experiments/ui-promote?done=promote"
    found = ex.get_experiment(console.project, "ui-promote")
    assert found.state == "promoted" and found.decision is not None and found.decision.variant == "candidate"
    assert gateway.assign("ui-asks", "user-1", "adult") == ("t-t1-sft", "ui-promote-route", None)
    after = client.get(reply.headers["location"])
    assert "Promoted: the chosen variant&#39;s model is serving." in after.text and 'id="actions"' not in after.text


def test_admin_rolls_back_and_the_route_serves_the_control(console: Console) -> None:
    _running(console, "ui-rollback")
    client, _ = console.sign_in("admin")
    text, token = _confirm(console, "/ui/experiments/ui-rollback/confirm/rollback")
    assert (
        "Route ui-rollback-route will serve model t-t2-sft for requests for &#39;ui-asks&#39; from cohort adult."
        in (text)
    )
    reply = client.post("/ui/experiments/ui-rollback/rollback", data={"csrf": token, "confirm": "yes"})
    assert reply.status_code == 303 and reply.headers["location"].endswith("?done=rollback")
    assert ex.get_experiment(console.project, "ui-rollback").state == "rolled_back"
    gateway = client.app.state.gateway  # type: ignore[attr-defined]
    assert gateway.assign("ui-asks", "user-1", "adult") == ("t-t2-sft", "ui-rollback-route", None)


def test_admin_starts_and_stops_an_experiment(console: Console) -> None:
    variants = [ex.Variant(name="a", model="t-t2-sft", share=0.5), ex.Variant(name="b", model="t-t1-sft", share=0.5)]
    config = ex.ExperimentConfig(name="ui-draft", variants=variants)
    ex.create_experiment(console.project, config)
    client, _ = console.sign_in("admin")
    page = client.get("/ui/experiments/ui-draft").text
    assert re.findall(r'data-action="([a-z]+)"', page) == ["start"]
    text, token = _confirm(console, "/ui/experiments/ui-draft/confirm/start")
    assert "a → model t-t2-sft (50.0% of users), b → model t-t1-sft (50.0% of users)" in text
    assert "No route names it" in text
    assert client.post("/ui/experiments/ui-draft/start", data={"csrf": token, "confirm": "yes"}).status_code == 303
    assert ex.get_experiment(console.project, "ui-draft").state == "running"
    text, token = _confirm(console, "/ui/experiments/ui-draft/confirm/stop")
    assert "goes from running to stopped" in text
    assert client.post("/ui/experiments/ui-draft/stop", data={"csrf": token, "confirm": "yes"}).status_code == 303
    assert ex.get_experiment(console.project, "ui-draft").state == "stopped"


def test_promote_with_several_treatments_asks_which_variant(console: Console) -> None:
    config = ex.ExperimentConfig(name="ui-three", variants=[ex.Variant(name="a", model="t-t2-sft", share=0.4),
                                                            ex.Variant(name="b", model="t-t1-sft", share=0.3),
                                                            ex.Variant(name="c", model="base", share=0.3)])  # fmt: skip
    ex.create_experiment(console.project, config)
    ex.start(console.project, "ui-three")
    client, _ = console.sign_in("admin")
    reply = client.get("/ui/experiments/ui-three/confirm/promote")
    assert reply.status_code == 200 and "Which variant should be promoted?" in reply.text
    assert 'name="confirm"' not in reply.text  # no form until a variant is chosen
    assert "/ui/experiments/ui-three/confirm/promote?variant=b" in reply.text
    text, _ = _confirm(console, "/ui/experiments/ui-three/confirm/promote?variant=c")
    assert "Experiment ui-three ends promoted with variant c: model base is marked serving" in text
    assert "No route names this experiment" in text


@pytest.mark.parametrize("role", ["viewer", "annotator", "ingest"])
def test_only_admins_may_act_and_nothing_changes(console: Console, role: str) -> None:
    _running(console, "ui-refuse")
    client, csrf = _signed(console, role)
    for action in ("promote", "rollback", "stop"):
        reply = client.post(f"/ui/experiments/ui-refuse/{action}", data={"csrf": csrf, "confirm": "yes"})
        assert reply.status_code == 403, action
    assert client.post("/ui/experiments/no-such/rollback", data={"csrf": csrf}).status_code == 403  # before lookup
    found = ex.get_experiment(console.project, "ui-refuse")
    assert found.state == "running" and found.decision is None


def test_a_post_needs_the_csrf_token_and_the_confirmation(console: Console) -> None:
    _running(console, "ui-csrf")
    client, csrf = _signed(console, "admin")
    assert client.post("/ui/experiments/ui-csrf/rollback", data={"csrf": "wrong", "confirm": "yes"}).status_code == 403
    assert client.post("/ui/experiments/ui-csrf/rollback", data={"confirm": "yes"}).status_code == 403
    reply = client.post("/ui/experiments/ui-csrf/rollback", data={"csrf": csrf})
    assert reply.status_code == 400 and "confirm:" in reply.text
    reply = client.post("/ui/experiments/ui-csrf/rollback", data={"csrf": csrf, "confirm": "no"})
    assert reply.status_code == 400
    assert ex.get_experiment(console.project, "ui-csrf").state == "running"
