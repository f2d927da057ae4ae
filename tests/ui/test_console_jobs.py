"""The console's jobs pages over a project that ran two loop turns: the list, a job, its live fragment, guard trips."""

from __future__ import annotations

import html
import re
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from posttrain import jobs
from ui.helpers import Console

pytestmark = pytest.mark.warehouses("duckdb", "postgresql")

JOB_IDS = re.compile(r'<tr data-job="([^"]+)">')
NEXT = re.compile(r'<a class="button" href="([^"]+)" rel="next">')
FRAGMENT = {"X-Fragment": "1"}


def _walk(client: TestClient, url: str) -> list[str]:
    """Follow the list's next-page links from ``url``; return every job id shown, in order."""
    ids: list[str] = []
    for _ in range(50):
        reply = client.get(url)
        assert reply.status_code == 200, reply.text
        ids += JOB_IDS.findall(reply.text)
        found = NEXT.search(reply.text)
        if found is None:
            return ids
        url = html.unescape(found.group(1))
    raise AssertionError("the list did not end")


def _row(page: str, job_id: str) -> str:
    return page[page.index(f'<tr data-job="{job_id}">') :].split("</tr>")[0]


def _train_job(console: Console) -> jobs.Job:
    return next(j for j in jobs.list_jobs(console.project) if j.kind == "train.sft")


def test_the_list_matches_the_jobs_table_newest_first(console: Console) -> None:
    client, _ = console.sign_in("viewer")
    listed = jobs.list_jobs(console.project)
    expected = [r[0] for r in console.project.cursor().execute(
        "SELECT id FROM jobs ORDER BY created_at DESC, id DESC").fetchall()]  # fmt: skip
    assert {j.kind for j in listed} >= {"train.sft", "evals.run", "evals.gate"}
    page = client.get("/ui/jobs").text
    assert JOB_IDS.findall(page) == expected
    for job in listed:
        row = _row(page, job.id)
        assert f"<td>{job.kind}</td>" in row and f'<span class="state {job.state}">' in row
        assert f"{job.progress * 100:.0f}%" in row
    train = _train_job(console)
    row = _row(page, train.id)
    assert f"<td>{train.config['model']}</td>" in row and f"<td>{train.config['dataset']}</td>" in row


def test_the_list_filters_by_state_and_kind_and_pages(console: Console) -> None:
    client, _ = console.sign_in("admin")
    made = []
    for i in range(55):
        handle = jobs.start_job(console.project, "datasets.build", {"name": f"d{i}"})
        if i % 2:
            handle.succeed()
        made.append(handle.id)
    running = [r[0] for r in console.project.cursor().execute(
        "SELECT id FROM jobs WHERE state = 'running' ORDER BY created_at DESC, id DESC").fetchall()]  # fmt: skip
    assert _walk(client, "/ui/jobs?state=running") == running and len(running) == 28
    every = [r[0] for r in console.project.cursor().execute(
        "SELECT id FROM jobs ORDER BY created_at DESC, id DESC").fetchall()]  # fmt: skip
    first = client.get("/ui/jobs").text
    assert len(JOB_IDS.findall(first)) == 50 and 'rel="next"' in first
    assert _walk(client, "/ui/jobs") == every
    builds = _walk(client, "/ui/jobs?kind=datasets.build")
    assert sorted(builds) == sorted(made)


def test_a_job_page_shows_its_parameters_progress_curves_log_and_model(console: Console) -> None:
    client, _ = console.sign_in("viewer")
    job = _train_job(console)
    page = client.get(f"/ui/jobs/{job.id}").text
    assert '<img class="chart" alt="Loss by step: loss"' in page
    assert 'id="progress-value">100%</div>' in page and '<progress max="1" value="1.0">' in page
    assert f'<a href="/ui/models/{job.result["model"]}">' in page  # the model it registered
    assert f"<tr><th>dataset</th><td>{job.config['dataset']}</td></tr>" in page
    assert "step 1: loss=" in page  # the log
    assert 'src="/ui/static/jobs.js"' in page and f'data-live="/ui/jobs/{job.id}/live' in page
    assert 'data-finished="true"' in page and "DPO guard" not in page
    tail = client.get(f"/ui/jobs/{job.id}", params={"tail": "1"}).text
    assert "earlier left out" in tail and "step 1: loss=" not in tail


def test_the_live_fragment_of_a_finished_job_says_finished(console: Console) -> None:
    client, _ = console.sign_in("admin")
    job = _train_job(console)
    reply = client.get(f"/ui/jobs/{job.id}/live", headers=FRAGMENT)
    assert reply.status_code == 200
    assert reply.text.lstrip().startswith('<div class="live" data-state="succeeded" data-finished="true">')
    assert "The job finished (succeeded)" in reply.text and "<html" not in reply.text


def test_the_live_fragment_of_a_running_job_shows_its_progress_curves_and_log(console: Console) -> None:
    client, _ = console.sign_in("viewer")
    handle = jobs.start_job(console.project, "train.dpo", {"model": "t-t1-sft", "dataset": "t-pref@1"})
    for step in range(1, 5):
        handle.metric(step, loss=1.0 / step, **{"rewards/margins": 0.1 * step})
        handle.log(f"step {step}: loss={1.0 / step:.3f}")
    handle.progress(0.4)
    fragment = client.get(f"/ui/jobs/{handle.id}/live", headers=FRAGMENT).text
    assert 'data-state="running" data-finished="false"' in fragment
    assert 'id="progress-value">40%</div>' in fragment and 'value="0.4"' in fragment
    assert 'alt="Loss by step: loss"' in fragment and 'alt="rewards/margins by step"' in fragment
    assert "step 4: loss=0.250" in fragment
    page = client.get(f"/ui/jobs/{handle.id}").text
    assert 'data-finished="false"' in page and 'id="snapshot-note"' in page and "reload" in page
    handle.progress(0.9)
    assert 'id="progress-value">90%</div>' in client.get(f"/ui/jobs/{handle.id}/live", headers=FRAGMENT).text
    handle.fail("out of memory")
    fragment = client.get(f"/ui/jobs/{handle.id}/live", headers=FRAGMENT).text
    assert 'data-finished="true"' in fragment
    assert '<pre class="block" id="job-error">out of memory</pre>' in client.get(f"/ui/jobs/{handle.id}").text


def test_a_dpo_guard_trip_is_shown_with_its_restored_step(console: Console) -> None:
    torch = pytest.importorskip("torch")
    from posttrain.train.guards import CollapseGuard

    handle = jobs.start_job(console.project, "train.dpo", {"model": "t-t1-sft"})
    guard = CollapseGuard(handle, tokenizer=None, probe_prompts=[])  # type: ignore[arg-type]  # no probes: no tokenizer
    model = torch.nn.Linear(2, 2)
    state, control = SimpleNamespace(global_step=0, max_steps=100), SimpleNamespace(should_training_stop=False)
    guard.on_train_begin(None, state, control, model=model)
    for step, logs in [(10, {"rewards/margins": 0.5, "logps/chosen": -10.0, "rewards/accuracies": 0.6}),
                       (20, {"rewards/margins": 2.0, "logps/chosen": -20.0, "rewards/accuracies": 0.9})]:  # fmt: skip
        state.global_step = step
        guard.on_log(None, state, control, logs=logs, model=model)
    guard.on_train_end(None, state, control, model=model)
    assert guard.report.tripped and control.should_training_stop and guard.report.restored_step == 10
    client, _ = console.sign_in("viewer")
    page = client.get(f"/ui/jobs/{handle.id}").text
    row = r'<tr class="trip"><td class="num">(\d+)</td><td>([^<]*)</td><td class="num restored">(\d+)</td>'
    trips = re.findall(row, page)
    assert len(trips) == 1
    step, reason, restored = trips[0]
    assert (step, restored) == ("20", "10") and html.unescape(reason) == guard.report.reason
    assert "likelihood displacement" in reason
    handle.succeed(result={"model": "t-dpo", "metrics": {"guard": guard.report.model_dump(mode="json")}})
    done = client.get(f"/ui/jobs/{handle.id}/live", headers=FRAGMENT).text
    assert len(re.findall(r'<tr class="trip">', done)) == 1 and '<td class="num restored">10</td>' in done


@pytest.mark.parametrize(
    ("url", "name"),
    [("/ui/jobs?state=lost", "state"), ("/ui/jobs?kind=Not%20A%20Kind", "kind"), ("/ui/jobs?cursor=!!", "cursor"),
     ("/ui/jobs?state=" + "x" * 30, "state"), ("/ui/jobs/JOB/live?tail=0", "tail"), ("/ui/jobs/JOB?tail=abc", "tail")],
)  # fmt: skip
def test_bad_parameters_are_a_400_page_naming_them(console: Console, url: str, name: str) -> None:
    client, _ = console.sign_in("admin")
    reply = client.get(url.replace("JOB", _train_job(console).id))
    assert reply.status_code == 400
    assert f"<p>{name}:" in reply.text


@pytest.mark.parametrize(
    "url", ["/ui/jobs/01NOSUCHJOB", "/ui/jobs/01NOSUCHJOB/live", "/ui/jobs/a b", "/ui/jobs/a b/live"]
)
def test_an_unknown_job_is_a_404(console: Console, url: str) -> None:
    client, _ = console.sign_in("viewer")
    assert client.get(url).status_code == 404
    assert client.get(url, headers=FRAGMENT).status_code == 404


@pytest.mark.parametrize("role", ["annotator", "ingest"])
def test_annotators_and_ingest_keys_are_refused(console: Console, role: str) -> None:
    client, _ = console.sign_in(role)
    job = _train_job(console)
    for url in ("/ui/jobs", f"/ui/jobs/{job.id}", f"/ui/jobs/{job.id}/live"):
        reply = client.get(url)
        assert reply.status_code == 403, url
        assert "Not allowed" in reply.text and "step 1: loss=" not in reply.text


def test_without_a_session_the_pages_redirect_to_sign_in(console: Console) -> None:
    client = console.new_client()
    job = _train_job(console)
    reply = client.get(f"/ui/jobs/{job.id}")
    assert reply.status_code == 303 and reply.headers["location"].startswith("/ui/login")


def test_the_page_script_is_served_and_polls_with_the_fragment_header(console: Console) -> None:
    client, _ = console.sign_in("viewer")
    script = client.get("/ui/static/jobs.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert '"X-Fragment": "1"' in script.text and 'credentials: "same-origin"' in script.text
    assert "2000" in script.text
