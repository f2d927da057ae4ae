"""/docs works offline: it links the OpenAPI document and loads nothing from the network."""

from __future__ import annotations

from fastapi.testclient import TestClient


def test_docs_page_links_the_openapi_document_and_no_network_url(client: TestClient) -> None:
    response = client.get("/docs")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert 'href="/openapi.json"' in response.text
    assert "http://" not in response.text and "https://" not in response.text and "//cdn" not in response.text


def test_redoc_is_gone(client: TestClient) -> None:
    assert client.get("/redoc").status_code == 404
