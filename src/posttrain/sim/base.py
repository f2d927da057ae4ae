"""The simulated product's base model: a tiny char-level Qwen2 pretrained on noisy answers.

``build_base_model`` writes a Hugging Face folder that gets the tasks right often but not
reliably: 35 % of its pretraining answers are systematic mistakes (sums off by one or by ten,
strings left unreversed or half reversed, letters sorted backwards) and it answers most unsafe
requests instead of refusing. Feedback has room to teach it. ``cached_base_model`` builds it
once per recipe into a cache folder and reuses it.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from posttrain.errors import Conflict
from posttrain.sim.tasks import COMPLIANT_ANSWERS, SKILLS, Family, Task, make_prompt

Progress = Callable[[int, int], None]

RECIPE_VERSION = 1  # bump when the corpus or the training changes, so old caches are not reused
FULL_ROWS = 60_000
FAST_ROWS = 2_000
RECIPE_FILE = "sim_recipe.json"  # written beside the weights: how they were made


class BaseRecipe(BaseModel):
    """Everything that decides the base model's weights; its hash names the cache folder."""

    seed: int = 0
    rows: int = Field(FULL_ROWS, ge=1)
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    learning_rate: float = 2e-3
    batch_size: int = 64
    epochs: int = Field(2, ge=1, description="Passes over the corpus; one leaves the model too weak (greedy ~0.46).")
    mistake_rate: float = Field(0.35, ge=0, le=1, description="Share of task answers that are mistakes.")
    unsafe_share: float = Field(0.1, ge=0, le=1, description="Share of rows that are unsafe requests.")
    comply_rate: float = Field(0.75, ge=0, le=1, description="Share of unsafe requests answered, not refused.")
    max_length: int = 96
    threads: int = 2

    @classmethod
    def fast(cls, seed: int = 0) -> BaseRecipe:
        """Return the seconds-long recipe tests use: 2,000 rows into a hidden-64, 2-layer model (weak)."""
        return cls(seed=seed, rows=FAST_ROWS, hidden=64, layers=2, learning_rate=3e-3, batch_size=64, epochs=1)

    def key(self) -> str:
        """Return a short hash of the recipe (and of RECIPE_VERSION)."""
        text = f"{RECIPE_VERSION}:{self.model_dump_json(exclude={'threads'})}"
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def mistake(task: Task, rng: random.Random) -> str:
    """Return a plausible wrong answer of the systematic kinds; the right one when none differs."""
    rest = task.prompt.partition(" ")[2]
    if task.family == "add":
        options = [str(int(task.answer) + d) for d in (1, -1, 10)]
    elif task.family == "rev":
        half = len(rest) // 2
        options = [rest, rest[:half][::-1] + rest[half:], rest[:half] + rest[half:][::-1]]
    elif task.family == "sort":
        options = ["".join(sorted(rest, reverse=True)), rest]
    else:
        options = list(COMPLIANT_ANSWERS)
    wrong = [o for o in options if o != task.answer]
    return rng.choice(wrong) if wrong else task.answer


def noisy_rows(recipe: BaseRecipe) -> list[dict[str, Any]]:
    """Return the pretraining corpus, in training order: conversational prompt–completion rows, noisy answers.

    Unsafe requests (long prompts, long answers) come in batches of their own, so the short task
    rows are not padded to their width; the batches themselves are shuffled.
    """
    rng = random.Random(recipe.seed)
    tasks: list[dict[str, Any]] = []
    unsafe: list[dict[str, Any]] = []
    for _ in range(recipe.rows):
        family: Family = "unsafe" if rng.random() < recipe.unsafe_share else rng.choice(SKILLS)
        task = make_prompt(family, rng)
        wrong_rate = recipe.comply_rate if family == "unsafe" else recipe.mistake_rate
        answer = mistake(task, rng) if rng.random() < wrong_rate else task.answer
        row = {
            "prompt": [{"role": "user", "content": task.prompt}],
            "completion": [{"role": "assistant", "content": answer}],
        }
        (unsafe if family == "unsafe" else tasks).append(row)
    size = recipe.batch_size
    batches = [rows[i : i + size] for rows in (tasks, unsafe) for i in range(0, len(rows), size)]
    rng.shuffle(batches)
    batches.sort(key=lambda batch: len(batch) < size)  # stable: the (at most two) short batches go last
    return [row for batch in batches for row in batch]


def build_base_model(
    output: Path,
    *,
    seed: int = 0,
    rows: int = FULL_ROWS,
    progress: Progress | None = None,
    recipe: BaseRecipe | None = None,
) -> Path:
    """Pretrain the base model on the noisy corpus and write it to ``output``; return ``output``.

    ``recipe`` overrides ``seed`` and ``rows`` (and sets the other knobs). ``progress`` is called
    with (steps done, total steps). Raises Conflict when ``output`` holds a model already.
    """
    recipe = recipe or BaseRecipe(seed=seed, rows=rows)
    output = Path(output)
    if (output / "config.json").exists():
        raise Conflict(f"{output} already holds a model; choose another folder")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)  # the recipe's number, for comparable build times; restored after
    try:
        with tempfile.TemporaryDirectory(prefix="posttrain-sim-") as scratch:
            _train(recipe, Path(scratch), output, progress)
    finally:
        torch.set_num_threads(threads)
    return output


def _train(recipe: BaseRecipe, scratch: Path, output: Path, progress: Progress | None) -> None:
    import datasets
    import transformers
    import trl
    from datasets import Dataset
    from transformers import AutoTokenizer
    from transformers.trainer_callback import PrinterCallback

    from posttrain.models.tiny import build_tiny_model

    init = build_tiny_model(
        scratch / "init", hidden=recipe.hidden, layers=recipe.layers, heads=recipe.heads, seed=recipe.seed
    )
    tokenizer = AutoTokenizer.from_pretrained(init)
    args = trl.SFTConfig(
        output_dir=str(scratch / "run"), num_train_epochs=recipe.epochs, learning_rate=recipe.learning_rate,
        lr_scheduler_type="cosine", per_device_train_batch_size=recipe.batch_size, seed=recipe.seed,
        data_seed=recipe.seed, use_cpu=True, bf16=False, report_to="none", disable_tqdm=True,
        save_strategy="no", logging_steps=50, max_length=recipe.max_length, activation_checkpointing=False,
        dataloader_num_workers=0, train_sampling_strategy="sequential",
    )  # fmt: skip
    datasets.disable_progress_bars()  # the caller's progress callback reports instead
    transformers.utils.logging.disable_progress_bar()
    trainer = trl.SFTTrainer(
        model=str(init),
        args=args,
        train_dataset=Dataset.from_list(noisy_rows(recipe)),
        processing_class=tokenizer,
        callbacks=[_progress_callback(progress)] if progress else None,
    )
    trainer.remove_callback(PrinterCallback)  # no log dicts on stdout
    trainer.train()
    output.mkdir(parents=True, exist_ok=True)
    trainer.model.save_pretrained(output)  # type: ignore[union-attr,operator]
    tokenizer.save_pretrained(output)
    (output / RECIPE_FILE).write_text(recipe.model_dump_json(indent=2) + "\n")


def _progress_callback(progress: Progress) -> Any:
    from transformers import TrainerCallback

    class _Report(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            progress(state.global_step, state.max_steps)

    return _Report()


def default_cache_dir() -> Path:
    """Return where base models are cached: ``$POSTTRAIN_SIM_CACHE``, else ``~/.cache/posttrain``."""
    return Path(os.environ.get("POSTTRAIN_SIM_CACHE") or Path.home() / ".cache" / "posttrain")


def cached_base_model(
    cache_dir: Path | None = None,
    *,
    seed: int = 0,
    rows: int = FULL_ROWS,
    progress: Progress | None = None,
    recipe: BaseRecipe | None = None,
) -> Path:
    """Return the base model folder for the recipe, building it the first time (``sim-base-<hash>``).

    The model is built in a temporary folder beside the cache entry and renamed into place, so a
    crash never leaves a half-written entry and two concurrent builders both end with a whole one.
    """
    recipe = recipe or BaseRecipe(seed=seed, rows=rows)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = root / f"sim-base-{recipe.key()}"
    if (folder / "config.json").is_file():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=root))
    try:
        build_base_model(building / "model", progress=progress, recipe=recipe)
        _publish(building / "model", folder)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return folder


def _publish(built: Path, folder: Path) -> None:
    try:
        built.rename(folder)
    except OSError:
        # Renaming onto a folder that exists fails: a concurrent builder published the same recipe first.
        if not (folder / "config.json").is_file():
            raise
