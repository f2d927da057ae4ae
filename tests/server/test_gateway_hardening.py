"""The gateway under hostile or unusual input, against a real ``posttrain serve`` on loopback.

A body past ``capture.max_body_bytes`` is refused before it is read (the server's memory stays
small); a bad request fails alone, never the batch it shares; OpenAI content parts are served and
stored as sent, by the gateway and by capture.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import pytest

from conftest import LiveServer
from posttrain import keys
from posttrain.models.registry import register_model
from posttrain.project import init_project
from upstream_stub import Upstream, running_upstream

OOV = "<|oov|>"  # a token the mismatched model's tokenizer has and its embeddings do not
PARTS = [{"type": "text", "text": "hello"}, {"type": "text", "text": "again", "cache_control": {"type": "x"}}]
HELLO = [{"role": "user", "content": "hello"}]
IMAGE = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}}


def _mismatched(tiny_model: Path, folder: Path) -> Path:
    """Copy the tiny model with one token added to its tokenizer only: generating it fails."""
    from transformers import AutoConfig, AutoTokenizer

    shutil.copytree(tiny_model, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.add_tokens([OOV])
    tokenizer.save_pretrained(folder)
    assert tokenizer.convert_tokens_to_ids(OOV) >= AutoConfig.from_pretrained(folder).vocab_size
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[LiveServer]:
    """A server (default body limit) with 'tiny', 'mismatched' and the stub upstream's 'stub-echo'."""
    root = tmp_path_factory.mktemp("hardening")
    proj = init_project(root / "proj")
    admin = keys.create_key(proj, "admin").key
    register_model(proj, "tiny", tiny_model)
    register_model(proj, "mismatched", _mismatched(tiny_model, root / "mismatched"))
    proj.close()
    with running_upstream() as upstream:
        env = {
            "POSTTRAIN_GATEWAY_UPSTREAM_URL": upstream,
            "POSTTRAIN_GATEWAY_UPSTREAM_MODELS": "stub-echo",
            "POSTTRAIN_GATEWAY_BATCH_WINDOW_MS": "300",  # wide, so the concurrent requests surely meet
        }
        live = LiveServer(root=proj.root, admin_key=admin, env=env).start()
        yield live
        live.stop()


@pytest.fixture
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with server.http() as client:
        client.timeout = httpx.Timeout(120)
        yield client


def _stored(http: httpx.Client, interaction_id: str) -> dict[str, Any]:
    """Return a stored interaction once the group commit has made it readable."""
    for _ in range(200):
        reply = http.get(f"/api/interactions/{interaction_id}")
        if reply.status_code == 200:
            return reply.json()  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError(f"interaction {interaction_id} was not stored: {reply.text}")


def _openai_error(reply: httpx.Response, status: int, param: str | None = None) -> str:
    """Check OpenAI's error shape; return its message."""
    assert reply.status_code == status, reply.text[:500]
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    return error["message"]  # type: ignore[no-any-return]


# --- the body bound ---------------------------------------------------------------------------


def _post_raw(url: str, key: str, head: dict[str, str], body: Iterator[bytes]) -> tuple[int, bytes]:
    """POST over a plain socket, sending until the server answers (as a browser would), then read it."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        lines = [
            "POST /v1/chat/completions HTTP/1.1",
            f"Host: {host}",
            f"Authorization: Bearer {key}",
            "Connection: close",
        ]
        lines += [f"{k}: {v}" for k, v in head.items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        answered = threading.Event()
        reply = bytearray()

        def read() -> None:
            try:
                while chunk := sock.recv(65536):
                    reply.extend(chunk)
                    answered.set()
            except OSError:  # a server that leaves a body unread resets the connection after answering
                pass
            answered.set()

        reader = threading.Thread(target=read)
        reader.start()
        for chunk in body:
            if answered.is_set():
                break
            try:
                sock.sendall(chunk)
            except OSError:  # the server answered and closed: stop sending
                break
        reader.join(60)
        assert not reader.is_alive(), "the server did not close the connection after answering"
    status_line, _, rest = bytes(reply).partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def _fifty_mb() -> Iterator[bytes]:
    yield b'{"model": "tiny", "messages": [{"role": "user", "content": "'
    for _ in range(50):
        yield b"x" * (1 << 20)
    yield b'"}]}'


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_gateway_body_over_limit_is_413_and_memory_stays_small(
    server: LiveServer, http: httpx.Client, framing: str
) -> None:
    assert server.proc is not None
    process = psutil.Process(server.proc.pid)
    head = {"Content-Type": "application/json"}
    body = _fifty_mb()
    if framing == "content-length":
        head["Content-Length"] = str(sum(len(c) for c in _fifty_mb()))
    else:
        head["Transfer-Encoding"] = "chunked"
        body = (b"%x\r\n%s\r\n" % (len(c), c) for c in _fifty_mb())
    status, raw = _post_raw(server.url, server.admin_key, head, body)
    assert status == 413
    error = orjson.loads(raw)["error"]
    assert set(error) == {"message", "type", "param", "code"} and "capture.max_body_bytes" in error["message"]
    assert process.memory_info().rss < 1 << 30
    reply = http.post("/v1/chat/completions", json={"model": "tiny", "messages": HELLO, "max_tokens": 2})
    assert reply.status_code == 200, reply.text


# --- a bad request fails alone ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "bad", "param"),
    [
        ("tiny", [{"role": "user", "content": [PARTS[0], IMAGE]}], "messages.0.content.1.type"),  # refused early
        ("mismatched", [{"role": "user", "content": f"a {OOV} b"}], "messages"),  # fails in generation
    ],
    ids=["image-part", "generation-fails"],
)
def test_batch_with_one_bad_request_answers_the_other_seven(
    server: LiveServer, model: str, bad: list[dict[str, Any]], param: str
) -> None:
    clients = [server.http() for _ in range(8)]
    together = threading.Barrier(8)  # sent at once, so they share one batch (the window is 300 ms)

    def ask(i: int) -> httpx.Response:
        messages = bad if i == 3 else [{"role": "user", "content": f"question {i}"}]
        body = {"model": model, "messages": messages, "max_tokens": 3, "temperature": 0}
        together.wait()
        return clients[i].post("/v1/chat/completions", json=body, timeout=120)

    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(ask, range(8)))
    for client in clients:
        client.close()
    statuses = [r.status_code for r in replies]
    assert statuses == [200, 200, 200, 400, 200, 200, 200, 200], [r.text[:300] for r in replies]
    _openai_error(replies[3], 400, param)


def test_tiny_temperature_is_served_greedy(http: httpx.Client) -> None:
    body = {"model": "tiny", "messages": HELLO, "max_tokens": 4}
    tiny = http.post("/v1/chat/completions", json=body | {"temperature": 1e-300})
    greedy = http.post("/v1/chat/completions", json=body | {"temperature": 0})
    assert tiny.status_code == greedy.status_code == 200, tiny.text
    assert tiny.json()["choices"][0]["message"] == greedy.json()["choices"][0]["message"]


# --- content parts ----------------------------------------------------------------------------


def test_text_parts_are_served_and_stored_as_sent(http: httpx.Client) -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": PARTS}]
    reply = http.post("/v1/chat/completions", json={"model": "tiny", "messages": messages, "max_tokens": 3})
    assert reply.status_code == 200, reply.text
    stored = _stored(http, reply.headers["X-Posttrain-Interaction-Id"])
    assert stored["messages"] == messages and stored["response"] == reply.json()["choices"][0]["message"]["content"]


def test_upstream_gets_content_parts_as_sent(http: httpx.Client) -> None:
    messages = [{"role": "user", "content": [*PARTS, IMAGE]}]
    reply = http.post("/v1/chat/completions", json={"model": "stub-echo", "messages": messages})
    assert reply.status_code == 200, reply.text
    assert Upstream.seen[-1]["body"]["messages"] == messages
    assert _stored(http, reply.headers["X-Posttrain-Interaction-Id"])["messages"] == messages


def test_capture_stores_content_parts_as_sent(http: httpx.Client) -> None:
    messages = [{"role": "user", "content": [PARTS[0], IMAGE]}, {"role": "assistant", "content": None}]
    event = {"id": "parts-1", "messages": messages, "response": "a cat"}
    reply = http.post("/api/capture/interactions", json={"interactions": [event]})
    assert reply.status_code == 200 and reply.json()["results"][0]["status"] == "created", reply.text
    assert _stored(http, "parts-1")["messages"] == messages


@pytest.mark.parametrize(
    ("content", "field"),
    [
        ([PARTS[0], {"text": "no type"}], "messages.0.content.1.type"),
        ([{"type": "text"}], "messages.0.content.0.text"),
        ([PARTS[0], "bare"], "messages.0.content.1"),
        (7, "messages.0.content"),
    ],
)
def test_capture_names_the_bad_content_part(http: httpx.Client, content: Any, field: str) -> None:
    event = {"messages": [{"role": "user", "content": content}]}
    reply = http.post("/api/capture/interactions", json={"interactions": [event]})
    assert reply.status_code == 207, reply.text
    result = reply.json()["results"][0]
    assert (result["status"], result["field"]) == ("error", field)
