"""The DPO collapse guard: a TrainerCallback that stops a run going bad and restores its best weights.

It watches three alarms, each at every log step (see docs in training notes, section 2):

- displacement: ``logps/chosen`` has fallen more than ``logp_drop`` nats below its first logged
  value while ``rewards/margins`` grew, i.e. the margin is bought by making everything unlikely;
- saturation: ``rewards/accuracies`` reached 1.0 with ``rewards/margins`` above
  ``saturation_margin`` within the first ``saturation_fraction`` of steps (accuracy alone is only
  the sign of the margin, so on easy pairs it is 1.0 after one healthy step);
- length: greedy generations on a fixed probe set of dataset prompts got more than
  ``length_growth`` longer on average (and at least 2 tokens longer), or at least half more of
  them now run to the token limit.

The best weights are those of the logged step with the largest reward margin while no alarm
sounded (the starting weights count, margin 0). On an alarm the guard stops training; when
training ends it loads the best weights back into the model, so what gets saved is that step.
The guard keeps one copy of the weights in CPU memory.

This module imports torch and transformers; ``posttrain.train.dpo`` imports it only when a run starts.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel
from transformers import PreTrainedTokenizerBase, TrainerCallback

from posttrain.jobs import JobHandle

__all__ = ["CollapseGuard", "GuardReport"]


class GuardReport(BaseModel):
    """What the guard saw: recorded in the job and in the registered model's metrics as ``guard``."""

    tripped: bool = False
    reason: str | None = None
    step: int | None = None
    restored_step: int = 0
    best_margin: float = 0.0
    probe_length_start: float | None = None
    probe_length_last: float | None = None


class CollapseGuard(TrainerCallback):
    """Stop DPO on likelihood displacement, early saturation or runaway generation length."""

    def __init__(
        self,
        job: JobHandle,
        tokenizer: PreTrainedTokenizerBase,
        probe_prompts: list[list[dict[str, str]]],
        *,
        logp_drop: float = 5.0,
        length_growth: float = 0.5,
        saturation_fraction: float = 0.1,
        saturation_margin: float = 1.0,
        probe_tokens: int = 32,
    ) -> None:
        self.job = job
        self.tokenizer = tokenizer
        self.probe_prompts = probe_prompts
        self.logp_drop = logp_drop
        self.length_growth = length_growth
        self.saturation_fraction = saturation_fraction
        self.saturation_margin = saturation_margin
        self.probe_tokens = probe_tokens
        self.report = GuardReport()
        self._first: dict[str, float] = {}
        self._start_hits = 0.0
        self._best: dict[str, torch.Tensor] | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self._best = _snapshot(model)
        self.report.restored_step = state.global_step
        self.report.probe_length_start, self._start_hits = self._probe(model)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        logs = logs or {}
        if "rewards/margins" not in logs or "logps/chosen" not in logs or self.report.tripped:
            return
        model = kw.get("model")
        if not self._first:
            self._first = {"logps/chosen": logs["logps/chosen"], "rewards/margins": logs["rewards/margins"]}
        reason = self._alarm(logs, state) or self._length_alarm(model)
        if reason is not None:
            self._trip(reason, state.global_step, control)
        elif logs["rewards/margins"] > self.report.best_margin:
            self._best = _snapshot(model)
            self.report.best_margin = float(logs["rewards/margins"])
            self.report.restored_step = state.global_step

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if self.report.tripped and self._best is not None:
            model.load_state_dict(self._best)
            self.job.log(f"guard: restored the weights of step {self.report.restored_step}")
        self._best = None  # free the copy

    def _alarm(self, logs: dict[str, Any], state: Any) -> str | None:
        drop = self._first["logps/chosen"] - logs["logps/chosen"]
        if drop > self.logp_drop and logs["rewards/margins"] > self._first["rewards/margins"]:
            return (
                f"likelihood displacement: logps/chosen fell {drop:.1f} nats (limit {self.logp_drop}) "
                f"while rewards/margins rose to {logs['rewards/margins']:.2f}"
            )
        early = state.global_step <= self.saturation_fraction * max(state.max_steps, 1)
        saturated = logs.get("rewards/accuracies", 0.0) >= 1.0 and logs["rewards/margins"] > self.saturation_margin
        if early and saturated:
            return (
                f"early saturation: rewards/accuracies hit 1.0 with margin {logs['rewards/margins']:.2f} at step "
                f"{state.global_step} of {state.max_steps} (pairs too easy or learning rate too high)"
            )
        return None

    def _length_alarm(self, model: Any) -> str | None:
        start = self.report.probe_length_start
        if model is None or not start:
            return None
        length, hits = self._probe(model)
        self.report.probe_length_last = length
        if length > start * (1 + self.length_growth) and length - start >= 2:
            return f"generation length: probe answers grew from {start:.1f} to {length:.1f} tokens"
        if hits - self._start_hits >= 0.5:
            return f"generation length: {hits:.0%} of probe answers now run to the {self.probe_tokens}-token limit"
        return None

    def _trip(self, reason: str, step: int, control: Any) -> None:
        self.report.tripped, self.report.reason, self.report.step = True, reason, step
        control.should_training_stop = True
        self.job.metric(step, guard_tripped=1.0, guard_restored_step=float(self.report.restored_step))
        self.job.log(f"guard tripped at step {step}: {reason}")

    @torch.no_grad()
    def _probe(self, model: Any) -> tuple[float, float]:
        """Return the mean greedy answer length (tokens) and the fraction hitting the limit."""
        if model is None or not self.probe_prompts:
            return 0.0, 0.0
        tok = self.tokenizer
        texts = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in self.probe_prompts]
        inputs = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        was_training = model.training
        model.eval()
        out = model.generate(**inputs, max_new_tokens=self.probe_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        model.train(was_training)
        lengths = [
            _answer_length(row, tok.eos_token_id, tok.pad_token_id) for row in out[:, inputs["input_ids"].shape[1] :]
        ]
        return sum(lengths) / len(lengths), sum(n >= self.probe_tokens for n in lengths) / len(lengths)


def _answer_length(tokens: torch.Tensor, eos: int | None, pad: int | None) -> int:
    for i, token in enumerate(tokens.tolist()):
        if token in (eos, pad):
            return i
    return len(tokens)


def _snapshot(model: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
