"""The side-by-side playground: GET /ui/playground (the served models; admins get the form), POST
/ui/playground/send (one prompt to two models through the gateway) and POST /ui/playground/choice
(which answer was better, stored as pairwise feedback).

Both answers go through the server's own ``Gateway.complete`` (the function /v1/chat/completions
calls), so each is routed, served and logged as an interaction like any product request, tagged
``playground``. The choice is a ``choice`` feedback through ``posttrain.capture``: on the answer not
chosen, naming the chosen one (the shape preference datasets read), ``tie`` on the first answer.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from starlette.datastructures import FormData
from starlette.responses import Response

from posttrain import capture, gateway, routing
from posttrain.errors import Forbidden, InvalidInput, NotFound
from posttrain.ids import new_id
from posttrain.project import Project
from posttrain.records import StoredInteraction
from posttrain.server.ui import session as sessions
from posttrain.server.ui.console import admin_form, call, render_page, view
from posttrain.server.ui.nav import READ
from posttrain.server.ui.pages import field, page
from posttrain.warehouse.queries import get_interaction

router = APIRouter(prefix="/playground")

TAG = "playground"
SEND = "gateway"  # what the /v1 routes require; the console's playground is admins' alone on top
MAX_PROMPT = 8000
MAX_SYSTEM = 4000
MAX_COMMENT = 2000
MAX_TOKENS = 512
DEFAULT_TOKENS = 64
DEFAULT_TEMPERATURE = 0.7
COMMIT_WAIT = 10.0  # seconds to wait for the answers' interactions to be stored
CHOICES = ("a", "b", "tie")


def _admin(session: sessions.Session) -> None:
    """Refuse any role but admin (``gateway`` also admits ingest keys)."""
    if session.role != "admin":
        raise Forbidden(f"a {session.role} key may not use the playground; it needs an admin key")


def _choices(request: Request) -> tuple[list[str], list[dict[str, Any]], list[str]]:
    """Return the model names the gateway serves, the routes by name asked for, and the cohorts."""
    served = [str(m["id"]) for m in request.app.state.gateway.models()]
    table = routing.table(request.app.state.project)
    routes = [r.model_dump() for r in table.routes]
    requested = [r.requested for r in table.routes if r.requested and r.requested not in served]
    cohorts = list(
        dict.fromkeys([*(r.cohort for r in table.routes if r.cohort), *(c.cohort for c in table.cohort_rules)])
    )
    return list(dict.fromkeys([*served, *requested])), routes, cohorts


@router.get("")
@page
async def playground(request: Request) -> Response:
    """Show the models the gateway serves and, to admins, the form to compare two of them."""
    session = view(request, READ)
    models, routes, cohorts = await call(_choices, request)
    return render_page(
        request,
        session,
        "ui/console/playground.html",
        active="playground",
        title="Playground",
        models=models,
        routes=routes,
        cohorts=cohorts,
        form=_defaults(models),
        can_send=session.role == "admin",
    )


def _defaults(models: list[str]) -> dict[str, Any]:
    return {
        "model_a": models[0] if models else "",
        "model_b": models[1] if len(models) > 1 else "",
        "prompt": "",
        "system": "",
        "max_tokens": DEFAULT_TOKENS,
        "temperature": DEFAULT_TEMPERATURE,
        "cohort": "",
    }


def _number(form: FormData, name: str, default: float, low: float, high: float, *, whole: bool) -> float:
    """Return the form's number ``name`` in [low, high] (``default`` when empty); raise InvalidInput."""
    text = field(form, name, 20).strip()
    if not text:
        return default
    try:
        value = int(text) if whole else float(text)
    except ValueError:
        kind = "a whole number" if whole else "a number"
        raise InvalidInput(f"{name}: {kind}, got {text!r}", field=name) from None
    if not low <= value <= high:
        raise InvalidInput(f"{name}: between {low:g} and {high:g}, got {value:g}", field=name)
    return value


def _send_form(form: FormData, models: list[str], cohorts: list[str]) -> dict[str, Any]:
    """Return the checked fields of the send form; raise InvalidInput naming the first bad one."""
    prompt = field(form, "prompt", MAX_PROMPT).strip()
    if not prompt:
        raise InvalidInput("prompt: write the prompt to send to both models", field="prompt")
    picked = {}
    for name in ("model_a", "model_b"):
        value = field(form, name, 256).strip()
        if not value:
            raise InvalidInput(f"{name}: pick a model", field=name)
        if value not in models:
            raise InvalidInput(f"{name}: the gateway serves no model {value!r}; pick one from the list", field=name)
        picked[name] = value
    cohort = field(form, "cohort", 128).strip()
    if cohort and cohort not in cohorts:
        raise InvalidInput(f"cohort: no route or cohort rule names {cohort!r}; pick one from the list", field="cohort")
    return picked | {
        "prompt": prompt,
        "system": field(form, "system", MAX_SYSTEM).strip(),
        "cohort": cohort,
        "max_tokens": int(_number(form, "max_tokens", DEFAULT_TOKENS, 1, MAX_TOKENS, whole=True)),
        "temperature": _number(form, "temperature", DEFAULT_TEMPERATURE, 0.0, 2.0, whole=False),
    }


def _request(checked: dict[str, Any], model: str, pair_id: str, side: str) -> gateway.ChatRequest:
    """Return the chat request sent to one side, as /v1/chat/completions would parse it."""
    messages = [{"role": "system", "content": checked["system"]}] if checked["system"] else []
    messages.append({"role": "user", "content": checked["prompt"]})
    body = {
        "model": model,
        "messages": messages,
        "max_tokens": checked["max_tokens"],
        "temperature": checked["temperature"],
        "metadata": {TAG: {"pair": pair_id, "side": side}},
    }
    return gateway.parse_request(body)


async def _answer(request: Request, chat: gateway.ChatRequest, field_name: str, user: str, cohort: str | None) -> Any:
    """Serve one side through the gateway (logged as an interaction tagged playground)."""
    try:
        return await request.app.state.gateway.complete(chat, user=user, cohort=cohort, tags=[TAG])
    except NotFound as exc:  # a name whose route needs another cohort, or a model removed since the page
        raise InvalidInput(f"{field_name}: {exc.message}", field=field_name) from None


@router.post("/send")
@page
async def send(request: Request) -> Response:
    """Send one prompt to two models through the gateway; show both answers and the form to pick one."""
    session, form = await admin_form(request, SEND)
    _admin(session)
    models, routes, cohorts = await call(_choices, request)
    checked = _send_form(form, models, cohorts)
    pair_id, user, cohort = new_id(), f"console:{session.key_id}", checked["cohort"] or None
    chats = [_request(checked, checked[f"model_{side}"], pair_id, side) for side in ("a", "b")]
    served = await asyncio.gather(
        *(_answer(request, chat, f"model_{side}", user, cohort) for chat, side in zip(chats, ("a", "b"), strict=True))
    )
    ingestor = request.app.state.ingestor
    for answer in served:  # read-your-writes: the choice form names interactions that are stored
        await call(ingestor.wait_for, answer.interaction_id, COMMIT_WAIT)
    answers = [
        {
            "side": side,
            "requested": checked[f"model_{side}"],
            "model": s.model,
            "variant": s.variant,
            "interaction_id": s.interaction_id,
            "text": s.completion.text,
            "finish": s.completion.finish_reason,
            "tokens": s.completion.completion_tokens,
        }
        for side, s in zip(("a", "b"), served, strict=True)
    ]
    return render_page(
        request,
        session,
        "ui/console/playground_answers.html",
        active="playground",
        title="Playground",
        answers=answers,
        form=checked,
        pair_id=pair_id,
    )


def _stored(project: Project, interaction_id: str, name: str) -> StoredInteraction:
    """Return a playground interaction; raise NotFound (unknown) or InvalidInput (not the playground's)."""
    found = get_interaction(project.cursor(), interaction_id)
    if TAG not in (found.tags or []):
        raise InvalidInput(f"{name}: interaction {interaction_id} is not a playground answer", field=name)
    return found


def _choice_form(form: FormData) -> dict[str, str]:
    """Return the checked fields of the choice form; raise InvalidInput naming each missing one."""
    values = {name: field(form, name, 64).strip() for name in ("a_id", "b_id", "choice")}
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise InvalidInput(f"{', '.join(missing)}: missing; send the form the answers page shows", field=missing[0])
    if values["choice"] not in CHOICES:
        raise InvalidInput(f"choice: one of a, b or tie, got {values['choice']!r}", field="choice")
    if values["a_id"] == values["b_id"]:
        raise InvalidInput("b_id: the two answers must be different interactions", field="b_id")
    return values | {"comment": field(form, "comment", MAX_COMMENT).strip()}


def record_choice(project: Project, values: dict[str, str], author: str) -> dict[str, Any]:
    """Store the pairwise choice as one ``choice`` feedback; return it with its id."""
    a, b = _stored(project, values["a_id"], "a_id"), _stored(project, values["b_id"], "b_id")
    choice = values["choice"]
    on, chosen = {"a": (b.id, a.id), "b": (a.id, b.id), "tie": (a.id, "tie")}[choice]
    event = {
        "interaction_id": on,
        "kind": "choice",
        "value": chosen,
        "source": "user",
        "author": author,
        "text": values["comment"] or None,
        "metadata": {TAG: {"a": a.id, "b": b.id, "choice": choice}},
    }
    result = capture.capture(project, "feedback", [event])[0]
    if result.status == "error":
        raise InvalidInput(result.error or "the choice could not be stored", field=result.field)
    return event | {"id": result.id, "a": a, "b": b}


@router.post("/choice")
@page
async def choice(request: Request) -> Response:
    """Record which answer was better (a, b or tie) as pairwise feedback; show it saved."""
    session, form = await admin_form(request, SEND)
    _admin(session)
    values = _choice_form(form)
    saved = await call(record_choice, request.app.state.project, values, session.key_id)
    return render_page(
        request,
        session,
        "ui/console/playground_saved.html",
        active="playground",
        title="Playground",
        saved=saved,
        choice=values["choice"],
    )
