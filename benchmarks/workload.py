"""Realistic capture events for the benchmarks: chat interactions and OpenAI-style chat logs.

Text is drawn from a fixed pool of sentences (so generating a million rows stays cheap) and every
event carries a unique marker, so no two events share content (content-derived ids stay unique).
"""

from __future__ import annotations

import random
from typing import Any

_WORDS = [
    "the",
    "model",
    "answer",
    "user",
    "question",
    "data",
    "refund",
    "order",
    "account",
    "password",
    "reset",
    "shipping",
    "invoice",
    "latency",
    "token",
    "context",
    "window",
    "retrieval",
    "policy",
    "tool",
    "call",
    "function",
    "summary",
    "translate",
    "email",
    "draft",
    "review",
    "code",
    "python",
    "error",
    "stack",
    "trace",
    "database",
    "query",
    "index",
    "cache",
    "timeout",
    "retry",
    "please",
    "thanks",
    "could",
    "you",
    "explain",
    "why",
    "how",
    "when",
    "where",
    "which",
    "first",
    "second",
    "step",
    "example",
    "detail",
    "simple",
]
_SYSTEM_PROMPTS = [
    "You are a helpful support assistant for an online store. Answer briefly, cite the policy "
    "section you rely on, and never promise refunds the policy does not allow.",
    "You are a coding assistant. Prefer short, runnable examples; explain the cause of an error "
    "before the fix; ask for the stack trace when it is missing.",
    "You are a travel planner. Keep answers under 150 words, give two options with prices, and "
    "mention visa requirements when the user crosses a border.",
]
_MODELS = ["gpt-4o-mini", "llama-3.1-8b-sft-v3", "qwen2.5-7b-dpo-v1"]
_COHORTS = ["free", "pro", "enterprise", "internal"]
_TAGS = ["support", "billing", "code", "travel", "escalated", "thumbs_up", "long_context", "tool_use"]
_APPS = ["web", "ios", "android", "api"]
_REGIONS = ["eu-west-1", "us-east-1", "ap-south-1"]


def _sentence_pool(rng: random.Random, size: int = 4096) -> list[str]:
    pool = []
    for _ in range(size):
        words = rng.choices(_WORDS, k=rng.randint(8, 16))
        pool.append(" ".join(words).capitalize() + ".")
    return pool


class Workload:
    """A deterministic source of interactions (client-side ids) and OpenAI chat logs."""

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed)
        self._pool = _sentence_pool(self._rng)

    def _text(self, sentences: int) -> str:
        return " ".join(self._rng.choices(self._pool, k=sentences))

    def _conversation(self, marker: str) -> list[dict[str, Any]]:
        rng = self._rng
        messages = [
            {"role": "system", "content": rng.choice(_SYSTEM_PROMPTS)},
            {"role": "user", "content": f"{self._text(rng.randint(1, 3))} (ref {marker})"},
        ]
        if rng.random() < 0.4:  # a follow-up turn
            messages.append({"role": "assistant", "content": self._text(rng.randint(2, 3))})
            messages.append({"role": "user", "content": self._text(rng.randint(1, 2))})
        return messages

    def interaction(self, index: int, *, with_id: bool = True) -> dict[str, Any]:
        """Return one interaction as a client sends it to ``POST /api/capture/interactions``."""
        rng = self._rng
        prompt_tokens = rng.randint(80, 900)
        event: dict[str, Any] = {
            "timestamp": f"2025-06-{1 + index % 28:02d}T{index % 24:02d}:{index % 60:02d}:"
            f"{rng.randint(0, 59):02d}.{rng.randint(0, 999_999):06d}Z",
            "user_id": f"user_{rng.randint(1, 50_000)}",
            "session_id": f"sess_{rng.getrandbits(48):012x}",
            "cohort": rng.choice(_COHORTS),
            "messages": self._conversation(f"{index}"),
            "response": self._text(rng.randint(1, 3)),
            "model": rng.choice(_MODELS),
            "latency_ms": round(rng.uniform(120, 4000), 1),
            "prompt_tokens": prompt_tokens,
            "completion_tokens": rng.randint(20, 400),
            "cost": round(prompt_tokens * 2.5e-6, 6),
            "tags": rng.sample(_TAGS, k=rng.randint(1, 3)),
            "metadata": {
                "app": rng.choice(_APPS),
                "region": rng.choice(_REGIONS),
                "request_id": f"req_{rng.getrandbits(64):016x}",
                "temperature": 0.7,
            },
        }
        if with_id:
            event = {"id": f"{rng.getrandbits(128):032x}", **event}
        return event

    def interactions(self, start: int, count: int) -> list[dict[str, Any]]:
        """Return ``count`` interactions numbered from ``start``."""
        return [self.interaction(i) for i in range(start, start + count)]

    def openai_log(self, index: int) -> dict[str, Any]:
        """Return one OpenAI-style chat log: the response is the last assistant message."""
        messages = self._conversation(f"oa{index}")
        messages.append({"role": "assistant", "content": self._text(self._rng.randint(1, 3))})
        return {"messages": messages}
