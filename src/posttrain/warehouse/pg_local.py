"""A throwaway PostgreSQL server on this machine's loopback (tests and benchmarks).

``LocalPostgres().start()`` runs Debian's ``initdb`` and ``pg_ctl`` in a temp folder and starts the
server on 127.0.0.1 and a free port (its socket in that folder too); ``database(name)`` creates a
database and returns its URL; ``stop()`` stops the server and removes the folder. PostgreSQL
refuses to run as root, so under root (CI) both run as the ``postgres`` user that Debian's
package creates. It is a launcher for PostgreSQL's own tools, not a database manager.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from posttrain.compute.cluster import free_port
from posttrain.errors import Unavailable

USER = "posttrain"  # the superuser initdb makes; trust authentication on loopback only


def _bin(name: str) -> str:
    """Return PostgreSQL's program ``name``: on the PATH, else in Debian's newest versioned folder."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(Path(p).parts[4]))
    if not versions:
        raise Unavailable(f"PostgreSQL's {name} is not installed; apt-get install postgresql")
    return versions[-1]


def _as_owner() -> list[str]:
    """Return the prefix that runs a program as the server's owner: nothing, or ``runuser`` under root."""
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", "postgres", "--"]


class LocalPostgres:
    """One PostgreSQL server in a temp folder of its own, listening on 127.0.0.1 only."""

    def __init__(self) -> None:
        self.port = free_port()
        self.temp = Path(tempfile.mkdtemp(prefix="pt-pg-"))
        self.data = self.temp / "data"
        self.started = False

    @property
    def url(self) -> str:
        """The URL of the ``postgres`` database (the one initdb makes)."""
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{name}"

    def _run(self, *args: str, timeout: float = 120) -> None:
        done = subprocess.run(
            [*_as_owner(), *args], capture_output=True, text=True, timeout=timeout, cwd=self.temp, check=False
        )
        if done.returncode != 0:
            raise Unavailable(f"{Path(args[0]).name} failed: {(done.stderr or done.stdout).strip()[-2000:]}")

    def start(self) -> LocalPostgres:
        if os.geteuid() == 0:
            shutil.chown(self.temp, "postgres", "postgres")
        self._run(_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", USER, "-E", "UTF8",
                  "--locale", "C", "--no-sync")  # fmt: skip
        options = f"-p {self.port} -h 127.0.0.1 -k {self.temp}"
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.temp / "server.log"),
                  "-w", "-t", "60", "start")  # fmt: skip
        self.started = True
        return self

    def database(self, name: str) -> str:
        """Create the database ``name`` and return its URL."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{name}"')  # a name the caller made, not a request's
        return self.database_url(name)

    def log(self) -> str:
        path = self.temp / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Stop the server (immediately: a throwaway one) and remove its folder."""
        try:
            if self.started:
                self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
                self.started = False
        finally:
            deadline = time.monotonic() + 10
            while self.temp.exists() and time.monotonic() < deadline:
                shutil.rmtree(self.temp, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
