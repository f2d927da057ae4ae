"""posttrain's one exception tree.

    PosttrainError                 500  base class
    ├── InvalidInput               400  a value is wrong; ``field`` names it
    │   └── PayloadTooLarge        413  a body, batch or event over its limit
    ├── Unauthorized               401  no key, or a key that is unknown or revoked
    ├── Forbidden                  403  the key's role may not do this
    ├── NotFound                   404  no such record
    ├── Conflict                   409  the record exists, or the state forbids it
    ├── Overloaded                 429  the ingest backlog is full; retry after ``retry_after`` s
    ├── WarehouseBusy              409  another process (``posttrain serve``) owns the warehouse
    ├── Unavailable                503  storage failed; nothing was acknowledged, retry
    ├── DependencyMissing          500  an optional extra is not installed
    └── JobFailed                  500  long work failed; the job row keeps its log

The server renders every one of them as ``{"error": {"type", "message", "field"}}`` with
``status``; the CLI prints ``error: <message>`` on one line and exits with ``exit_code``.
"""

from __future__ import annotations


class PosttrainError(Exception):
    """Base of every error posttrain raises on purpose."""

    status = 500
    exit_code = 1

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, str | None]:
        """Return the JSON error body the server sends."""
        return {"type": type(self).__name__, "message": self.message, "field": self.field}


class InvalidInput(PosttrainError):
    status = 400
    exit_code = 2


class PayloadTooLarge(InvalidInput):
    status = 413


class Unauthorized(PosttrainError):
    status = 401
    exit_code = 2


class Forbidden(PosttrainError):
    status = 403
    exit_code = 2


class NotFound(PosttrainError):
    status = 404
    exit_code = 2


class Conflict(PosttrainError):
    status = 409
    exit_code = 2


class Overloaded(PosttrainError):
    status = 429

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class WarehouseBusy(Conflict):
    pass


class Unavailable(PosttrainError):
    status = 503


class DependencyMissing(PosttrainError):
    exit_code = 2


class JobFailed(PosttrainError):
    pass


class UpstreamFailed(PosttrainError):
    """An OpenAI-compatible upstream failed or could not be reached (502)."""

    status = 502


_BY_STATUS: dict[int, type[PosttrainError]] = {
    400: InvalidInput,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    503: Unavailable,
}


def for_status(
    status: int, message: str, *, field: str | None = None, retry_after: float | None = None
) -> PosttrainError:
    """Return the error a server's HTTP status stands for (the inverse of ``status``)."""
    if status == 429:
        return Overloaded(message, retry_after=1.0 if retry_after is None else retry_after)
    return _BY_STATUS.get(status, PosttrainError)(message, field=field)
