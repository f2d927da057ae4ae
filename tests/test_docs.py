"""The README cannot go stale: its reference blocks and quickstart are checked against the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from posttrain import reference

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def test_readme_reference_blocks_are_current() -> None:
    text = README.read_text(encoding="utf-8")
    assert reference.render(text) == text, "run 'make docs' to regenerate the README reference"


@pytest.mark.parametrize(
    ("marker", "script"), [("quickstart", "quickstart.sh"), ("train-quickstart", "train_quickstart.sh")]
)
def test_readme_quickstarts_are_the_scripts_make_quickstart_runs(marker: str, script: str) -> None:
    block = re.search(rf"<!-- {marker} -->\n```bash\n(.*?)```\n<!-- /{marker} -->", README.read_text(), re.S)
    assert block is not None
    assert block.group(1) == (ROOT / "examples" / script).read_text()
    assert f"examples/{script}" in (ROOT / "Makefile").read_text()


def test_every_setting_appears_in_the_readme() -> None:
    text = README.read_text(encoding="utf-8")
    from posttrain.settings import describe

    missing = [name for name, _, _ in describe() if f"`{name}`" not in text]
    assert not missing
