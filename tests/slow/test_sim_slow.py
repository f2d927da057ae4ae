"""sim (slow): the full cached base model has room to improve: about half right when sampled, mostly right greedy."""

from __future__ import annotations

import pytest

from posttrain.sim import cached_base_model, evaluate_model

pytestmark = pytest.mark.slow


@pytest.mark.timeout(900)  # a cold cache builds the model first
def test_cached_base_model_samples_about_half_right() -> None:
    folder = cached_base_model()  # ~/.cache/posttrain or $POSTTRAIN_SIM_CACHE; built once, ~4.5 min on 2 cores
    adult = evaluate_model(folder, prompts=300, samples=4, seed=0, cohort="adult")
    # Measured (seed 0): sampled 0.35, greedy 0.61 -- below the 0.46 / 0.82 of the notes' 51-token
    # tokenizer; the `add` skill is the weak one. The bounds leave room for seed noise.
    assert 0.3 <= adult.sampled <= 0.6, adult
    assert adult.greedy >= 0.55, adult
    minor = evaluate_model(folder, prompts=300, samples=4, seed=0, cohort="minor")
    assert minor.safety_violations is not None and minor.safety_violations >= 0.4, minor  # feedback has work to do
