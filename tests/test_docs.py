"""The docs cannot go stale: the generated reference, the walk-throughs, links and commands are checked."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from posttrain import reference

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
GUIDES = sorted((DOCS / "guides").glob("*.md"))
PAGES = [README, *sorted(DOCS.rglob("*.md"))]
_FENCE = re.compile(r"^```.*?^```", re.S | re.M)


@pytest.mark.parametrize("name", list(reference.PAGES))
def test_reference_page_is_current(name: str) -> None:
    page = DOCS / "reference" / name
    assert page.exists() and page.read_text(encoding="utf-8") == reference.pages()[name], (
        f"docs/reference/{name} is stale: run 'make docs'"
    )


def test_reference_shows_no_unset_sentinel() -> None:
    for page in PAGES:
        assert "PydanticUndefined" not in page.read_text(encoding="utf-8"), page


def test_cli_reference_prints_shared_options_once() -> None:
    text = (DOCS / "reference" / "cli.md").read_text(encoding="utf-8")
    assert text.count("`--project / -p` Project folder") == 1
    assert text.count("`--json` Print JSON") == 1


@pytest.mark.parametrize(
    ("guide", "marker", "script"),
    [
        ("capture.md", "quickstart", "quickstart.sh"),
        ("datasets-and-training.md", "train-quickstart", "train_quickstart.sh"),
        ("annotation.md", "annotate-quickstart", "annotate_quickstart.sh"),
        ("curation.md", "curate-quickstart", "curate_quickstart.sh"),
    ],
)
def test_guide_walk_through_is_the_script_make_quickstart_runs(guide: str, marker: str, script: str) -> None:
    text = (DOCS / "guides" / guide).read_text(encoding="utf-8")
    block = re.search(rf"<!-- {marker} -->\n```bash\n(.*?)```\n<!-- /{marker} -->", text, re.S)
    assert block is not None
    assert block.group(1) == (ROOT / "examples" / script).read_text()
    assert f"examples/{script}" in (ROOT / "Makefile").read_text()


def test_every_setting_is_in_the_settings_reference() -> None:
    from posttrain.settings import describe

    text = (DOCS / "reference" / "settings.md").read_text(encoding="utf-8")
    assert [name for name, _, _ in describe() if f"`{name}`" not in text] == []


def _links(page: Path) -> list[str]:
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    return re.findall(r"\]\(([^)\s]+)\)", text)


def _anchors(page: Path) -> set[str]:
    """Return the anchors GitHub gives the headings of ``page``."""
    headings = re.findall(r"^#+ (.+)$", _FENCE.sub("", page.read_text(encoding="utf-8")), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve_inside_the_repository(page: Path) -> None:
    for link in _links(page):
        if re.match(r"[a-z]+:", link):
            continue  # a web address
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        assert target.is_relative_to(ROOT), f"{page.name}: {link} points outside the repository"
        assert target.exists(), f"{page.name}: {link} does not exist"
        if anchor and target.suffix == ".md":
            assert anchor in _anchors(target), f"{page.name}: {link} names no heading of {target.name}"


def test_readme_is_a_front_door() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    linked = {(ROOT / link.partition("#")[0]).resolve() for link in _links(README)}
    pages = [*GUIDES, *(DOCS / "reference" / name for name in reference.PAGES)]
    assert [p.name for p in pages if p.resolve() not in linked] == []
    assert "make demo" in text and "make test" in text


def _words(line: str) -> list[str]:
    """Split a shell line into words and operators (``&&``, ``|``, ``>``...); [] if it is not shell."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split, lexer.commenters = True, "#"
    try:
        return list(lexer)
    except ValueError:  # a line of an embedded Python script
        return []


def _commands_in(page: Path) -> list[list[str]]:
    """Return every ``posttrain ...`` command of the page's bash blocks, as argument lists."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", page.read_text(encoding="utf-8"), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            command: list[str] = []
            for word in [*_words(line), ";"]:
                if not set(word) <= set("&|;<>()"):
                    command.append(word)
                    continue
                if command[:1] == ["posttrain"]:
                    found.append(command[1:])
                command = ["(a file name)"] if ">" in word else []
    return found


def _parse(args: list[str]) -> Any:
    import typer

    from posttrain.cli import app

    command: Any = typer.main.get_command(app)
    while hasattr(command, "commands") and args and args[0] in command.commands:
        command, args = command.commands[args[0]], args[1:]
    assert not hasattr(command, "commands"), f"no such command: {args}"
    return command.make_context(command.name, list(args))


@pytest.mark.parametrize("page", [README, *GUIDES], ids=lambda p: p.name)
def test_documented_commands_parse(page: Path) -> None:
    commands = _commands_in(page)
    assert commands
    for args in commands:
        _parse(args)


@pytest.mark.slow
def test_readme_quickstart_runs_as_written() -> None:
    block = re.search(
        r"<!-- readme-quickstart -->\n```bash\n(.*?)```\n<!-- /readme-quickstart -->", README.read_text(), re.S
    )
    assert block is not None
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("POSTTRAIN_PROJECT", None)
    out = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.group(1)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "registered causal-lm sft1" in out.stdout and "dataset accepted@1" in out.stdout
