"""OpenAI's chat completion wire format: the request, what a backend returns, and the reply bodies."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from posttrain.errors import InvalidInput
from posttrain.records import Message
from posttrain.validation import invalid_input

FinishReason = str  # "stop" or "length" locally; an upstream may say "tool_calls" or "content_filter"


MAX_MESSAGES = 2048  # OpenAI's own bound on one request's messages
MAX_CHOICES = 8  # the most choices (``n``) one request may ask for


class ChatRequest(BaseModel):
    """A chat completion request in OpenAI's format; unknown keys are kept and forwarded upstream.

    Every field has a bound; the body as a whole is bounded by ``capture.max_body_bytes``.
    """

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256)
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_tokens: int | None = Field(None, ge=1, lt=2**31)
    max_completion_tokens: int | None = Field(None, ge=1, lt=2**31)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=-(2**63), lt=2**63)
    n: int = Field(1, ge=1, le=MAX_CHOICES, description=f"Choices to generate, at most {MAX_CHOICES}.")
    stop: str | list[str] | None = Field(None, description="Up to 4 strings; the answer ends before the first.")
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    user: str | None = Field(None, max_length=512)
    metadata: dict[str, Any] | None = None

    @property
    def limit(self) -> int | None:
        """Return the completion token limit the request asks for, if any."""
        return self.max_completion_tokens or self.max_tokens

    @field_validator("stop")
    @classmethod
    def _stop_strings(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and not 1 <= len(value) <= 4:
            raise ValueError("give 1 to 4 stop strings")
        if any(s == "" for s in ([value] if isinstance(value, str) else value or [])):
            raise ValueError("a stop string cannot be empty")
        return value

    @property
    def stops(self) -> list[str]:
        """Return the stop strings as a list."""
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class Completion(BaseModel):
    """What a backend produced for one request; ``pieces`` are the text in streamable deltas.

    ``choices`` holds every choice in OpenAI's shape when a backend made more than the text says:
    an upstream's choices as it sent them (tool calls, refusal, logprobs), or ``n`` local ones.
    """

    text: str
    pieces: list[str]
    finish_reason: FinishReason
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    batch_size: int | None = Field(None, description="Requests generated together with this one (local backend).")
    choices: list[dict[str, Any]] | None = None
    usage: dict[str, Any] | None = Field(None, description="The upstream's usage as it sent it.")

    @property
    def message(self) -> dict[str, Any]:
        """Return the first choice's assistant message as served."""
        if self.choices and isinstance(self.choices[0].get("message"), dict):
            return dict(self.choices[0]["message"])
        return {"role": "assistant", "content": self.text}

    def served_choices(self) -> list[dict[str, Any]]:
        """Return the choices in OpenAI's shape, indexed in order."""
        choices = self.choices or [
            {"message": {"role": "assistant", "content": self.text}, "finish_reason": self.finish_reason}
        ]
        return [{"logprobs": None} | choice | {"index": i} for i, choice in enumerate(choices)]


class Served(BaseModel):
    """A completion with the logged interaction's id and when it was made."""

    interaction_id: str
    model: str
    created: int
    completion: Completion
    variant: str | None = None


def parse_request(body: Any) -> ChatRequest:
    """Validate a request body; raise InvalidInput naming the offending field."""
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object", field="body")
    try:
        return ChatRequest.model_validate(body)
    except ValidationError as exc:
        raise invalid_input(exc, field="body") from None


# --- OpenAI's wire format -------------------------------------------------------------------


def completion_body(served: Served) -> dict[str, Any]:
    """Return a ``chat.completion`` object."""
    c = served.completion
    return {
        "id": f"chatcmpl-{served.interaction_id}",
        "object": "chat.completion",
        "created": served.created,
        "model": served.model,
        "choices": c.served_choices(),
        "usage": c.usage or _usage(c),
        "posttrain_interaction_id": served.interaction_id,
    }


def pair_body(pair_id: str, answers: list[Served]) -> dict[str, Any]:
    """Return a side-by-side ``chat.completion``: one choice per variant, each with its interaction id."""
    choices = [
        {
            "index": i,
            "message": s.completion.message,
            "finish_reason": s.completion.finish_reason,
            "logprobs": None,
            "posttrain_interaction_id": s.interaction_id,
            "posttrain_variant": s.variant,
            "posttrain_model": s.model,
        }
        for i, s in enumerate(answers)
    ]
    usage = [_usage(s.completion) for s in answers]
    return {
        "id": f"chatcmpl-{pair_id}",
        "object": "chat.completion",
        "created": answers[0].created,
        "model": answers[0].model,
        "choices": choices,
        "usage": {key: sum(u[key] for u in usage) for key in usage[0]},
        "posttrain_pair_id": pair_id,
        "posttrain_interaction_ids": [s.interaction_id for s in answers],
    }


def _usage(c: Completion) -> dict[str, int]:
    prompt, completion = c.prompt_tokens or 0, c.completion_tokens or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion_chunks(served: Served, *, include_usage: bool = False) -> Iterator[dict[str, Any]]:
    """Yield the ``chat.completion.chunk`` objects of a stream; the first carries the interaction id."""
    base = {
        "id": f"chatcmpl-{served.interaction_id}",
        "object": "chat.completion.chunk",
        "created": served.created,
        "model": served.model,
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return base | {"choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

    yield chunk({"role": "assistant", "content": ""}) | {"posttrain_interaction_id": served.interaction_id}
    for piece in served.completion.pieces:
        yield chunk({"content": piece})
    yield chunk({}, served.completion.finish_reason)
    for choice in served.completion.served_choices()[1:]:  # n > 1: each further choice in one delta
        delta = {"role": "assistant", "content": choice["message"].get("content") or ""}
        yield base | {"choices": [{"index": choice["index"], "delta": delta, "finish_reason": choice["finish_reason"],
                                   "logprobs": None}]}  # fmt: skip
    if include_usage:
        yield base | {"choices": [], "usage": _usage(served.completion)}


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def openai_error(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """Return an error body in OpenAI's format, ``{"error": {"message", "type", "param", "code"}}``."""
    kind = _ERROR_TYPES.get(status, "api_error")
    if code is None and status == 404 and param == "model":
        code = "model_not_found"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
