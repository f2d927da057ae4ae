"""Tokens/s of `posttrain train sft` beside a plain TRL SFTTrainer script, same model, data, settings.

posttrain's run adds a job row (progress and every log written to the warehouse), dataset
resolution, model registration (content hash) and lineage; the target is that all this costs
≤ 5% of throughput, and that with packing posttrain beats the plain (unpacked) script.
Usage: python benchmarks/train_sft.py [--quick]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Figure, fmt, print_header, print_table, verdict  # noqa: E402

from posttrain import datasets  # noqa: E402
from posttrain.models.tiny import init_tiny  # noqa: E402
from posttrain.project import Project, init_project  # noqa: E402
from posttrain.train.sft import SFTConfig, train_sft  # noqa: E402

LETTERS = "abcdefgh"


def toy_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Prompt–completion rows of the utility-assistant task (add, reverse, sort)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        task = rng.choice(["add", "rev", "sort"])
        if task == "add":
            a, b = rng.randrange(100), rng.randrange(100)
            prompt, answer = f"add {a} {b}", str(a + b)
        else:
            s = "".join(rng.choice(LETTERS) for _ in range(rng.randint(3, 6)))
            prompt, answer = f"{task} {s}", s[::-1] if task == "rev" else "".join(sorted(s))
        rows.append(
            {"prompt": [{"role": "user", "content": prompt}], "completion": [{"role": "assistant", "content": answer}]}
        )
    return rows


def count_tokens(tokenizer: Any, rows: list[dict[str, Any]]) -> int:
    """Tokens the trainer sees per epoch: the chat-formatted prompt plus completion of every row."""
    texts = [tokenizer.apply_chat_template(r["prompt"] + r["completion"], tokenize=False) for r in rows]
    return sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])


def plain_trl(model_path: str, rows: list[dict[str, Any]], out: Path, settings: dict[str, Any]) -> float:
    """The baseline: a plain TRL script on the same model, rows and settings; return wall seconds."""
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(model_path)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    args = trl.SFTConfig(
        output_dir=str(out),
        num_train_epochs=1,
        learning_rate=settings["lr"],
        per_device_train_batch_size=settings["batch"],
        max_length=settings["max_length"],
        seed=0,
        use_cpu=True,
        bf16=False,
        report_to="none",
        disable_tqdm=True,
        save_strategy="steps",
        save_steps=100,
        save_total_limit=2,
        logging_steps=5,
        gradient_checkpointing=False,
        dataloader_num_workers=0,
    )
    trainer = trl.SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    trainer.train()
    trainer.save_model(str(out / "final"))
    return time.perf_counter() - started


def posttrain_sft(project: Project, output: str, settings: dict[str, Any], *, packing: bool) -> float:
    """`posttrain train sft` through the library (what the CLI calls); return wall seconds."""
    config = SFTConfig(
        model="base",
        dataset="toy",
        output=output,
        epochs=1,
        learning_rate=settings["lr"],
        batch_size=settings["batch"],
        max_length=settings["max_length"],
        seed=0,
        packing=packing,
    )
    started = time.perf_counter()
    train_sft(project, config)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small run (< 1 minute)")
    args = parser.parse_args()
    import torch
    from transformers import AutoTokenizer

    torch.set_num_threads(2)
    n, repeats = (600, 1) if args.quick else (4000, 2)
    settings = {"lr": 1e-4, "batch": 32, "max_length": 64}
    work = Path(tempfile.mkdtemp(prefix="posttrain-bench-sft-"))
    try:
        project = init_project(work / "proj")
        base = init_tiny(project, "base", arch="qwen2", hidden=128, layers=4)
        rows = toy_rows(n)
        datasets.write_version(project, "toy", "sft", pa.Table.from_pylist(rows), recipe={"bench": "toy"}, sources={})
        tokens = count_tokens(AutoTokenizer.from_pretrained(base.path), rows)
        print_header(
            "posttrain train sft vs plain TRL SFTTrainer",
            [
                ("model", "Qwen2 h128 L4 (tiny, from scratch)"),
                ("rows / tokens", f"{n:,} / {tokens:,} per epoch"),
                ("settings", "1 epoch, batch 32, lr 1e-4, max_length 64, CPU fp32"),
                ("repeats", str(repeats)),
            ],
        )
        plain_trl(base.path, rows[:64], work / "warmup", settings)  # imports and kernels warm for both sides
        plain, ours, packed = [], [], []
        for i in range(repeats):
            plain.append(plain_trl(base.path, rows, work / f"plain{i}", settings))
            ours.append(posttrain_sft(project, f"sft{i}", settings, packing=False))
            packed.append(posttrain_sft(project, f"packed{i}", settings, packing=True))
        tps = {k: tokens / statistics.median(v) for k, v in (("plain", plain), ("ours", ours), ("packed", packed))}
        overhead = (tps["plain"] - tps["ours"]) / tps["plain"] * 100
        print_table(
            [
                Figure("plain TRL SFTTrainer script", tps["plain"], "tok/s", "the baseline"),
                Figure("posttrain train sft", tps["ours"], "tok/s", fmt(tps["plain"], "tok/s")),
                Figure(
                    "overhead of posttrain",
                    overhead,
                    "%",
                    "0 %",
                    "<= 5 %",
                    verdict(overhead, 5, higher_is_better=False),
                ),
                Figure(
                    "posttrain train sft --packing",
                    tps["packed"],
                    "tok/s",
                    fmt(tps["plain"], "tok/s"),
                    "> baseline",
                    verdict(tps["packed"], tps["plain"]),
                ),
            ]
        )
        print(
            f"  wall seconds (median of {repeats}): plain {statistics.median(plain):.2f}, "
            f"posttrain {statistics.median(ours):.2f}, posttrain packed {statistics.median(packed):.2f}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
