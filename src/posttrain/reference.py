"""Generate the README's reference sections (CLI, HTTP, roles, settings) from the code itself.

``python -m posttrain.reference README.md`` rewrites the blocks between
``<!-- reference:NAME -->`` and ``<!-- /reference:NAME -->``; a test fails when they are stale.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def _commands(group: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    # duck-typed: typer ships its own copy of click's Group and Command
    for name, command in group.commands.items():
        if command.hidden:
            continue
        path = f"{prefix} {name}"
        if hasattr(command, "commands"):
            yield from _commands(command, path)
        else:
            yield path, command


def _param_line(param: Any) -> str:
    if param.param_type_name == "argument":
        return f"`{(param.name or '').upper()}` {getattr(param, 'help', '') or ''}".strip()
    help_text = getattr(param, "help", None) or ""
    return f"`{' / '.join(param.opts)}` {help_text}".strip()


def cli_reference() -> str:
    """Return every command with its one-line help and its arguments and options."""
    import typer

    from posttrain.cli import app

    root = typer.main.get_command(app)
    lines = []
    for path, command in _commands(root, "posttrain"):
        params = [p for p in command.params if p.name != "help"]
        lines.append(f"- **`{path}`** — {(command.help or '').strip().splitlines()[0]}")
        lines.extend(f"  - {_param_line(p)}" for p in params)
    return "\n".join(lines)


def http_reference() -> str:
    """Return every HTTP route with its summary, from the app's OpenAPI document."""
    from posttrain.server.app import route_table

    lines = ["| method | path | what it does |", "|---|---|---|"]
    lines += [f"| {method} | `{path}` | {summary} |" for method, path, summary in route_table()]
    return "\n".join(lines)


def roles_reference() -> str:
    """Return which role may do which action."""
    from posttrain.keys import PERMISSIONS
    from posttrain.records import ROLES

    lines = ["| action | " + " | ".join(ROLES) + " |", "|---" * (len(ROLES) + 1) + "|"]
    for action, allowed in PERMISSIONS.items():
        marks = " | ".join("✓" if role in allowed else "" for role in ROLES)
        lines.append(f"| `{action}` | {marks} |")
    return "\n".join(lines)


def settings_reference() -> str:
    """Return every setting, its default, its environment variable and what it does."""
    from posttrain.settings import describe

    lines = ["| setting | default | environment | what it does |", "|---|---|---|---|"]
    for name, default, help_text in describe():
        env = "POSTTRAIN_" + name.replace(".", "_").upper()
        lines.append(f"| `{name}` | `{default}` | `{env}` | {help_text} |")
    return "\n".join(lines)


SECTIONS: dict[str, Callable[[], str]] = {
    "cli": cli_reference,
    "http": http_reference,
    "roles": roles_reference,
    "settings": settings_reference,
}


def render(text: str) -> str:
    """Return ``text`` with every reference block regenerated."""
    for name, make in SECTIONS.items():
        pattern = re.compile(rf"(<!-- reference:{name} -->\n).*?(<!-- /reference:{name} -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"README lacks the block <!-- reference:{name} --> … <!-- /reference:{name} -->")
        body = make()
        text = pattern.sub(lambda m, body=body: f"{m.group(1)}{body}\n{m.group(2)}", text)  # type: ignore[misc]
    return text


def main(argv: list[str] | None = None) -> Any:
    """Rewrite the reference blocks of the README given as the first argument."""
    path = Path((argv or sys.argv[1:] or ["README.md"])[0])
    path.write_text(render(path.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"updated {path}")


if __name__ == "__main__":
    main()
