"""Every setting posttrain reads, declared once.

Resolution order, each overriding the one before: the defaults below → the project's
``posttrain.toml`` → ``POSTTRAIN_<SECTION>_<NAME>`` environment variables → command-line flags.
Settings are resolved at the edge (the CLI, ``create_app``) and passed in explicitly.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from posttrain.errors import InvalidInput
from posttrain.records import CohortRule, RouteRule
from posttrain.validation import invalid_input


def _from_json(value: Any, expected: str) -> Any:
    """Parse a setting given as JSON text (an environment variable); other values pass through."""
    if not isinstance(value, str):
        return value
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        raise ValueError(expected) from None


class ServerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="Address `posttrain serve` binds; loopback by default.")
    port: int = Field(8321, ge=0, le=65535, description="Port `posttrain serve` listens on.")
    max_requests_in_flight: int = Field(
        512, ge=1, description="Requests in flight at once; past it the server answers 503 with Retry-After."
    )
    max_body_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        description="Largest request body of the /api routes but capture's (413 above; capture and /v1: capture.*).",
    )


class CaptureSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest capture request body, in bytes (413 above)."
    )
    max_event_bytes: int = Field(
        256 * 1024, ge=256, description="Largest single event, in bytes (that event is rejected)."
    )
    max_batch_events: int = Field(10_000, ge=1, description="Most events in one capture request (413 above).")
    max_backlog_events: int = Field(
        50_000,
        ge=1,
        description="Events waiting to be committed before new requests get 429 with Retry-After.",
    )
    retry_after_seconds: float = Field(1.0, gt=0, description="Retry-After the server sends with a 429.")


class GatewaySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    upstream_url: str | None = Field(
        None, description="Base URL of an OpenAI-compatible upstream (e.g. `http://vllm:8000/v1`); none by default."
    )
    upstream_models: list[str] = Field(  # pydantic copies the default, so one list is never shared
        [], description="Model names the gateway forwards to the upstream (comma-separated in env)."
    )
    upstream_api_key_env: str | None = Field(
        None, description="Environment variable holding the upstream's API key, sent as a Bearer token."
    )
    upstream_timeout_seconds: float = Field(60.0, gt=0, description="Timeout of one upstream call, in seconds.")
    batch_window_ms: float = Field(
        5.0, ge=0, description="How long a local model waits for more requests to generate together, in ms."
    )
    max_batch_size: int = Field(8, ge=1, description="Most requests a local model generates in one batch.")
    default_max_tokens: int = Field(256, ge=1, description="Completion tokens when a request sets no max_tokens.")
    cohort_rules: list[CohortRule] = Field(
        [], description="Cohort rules after the warehouse's (`[[gateway.cohort_rules]]`; JSON list in env)."
    )
    routes: list[RouteRule] = Field(
        [], description="Routes after the warehouse's (`[[gateway.routes]]`; JSON list in env)."
    )
    experiment_check_seconds: float = Field(
        30.0, ge=0, description="How often the server checks running experiments' guardrails (0: never)."
    )

    @field_validator("upstream_models", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value

    @field_validator("cohort_rules", "routes", mode="before")
    @classmethod
    def _json(cls, value: Any) -> Any:
        return _from_json(value, "must be a JSON list of objects")


class SqlSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timeout_seconds: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="Time limit of one SQL query for viewers (admins: admin_timeout_seconds).",
    )
    admin_timeout_seconds: float = Field(60.0, gt=0, le=3600, description="Time limit of one SQL query for admins.")
    max_concurrent: int = Field(
        2, ge=1, le=64, description="SQL queries the server runs at once; others wait (other routes are unaffected)."
    )
    max_waiting: int = Field(64, ge=0, le=10_000, description="SQL queries that may wait for a slot; past it, 429.")
    max_rows: int = Field(10_000, ge=1, le=1_000_000, description="Most rows one SQL query returns (truncated flag).")


_FUNCTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
_FUNCTION_TARGET = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$")


class FunctionSettings(BaseModel):
    """Python functions the project trusts, by name: requests name them, never a module path."""

    model_config = ConfigDict(extra="forbid")

    verifiers: dict[str, str] = Field(
        {}, description='Verifiers `NAME = "module:function"`, f(completion, answer, **row) -> float in [0, 1].'
    )
    rewards: dict[str, str] = Field(
        {}, description='GRPO/RLOO rewards `NAME = "module:function"` (TRL reward functions); use function:NAME.'
    )
    judges: dict[str, str] = Field(
        {}, description='Pairwise judges `NAME = "module:function"`, f(first, second, **row) -> [0, 1]; function:NAME.'
    )

    @field_validator("verifiers", "rewards", "judges", mode="before")
    @classmethod
    def _json(cls, value: Any) -> Any:
        return _from_json(value, "must be a JSON object of NAME: module:function")

    @field_validator("verifiers", "rewards", "judges")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > 256:
            raise ValueError("at most 256 functions")
        for name, target in value.items():
            if not _FUNCTION_NAME.match(name):
                raise ValueError(f"{name!r}: a name is letters, digits, _ and -, starting with a letter or _")
            if not _FUNCTION_TARGET.match(target):
                raise ValueError(f"{name} = {target!r}: give module:function, as in mypkg.checks:verify")
        return value


_JUDGE_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,199}$")


class JudgeSpec(BaseModel):
    """One AI judge of ``[annotate.judges.NAME]``: what pre-labels a queue's items, by name, never code."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["reward-model", "pairwise", "verifier", "chat"]
    model: str | None = Field(
        None, max_length=200, description="reward-model: a registered reward model; chat: the upstream's model name."
    )
    judge: str | None = Field(None, description="pairwise: a judge of [functions.judges], by name.")
    verifier: str | None = Field(None, description="verifier: a built-in verifier or one of [functions.verifiers].")
    boundary: float = Field(0.0, description="reward-model: the score at which reject flips to accept.")
    upstream: str | None = Field(
        None, max_length=500, description="chat: base URL of an OpenAI-compatible server (default gateway's)."
    )
    api_key_env: str | None = Field(
        None, max_length=100, description="chat: variable holding the upstream's key (default gateway's)."
    )
    prompt: str = Field("", max_length=4000, description="chat: the instruction the judge model gets.")

    @model_validator(mode="after")
    def _by_kind(self) -> JudgeSpec:
        from posttrain import functions
        from posttrain.evals.verifiers import check_verifier_name

        needs = {"reward-model": "model", "pairwise": "judge", "verifier": "verifier", "chat": "model"}[self.kind]
        if getattr(self, needs) is None:
            raise ValueError(f"a {self.kind} judge needs {needs}")
        try:
            if self.judge is not None:
                functions.check_name(self.judge, what="judge", field="judge")
            if self.verifier is not None:
                check_verifier_name(self.verifier)
        except InvalidInput as exc:
            raise ValueError(exc.message) from None
        if self.model is not None and not _JUDGE_MODEL.match(self.model):
            raise ValueError(f"model {self.model[:60]!r}: letters, digits and . _ - : / @")
        if self.upstream is not None and not re.match(r"^https?://[^\s]+$", self.upstream):
            raise ValueError("upstream: give an http(s):// base URL, as in http://vllm:8000/v1")
        return self


class AnnotateSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    trust_threshold: float = Field(
        0.8, ge=0, le=1, description="A judge is trusted when its agreement with people (95% CI low) is at least this."
    )
    sure: float = Field(0.9, ge=0.5, le=1, description="Confidence from which a trusted judge labels an item alone.")
    judges: dict[str, JudgeSpec] = Field(
        {}, description="AI judges `[annotate.judges.NAME]` (kind, model/judge/verifier ...) queues name to pre-label."
    )

    @field_validator("judges", mode="before")
    @classmethod
    def _json(cls, value: Any) -> Any:
        return _from_json(value, "must be a JSON object of NAME: {kind, ...}")

    @field_validator("judges")
    @classmethod
    def _names(cls, value: dict[str, JudgeSpec]) -> dict[str, JudgeSpec]:
        if len(value) > 64:
            raise ValueError("at most 64 judges")
        for name in value:
            if not _FUNCTION_NAME.match(name):
                raise ValueError(f"{name!r}: a name is letters, digits, _ and -, starting with a letter or _")
        return value


class CurateSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    strict_cohorts: list[str] = Field(
        ["minor"],
        max_length=64,
        description="Cohorts whose datasets get the strict curation setting (safety filter on, strict threshold).",
    )

    @field_validator("strict_cohorts", mode="before")
    @classmethod
    def _list(cls, value: Any) -> Any:
        return _from_json(value, "must be a JSON list of cohort names") if isinstance(value, str) else value


class ComputeSettings(BaseModel):
    """Where the heavy stages run: in this process (``local``) or on a Ray cluster (``ray``)."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["local", "ray"] = Field(
        "local",
        description="local: builds, curation, generation, evals and training run in this process; "
        "ray: on the Ray cluster at compute.address (pip install 'posttrain[ray]').",
    )
    address: str = Field(
        "auto",
        max_length=500,
        description="The Ray cluster: auto (the one `ray start` made on this machine), HOST:PORT or ray://HOST:PORT.",
    )
    storage: str = Field(
        "",
        max_length=1000,
        description="URL (fsspec) every worker reads inputs from and writes checkpoints to, e.g. s3://bucket/pt; "
        "empty: the project's artifacts folder (a cluster on one machine or a shared filesystem).",
    )
    workers: int = Field(
        2,
        ge=1,
        le=4096,
        description="Ray workers a stage uses: tasks of a build at once, model actors of an eval, "
        "Ray Train workers when train gives no --workers.",
    )
    cpus_per_worker: float = Field(1.0, gt=0, le=1024, description="CPUs Ray reserves for each worker.")
    rows_per_block: int = Field(
        20_000, ge=100, le=10_000_000, description="Rows per Ray Data block of a build or curation stage."
    )

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        if value != "auto" and not re.match(r"^(ray://)?[A-Za-z0-9_.\[\]:-]+:\d{1,5}$", value):
            raise ValueError("give auto, HOST:PORT or ray://HOST:PORT, as in ray://head:10001")
        return value

    @field_validator("storage")
    @classmethod
    def _storage(cls, value: str) -> str:
        if value and any(c in value for c in "\n\r\0"):
            raise ValueError("a URL on one line, as in s3://bucket/posttrain")
        return value


class WarehouseSettings(BaseModel):
    """Where the records live: the embedded DuckDB file (default) or a PostgreSQL database many servers share."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        "",
        max_length=2000,
        description="empty: the project's warehouse.duckdb (one writer process); postgresql://user@host:5432/db: "
        "a PostgreSQL database any number of `posttrain serve` processes share (pip install 'posttrain[postgres]').",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value and not re.match(r"^(duckdb://|postgres(ql)?://)[^\s]+$", value):
            raise ValueError("give postgresql://user@host:5432/db, or leave it empty for the project's DuckDB file")
        return value

    @property
    def postgres(self) -> str | None:
        """The PostgreSQL URL, or None for the embedded DuckDB warehouse."""
        return self.url if self.url.startswith("postgres") else None


class Settings(BaseModel):
    """The resolved settings of one project."""

    model_config = ConfigDict(extra="forbid")

    server: ServerSettings = Field(default_factory=ServerSettings)
    capture: CaptureSettings = Field(default_factory=CaptureSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    sql: SqlSettings = Field(default_factory=SqlSettings)
    functions: FunctionSettings = Field(default_factory=FunctionSettings)
    annotate: AnnotateSettings = Field(default_factory=AnnotateSettings)
    curate: CurateSettings = Field(default_factory=CurateSettings)
    compute: ComputeSettings = Field(default_factory=ComputeSettings)
    warehouse: WarehouseSettings = Field(default_factory=WarehouseSettings)


def describe() -> Iterator[tuple[str, Any, str]]:
    """Yield ``(dotted name, default, description)`` for every setting."""
    for section, info in Settings.model_fields.items():
        model = info.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        for name, field in model.model_fields.items():
            yield f"{section}.{name}", field.default, field.description or ""


def _read_toml(path: Path) -> dict[str, dict[str, Any]]:
    """Return the sections of ``posttrain.toml``; refuse a file that does not parse or a section we do not know."""
    try:
        with path.open("rb") as f:
            raw = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"{path} is not valid TOML: {exc}; fix the file (see docs/reference/settings.md)") from None
    known = ", ".join(f"[{name}]" for name in Settings.model_fields)
    for section, value in raw.items():
        if section not in Settings.model_fields:
            raise InvalidInput(f"{path}: unknown section [{section}]; the sections are {known}", field=section)
        if not isinstance(value, dict):
            raise InvalidInput(f"{path}: {section} must be a table, as in [{section}]; got a value", field=section)
    return {section: dict(value) for section, value in raw.items()}


def load(
    toml_path: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Resolve settings from ``posttrain.toml``, ``POSTTRAIN_*`` variables and overrides."""
    data = _read_toml(toml_path) if toml_path is not None and toml_path.exists() else {}
    for name, _default, _help in describe():
        section, key = name.split(".")
        var = f"POSTTRAIN_{section}_{key}".upper()
        if env and var in env:
            data.setdefault(section, {})[key] = env[var]
        if overrides and overrides.get(name) is not None:
            data.setdefault(section, {})[key] = overrides[name]
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise invalid_input(exc, prefix="setting ") from None
