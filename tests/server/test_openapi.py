"""The OpenAPI document is valid and complete, and no generated request makes the server fail."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from conftest import LiveServer
from posttrain import keys
from posttrain.project import init_project
from posttrain.server.app import route_table

OPERATIONS = [(method, path) for method, path, _ in route_table()]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    proj = init_project(tmp_path_factory.mktemp("openapi") / "proj")
    admin = keys.create_key(proj, "admin", name="openapi admin").key
    proj.close()
    live = LiveServer(root=proj.root, admin_key=admin).start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def document(server: LiveServer) -> dict[str, Any]:
    with server.http() as http:
        reply = http.get("/openapi.json")
    assert reply.status_code == 200
    return reply.json()  # type: ignore[no-any-return]


def test_openapi_document_is_valid_openapi_3(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.")
    schemathesis.openapi.from_dict(document).validate()  # against the OpenAPI meta-schema


def test_openapi_lists_every_route(document: dict[str, Any]) -> None:
    listed = {(method.upper(), path) for path, ops in document["paths"].items() for method in ops}
    assert listed == set(OPERATIONS)
    assert {"/health", "/api/capture/interactions", "/api/sql", "/api/keys/{key_id}"} <= set(document["paths"])


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def test_openapi_refs_all_resolve(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for ref in set(_refs(document)):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref


def test_openapi_documents_errors_and_auth(document: dict[str, Any]) -> None:
    assert document["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    capture = document["paths"]["/api/capture/interactions"]["post"]
    assert {"200", "207", "400", "401", "413", "429"} <= set(capture["responses"])
    body = capture["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/InteractionsRequest"}


# --- fuzzing the running server --------------------------------------------------------------


@pytest.fixture(scope="module")
def api_schema(server: LiveServer) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json")


FUZZ = [
    pytest.param(method, path, mode, id=f"{method} {path} {mode.value}")
    for method, path in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if (path, mode) != ("/health", GenerationMode.NEGATIVE)  # it takes no input to get wrong
]
CONFORMANCE = [pytest.param(method, path, id=f"{method} {path}") for method, path in OPERATIONS]


def _fuzz(
    api_schema: schemathesis.BaseSchema,
    server: LiveServer,
    method: str,
    path: str,
    mode: GenerationMode,
    check: Callable[[schemathesis.Case, schemathesis.Response], None],
    max_examples: int,
) -> None:
    """Send ``max_examples`` generated requests to one operation; run ``check`` on each reply."""
    auth = {"Authorization": f"Bearer {server.admin_key}"}

    @given(case=api_schema[path][method].as_strategy(generation_mode=mode))
    @settings(max_examples=max_examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def run(case: schemathesis.Case) -> None:
        check(case, case.call(headers=auth, timeout=30))

    run()


@pytest.mark.parametrize(("method", "path", "mode"), FUZZ)
def test_api_never_answers_5xx(
    api_schema: schemathesis.BaseSchema, server: LiveServer, method: str, path: str, mode: GenerationMode
) -> None:
    def check(case: schemathesis.Case, response: schemathesis.Response) -> None:
        assert response.status_code < 500, (  # the server's log holds the traceback
            f"{case.method} {case.formatted_path}: {response.text[:500]}\n{server.stderr()[-4000:]}"
        )
        content_type = response.headers.get("content-type", [""])[0]
        if response.status_code >= 400 and content_type.startswith("text/plain"):
            # uvicorn's HTTP parser refused the request line before the app saw it
            assert (response.status_code, response.text) == (400, "Invalid HTTP request received.")
        elif response.status_code >= 400:
            assert set(response.json()["error"]) == {"type", "message", "field"}, response.text[:500]

    _fuzz(api_schema, server, method, path, mode, check, max_examples=15)


@pytest.mark.parametrize(("method", "path"), CONFORMANCE)
def test_api_responses_match_their_schema(
    api_schema: schemathesis.BaseSchema, server: LiveServer, method: str, path: str
) -> None:
    # SQL that the schema allows (any string) may still not parse, and a cursor is valid only when
    # this server issued it: a 400 there is right
    # likewise a dataset recipe or a training config that the schema allows may match no rows / no model
    # and an experiment's shares must sum to 1, a route's or an eval's model must exist: rules a schema cannot say
    accepts_any = path in (
        "/api/sql",
        "/api/datasets/build",
        "/api/train/{method}",
        "/api/experiments",
        "/api/routes",
        "/api/routes/cohorts",
        "/api/loop/run",  # a recipe the schema allows (any object) may name unknown stages
        "/api/evals/run",  # an eval's model and dataset must exist
        "/api/evals/compare",
        "/api/evals/gate",
        "/api/annotate/queues",  # a task's schema rules (a classify queue's categories) span fields
        "/api/annotate/queues/{name}/fill",  # exactly one source, a where that parses
        "/api/annotate/queues/{name}/gold",  # a gold answer must fit its queue's task
        "/api/annotate/leases/{lease_id}/submit",  # a label must fit its queue's task
        "/api/curate/safety",  # a classifier needs labelled examples of both classes
    ) or (path == "/api/interactions" and method == "GET")
    excluded = [schemathesis.checks.positive_data_acceptance] if accepts_any else []

    def check(case: schemathesis.Case, response: schemathesis.Response) -> None:
        case.validate_response(response, excluded_checks=excluded)

    _fuzz(api_schema, server, method, path, GenerationMode.POSITIVE, check, max_examples=10)
