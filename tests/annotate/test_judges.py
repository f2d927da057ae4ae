"""AI judges on a real warehouse: pre-labels of each kind, calibration and trust, items resolved by judges."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from posttrain import annotate
from posttrain.annotate import judges
from posttrain.capture import capture
from posttrain.errors import InvalidInput
from posttrain.project import Project, open_project
from posttrain.warehouse.rows import fetch_all

pytestmark = pytest.mark.warehouses("duckdb", "postgresql")


def accept_judges(**extra: Any) -> dict[str, Any]:
    """Judges of an accept queue: exact_match against metadata.answer, and a coin-flip-like bad judge."""
    return {"good": {"kind": "verifier", "verifier": "exact_match"},
            "noisy": {"kind": "verifier", "verifier": "contains"}, **extra}  # fmt: skip


def reopen(project: Project, judge_table: dict[str, Any], **settings: Any) -> Project:
    root = project.root
    project.close()
    return open_project(root, **{"annotate.judges": judge_table, **settings})


def add_interactions(project: Project, rows: list[tuple[str, str, str | None]], *, cohort: str = "adult") -> list[str]:
    """Capture (id, response, metadata answer) rows, each its own prompt."""
    events = [
        {"id": i, "cohort": cohort, "messages": [{"role": "user", "content": f"what is {i}?"}], "response": response,
         "metadata": {} if answer is None else {"answer": answer}}
        for i, response, answer in rows
    ]  # fmt: skip
    assert all(r.status == "created" for r in capture(project, "interactions", events))
    return [e["id"] for e in events]


def label_all(project: Project, queue: str, truth: dict[str, bool]) -> None:
    """Have one person label every item of an accept queue with the truth."""
    while (assignment := annotate.next_item(project, queue, "human-1")) is not None:
        annotate.submit(project, assignment.lease_id, "human-1", {"accept": truth[assignment.item.interaction_id]})


@pytest.fixture
def accept_project(project: Project) -> Iterator[Project]:
    """30 answers: right ones equal their answer; wrong ones contain it (the noisy judge accepts those too)."""
    proj = reopen(project, accept_judges())
    rows = [(f"r{i}", str(i), str(i)) for i in range(15)] + [(f"w{i}", f"{i}{i}9", str(i)) for i in range(15)]
    add_interactions(proj, rows)
    annotate.create_queue(proj, annotate.QueueConfig(name="acc", task="accept", judges=["good", "noisy"],
                                                     gold_share=0))  # fmt: skip
    yield proj
    proj.close()


def test_prelabel_verifier_labels_every_item_once(accept_project: Project) -> None:
    annotate.fill(accept_project, "acc", where="true")
    result = judges.prelabel(accept_project, "acc")
    assert result.labelled == {"good": 30, "noisy": 30}
    assert judges.prelabel(accept_project, "acc").labelled == {"good": 0, "noisy": 0}
    rows = fetch_all(accept_project.cursor(), "SELECT annotator, source, value, confidence, interaction_id FROM labels "
                     "WHERE annotator = 'judge:good'", json=("value",))  # fmt: skip
    assert {r["source"] for r in rows} == {"judge"}
    assert all(r["value"]["accept"] == r["interaction_id"].startswith("r") and r["confidence"] == 1.0 for r in rows)


def test_prelabel_skips_items_without_an_answer_for_builtin_verifiers(accept_project: Project) -> None:
    add_interactions(accept_project, [("x1", "anything", None)])
    annotate.fill(accept_project, "acc", interaction_ids=["x1"])
    result = judges.prelabel(accept_project, "acc", judges=["good"])
    assert result.labelled == {"good": 0} and result.failed == {"good": 1}


def test_calibrate_trusts_a_good_judge_not_a_noisy_one(accept_project: Project) -> None:
    annotate.fill(accept_project, "acc", where="true")
    judges.prelabel(accept_project, "acc")
    label_all(accept_project, "acc", {f"r{i}": True for i in range(15)} | {f"w{i}": False for i in range(15)})
    report = judges.calibrate(accept_project, "acc")
    assert report["good"].agreement.value == 1.0 and report["good"].n == 30 and report["good"].trusted
    assert report["noisy"].agreement.value == 0.5 and not report["noisy"].trusted
    assert report["good"].ece == pytest.approx(0.0) and report["good"].bins[-1].count == 30
    assert not judges.calibrate(accept_project, "acc", threshold=1.0)["good"].trusted  # its CI's low end is < 1


def test_resolve_by_judges_writes_judge_feedback_and_items_are_not_served(accept_project: Project) -> None:
    annotate.fill(accept_project, "acc", where="true")
    judges.prelabel(accept_project, "acc")
    label_all(accept_project, "acc", {f"r{i}": True for i in range(15)} | {f"w{i}": False for i in range(15)})
    assert judges.resolve_by_judges(accept_project, "acc") == 0  # nothing open
    fresh = add_interactions(accept_project, [("n1", "7", "7"), ("n2", "8", "9")])
    annotate.fill(accept_project, "acc", interaction_ids=fresh)
    judges.prelabel(accept_project, "acc")
    assert judges.resolve_by_judges(accept_project, "acc") == 2
    sql = "SELECT interaction_id, source, kind, score, metadata FROM feedback WHERE interaction_id IN ('n1', 'n2')"
    feedback = fetch_all(accept_project.cursor(), sql + " ORDER BY interaction_id", json=("metadata",))
    assert [(f["interaction_id"], f["source"], f["kind"], f["score"]) for f in feedback] == [
        ("n1", "judge", "thumb", 1.0), ("n2", "judge", "thumb", -1.0)]  # fmt: skip
    assert feedback[0]["metadata"]["resolved_by"] == "judge" and len(feedback[0]["metadata"]["labels"]) == 1
    assert annotate.next_item(accept_project, "acc", "human-2") is None  # done by the judge: nobody is asked


def test_resolve_by_judges_without_trusted_judges_does_nothing(accept_project: Project) -> None:
    annotate.fill(accept_project, "acc", where="true")
    judges.prelabel(accept_project, "acc")
    assert judges.resolve_by_judges(accept_project, "acc") == 0  # no human labels yet: nobody is trusted
    assert annotate.next_item(accept_project, "acc", "human-1") is not None


# --- pairwise judges ------------------------------------------------------------------------------


@pytest.fixture
def judge_module(tmp_path: Path) -> Iterator[str]:
    folder = tmp_path / "judgemods"
    folder.mkdir()
    (folder / "mylongjudge.py").write_text(
        "def longer(first, second, **row):\n    return 1.0 if len(first) > len(second) else 0.0 if len(first) < "
        "len(second) else 0.5\n"
    )
    sys.path.insert(0, str(folder))
    yield "mylongjudge:longer"
    sys.path.remove(str(folder))
    sys.modules.pop("mylongjudge", None)


def test_prelabel_pairwise_judge_picks_the_preferred_answer(project: Project, judge_module: str) -> None:
    root = project.root
    project.close()
    proj = open_project(root, **{"functions.judges": {"longer": judge_module},
                                 "annotate.judges": {"len": {"kind": "pairwise", "judge": "longer"}}})  # fmt: skip
    try:
        events = [{"id": f"p{k}", "messages": [{"role": "user", "content": "hi"}], "response": text}
                  for k, text in enumerate(["short", "a much longer answer"])]  # fmt: skip
        capture(proj, "interactions", events)
        annotate.create_queue(proj, annotate.QueueConfig(name="pw", task="pairwise", judges=["len"]))
        annotate.fill(proj, "pw", pairs=[("p0", "p1")])
        assert judges.prelabel(proj, "pw").labelled == {"len": 1}
        (label,) = fetch_all(proj.cursor(), "SELECT value, confidence FROM labels", json=("value",))
        assert label["value"] == {"choice": "b", "chosen": "p1", "swapped": False} and label["confidence"] == 1.0
    finally:
        proj.close()


def test_judge_refuses_a_kind_that_does_not_fit_the_task(accept_project: Project) -> None:
    annotate.create_queue(accept_project, annotate.QueueConfig(name="cls", task="classify", categories=["a", "b"]))
    with pytest.raises(InvalidInput, match="cannot label a classify queue"):
        judges.prelabel(accept_project, "cls", judges=["good"])


def test_judges_refuse_module_paths_and_unknown_names(accept_project: Project) -> None:
    annotate.fill(accept_project, "acc", where="true")
    with pytest.raises(InvalidInput, match="module paths are not accepted") as caught:
        judges.prelabel(accept_project, "acc", judges=["os:system"])
    assert caught.value.field == "judges"
    with pytest.raises(InvalidInput, match=r"declare it as \[annotate.judges.ghost\]"):
        judges.prelabel(accept_project, "acc", judges=["ghost"])
    with pytest.raises(InvalidInput, match="module paths are not accepted"):
        reopen(accept_project, {"bad": {"kind": "pairwise", "judge": "os.path:join"}})


# --- chat judges ----------------------------------------------------------------------------------


class JudgeUpstream(BaseHTTPRequestHandler):
    """An OpenAI-compatible stub judge: accepts answers saying 'good' (sure), rejects others (unsure)."""

    seen: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        JudgeUpstream.seen.append(body)
        asked = body["messages"][-1]["content"]
        answer = asked.split("ANSWER:\n", 1)[1]
        verdict = {"label": {"accept": True}, "confidence": 0.95} if "good" in answer else \
            {"label": {"accept": False}, "confidence": 0.6}  # fmt: skip
        text = "Sure. " + json.dumps(verdict) if "garbled" not in answer else "no idea"
        reply = {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def judge_upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), JudgeUpstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_prelabel_chat_judge_asks_the_upstream_for_json(project: Project, judge_upstream: str) -> None:
    proj = reopen(project, {"llm": {"kind": "chat", "model": "judge-7b", "upstream": judge_upstream,
                                    "prompt": "Be strict."}})  # fmt: skip
    try:
        add_interactions(proj, [("c1", "a good answer", None), ("c2", "a bad answer", None), ("c3", "garbled", None)])
        annotate.create_queue(proj, annotate.QueueConfig(name="chat", task="accept", judges=["llm"]))
        annotate.fill(proj, "chat", where="true")
        result = judges.prelabel(proj, "chat")
        assert result.labelled == {"llm": 2} and result.failed == {"llm": 1}
        rows = fetch_all(proj.cursor(), "SELECT interaction_id, value, confidence FROM labels ORDER BY interaction_id",
                         json=("value",))  # fmt: skip
        assert [(r["interaction_id"], r["value"], r["confidence"]) for r in rows] == [
            ("c1", {"accept": True}, 0.95), ("c2", {"accept": False}, 0.6)]  # fmt: skip
        body = JudgeUpstream.seen[-1]
        assert body["model"] == "judge-7b" and body["messages"][0]["content"] == "Be strict."
    finally:
        proj.close()


def test_chat_judge_without_an_upstream_names_the_setting(project: Project) -> None:
    proj = reopen(project, {"llm": {"kind": "chat", "model": "m"}})
    try:
        add_interactions(proj, [("c1", "x", None)])
        annotate.create_queue(proj, annotate.QueueConfig(name="chat", task="accept", judges=["llm"]))
        annotate.fill(proj, "chat", where="true")
        with pytest.raises(InvalidInput, match="gateway.upstream_url"):
            judges.prelabel(proj, "chat")
    finally:
        proj.close()


# --- reward-model judges --------------------------------------------------------------------------


def test_prelabel_reward_model_maps_the_boundary_to_accept_and_rating(project: Project, tiny_model: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from posttrain.models.registry import register_model

    folder = project.artifacts / "models" / "rm"
    AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(folder)
    register_model(project, "rm", folder, kind="reward-model")
    proj = reopen(project, {"low": {"kind": "reward-model", "model": "rm", "boundary": -1e6},
                            "high": {"kind": "reward-model", "model": "rm", "boundary": 1e6}})  # fmt: skip
    try:
        add_interactions(proj, [("a1", "fine", None), ("a2", "also fine", None)])
        annotate.create_queue(proj, annotate.QueueConfig(name="acc", task="accept", judges=["low", "high"]))
        annotate.create_queue(proj, annotate.QueueConfig(name="rate", task="rating", scale=(1, 7), judges=["low"]))
        for name in ("acc", "rate"):
            annotate.fill(proj, name, where="true")
        assert judges.prelabel(proj, "acc").labelled == {"low": 2, "high": 2}
        assert judges.prelabel(proj, "rate").labelled == {"low": 2}
        rows = fetch_all(proj.cursor(), "SELECT l.annotator, l.value, l.confidence, q.name FROM labels l "
                         "JOIN annotation_queues q ON q.id = l.queue_id", json=("value",))  # fmt: skip
        seen = {(r["name"], r["annotator"], str(r["value"]), r["confidence"]) for r in rows}
        assert seen == {("acc", "judge:low", "{'accept': True}", 1.0), ("acc", "judge:high", "{'accept': False}", 1.0),
                        ("rate", "judge:low", "{'rating': 7}", 1.0)}  # fmt: skip
    finally:
        proj.close()


def test_a_judge_is_trusted_by_its_agreement_where_it_is_sure(project: Project, tmp_path: Path) -> None:
    folder = tmp_path / "hedgemods"
    folder.mkdir()
    (folder / "hedging.py").write_text(  # sure and right on 's' rows, a 0.6 hedge (accept) on 'u' rows
        "def check(completion, answer, **row):\n"
        "    if answer == 'unsure':\n        return 0.6\n"
        "    return 1.0 if completion == answer else 0.0\n"
    )
    sys.path.insert(0, str(folder))
    try:
        root = project.root
        project.close()
        judge = {"hedge": {"kind": "verifier", "verifier": "hedge"}}
        proj = open_project(root, **{"functions.verifiers": {"hedge": "hedging:check"}, "annotate.judges": judge})
        rows = [(f"s{i}", str(i), str(i if i % 2 else i + 1)) for i in range(40)]
        rows += [(f"u{i}", str(i), "unsure") for i in range(20)]
        add_interactions(proj, rows)
        annotate.create_queue(proj, annotate.QueueConfig(name="acc", task="accept", judges=["hedge"], gold_share=0))
        annotate.fill(proj, "acc", where="true", limit=100)
        judges.prelabel(proj, "acc")
        truth = {f"s{i}": bool(i % 2) for i in range(40)} | {f"u{i}": bool(i % 2) for i in range(20)}
        label_all(proj, "acc", truth)
        report = judges.calibrate(proj, "acc")["hedge"]
        assert report.agreement.value == pytest.approx(50 / 60) and report.agreement.low < 0.8  # overall: not enough
        assert report.sure_agreement.value == 1.0 and report.sure_agreement.n_items == 40 and report.trusted
        proj.close()
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("hedging", None)
