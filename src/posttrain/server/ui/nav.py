"""The console's top navigation: its pages, each shown to the roles that may open it."""

from __future__ import annotations

from dataclasses import dataclass

from posttrain import keys
from posttrain.server.ui import session as sessions

READ = "console.read"  # overview, datasets, models, jobs, experiments, evals, playground (admin, viewer)


@dataclass(frozen=True)
class NavItem:
    """One entry of the top navigation: shown to the roles that may do ``action``."""

    key: str
    label: str
    path: str
    action: str


NAV = [
    NavItem("overview", "Overview", "/ui/overview", READ),
    NavItem("interactions", "Interactions", "/ui/interactions", "interactions.read"),
    NavItem("datasets", "Datasets", "/ui/datasets", READ),
    NavItem("models", "Models", "/ui/models", READ),
    NavItem("jobs", "Jobs", "/ui/jobs", READ),
    NavItem("experiments", "Experiments", "/ui/experiments", READ),
    NavItem("evals", "Evals", "/ui/evals", READ),
    NavItem("playground", "Playground", "/ui/playground", READ),
    NavItem("annotate", "Annotate", "/ui/annotate", "annotate.read"),
]


def allowed(role: str, action: str) -> bool:
    """Say whether ``role`` may do ``action`` (the rule ``keys.authorize`` enforces)."""
    return role in keys.PERMISSIONS[action]


def nav_for(session: sessions.Session | None) -> list[NavItem]:
    """Return the navigation entries ``session``'s role may open (none when signed out)."""
    if session is None:
        return []
    return [item for item in NAV if allowed(session.role, item.action)]


def home_for(session: sessions.Session | None) -> str:
    """Return the first page ``session`` may open: the overview, else annotation."""
    items = nav_for(session)
    return items[0].path if items else "/ui/annotate"
