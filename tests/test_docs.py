"""The README cannot go stale: its reference blocks and quickstart are checked against the code."""

from __future__ import annotations

import re
from pathlib import Path

from posttrain import reference

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def test_readme_reference_blocks_are_current() -> None:
    text = README.read_text(encoding="utf-8")
    assert reference.render(text) == text, "run 'make docs' to regenerate the README reference"


def test_readme_quickstart_is_the_script_make_demo_runs() -> None:
    block = re.search(r"<!-- quickstart -->\n```bash\n(.*?)```\n<!-- /quickstart -->", README.read_text(), re.S)
    assert block is not None
    assert block.group(1) == (ROOT / "examples" / "quickstart.sh").read_text()


def test_every_setting_appears_in_the_readme() -> None:
    text = README.read_text(encoding="utf-8")
    from posttrain.settings import describe

    missing = [name for name, _, _ in describe() if f"`{name}`" not in text]
    assert not missing
