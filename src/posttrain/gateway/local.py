"""The local backend: registered causal-lm models served with transformers, in batches.

Requests for one model that arrive within ``gateway.batch_window_ms`` are generated together in one
left-padded ``generate`` call on that model's worker thread. torch and transformers are imported
only on those threads.

A request asking what these models cannot do (``tools``, a ``response_format`` other than text,
``logprobs``) is refused, naming the field; ``stop`` cuts the answer before the first stop string,
and ``n`` choices are generated as ``n`` requests of one batch.

A request fails alone, never its batch: its messages are checked before it is queued (text parts
are joined; any other part is refused, as these models read text only), its prompt is templated
and measured on its own, and a batch whose generation fails is generated again one request at a
time. A temperature below 1e-5 is served greedy, as vLLM does (dividing logits by it overflows).
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

from posttrain.errors import InvalidInput, PosttrainError
from posttrain.gateway.wire import ChatRequest, Completion, FinishReason
from posttrain.records import Message
from posttrain.settings import GatewaySettings

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

GREEDY_BELOW = 1e-5


def text_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Return the messages as a text-only model reads them: text parts joined by newlines, no content as "".

    Raises InvalidInput naming the first part that is not text (``messages.0.content.1.type``).
    """
    return [_text_message(i, m) for i, m in enumerate(messages)]


def _text_message(i: int, message: Message) -> dict[str, Any]:
    content = message.get("content")
    if isinstance(content, str):
        return dict(message)
    texts = []
    for j, part in enumerate(content or []):
        if part["type"] != "text":
            field = f"messages.{i}.content.{j}.type"
            raise InvalidInput(f"{field}: this model reads text only; it cannot take a part of type {part['type']!r} "
                               "(send it to a model that does, or send text parts)", field=field)  # fmt: skip
        texts.append(part["text"])  # type: ignore[typeddict-item]  # a "text" part is a TextPart
    return dict(message) | {"content": "\n".join(texts)}


def refuse_unsupported(request: ChatRequest) -> None:
    """Raise InvalidInput naming the first option a local model cannot honour (tools, response_format, logprobs)."""
    extra = request.model_extra or {}
    response_format = extra.get("response_format")
    refused = {
        "tools": bool(extra.get("tools")) or bool(extra.get("functions")),
        "response_format": response_format is not None and response_format != {"type": "text"},
        "logprobs": bool(extra.get("logprobs")),
        "top_logprobs": extra.get("top_logprobs") is not None,
    }
    for field, asked in refused.items():
        if asked:
            raise InvalidInput(f"{field}: a model served locally cannot honour it; drop {field}, or ask a model "
                               "served upstream (gateway.upstream_models)", field=field)  # fmt: skip


def cut_at_stop(completion: Completion, stops: Sequence[str]) -> Completion:
    """Return the completion ended before its first stop string (finish reason "stop"), if one occurs."""
    found = [i for i in (completion.text.find(s) for s in stops) if i >= 0]
    if not found:
        return completion
    text, pieces, length = completion.text[: min(found)], [], 0
    for piece in completion.pieces:
        if length + len(piece) >= len(text):
            pieces.append(piece[: len(text) - length])
            break
        pieces.append(piece)
        length += len(piece)
    return completion.model_copy(update={"text": text, "pieces": [p for p in pieces if p], "finish_reason": "stop"})


def _together(completions: list[Completion]) -> Completion:
    """Return ``n`` completions of one request as one: the first, with every one as a choice."""
    choices = [{"message": {"role": "assistant", "content": c.text}, "finish_reason": c.finish_reason}
               for c in completions]  # fmt: skip
    tokens = sum(c.completion_tokens or 0 for c in completions)
    return completions[0].model_copy(update={"choices": choices, "completion_tokens": tokens})


class _Job:
    """One request waiting on a model's worker thread."""

    def __init__(self, request: ChatRequest, messages: list[dict[str, Any]], max_tokens: int) -> None:
        self.request = request
        self.messages = messages
        self.max_tokens = max_tokens
        self.prompt: list[int] = []
        self.future: Future[Completion] = Future()

    @property
    def temperature(self) -> float:
        """Return the sampling temperature, 0 for greedy."""
        temperature = 1.0 if self.request.temperature is None else self.request.temperature
        return 0.0 if temperature < GREEDY_BELOW else temperature

    @property
    def group(self) -> tuple[Any, ...]:
        """Return the key of the requests this one may be generated with (same sampling)."""
        if self.temperature == 0:
            return ("greedy",)
        if self.request.seed is not None:  # a seeded sample is reproducible only on its own
            return ("seeded", id(self))
        return ("sample", self.temperature, self.request.top_p or 1.0)


_GENERATE_LOCK = threading.Lock()  # torch's RNG is global: seeding and sampling must not interleave


class _Loaded:
    """A loaded model, its tokenizer and what bounds a prompt for it."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.positions: int = model.config.max_position_embeddings
        # No token spells more characters than the longest in the vocabulary, so a prompt longer
        # than positions * longest cannot fit: it is refused before it is tokenized.
        self.longest_token = max((len(t) for t in tokenizer.get_vocab()), default=1)

    def prepare(self, job: _Job) -> PosttrainError | None:
        """Template and tokenize one job's prompt into ``job.prompt``; return why it cannot be served, if so."""
        if job.request.limit is not None and job.request.limit >= self.positions:
            field = "max_tokens" if job.request.max_completion_tokens is None else "max_completion_tokens"
            return InvalidInput(f"{field}: {job.request.limit} tokens and a prompt cannot fit this model's "
                                f"{self.positions} positions; ask for fewer", field=field)  # fmt: skip
        try:
            text = self.tokenizer.apply_chat_template(job.messages, tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # a template refusing messages (jinja raises many kinds) refuses this request
            return InvalidInput(f"messages: the model's chat template cannot render them: {type(exc).__name__}: "
                                f"{exc}", field="messages")  # fmt: skip
        if len(text) > self.positions * self.longest_token:
            return InvalidInput(f"messages: a prompt of {len(text)} characters cannot fit the model's "
                                f"{self.positions} positions", field="messages")  # fmt: skip
        job.prompt = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(job.prompt) + 1 > self.positions:
            return InvalidInput(f"messages: the prompt of {len(job.prompt)} tokens fills the model's "
                                f"{self.positions} positions", field="messages")  # fmt: skip
        return None


class _ModelWorker:
    """Load one model once and generate its requests in batches on a daemon thread."""

    def __init__(self, path: Path, settings: GatewaySettings) -> None:
        self._path = path
        self._settings = settings
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._loaded: _Loaded | None = None
        self._thread = threading.Thread(target=self._run, name=f"posttrain-gateway-{path.name}", daemon=True)
        self._thread.start()

    def submit(self, request: ChatRequest, messages: list[dict[str, Any]]) -> Future[Completion]:
        """Queue a request (its messages already text only); the future resolves with its completion."""
        job = _Job(request, messages, request.limit or self._settings.default_max_tokens)
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

    def _load(self) -> _Loaded:
        if self._loaded is None:
            from posttrain.models.generation import load_causal_lm

            self._loaded = _Loaded(*load_causal_lm(self._path))
        return self._loaded

    def _serve(self, jobs: list[_Job]) -> None:
        try:
            loaded = self._load()
        except Exception as exc:  # the requests fail with the cause; the worker serves the next batch
            for job in jobs:
                job.future.set_exception(exc)
            return
        ready = []
        for job in jobs:
            if (refused := loaded.prepare(job)) is not None:
                job.future.set_exception(refused)
            else:
                ready.append(job)
        if ready:
            _generate_apart(loaded, ready)


def _generate_apart(loaded: _Loaded, jobs: list[_Job]) -> None:
    """Generate the jobs together; if that fails, one at a time, so that a bad one fails by itself.

    A job that fails alone while others of its batch are served is refused (400); when every one
    fails alone the cause is the model's, and each fails with it.
    """
    together = _attempt(loaded, jobs)
    if not isinstance(together, Exception):
        for job, completion in zip(jobs, together, strict=True):
            job.future.set_result(completion)
        return
    alone = [together] if len(jobs) == 1 else [_attempt(loaded, [job]) for job in jobs]
    served = any(not isinstance(outcome, Exception) for outcome in alone)
    for job, outcome in zip(jobs, alone, strict=True):
        if not isinstance(outcome, Exception):
            job.future.set_result(outcome[0])
        elif served and not isinstance(outcome, PosttrainError):
            job.future.set_exception(InvalidInput(
                f"messages: generating this request failed where the rest of its batch did not: "
                f"{type(outcome).__name__}: {outcome}", field="messages"))  # fmt: skip
        else:
            job.future.set_exception(outcome)


def _attempt(loaded: _Loaded, jobs: list[_Job]) -> list[Completion] | Exception:
    """Generate the jobs in one batch; return the failure rather than raise it, for the caller to assign."""
    try:
        with _GENERATE_LOCK:
            return _generate(loaded.model, loaded.tokenizer, jobs)
    except Exception as exc:  # not swallowed: _generate_apart fails the jobs with it
        return exc


def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    configured = model.generation_config.eos_token_id
    ids = set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def _generate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, jobs: list[_Job]) -> list[Completion]:
    """Generate every job (same sampling options, prompts tokenized) in one left-padded batch."""
    import torch

    enc = tokenizer.pad({"input_ids": [j.prompt for j in jobs]}, padding=True, return_tensors="pt")
    width = enc["input_ids"].shape[1]
    max_new = min(max(j.max_tokens for j in jobs), model.config.max_position_embeddings - width)
    first = jobs[0]
    sampling: dict[str, Any] = {"do_sample": False}
    if first.temperature > 0:
        sampling = {"do_sample": True, "temperature": first.temperature, "top_p": first.request.top_p or 1.0}
        if first.request.seed is not None:
            torch.manual_seed(first.request.seed)
    with torch.no_grad():
        out = model.generate(  # type: ignore[operator]
            **enc, max_new_tokens=max_new, pad_token_id=tokenizer.pad_token_id, **sampling
        )
    eos = _eos_ids(model, tokenizer)
    return [
        _completion(tokenizer, out[i, width:].tolist(), job.max_tokens, eos, len(job.prompt), len(jobs))
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

    async def complete(self, path: str, request: ChatRequest) -> Completion:
        """Generate a completion (``n`` choices) on the model in ``path``, batched with concurrent requests."""
        refuse_unsupported(request)  # refused here, before it can share a batch
        messages = text_messages(request.messages)
        with self._lock:
            worker = self._workers.get(path)
            if worker is None:
                worker = self._workers[path] = _ModelWorker(Path(path), self._settings)
        futures = [asyncio.wrap_future(worker.submit(request, messages)) for _ in range(request.n)]
        done = [cut_at_stop(c, request.stops) for c in await asyncio.gather(*futures)]
        return done[0] if len(done) == 1 else _together(done)

    def close(self) -> None:
        """Stop every model's worker."""
        with self._lock:
            workers, self._workers = list(self._workers.values()), {}
        for worker in workers:
            worker.close()
