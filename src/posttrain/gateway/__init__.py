"""The OpenAI-compatible gateway: route a request to a model, serve it, log the interaction.

A request's user is the ``X-Posttrain-User`` header or the body's ``user``; its cohort is the
``X-Posttrain-Cohort`` header, else ``metadata.cohort``, else the first cohort rule its
``metadata`` satisfies (``posttrain.routing``). Then, first match wins:

1. a **route** for (cohort, requested model) names a model, or an experiment: a running one
   assigns the variant; a promoted one serves its winner; any other serves its control;
2. else a **running experiment** covers a request that names it or its control's model, from a
   targeted cohort; inside it a sticky hash of (experiment, user) picks the variant by share;
3. else the requested model itself: a registered causal-lm on the ``local`` backend
   (``posttrain.gateway.local``), or a name in ``gateway.upstream_models`` on the ``openai``
   backend (``posttrain.gateway.upstream``).

Side-by-side (``X-Posttrain-Side-By-Side: true``): one request is answered by two variants of the
experiment that covers it, in random order, as two choices, each logged as its own interaction
with a shared ``metadata.pair_id``; a ``choice`` feedback on either decides the pair.

Every completion is logged as an interaction (model, cohort, route, experiment, variant,
assignment probability, latency, tokens) through the server's ``Ingestor`` without waiting for
its commit. Routing state (routes, cohort rules, experiments, models) is re-read at most once a
second, so changes take effect within a second without a database read per request.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from posttrain import capture, experiments, routing
from posttrain.errors import InvalidInput, NotFound, PosttrainError, UpstreamFailed
from posttrain.gateway.local import LocalBackend
from posttrain.gateway.upstream import UpstreamBackend
from posttrain.gateway.wire import (
    ChatRequest,
    Completion,
    Served,
    completion_body,
    completion_chunks,
    openai_error,
    pair_body,
    parse_request,
)
from posttrain.ids import new_id
from posttrain.models.registry import list_models
from posttrain.project import Project
from posttrain.records import ModelRecord

if TYPE_CHECKING:
    from posttrain.capture import Ingestor

__all__ = [
    "Assignment",
    "ChatRequest",
    "Completion",
    "Gateway",
    "Route",
    "Served",
    "UpstreamFailed",
    "completion_body",
    "completion_chunks",
    "openai_error",
    "pair_body",
    "parse_request",
]

log = logging.getLogger("posttrain.gateway")

Backend = Literal["local", "openai"]
SIDE_BY_SIDE_HEADER = "X-Posttrain-Side-By-Side"


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


class _State:
    """What routing reads, refreshed at most once a second."""

    def __init__(self, project: Project) -> None:
        self.table = routing.table(project)
        self.experiments = {e.name: e for e in experiments.list_experiments(project, with_analyses=False)}
        self.running = [e for e in self.experiments.values() if e.state == "running"]
        self.models: dict[str, ModelRecord] = {m.name: m for m in list_models(project)}
        self.at = time.monotonic()


class Gateway:
    """Route, serve and log chat completions for one project."""

    def __init__(self, project: Project, ingestor: Ingestor, *, upstream_api_key: str | None = None) -> None:
        self._project = project
        self._settings = project.settings.gateway
        self._ingestor = ingestor
        self._local = LocalBackend(self._settings)
        self._upstream = (
            UpstreamBackend(self._settings, api_key=upstream_api_key) if self._settings.upstream_url else None
        )
        self._cached: _State | None = None
        self._rebuilding = threading.Event()

    def _state(self) -> _State:
        """Return the routing state; past a second old it is rebuilt on a thread, never on the event loop."""
        state = self._cached
        if state is None:  # the first request, or right after refresh()
            state = self._cached = _State(self._project)
        elif time.monotonic() - state.at > 1.0 and not self._rebuilding.is_set():
            self._rebuilding.set()
            threading.Thread(target=self._rebuild, name="posttrain-gateway-state", daemon=True).start()
        return state

    def _rebuild(self) -> None:
        try:
            self._cached = _State(self._project)
        except Exception:  # keep serving from the last state; the next request tries again
            log.exception("re-reading the routing state failed")
        finally:
            self._rebuilding.clear()

    def refresh(self) -> None:
        """Re-read routes, experiments and models now (the API calls this after changing them)."""
        self._cached = _State(self._project)

    # --- routing ------------------------------------------------------------------------------

    def cohort_of(self, request: ChatRequest, header: str | None) -> str | None:
        """Return the request's cohort: the header, else ``metadata.cohort``, else the first matching rule."""
        if header:
            return header
        metadata = request.metadata or {}
        if metadata.get("cohort") is not None:
            return str(metadata["cohort"])
        return self._state().table.cohort_for(metadata)

    def _experiment_for(
        self, requested: str, cohort: str | None
    ) -> tuple[str, str | None, experiments.Experiment | None]:
        """Return (model, route name, covering running experiment) for a request before variant assignment."""
        state = self._state()
        target, experiment = requested, None
        route = state.table.route_for(cohort, requested)
        if route is not None and route.experiment is not None:
            found = state.experiments.get(route.experiment)
            if found is None:
                raise NotFound(f"route {route.name!r} names experiment {route.experiment!r}, which does not exist",
                               field="model")  # fmt: skip
            targeted = not found.config.cohorts or cohort in found.config.cohorts
            if found.state == "running" and targeted:
                return found.config.control.model, route.name, found
            winner = found.decision.variant if found.state == "promoted" and found.decision else None
            models = {v.name: v.model for v in found.config.variants}
            return models.get(winner or "", found.config.control.model), route.name, None
        if route is not None and route.model is not None:
            target = route.model
        for candidate in state.running:
            config = candidate.config
            if target in (config.name, config.control.model) and (not config.cohorts or cohort in config.cohorts):
                experiment = candidate
                break
        return target, None if route is None else route.name, experiment

    def assign(self, requested: str, unit: str, cohort: str | None) -> tuple[str, str | None, Assignment | None]:
        """Return the model to serve, the route taken and the experiment decision for one request."""
        model, route, experiment = self._experiment_for(requested, cohort)
        if experiment is None:
            return model, route, None
        variant, probability = experiments.assign(experiment, unit)
        model = next(v.model for v in experiment.config.variants if v.name == variant)
        return model, route, Assignment(experiment=experiment.name, variant=variant, probability=probability)

    def resolve(self, model: str) -> Route:
        """Return where ``model`` is served: a registered causal-lm, else a configured upstream name."""
        state = self._state()
        record = state.models.get(model)
        upstream = self._upstream is not None and model in self._settings.upstream_models
        if record is None and not upstream and time.monotonic() - state.at > 0.1:  # registered just now?
            self.refresh()
            record = self._state().models.get(model)
        if record is not None and record.kind == "causal-lm":
            return Route(model=record.name, backend="local", path=record.path)
        if upstream:
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

    # --- serving ------------------------------------------------------------------------------

    def _who(self, request: ChatRequest, user: str | None, cohort: str | None) -> tuple[str | None, str | None]:
        for field, value in [("X-Posttrain-User", user), ("X-Posttrain-Cohort", cohort)]:
            if value is not None and len(value) > 512:
                raise InvalidInput(f"{field} is {len(value)} characters; the limit is 512", field=field)
        resolved = self.cohort_of(request, cohort)
        if resolved is not None and len(resolved) > 512:  # from metadata.cohort: the header was checked
            raise InvalidInput(f"metadata.cohort is {len(resolved)} characters; the limit is 512",
                               field="metadata.cohort")  # fmt: skip
        return user or request.user, resolved

    def _start(self, request: ChatRequest, user: str | None, cohort: str | None) -> _Call:
        """Mint the interaction id, find who the request is for, and route it."""
        user, cohort = self._who(request, user, cohort)
        interaction_id = new_id()
        model, route_name, assignment = self.assign(request.model, user or interaction_id, cohort)
        call = _Call(self.resolve(model), request, user=user, cohort=cohort, interaction_id=interaction_id)
        call.assignment, call.route_name = assignment, route_name
        return call

    async def _run(self, call: _Call) -> Completion:
        if call.route.backend == "local":
            assert call.route.path is not None
            return await self._local.complete(call.route.path, call.request)
        assert self._upstream is not None
        return await self._upstream.complete(call.upstream_request())

    async def complete(
        self, request: ChatRequest, *, user: str | None = None, cohort: str | None = None, tags: Sequence[str] = ()
    ) -> Served:
        """Serve one request and log it as an interaction tagged gateway and ``tags`` (its commit is not awaited)."""
        call = self._start(request, user, cohort)
        call.tags = [t for t in tags if t != "gateway"]
        completion = await self._run(call)
        self._log(call, completion)
        return call.served(completion)

    async def side_by_side(
        self, request: ChatRequest, *, user: str | None = None, cohort: str | None = None
    ) -> tuple[str, list[Served]]:
        """Answer one request with two variants of the experiment covering it, in random order.

        Returns the pair id and the two served answers, each logged as its own interaction.
        """
        user, cohort = self._who(request, user, cohort)
        _model, route_name, experiment = self._experiment_for(request.model, cohort)
        if experiment is None:
            raise InvalidInput(
                f"side-by-side needs a running experiment covering model {request.model!r}"
                + (f" for cohort {cohort!r}" if cohort else "")
                + "; start one ('posttrain experiments start') or drop the header",
                field=SIDE_BY_SIDE_HEADER,
            )
        pair_id = new_id()
        variants = experiment.config.variants
        pair = random.Random(pair_id).sample(variants, 2)  # a random pair, in random order
        probability = 2 / (len(variants) * (len(variants) - 1))
        calls = []
        for position, variant in enumerate(pair):
            call = _Call(self.resolve(variant.model), request, user=user, cohort=cohort, interaction_id=new_id())
            call.route_name = route_name
            call.assignment = Assignment(experiment=experiment.name, variant=variant.name, probability=probability)
            call.extra = {"pair_id": pair_id, "position": position, "side_by_side": True}
            calls.append(call)
        completions = await asyncio.gather(*(self._run(c) for c in calls))
        for call, completion in zip(calls, completions, strict=True):
            self._log(call, completion)
        return pair_id, [c.served(done) for c, done in zip(calls, completions, strict=True)]

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
            events = await self._upstream.stream(call.upstream_request())
            return call.interaction_id, self._relay(call, events, include_usage)
        completion = await self._run(call)
        self._log(call, completion)
        return call.interaction_id, _aiter(completion_chunks(call.served(completion), include_usage=include_usage))

    async def _relay(
        self, call: _Call, events: AsyncIterator[dict[str, Any]], include_usage: bool
    ) -> AsyncIterator[dict[str, Any]]:
        """Pass an upstream's chunks on under this interaction's id; log what was said once it ends."""
        said = _Said()
        first = True
        try:
            async for event in events:
                said.add(event)
                if not event.get("choices") and not include_usage:
                    continue  # the usage chunk the gateway asked for, not the client
                event = event | {"id": f"chatcmpl-{call.interaction_id}", "model": call.route.model}
                if first:
                    event["posttrain_interaction_id"], first = call.interaction_id, False
                yield event
        finally:  # a client that disconnects still leaves what it was sent in the log
            await events.aclose()  # type: ignore[attr-defined]  # closes the upstream's response too
            self._log(call, said.completion())

    def _log(self, call: _Call, completion: Completion) -> None:
        interaction_id, request, route = call.interaction_id, call.request, call.route
        metadata = dict(request.metadata or {}) | call.extra
        if call.route_name is not None:
            metadata["route"] = call.route_name
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
            "tags": ["gateway", *call.tags],
            "metadata": metadata | _serving(route, completion) | _answer(completion),
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
    """One request on its way through the gateway: its interaction id, route, decisions and clock."""

    def __init__(
        self, route: Route, request: ChatRequest, *, user: str | None, cohort: str | None, interaction_id: str
    ) -> None:
        self.interaction_id, self.started = interaction_id, time.perf_counter()
        self.route, self.request, self.user, self.cohort = route, request, user, cohort
        self.assignment: Assignment | None = None
        self.route_name: str | None = None
        self.extra: dict[str, Any] = {}
        self.tags: list[str] = []  # logged after 'gateway' (the console's playground adds 'playground')

    def upstream_request(self) -> ChatRequest:
        """Return the request as the upstream must see it: naming the model it was routed to."""
        return (
            self.request
            if self.request.model == self.route.model
            else self.request.model_copy(update={"model": self.route.model})
        )

    def served(self, completion: Completion) -> Served:
        """Return the completion as served under this call's interaction id."""
        variant = self.assignment.variant if self.assignment else None
        return Served(interaction_id=self.interaction_id, model=self.route.model, created=int(time.time()),
                      completion=completion, variant=variant)  # fmt: skip


async def _aiter(items: Iterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    for item in items:
        yield item


def _serving(route: Route, completion: Completion) -> dict[str, Any]:
    """Return how a request was served, kept in the interaction's metadata."""
    served = {"backend": route.backend, "finish_reason": completion.finish_reason}
    return served | ({"batch_size": completion.batch_size} if completion.batch_size is not None else {})


def _answer(completion: Completion) -> dict[str, Any]:
    """Return what the response text cannot hold, kept in the metadata: the whole message, more choices."""
    kept: dict[str, Any] = {}
    message = completion.message
    if set(message) - {"role", "content"} or not isinstance(message.get("content"), str | None):
        kept["response_message"] = message  # tool calls, refusal, audio…: the message as served
    if completion.choices and len(completion.choices) > 1:
        kept["choices"] = completion.served_choices()[1:]
    if completion.usage:
        kept["usage"] = completion.usage
    return kept


class _Said:
    """What an upstream's stream said in its first choice: text, refusal and tool calls, merged from deltas."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.refusal: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish = "incomplete"
        self.usage: dict[str, Any] = {}

    def add(self, event: dict[str, Any]) -> None:
        """Take in one chunk."""
        self.usage = event.get("usage") or self.usage
        for choice in event.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue  # n > 1 streams: the first choice is the response
            delta = choice.get("delta") or {}
            self.text.append(delta.get("content") or "")
            self.refusal.append(delta.get("refusal") or "")
            for part in delta.get("tool_calls") or []:
                self._merge(part)
            self.finish = choice.get("finish_reason") or self.finish

    def _merge(self, part: dict[str, Any]) -> None:
        """Join a tool call's deltas: its id, type and name come once, its arguments in pieces."""
        call = self.calls.setdefault(part.get("index", len(self.calls)), {"function": {"name": "", "arguments": ""}})
        for key in ("id", "type"):
            if part.get(key):
                call[key] = part[key]
        function = part.get("function") or {}
        call["function"]["name"] += function.get("name") or ""
        call["function"]["arguments"] += function.get("arguments") or ""

    def completion(self) -> Completion:
        """Return what was said as a completion; a message with tool calls or a refusal is kept whole."""
        text, refusal = "".join(self.text), "".join(self.refusal)
        message: dict[str, Any] = {"role": "assistant", "content": text or (None if self.calls else "")}
        if refusal:
            message["refusal"] = refusal
        if self.calls:
            message["tool_calls"] = [{"type": "function"} | self.calls[i] for i in sorted(self.calls)]
        choices = [{"message": message, "finish_reason": self.finish}] if refusal or self.calls else None
        tokens = {"prompt_tokens": self.usage.get("prompt_tokens"),
                  "completion_tokens": self.usage.get("completion_tokens")}  # fmt: skip
        return Completion(text=text, pieces=[], finish_reason=self.finish, choices=choices, usage=self.usage or None,
                          **tokens)  # fmt: skip


def _warn_on_failure(interaction_id: str) -> Callable[[Future[list[str]]], None]:
    def check(future: Future[list[str]]) -> None:
        if (exc := future.exception()) is not None:
            log.warning("interaction %s not stored: %s", interaction_id, exc)

    return check
