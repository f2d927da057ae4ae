"""A stub OpenAI-compatible upstream on loopback for gateway tests."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Upstream(BaseHTTPRequestHandler):
    """A stub OpenAI-compatible server: echoes the last message (streaming too); model 'broken' answers 500.

    Model 'tools-echo' answers by calling the tool ``echo`` with the last message as its ``text``.
    """

    seen: list[dict[str, Any]] = []
    aborted: list[int] = []  # for model 'slow': how many chunks were sent before the reader went away

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Upstream.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        if body["model"] == "broken":
            self._send(500, {"error": {"message": "upstream exploded", "type": "server_error"}})
            return
        content = body["messages"][-1]["content"]
        if isinstance(content, list):  # OpenAI content parts: echo their text
            content = "".join(part.get("text", "") for part in content)
        text = "echo: " + content
        if body["model"] == "slow" and body.get("stream"):
            self._slow()
            return
        if body["model"] == "tools-echo":
            self._tool_call(body, content)
            return
        if body.get("stream"):
            self._stream(body["model"], ["echo: ", body["messages"][-1]["content"]])
            return
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        reply = {"id": "up-1", "object": "chat.completion", "created": 1, "model": body["model"]}
        self._send(200, reply | {"choices": [choice], "usage": usage})

    def _tool_call(self, body: dict[str, Any], content: str) -> None:
        arguments = json.dumps({"text": content})
        call = {"id": "call_1", "type": "function", "function": {"name": "echo", "arguments": arguments}}
        if body.get("stream"):  # OpenAI's deltas: id, type and name first, then the arguments in pieces
            head = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "echo", "arguments": ""}}
            pieces = [arguments[: len(arguments) // 2], arguments[len(arguments) // 2 :]]
            deltas = [{"role": "assistant", "content": None, "tool_calls": [head]}]
            deltas += [{"tool_calls": [{"index": 0, "function": {"arguments": p}}]} for p in pieces]
            self._stream(body["model"], [], deltas=deltas, finish="tool_calls")
            return
        message = {"role": "assistant", "content": None, "refusal": None, "tool_calls": [call]}
        choice = {"index": 0, "message": message, "finish_reason": "tool_calls", "logprobs": None}
        usage = {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
        reply = {"id": "up-4", "object": "chat.completion", "created": 1, "model": body["model"]}
        self._send(200, reply | {"choices": [choice], "usage": usage})

    def _stream(
        self, model: str, pieces: list[str], *, deltas: list[dict[str, Any]] | None = None, finish: str = "stop"
    ) -> None:
        base = {"id": "up-2", "object": "chat.completion.chunk", "created": 1, "model": model}
        deltas = (deltas or [{"role": "assistant", "content": ""}] + [{"content": p} for p in pieces]) + [{}]
        chunks = [
            base | {"choices": [{"index": 0, "delta": d, "finish_reason": finish if not d else None}]} for d in deltas
        ]
        chunks.append(base | {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()  # HTTP/1.0: the body ends when the connection closes
        for chunk in chunks:
            self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")

    def _slow(self) -> None:
        """Stream 200 chunks, 20 ms apart; note how far it got if the reader hangs up."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        base = {"id": "up-3", "object": "chat.completion.chunk", "created": 1, "model": "slow"}
        for i in range(200):
            chunk = base | {"choices": [{"index": 0, "delta": {"content": f"{i} "}, "finish_reason": None}]}
            try:
                self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                self.wfile.flush()
            except OSError:  # the gateway closed the connection
                Upstream.aborted.append(i)
                return
            time.sleep(0.02)
        self.wfile.write(b"data: [DONE]\n\n")

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def running_upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()
