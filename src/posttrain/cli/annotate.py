"""``posttrain annotate``: queues, filling them, the annotator's next/submit/skip, stats and export.

Locally the annotator is ``--annotator`` (default ``local:`` and the OS user). Through a running
``posttrain serve`` the annotator is the API key the CLI calls with: ``$POSTTRAIN_API_KEY`` when
set (an annotator's own key), else the server's control token.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import typer

from posttrain import annotate as lib
from posttrain.annotate import active as selection
from posttrain.annotate import export as exporting
from posttrain.annotate.judges import PrelabelOutcome, prelabel_and_resolve
from posttrain.annotate.stats import QueueStats, queue_stats
from posttrain.cli import render
from posttrain.cli.options import KEY_ENV, JsonOption, ProjectOption, through_server
from posttrain.cli.remote import Remote
from posttrain.errors import InvalidInput
from posttrain.project import Project
from posttrain.records import ExportReport

API = "/api/annotate"
MAX_IDS_FILE = 100_000
BATCH = 10_000  # ids per fill request (the API's bound)

app = typer.Typer(
    help="Annotation: queues of items for people (and judges) to label, agreement, export.", no_args_is_help=True
)
queues = typer.Typer(help="Annotation queues: create, list, show, pause, open, close.", no_args_is_help=True)
app.add_typer(queues, name="queues")

QueueArg = Annotated[str, typer.Argument(help="The queue's name (see 'posttrain annotate queues list').")]
LeaseArg = Annotated[str, typer.Argument(help="The lease id that 'posttrain annotate next' printed.")]
AnnotatorOption = Annotated[
    str | None,
    typer.Option(help="Who labels, locally (default: local:<OS user>); through a server the API key decides."),
]


def _local_annotator(annotator: str | None) -> str:
    if annotator is not None and not 1 <= len(annotator) <= 128:
        raise InvalidInput("--annotator: give 1 to 128 characters", field="annotator")
    return annotator or f"local:{getpass.getuser()}"


def _no_annotator(annotator: str | None) -> None:
    if annotator is not None:
        raise InvalidInput(
            f"--annotator: through a running server the annotator is the API key (set ${KEY_ENV}); leave it out",
            field="annotator",
        )


def _json_object(text: str, option: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"--{option}: not JSON ({exc}); e.g. '{{\"rating\": 4}}'", field=option) from None
    if not isinstance(value, dict):
        raise InvalidInput(f"--{option}: give a JSON object, e.g. '{{\"rating\": 4}}'", field=option)
    return value


def _echo_queue(queue: lib.Queue, json: bool, done: str) -> None:
    if json:
        render.as_json(queue)
    else:
        typer.echo(f"queue {queue.name} ({queue.task}) {done}; state {queue.state}")


@queues.command("create")
def create(
    name: Annotated[str, typer.Argument(help="A name for the queue.")],
    task: Annotated[lib.TaskType, typer.Option(help="What annotators are asked.")],
    guidelines_file: Annotated[
        Path | None, typer.Option(help="A markdown file of guidelines for the annotators.")
    ] = None,
    description: Annotated[str | None, typer.Option(help="One line about the queue.")] = None,
    scale: Annotated[tuple[int, int], typer.Option(help="rating: the lowest and highest rating.")] = (1, 5),
    category: Annotated[list[str] | None, typer.Option(help="classify: a category; repeat.")] = None,
    multi: Annotated[bool, typer.Option("--multi", help="classify: an item may get several categories.")] = False,
    flag_category: Annotated[
        list[str] | None, typer.Option(help="classify: a category that flags the answer (unsafe); repeat.")
    ] = None,
    overlap: Annotated[int, typer.Option(help="Distinct annotators per item.")] = 1,
    lease_seconds: Annotated[int, typer.Option(help="How long an annotator holds an item.")] = 600,
    priority: Annotated[Literal["fifo", "random", "active"], typer.Option(help="Order of items.")] = "fifo",
    gold_share: Annotated[float, typer.Option(help="Share of served items that are gold, while gold lasts.")] = 0.1,
    consensus: Annotated[
        Literal["majority", "dawid-skene"], typer.Option(help="How an item's labels resolve into one.")
    ] = "majority",
    judge: Annotated[
        list[str] | None, typer.Option(help="A judge of posttrain.toml [annotate.judges]; repeat.")
    ] = None,
    project: ProjectOption = None,
    json: JsonOption = False,
) -> None:
    """Create an open queue: its task, label schema, guidelines, overlap, lease time and consensus."""
    guidelines = ""
    if guidelines_file is not None:
        if not guidelines_file.is_file():
            raise InvalidInput(f"--guidelines-file: no file {guidelines_file}", field="guidelines_file")
        guidelines = guidelines_file.read_text(encoding="utf-8")
    config = lib.QueueConfig(
        name=name, task=task, description=description, guidelines=guidelines, scale=scale, categories=category or [],
        multi=multi, flag_categories=flag_category or [], overlap=overlap, lease_seconds=lease_seconds,
        priority=priority, gold_share=gold_share, consensus=consensus, judges=judge or [],
    )  # fmt: skip
    found = through_server(
        project,
        lambda proj: lib.create_queue(proj, config, author="cli"),
        lambda api: lib.Queue(**api.call("POST", f"{API}/queues", json=config.model_dump(mode="json"))),
    )
    _echo_queue(found, json, "created")


@queues.command("list")
def list_(
    state: Annotated[
        Literal["open", "paused", "closed"] | None, typer.Option(help="Only queues in this state.")
    ] = None,
    project: ProjectOption = None,
    json: JsonOption = False,
) -> None:
    """List queues with their counts, newest first."""
    params = {"state": state} if state else {}
    found = through_server(
        project,
        lambda proj: lib.list_queues(proj, state=state),
        lambda api: [lib.QueueSummary(**q) for q in api.call("GET", f"{API}/queues", params=params)],
    )
    if json:
        render.as_json(found)
    else:
        columns = ["name", "task", "state", "items", "done", "gold", "labels", "active_leases", "overlap"]
        render.records(found, columns, title="annotation queues")


@queues.command("show")
def show(name: QueueArg, project: ProjectOption = None, json: JsonOption = False) -> None:
    """Show one queue: config, state, versions, counts and guidelines."""
    found = through_server(
        project,
        lambda proj: lib.summarise(proj, name),
        lambda api: lib.QueueSummary(**api.call("GET", f"{API}/queues/{name}")),
    )
    if json:
        render.as_json(found)
        return
    fields = found.model_dump(mode="json", exclude={"guidelines"})
    render.table(["field", "value"], [[k, v] for k, v in fields.items()], title=f"queue {found.name}")
    if found.guidelines:
        typer.echo(found.guidelines)


def _set_state(project: Path | None, name: str, state: str, json: bool) -> None:
    found = through_server(
        project,
        lambda proj: lib.set_state(proj, name, state),
        lambda api: lib.Queue(**api.call("POST", f"{API}/queues/{name}/state", json={"state": state})),
    )
    _echo_queue(found, json, "is now " + state)


@queues.command("pause")
def pause(name: QueueArg, project: ProjectOption = None, json: JsonOption = False) -> None:
    """Pause a queue: it serves no items until opened (labels of live leases still land)."""
    _set_state(project, name, "paused", json)


@queues.command("open")
def open_(name: QueueArg, project: ProjectOption = None, json: JsonOption = False) -> None:
    """Open (or reopen) a queue: it serves items again."""
    _set_state(project, name, "open", json)


@queues.command("close")
def close(name: QueueArg, project: ProjectOption = None, json: JsonOption = False) -> None:
    """Close a queue: it serves no more items; its labels stay."""
    _set_state(project, name, "closed", json)


def _read_ids(path: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """Return the ids (one a line) or pairs (two a line, space, tab or comma between) of ``path``."""
    if not path.is_file():
        raise InvalidInput(f"--ids-file: no file {path}", field="ids_file")
    singles: list[str] = []
    pairs: list[tuple[str, str]] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.replace(",", " ").split()
        if not parts:
            continue
        if len(parts) > 2 or any(len(p) > 128 for p in parts):
            raise InvalidInput(f"--ids-file: line {n} is not one id or two (a pair)", field="ids_file")
        if len(parts) == 1:
            singles.append(parts[0])
        else:
            pairs.append((parts[0], parts[1]))
        if len(singles) + len(pairs) > MAX_IDS_FILE:
            raise InvalidInput(f"--ids-file: at most {MAX_IDS_FILE} lines", field="ids_file")
    if singles and pairs:
        raise InvalidInput("--ids-file: give one id a line, or a pair a line, not both", field="ids_file")
    if not singles and not pairs:
        raise InvalidInput(f"--ids-file: {path} holds no ids", field="ids_file")
    return singles, pairs


def _fill_remote(api: Remote, name: str, body: dict[str, Any]) -> lib.FillResult | selection.SelectionResult:
    key = "pairs" if "pairs" in body else "interaction_ids" if "interaction_ids" in body else None
    if "active" in body:
        return selection.SelectionResult(**api.call("POST", f"{API}/queues/{name}/fill", json=body))
    if key is None:
        return lib.FillResult(**api.call("POST", f"{API}/queues/{name}/fill", json=body))
    results = [
        lib.FillResult(**api.call("POST", f"{API}/queues/{name}/fill",
                                  json={key: body[key][start : start + BATCH], "limit": body["limit"]}))
        for start in range(0, len(body[key]), BATCH)
    ]  # fmt: skip
    return lib.FillResult(queue=name, added=sum(r.added for r in results),
                          existing=sum(r.existing for r in results), origin=results[0].origin)  # fmt: skip


@app.command()
def fill(
    queue: QueueArg,
    where: Annotated[str | None, typer.Option(help="A SQL condition on interactions (alias i).")] = None,
    dataset: Annotated[str | None, typer.Option(help="A dataset version, NAME@V.")] = None,
    ids_file: Annotated[Path | None, typer.Option(help="Interaction ids, one a line (pairwise: two a line).")] = None,
    active: Annotated[int | None, typer.Option(min=1, help="Let active selection pick this many items.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="Add at most this many items.")] = 1000,
    project: ProjectOption = None,
    json: JsonOption = False,
) -> None:
    """Add items to a queue from exactly one of --where, --dataset, --ids-file, --active."""
    given = [o for o, v in (("--where", where), ("--dataset", dataset), ("--ids-file", ids_file),
                            ("--active", active)) if v is not None]  # fmt: skip
    if len(given) != 1:
        raise InvalidInput("fill from exactly one of --where, --dataset, --ids-file, --active", field="where")
    body: dict[str, Any] = {"limit": limit}
    singles: list[str] = []
    pairs: list[tuple[str, str]] = []
    if ids_file is not None:
        singles, pairs = _read_ids(ids_file)
        body.update({"pairs": [list(p) for p in pairs]} if pairs else {"interaction_ids": singles})
    elif active is not None:
        body["active"] = active
    else:
        body.update({"where": where} if where is not None else {"dataset": dataset})

    def local(proj: Project) -> lib.FillResult | selection.SelectionResult:
        if active is not None:
            return selection.select(proj, queue, budget=active)
        return lib.fill(proj, queue, where=where, dataset=dataset, interaction_ids=singles or None,
                        pairs=pairs or None, limit=limit)  # fmt: skip

    result = through_server(project, local, lambda api: _fill_remote(api, queue, body))
    if json:
        render.as_json(result)
    elif isinstance(result, selection.SelectionResult):
        typer.echo(f"queue {result.queue}: {result.added} items added by {result.strategy} selection from "
                   f"{result.candidates} candidates, {result.judge_resolved} resolved by a trusted judge")  # fmt: skip
    else:
        typer.echo(f"queue {result.queue}: {result.added} items added, {result.existing} already there")


@app.command()
def prelabel(
    queue: QueueArg,
    judge: Annotated[
        list[str] | None, typer.Option(help="A judge of posttrain.toml [annotate.judges] (default: the queue's).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="Items each judge labels at most.")] = 10_000,
    resolve: Annotated[bool, typer.Option(help="Then let trusted judges resolve the items they are sure of.")] = True,
    project: ProjectOption = None,
    json: JsonOption = False,
) -> None:
    """Have the queue's judges pre-label its items; trusted judges then resolve what they are sure of."""
    body = {"judges": judge, "limit": limit, "resolve": resolve}

    def remote(api: Remote) -> PrelabelOutcome:  # the server runs it as a job: follow it to its result
        job = api.follow_job(api.call("POST", f"{API}/queues/{queue}/prelabel", json=body))
        return PrelabelOutcome.model_validate(job.result)

    found = through_server(
        project, lambda proj: prelabel_and_resolve(proj, queue, judges=judge, limit=limit, resolve=resolve), remote
    )
    if json:
        render.as_json(found)
        return
    for name, count in found.labelled.items():
        failed = found.failed.get(name, 0)
        typer.echo(f"judge {name}: {count} items labelled" + (f", {failed} it could not label" if failed else ""))
    typer.echo(f"{found.resolved_by_judges} items resolved by trusted judges alone")


@app.command()
def gold(
    queue: QueueArg,
    interaction: Annotated[str, typer.Option(help="The interaction whose right label is known.")],
    answer: Annotated[str, typer.Option(help="The right label as JSON, e.g. '{\"rating\": 5}'.")],
    second: Annotated[str | None, typer.Option(help="pairwise: the second interaction ('a' is the first).")] = None,
    project: ProjectOption = None,
    json: JsonOption = False,
) -> None:
    """Add a gold item (known right label) to measure each annotator's accuracy."""
    value = _json_object(answer, "answer")
    body = {"interaction_id": interaction, "second_interaction_id": second, "answer": value}
    result = through_server(
        project,
        lambda proj: lib.add_gold(proj, queue, interaction, value, second_interaction_id=second),
        lambda api: lib.FillResult(**api.call("POST", f"{API}/queues/{queue}/gold", json=body)),
    )
    if json:
        render.as_json(result)
    else:
        typer.echo(f"queue {result.queue}: {result.added} gold item added")


def _show_assignment(found: lib.Assignment) -> None:
    item = found.item
    typer.echo(
        f"lease {found.lease_id} (queue {found.queue}, {found.task}; until {found.expires_at:%Y-%m-%d %H:%M:%S} UTC)"
    )
    for message in item.prompt:
        content = message.get("content")
        typer.echo(
            f"[{message.get('role', '?')}] {content if isinstance(content, str) else orjson.dumps(content).decode()}"
        )
    if item.answers:
        for letter, text in zip("AB", item.answers, strict=False):
            typer.echo(f"[answer {letter}] {text or ''}")
    else:
        typer.echo(f"[answer] {item.response or ''}")
    typer.echo(f"label schema: {orjson.dumps(found.label_schema).decode()}")
    typer.echo(f"progress: {found.progress.labelled_by_you} labelled by you, {found.progress.remaining} left")
    typer.echo(f"submit with: posttrain annotate submit {found.lease_id} --label '<JSON>'")


@app.command("next")
def next_(
    queue: QueueArg, annotator: AnnotatorOption = None, project: ProjectOption = None, json: JsonOption = False
) -> None:
    """Lease the next item of a queue: prints the lease id, the conversation, the answer(s) and the label schema."""

    def remote(api: Remote) -> lib.Assignment | None:
        _no_annotator(annotator)
        body = api.call("POST", f"{API}/queues/{queue}/next")  # None: 204, nothing left
        return None if body is None else lib.Assignment(**body)

    found = through_server(project, lambda proj: lib.next_item(proj, queue, _local_annotator(annotator)), remote)
    if json:
        render.as_json(found.model_dump(mode="json") if found else None)
    elif found is None:
        typer.echo(f"nothing left in queue {queue} for you")
    else:
        _show_assignment(found)


@app.command()
def submit(
    lease: LeaseArg,
    label: Annotated[str, typer.Option(help='The label as JSON, e.g. \'{"rating": 4}\' or \'{"choice": "a"}\'.')],
    seconds: Annotated[float | None, typer.Option(help="Seconds spent (default: since the lease began).")] = None,
    annotator: AnnotatorOption = None,
    project: ProjectOption = None,
    json: JsonOption = False,
) -> None:
    """Submit a label for a leased item."""
    value = _json_object(label, "label")

    def remote(api: Remote) -> lib.Label:
        _no_annotator(annotator)
        return lib.Label(**api.call("POST", f"{API}/leases/{lease}/submit", json={"label": value, "seconds": seconds}))

    found = through_server(
        project, lambda proj: lib.submit(proj, lease, _local_annotator(annotator), value, seconds=seconds), remote
    )
    if json:
        render.as_json(found)
    else:
        typer.echo(f"label {found.id} stored for item {found.item_id}")


@app.command()
def skip(
    lease: LeaseArg,
    reason: Annotated[str | None, typer.Option(help="Why (unclear, off-topic ...).")] = None,
    annotator: AnnotatorOption = None,
    project: ProjectOption = None,
    json: JsonOption = False,
) -> None:
    """Give a leased item back unlabelled; it is not served to you again."""

    def remote(api: Remote) -> None:
        _no_annotator(annotator)
        api.call("POST", f"{API}/leases/{lease}/skip", json={"reason": reason})

    through_server(project, lambda proj: lib.skip(proj, lease, _local_annotator(annotator), reason=reason), remote)
    if json:
        render.as_json({"skipped": lease})
    else:
        typer.echo(f"skipped {lease}")


def _estimate(value: Any) -> str:
    if value is None or value.value is None:
        return "n/a"
    interval = "" if value.low is None else f" [{value.low:.2f}, {value.high:.2f}]"
    return f"{value.value:.3f}{interval}"


def _kappas(by_field: dict[str, Any]) -> str:
    if len(by_field) == 1:
        return _estimate(next(iter(by_field.values())))
    return "; ".join(f"{field}: {_estimate(e)}" for field, e in by_field.items()) or "n/a"


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _show_stats(found: QueueStats) -> None:
    c = found.counts
    typer.echo(
        f"queue {found.queue} ({found.task}): {c.items} items, {c.done} done, {c.gold} gold, {c.labels} labels, "
        f"{c.judge_labels} judge labels, {c.skips} skips, {c.expired_leases} expired leases"
    )
    if found.agreement_note:
        typer.echo(found.agreement_note)
    rows = [[a.field, *(f"{k}: {_estimate(v)}" for k, v in a.alpha.items()), _estimate(a.fleiss)]
            for a in found.agreement]  # fmt: skip
    if rows:
        render.table(["field", "alpha", *([""] * (len(rows[0]) - 3)), "fleiss"], rows, title="agreement")
    people = [
        [
            a.name or a.annotator,
            a.labels,
            a.skips,
            _rounded(a.median_seconds),
            _rounded(a.throughput_per_hour),
            _kappas(a.agreement),
            _estimate(a.gold_accuracy),
        ]
        for a in found.annotators
    ]
    columns = ["annotator", "labels", "skips", "median s", "labels/h", "kappa with others", "gold accuracy"]
    render.table(columns, people, title="annotators")
    if found.judges:
        judges = [[j.judge, j.labels, _estimate(j.calibration.agreement), j.calibration.ece, j.trusted]
                  for j in found.judges]  # fmt: skip
        render.table(["judge", "labels", "agreement", "ECE", "trusted"], judges, title="judges")


def _write_plots(found: QueueStats, plot: Path) -> list[Path]:
    from posttrain.annotate.plots import reliability_svg

    if not found.judges:
        raise InvalidInput(f"--plot: queue {found.queue} has no judge labels to draw", field="plot")
    plot.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for judge in found.judges:
        path = plot if len(found.judges) == 1 else plot.with_name(f"{plot.stem}-{judge.judge}{plot.suffix}")
        path.write_text(reliability_svg(judge.calibration, title=f"{found.queue}: {judge.judge}"), encoding="utf-8")
        written.append(path)
    return written


@app.command()
def stats(
    queue: QueueArg,
    plot: Annotated[
        Path | None, typer.Option(help="Write the judge's reliability diagram to this SVG (one per judge).")
    ] = None,
    project: ProjectOption = None,
    json: JsonOption = False,
) -> None:
    """Label quality: agreement, gold accuracy, throughput per annotator, judge calibration."""
    found = through_server(
        project,
        lambda proj: queue_stats(proj, queue),
        lambda api: QueueStats(**api.call("GET", f"{API}/queues/{queue}/stats")),
    )
    written = _write_plots(found, plot) if plot is not None else []
    if json:
        render.as_json(found)
    else:
        _show_stats(found)
        for path in written:
            typer.echo(f"wrote {path}")


@app.command("export")
def export(
    queue: QueueArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write.")],
    format: Annotated[str, typer.Option("--format", "-f", help="jsonl or parquet.")] = "jsonl",
    project: ProjectOption = None,
    json: JsonOption = False,
) -> None:
    """Write a queue's labels (with each item's consensus) to JSONL or Parquet, oldest first."""
    fmt = exporting.check_format(format)

    def remote(api: Remote) -> ExportReport:
        api.call("GET", f"{API}/queues/{queue}")  # a missing queue is one error line, not a broken stream
        with api.stream_lines(f"{API}/queues/{queue}/export", format=fmt) as response:
            return exporting.export_stream(response.iter_bytes(), output, fmt)

    report = through_server(project, lambda proj: exporting.export_labels(proj, queue, fmt, output), remote)
    if json:
        render.as_json(report)
    else:
        typer.echo(f"wrote {report.rows} labels of {queue} to {report.path} ({report.format})")
