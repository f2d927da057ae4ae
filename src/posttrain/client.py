"""The SDK: log interactions and feedback from an app without ever waiting on the network.

``Client`` (a background thread) and ``AsyncClient`` (a background asyncio task) share one
design. ``log_interaction`` and ``log_feedback`` mint the id and the timestamp, append the event
to a bounded in-memory outbox and return the id at once. The background sender posts batches to
the capture API and resends a failed request with the *same* ids, so the server stores each
event once and answers a resend with ``duplicate``.

What each answer of the server means to the sender:

    200, 207          settled: created and duplicate count in ``sent``, per-event errors in ``failed``
    413               the batch is halved and each half sent; a lone event too large is ``dropped``
    429               resent after Retry-After at the earliest
    5xx, no answer    resent with exponential backoff and jitter (``max_retries``, then ``dropped``)
    401, 403          fatal: ``last_error`` says why, everything pending is ``dropped``, sending stops
    any other 4xx     the batch is rejected and counted in ``failed``
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import email.utils
import functools
import logging
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Generator
from datetime import UTC, datetime
from typing import Any, NamedTuple, get_args

import httpx
import orjson

from posttrain import errors
from posttrain.ids import new_id
from posttrain.records import CaptureKind as Kind
from posttrain.records import Feedback, FeedbackKind, FeedbackSource, Interaction
from posttrain.version import __version__

__all__ = ["AsyncClient", "Client"]

logger = logging.getLogger(__name__)

_KINDS: tuple[Kind, ...] = ("interactions", "feedback")
_INTERACTION_FIELDS = frozenset(Interaction.model_fields) - {"messages", "response"}
_FEEDBACK_FIELDS = frozenset(Feedback.model_fields) - {"interaction_id", "kind", "value"}
_FEEDBACK_KINDS = frozenset(get_args(FeedbackKind))
_FEEDBACK_SOURCES = frozenset(get_args(FeedbackSource))
_FIRST_BACKOFF = 0.1  # seconds before the first resend; doubles each time up to max_backoff
_DROP_WARNING_EVERY = 10.0  # seconds between two "buffer full" warnings
_STOP_GRACE = 1.0  # seconds close() waits, after its flush, for a request in flight to end


class _Outbox:
    """Events waiting to be sent (bounded), the counters, and the state of delivery.

    Only the sender settles events, so every event is settled exactly once: as sent, failed
    or dropped. ``pending`` counts events accepted and not yet settled, in flight included.
    """

    def __init__(self, max_events: int, batch_size: int) -> None:
        self.max_events = max_events
        self.batch_size = batch_size
        self.queues: dict[Kind, deque[dict[str, Any]]] = {kind: deque() for kind in _KINDS}
        self.accepted = dict.fromkeys(_KINDS, 0)
        self.settled = dict.fromkeys(_KINDS, 0)
        self.pending = self.sent = self.failed = self.dropped = 0
        self.last_error: errors.PosttrainError | None = None
        self.accepting = True
        self.fatal = False
        self.changed = threading.Condition()
        self._turn = 0
        self._warned_at = -_DROP_WARNING_EVERY

    def add(self, kind: Kind, event: dict[str, Any]) -> bool:
        """Queue ``event``; return True when its queue just filled a batch."""
        with self.changed:
            if not self.accepting or self.pending >= self.max_events:
                self.dropped += 1
                self._warn_dropped()
                return False
            queue = self.queues[kind]
            queue.append(event)
            self.accepted[kind] += 1
            self.pending += 1
            return len(queue) == self.batch_size

    def _warn_dropped(self) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _DROP_WARNING_EVERY:
            self._warned_at = now
            full = f"max_buffer={self.max_events} is full"
            why = full if self.accepting else "the client is closed or stopped (see last_error)"
            logger.warning("posttrain: dropping new events, %s (%d dropped so far)", why, self.dropped)

    def take(self) -> tuple[Kind, list[dict[str, Any]]] | None:
        """Return the next batch to send, alternating between the kinds; None when all are empty."""
        with self.changed:
            for _ in _KINDS:
                kind = _KINDS[self._turn]
                self._turn = (self._turn + 1) % len(_KINDS)
                queue = self.queues[kind]
                if queue:
                    return kind, [queue.popleft() for _ in range(min(len(queue), self.batch_size))]
        return None

    def settle(self, kind: Kind, *, sent: int = 0, failed: int = 0, dropped: int = 0) -> None:
        """Record the outcome of events of ``kind`` that left the outbox."""
        with self.changed:
            self.sent += sent
            self.failed += failed
            self.dropped += dropped
            self.settled[kind] += sent + failed + dropped
            self.pending -= sent + failed + dropped
            self.changed.notify_all()

    def drop_pending(self) -> int:
        """Drop every event not yet settled, in flight included; return how many."""
        with self.changed:
            lost = self.pending
            for queue in self.queues.values():
                queue.clear()
            self.dropped += lost
            self.pending = 0
            self.settled = dict(self.accepted)
            self.changed.notify_all()
        return lost

    def halt(self, error: errors.PosttrainError) -> int:
        """Stop for good after a fatal error: accept nothing more, drop what is pending."""
        self.last_error = error
        with self.changed:
            self.fatal = True
            self.accepting = False
        return self.drop_pending()

    def stop_accepting(self) -> None:
        """Count every later event as dropped (the client is closing)."""
        with self.changed:
            self.accepting = False

    def mark(self) -> dict[Kind, int]:
        """Return how many events of each kind were accepted so far (a flush's target)."""
        with self.changed:
            return dict(self.accepted)

    def reached(self, target: dict[Kind, int]) -> bool:
        """Say whether every event up to ``target`` is settled."""
        return all(self.settled[kind] >= n for kind, n in target.items())

    def wait(self, target: dict[Kind, int], timeout: float | None) -> bool:
        """Block until ``target`` is reached; False on timeout or after a fatal error."""
        with self.changed:
            done = self.changed.wait_for(lambda: self.reached(target), timeout)
        return done and not self.fatal


# --- delivery of one batch, without I/O: the thread and the task drive the same steps --------


class _Post(NamedTuple):
    path: str
    body: bytes


class _Retry(NamedTuple):
    max_retries: int | None
    max_backoff: float


Reply = httpx.Response | httpx.TransportError | None
Step = _Post | float  # a request to send, or seconds to wait


def _deliver(outbox: _Outbox, kind: Kind, events: list[dict[str, Any]], retry: _Retry) -> Generator[Step, Reply, None]:
    """Deliver one batch: post it, halve it on 413, wait and resend it on 429, 5xx or no answer."""
    parts, attempt = [events], 0
    while parts:
        body, part = _encode(outbox, kind, parts.pop())
        if not part:
            continue
        reply = yield _Post(f"/api/capture/{kind}", body)
        status = reply.status_code if isinstance(reply, httpx.Response) else None
        if isinstance(reply, httpx.Response) and status in (200, 207):
            _settle_results(outbox, kind, part, reply)
            attempt = 0
        elif isinstance(reply, httpx.Response) and status == 413:
            _halve(outbox, kind, part, parts, reply)
        elif status in (401, 403):
            lost = outbox.halt(_error(reply))
            logger.error("posttrain: %s; the client stops sending (%d events dropped)", outbox.last_error, lost)
            return
        elif status is None or status == 429 or status >= 500:
            outbox.last_error = _error(reply)
            if retry.max_retries is not None and attempt >= retry.max_retries:
                _give_up(outbox, kind, part, attempt)
                continue
            attempt += 1
            parts.append(part)
            yield _delay(reply, attempt, retry.max_backoff)
        else:
            _reject(outbox, kind, part, _error(reply))


def _encode(outbox: _Outbox, kind: Kind, part: list[dict[str, Any]]) -> tuple[bytes, list[dict[str, Any]]]:
    """Return the request body and the events in it; an event that is not JSON is ``failed``."""
    try:
        return orjson.dumps({kind: part}), part
    except orjson.JSONEncodeError:
        pass
    good = []
    for event in part:
        try:
            orjson.dumps(event)
            good.append(event)
        except orjson.JSONEncodeError as exc:
            outbox.last_error = errors.InvalidInput(f"event {event.get('id')} is not JSON: {exc}")
            logger.warning("posttrain: %s; it is not sent", outbox.last_error)
            outbox.settle(kind, failed=1)
    return orjson.dumps({kind: good}), good


def _settle_results(outbox: _Outbox, kind: Kind, part: list[dict[str, Any]], reply: httpx.Response) -> None:
    try:
        results = reply.json()["results"]
        valid = isinstance(results, list) and len(results) == len(part)
        valid = valid and all(isinstance(r, dict) for r in results)
    except (ValueError, KeyError, TypeError):
        valid = False
    if not valid:
        _reject(outbox, kind, part, errors.PosttrainError(f"unexpected answer: {reply.text[:200]!r}"))
        return
    rejected = [r for r in results if r.get("status") not in ("created", "duplicate")]
    if rejected:
        first = rejected[0]
        outbox.last_error = errors.InvalidInput(f"{first.get('id')}: {first.get('error')}", field=first.get("field"))
        logger.warning(
            "posttrain: the server rejected %d of %d %s; first: %s",
            len(rejected),
            len(part),
            kind,
            outbox.last_error,
        )
    outbox.settle(kind, sent=len(part) - len(rejected), failed=len(rejected))


def _halve(
    outbox: _Outbox,
    kind: Kind,
    part: list[dict[str, Any]],
    parts: list[list[dict[str, Any]]],
    reply: httpx.Response,
) -> None:
    if len(part) > 1:
        middle = len(part) // 2
        parts.extend([part[middle:], part[:middle]])  # a stack: the first half goes first
        return
    outbox.last_error = _error(reply)
    logger.warning("posttrain: event %s is too large to send (%s); dropped", part[0].get("id"), outbox.last_error)
    outbox.settle(kind, dropped=1)


def _give_up(outbox: _Outbox, kind: Kind, part: list[dict[str, Any]], attempt: int) -> None:
    logger.error(
        "posttrain: %d %s dropped after %d retries (max_retries); last error: %s",
        len(part),
        kind,
        attempt,
        outbox.last_error,
    )
    outbox.settle(kind, dropped=len(part))


def _reject(outbox: _Outbox, kind: Kind, part: list[dict[str, Any]], error: errors.PosttrainError) -> None:
    outbox.last_error = error
    logger.error("posttrain: the server refused %d %s, they are not resent: %s", len(part), kind, error)
    outbox.settle(kind, failed=len(part))


def _error(reply: Reply) -> errors.PosttrainError:
    """Return the posttrain error a failed request stands for."""
    if not isinstance(reply, httpx.Response):
        return errors.Unavailable(f"cannot reach the posttrain server: {reply!r}")
    try:
        detail = reply.json()["error"]
        message, field = str(detail["message"]), detail.get("field")
    except (ValueError, KeyError, TypeError):
        message, field = reply.text[:200] or reply.reason_phrase, None
    if reply.status_code == 429:
        return errors.for_status(429, message, retry_after=_retry_after(reply))
    return errors.for_status(reply.status_code, f"{reply.status_code} from {reply.request.url}: {message}", field=field)


def _retry_after(reply: httpx.Response) -> float:
    value = reply.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 1.0
    return max(0.0, when.timestamp() - time.time())


def _delay(reply: Reply, attempt: int, cap: float) -> float:
    """Return seconds to wait before resend ``attempt``: backoff with jitter, Retry-After at least."""
    backoff = min(cap, _FIRST_BACKOFF * 2 ** min(attempt - 1, 30)) * random.uniform(0.5, 1.0)
    if isinstance(reply, httpx.Response) and reply.status_code == 429:
        return max(backoff, _retry_after(reply))
    return backoff


# --- the clients --------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _unknown(fields: dict[str, Any], allowed: frozenset[str]) -> errors.InvalidInput:
    names = ", ".join(sorted(set(fields) - allowed))
    return errors.InvalidInput(f"unknown field {names}; the fields are: {', '.join(sorted(allowed))}", field=names)


class _BaseClient:
    """What both clients share: the options, the hot path, the outbox and the counters."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        batch_size: int = 500,
        flush_interval: float = 0.2,
        max_buffer: int = 100_000,
        max_retries: int | None = None,
        max_backoff: float = 30.0,
        timeout: float = 10.0,
    ) -> None:
        """Start a client of the posttrain server at ``url`` that authenticates with ``api_key``.

        ``batch_size``: events per request at most. ``flush_interval``: seconds an event waits
        for its batch to fill at most. ``max_buffer``: events pending before new ones are
        dropped. ``max_retries``: resends of a failed request before its events are dropped
        (None: resend until it succeeds). ``max_backoff``: seconds between resends at most.
        ``timeout``: seconds one request may take.

        Raises:
            InvalidInput: an option is out of range, or ``url`` is not http(s).
        """
        _check_options(url, api_key, batch_size, flush_interval, max_buffer, max_retries)
        self.url = url.rstrip("/")
        self._outbox = _Outbox(max_buffer, batch_size)
        self._retry = _Retry(max_retries, max_backoff)
        self._flush_interval = flush_interval
        self._http_options: dict[str, Any] = {
            "base_url": self.url,
            "timeout": timeout,
            "headers": {
                "Authorization": f"Bearer {api_key}",
                "Content-Type": "application/json",
                "User-Agent": f"posttrain-sdk/{__version__}",
            },
        }
        self._open()

    def _open(self) -> None:
        raise NotImplementedError

    @property
    def sent(self) -> int:
        """Events the server acknowledged (created or duplicate)."""
        return self._outbox.sent

    @property
    def failed(self) -> int:
        """Events the server rejected; they are not resent (see the log for why)."""
        return self._outbox.failed

    @property
    def dropped(self) -> int:
        """Events given up without an answer: buffer full, too large, retries spent, fatal error."""
        return self._outbox.dropped

    @property
    def pending(self) -> int:
        """Events logged and not yet settled, those in flight included."""
        return self._outbox.pending

    @property
    def last_error(self) -> errors.PosttrainError | None:
        """Return the latest delivery error; Unauthorized or Forbidden means sending stopped."""
        return self._outbox.last_error

    def log_interaction(self, messages: list[dict[str, Any]], response: str | None = None, **fields: Any) -> str:
        """Queue one interaction and return its id at once; the network is never waited on.

        ``fields`` are the other fields of ``posttrain.Interaction`` (user_id, model, tags, ...);
        pass ``id`` to choose the id yourself. Do not change ``messages`` after the call.

        Raises:
            InvalidInput: ``messages`` is not a non-empty list, or a field is unknown.
        """
        if not isinstance(messages, list) or not messages:
            raise errors.InvalidInput(
                "messages must be a non-empty list of {'role': ..., 'content': ...}", field="messages"
            )
        if not _INTERACTION_FIELDS.issuperset(fields):
            raise _unknown(fields, _INTERACTION_FIELDS)
        return self._add("interactions", {"messages": messages, "response": response, **fields})

    def log_feedback(self, interaction_id: str, kind: str, value: Any = None, **fields: Any) -> str:
        """Queue one feedback event on ``interaction_id`` and return its id at once.

        ``kind`` is thumb, rating, edit, choice, comment, flag or regenerate; ``fields`` are the
        other fields of ``posttrain.Feedback`` (source, text, author, metadata, id, timestamp).
        The interaction may be logged later: the server joins them when both have arrived. The
        server stores this key's id as ``author`` and refuses a ``source`` the key's role may not
        claim (``posttrain.keys.FEEDBACK_SOURCES``), counting that event in ``failed``.

        Raises:
            InvalidInput: no interaction_id, an unknown kind or source, or an unknown field.
        """
        if not isinstance(interaction_id, str) or not interaction_id:
            raise errors.InvalidInput("interaction_id must be the id log_interaction returned", field="interaction_id")
        if not isinstance(kind, str) or kind not in _FEEDBACK_KINDS:
            raise errors.InvalidInput(
                f"unknown feedback kind {kind!r}; choose one of {', '.join(sorted(_FEEDBACK_KINDS))}", field="kind"
            )
        if not _FEEDBACK_FIELDS.issuperset(fields):
            raise _unknown(fields, _FEEDBACK_FIELDS)
        if "source" in fields and not (isinstance(fields["source"], str) and fields["source"] in _FEEDBACK_SOURCES):
            raise errors.InvalidInput(
                f"unknown source {fields['source']!r}; choose one of {', '.join(sorted(_FEEDBACK_SOURCES))}",
                field="source",
            )
        return self._add("feedback", {"interaction_id": interaction_id, "kind": kind, "value": value, **fields})

    def _add(self, kind: Kind, event: dict[str, Any]) -> str:
        event_id = event.get("id") or new_id()
        event["id"] = event_id
        if "timestamp" not in event:
            event["timestamp"] = _now()
        self._notify(self._outbox.add(kind, event))
        return event_id  # type: ignore[no-any-return]

    def _notify(self, full: bool) -> None:
        raise NotImplementedError


def _check_options(
    url: str, api_key: str, batch_size: int, flush_interval: float, max_buffer: int, max_retries: int | None
) -> None:
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise errors.InvalidInput(f"url must start with http:// or https://, not {url!r}", field="url")
    if not api_key:
        raise errors.InvalidInput(
            "api_key is empty; create one with 'posttrain keys create --role ingest'", field="api_key"
        )
    checks = [
        ("batch_size", batch_size >= 1, "at least 1"),
        ("flush_interval", flush_interval > 0, "above 0"),
        ("max_buffer", max_buffer >= 1, "at least 1"),
        ("max_retries", max_retries is None or max_retries >= 0, "None or at least 0"),
    ]
    for name, ok, rule in checks:
        if not ok:
            raise errors.InvalidInput(f"{name} must be {rule}", field=name)


def _close_at_exit(ref: weakref.ReferenceType[Any], close: Callable[[Any], None]) -> None:
    client = ref()
    if client is not None:
        close(client)


class Client(_BaseClient):
    """Log interactions and feedback to a posttrain server from a background thread.

    ``with posttrain.Client(url, api_key) as client: client.log_interaction(...)``. Pending
    events are flushed when the client closes, and at interpreter exit (for up to 10 s) if it
    was never closed.
    """

    def _open(self) -> None:
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="posttrain-client", daemon=True)
        self._thread.start()
        self._exit_hook = functools.partial(_close_at_exit, weakref.ref(self), Client.close)
        atexit.register(self._exit_hook)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event logged so far is settled; False on timeout or fatal error."""
        target = self._outbox.mark()
        self._wake.set()
        return self._outbox.wait(target, timeout)

    def close(self, timeout: float | None = 10.0) -> None:
        """Flush for up to ``timeout`` seconds, then stop the sender; what is left is dropped.

        A request still in flight gets about a second more to end. Later events are dropped.
        """
        atexit.unregister(self._exit_hook)
        self._outbox.stop_accepting()
        self.flush(timeout)
        self._stop.set()
        self._wake.set()
        self._thread.join(None if timeout is None else _STOP_GRACE)

    def _notify(self, full: bool) -> None:
        if full:
            self._wake.set()

    def _run(self) -> None:
        try:
            with httpx.Client(**self._http_options) as http:
                while not self._stop.is_set() and not self._outbox.fatal:
                    self._wake.wait(self._flush_interval)
                    self._wake.clear()
                    self._drain(http)
        except Exception as exc:  # a dead sender must say so, not leave flush() waiting
            logger.exception("posttrain: the client's sender thread failed")
            self._outbox.halt(errors.PosttrainError(f"the sender thread failed: {exc!r}"))
        finally:
            if lost := self._outbox.drop_pending():
                logger.warning("posttrain: %d events were not delivered before the client stopped", lost)

    def _drain(self, http: httpx.Client) -> None:
        while not self._stop.is_set() and (batch := self._outbox.take()):
            delivery = _deliver(self._outbox, *batch, self._retry)
            reply: Reply = None
            while True:
                try:
                    step = delivery.send(reply)
                except StopIteration:
                    break
                if isinstance(step, _Post):
                    reply = _post(http, step)
                elif self._stop.wait(step):
                    return


def _post(http: httpx.Client, step: _Post) -> httpx.Response | httpx.TransportError:
    try:
        return http.post(step.path, content=step.body)
    except httpx.TransportError as exc:
        return exc


class AsyncClient(_BaseClient):
    """Log interactions and feedback to a posttrain server from a background asyncio task.

    ``log_interaction`` and ``log_feedback`` are plain methods, like ``Client``'s. The task starts
    on the first call made inside a running event loop; ``await aclose()`` before the loop ends.
    """

    def _open(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._exit_hook = functools.partial(_close_at_exit, weakref.ref(self), AsyncClient._warn_at_exit)
        atexit.register(self._exit_hook)

    async def __aenter__(self) -> AsyncClient:
        self._start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event logged so far is settled; False on timeout or fatal error."""
        self._start()
        target = self._outbox.mark()
        self._wake.set()
        try:
            async with asyncio.timeout(timeout):
                while not self._outbox.reached(target):
                    self._progress.clear()
                    await self._progress.wait()
        except TimeoutError:
            return False
        return not self._outbox.fatal

    async def aclose(self, timeout: float | None = 10.0) -> None:
        """Flush for up to ``timeout`` seconds, then stop the sender; what is left is dropped.

        Later events are dropped too.
        """
        atexit.unregister(self._exit_hook)
        self._outbox.stop_accepting()
        await self.flush(timeout)
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])

    def _start(self) -> None:
        if self._task is not None:
            return
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop in this thread: events wait in the outbox until one calls in
        self._task = self._loop.create_task(self._run(), name="posttrain-client")

    def _notify(self, full: bool) -> None:
        if self._task is None:
            self._start()
        elif full and self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def _warn_at_exit(self) -> None:
        if self.pending:
            logger.warning(
                "posttrain: %d events were never sent; 'await client.aclose()' before the loop ends",
                self.pending,
            )

    async def _run(self) -> None:
        try:
            async with httpx.AsyncClient(**self._http_options) as http:
                while not self._outbox.fatal:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow aclose's cancel
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._flush_interval):
                            await self._wake.wait()
                    self._wake.clear()
                    await self._drain(http)
        except Exception as exc:  # a dead sender must say so, not leave flush() waiting
            logger.exception("posttrain: the async client's sender task failed")
            self._outbox.halt(errors.PosttrainError(f"the sender task failed: {exc!r}"))
        finally:
            if lost := self._outbox.drop_pending():
                logger.warning("posttrain: %d events were not delivered before the client stopped", lost)
            self._progress.set()

    async def _drain(self, http: httpx.AsyncClient) -> None:
        while batch := self._outbox.take():
            delivery = _deliver(self._outbox, *batch, self._retry)
            reply: Reply = None
            while True:
                try:
                    step = delivery.send(reply)
                except StopIteration:
                    break
                if isinstance(step, _Post):
                    reply = await _apost(http, step)
                else:
                    await asyncio.sleep(step)
            self._progress.set()


async def _apost(http: httpx.AsyncClient, step: _Post) -> httpx.Response | httpx.TransportError:
    try:
        return await http.post(step.path, content=step.body)
    except httpx.TransportError as exc:
        return exc
