"""Run users' SQL off the request threads: a few at a time, each with a time limit, cancelled on hang-up.

A flood of slow queries must degrade SQL alone. So queries run on their own small thread pool
(``sql.max_concurrent``), never on the pool the other synchronous routes share; a bounded number
wait for a slot (``sql.max_waiting``, then 429); each has a deadline from its arrival
(``sql.timeout_seconds``, admins ``sql.admin_timeout_seconds``) after which DuckDB's
``interrupt()`` stops it; a client that hangs up has its query interrupted too; and ``close()``
(on SIGTERM) interrupts every query at once so the server exits in seconds.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import duckdb

from posttrain.errors import InvalidInput, Overloaded, Unavailable
from posttrain.project import Project
from posttrain.records import Role, SqlResult
from posttrain.settings import SqlSettings
from posttrain.warehouse import sandbox

_POLL_SECONDS = 0.1


class SqlRunner:
    """The server's one gate for ``POST /api/sql``."""

    def __init__(self, project: Project, settings: SqlSettings) -> None:
        self._project = project
        self._settings = settings
        self._pool = ThreadPoolExecutor(settings.max_concurrent, thread_name_prefix="posttrain-sql")
        self._slots = asyncio.Semaphore(settings.max_concurrent)
        self._queued = 0
        self._running: set[duckdb.DuckDBPyConnection] = set()
        self._lock = threading.Lock()
        self._closed = False

    def timeout(self, role: Role) -> float:
        """Return the time limit of one query by a key of ``role``."""
        return self._settings.admin_timeout_seconds if role == "admin" else self._settings.timeout_seconds

    async def run(self, sql: str, *, role: Role, disconnected: Callable[[], Awaitable[bool]]) -> SqlResult:
        """Run ``sql`` within the role's time limit; raise InvalidInput when it runs past it."""
        sandbox.select_text(sql)  # refuse what can never run before taking a slot
        loop = asyncio.get_running_loop()
        limit = self.timeout(role)
        deadline = loop.time() + limit
        await self._acquire(deadline, limit)
        try:
            return await self._execute(sql, role, deadline, limit, disconnected)
        finally:
            self._slots.release()

    async def _acquire(self, deadline: float, limit: float) -> None:
        self._check_open()
        if self._queued >= self._settings.max_concurrent + self._settings.max_waiting:
            raise Overloaded(
                f"{self._queued} SQL queries running or waiting (sql.max_concurrent + sql.max_waiting); retry later"
            )
        self._queued += 1
        try:
            await asyncio.wait_for(self._slots.acquire(), max(0.0, deadline - asyncio.get_running_loop().time()))
        except TimeoutError:
            raise _timed_out(limit, waited=True) from None
        finally:
            self._queued -= 1
        if self._closed:
            self._slots.release()
            self._check_open()

    async def _execute(
        self, sql: str, role: Role, deadline: float, limit: float, disconnected: Callable[[], Awaitable[bool]]
    ) -> SqlResult:
        loop = asyncio.get_running_loop()
        cur: Any = self._project.cursor()
        if self._project.is_postgres:
            from posttrain.warehouse.pg_reader import ReaderCursor

            url = self._project.settings.warehouse.url
            cur = ReaderCursor(url, self._project.cursor(), timeout_seconds=limit + 1)  # type: ignore[arg-type]  # its own wall, past ours
        with self._lock:
            self._running.add(cur)
        work = partial(sandbox.run_read_only, cur, sql, admin=role == "admin", max_rows=self._settings.max_rows)
        future = loop.run_in_executor(self._pool, work)
        why = ""
        try:
            while not why:
                done, _ = await asyncio.wait({future}, timeout=_POLL_SECONDS)
                if done:
                    break
                why = "timeout" if loop.time() >= deadline else "gone" if await disconnected() else ""
                why = why or ("closed" if self._closed else "")
            if why:
                cur.interrupt()
            try:
                return await future
            except duckdb.InterruptException:
                if why == "timeout":
                    raise _timed_out(limit, waited=False) from None
                raise Unavailable("the query was cancelled: the client hung up or the server is stopping") from None
        finally:
            with self._lock:
                self._running.discard(cur)
            cur.close()

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable("the server is stopping; retry against a running one")

    def close(self) -> None:
        """Interrupt every running query and refuse new ones (called on SIGTERM and at shutdown)."""
        self._closed = True
        with self._lock:
            running = list(self._running)
        for cur in running:
            cur.interrupt()
        self._pool.shutdown(wait=False, cancel_futures=True)


def _timed_out(limit: float, *, waited: bool) -> InvalidInput:
    where = "waited for a free slot" if waited else "ran"
    return InvalidInput(
        f"the query {where} past its {limit:g} s limit (sql.timeout_seconds); narrow it or add a LIMIT",
        field="sql",
    )
