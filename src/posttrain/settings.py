"""Every setting posttrain reads, declared once.

Resolution order, each overriding the one before: the defaults below → the project's
``posttrain.toml`` → ``POSTTRAIN_<SECTION>_<NAME>`` environment variables → command-line flags.
Settings are resolved at the edge (the CLI, ``create_app``) and passed in explicitly.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from posttrain.errors import InvalidInput
from posttrain.routing import CohortRule, RouteRule


class ServerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="Address `posttrain serve` binds; loopback by default.")
    port: int = Field(8321, ge=0, le=65535, description="Port `posttrain serve` listens on.")
    max_requests_in_flight: int = Field(
        512, ge=1, description="Requests in flight at once; past it the server answers 503 with Retry-After."
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
        if isinstance(value, str):
            try:
                return orjson.loads(value)
            except orjson.JSONDecodeError:
                raise ValueError("must be a JSON list of objects") from None
        return value


class Settings(BaseModel):
    """The resolved settings of one project."""

    model_config = ConfigDict(extra="forbid")

    server: ServerSettings = Field(default_factory=ServerSettings)
    capture: CaptureSettings = Field(default_factory=CaptureSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)


def describe() -> Iterator[tuple[str, Any, str]]:
    """Yield ``(dotted name, default, description)`` for every setting."""
    for section, info in Settings.model_fields.items():
        model = info.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        for name, field in model.model_fields.items():
            yield f"{section}.{name}", field.default, field.description or ""


def load(
    toml_path: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Resolve settings from ``posttrain.toml``, ``POSTTRAIN_*`` variables and overrides."""
    data: dict[str, dict[str, Any]] = {}
    if toml_path is not None and toml_path.exists():
        with toml_path.open("rb") as f:
            raw = tomllib.load(f)
        data = {k: dict(v) for k, v in raw.items() if k in Settings.model_fields}
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
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise InvalidInput(f"setting {field}: {err['msg']}", field=field) from None
