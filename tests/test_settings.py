"""settings: one declared table, resolution order, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from posttrain import settings
from posttrain.errors import InvalidInput


def test_every_setting_has_a_description() -> None:
    described = list(settings.describe())
    assert len(described) >= 8
    assert all(help_text for _, _, help_text in described)


def test_load_resolution_order(tmp_path: Path) -> None:
    toml = tmp_path / "posttrain.toml"
    toml.write_text("[capture]\nmax_event_bytes = 1000\nmax_batch_events = 7\n")
    resolved = settings.load(
        toml, env={"POSTTRAIN_CAPTURE_MAX_BATCH_EVENTS": "8"}, overrides={"capture.max_body_bytes": 4096}
    )
    assert resolved.capture.max_event_bytes == 1000
    assert resolved.capture.max_batch_events == 8
    assert resolved.capture.max_body_bytes == 4096


def test_bad_value_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="server.port"):
        settings.load(None, env={"POSTTRAIN_SERVER_PORT": "99999"})
