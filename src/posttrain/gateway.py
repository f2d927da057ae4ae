"""The OpenAI-compatible gateway: resolve a request's model to a backend, serve it, log the interaction.

Two backends: ``local`` (a registered causal-lm served with transformers; requests for one model
that arrive within ``gateway.batch_window_ms`` are generated together in one left-padded
``generate`` call on that model's worker thread) and ``openai`` (any OpenAI-compatible upstream,
``gateway.upstream_url``, for the names in ``gateway.upstream_models``). Every completion is
logged as an interaction through the server's ``Ingestor`` without waiting for its commit.
torch and transformers are imported only on the local backend's worker threads.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from posttrain import capture, experiments
from posttrain.errors import InvalidInput, NotFound, PosttrainError
from posttrain.ids import new_id
from posttrain.models.registry import find_model, list_models
from posttrain.project import Project
from posttrain.records import Message
from posttrain.settings import GatewaySettings

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from posttrain.capture import Ingestor

log = logging.getLogger("posttrain.gateway")

Backend = Literal["local", "openai"]
FinishReason = str  # "stop" or "length" locally; an upstream may say "tool_calls" or "content_filter"


class UpstreamFailed(PosttrainError):
    """The OpenAI-compatible upstream failed or could not be reached (502)."""

    status = 502


class ChatRequest(BaseModel):
    """A chat completion request in OpenAI's format; unknown keys are kept and forwarded upstream."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    n: int = Field(1, ge=1, le=1, description="Only one choice per request is supported.")
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    user: str | None = Field(None, max_length=512)
    metadata: dict[str, Any] | None = None

    @property
    def limit(self) -> int | None:
        """Return the completion token limit the request asks for, if any."""
        return self.max_completion_tokens or self.max_tokens


class Route(BaseModel):
    """Where one model name is served."""

    model: str
    backend: Backend
    path: str | None = None


class Assignment(BaseModel):
    """The serving decision of a running experiment: which variant, with what probability."""

    experiment: str
    variant: str
    probability: float


class Completion(BaseModel):
    """What a backend produced for one request; ``pieces`` are the text in streamable deltas."""

    text: str
    pieces: list[str]
    finish_reason: FinishReason
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    batch_size: int | None = Field(None, description="Requests generated together with this one (local backend).")


class Served(BaseModel):
    """A completion with the logged interaction's id and when it was made."""

    interaction_id: str
    model: str
    created: int
    completion: Completion


def parse_request(body: Any) -> ChatRequest:
    """Validate a request body; raise InvalidInput naming the offending field."""
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object", field="body")
    try:
        return ChatRequest.model_validate(body)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in err["loc"]) or "body"
        raise InvalidInput(f"{field}: {err['msg']}", field=field) from None


# --- the local backend ----------------------------------------------------------------------


class _Job:
    """One request waiting on a model's worker thread."""

    def __init__(self, request: ChatRequest, max_tokens: int) -> None:
        self.request = request
        self.max_tokens = max_tokens
        self.future: Future[Completion] = Future()

    @property
    def group(self) -> tuple[Any, ...]:
        """Return the key of the requests this one may be generated with (same sampling)."""
        temperature = 1.0 if self.request.temperature is None else self.request.temperature
        if temperature == 0:
            return ("greedy",)
        if self.request.seed is not None:  # a seeded sample is reproducible only on its own
            return ("seeded", id(self))
        return ("sample", temperature, self.request.top_p or 1.0)


_GENERATE_LOCK = threading.Lock()  # torch's RNG is global: seeding and sampling must not interleave


class _ModelWorker:
    """Load one model once and generate its requests in batches on a daemon thread."""

    def __init__(self, path: Path, settings: GatewaySettings) -> None:
        self._path = path
        self._settings = settings
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._loaded: tuple[PreTrainedModel, PreTrainedTokenizerBase] | None = None
        self._thread = threading.Thread(target=self._run, name=f"posttrain-gateway-{path.name}", daemon=True)
        self._thread.start()

    def submit(self, request: ChatRequest) -> Future[Completion]:
        """Queue a request; the future resolves with its completion."""
        job = _Job(request, request.limit or self._settings.default_max_tokens)
        self._queue.put(job)
        return job.future

    def close(self) -> None:
        """Stop the worker once the queued requests are done."""
        self._queue.put(None)
        self._thread.join(timeout=60)

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            groups: dict[tuple[Any, ...], list[_Job]] = {}
            for job in batch:
                groups.setdefault(job.group, []).append(job)
            for jobs in groups.values():
                self._serve(jobs)

    def _next_batch(self) -> list[_Job] | None:
        first = self._queue.get()
        if first is None:
            return None
        batch = [first]
        deadline = time.monotonic() + self._settings.batch_window_ms / 1000
        while len(batch) < self._settings.max_batch_size:
            try:
                job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is None:
                self._queue.put(None)  # stop after this batch
                break
            batch.append(job)
        return batch

    def _serve(self, jobs: list[_Job]) -> None:
        try:
            if self._loaded is None:
                from posttrain.models.generation import load_causal_lm

                self._loaded = load_causal_lm(self._path)
            with _GENERATE_LOCK:
                results = _generate(*self._loaded, jobs)
        except Exception as exc:  # the requests fail with the cause; the worker serves the next batch
            for job in jobs:
                job.future.set_exception(exc)
            return
        for job, result in zip(jobs, results, strict=True):
            job.future.set_result(result)


def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    configured = model.generation_config.eos_token_id
    ids = set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def _generate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, jobs: list[_Job]) -> list[Completion]:
    """Generate every job (same sampling options) in one left-padded batch."""
    import torch

    conversations: list[Any] = [j.request.messages for j in jobs]  # OpenAI messages, as templates take them
    texts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    width = enc["input_ids"].shape[1]
    limit = model.config.max_position_embeddings
    if width + 1 > limit:
        raise InvalidInput(f"the prompt of {width} tokens fills the model's {limit} positions", field="messages")
    max_new = min(max(j.max_tokens for j in jobs), limit - width)
    first = jobs[0].request
    temperature = 1.0 if first.temperature is None else first.temperature
    sampling: dict[str, Any] = {"do_sample": False}
    if temperature > 0:
        sampling = {"do_sample": True, "temperature": temperature, "top_p": first.top_p or 1.0}
        if first.seed is not None:
            torch.manual_seed(first.seed)
    with torch.no_grad():
        out = model.generate(  # type: ignore[operator]
            **enc, max_new_tokens=max_new, pad_token_id=tokenizer.pad_token_id, **sampling
        )
    eos = _eos_ids(model, tokenizer)
    prompt_lengths = enc["attention_mask"].sum(dim=1).tolist()
    return [
        _completion(tokenizer, out[i, width:].tolist(), job.max_tokens, eos, prompt_lengths[i], len(jobs))
        for i, job in enumerate(jobs)
    ]


def _completion(
    tokenizer: PreTrainedTokenizerBase, ids: list[int], max_tokens: int, eos: set[int], prompt_tokens: int, batch: int
) -> Completion:
    """Cut one row of new tokens at its end-of-sequence or its own limit; split it into deltas."""
    stop = next((i for i, t in enumerate(ids) if t in eos), None)
    finish: FinishReason = "stop" if stop is not None and stop < max_tokens else "length"
    kept = ids[: min(max_tokens, len(ids) if stop is None else stop)]
    pieces, before = [], ""
    for n in range(1, len(kept) + 1):  # decode prefixes so multi-token characters stay whole
        text = str(tokenizer.decode(kept[:n], skip_special_tokens=True))
        if len(text) > len(before) and text.startswith(before) and not text.endswith("\ufffd"):
            pieces.append(text[len(before) :])
            before = text
    text = str(tokenizer.decode(kept, skip_special_tokens=True))
    if text != before:
        pieces.append(text[len(before) :] if text.startswith(before) else text)
    return Completion(
        text=text,
        pieces=pieces,
        finish_reason=finish,
        prompt_tokens=prompt_tokens,
        completion_tokens=len(kept),
        batch_size=batch,
    )


class LocalBackend:
    """Serve registered causal-lm models with transformers, one worker thread per model."""

    def __init__(self, settings: GatewaySettings) -> None:
        self._settings = settings
        self._workers: dict[str, _ModelWorker] = {}
        self._lock = threading.Lock()

    async def complete(self, route: Route, request: ChatRequest) -> Completion:
        """Generate a completion on the route's model, batched with concurrent requests."""
        assert route.path is not None
        with self._lock:
            worker = self._workers.get(route.path)
            if worker is None:
                worker = self._workers[route.path] = _ModelWorker(Path(route.path), self._settings)
        return await asyncio.wrap_future(worker.submit(request))

    def close(self) -> None:
        """Stop every model's worker."""
        with self._lock:
            workers, self._workers = list(self._workers.values()), {}
        for worker in workers:
            worker.close()


# --- the OpenAI-compatible upstream ---------------------------------------------------------


class UpstreamBackend:
    """Forward requests to an OpenAI-compatible server (one retry on connection errors)."""

    def __init__(self, settings: GatewaySettings, *, api_key: str | None = None) -> None:
        self._url = (settings.upstream_url or "").rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            timeout=settings.upstream_timeout_seconds,
            headers=headers,
            transport=httpx.AsyncHTTPTransport(retries=1),  # retries connection failures only
        )

    async def complete(self, route: Route, request: ChatRequest) -> Completion:
        """Call the upstream's /chat/completions (never streaming) and read its first choice."""
        body = request.model_dump(exclude_none=True) | {"stream": False}
        body.pop("stream_options", None)
        url = f"{self._url}/chat/completions"
        try:
            reply = await self._client.post(url, json=body)
        except httpx.HTTPError as exc:
            raise UpstreamFailed(f"upstream {url} failed: {type(exc).__name__}: {exc}", field="model") from None
        if reply.status_code >= 400:
            message = _upstream_message(reply)
            raise UpstreamFailed(f"upstream {url} answered {reply.status_code}: {message}", field="model")
        return _read_upstream(url, reply)

    async def stream(self, route: Route, request: ChatRequest) -> AsyncIterator[dict[str, Any]]:
        """Open a streaming call (usage included) and return its chunks; raise UpstreamFailed if it fails."""
        body = request.model_dump(exclude_none=True) | {"stream": True, "stream_options": {"include_usage": True}}
        url = f"{self._url}/chat/completions"
        try:
            reply = await self._client.send(self._client.build_request("POST", url, json=body), stream=True)
        except httpx.HTTPError as exc:
            raise UpstreamFailed(f"upstream {url} failed: {type(exc).__name__}: {exc}", field="model") from None
        if reply.status_code >= 400:
            await reply.aread()
            await reply.aclose()
            raise UpstreamFailed(
                f"upstream {url} answered {reply.status_code}: {_upstream_message(reply)}", field="model"
            )
        return _sse_events(url, reply)

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()


async def _sse_events(url: str, reply: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """Yield the JSON objects of an upstream's ``data:`` lines until ``[DONE]``."""
    try:
        async for line in reply.aiter_lines():
            data = line.removeprefix("data:").strip()
            if not line.startswith("data:") or not data:
                continue
            if data == "[DONE]":
                return
            try:
                yield orjson.loads(data)
            except orjson.JSONDecodeError:
                raise UpstreamFailed(f"upstream {url} sent a chunk that is not JSON: {data[:200]}") from None
    except httpx.HTTPError as exc:
        raise UpstreamFailed(f"upstream {url} broke off the stream: {type(exc).__name__}: {exc}") from None
    finally:
        await reply.aclose()


def _upstream_message(reply: httpx.Response) -> str:
    try:
        error = reply.json().get("error")
    except ValueError:
        return reply.text[:500] or reply.reason_phrase
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    return str(error or reply.text[:500])


def _read_upstream(url: str, reply: httpx.Response) -> Completion:
    try:
        data = reply.json()
        choice = data["choices"][0]
        text = choice["message"].get("content") or ""
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise UpstreamFailed(f"upstream {url} sent no chat completion: {reply.text[:300]}", field="model") from None
    usage = data.get("usage") or {}
    finish = "length" if choice.get("finish_reason") == "length" else "stop"
    return Completion(
        text=text,
        pieces=[text] if text else [],
        finish_reason=finish,
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
    )


# --- the gateway ----------------------------------------------------------------------------


class Gateway:
    """Resolve, serve and log chat completions for one project."""

    def __init__(self, project: Project, ingestor: Ingestor, *, upstream_api_key: str | None = None) -> None:
        self._project = project
        self._settings = project.settings.gateway
        self._ingestor = ingestor
        self._local = LocalBackend(self._settings)
        self._upstream = (
            UpstreamBackend(self._settings, api_key=upstream_api_key) if self._settings.upstream_url else None
        )
        self._running: tuple[float, list[experiments.Experiment]] = (0.0, [])

    def _running_experiments(self) -> list[experiments.Experiment]:
        # read at most once a second: a start or stop takes effect within a second, not per request
        checked, found = self._running
        if time.monotonic() - checked > 1.0:
            found = experiments.list_experiments(self._project, state="running")
            self._running = (time.monotonic(), found)
        return found

    def assign(self, requested: str, unit: str, cohort: str | None) -> tuple[str, Assignment | None]:
        """Return the model to serve and the experiment decision, if a running experiment covers the request.

        An experiment covers a request that names the experiment or its control's model, from a targeted
        cohort (no targeting: everyone); the variant is a sticky hash of (experiment, ``unit``).
        """
        for experiment in self._running_experiments():
            config = experiment.config
            if requested not in (config.name, config.variants[0].model):
                continue
            if config.cohorts and cohort not in config.cohorts:
                continue
            variant, probability = experiments.assign(experiment, unit)
            model = next(v.model for v in config.variants if v.name == variant)
            return model, Assignment(experiment=config.name, variant=variant, probability=probability)
        return requested, None

    def resolve(self, model: str) -> Route:
        """Return where ``model`` is served: a registered causal-lm, else a configured upstream name."""
        record = find_model(self._project, model)
        if record is not None and record.kind == "causal-lm":
            return Route(model=record.name, backend="local", path=record.path)
        if self._upstream is not None and model in self._settings.upstream_models:
            return Route(model=model, backend="openai")
        raise NotFound(
            f"no model {model!r}; GET /v1/models lists what this gateway serves "
            "('posttrain models register' or setting gateway.upstream_models adds one)",
            field="model",
        )

    def models(self) -> list[dict[str, Any]]:
        """Return the served models in OpenAI's ``/v1/models`` format."""
        local = [
            {"id": m.name, "object": "model", "created": int(m.created_at.timestamp()), "owned_by": "posttrain"}
            for m in list_models(self._project)
            if m.kind == "causal-lm"
        ]
        upstream = self._settings.upstream_models if self._upstream is not None else []
        return local + [{"id": name, "object": "model", "created": 0, "owned_by": "upstream"} for name in upstream]

    def _start(self, request: ChatRequest, user: str | None, cohort: str | None) -> _Call:
        """Mint the interaction id, check who the request is for, and resolve its model."""
        metadata_cohort = (request.metadata or {}).get("cohort")
        cohort = cohort or (str(metadata_cohort) if metadata_cohort is not None else None)
        for field, value in [("X-Posttrain-User", user), ("X-Posttrain-Cohort", cohort)]:
            if value is not None and len(value) > 512:
                raise InvalidInput(f"{field} is {len(value)} characters; the limit is 512", field=field)
        user = user or request.user
        interaction_id = new_id()
        model, assignment = self.assign(request.model, user or interaction_id, cohort)
        call = _Call(self.resolve(model), request, user=user, cohort=cohort, interaction_id=interaction_id)
        call.assignment = assignment
        return call

    async def complete(self, request: ChatRequest, *, user: str | None = None, cohort: str | None = None) -> Served:
        """Serve one request and log it as an interaction (its commit is not awaited)."""
        call = self._start(request, user, cohort)
        if call.route.backend == "local":
            completion = await self._local.complete(call.route, request)
        else:
            assert self._upstream is not None
            completion = await self._upstream.complete(call.route, request)
        self._log(call, completion)
        return call.served(completion)

    async def stream(
        self, request: ChatRequest, *, user: str | None = None, cohort: str | None = None
    ) -> tuple[str, AsyncIterator[dict[str, Any]]]:
        """Start serving one request as ``chat.completion.chunk`` objects; return the interaction id and them.

        A local model's answer is generated (batched) before the first chunk; an upstream's chunks
        are relayed as they come. Errors before the first chunk raise here, so they keep their status.
        """
        include_usage = bool((request.stream_options or {}).get("include_usage"))
        call = self._start(request, user, cohort)
        if call.route.backend == "openai":
            assert self._upstream is not None
            events = await self._upstream.stream(call.route, request)
            return call.interaction_id, self._relay(call, events, include_usage)
        completion = await self._local.complete(call.route, request)
        self._log(call, completion)
        return call.interaction_id, _aiter(completion_chunks(call.served(completion), include_usage=include_usage))

    async def _relay(
        self, call: _Call, events: AsyncIterator[dict[str, Any]], include_usage: bool
    ) -> AsyncIterator[dict[str, Any]]:
        """Pass an upstream's chunks on under this interaction's id; log what was said once it ends."""
        text: list[str] = []
        finish, first = "incomplete", True
        usage: dict[str, Any] = {}
        try:
            async for event in events:
                usage = event.get("usage") or usage
                for choice in event.get("choices") or []:
                    text.append((choice.get("delta") or {}).get("content") or "")
                    finish = choice.get("finish_reason") or finish
                if not event.get("choices") and not include_usage:
                    continue  # the usage chunk the gateway asked for, not the client
                event = event | {"id": f"chatcmpl-{call.interaction_id}", "model": call.route.model}
                if first:
                    event["posttrain_interaction_id"], first = call.interaction_id, False
                yield event
        finally:  # a client that disconnects still leaves what it was sent in the log
            completion = Completion(
                text="".join(text),
                pieces=[],
                finish_reason=finish,
                prompt_tokens=usage.get("prompt_tokens"),
                completion_tokens=usage.get("completion_tokens"),
            )
            self._log(call, completion)

    def _log(self, call: _Call, completion: Completion) -> None:
        interaction_id, request, route = call.interaction_id, call.request, call.route
        metadata = dict(request.metadata or {})
        event = {
            "id": interaction_id,
            "user_id": call.user,
            "cohort": call.cohort,
            "messages": request.messages,
            "response": completion.text,
            "model": route.model,
            "latency_ms": round((time.perf_counter() - call.started) * 1000, 3),
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
            "tags": ["gateway"],
            "metadata": metadata | _serving(route, completion),
        }
        if call.assignment is not None:
            event |= {
                "experiment": call.assignment.experiment,
                "variant": call.assignment.variant,
                "assignment_prob": call.assignment.probability,
            }
        results, rows = capture.validate_events("interactions", [event], self._project.settings.capture)
        if results[0] is not None:
            log.warning("interaction %s not logged: %s", interaction_id, results[0].error)
            return
        try:
            future = self._ingestor.submit("interactions", [row | {"source": "gateway"} for _, row in rows])
        except PosttrainError as exc:  # the user still gets the answer; the log says what was lost
            log.warning("interaction %s not logged: %s", interaction_id, exc)
            return
        future.add_done_callback(_warn_on_failure(interaction_id))

    async def close(self) -> None:
        """Stop the local workers and close the upstream's connections."""
        await asyncio.to_thread(self._local.close)
        if self._upstream is not None:
            await self._upstream.close()


class _Call:
    """One request on its way through the gateway: its interaction id, route and clock."""

    def __init__(
        self, route: Route, request: ChatRequest, *, user: str | None, cohort: str | None, interaction_id: str
    ) -> None:
        self.interaction_id, self.started = interaction_id, time.perf_counter()
        self.route, self.request, self.user, self.cohort = route, request, user, cohort
        self.assignment: Assignment | None = None

    def served(self, completion: Completion) -> Served:
        """Return the completion as served under this call's interaction id."""
        return Served(
            interaction_id=self.interaction_id, model=self.route.model, created=int(time.time()), completion=completion
        )


async def _aiter(items: Iterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    for item in items:
        yield item


def _serving(route: Route, completion: Completion) -> dict[str, Any]:
    """Return how a request was served, kept in the interaction's metadata."""
    served = {"backend": route.backend, "finish_reason": completion.finish_reason}
    return served | ({"batch_size": completion.batch_size} if completion.batch_size is not None else {})


def _warn_on_failure(interaction_id: str) -> Callable[[Future[list[str]]], None]:
    def check(future: Future[list[str]]) -> None:
        if (exc := future.exception()) is not None:
            log.warning("interaction %s not stored: %s", interaction_id, exc)

    return check


# --- OpenAI's wire format -------------------------------------------------------------------


def completion_body(served: Served) -> dict[str, Any]:
    """Return a ``chat.completion`` object."""
    c = served.completion
    return {
        "id": f"chatcmpl-{served.interaction_id}",
        "object": "chat.completion",
        "created": served.created,
        "model": served.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": c.text},
                "finish_reason": c.finish_reason,
                "logprobs": None,
            }
        ],
        "usage": _usage(c),
        "posttrain_interaction_id": served.interaction_id,
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
