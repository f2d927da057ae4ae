"""A project: a folder with ``posttrain.toml``, the DuckDB warehouse and an artifacts folder.

What posttrain creates in a project is private to its owner: folders 0700, the settings file and
the warehouse 0600 (the warehouse holds key hashes and users' conversations; ``.posttrain/server.json``
a control token). The ``posttrain`` command also runs with umask 077, so the files DuckDB and the
stages create later (the warehouse's WAL, datasets, models, exports) are private too.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import duckdb

from posttrain import settings as settings_mod
from posttrain.errors import Conflict, NotFound
from posttrain.warehouse import connect, migrate
from posttrain.warehouse.recovery import fail_stale_jobs, pid_alive

CONFIG_FILE = "posttrain.toml"
WAREHOUSE_FILE = "warehouse.duckdb"
ARTIFACTS_DIR = "artifacts"
STATE_DIR = ".posttrain"
SERVER_FILE = "server.json"
PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700

_TEMPLATE = """\
# posttrain project settings. Every setting and its default: docs/reference/settings.md.
# Environment variables POSTTRAIN_<SECTION>_<NAME> and command-line flags override these.

[server]
host = "127.0.0.1"
port = 8321

[capture]
max_body_bytes = 16777216
max_event_bytes = 262144
"""


class WarehouseLock:
    """A lock held by one thread of every process sharing the warehouse.

    A thread lock serialises this process; on a PostgreSQL warehouse a session-level advisory lock
    (``pg_advisory_lock``, on a pool connection held for the block) serialises the other servers too.
    """

    BASE = 0x706F_7374_0000  # "post" and the lock's number: apart from the migrations' lock

    def __init__(self, project: Project, number: int) -> None:
        self._project = project
        self._key = self.BASE + number
        self._local = threading.Lock()
        self._held: Any = None

    def __enter__(self) -> WarehouseLock:
        self._local.acquire()
        try:
            if self._project.is_postgres:
                pool = self._project._postgres().pool
                con = pool.getconn()
                try:
                    con.execute("SELECT pg_advisory_lock(%s)", [self._key])
                except BaseException:
                    pool.putconn(con)
                    raise
                self._held = (pool, con)
        except BaseException:
            self._local.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        held, self._held = self._held, None
        try:
            if held is not None:
                pool, con = held
                try:
                    con.execute("SELECT pg_advisory_unlock(%s)", [self._key])
                finally:
                    pool.putconn(con)  # a connection that failed is discarded by the pool
        finally:
            self._local.release()


class Project:
    """One posttrain project and its warehouse connection (opened on first use)."""

    def __init__(self, root: Path, settings: settings_mod.Settings) -> None:
        self.root = root
        self.settings = settings
        self._con: duckdb.DuckDBPyConnection | None = None
        self._pg: Any = None  # the PostgreSQL warehouse's pool (warehouse.url = postgresql://…)
        self._lock = threading.Lock()
        # serialises annotation leases: two annotators pulling at once never get the same item
        self.lease_lock = WarehouseLock(self, 1)
        # serialises dataset versions: two builds of one name never take the same version number
        self.version_lock = WarehouseLock(self, 2)
        # serialises automatic experiment decisions: every server checks guardrails, one acts at a time
        self.decision_lock = WarehouseLock(self, 3)

    @property
    def warehouse_path(self) -> Path:
        url = self.settings.warehouse.url
        if url.startswith("duckdb://"):
            return self.root / Path(url.removeprefix("duckdb://"))  # an absolute path stays itself
        return self.root / WAREHOUSE_FILE

    @property
    def is_postgres(self) -> bool:
        """Whether the warehouse is a PostgreSQL database (many servers) rather than the DuckDB file."""
        return self.settings.warehouse.postgres is not None

    @property
    def warehouse_name(self) -> str:
        """The warehouse as messages name it: the DuckDB file, or the PostgreSQL URL without its password."""
        from posttrain.warehouse.postgres import redacted

        url = self.settings.warehouse.postgres
        return redacted(url) if url else str(self.warehouse_path)

    def open(self) -> None:
        """Open and migrate the warehouse now (else on first use)."""
        if self.is_postgres:
            self._postgres()
        else:
            _ = self.con

    @property
    def artifacts(self) -> Path:
        return self.root / ARTIFACTS_DIR

    @property
    def server_file(self) -> Path:
        return self.root / STATE_DIR / SERVER_FILE

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """Return the warehouse connection, opening and migrating it on first use."""
        with self._lock:
            if self._con is None:
                con = connect(self.warehouse_path, busy_hint=self._busy_hint())
                # before the migrations, so nothing is ever in it while others may read it; a warehouse
                # made before files were private is tightened here too
                if self.warehouse_path.stat().st_mode & 0o077:
                    self.warehouse_path.chmod(PRIVATE_FILE)
                migrate(con)
                fail_stale_jobs(con)  # a job whose process was killed would stay 'running' forever
                self._con = con
            return self._con

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """Return a new cursor on the warehouse, for use by one thread."""
        if self.is_postgres:
            return self._postgres().cursor()  # type: ignore[no-any-return]  # DuckDB's cursor API (PgCursor)
        return self.con.cursor()

    def _postgres(self) -> Any:
        """Return the PostgreSQL warehouse's pool, connecting and migrating it on first use."""
        with self._lock:
            if self._pg is None:
                from posttrain.warehouse import pg_cursor, postgres

                url = self.settings.warehouse.postgres
                assert url is not None
                with postgres.connect(url) as con:  # Unavailable, one line, when nobody answers
                    postgres.migrate(con)  # once, under an advisory lock, however many servers start
                pool = pg_cursor.Pool(url)
                fail_stale_jobs(pool.cursor())  # type: ignore[arg-type]  # by host and heartbeat: another host's jobs are left alone
                self._pg = pool
            return self._pg

    def running_server(self) -> dict[str, Any] | None:
        """Return the ``posttrain serve`` that owns this project (url, pid, token), if alive."""
        try:
            info = json.loads(self.server_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return info if pid_alive(int(info.get("pid", 0))) else None

    def _busy_hint(self) -> str:
        server = self.running_server()
        if server is None:
            return "wait for it to finish, or stop it"
        return (
            f"'posttrain serve' owns it at {server['url']} (pid {server['pid']}); "
            "use the HTTP API, or stop the server first"
        )

    def close(self) -> None:
        """Checkpoint and close the warehouse connection."""
        with self._lock:
            if self._pg is not None:
                self._pg.close()
                self._pg = None
            if self._con is not None:
                self._con.execute("CHECKPOINT")
                self._con.close()
                self._con = None

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def resolve_root(path: Path | str | None, env: dict[str, str] | None = None) -> Path:
    """Return the project folder: the argument, else ``$POSTTRAIN_PROJECT``, else the cwd."""
    env = dict(os.environ) if env is None else env
    chosen = path or env.get("POSTTRAIN_PROJECT") or "."
    return Path(chosen).expanduser().resolve()


def open_project(root: Path | str, *, env: dict[str, str] | None = None, **overrides: Any) -> Project:
    """Open the project at ``root``; raise NotFound when it has no ``posttrain.toml``."""
    root = Path(root).resolve()
    toml_path = root / CONFIG_FILE
    if not toml_path.exists():
        raise NotFound(f"no posttrain project at {root}; run 'posttrain init {root}'")
    settings = settings_mod.load(toml_path, env=env or {}, overrides=overrides)
    return Project(root, settings)


def _write_private(path: Path, text: str) -> None:
    """Write a new file readable by its owner only (0600 from the start, whatever the umask)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    path.chmod(PRIVATE_FILE)  # a file that was there already keeps its mode through O_CREAT
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def init_project(root: Path | str, *, warehouse_url: str | None = None) -> Project:
    """Create a project at ``root`` (folder, settings file, warehouse, artifacts).

    ``warehouse_url`` (``postgresql://…``) puts the warehouse in a PostgreSQL database, written to
    ``posttrain.toml`` as ``[warehouse] url``; by default it is the project's DuckDB file.
    """
    root = Path(root).resolve()
    if (root / CONFIG_FILE).exists():
        raise Conflict(f"{root} is already a posttrain project; open it with --project {root}")
    root.parent.mkdir(parents=True, exist_ok=True)
    root.mkdir(mode=PRIVATE_DIR, exist_ok=True)  # a folder that exists already keeps its mode
    text = _TEMPLATE
    if warehouse_url:
        from posttrain.warehouse.postgres import check_url

        text += f'\n[warehouse]\nurl = "{check_url(warehouse_url, field="--warehouse")}"\n'
    _write_private(root / CONFIG_FILE, text)
    for folder in (ARTIFACTS_DIR, STATE_DIR):
        (root / folder).mkdir(mode=PRIVATE_DIR, exist_ok=True)
        (root / folder).chmod(PRIVATE_DIR)
    project = open_project(root)
    project.open()  # create the warehouse and run the migrations now
    return project
