"""The data model: one Pydantic model per warehouse record.

Capture events (``Interaction``, ``Feedback``) are validated here at every ingest path (HTTP,
SDK, bulk import), so a rule is written once. Field names are the warehouse's column names.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Required

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    StringConstraints,
    Tag,
    field_validator,
    model_validator,
)
from typing_extensions import TypedDict

from posttrain.conditions import parse_condition
from posttrain.names import Name

EventId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:\-]+$")]
ShortText = Annotated[str, StringConstraints(max_length=512)]

Role = Literal["admin", "ingest", "annotator", "viewer"]
ROLES: tuple[Role, ...] = ("admin", "ingest", "annotator", "viewer")
FeedbackKind = Literal["thumb", "rating", "edit", "choice", "comment", "flag", "regenerate"]
FeedbackSource = Literal["user", "annotator", "judge", "verifier"]
CaptureKind = Literal["interactions", "feedback"]


class TextPart(TypedDict):
    """A text part of a message's content, ``{"type": "text", "text": …}`` (other keys pass through)."""

    __pydantic_config__ = ConfigDict(extra="allow")  # type: ignore[misc]

    type: Literal["text"]
    text: str


class ContentPart(TypedDict):
    """Any other part of a message's content (``image_url``, ``input_audio``, ``file``…), kept as sent."""

    __pydantic_config__ = ConfigDict(extra="allow")  # type: ignore[misc]

    type: Annotated[str, StringConstraints(min_length=1, max_length=64)]


# Tags of the unions below: pydantic puts them in an error's location; field_path() drops them.
_UNION_TAGS = frozenset({"<string>", "<parts>", "<text part>", "<part>"})


def _part_tag(value: Any) -> str | None:
    if not isinstance(value, dict):
        return None
    return "<text part>" if value.get("type") == "text" else "<part>"


def _content_tag(value: Any) -> str | None:
    return "<string>" if isinstance(value, str) else "<parts>" if isinstance(value, list) else None


Part = Annotated[
    Annotated[TextPart, Tag("<text part>")] | Annotated[ContentPart, Tag("<part>")],
    Discriminator(_part_tag, custom_error_type="content_part",
                  custom_error_message="a content part must be an object with a string 'type'"),
]  # fmt: skip
Content = Annotated[
    Annotated[str, Tag("<string>")] | Annotated[list[Part], Tag("<parts>")],
    Discriminator(_content_tag, custom_error_type="content",
                  custom_error_message="content must be a string, a list of parts or null"),
]  # fmt: skip


class Message(TypedDict, total=False):
    """One chat message in OpenAI's format (other OpenAI keys pass through).

    ``content`` is a string or a list of parts (text, images, audio…), stored as sent.
    """

    __pydantic_config__ = ConfigDict(extra="allow")  # type: ignore[misc]

    role: Required[Literal["system", "developer", "user", "assistant", "tool"]]
    content: Content | None
    name: str
    tool_calls: list[dict[str, Any]]
    tool_call_id: str


def field_path(loc: tuple[int | str, ...]) -> str:
    """Return a validation error's location as a dotted path, without pydantic's union tags."""
    return ".".join(str(p) for p in loc if p not in _UNION_TAGS)


class MediaRef(BaseModel):
    """A file attached to an interaction (image, audio, video, agent trajectory)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["image", "audio", "video", "trajectory", "file"]
    uri: Annotated[str, StringConstraints(min_length=1, max_length=2048)]
    mime_type: ShortText | None = None


def _to_utc(value: datetime) -> datetime:
    """Store times as naive UTC; a time without an offset is taken as UTC already."""
    if value.tzinfo is None:
        return value
    try:
        return value.astimezone(UTC).replace(tzinfo=None)
    except OverflowError:
        raise ValueError("time is out of range once converted to UTC") from None


def _iso_utc(value: datetime) -> str:
    return value.isoformat() + "Z"


# Naive UTC inside posttrain; ISO 8601 with "Z" on the wire, so clients never guess the zone.
UtcTime = Annotated[datetime, AfterValidator(_to_utc), PlainSerializer(_iso_utc, return_type=str, when_used="json")]
BigInt = Annotated[int, Field(ge=0, lt=2**63)]  # what a BIGINT column holds


class Interaction(BaseModel):
    """One model call: the conversation, the response and the serving decision behind it.

    ``response`` is the reply's text; a reply with more (tool calls, a refusal, content parts) is
    kept whole, as an OpenAI assistant message, in ``metadata.response_message``, and dataset
    versions train on that message.
    """

    model_config = ConfigDict(extra="forbid")

    id: EventId | None = None
    timestamp: UtcTime | None = None
    user_id: ShortText | None = None
    session_id: ShortText | None = None
    cohort: ShortText | None = None
    messages: list[Message] = Field(min_length=1)
    response: str | None = None
    model: ShortText | None = None
    experiment: ShortText | None = None
    variant: ShortText | None = None
    assignment_prob: float | None = Field(None, ge=0, le=1)
    latency_ms: float | None = Field(None, ge=0)
    prompt_tokens: BigInt | None = None
    completion_tokens: BigInt | None = None
    cost: float | None = Field(None, ge=0)
    tags: list[ShortText] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    consent: dict[str, bool] = Field(default_factory=dict)
    media: list[MediaRef] = Field(default_factory=list)


class Feedback(BaseModel):
    """A judgement of an interaction by a user, an annotator, a judge or a verifier.

    ``value`` by kind: ``thumb`` true/false, 1/-1 or "up"/"down" (stored as 1 or -1);
    ``rating`` a number; ``choice`` the id of the interaction chosen over this one's
    alternatives; ``flag`` an optional reason. ``edit`` and ``comment`` carry ``text``.
    """

    model_config = ConfigDict(extra="forbid")

    id: EventId | None = None
    interaction_id: EventId
    timestamp: UtcTime | None = None
    source: FeedbackSource = "user"
    kind: FeedbackKind
    value: bool | int | float | str | None = None
    text: str | None = None
    author: ShortText | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_kind(self) -> Feedback:
        check = _KIND_CHECKS.get(self.kind)
        if check is not None:
            check(self)
        return self

    @property
    def score(self) -> float | None:
        """Return the numeric value of a thumb or rating, else None."""
        if self.kind in ("thumb", "rating") and isinstance(self.value, int | float):
            return float(self.value)
        return None


_THUMBS: dict[Any, int] = {"up": 1, "down": -1, 1: 1, -1: -1}  # 1.0 and True hash as 1


def _check_thumb(fb: Feedback) -> None:
    value = fb.value
    if isinstance(value, bool):
        value = 1 if value else -1
    if value not in _THUMBS:
        raise ValueError("value: a thumb's value must be true/false, 1/-1 or 'up'/'down'")
    fb.value = _THUMBS[value]


def _check_rating(fb: Feedback) -> None:
    if isinstance(fb.value, bool) or not isinstance(fb.value, int | float):
        raise ValueError("value: a rating's value must be a number")


def _check_text(fb: Feedback) -> None:
    if not fb.text:
        raise ValueError(f"text: {fb.kind} feedback needs 'text'")


def _check_choice(fb: Feedback) -> None:
    if not isinstance(fb.value, str) or not fb.value:
        raise ValueError("value: a choice's value must be the id of the chosen interaction")


_KIND_CHECKS = {
    "thumb": _check_thumb,
    "rating": _check_rating,
    "edit": _check_text,
    "comment": _check_text,
    "choice": _check_choice,
}


class EventResult(BaseModel):
    """The outcome of one captured event."""

    id: str | None
    status: Literal["created", "duplicate", "error"]
    error: str | None = None
    field: str | None = None


class CaptureResponse(BaseModel):
    """Per-event results, in the order the events were sent."""

    results: list[EventResult]


class InteractionBatch(BaseModel):
    interactions: list[dict[str, Any]]


class FeedbackBatch(BaseModel):
    feedback: list[dict[str, Any]]


class StoredFeedback(Feedback):
    """Feedback as the warehouse holds it."""

    id: str
    timestamp: UtcTime
    received_at: UtcTime


class StoredInteraction(Interaction):
    """An interaction as the warehouse holds it, with the feedback that joined it."""

    id: str
    timestamp: UtcTime
    received_at: UtcTime
    source: str | None = Field(None, description="How it entered: capture, import, generate, gateway.")
    feedback: list[StoredFeedback] = Field(default_factory=list)


class InteractionPage(BaseModel):
    """One page of interactions; pass ``next_cursor`` back to get the next."""

    interactions: list[StoredInteraction]
    next_cursor: str | None = None


class ApiKey(BaseModel):
    """An API key as listed; the secret itself is shown only once, at creation."""

    id: str
    name: str | None = None
    role: Role
    prefix: str
    created_at: UtcTime
    revoked_at: UtcTime | None = None


class NewApiKey(ApiKey):
    key: str


class ImportReport(BaseModel):
    """What a bulk import did."""

    path: str
    rows: int
    created: int
    duplicates: int
    rejected: int
    errors: list[str] = Field(default_factory=list)
    seconds: float


class ExportReport(BaseModel):
    path: str
    format: Literal["jsonl", "parquet"]
    rows: int


class SqlResult(BaseModel):
    columns: list[str]
    rows: list[list[Any]]
    truncated: bool = Field(False, description="True when the query had more rows than the limit returned.")


ModelKind = Literal["causal-lm", "reward-model"]
ModelStatus = Literal["candidate", "serving", "retired", "rejected"]
DatasetKind = Literal["sft", "preference", "prompts", "eval"]
JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class ModelRecord(BaseModel):
    """A registered model: a local Hugging Face folder with where it came from."""

    id: str
    name: str
    kind: ModelKind = "causal-lm"
    path: str
    base: str | None = None
    parent_id: str | None = None
    run_id: str | None = None
    recipe: dict[str, Any] = Field(default_factory=dict)
    dataset_versions: list[str] = Field(default_factory=list, description="'name@version' refs it was trained on")
    content_hash: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    status: ModelStatus = "candidate"
    description: str | None = None
    created_at: UtcTime


class DatasetVersion(BaseModel):
    """One immutable version of a dataset: Parquet rows plus a manifest."""

    id: str
    name: str
    version: int
    kind: DatasetKind
    recipe: dict[str, Any]
    row_count: int
    content_hash: str
    path: str = Field(description="The Parquet file of the rows")
    manifest_path: str | None = None
    source_ids: dict[str, Any] = Field(
        default_factory=dict, description="counts of source records and the file listing their ids"
    )
    stats: dict[str, Any] = Field(default_factory=dict)
    scrubbed: int = 0
    created_at: UtcTime

    @property
    def ref(self) -> str:
        """Return ``name@version``."""
        return f"{self.name}@{self.version}"


class Job(BaseModel):
    """Long work (a training run, a dataset build, an eval) as one row: state, progress, metrics, log."""

    id: str
    kind: str
    config: dict[str, Any]
    state: JobState
    progress: float = 0.0
    metrics: list[dict[str, Any]] = Field(default_factory=list)
    log: str = ""
    error: str | None = None
    result: dict[str, Any] | None = None
    checkpoint: str | None = None
    output: str | None = None
    created_at: UtcTime
    started_at: UtcTime | None = None
    finished_at: UtcTime | None = None
    owner_pid: int | None = None  # the process running it; a dead one's job is failed on next open
    owner_host: str | None = None
    heartbeat_at: UtcTime | None = None  # its last write to the row
    cancel_requested: bool = False  # it stops at its next progress report


# --- routing rules (stored by posttrain.routing, declared in settings) -----------------------

_RULE_TEXT = 512


class CohortRule(BaseModel):
    """Requests whose attributes satisfy ``condition`` belong to ``cohort``."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    cohort: str = Field(min_length=1, max_length=_RULE_TEXT)
    condition: str = Field(min_length=1, max_length=2000)
    position: int = 0
    created_at: UtcTime | None = None

    @field_validator("condition")
    @classmethod
    def _parses(cls, value: str) -> str:
        parse_condition(value)
        return value


class RouteRule(BaseModel):
    """Requests from ``cohort`` asking for ``requested`` are served by ``model`` or ``experiment``."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    cohort: str | None = Field(
        None, max_length=_RULE_TEXT, description="The cohort it applies to; none means every cohort."
    )
    requested: str | None = Field(
        None, max_length=_RULE_TEXT, description="The model name requests ask for; none means any."
    )
    model: str | None = Field(None, max_length=_RULE_TEXT, description="The model that serves these requests.")
    experiment: str | None = Field(
        None, max_length=_RULE_TEXT, description="The experiment that serves these requests."
    )
    position: int = 0
    created_at: UtcTime | None = None

    @model_validator(mode="after")
    def _one_target(self) -> RouteRule:
        if (self.model is None) == (self.experiment is None):
            raise ValueError("a route needs exactly one of model and experiment")
        return self

    def matches(self, cohort: str | None, requested: str) -> bool:
        """Say whether a request from ``cohort`` for ``requested`` takes this route."""
        return (self.cohort is None or self.cohort == cohort) and (self.requested in (None, requested))

    def describe(self) -> str:
        who = f"cohort {self.cohort}" if self.cohort else "every cohort"
        asked = f"model {self.requested!r}" if self.requested else "any model"
        target = f"model {self.model}" if self.model else f"experiment {self.experiment}"
        return f"{who}, {asked} → {target}"
