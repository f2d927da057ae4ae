"""posttrain: the post-training data flywheel as one Python system.

The public API is exactly ``__all__``; every other module is an implementation detail.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from posttrain.errors import (
    Conflict,
    DependencyMissing,
    Forbidden,
    InvalidInput,
    JobFailed,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    PosttrainError,
    Unauthorized,
    Unavailable,
    WarehouseBusy,
)
from posttrain.project import Project, init_project, open_project
from posttrain.records import Feedback, Interaction
from posttrain.version import __version__

if TYPE_CHECKING:
    from posttrain.client import AsyncClient, Client

__all__ = [
    "AsyncClient",
    "Client",
    "Conflict",
    "DependencyMissing",
    "Feedback",
    "Forbidden",
    "Interaction",
    "InvalidInput",
    "JobFailed",
    "NotFound",
    "Overloaded",
    "PayloadTooLarge",
    "PosttrainError",
    "Project",
    "Unauthorized",
    "Unavailable",
    "WarehouseBusy",
    "__version__",
    "init_project",
    "open_project",
]


def __getattr__(name: str) -> Any:
    # the SDK pulls in httpx; load it only for those who use it
    if name in ("Client", "AsyncClient"):
        from posttrain import client

        return getattr(client, name)
    raise AttributeError(f"module 'posttrain' has no attribute {name!r}")
