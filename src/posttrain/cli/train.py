"""``posttrain train sft|reward|dpo|grpo|rloo|distill``: one command per training method.

Every field of a method's config is a flag (``--learning-rate``, ``--lora/--no-lora`` ...), with
the field's description as its help; ``--config FILE.yaml`` gives the same settings as a file and
flags win over it. Adding a method is one ``_add(...)`` call: name, config class, train function.
A field whose type is not a flag type (a dict, say) takes ``json_schema_extra={"cli": False}``.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic.fields import FieldInfo
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from posttrain.cli import render
from posttrain.cli.options import JsonOption, ProjectOption, load, remote_for
from posttrain.cli.remote import Remote
from posttrain.records import ModelRecord
from posttrain.train.distill import DistillConfig, train_distill
from posttrain.train.dpo import DPOConfig, train_dpo
from posttrain.train.grpo import GRPOConfig, RLOOConfig, train_grpo, train_rloo
from posttrain.train.reward import RewardConfig, train_reward
from posttrain.train.runner import TrainConfig, load_config
from posttrain.train.sft import SFTConfig, train_sft

app = typer.Typer(
    help="Train models: SFT, reward models, DPO, GRPO, RLOO, distillation; each run is a job and registers a model."
)
ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="A YAML file of settings; flags override it.", show_default=False)
]
WaitOption = Annotated[
    bool,
    typer.Option("--wait", help="When 'posttrain serve' is running another job, wait for it instead of failing."),
]
TrainFn = Callable[..., ModelRecord]


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]training"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=True,
        console=render.console,
    )


def _run(method: str, config_cls: type[TrainConfig], train: TrainFn, options: dict[str, Any]) -> None:
    project, json, wait = options.pop("project"), options.pop("json"), options.pop("wait")
    config = load_config(config_cls, options.pop("config"), options)
    proj = load(project)
    remote = remote_for(proj)
    with _progress() as progress:
        task = progress.add_task("training", total=None)
        if remote is not None:  # the server owns the warehouse: the run happens there
            record = _train_remote(
                remote, method, config, lambda done: progress.update(task, completed=done, total=100), wait=wait
            )
        else:
            with proj:
                record = train(
                    proj, config, on_progress=lambda step, total: progress.update(task, completed=step, total=total)
                )
    if json:
        render.as_json(record)
        return
    typer.echo(f"registered {record.kind} {record.name} (job {record.run_id})")
    guard = record.metrics.get("guard")
    if isinstance(guard, dict) and guard.get("tripped"):
        typer.echo(f"guard tripped: {guard['reason']}; kept the weights of step {guard['restored_step']}")


def _train_remote(
    remote: Remote, method: str, config: TrainConfig, advance: Callable[[float], None], *, wait: bool = False
) -> ModelRecord:
    """Start the run on the server that owns the warehouse and follow its job until it ends."""
    # waiting for the run in progress can outlast any request timeout
    queued: dict[str, Any] = {"params": {"wait": "true"}, "timeout": None} if wait else {}
    started = remote.call("POST", f"/api/train/{method}", json=config.model_dump(mode="json"), **queued)
    remote.follow_job(started, on_progress=lambda fraction: advance(fraction * 100))
    return ModelRecord(**remote.call("GET", f"/api/models/{config.output}"))


def _option(name: str, field: FieldInfo) -> inspect.Parameter:
    """Return a keyword parameter whose Typer option mirrors one config field (None means unset)."""
    kind = _flag_type(field.annotation)
    flag = "--" + name.replace("_", "-")
    decls = [f"{flag}/--no-{flag[2:]}"] if kind is bool else [flag]
    default = "required" if field.is_required() else f"default: {field.get_default(call_default_factory=True)}"
    option = typer.Option(*decls, help=f"{field.description} [{default}]", show_default=False)
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[kind | None, option]
    )


def _flag_type(annotation: Any) -> type:
    """Return the CLI type of a field: its own type, str for a Literal, the inner type of an Optional."""
    if typing.get_origin(annotation) is typing.Literal:
        return str
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return _flag_type(next(a for a in typing.get_args(annotation) if a is not type(None)))
    return annotation  # type: ignore[no-any-return]


def _on_cli(field: FieldInfo) -> bool:
    """Fields marked ``json_schema_extra={"cli": False}`` (say, a dict) are set from ``--config`` only."""
    extra = field.json_schema_extra
    return not (isinstance(extra, dict) and extra.get("cli") is False)


def _add(name: str, config_cls: type[TrainConfig], train: TrainFn, help_text: str) -> None:
    """Add ``posttrain train NAME`` with one flag per field of ``config_cls``."""

    def command(**options: Any) -> None:
        _run(name, config_cls, train, options)

    shared = [
        inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ConfigOption),
        inspect.Parameter("project", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ProjectOption),
        inspect.Parameter("json", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=JsonOption),
        inspect.Parameter("wait", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=WaitOption),
    ]
    fields = [_option(n, f) for n, f in config_cls.model_fields.items() if _on_cli(f)]
    command.__signature__ = inspect.Signature([*fields, *shared])  # type: ignore[attr-defined]
    command.__annotations__ = {}
    command.__doc__ = help_text
    app.command(name)(command)


_add("sft", SFTConfig, train_sft, "Fine-tune a model on an sft dataset version (prompt-completion rows).")
_add("reward", RewardConfig, train_reward, "Train a reward model on a preference version; records held-out accuracy.")
_add("dpo", DPOConfig, train_dpo, "Align a model with DPO on a preference version, guarded against collapse.")
_add("grpo", GRPOConfig, train_grpo, "Train a model with GRPO on a prompts version, scored by --reward specs.")
_add("rloo", RLOOConfig, train_rloo, "Train a model with RLOO on a prompts version, scored by --reward specs.")
_add(
    "distill",
    DistillConfig,
    train_distill,
    "Sample a teacher on a prompts version, keep what the verifier accepts, fine-tune the student on it.",
)
