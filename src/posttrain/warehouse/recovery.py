"""What opening a warehouse recovers: jobs whose process died are marked failed.

A ``train`` killed with SIGKILL (or a crash, or a power cut) cannot mark its own job; the row says
``running`` forever and ``--resume`` would not take it. Every job records its owner (pid and host)
and a heartbeat (its last write). When a project is opened, a running or queued job is stale if its
owner on this host is gone, or its heartbeat is older than ``STALE_AFTER`` (a job on another host,
or a pid since reused); stale jobs become ``failed`` and keep their checkpoint for ``--resume``.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta

import duckdb

from posttrain.clock import utc_now

STALE_AFTER = timedelta(hours=1)  # a job writes its row at least every training step


def owner() -> tuple[int, str]:
    """Return this process's (pid, host), as jobs record their owner."""
    return os.getpid(), socket.gethostname()


def fail_stale_jobs(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Mark every stale running or queued job failed; return their ids."""
    pid, host = owner()
    rows = con.execute(
        "SELECT id, owner_pid, owner_host, heartbeat_at FROM jobs WHERE state IN ('running', 'queued')"
    ).fetchall()
    now = utc_now()
    stale = [
        (job_id, _reason(job_pid, job_host, beat, pid=pid, host=host, now=now))
        for job_id, job_pid, job_host, beat in rows
        if not (job_pid == pid and job_host == host)  # this process's own jobs are alive by definition
    ]
    stale = [(job_id, reason) for job_id, reason in stale if reason]
    for job_id, reason in stale:
        con.execute(
            "UPDATE jobs SET state = 'failed', error = ?, finished_at = ?, log = log || ? WHERE id = ?",
            [reason, now, f"marked failed when the project was opened: {reason}\n", job_id],
        )
    return [job_id for job_id, _ in stale]


def _reason(
    job_pid: int | None, job_host: str | None, beat: datetime | None, *, pid: int, host: str, now: datetime
) -> str:
    """Return why a job is stale, or '' when it may still be running."""
    if job_pid is None:
        return "its process is unknown (a job from before owners were recorded); it did not finish"
    if job_host == host and not pid_alive(job_pid):
        return f"its process {job_pid} ended without finishing it (killed or crashed); --resume continues it"
    if beat is None or now - beat > STALE_AFTER:
        return f"no heartbeat for over {STALE_AFTER}; its process is presumed gone; --resume continues it"
    return ""


def pid_alive(pid: int) -> bool:
    """Return whether a process ``pid`` exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
