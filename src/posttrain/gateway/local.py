"""The local backend: registered causal-lm models served with transformers, in batches.

Requests for one model that arrive within ``gateway.batch_window_ms`` are generated together in one
left-padded ``generate`` call on that model's worker thread. torch and transformers are imported
only on those threads.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

from posttrain.errors import InvalidInput
from posttrain.gateway.wire import ChatRequest, Completion, FinishReason
from posttrain.settings import GatewaySettings

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


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

    async def complete(self, path: str, request: ChatRequest) -> Completion:
        """Generate a completion on the model in ``path``, batched with concurrent requests."""
        with self._lock:
            worker = self._workers.get(path)
            if worker is None:
                worker = self._workers[path] = _ModelWorker(Path(path), self._settings)
        return await asyncio.wrap_future(worker.submit(request))

    def close(self) -> None:
        """Stop every model's worker."""
        with self._lock:
            workers, self._workers = list(self._workers.values()), {}
        for worker in workers:
            worker.close()
