"""Dataset builds over real warehouse rows: each kind, filters, PII, splits, hashes, export, CLI."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from posttrain import datasets
from posttrain.capture import capture
from posttrain.cli import app
from posttrain.errors import InvalidInput
from posttrain.project import Project

pytestmark = pytest.mark.warehouses("duckdb", "postgresql")

Q1 = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]
Q2 = [{"role": "user", "content": "Capital of France?"}]


def store(project: Project, interactions: list[dict[str, Any]], feedback: Sequence[dict[str, Any]] = ()) -> None:
    """Capture events for real; every one must be created."""
    for kind, events in (("interactions", interactions), ("feedback", list(feedback))):
        if events:
            results = capture(project, kind, events)  # type: ignore[arg-type]
            assert [r.status for r in results] == ["created"] * len(events), results


def turn(id_: str, response: str, messages: list[dict[str, Any]] = Q1, **extra: Any) -> dict[str, Any]:
    return {"id": id_, "messages": messages, "response": response, "user_id": f"u-{id_}", **extra}


def thumb(id_: str, on: str, up: bool, **extra: Any) -> dict[str, Any]:
    return {"id": id_, "interaction_id": on, "kind": "thumb", "value": up, **extra}


def rows(version: datasets.DatasetVersion) -> list[dict[str, Any]]:
    return datasets.read_rows(version).to_pylist()


def by_source(version: datasets.DatasetVersion) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows(version):
        out.setdefault(row["source"], []).append(row)
    return out


# --- sft ---------------------------------------------------------------------------------


def test_build_sft_takes_accepted_responses_and_edits(project: Project) -> None:
    store(
        project,
        [turn("a", "4"), turn("b", "four"), turn("c", "5"), turn("d", "22"), turn("e", "3"), turn("f", "Paris", Q2)],
        [
            thumb("f1", "a", True),
            {"id": "f2", "interaction_id": "b", "kind": "rating", "value": 4},
            thumb("f3", "c", False),
            thumb("f4", "d", True),
            {"id": "f5", "interaction_id": "d", "kind": "flag", "value": "wrong"},  # a flag vetoes a thumb up
            {"id": "f6", "interaction_id": "e", "kind": "rating", "value": 3},  # neither accepted nor rejected
            {"id": "f7", "interaction_id": "c", "kind": "edit", "text": "2+2 is 4."},
            {"id": "f8", "interaction_id": "f", "kind": "edit", "text": "Paris.", "source": "annotator"},
            thumb("f9", "f", True),  # the edit wins over the accepted original
        ],
    )
    version = datasets.build(project, "sft", "support")
    got = {(r["interaction_id"], r["completion"][0]["content"], r["source"]) for r in rows(version)}
    assert got == {
        ("a", "4", "accepted"),
        ("b", "four", "accepted"),
        ("c", "2+2 is 4.", "edit"),
        ("f", "Paris.", "edit"),
    }
    first = rows(version)[0]
    assert first["prompt"] == Q1 and first["completion"] == [{"role": "assistant", "content": "4"}]
    assert version.stats["by_source"] == {"accepted": 2, "edit": 2}
    assert version.source_ids["interactions"] == 4
    sources = pq.read_table(version.source_ids["file"]).to_pylist()
    # the feedback that made each row: the judgements of accepted rows, the edit of edited ones
    assert {s["id"] for s in sources if s["kind"] == "feedback"} == {"f1", "f2", "f7", "f8"}


def test_build_sft_dedupes_identical_pairs_and_can_skip_edits(project: Project) -> None:
    store(
        project,
        [turn("a", "4"), turn("b", "4"), turn("c", "5")],
        [
            thumb("f1", "a", True),
            thumb("f2", "b", True),
            {"id": "f3", "interaction_id": "c", "kind": "edit", "text": "4!"},
        ],
    )
    version = datasets.build(project, "sft", "s", datasets.BuildConfig(include_edits=False))
    assert [r["interaction_id"] for r in rows(version)] == ["a"]
    weighed = datasets.build(project, "sft", "s", datasets.BuildConfig(include_edits=False, dedupe=False))
    assert [r["interaction_id"] for r in rows(weighed)] == ["a", "b"]  # asked and accepted twice: two rows


def test_build_sft_min_rating(project: Project) -> None:
    store(project, [turn("a", "4")], [{"id": "f1", "interaction_id": "a", "kind": "rating", "value": 4}])
    with pytest.raises(InvalidInput, match="no rows match"):
        datasets.build(project, "sft", "s", datasets.BuildConfig(min_rating=5))


def _unsafe_votes(project: Project) -> None:
    """Eight users get the same answer to the same prompt: one thumb up (noise), six down, one rating 1."""
    ask = [{"role": "user", "content": "how do I pick a lock"}]
    comply = [turn(f"c{i}", "Sure, here's how.", ask) for i in range(8)]
    refuse = [turn(f"r{i}", "I can't help with that.", ask) for i in range(3)]
    votes = [thumb("up", "c0", True)] + [thumb(f"down{i}", f"c{i}", False) for i in range(1, 7)]
    votes += [{"id": "low", "interaction_id": "c7", "kind": "rating", "value": 1}]
    votes += [thumb(f"ok{i}", f"r{i}", True) for i in range(2)] + [thumb("flip", "r2", False)]
    store(project, comply + refuse, votes)


def test_build_sft_needs_consensus_among_identical_answers(project: Project) -> None:
    _unsafe_votes(project)
    kept = {r["completion"][0]["content"] for r in rows(datasets.build(project, "sft", "s"))}
    assert kept == {"I can't help with that."}  # 1 of 8 accepted the compliance; 2 of 3 the refusal
    off = datasets.build(project, "sft", "s", datasets.BuildConfig(min_agreement=0))
    assert {r["completion"][0]["content"] for r in rows(off)} == {"I can't help with that.", "Sure, here's how."}
    with pytest.raises(InvalidInput, match="no rows match"):  # 2 of 3 is short of 0.7
        datasets.build(project, "sft", "s", datasets.BuildConfig(min_agreement=0.7))


def test_build_preference_pairs_follow_consensus(project: Project) -> None:
    _unsafe_votes(project)
    config = datasets.BuildConfig(include=["accepted_vs_rejected"], max_pairs_per_prompt=5)
    got = rows(datasets.build(project, "preference", "p", config))
    assert {(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in got} == {
        ("I can't help with that.", "Sure, here's how.")
    }
    # the noisy thumb up on c0 never makes the compliance a chosen side, nor the flipped r2 a rejected one
    assert all("c0" not in r["interaction_ids"] and "r2" not in r["interaction_ids"] for r in got)
    assert len(got) == 1  # identical (prompt, chosen, rejected) pairs are kept once


# --- preference --------------------------------------------------------------------------


def test_build_preference_pairs_from_every_source(project: Project) -> None:
    store(
        project,
        [
            turn("a", "4"),
            turn("b", "5"),
            turn("c", "four"),
            turn("d", "Paris", Q2),
            turn("e", "Lyon", Q2),
            turn("g", "Paris?", Q2),
            turn("h", "8", [{"role": "user", "content": "4+4?"}]),
            turn("x", "elsewhere", [{"role": "user", "content": "other"}]),
        ],
        [
            {"id": "f1", "interaction_id": "b", "kind": "choice", "value": "a"},  # a chosen over b
            {"id": "f2", "interaction_id": "e", "kind": "choice", "value": "d", "source": "judge"},
            {"id": "f3", "interaction_id": "x", "kind": "choice", "value": "a"},  # another prompt: no pair
            {"id": "f4", "interaction_id": "h", "kind": "edit", "text": "4+4 = 8."},
            {"id": "f5", "interaction_id": "c", "kind": "rating", "value": 5},
            {"id": "f6", "interaction_id": "b", "kind": "rating", "value": 2},
            {"id": "f7", "interaction_id": "g", "kind": "rating", "value": 4},
            thumb("f8", "e", False),
        ],
    )
    found = by_source(datasets.build(project, "preference", "prefs"))
    pairs = {
        src: {(r["chosen"][0]["content"], r["rejected"][0]["content"], r["confidence"]) for r in rs}
        for src, rs in found.items()
    }
    assert pairs["choice"] == {("4", "5", 1.0), ("Paris", "Lyon", 0.9)}
    assert pairs["edit"] == {("4+4 = 8.", "8", 0.9)}
    # rating 5 vs rating 2: gap 1.0 - 0.25; rating 4 vs thumb down: 0.75 - 0
    assert pairs["accepted_vs_rejected"] == {("four", "5", 0.75), ("Paris?", "Lyon", 0.75)}
    assert found["choice"][0]["interaction_ids"] == ["a", "b"]
    assert found["edit"][0]["interaction_ids"] == ["h"]
    assert found["edit"][0]["prompt"] == [{"role": "user", "content": "4+4?"}]


def test_build_preference_caps_pairs_per_prompt(project: Project) -> None:
    store(
        project,
        [turn(f"u{i}", f"good {i}") for i in range(3)] + [turn(f"d{i}", f"bad {i}") for i in range(3)],
        [thumb(f"fu{i}", f"u{i}", True) for i in range(3)] + [thumb(f"fd{i}", f"d{i}", False) for i in range(3)],
    )
    config = datasets.BuildConfig(include=["accepted_vs_rejected"], max_pairs_per_prompt=2)
    got = rows(datasets.build(project, "preference", "p", config))
    assert [r["interaction_ids"] for r in got] == [["u0", "d0"], ["u1", "d1"]]
    assert all(r["confidence"] == 1.0 for r in got)


def test_build_preference_include_filters_sources(project: Project) -> None:
    store(
        project,
        [turn("a", "4"), turn("b", "5")],
        [
            {"id": "f1", "interaction_id": "b", "kind": "choice", "value": "a"},
            thumb("f2", "a", True),
            thumb("f3", "b", False),
        ],
    )
    version = datasets.build(project, "preference", "p", datasets.BuildConfig(include=["choice"]))
    assert version.stats["by_source"] == {"choice": 1}  # the identical accepted_vs_rejected pair is not asked for
    both = datasets.build(project, "preference", "p")
    assert both.stats["by_source"] == {"choice": 1}  # the same pair from two sources is kept once, as a choice


# --- prompts and eval --------------------------------------------------------------------


def test_build_prompts_trims_trailing_assistant_and_takes_answers(project: Project) -> None:
    with_reply = [*Q1, {"role": "assistant", "content": "Let me think."}]
    store(
        project,
        [
            turn("a", "4", Q1),
            turn("b", "4", with_reply, metadata={"answer": "4"}),  # same prompt once trimmed
            turn("c", "Paris", Q2, metadata={"answer": "Paris"}),
        ],
    )
    version = datasets.build(project, "prompts", "math", datasets.BuildConfig(verifier="exact_match"))
    assert rows(version) == [
        {"prompt": Q1, "answer": "4", "verifier": "exact_match"},
        {"prompt": Q2, "answer": "Paris", "verifier": "exact_match"},
    ]


def _keys(project: Project, version: datasets.DatasetVersion, column: str = "user_id") -> set[str]:
    ids = [r["id"] for r in pq.read_table(version.source_ids["file"]).to_pylist() if r["kind"] == "interactions"]
    found = project.cursor().execute(f"SELECT DISTINCT {column} FROM interactions WHERE list_contains(?, id)", [ids])
    return {r[0] for r in found.fetchall()}


@pytest.mark.parametrize("split_by", ["user_id", "session_id"])
def test_eval_split_keeps_users_apart_from_training(project: Project, split_by: str) -> None:
    events = [
        turn(
            f"i{u}-{k}",
            f"a {u}-{k}",
            [{"role": "user", "content": f"q {u}-{k}"}],
            user_id=f"user{u}",
            session_id=f"s{u}-{k % 2}",
        )
        for u in range(30)
        for k in range(4)
    ]
    store(project, events, [thumb(f"f{e['id']}", e["id"], True) for e in events])
    split = {"fraction": 0.3, "seed": 7, "split_by": split_by}
    held = datasets.build(project, "eval", "heldout", datasets.BuildConfig(**split))
    train = datasets.build(project, "sft", "train", datasets.BuildConfig(split="train", **split))
    held_keys, train_keys = _keys(project, held, split_by), _keys(project, train, split_by)
    assert {r[split_by] for r in rows(held)} == held_keys
    assert held_keys and train_keys and not held_keys & train_keys
    assert len(held_keys) + len(train_keys) == (30 if split_by == "user_id" else 60)
    assert held.row_count + train.row_count == len(events)
    assert held.stats["users" if split_by == "user_id" else "sessions"] == len(held_keys)


def test_eval_drops_prompts_found_in_a_training_version(project: Project) -> None:
    store(project, [turn("a", "4", user_id="u1"), turn("b", "Paris", Q2, user_id="u2")], [thumb("f1", "a", True)])
    train = datasets.build(project, "sft", "train")
    held = datasets.build(project, "eval", "ev", datasets.BuildConfig(fraction=0.999999, exclude=[train.ref]))
    assert [r["prompt"] for r in rows(held)] == [Q2]
    assert held.stats["dropped_duplicate_prompts"] == 1


# --- shared behaviour --------------------------------------------------------------------


def test_build_twice_gives_the_same_hash_and_a_new_version(project: Project) -> None:
    store(project, [turn("a", "4"), turn("b", "5")], [thumb("f1", "a", True), thumb("f2", "b", False)])
    first = datasets.build(project, "preference", "p")
    second = datasets.build(project, "preference", "p")
    assert (first.version, second.version) == (1, 2)
    assert first.content_hash == second.content_hash
    assert datasets.content_hash(datasets.read_rows(second)) == second.content_hash
    assert second.recipe["kind"] == "preference" and second.recipe["max_pairs_per_prompt"] == 2


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"cohort": ["pro"]}, {"a"}),
        ({"model": ["m2"]}, {"b"}),
        ({"tags": ["billing", "nope"]}, {"b", "c"}),
        ({"since": "2025-02-01T00:00:00Z"}, {"b", "c"}),
        ({"until": "2025-02-01T00:00:00Z"}, {"a"}),
        ({"where": "i.metadata->>'app' = 'ios' AND i.cohort IS NOT NULL"}, {"c"}),
        ({"source": ["annotator"]}, {"c"}),
    ],
)
def test_build_filters(project: Project, config: dict[str, Any], expected: set[str]) -> None:
    store(
        project,
        [
            turn("a", "A", timestamp="2025-01-01T00:00:00Z", cohort="pro", model="m1", tags=["support"]),
            turn("b", "B", timestamp="2025-03-01T00:00:00Z", cohort="free", model="m2", tags=["billing"]),
            turn(
                "c",
                "C",
                timestamp="2025-03-02T00:00:00Z",
                cohort="free",
                model="m1",
                tags=["billing"],
                metadata={"app": "ios"},
            ),
        ],
        [thumb("f1", "a", True), thumb("f2", "b", True), thumb("f3", "c", True, source="annotator")],
    )
    version = datasets.build(project, "sft", "f", datasets.BuildConfig.parse(**config))
    assert {r["interaction_id"] for r in rows(version)} == expected


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("1=1; DROP TABLE interactions", "without ';'"),
        ("1=1 -- comment", "comments"),
        ("1=1) UNION (SELECT 1", "without its"),
        ("(1=1", "unbalanced"),
        ("i.cohort = $seed", "parameters"),
    ],
)
def test_where_must_be_one_condition(where: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        datasets.BuildConfig.parse(where=where)


def test_where_names_the_bad_column(project: Project) -> None:
    store(project, [turn("a", "A")], [thumb("f1", "a", True)])
    with pytest.raises(InvalidInput, match="not a condition over interactions") as err:
        datasets.build(project, "sft", "x", datasets.BuildConfig(where="i.nope = 1"))
    assert err.value.field == "where"
    assert datasets.build(project, "sft", "x", datasets.BuildConfig(where="i.response <> ')'")).row_count == 1


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"since": "2025-02-01", "until": "2025-01-01"}, "swap them"),
        ({"answer_from": "meta.answer"}, "metadata.KEY"),
        ({"fraction": 1.5}, "fraction"),
        ({"source": ["robot"]}, "source"),
    ],
)
def test_build_config_errors_name_the_fix(values: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        datasets.BuildConfig.parse(**values)


def test_empty_result_raises_and_writes_nothing(project: Project) -> None:
    store(project, [turn("a", "A")])
    with pytest.raises(InvalidInput, match="no rows match: sft .*loosen the filters"):
        datasets.build(project, "sft", "empty")
    assert datasets.list_versions(project) == []
    assert not (project.artifacts / "datasets" / "empty").exists()


def test_build_scrubs_pii_and_records_counts(project: Project) -> None:
    prompt = [{"role": "user", "content": "I am bob@example.com, card 4111 1111 1111 1111, bad 4111 1111 1111 1112"}]
    store(
        project,
        [
            turn(
                "a",
                "Reach us at +1 (555) 201-3344 from 10.1.2.3, IBAN DE89 3704 0044 0532 0130 00, ssn 123-45-6789",
                prompt,
            )
        ],
        [thumb("f1", "a", True)],
    )
    version = datasets.build(project, "sft", "pii")
    row = rows(version)[0]
    assert row["prompt"][0]["content"] == "I am <EMAIL>, card <CARD>, bad 4111 1111 1111 1112"
    assert row["completion"][0]["content"] == "Reach us at <PHONE> from <IPV4>, IBAN <IBAN>, ssn <SSN>"
    assert version.scrubbed == 6
    assert version.stats["pii_scrubbed"] == {
        "token": 0,
        "email": 1,
        "iban": 1,
        "card": 1,
        "ssn": 1,
        "passport": 0,
        "ipv6": 0,
        "ipv4": 1,
        "phone": 1,
    }


# --- export ------------------------------------------------------------------------------


@pytest.fixture
def preference(project: Project) -> datasets.DatasetVersion:
    store(
        project,
        [turn("a", "4"), turn("b", "5"), turn("c", "Paris", Q2)],
        [
            thumb("f1", "a", True),
            thumb("f2", "b", False),
            {"id": "f3", "interaction_id": "c", "kind": "edit", "text": "Paris."},
        ],
    )
    return datasets.build(project, "preference", "prefs")


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "hf"])
def test_export_loads_with_hf_datasets_as_trl_columns(
    project: Project, preference: datasets.DatasetVersion, tmp_path: Path, fmt: datasets.ExportFormat
) -> None:
    import datasets as hf

    out = datasets.export(project, "prefs@1", fmt, tmp_path / f"out.{fmt}")
    if fmt == "hf":
        loaded = hf.load_from_disk(str(out))
    else:
        loaded = hf.load_dataset("json" if fmt == "jsonl" else "parquet", data_files=str(out), split="train")
    assert {"prompt", "chosen", "rejected"} <= set(loaded.column_names)
    assert loaded.num_rows == preference.row_count
    first = loaded[0]  # conversational, as TRL's DPOTrainer takes it
    assert first["prompt"] == Q1
    assert first["chosen"] == [{"role": "assistant", "content": "4"}]
    assert first["rejected"] == [{"role": "assistant", "content": "5"}]
    assert loaded.to_list() == rows(preference)


def test_export_unknown_format(project: Project, preference: datasets.DatasetVersion, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="choose jsonl, parquet or hf"):
        datasets.export(project, "prefs", "csv", tmp_path / "x")  # type: ignore[arg-type]


# --- CLI ---------------------------------------------------------------------------------


def test_cli_build_list_show_export(project: Project, cli: CliRunner, tmp_path: Path) -> None:
    store(
        project,
        [turn("a", "4", cohort="pro"), turn("b", "5", cohort="free")],
        [thumb("f1", "a", True), thumb("f2", "b", True)],
    )
    project.close()  # the CLI opens the warehouse itself
    where = ["--project", str(project.root)]
    built = cli.invoke(
        app, ["datasets", "build", "sft", "chat", "--cohort", "pro", "--where", "i.id <> 'zz'", "--json", *where]
    )
    assert built.exit_code == 0, built.output
    assert json.loads(built.output)["row_count"] == 1
    listed = cli.invoke(app, ["datasets", "list", "--json", *where])
    assert [v["name"] for v in json.loads(listed.output)] == ["chat"]
    shown = cli.invoke(app, ["datasets", "show", "chat@1", "--rows", "1", "--json", *where])
    body = json.loads(shown.output)
    assert body["version"]["stats"]["rows"] == 1 and body["rows"][0]["interaction_id"] == "a"
    out = tmp_path / "chat.jsonl"
    exported = cli.invoke(app, ["datasets", "export", "chat", "--format", "jsonl", "--output", str(out), *where])
    assert exported.exit_code == 0, exported.output
    assert json.loads(out.read_text().splitlines()[0])["completion"] == [{"role": "assistant", "content": "4"}]


def test_cli_build_error_is_one_line(project: Project, tmp_path: Path) -> None:
    import subprocess
    import sys

    project.close()
    out = subprocess.run(
        [sys.executable, "-m", "posttrain", "datasets", "build", "sft", "x", "--project", str(project.root)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert out.stderr.startswith("error: no rows match") and out.stderr.count("\n") == 1


def test_build_preference_side_by_side_choice_on_the_chosen_answer(project: Project) -> None:
    pair = {"pair_id": "p1", "side_by_side": True}
    a, b = turn("a", "4"), turn("b", "5")
    a["metadata"], b["metadata"] = pair | {"position": 0}, pair | {"position": 1}
    store(project, [a, b], [{"id": "f1", "interaction_id": "b", "kind": "choice", "value": "b"}])  # on the chosen
    got = rows(datasets.build(project, "preference", "p"))
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"], r["source"]) for r in got] == [
        ("5", "4", "choice")
    ]


# --- agent trajectories and content parts: kept as recorded --------------------------------

CALL = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}
TRAJECTORY = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call_1", "content": '{"sky": "sunny"}'},
]
PICTURE = [
    {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                 {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]},
]  # fmt: skip


def _as_sent(messages: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Drop the null keys Arrow gives a message for the keys other messages of its column have."""
    if messages is None:
        return None
    return [{k: _as_sent(v) if k == "content" and isinstance(v, list) else v for k, v in m.items() if v is not None}
            for m in messages]  # fmt: skip


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def test_build_sft_keeps_an_agent_trajectory_as_recorded(project: Project) -> None:
    store(
        project,
        [turn("a", "Sunny in Paris.", TRAJECTORY), turn("b", "4")],
        [thumb("f1", "a", True), thumb("f2", "b", True)],
    )
    found = {r["interaction_id"]: r for r in rows(datasets.build(project, "sft", "agent"))}
    assert _strip(found["a"]["prompt"]) == _strip(TRAJECTORY)
    assert found["a"]["prompt"][1]["tool_calls"] == [CALL] and found["a"]["prompt"][2]["tool_call_id"] == "call_1"
    assert _strip(found["a"]["completion"]) == [{"role": "assistant", "content": "Sunny in Paris."}]
    assert _strip(found["b"]["prompt"]) == Q1  # a text-only row shares the column's shape


def test_build_sft_completion_is_a_tool_calling_reply_kept_whole(project: Project) -> None:
    reply = {"role": "assistant", "content": None, "tool_calls": [CALL]}
    event = turn("a", "", TRAJECTORY[:1], metadata={"response_message": reply, "finish_reason": "tool_calls"})
    store(project, [event], [thumb("f1", "a", True)])
    (row,) = rows(datasets.build(project, "sft", "calls"))
    assert _strip(row["completion"]) == [{"role": "assistant", "tool_calls": [CALL]}]


def test_build_keeps_content_parts_and_gives_text_rows_parts_too(project: Project) -> None:
    store(project, [turn("a", "A cat.", PICTURE), turn("b", "4")], [thumb("f1", "a", True), thumb("f2", "b", True)])
    found = {r["interaction_id"]: r for r in rows(datasets.build(project, "sft", "parts"))}
    assert _strip(found["a"]["prompt"]) == PICTURE
    assert _strip(found["b"]["prompt"])[1] == {"role": "user", "content": [{"type": "text", "text": "What is 2+2?"}]}
    assert _strip(found["a"]["completion"]) == [{"role": "assistant", "content": [{"type": "text", "text": "A cat."}]}]


@pytest.mark.parametrize("kind", ["sft", "prompts"])
def test_build_writes_messages_holding_empty_objects_without_them(project: Project, kind: str) -> None:
    """A recorded {} (a part's extra key, a tool call's) cannot be a Parquet struct of no fields: it is left out."""
    odd = [{"role": "user", "content": [{"type": "text", "text": "What is this?", "extra": {}}]},
           {"role": "user", "content": "and this?", "name": "bob", "meta": {"inner": {}, "k": 1}}]  # fmt: skip
    store(project, [turn("a", "A cat.", odd), turn("b", "4")], [thumb("f1", "a", True), thumb("f2", "b", True)])
    built = rows(datasets.build(project, kind, f"odd-{kind}"))  # type: ignore[arg-type]
    (prompt,) = [_strip(r["prompt"]) for r in built if "bob" in json.dumps(r["prompt"])]
    assert prompt[0] == {"role": "user", "content": [{"type": "text", "text": "What is this?"}]}
    assert prompt[1] == {"role": "user", "content": [{"type": "text", "text": "and this?"}], "name": "bob",
                         "meta": {"k": 1}}  # fmt: skip


def test_build_preference_keeps_the_trajectory_in_the_prompt(project: Project) -> None:
    store(project, [turn("a", "Sunny.", TRAJECTORY), turn("b", "No idea.", TRAJECTORY)],
          [thumb("f1", "a", True), thumb("f2", "b", False)])  # fmt: skip
    (row,) = rows(datasets.build(project, "preference", "agent-pairs"))
    assert _strip(row["prompt"]) == _strip(TRAJECTORY)
    assert (_strip(row["chosen"])[0]["content"], _strip(row["rejected"])[0]["content"]) == ("Sunny.", "No idea.")


@pytest.mark.parametrize("kind", ["prompts", "eval"])
def test_build_prompt_kinds_keep_tool_messages(project: Project, kind: str) -> None:
    store(project, [turn("a", "Sunny.", TRAJECTORY)])
    config = datasets.BuildConfig(fraction=0.999999) if kind == "eval" else None
    (row,) = rows(datasets.build(project, kind, f"agent-{kind}", config))  # type: ignore[arg-type]
    assert _strip(row["prompt"]) == _strip(TRAJECTORY)


def test_build_scrubs_pii_in_parts_and_tool_call_arguments(project: Project) -> None:
    leaky = {**CALL, "function": {"name": "mail", "arguments": '{"to": "ann@example.com"}'}}
    messages = [{"role": "user", "content": [{"type": "text", "text": "mail bob@example.com"}]},
                {"role": "assistant", "content": None, "tool_calls": [leaky]}]  # fmt: skip
    store(project, [turn("a", "Sent.", messages)], [thumb("f1", "a", True)])
    version = datasets.build(project, "sft", "scrubbed")
    text = json.dumps(rows(version))
    assert "example.com" not in text and version.stats["pii_scrubbed"]["email"] == 2


def test_export_loads_a_trajectory_with_hf_datasets(project: Project, tmp_path: Path) -> None:
    hf = pytest.importorskip("datasets")
    store(project, [turn("a", "Sunny.", TRAJECTORY)], [thumb("f1", "a", True)])
    version = datasets.build(project, "sft", "agent")
    out = datasets.export(project, version.ref, "jsonl", tmp_path / "agent.jsonl")
    loaded = hf.load_dataset("json", data_files=str(out), split="train")
    assert loaded[0]["prompt"][1]["tool_calls"][0]["function"]["name"] == "weather"


@pytest.mark.parametrize("kind", ["sft", "prompts", "eval"])
def test_build_with_empty_content_parts_counts_no_characters(project: Project, kind: str) -> None:
    """Messages whose content is an empty list of parts (valid OpenAI) once made the stats a 500."""
    asked = [{"role": "user", "content": []}]
    capture(project, "interactions", [{"id": "a", "messages": asked, "response": "x"},
                                      {"id": "b", "messages": asked, "response": "y"}])  # fmt: skip
    capture(project, "feedback", [{"id": "f", "interaction_id": "a", "kind": "thumb", "value": "up"}])
    version = datasets.build(project, kind, f"empty-{kind}")  # type: ignore[arg-type]
    assert version.row_count >= 1 and version.stats["mean_prompt_chars"] == 0.0


@pytest.mark.parametrize("kind", ["sft", "prompts", "eval"])
def test_build_with_a_key_null_in_every_message(project: Project, kind: str) -> None:
    """A key only ever null (here content, beside a name) once gave Arrow a null-typed field that its
    own cast broke on: a 500 from the API fuzzer. It is typed as text, and the build writes."""
    asked = [{"role": "user"}, {"role": "user", "content": None, "name": ""}]
    capture(project, "interactions", [{"id": "a", "messages": asked, "response": "x"}])
    capture(project, "feedback", [{"id": "f", "interaction_id": "a", "kind": "thumb", "value": "up"}])
    config = datasets.BuildConfig(fraction=0.999999) if kind == "eval" else None
    version = datasets.build(project, kind, f"nulls-{kind}", config)  # type: ignore[arg-type]
    (row,) = rows(version)
    assert [m["role"] for m in row["prompt"]] == ["user", "user"] and row["prompt"][1]["name"] == ""
    assert {m["content"] for m in row["prompt"]} == {None}


def test_write_version_takes_over_a_folder_left_by_a_failed_write_and_numbers_concurrent_writes_apart(
    project: Project,
) -> None:
    import threading

    import pyarrow as pa

    table = pa.table({"x": [1, 2]})
    (project.artifacts / "datasets" / "d" / "v1").mkdir(parents=True)  # a crash before the row was written
    (project.artifacts / "datasets" / "d" / "v1" / "data.parquet").write_text("half written")
    first = datasets.write_version(project, "d", "sft", table, recipe={}, sources={})
    assert first.version == 1 and datasets.read_rows(first).num_rows == 2
    made: list[int] = []
    threads = [
        threading.Thread(
            target=lambda: made.append(
                datasets.write_version(project, "d", "sft", table, recipe={}, sources={}).version
            )
        )
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(made) == [2, 3, 4, 5]
