"""gateway: the official OpenAI SDK against a real ``posttrain serve`` (local model and a stub upstream)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fastapi.testclient import TestClient
from openai.types.chat import ChatCompletionMessageParam

from conftest import LiveServer
from posttrain import keys
from posttrain.models.registry import register_model
from posttrain.project import Project, init_project
from upstream_stub import Upstream, running_upstream

pytestmark = pytest.mark.warehouses("duckdb", "postgresql")

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]
AUDIO = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with running_upstream() as url:
        yield url


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, upstream: str) -> Iterator[LiveServer]:
    """A served project with the tiny model registered as 'tiny' and the stub upstream's models."""
    proj = init_project(tmp_path_factory.mktemp("gateway") / "proj")
    admin = keys.create_key(proj, "admin").key
    register_model(proj, "tiny", tiny_model)
    proj.close()
    env = {
        "POSTTRAIN_GATEWAY_UPSTREAM_URL": upstream,
        "POSTTRAIN_GATEWAY_UPSTREAM_MODELS": "stub-echo,broken,slow,tools-echo",
        "POSTTRAIN_GATEWAY_UPSTREAM_API_KEY_ENV": "STUB_UPSTREAM_KEY",
        "STUB_UPSTREAM_KEY": "sk-stub",
        "POSTTRAIN_GATEWAY_BATCH_WINDOW_MS": "150",  # wide, so concurrent test requests surely meet
    }
    live = LiveServer(root=proj.root, admin_key=admin, env=env).start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def ingest_key(server: LiveServer) -> str:
    with server.http() as http:
        return str(http.post("/api/keys", json={"role": "ingest"}).json()["key"])


@pytest.fixture(scope="module")
def sdk(server: LiveServer, ingest_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=ingest_key, max_retries=0, timeout=60)


def _stored(server: LiveServer, interaction_id: str) -> dict[str, Any]:
    """Return a logged interaction once the background commit has made it readable."""
    with server.http() as http:
        for _ in range(100):
            reply = http.get(f"/api/interactions/{interaction_id}")
            if reply.status_code == 200:
                return reply.json()  # type: ignore[no-any-return]
            time.sleep(0.05)
    raise AssertionError(f"interaction {interaction_id} was not logged: {reply.text}")


def test_chat_completions_serves_a_registered_model(server: LiveServer, sdk: openai.OpenAI) -> None:
    raw = sdk.chat.completions.with_raw_response.create(model="tiny", messages=HELLO, max_tokens=4)
    completion = raw.parse()
    interaction_id = raw.headers["X-Posttrain-Interaction-Id"]
    assert completion.model == "tiny" and completion.object == "chat.completion"
    assert isinstance(completion.choices[0].message.content, str)
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage is not None and 1 <= completion.usage.completion_tokens <= 4
    assert getattr(completion, "posttrain_interaction_id") == interaction_id  # noqa: B009 (an extra field)


def test_chat_completions_streams_sse_chunks(server: LiveServer, sdk: openai.OpenAI) -> None:
    with sdk.chat.completions.with_streaming_response.create(
        model="tiny",
        messages=HELLO,
        max_tokens=6,
        stream=True,
        stream_options={"include_usage": True},
    ) as response:
        header_id = response.headers["X-Posttrain-Interaction-Id"]
        chunks = list(response.parse())
    assert getattr(chunks[0], "posttrain_interaction_id") == header_id  # noqa: B009
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens <= 6
    assert _stored(server, header_id)["response"] == text


def test_chat_completions_honours_seed_and_greedy(sdk: openai.OpenAI) -> None:
    def ask(**options: Any) -> str | None:
        reply = sdk.chat.completions.create(model="tiny", messages=HELLO, max_tokens=8, **options)
        return reply.choices[0].message.content

    assert ask(temperature=1.0, top_p=0.9, seed=7) == ask(temperature=1.0, top_p=0.9, seed=7)
    assert ask(temperature=0) == ask(temperature=0)


def test_chat_completions_batches_concurrent_requests(server: LiveServer, sdk: openai.OpenAI) -> None:
    def ask(i: int) -> str:
        raw = sdk.chat.completions.with_raw_response.create(
            model="tiny",
            messages=[{"role": "user", "content": "word " * i}],
            max_tokens=3 + i,
            temperature=0,
        )
        assert raw.parse().usage.completion_tokens <= 3 + i  # type: ignore[union-attr]
        return raw.headers["X-Posttrain-Interaction-Id"]

    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(ask, range(4)))
    sizes = [_stored(server, i)["metadata"]["batch_size"] for i in ids]
    assert max(sizes) >= 2, sizes


def test_models_list_names_registered_and_upstream_models(sdk: openai.OpenAI) -> None:
    names = [m.id for m in sdk.models.list()]
    assert names == ["tiny", "stub-echo", "broken", "slow", "tools-echo"]


def test_chat_completions_logs_the_interaction(server: LiveServer, sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(
        model="tiny",
        messages=HELLO,
        max_tokens=3,
        user="u-17",
        extra_headers={"X-Posttrain-Cohort": "minor"},
    )
    stored = _stored(server, getattr(completion, "posttrain_interaction_id"))  # noqa: B009
    assert stored["messages"] == HELLO and stored["response"] == completion.choices[0].message.content
    assert (stored["model"], stored["user_id"], stored["cohort"]) == ("tiny", "u-17", "minor")
    assert (stored["tags"], stored["source"]) == (["gateway"], "gateway")
    assert stored["latency_ms"] > 0 and stored["prompt_tokens"] > 0
    assert stored["completion_tokens"] == completion.usage.completion_tokens  # type: ignore[union-attr]


def test_chat_completions_takes_user_header_and_metadata_cohort(server: LiveServer, sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(
        model="tiny",
        messages=HELLO,
        max_tokens=2,
        metadata={"cohort": "adult"},
        extra_headers={"X-Posttrain-User": "u-9"},
    )
    stored = _stored(server, getattr(completion, "posttrain_interaction_id"))  # noqa: B009
    assert (stored["user_id"], stored["cohort"], stored["metadata"]["cohort"]) == ("u-9", "adult", "adult")


def test_unknown_model_is_not_found(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.chat.completions.create(model="nope", messages=HELLO)
    assert caught.value.param == "model" and caught.value.code == "model_not_found"


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"temperature": 5}, "temperature"),
        ({"messages": []}, "messages"),
        ({"messages": HELLO * 2049}, "messages"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 512}, "max_tokens"),  # all the tiny model's positions, none left for the prompt
        ({"seed": 2**63}, "seed"),
        ({"model": "m" * 300}, "model"),
        ({"metadata": {"cohort": "c" * 600}}, "metadata.cohort"),
        ({"messages": [{"role": "user", "content": 7}]}, "messages.0.content"),
        ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages.0.content.0.text"),
        ({"messages": [{"role": "user", "content": [{"text": "hi"}]}]}, "messages.0.content.0.type"),
        ({"messages": [{"role": "user", "content": [AUDIO]}]}, "messages.0.content.0.type"),  # text-only model
    ],
)
def test_bad_request_names_the_field(sdk: openai.OpenAI, options: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(**{"model": "tiny", "messages": HELLO, **options})  # type: ignore[call-overload]
    assert caught.value.param == param


def test_role_without_gateway_is_refused(server: LiveServer) -> None:
    with server.http() as http:
        viewer = http.post("/api/keys", json={"role": "viewer"}).json()["key"]
    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key=viewer, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        sdk.models.list()


def test_upstream_model_is_proxied_and_logged(server: LiveServer, sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(model="stub-echo", messages=HELLO, temperature=0.5)
    assert completion.choices[0].message.content == "echo: hello"
    sent = Upstream.seen[-1]
    assert (sent["path"], sent["auth"], sent["body"]["temperature"]) == ("/v1/chat/completions", "Bearer sk-stub", 0.5)
    stored = _stored(server, getattr(completion, "posttrain_interaction_id"))  # noqa: B009
    assert (stored["response"], stored["model"], stored["completion_tokens"]) == ("echo: hello", "stub-echo", 2)
    assert stored["metadata"]["backend"] == "openai"


def test_upstream_model_streams_its_chunks_through(server: LiveServer, sdk: openai.OpenAI) -> None:
    with sdk.chat.completions.with_streaming_response.create(model="stub-echo", messages=HELLO, stream=True) as reply:
        header_id = reply.headers["X-Posttrain-Interaction-Id"]
        chunks = list(reply.parse())
    assert Upstream.seen[-1]["body"]["stream"] is True
    assert getattr(chunks[0], "posttrain_interaction_id") == header_id  # noqa: B009
    assert {c.id for c in chunks} == {f"chatcmpl-{header_id}"} and all(c.choices for c in chunks)  # usage not asked
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "echo: hello"
    stored = _stored(server, header_id)
    assert (stored["response"], stored["completion_tokens"], stored["metadata"]["finish_reason"]) == (
        "echo: hello",
        2,
        "stop",
    )


def test_client_hanging_up_mid_stream_closes_the_upstream_call_and_logs_what_was_sent(
    server: LiveServer, ingest_key: str
) -> None:
    body = {"model": "slow", "messages": HELLO, "stream": True}
    headers = {"Authorization": f"Bearer {ingest_key}"}
    with (
        httpx.Client(base_url=server.url, timeout=30) as http,
        http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as reply,
    ):
        interaction_id = reply.headers["X-Posttrain-Interaction-Id"]
        lines = reply.iter_lines()
        received = [next(lines) for _ in range(6)]  # a few chunks, then hang up
    assert any(line.startswith("data: ") for line in received)
    for _ in range(100):  # the upstream notices within a couple of its 20 ms chunks
        if Upstream.aborted:
            break
        time.sleep(0.05)
    assert Upstream.aborted and Upstream.aborted[-1] < 150  # it did not stream all 200 chunks
    stored = _stored(server, interaction_id)
    assert stored["metadata"]["finish_reason"] == "incomplete" and stored["response"].startswith("0 1 ")


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_failure_is_502_with_its_message(sdk: openai.OpenAI, stream: bool) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        sdk.chat.completions.create(model="broken", messages=HELLO, stream=stream)
    assert caught.value.status_code == 502 and "upstream exploded" in caught.value.message


ECHO_TOOL: Any = {"type": "function", "function": {"name": "echo", "parameters": {"type": "object"}}}


def test_upstream_tool_calls_reach_the_client_and_are_stored_whole(server: LiveServer, sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(model="tools-echo", messages=HELLO, tools=[ECHO_TOOL])
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert (call.id, call.function.name, call.function.arguments) == ("call_1", "echo", '{"text": "hello"}')  # type: ignore[union-attr]
    assert Upstream.seen[-1]["body"]["tools"] == [ECHO_TOOL]
    stored = _stored(server, getattr(completion, "posttrain_interaction_id"))  # noqa: B009
    message = stored["metadata"]["response_message"]
    assert message["tool_calls"] == [
        {"id": "call_1", "type": "function", "function": {"name": "echo", "arguments": '{"text": "hello"}'}}
    ]
    assert stored["metadata"]["finish_reason"] == "tool_calls" and stored["metadata"]["usage"]["total_tokens"] == 12
    assert (stored["prompt_tokens"], stored["completion_tokens"]) == (7, 5)


def test_upstream_streamed_tool_calls_pass_and_are_stored_whole(server: LiveServer, sdk: openai.OpenAI) -> None:
    with sdk.chat.completions.with_streaming_response.create(
        model="tools-echo", messages=HELLO, tools=[ECHO_TOOL], stream=True
    ) as reply:
        header_id = reply.headers["X-Posttrain-Interaction-Id"]
        chunks = list(reply.parse())
    deltas = [d for c in chunks for d in c.choices[0].delta.tool_calls or []]
    assert "".join(d.function.arguments or "" for d in deltas if d.function) == '{"text": "hello"}'
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    stored = _stored(server, header_id)
    assert stored["metadata"]["finish_reason"] == "tool_calls" and stored["response"] == ""
    assert stored["metadata"]["response_message"] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"type": "function", "id": "call_1", "function": {"name": "echo", "arguments": '{"text": "hello"}'}}
        ],
    }


def test_local_model_ends_before_the_stop_string(sdk: openai.OpenAI) -> None:
    def ask(**options: Any) -> Any:
        return sdk.chat.completions.create(model="tiny", messages=HELLO, max_tokens=12, temperature=0, **options)

    full = ask().choices[0].message.content
    assert full is not None and len(full) >= 4, full
    stop = full[2:4]
    cut = ask(stop=["never said", stop]).choices[0]
    assert (cut.message.content, cut.finish_reason) == (full[: full.find(stop)], "stop")


def test_local_model_answers_n_choices(server: LiveServer, sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(model="tiny", messages=HELLO, max_tokens=4, n=3, temperature=1.0)
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert all(isinstance(c.message.content, str) for c in completion.choices)
    stored = _stored(server, getattr(completion, "posttrain_interaction_id"))  # noqa: B009
    assert stored["response"] == completion.choices[0].message.content
    assert [c["message"]["content"] for c in stored["metadata"]["choices"]] == [
        c.message.content for c in completion.choices[1:]
    ]


def test_local_model_streams_n_choices(sdk: openai.OpenAI) -> None:
    chunks = list(sdk.chat.completions.create(model="tiny", messages=HELLO, max_tokens=3, n=2, stream=True))
    assert {c.choices[0].index for c in chunks if c.choices} == {0, 1}


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"tools": [ECHO_TOOL]}, "tools"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"logprobs": True}, "logprobs"),
        ({"n": 9}, "n"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ],
)
def test_local_model_refuses_what_it_cannot_honour(sdk: openai.OpenAI, options: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="tiny", messages=HELLO, **options)
    assert caught.value.param == param and param in caught.value.message


def test_local_model_takes_text_response_format(sdk: openai.OpenAI) -> None:
    reply = sdk.chat.completions.create(model="tiny", messages=HELLO, max_tokens=2, response_format={"type": "text"})
    assert isinstance(reply.choices[0].message.content, str)


# --- in-process: the error formats ------------------------------------------------------------


def test_v1_errors_use_openai_format_and_api_errors_keep_posttrain_format(client: TestClient) -> None:
    bad_json = client.post("/v1/chat/completions", content=b"{", headers={"Content-Type": "application/json"})
    assert bad_json.status_code == 400 and set(bad_json.json()["error"]) == {"message", "type", "param", "code"}
    assert bad_json.json()["error"]["param"] == "body"
    assert client.get("/v1/nowhere").json()["error"]["type"] == "invalid_request_error"
    assert set(client.get("/api/nowhere").json()["error"]) == {"type", "message", "field"}


def test_unreachable_upstream_is_502(project: Any, admin_key: str) -> None:
    from posttrain.server import create_app

    project.settings.gateway.upstream_url = "http://127.0.0.1:9/v1"  # the discard port: refused
    project.settings.gateway.upstream_models = ["far"]
    with TestClient(create_app(project), headers={"Authorization": f"Bearer {admin_key}"}) as c:
        reply = c.post("/v1/chat/completions", json={"model": "far", "messages": HELLO})
    assert reply.status_code == 502 and "Cannot connect to host 127.0.0.1:9" in reply.json()["error"]["message"]


def test_gateway_needs_a_key(client: TestClient) -> None:
    reply = client.get("/v1/models", headers={"Authorization": ""})
    assert reply.status_code == 401 and reply.json()["error"]["type"] == "authentication_error"


def test_overlong_user_header_is_refused_before_serving(client: TestClient) -> None:
    body = {"model": "nope", "messages": HELLO}
    reply = client.post("/v1/chat/completions", json=body, headers={"X-Posttrain-User": "u" * 600})
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "X-Posttrain-User"


def test_running_experiment_assigns_sticky_variants_and_logs_the_decision(
    project: Project, admin_key: str, tiny_model: Path
) -> None:
    from posttrain import experiments as ex
    from posttrain.server import create_app

    register_model(project, "base", tiny_model)
    register_model(project, "cand", tiny_model)
    variants = [ex.Variant(name="control", model="base", share=0.5), ex.Variant(name="new", model="cand", share=0.5)]
    ex.create_experiment(project, ex.ExperimentConfig(name="exp", variants=variants, cohorts=["adult"]))
    experiment = ex.start(project, "exp")
    body = {"model": "base", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    sent: dict[str, tuple[str, str | None]] = {}
    with TestClient(create_app(project), headers={"Authorization": f"Bearer {admin_key}"}) as c:
        for i in range(12):
            for cohort in ("adult", "minor"):
                user = f"u{i}-{cohort}"
                r = c.post(
                    "/v1/chat/completions", json=body, headers={"X-Posttrain-User": user, "X-Posttrain-Cohort": cohort}
                )
                assert r.status_code == 200, r.text
                sent[r.headers["X-Posttrain-Interaction-Id"]] = (user, cohort)
    rows = (
        project.cursor().execute("SELECT id, model, experiment, variant, assignment_prob FROM interactions").fetchall()
    )
    assert len(rows) == len(sent)
    for interaction_id, model, experiment_name, variant, prob in rows:
        user, cohort = sent[interaction_id]
        if cohort == "minor":  # not targeted: served as asked, no experiment
            assert (model, experiment_name, variant) == ("base", None, None)
            continue
        expected, probability = ex.assign(experiment, user)
        assert (experiment_name, variant, prob) == ("exp", expected, probability)
        assert model == ("base" if expected == "control" else "cand")
    assert {r[3] for r in rows if r[2]} == {"control", "new"}


def test_served_interaction_reads_back_at_once(server: LiveServer, sdk: openai.OpenAI) -> None:
    """Read-your-writes: the id in the response header is readable immediately, not after the group commit."""
    with server.http() as http:
        for n in range(20):
            reply = sdk.chat.completions.with_raw_response.create(
                model="stub-echo", messages=[{"role": "user", "content": f"read me {n}"}]
            )
            interaction_id = reply.headers["X-Posttrain-Interaction-Id"]
            stored = http.get(f"/api/interactions/{interaction_id}")
            assert stored.status_code == 200, (n, stored.text)
            assert stored.json()["response"] == f"echo: read me {n}"
        missing = http.get("/api/interactions/never-served")
        assert missing.status_code == 404
