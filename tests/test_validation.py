"""Pydantic's validation errors as InvalidInput (posttrain.validation)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError, field_validator, model_validator

from posttrain.errors import InvalidInput
from posttrain.validation import invalid_input


class _Suite(BaseModel):
    scorers: list[str]
    samples: int = 1

    @field_validator("scorers")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        if "x" in value:
            raise ValueError("verifier 'x': no such verifier; see posttrain.toml [functions]")
        return value

    @model_validator(mode="after")
    def _enough(self) -> _Suite:
        if self.samples > len(self.scorers) * 10:
            raise ValueError("samples: at most 10 per scorer")
        return self


def _error(data: dict[str, object]) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        _Suite.model_validate(data)
    return caught.value


def test_invalid_input_drops_pydantics_value_error_prefix() -> None:
    invalid = invalid_input(_error({"scorers": ["x"]}), prefix="suite.")
    assert isinstance(invalid, InvalidInput)
    assert invalid.message == "suite.scorers: verifier 'x': no such verifier; see posttrain.toml [functions]"
    assert invalid.field == "scorers"


@pytest.mark.parametrize(
    ("data", "field", "expected_field", "expected_message"),
    [
        ({"scorers": "a"}, None, "scorers", "scorers: Input should be a valid list"),
        ({"scorers": ["a"], "samples": 11}, None, None, "samples: at most 10 per scorer"),
        ({"scorers": ["a"], "samples": 11}, "suite", "suite", "suite: samples: at most 10 per scorer"),
    ],
)
def test_invalid_input_names_the_field(
    data: dict[str, object], field: str | None, expected_field: str | None, expected_message: str
) -> None:
    invalid = invalid_input(_error(data), field=field)
    assert (invalid.field, invalid.message) == (expected_field, expected_message)
